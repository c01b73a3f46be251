"""Embeddings files: one Parquet table of per-image vectors, joined to manifests on ``id``.

Format (docs/architecture.md): columns ``id``, ``patient_id``, ``path`` and
``embedding`` (``list<float32>``, one fixed length per file), and the schema
metadata key ``greenfm`` holding JSON (model, pool, contract, dim, ...).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from greenfm.errors import BadInputError
from greenfm.io_safety import atomic_output

METADATA_KEY = b"greenfm"
REQUIRED_COLUMNS = ("id", "patient_id", "path", "embedding")


@dataclass
class Embeddings:
    """Per-image embeddings: ``vectors[i]`` belongs to ``ids[i]``."""

    ids: np.ndarray  # (N,) str
    patient_ids: np.ndarray  # (N,) str
    paths: np.ndarray  # (N,) str
    vectors: np.ndarray  # (N, D) float32
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids, dtype=object).astype(str)
        self.patient_ids = np.asarray(self.patient_ids, dtype=object).astype(str)
        self.paths = np.asarray(self.paths, dtype=object).astype(str)
        self.vectors = np.asarray(self.vectors, dtype=np.float32)
        n = len(self.ids)
        if self.vectors.ndim != 2 or self.vectors.shape[0] != n:
            raise BadInputError(f"embeddings must be (N, D) with N={n} ids, got {self.vectors.shape}")
        if len(self.patient_ids) != n or len(self.paths) != n:
            raise BadInputError("ids, patient_ids and paths must have the same length")

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.ids)


def write_embeddings(path: str | Path, embeddings: Embeddings) -> Path:
    """Write ``embeddings`` to a Parquet file; ``dim`` is added to its metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n, dim = embeddings.vectors.shape
    flat = pa.array(np.ascontiguousarray(embeddings.vectors).reshape(-1), type=pa.float32())
    offsets = pa.array(np.arange(0, n * dim + 1, dim, dtype=np.int32))
    table = pa.table(
        {
            "id": pa.array(embeddings.ids.tolist(), type=pa.string()),
            "patient_id": pa.array(embeddings.patient_ids.tolist(), type=pa.string()),
            "path": pa.array(embeddings.paths.tolist(), type=pa.string()),
            "embedding": pa.ListArray.from_arrays(offsets, flat),
        }
    )
    meta = {**embeddings.metadata, "dim": int(dim)}
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(meta, sort_keys=True).encode()})
    with atomic_output(path, needed=table.nbytes) as tmp:
        pq.write_table(table, tmp)
    return path


def read_embeddings(path: str | Path) -> Embeddings:
    """Read an embeddings Parquet file, checking columns, lengths and unique ids."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError("embeddings file not found", source=str(path))
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise BadInputError(f"not a readable Parquet file ({exc})", source=str(path)) from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise BadInputError(f"missing column(s) {missing}; expected {list(REQUIRED_COLUMNS)}", source=str(path))
    raw_meta = (table.schema.metadata or {}).get(METADATA_KEY)
    try:
        metadata = json.loads(raw_meta) if raw_meta else {}
    except json.JSONDecodeError as exc:
        raise BadInputError(f"schema metadata 'greenfm' is not JSON ({exc})", source=str(path)) from exc

    column = table.column("embedding").combine_chunks()
    if column.null_count:
        raise BadInputError(f"{column.null_count} row(s) have no embedding", source=str(path))
    lengths = np.asarray(column.value_lengths())
    dim = int(lengths[0]) if len(lengths) else int(metadata.get("dim", 0))
    if len(lengths) and (lengths != dim).any():
        row = int(np.flatnonzero(lengths != dim)[0])
        raise BadInputError(f"row {row} has an embedding of length {lengths[row]}, expected {dim}", source=str(path))
    vectors = np.asarray(column.flatten(), dtype=np.float32).reshape(len(lengths), dim)

    ids = table.column("id").to_numpy(zero_copy_only=False).astype(str)
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dupes = unique[counts > 1][:5].tolist()
        raise BadInputError(f"{int((counts > 1).sum())} duplicated id(s), e.g. {dupes}", source=str(path))
    return Embeddings(
        ids=ids,
        patient_ids=table.column("patient_id").to_numpy(zero_copy_only=False),
        paths=table.column("path").to_numpy(zero_copy_only=False),
        vectors=vectors,
        metadata=metadata,
    )


def align_embeddings(embeddings: Embeddings, table: pd.DataFrame, *, source: str | None = None) -> np.ndarray:
    """Rows of ``embeddings.vectors`` in the order of ``table["id"]``.

    Every manifest id must have an embedding (a clear error gives the count and the
    first missing ids); embeddings of images absent from ``table`` are ignored.
    Patient ids, where both files give them, must agree.
    """
    wanted = table["id"].astype(str).to_numpy()
    position = pd.Index(embeddings.ids).get_indexer(wanted)
    missing = wanted[position < 0]
    if len(missing):
        raise BadInputError(
            f"{len(missing)} of {len(wanted)} manifest id(s) have no embedding "
            f"(the file holds {len(embeddings)}); first missing: {missing[:5].tolist()}",
            source=source,
        )
    if "patient_id" in table:
        given = table["patient_id"].astype(str).to_numpy()
        stored = embeddings.patient_ids[position]
        # an embeddings file written without patient ids holds empty strings: nothing to check
        differs = (stored != given) & ~np.isin(stored, ["", "None", "nan"])
        if differs.any():
            first = wanted[differs][:5].tolist()
            raise BadInputError(
                f"{int(differs.sum())} id(s) have a different patient_id in the embeddings file "
                f"than in the manifest, e.g. {first}",
                source=source,
            )
    return embeddings.vectors[position]
