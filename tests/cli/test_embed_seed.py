"""``greenfm embed --model random`` follows --seed; --threads and --num-workers are honoured."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from greenfm.cli import main


def _manifest(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(4):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(path)
        rows.append({"path": path.name, "patient_id": f"p{i}"})
    out = tmp_path / "manifest.csv"
    pd.DataFrame(rows).to_csv(out, index=False)
    return out


def _embed(tmp_path: Path, manifest: Path, name: str, *extra: str) -> np.ndarray:
    out = tmp_path / f"{name}.parquet"
    argv = ["embed", "--model", "random", "--backbone", "vit_tiny_test", "--data", str(manifest), "--out", str(out),
            "--cache", str(tmp_path / "cache"), "--threads", "1", "--num-workers", "0", *extra]
    try:
        main(argv)
    except SystemExit as done:
        assert not done.code
    return np.stack(pd.read_parquet(out)["embedding"].to_list())


def test_random_init_embeddings_follow_the_seed(tmp_path):
    manifest = _manifest(tmp_path)
    first, again = _embed(tmp_path, manifest, "a"), _embed(tmp_path, manifest, "b")
    other = _embed(tmp_path, manifest, "c", "--seed", "1")
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_modality_picks_the_default_contract_where_the_manifest_names_none(tmp_path):
    from greenfm.data.embeddings import read_embeddings

    manifest = _manifest(tmp_path)
    _embed(tmp_path, manifest, "xray", "--modality", "xray")
    _embed(tmp_path, manifest, "unnamed")
    xray = read_embeddings(tmp_path / "xray.parquet").metadata["contract"]
    unnamed = read_embeddings(tmp_path / "unnamed.parquet").metadata["contract"]
    assert xray["modality"] == "xray" and xray["mean"] == [0.4978] * 3  # cxr-medpeft
    assert unnamed["modality"] == "other" and unnamed["mean"] == [0.5] * 3  # rfg, labelled "other"
