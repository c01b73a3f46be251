"""The options of ``greenfm finetune`` and ``greenfm evaluate label-efficiency``.

Both verbs adapt one model to one labelled manifest, so they share one options
block (``AdaptOptions``); each adds only what is its own. Kept free of torch so
that the command line can read them (and check paths) before any heavy import.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from greenfm.config import ExistingPath, GreenfmConfig

Mode = Literal["linear", "lora", "full"]
Task = Literal["auto", "binary", "multilabel", "multiclass"]
DEFAULT_LAYER_DECAY = 0.65  # greenfm.adapt.layer_decay's default, the MED-PEFT value


class AdaptOptions(GreenfmConfig):
    """The model, data, LoRA, loss and preprocessing options every adaptation verb takes."""

    model: str = Field(..., description="Run folder, export folder, weights file (with --backbone), hub name or 'random'.")
    data: ExistingPath = Field(..., description="Manifest with train / val / test splits (`greenfm data split`).")
    task: Task = Field(
        "auto", description="auto: multi-class when every row is one-hot over several findings, else multi-label."
    )
    findings: list[str] | None = Field(None, description="Finding columns to learn (default: all).")
    preset: str = Field(  # checked by greenfm.adapt.lora.get_preset, which lists the presets
        "med-peft", description="LoRA preset: med-peft (Q and V of the fused qkv) or broad (qkv, proj, mlp)."
    )
    rank: int = Field(8, ge=1, description="LoRA rank r.")
    alpha: float = Field(32.0, gt=0, description="LoRA alpha (update scaled by alpha / r).")
    lora_dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on the LoRA input.")
    layer_decay: float = Field(DEFAULT_LAYER_DECAY, gt=0, le=1, description="Layer-wise lr decay (1 = off).")
    pos_weight: Literal["balanced"] | list[float] | None = Field(
        None, description="BCE positive weights: 'balanced' (neg/pos per finding on train) or one per finding."
    )
    balanced: bool = Field(False, description="Draw training images evenly over label combinations.")
    backbone: str | None = Field(None, description="Architecture, when the model is a weights file, hub name or 'random'.")
    img_size: int | None = Field(None, description="Input side, when the model is a weights file, hub name or 'random'.")
    contract: str | None = Field(
        None, description="Preprocessing contract: a preset (rfg, imagenet, cxr-medpeft, clip; volumes: ct-chest, "
        "ct-abdomen, mri) or a JSON file (default: the model's own, else one for the data's modality, printed)."
    )
    modality: str | None = Field(None, description="Override the contract's modality (xray, fundus, us, ...).")
    augment: str = Field(  # checked by greenfm.data.augment.get_augment, which lists them
        "auto", description="Training augmentation: auto (by the contract's modality), rfg, cxr, medpeft or none."
    )
    bootstrap: int = Field(1000, ge=0, description="Patient-bootstrap resamples for the test CIs (0: none).")
    bootstrap_seed: int = Field(0, description="Seed of the bootstrap resamples.")
    cache: str | None = Field(None, description="Decode-once cache root (default: $GREENFM_CACHE_DIR or ~/.cache/greenfm).")
    skip_bad: bool = Field(False, description="Skip unusable rows or images and count them.")
    train: dict[str, Any] = Field(
        default_factory=dict, description="TrainConfig options on top of the per-mode defaults (the train: section)."
    )


class FinetuneConfig(AdaptOptions):
    """Everything ``greenfm finetune`` was asked; saved in ``config.yaml`` (``finetune:``)."""

    mode: Mode = Field("lora", description="linear (head only), lora (LoRA + head) or full (everything).")
    label_fraction: float = Field(1.0, gt=0, le=1, description="Share of training patients whose labels are used.")
    fraction_seed: int = Field(0, description="Seed of the nested patient-grouped fraction draw.")


class LabelEfficiencyConfig(AdaptOptions):
    """A label-efficiency study; saved in ``config.yaml`` and checked when the study is continued."""

    fractions: list[float] = Field([0.01, 0.1, 1.0], min_length=1, description="Shares of training patients.")
    seeds: list[int] = Field([0, 1, 2], min_length=1, description="Seeds of the nested draw and of training.")
    modes: list[Mode] = Field(["linear", "lora", "full"], min_length=1, description="Adaptations compared.")
    linear_via: Literal["probe", "finetune"] = Field(
        "probe", description="linear mode as a logistic probe on embeddings, or a trained head."
    )
    pool: str | None = Field(None, description="Embedding pooling for the probe (default: the encoder's).")
    keep_weights: bool = Field(False, description="Keep each fine-tuning run's checkpoints and exported weights.")
