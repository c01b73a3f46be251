"""Uncertain / missing label policies and the masked BCE."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from greenfm.errors import BadInputError, ConfigError
from greenfm.labeling import (
    LabelPolicy,
    apply_policy,
    label_policy,
    masked_bce_with_logits,
)
from greenfm.labeling.policies import PRESETS, policy_masked_bce

NAN = np.nan
LABELS = np.array([[1, 0, -1, NAN], [0, -1, NAN, 1]], dtype=np.float32)


@pytest.mark.parametrize(
    ("policy", "targets", "valid"),
    [
        ("default", [[1, 0, 0, 0], [0, 0, 0, 1]], [[1, 1, 0, 0], [1, 0, 0, 1]]),
        ("official", [[1, 0, 0, 0], [0, 0, 0, 1]], [[1, 1, 1, 1], [1, 1, 1, 1]]),
        ("uncertain=ones,missing=zeros", [[1, 0, 1, 0], [0, 1, 0, 1]], [[1, 1, 1, 1], [1, 1, 1, 1]]),
        ("uncertain=soft,missing=mask", [[1, 0, 0.5, 0], [0, 0.5, 0, 1]], [[1, 1, 1, 0], [1, 1, 0, 1]]),
        ({"uncertain": "mask", "missing": "soft"}, [[1, 0, 0, 0.5], [0, 0, 0.5, 1]], [[1, 1, 0, 1], [1, 0, 1, 1]]),
    ],
)
def test_policies_map_uncertain_and_missing(policy, targets, valid):
    t, v = apply_policy(LABELS, policy)
    np.testing.assert_array_equal(t, np.array(targets, dtype=np.float32))
    np.testing.assert_array_equal(v, np.array(valid, dtype=np.float32))
    assert np.isfinite(t).all() and t.dtype == np.float32


def test_tensors_in_tensors_out():
    t, v = apply_policy(torch.tensor(LABELS), "default")
    assert isinstance(t, torch.Tensor) and isinstance(v, torch.Tensor)
    assert t.dtype == torch.float32 and t.shape == (2, 4)


@pytest.mark.parametrize("bad", [2.0, -3.0, 1.5])
def test_targets_outside_unit_interval_raise(bad):
    labels = LABELS.copy()
    labels[1, 0] = bad
    with pytest.raises(BadInputError, match="outside \\[0, 1\\].*row 1, column 0"):
        apply_policy(labels, "official")


def test_policy_is_serialisable_and_validated():
    policy = label_policy("uncertain=ones,missing=zeros")
    assert LabelPolicy.from_dict(policy.to_dict()) == policy == LabelPolicy("ones", "zeros")
    assert label_policy(None) == LabelPolicy("mask", "mask") and label_policy("official") == LabelPolicy("zeros", "zeros")
    with pytest.raises(ConfigError, match="mask, zeros, ones, soft"):
        LabelPolicy(uncertain="half")
    with pytest.raises(ConfigError, match="presets"):
        label_policy("sometimes")


def test_masked_bce_ignores_masked_entries():
    logits = torch.tensor([[2.0, -1.0, 50.0, -50.0]])
    targets, valid = apply_policy(np.array([[1, 0, -1, NAN]], dtype=np.float32), "default")
    loss = masked_bce_with_logits(logits, torch.from_numpy(targets), torch.from_numpy(valid))
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, :2], torch.tensor([[1.0, 0.0]]))
    torch.testing.assert_close(loss, expected)
    # a -1 fed straight into BCE (the official bug) makes the loss unbounded below; masked it cannot
    raw = [torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor([x]), torch.tensor([-1.0])) for x in (-5.0, -50.0)]
    assert 0 > raw[0] > raw[1] and loss > 0


def test_masked_bce_with_nothing_valid_is_zero_not_nan():
    loss = masked_bce_with_logits(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3))
    assert loss.item() == 0.0


@pytest.mark.parametrize("policy", ["default", "official", "u-ones", "u-soft", {"uncertain": "mask", "missing": "soft"}])
def test_tensors_get_what_arrays_get(policy):
    t, v = apply_policy(torch.tensor(LABELS), policy)
    t_np, v_np = apply_policy(LABELS, policy)
    np.testing.assert_array_equal(t.numpy(), t_np)
    np.testing.assert_array_equal(v.numpy(), v_np)


def test_a_tensor_outside_the_unit_interval_raises_like_an_array():
    labels = torch.tensor(LABELS)
    labels[1, 0] = 2.0
    with pytest.raises(BadInputError, match="row 1, column 0"):
        apply_policy(labels, "default")


def test_the_policy_bce_is_the_masked_bce_after_the_policy():
    logits = torch.tensor([[2.0, -1.0, 0.5, -0.5], [0.3, 1.0, -2.0, 4.0]])
    for policy in ("default", "official", "u-soft"):
        targets, valid = apply_policy(torch.tensor(LABELS), policy)
        torch.testing.assert_close(policy_masked_bce(logits, torch.tensor(LABELS), policy),
                                   masked_bce_with_logits(logits, targets, valid))  # fmt: skip
    weighted = policy_masked_bce(logits, torch.tensor(LABELS), pos_weight=torch.tensor([2.0, 1.0, 1.0, 1.0]))
    assert weighted > policy_masked_bce(logits, torch.tensor(LABELS))  # the one weighted positive counts double


def test_a_policy_is_recorded_by_a_name_that_gives_it_back():
    for name, policy in PRESETS.items():
        assert label_policy(policy.name) == policy and (policy.name == name or name == "mask")
    assert label_policy("mask").name == "default"  # an alias records as the preset it names
    custom = LabelPolicy(uncertain="soft", missing="zeros")
    assert custom.name == "uncertain=soft,missing=zeros" and label_policy(custom.name) == custom
