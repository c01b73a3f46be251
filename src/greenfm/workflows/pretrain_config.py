"""``PretrainConfig``: the options of ``greenfm pretrain``, in a module light enough for the CLI to read."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from greenfm.config import ExistingPath, GreenfmConfig
from greenfm.methods.registry import available_methods


class PretrainConfig(GreenfmConfig):
    """Everything a pretraining run needs besides the optimiser (``train``)."""

    recipe: str = Field(
        "token-reconstruction", description=f"Pretraining recipe: {', '.join(available_methods())}."
    )
    stage: str | None = Field(
        None, description="Stage of a staged recipe (greenrfm: image, text, align, or all = the three in sequence into "
        "--out/image, --out/text, --out/align). Default: all for greenrfm.",
    )
    init_image: str | None = Field(
        None, description="greenrfm align: the stage-1 image run (or its export) whose image tower loads strictly.",
    )
    init_text: str | None = Field(
        None, description="greenrfm align: the stage-1 text run (or its export) whose text tower loads strictly.",
    )
    data: ExistingPath = Field(..., description="Manifest of the training images (and reports / labels the recipe needs).")
    backbone: str | None = Field(
        None, description="Image tower architecture (timm name or vit_tiny_test). Default: the --init folder's, "
        "else vit_small_patch14_reg4_dinov2.",
    )
    init: str | None = Field(
        None,
        description="Initial weights: random, a weights file, a greenfm run or export folder (its towers load "
        "strictly), or a hub name. Default: the recipe's recommended start (token-reconstruction: the paper's "
        "DINOv2 ViT-S/14 reg4 from the hub; the other recipes: random).",
    )
    img_size: int | None = Field(
        None,
        description="Input side in pixels (ViT position embeddings are resampled). Default: an --init model folder's "
        "own size, else a greenfm tiny backbone's own (vit_tiny_test: 32), else 392 (METHODS).",
    )
    contract: str | None = Field(
        None,
        description="Preprocessing contract preset (rfg, imagenet, cxr-medpeft, clip; volumes: ct-chest, ct-abdomen, "
        "mri) or JSON file; a 2-D preset's size follows img_size. Default: an --init model folder's own contract, else "
        "one for the data's modality (--modality, else the manifest's meta_modality): cxr-medpeft for xray, imagenet "
        "for photo, rfg otherwise, labelled with that modality (other when unknown); ct-chest (mri for MRI data) for a "
        "3-D encoder. The run prints its choice.",
    )
    modality: str | None = Field(None, description="Override the contract's modality (xray, fundus, ct, ...).")
    augment: str = Field("auto", description="Training augmentation: auto (by modality), rfg, cxr, medpeft or none.")
    source_size: int | None = Field(
        None, ge=0, description="Side of the cached images the augmentation works on before the final resize to "
        "img_size (METHODS 2.4). Default: 512 for rfg at 392 px (its crops then downsample, as in the official "
        "1024 px pipeline), else img_size; 0 = img_size.",
    )
    splits: list[str] = Field(["train"], description="Splits used for pretraining when the manifest has a split column.")
    text_tower: str | None = Field(
        None, description="Text tower for image-text recipes: minilm (offline default), a local Hugging Face folder, "
        "or a hub name. Default: the --init run's text tower, else minilm.",
    )
    text_pool: str | None = Field(None, description="Text pooling: cls, last-token or mean (default: the tower's).")
    text_max_length: int | None = Field(None, ge=1, description="Token limit of the text tower (longer reports are truncated and counted).")
    text_from_labels: bool = Field(
        False, description="Give rows without a report a template report rendered from their labels (CheXficient style).",
    )
    vocab: str | None = Field(
        None, description="Label vocabulary of the template reports (--text-from-labels); default: the built-in "
        "vocabulary that covers the most finding columns.",
    )
    cache: str | None = Field(None, description="Decode-once cache root (default: $GREENFM_CACHE_DIR or ~/.cache/greenfm).")
    skip_bad: bool = Field(False, description="Skip unusable rows or images and count them.")
    method: dict[str, Any] = Field(default_factory=dict, description="Recipe options (e.g. noise_std, p_label_text).")
    train: dict[str, Any] = Field(default_factory=dict, description="TrainConfig overrides on top of the recipe's defaults.")
