"""``greenfm curate``: a curated subset of any manifest, chosen from precomputed embeddings.

The embeddings (one vector per image, the format ``greenfm embed`` writes) stand in for the
joint embedding of METHODS 4.2: they are L2-normalised, shuffled once (``seed``) and visited in
global batches of ``batch_size`` exactly as a curation epoch would, with k-means prototypes
from the first ``warmup_samples``, the band selection per batch and the Sinkhorn-Knopp update
after each. The kept rows are written as a manifest of the same columns (paths made absolute,
so the file can live anywhere), which any recipe, token reconstruction included, trains on;
``<out>.curation.json`` beside it holds the cluster sizes and keep ratios the report shows.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from greenfm.curation import PrototypeCurator, scaled_max_per_cluster
from greenfm.data.embeddings import read_embeddings
from greenfm.data.manifest import NO_SKIP_HINT, load_manifest
from greenfm.errors import BadInputError, ConfigError
from greenfm.io_safety import atomic_output
from greenfm.workflows.curate_config import CurateConfig

log = logging.getLogger(__name__)
CURATION_SUFFIX = ".curation.json"


def run_curate(config: CurateConfig, out: str | Path, *, echo: Callable[[str], Any] = print) -> dict[str, Any]:
    """Curate ``config.data`` with ``config.embeddings``; write the subset manifest and its summary."""
    out = Path(out)
    if out.suffix.lower() not in (".csv", ".parquet"):
        raise ConfigError(f"--out {out}: the subset manifest must end in .csv or .parquet")
    manifest = load_manifest(config.data, check_files=False, skip_hint=NO_SKIP_HINT)
    table = manifest.table
    if "split" in table.columns:
        table = table[table["split"].astype(str).isin(config.splits)]
        if table.empty:
            raise BadInputError(f"no rows in split(s) {config.splits}", source=str(config.data))
    vectors = _aligned(config, table)
    summary = curate_vectors(vectors, table["id"].astype(str).tolist(), config)
    kept = set(summary.pop("kept_ids"))
    raw = _raw_rows(config.data, manifest, table)
    subset = raw[table["id"].astype(str).isin(kept).to_numpy()]
    _write_manifest(subset, out)
    summary.update(source_manifest=str(Path(config.data).resolve()), manifest_hash=manifest.hash,
                   embeddings=str(Path(config.embeddings).resolve()), rows=len(table), subset_rows=len(subset),
                   keep_fraction=len(subset) / len(table), options=config.to_dict(), subset_manifest=str(out.resolve()))  # fmt: skip
    side = out.with_name(out.name + CURATION_SUFFIX)
    side.write_text(json.dumps(summary, indent=1, default=str) + "\n")
    echo(describe_curation(summary))
    return summary


def curate_vectors(vectors: np.ndarray, ids: list[str], config: CurateConfig) -> dict[str, Any]:
    """One curation epoch over fixed vectors: returns the kept ids and the per-cluster counts."""
    n = len(ids)
    if n < config.clusters:
        raise BadInputError(f"{n} rows to curate but {config.clusters} prototypes: at least K rows are needed")
    c = torch.nn.functional.normalize(torch.as_tensor(vectors, dtype=torch.float32), dim=1)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed))
    batch = min(config.batch_size, n)
    m = config.max_per_cluster or scaled_max_per_cluster(batch, config.clusters)
    curator = PrototypeCurator(c.shape[1], clusters=config.clusters, max_per_cluster=m, thinning=config.thinning,
                               seed=config.seed, kmeans_backend=config.kmeans_backend)  # fmt: skip
    warm = order[: config.warmup_samples]
    curator.initialize(c[warm], warm)
    for start in range(0, n, batch):
        rows = order[start : start + batch]
        curator.select(c[rows], rows)
        curator.update()
    subset = curator.finish()
    return {**curator.summary(), "global_batch": batch, "kept_ids": [ids[i] for i in subset]}


def describe_curation(summary: dict[str, Any]) -> str:
    """The table ``greenfm curate`` prints: members, kept and keep ratio per cluster."""
    lines = [f"curated {summary.get('subset_rows', summary.get('subset_size'))} of {summary.get('rows', '?')} rows "
             f"(global batch {summary['global_batch']}, K {summary['clusters']}, m {summary['max_per_cluster']}, "
             f"{summary['thinning']})", f"{'cluster':>8} {'members':>8} {'kept':>6} {'keep ratio':>10}"]  # fmt: skip
    for k, (members, kept) in enumerate(zip(summary["members_per_cluster"], summary["kept_per_cluster"])):
        ratio = f"{kept / members:.3f}" if members else "-"
        lines.append(f"{k:>8} {members:>8} {kept:>6} {ratio:>10}")
    return "\n".join(lines)


def _aligned(config: CurateConfig, table: pd.DataFrame) -> np.ndarray:
    embeddings = read_embeddings(config.embeddings)
    wanted = table["id"].astype(str).to_numpy()
    known = set(embeddings.ids.tolist())
    missing = [i for i in wanted if i not in known]
    if missing:
        raise BadInputError(
            f"{len(missing)} of {len(wanted)} manifest id(s) of {config.data} have no embedding (the file holds "
            f"{len(embeddings)} ids); first missing: {missing[:5]}; embed this manifest with `greenfm embed` first",
            source=str(config.embeddings),
        )  # fmt: skip
    position = pd.Index(embeddings.ids).get_indexer(wanted)
    vectors = embeddings.vectors[position]
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        raise BadInputError(f"{int(bad.sum())} embedding(s) hold NaN or Inf, e.g. id {wanted[bad][0]}",
                            source=str(config.embeddings))  # fmt: skip
    return vectors


def _raw_rows(path: Path, manifest: Any, table: pd.DataFrame) -> pd.DataFrame:
    """The selected rows as the manifest file wrote them, ``path`` made absolute."""
    path = Path(path)
    raw = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path, dtype=str, keep_default_na=False)
    if len(raw) != len(manifest.table) or manifest.problems:
        # rows were skipped while loading: fall back to greenfm's own reading of them
        return table.reset_index(drop=True)
    raw = raw.loc[table.index].copy()
    raw["path"] = table["path"].astype(str).to_numpy()
    if "id" not in raw.columns:
        raw.insert(0, "id", table["id"].astype(str).to_numpy())
    return raw.reset_index(drop=True)


def _write_manifest(rows: pd.DataFrame, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out) as tmp:
        if out.suffix.lower() == ".parquet":
            rows.to_parquet(tmp, index=False)
        else:
            rows.to_csv(tmp, index=False)
