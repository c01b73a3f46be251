"""MRI-study manifests reach the workflows' dataset builder (``workflows.inputs``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from test_mri_studies import ALL, knee_labels, study, write_manifest  # noqa: E402

from greenfm.data.contract import Contract, get_contract  # noqa: E402
from greenfm.data.mri_studies import MRIStudyDataset, StudyManifest  # noqa: E402
from greenfm.errors import GreenfmError  # noqa: E402
from greenfm.workflows.inputs import image_dataset, load_checked_manifest  # noqa: E402


@pytest.fixture
def studies(tmp_path) -> Path:
    rows = []
    for i in range(4):
        cells = ALL if i % 2 else [c for c in ALL if not c.endswith("pd")]  # every other study lacks PD
        rows.append({"patient_id": f"p{i}", "id": f"s{i}", **study(tmp_path, f"s{i}", cells, i), **knee_labels()})
    return write_manifest(tmp_path, rows)


def test_a_study_manifest_gives_the_mri_dataset_at_the_contracts_sizes(studies):
    manifest = load_checked_manifest(studies)
    assert isinstance(manifest, StudyManifest)
    contract = get_contract("mri").replace(size=(4, 12, 12), pad_size=(6, 16, 16))
    train = image_dataset(manifest, contract, cache_root=None, augment=None, train=True)
    evaluation = image_dataset(manifest, contract)
    assert isinstance(train, MRIStudyDataset) and train.train and not evaluation.train
    item = evaluation[0]
    assert item["image"].shape == (3, 3, 4, 12, 12)
    assert torch.count_nonzero(item["image"][:, 0]) == 0  # study 0 has no PD: zero-filled
    assert torch.equal(evaluation[1]["image"], evaluation[1]["image"])  # centre crop: deterministic


def test_a_study_manifest_with_an_image_contract_or_augmentation_is_one_line(studies):
    manifest = load_checked_manifest(studies)
    with pytest.raises(GreenfmError, match="MRI studies; they need a volume contract"):
        image_dataset(manifest, Contract(size=32), augment=None, train=True)
    with pytest.raises(GreenfmError, match="without augmentation"):
        image_dataset(manifest, get_contract("mri"), augment=lambda x: x, train=True)
