"""``greenfm curate``: a subset manifest from precomputed embeddings, its per-cluster summary (printed, in
``<out>.curation.json`` and in the report), and one-line errors for ids that do not match."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from synthetic import long_tailed

from greenfm.cli import main
from greenfm.data.embeddings import Embeddings, write_embeddings
from greenfm.data.manifest import load_manifest

SIZES = [300, 150, 80, 40, 20, 10]


def _inputs(tmp_path, *, drop_id: str | None = None):
    c, cluster = long_tailed(SIZES)
    n = len(cluster)
    ids = [f"img{i:04d}" for i in range(n)]
    manifest = pd.DataFrame({"id": ids, "path": [f"images/{i}.png" for i in ids], "patient_id": [f"p{i}" for i in range(n)],
                             "split": ["train"] * (n - 20) + ["test"] * 20, "rare": (cluster.numpy() >= 4).astype(int),
                             "meta_cluster": cluster.numpy()})  # fmt: skip
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    keep = [i for i in range(n) if ids[i] != drop_id]
    write_embeddings(tmp_path / "emb.parquet", Embeddings(ids=[ids[i] for i in keep], patient_ids=[f"p{i}" for i in keep],
                                                          paths=[ids[i] for i in keep], vectors=c.numpy()[keep]))  # fmt: skip
    return manifest


def _run(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def test_curate_writes_a_subset_manifest_that_favours_rare_clusters(tmp_path, capsys):
    manifest = _inputs(tmp_path)
    out = tmp_path / "subset" / "curated.csv"
    argv = ["curate", "--embeddings", str(tmp_path / "emb.parquet"), "--data", str(tmp_path / "manifest.csv"),
            "--out", str(out), "--batch-size", "120", "--warmup-samples", "300"]  # fmt: skip
    code, printed, err = _run(argv, capsys)
    assert code == 0, err
    assert "keep ratio" in printed and "curated" in printed
    subset = load_manifest(out, check_files=False)  # a manifest of its own, paths absolute
    train = manifest[manifest["split"] == "train"]
    assert 0 < len(subset) < 0.6 * len(train) and set(subset.table["id"]) <= set(train["id"])
    assert subset.table["path"].str.startswith(str(tmp_path)).all()
    rows = pd.read_csv(out)
    assert list(rows.columns) == list(manifest.columns)
    rare_share = rows["rare"].mean()
    assert rare_share > 2 * train["rare"].mean()  # rare clusters over-represented
    summary = json.loads((tmp_path / "subset" / "curated.csv.curation.json").read_text())
    assert summary["subset_rows"] == len(rows) and sum(summary["members_per_cluster"]) == len(train)
    assert summary["max_per_cluster"] == 2  # round(0.125 * 120 / 6)
    again = tmp_path / "again.csv"
    assert _run([str(again) if a == str(out) else a for a in argv], capsys)[0] == 0
    assert pd.read_csv(again)["id"].tolist() == rows["id"].tolist()  # seeded: the same subset


def test_ids_without_embeddings_are_one_clear_error(tmp_path, capsys):
    _inputs(tmp_path, drop_id="img0003")
    code, _, err = _run(["curate", "--embeddings", str(tmp_path / "emb.parquet"), "--data", str(tmp_path / "manifest.csv"),
                         "--out", str(tmp_path / "s.csv")], capsys)  # fmt: skip
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "img0003" in lines[0] and "emb.parquet" in lines[0]
    assert not (tmp_path / "s.csv").exists()


def test_too_few_rows_and_a_bad_out_suffix_are_refused(tmp_path, capsys):
    _inputs(tmp_path)
    base = ["curate", "--embeddings", str(tmp_path / "emb.parquet"), "--data", str(tmp_path / "manifest.csv")]
    code, _, err = _run([*base, "--out", str(tmp_path / "s.txt")], capsys)
    assert code == 2 and ".csv or .parquet" in err
    code, _, err = _run([*base, "--out", str(tmp_path / "s.csv"), "--clusters", "30", "--splits", "test"], capsys)
    assert code == 2 and "at least K rows" in err


def test_the_report_shows_the_curation(tmp_path, capsys):
    from greenfm.report.curation import curation_body
    from greenfm.report.runs import RunArtifacts

    _inputs(tmp_path)
    out = tmp_path / "run" / "curated.parquet"
    code, _, err = _run(["curate", "--embeddings", str(tmp_path / "emb.parquet"), "--data", str(tmp_path / "manifest.csv"),
                         "--out", str(out), "--batch-size", "120"], capsys)  # fmt: skip
    assert code == 0, err
    html = curation_body([RunArtifacts(root=out.parent, name="curated")])
    summary = json.loads(out.with_name("curated.parquet.curation.json").read_text())
    assert "Keep ratio" in html and f"{summary['subset_rows']:,} of {summary['rows']:,}" in html
    assert np.isclose(summary["keep_fraction"], len(pd.read_parquet(out)) / summary["rows"])


@pytest.mark.parametrize("verb", ["curate", "probe"])
def test_a_bad_label_row_does_not_point_to_an_option_the_verb_lacks(tmp_path, capsys, verb):
    manifest = _inputs(tmp_path)
    manifest.loc[3, "rare"] = 2
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    flag = "--data" if verb == "curate" else "--labels"
    code, _, err = _run([verb, "--embeddings", str(tmp_path / "emb.parquet"), flag, str(tmp_path / "manifest.csv"),
                         "--out", str(tmp_path / "s.csv")], capsys)  # fmt: skip
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "row 5" in lines[0]
    assert "no --skip-bad" in lines[0] and "use --skip-bad" not in lines[0]
