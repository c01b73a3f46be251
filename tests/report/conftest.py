"""Run folders for report tests, written by the real code: engine fit, method export, linear probe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from report_factory import Noise, write_label_efficiency, write_manifest


@pytest.fixture(scope="session")
def report_runs(tmp_path_factory) -> dict[str, Path]:
    """``full``: a real token-reconstruction run with a probe and label-efficiency results;
    ``empty``: an empty folder; ``broken``: unreadable artefacts."""
    from greenfm.adapt.linear_probe import run_probe
    from greenfm.data.contract import Contract
    from greenfm.data.manifest import load_manifest
    from greenfm.engine import TrainConfig, fit, write_run_config
    from greenfm.methods.token_reconstruction import TokenReconstruction
    from greenfm.models import create_encoder

    root = tmp_path_factory.mktemp("report_runs")
    full = root / "pretrain"
    full.mkdir()
    manifest_path, table = write_manifest(full)
    manifest = load_manifest(manifest_path, check_files=False)

    torch.manual_seed(0)
    encoder = create_encoder("vit_tiny_test")
    method = TokenReconstruction(encoder)
    contract = Contract(modality="xray", size=32)
    write_run_config(
        full,
        {
            "method": "token-reconstruction",
            "encoder": encoder.spec,
            "data": str(manifest_path),
            "contract": contract.to_dict(),
        },
        manifest_hash=manifest.hash,
        seed=0,
    )
    config = TrainConfig(
        epochs=2,
        batch_size=4,
        num_workers=0,
        progress_bar=False,
        track_energy=False,
        accelerator="cpu",
        log_every_steps=1,
    )
    record = {
        "method": "token-reconstruction",
        "encoder_spec": encoder.spec,
        "contract": contract.to_dict(),
        "flags": method.flags,
        "manifest_hash": manifest.hash,
    }
    fit(method, Noise(), config, full, run_record=record)
    method.export(full / "exported", preprocessing=contract.to_dict())

    rng = np.random.default_rng(1)
    labels = table[["effusion", "nodule"]].to_numpy()
    x = rng.normal(size=(len(table), 8)) + 1.5 * np.nan_to_num(labels[:, :1]) + 0.4 * np.clip(labels[:, 1:2], 0, 1)
    run_probe(x, manifest.table, bootstrap=100, seed=0).save(full / "probe")
    write_label_efficiency(full / "label_efficiency.csv")

    empty = root / "empty"
    empty.mkdir()
    broken = root / "broken"
    broken.mkdir()
    (broken / "compute.json").write_text("{not json")
    (broken / "predictions.csv").write_text("a,b\n1,2\n")
    (broken / "finetune.json").write_text(json.dumps([1, 2]))
    return {"full": full, "empty": empty, "broken": broken}
