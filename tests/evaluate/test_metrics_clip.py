"""Names cut to fit a terminal table end in an ellipsis."""

from greenfm.evaluate.metrics import clip


def test_cut_names_show_an_ellipsis():
    assert clip("pleural_effusion", 24) == "pleural_effusion"
    assert clip("enlarged_cardiomediastinum", 12) == "enlarged_ca\u2026" and len(clip("x" * 40, 12)) == 12
