"""Prompt families: the METHODS.md templates, rendered from finding names; unknown ids list the valid ones."""

from __future__ import annotations

import pytest

from greenfm.errors import ConfigError
from greenfm.evaluate.prompts import DEFAULT_PROMPT_FAMILY, PROMPT_FAMILIES, prompt_pairs


def test_default_family_renders_lower_case_names_with_spaces():
    assert DEFAULT_PROMPT_FAMILY == "p3"
    assert prompt_pairs(["Pleural_Effusion", "Cardiomegaly"], DEFAULT_PROMPT_FAMILY) == [
        ("There is pleural effusion.", "There is no pleural effusion."),
        ("There is cardiomegaly.", "There is no cardiomegaly."),
    ]


@pytest.mark.parametrize(
    ("family", "pair"),
    [
        ("p1", ("lung opacity.", "not lung opacity.")),
        ("p2", ("lung opacity.", "")),
        ("p3", ("There is lung opacity.", "There is no lung opacity.")),
        ("p4", ("lung opacity is present.", "lung opacity is not present.")),
        ("p5", ("Findings are compatible with lung opacity.", "Findings are not compatible with lung opacity.")),
        ("chexficient", ("lung opacity", "no lung opacity")),
    ],
)
def test_every_family_renders_its_pair(family, pair):
    assert prompt_pairs(["Lung_Opacity"], family) == [pair]


def test_families_are_exactly_the_documented_ones():
    assert set(PROMPT_FAMILIES) == {"p1", "p2", "p3", "p4", "p5", "chexficient"}
    assert prompt_pairs([], "p1") == []


def test_unknown_family_is_a_one_line_config_error_listing_the_valid_ones():
    with pytest.raises(ConfigError) as info:
        prompt_pairs(["effusion"], "p9")
    message = str(info.value)
    assert "\n" not in message and "'p9'" in message
    for family in PROMPT_FAMILIES:
        assert family in message
