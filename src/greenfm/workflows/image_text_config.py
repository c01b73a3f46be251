"""Options of ``greenfm zeroshot`` and ``greenfm retrieve`` (light: the CLI reads them before any heavy import)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from greenfm.config import ExistingPath, GreenfmConfig

DEFAULT_PROMPT_FAMILY = "p3"  # METHODS 3.8; greenfm.evaluate.prompts holds the families


class ImageTextEvalConfig(GreenfmConfig):
    """What both image-text evaluations read."""

    model: ExistingPath = Field(..., description="An image-text run folder (unicl, clip, greenrfm align) or its exported/ folder.")
    data: ExistingPath = Field(..., description="Manifest of the evaluation images.")
    split: str | None = Field("test", description="Split to evaluate (all rows when the manifest has no split column).")
    batch_size: int = Field(64, ge=1, description="Images per embedding batch.")
    cache: str | None = Field(None, description="Decode-once cache root (default: $GREENFM_CACHE_DIR or ~/.cache/greenfm).")
    skip_bad: bool = Field(False, description="Skip unusable rows or images and count them.")
    threads: int | None = Field(
        None, ge=1, description="torch threads (None: the cores other jobs leave free; never more than OMP_NUM_THREADS)."
    )


class ZeroshotConfig(ImageTextEvalConfig):
    vocab: str | None = Field(
        None, description="Findings to score: a vocabulary name or YAML file (its findings present as columns), "
        "or a comma-separated list of finding columns. Default: every finding column.",
    )
    prompts: str = Field(DEFAULT_PROMPT_FAMILY, description="Prompt family: p1, p2, p3 (default), p4, p5 or chexficient.")
    readout: Literal["prompts", "classifier"] = Field(
        "prompts", description="prompts: softmax over each finding's prompt pair; classifier: sigmoid(C z_v) of a "
        "greenrfm model's shared classifier (no prompts).",
    )
    resamples: int = Field(1000, ge=0, description="Patient-bootstrap resamples for the 95% CIs.")
    seed: int = Field(0, description="Seed of the bootstrap.")


class RetrieveConfig(ImageTextEvalConfig):
    ks: list[int] = Field([1, 5, 10, 50, 100], description="The K of Recall@K.")
