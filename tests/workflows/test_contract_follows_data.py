"""The default preprocessing contract follows the data's modality, never silently 'fundus'."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from greenfm.data.manifest import load_manifest
from greenfm.models.backbones import create_encoder
from greenfm.workflows.inputs import data_modality, encoder_contract


def _manifest(tmp_path: Path, modality: str | None) -> Path:
    rows = []
    for i in range(2):
        Image.fromarray(np.full((16, 16), 100 + i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
        rows.append({"path": f"{i}.png", "patient_id": f"p{i}", **({"meta_modality": modality} if modality else {})})
    path = tmp_path / f"m-{modality}.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_xray_data_get_an_xray_contract_and_unknown_data_are_not_called_fundus(tmp_path):
    encoder = create_encoder("vit_tiny_test", img_size=32)
    xray = load_manifest(_manifest(tmp_path, "CR"))
    assert data_modality(xray) == "xray"
    contract = encoder_contract(encoder, None, data=xray)
    assert contract.modality == "xray" and contract.resize == "shorter-center-crop" and contract.size == (32, 32)
    unknown = encoder_contract(encoder, None, data=load_manifest(_manifest(tmp_path, None)))
    assert unknown.modality == "other"
    # an explicit contract or modality wins
    assert encoder_contract(encoder, "rfg", data=xray).modality == "fundus"
    assert encoder_contract(encoder, None, modality="fundus", data=xray).modality == "fundus"


def test_the_medmnist_importer_records_the_modality(tmp_path):
    from greenfm.data.medmnist import known_modality

    assert known_modality("pneumoniamnist_28") == "xray"
    assert known_modality("retinamnist_28") == "fundus"
    assert known_modality("mystery") is None
