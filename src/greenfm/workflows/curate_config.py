"""``CurateConfig``: the options of ``greenfm curate``, in a module light enough for the CLI to read."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from greenfm.config import ExistingPath, GreenfmConfig


class CurateConfig(GreenfmConfig):
    """Select a subset of a manifest from precomputed embeddings by prototype curation (METHODS 4.2)."""

    embeddings: ExistingPath = Field(..., description="Embeddings file (Parquet, as `greenfm embed` writes) holding every manifest id.")
    data: ExistingPath = Field(..., description="Manifest to select from (CSV or Parquet).")
    splits: list[str] = Field(["train"], description="Splits curated when the manifest has a split column (other rows are not written).")
    batch_size: int = Field(480, ge=1, description="Global batch B the selection runs on (480: the official 6 x 80).")
    clusters: int = Field(6, ge=1, description="Number of prototypes K.")
    max_per_cluster: int | None = Field(
        None, ge=1, description="Central rows kept per cluster and batch; default max(1, round(0.125 B / K)).",
    )
    thinning: Literal["fps", "density", "random"] = Field("fps", description="How the central band is thinned.")
    warmup_samples: int = Field(800, ge=1, description="Embeddings the k-means initialisation uses (the first of the order).")
    seed: int = Field(42, description="Seeds the order of the batches, the k-means and farthest-point sampling.")
    kmeans_backend: Literal["auto", "faiss", "sklearn"] = Field("auto", description="k-means: faiss when installed, else scikit-learn.")
