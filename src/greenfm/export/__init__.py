"""``export_model``: a run folder -> a self-describing model folder; ``load_exported`` reads it back, checked.

One layout for every recipe: a run's ``exported/`` folder (``greenfm.models.export``) plus the
checks and the card. Same file names for the towers and heads::

    MODEL_DIR/
      model.safetensors          image tower: a plain timm model (LoRA merged into the backbone)
      config.json                timm name + kwargs (``Encoder.spec``), pooling, head, contract,
                                 ``towers`` / ``heads`` listings, the run record (``metadata``)
      text/                      image-text recipes: the text tower, transformers ``save_pretrained``
                                 + tokenizer + ``greenfm_text.json`` (source, pool, max length, lowercasing)
      heads.safetensors          image-text recipes: image_projection, text_projection, logit_scale
      contract.json              the preprocessing contract (``greenfm.data.contract.Contract``)
      metadata.json              machine-readable card (after MONAI bundles) + sha256 of every file above
                                 and below (``text/*`` too)
      MODEL_CARD.md              the human-readable card (``greenfm.report.card`` + ``export.card``:
                                 every tower, zero-shot scores)
      fixture.png                a deterministic synthetic image (or the image the user gave)
      reference_embeddings.npy   its embedding, float32, computed on CPU by the loader itself
      reference_text_embeddings.npy  image-text: the text tower's embedding of ``REFERENCE_TEXT``
      reference_latents.npy      image-text: projected latents of the fixture image and that text
      reference_embeddings.json  the same values with how they were made (and logits for a classifier)

Runs it understands: a method that exported its towers (``exported/model.safetensors`` +
``config.json``, with ``text/`` and ``heads.safetensors`` for ``unicl`` / ``clip``; token
reconstruction), the engine's ``exported/last.safetensors`` or ``checkpoints/last.ckpt`` of an
encoder method, and fine-tuning runs (``exported/best.safetensors``, else
``checkpoints/best.ckpt`` / ``last.ckpt`` with LoRA merged here). A fine-tuned ``ViTClassifier``
(no final norm, patch-token mean, ``fc_norm``, linear head) is exactly timm's ViT with
``global_pool="avg"``, so it too exports as a plain timm model.

Loading: ``load_exported(dir)`` checks everything and gives ``.encoder``, ``.text``, ``.heads``,
``.towers`` and ``.image_text`` (an ``ImageTextModel``). Because the layout is the run export's,
``greenfm.models.export.load_exported_towers`` / ``load_exported_heads`` and
``ImageTextModel.from_export`` read a model folder directly too, checking the sha256 of each
file they read (``verify_model_folder``) but not the reference embeddings.

This package sits above ``adapt``, ``methods`` and ``report`` (it reads what they write) and
below ``api``; nothing in those layers imports it. ``loader`` reads an export, ``sources``
reduces a run to a plain timm model (and copies its other towers), ``writer`` writes the
folder, ``card`` adds the towers and zero-shot sections to the card.
"""

from greenfm.export.loader import EXPORT_FORMAT, REFERENCE_TEXT, ExportedModel, load_exported
from greenfm.export.writer import export_model, fixture_array

__all__ = ["EXPORT_FORMAT", "REFERENCE_TEXT", "ExportedModel", "export_model", "fixture_array", "load_exported"]
