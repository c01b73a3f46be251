"""greenrfm on CT volumes through the workflow: phantom chest CTs, an r3d_18_lite image tower with a
single-channel stem, the align stage, and zero-shot on the aligned model (METHODS 3.6-3.8)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

pytest.importorskip("greenfm.data.volume_dataset")  # volumes flow through the data layer

from greenfm.models.text_tiny import tiny_text_tower  # noqa: E402
from greenfm.workflows.image_text_eval import ZeroshotConfig, run_zeroshot  # noqa: E402
from greenfm.workflows.pretrain import PretrainConfig, run_pretrain  # noqa: E402

TRAIN = {"max_steps": 1, "batch_size": 4, "num_workers": 0, "track_energy": False, "progress_bar": False,
         "checkpoint_every_epochs": None, "accelerator": "cpu", "show_ledger": False}  # fmt: skip


@pytest.fixture(scope="module")
def ct_phantoms(tmp_path_factory):
    from greenfm.data.phantoms import generate_phantoms

    root = tmp_path_factory.mktemp("grfm_ct")
    manifest = generate_phantoms(root / "phantoms", n_patients=4, size=32, seed=3, kind="ct", workers=1)
    contract = root / "contract.json"
    contract.write_text(json.dumps({"preset": "ct-chest", "size": [8, 16, 16], "pad_size": [10, 20, 20]}))
    reports = pd.read_csv(manifest)["report"].tolist()
    text = tiny_text_tower(reports, max_length=32).save(root / "text")
    return root, manifest, contract, str(text)


def test_ct_align_stage_with_a_3d_tower_and_zeroshot(ct_phantoms):
    """One run (a 33M-parameter tower is slow to save on 2 cores); stage chaining is tested on 2-D phantoms."""
    root, manifest, contract, text = ct_phantoms
    run_pretrain(PretrainConfig(recipe="greenrfm", stage="align", data=str(manifest), backbone="r3d_18_lite",
                                contract=str(contract), text_tower=text, cache=str(root / "cache"), train=TRAIN,
                                splits=["train", "val", "test"], method={"init_from_stage1": False}),
                 root / "align")  # fmt: skip
    config = json.loads((root / "align" / "exported" / "config.json").read_text())
    stem = config["model"]["replace"]["stem.0"]["args"]
    assert (stem["in_channels"], stem["kernel_size"], stem["stride"]) == (1, [4, 4, 4], [4, 4, 4])
    assert config["heads"]["image_projection"] == [768, 512]
    assert config["preprocessing"]["modality"] == "ct"
    result = run_zeroshot(ZeroshotConfig(model=str(root / "align"), data=str(manifest), cache=str(root / "cache"),
                                         split=None, resamples=0, readout="classifier"), root / "zs")  # fmt: skip
    assert result["metrics"].n_classes == len(config["metadata"]["findings"])
    # export writes 2-D image models only: a 3-D run is refused in one line naming it, nothing written
    from greenfm.errors import BadInputError
    from greenfm.export import export_model

    with pytest.raises(BadInputError, match="3-D .*run folder itself"):
        export_model(root / "align", root / "model")
    assert not (root / "model").exists()
