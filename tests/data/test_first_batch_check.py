"""The first batch of training and embedding is checked against the preprocessing contract."""

from __future__ import annotations

import warnings

import torch

from greenfm.data.contract import Contract
from greenfm.data.dataset import check_batch_against_contract


class _Data:
    contract = Contract(modality="xray", size=8, mean=0.5, std=0.5)


def test_unscaled_batch_warns_and_normalised_batch_does_not():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        message = check_batch_against_contract(_Data(), torch.rand(2, 3, 8, 8) * 255)
    assert message and "unscaled" in message
    assert any("unscaled" in str(w.message) for w in caught)
    assert check_batch_against_contract(_Data(), torch.rand(2, 3, 8, 8) * 2 - 1) is None


def test_batch_left_in_unit_range_warns_when_mean_std_expected():
    message = check_batch_against_contract(_Data(), torch.rand(2, 3, 8, 8))
    assert message and "[0, 1]" in message


def test_dataset_without_contract_is_not_checked():
    assert check_batch_against_contract(object(), torch.rand(2, 3, 8, 8) * 255) is None
