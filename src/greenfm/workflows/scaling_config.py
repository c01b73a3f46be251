"""``ScalingConfig``: the options of ``greenfm scaling`` (METHODS 5.3), light enough for the CLI to read.

A study pretrains every recipe on nested, patient-closed subsets of one training split with
the same optimiser steps and batch, then scores each model and its init with the same
frozen-encoder evaluations. What defines the study (data, sizes, steps, batch, init, ...) is
fixed by its first run; recipes and evaluations may be added to it later.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from greenfm.config import ExistingPath, GreenfmConfig

Evaluation = Literal["probe", "zeroshot", "label-efficiency"]
EVALUATIONS: tuple[str, ...] = ("probe", "zeroshot", "label-efficiency")
# Fields a continued study must share with its first run (recipes and evaluations may grow).
STUDY_FIELDS: tuple[str, ...] = (
    "data", "eval_data", "sizes", "steps", "subset_seed", "splits", "backbone", "init", "img_size", "contract",
    "modality", "augment", "source_size", "text_tower", "text_pool", "text_max_length", "text_from_labels", "vocab",
    "method", "train", "bootstrap", "bootstrap_seed", "probe_train_images", "fractions", "prompts",
)  # fmt: skip


class ScalingConfig(GreenfmConfig):
    """A data-scaling study: recipes x nested subset sizes, equal steps, shared evaluations."""

    recipe: list[str] = Field(
        ["unicl", "clip"], min_length=1,
        description="Pretraining recipe(s), comma-separated (e.g. unicl,clip or token-reconstruction); all share "
        "the subsets and evaluations, so they pair size by size.",
    )  # fmt: skip
    data: ExistingPath = Field(..., description="Manifest with a patient-level train split (`greenfm data split`).")
    sizes: list[int] = Field(
        ..., min_length=1, description="Training-subset sizes in images, comma-separated (500,2000,8000); each is the "
        "shortest prefix of the shuffled patients holding that many images.",
    )  # fmt: skip
    steps: int = Field(..., ge=1, description="Optimiser steps of every cell (the same for every size and recipe).")
    eval: list[Evaluation] = Field(
        ["probe", "zeroshot"], min_length=1,
        description="Frozen-encoder evaluations: probe (RETFound-Green linear probe, test macro AUROC), zeroshot "
        "(image-text recipes), label-efficiency (linear probe at --fractions of the training labels).",
    )  # fmt: skip
    eval_data: ExistingPath | None = Field(
        None, description="Manifest the evaluations use (train/val/test splits). Default: --data.",
    )
    subset_seed: int = Field(0, description="Seed of the one patient shuffle that defines every subset.")
    splits: list[str] = Field(["train"], description="Splits of --data the subsets are drawn from.")
    probe_train_images: int | None = Field(
        None, ge=1, description="Fit the probes on the shortest patient prefix of the evaluation train split holding "
        "this many images (the same rows for every cell). Default: the whole train split.",
    )  # fmt: skip
    fractions: list[float] = Field(
        [0.01, 0.1, 1.0], min_length=1, description="Label fractions of the label-efficiency evaluation."
    )
    prompts: str = Field("p3", description="Prompt family of the zero-shot evaluation (p1-p5, chexficient).")
    bootstrap: int = Field(1000, ge=1, description="Patient-bootstrap resamples for every CI.")
    bootstrap_seed: int = Field(0, description="Seed of the bootstrap resamples (the same for every cell).")
    fit_resamples: int = Field(200, ge=0, description="Bootstrap resamples refitted for the CIs of (a, b, c).")
    backbone: str | None = Field(
        None, description="Image tower architecture (timm name or vit_tiny_test). Default: the --init folder's, "
        "else vit_small_patch14_reg4_dinov2.",
    )  # fmt: skip
    init: str | None = Field(
        None, description="Initial weights of every cell (random, a weights file, a greenfm run or export folder, a "
        "hub name). Default: the recipe's recommended start. Saved once per recipe under init/ and evaluated as n = 0.",
    )  # fmt: skip
    img_size: int | None = Field(None, description="Input side in pixels (default: the --init folder's, else 392).")
    contract: str | None = Field(None, description="Preprocessing contract preset or JSON file (as in pretrain).")
    modality: str | None = Field(None, description="Override the contract's modality (xray, fundus, ct, ...).")
    augment: str = Field("auto", description="Training augmentation: auto (by modality), rfg, cxr, medpeft or none.")
    source_size: int | None = Field(None, ge=0, description="Side of the cached images augmentation works on.")
    text_tower: str | None = Field(None, description="Text tower of image-text recipes (default: minilm, offline).")
    text_pool: str | None = Field(None, description="Text pooling: cls, last-token or mean (default: the tower's).")
    text_max_length: int | None = Field(None, ge=1, description="Token limit of the text tower.")
    text_from_labels: bool = Field(
        False, description="Give rows without a report a template report rendered from their labels."
    )
    vocab: str | None = Field(None, description="Label vocabulary of the template reports (--text-from-labels).")
    cache: str | None = Field(None, description="Decode-once cache root (default: $GREENFM_CACHE_DIR or ~/.cache/greenfm).")
    skip_bad: bool = Field(False, description="Skip unusable rows or images and count them.")
    keep_weights: bool = Field(True, description="Keep each cell's checkpoints (exported towers are always kept).")
    method: dict[str, Any] = Field(
        default_factory=dict, description="Recipe options shared by every recipe, or a mapping recipe -> options.",
    )
    train: dict[str, Any] = Field(
        default_factory=dict, description="TrainConfig overrides of every cell (not epochs / max_steps: --steps).",
    )
