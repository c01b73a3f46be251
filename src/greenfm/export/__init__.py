"""``export_model``: a run folder -> a self-describing model folder; ``load_exported`` reads it back, checked.

::

    MODEL_DIR/
      model.safetensors          weights of a plain timm model (LoRA merged into the backbone)
      config.json                timm name + kwargs (``Encoder.spec``), pooling, head, contract
      contract.json              the preprocessing contract (``greenfm.data.contract.Contract``)
      metadata.json              machine-readable card (after MONAI bundles) + sha256 of every checked file
      MODEL_CARD.md              the human-readable card (``greenfm.report.card``)
      fixture.png                a deterministic synthetic image (or the image the user gave)
      reference_embeddings.npy   its embedding, float32, computed on CPU by the loader itself
      reference_embeddings.json  the same values with how they were made (and logits for a classifier)

Runs it understands: a method that exported an encoder (``exported/model.safetensors`` +
``config.json``, e.g. token reconstruction), the engine's ``exported/last.safetensors`` or
``checkpoints/last.ckpt`` of an encoder method, and fine-tuning runs
(``exported/best.safetensors``, else ``checkpoints/best.ckpt`` / ``last.ckpt`` with LoRA merged
here). A fine-tuned ``ViTClassifier`` (no final norm, patch-token mean, ``fc_norm``, linear head)
is exactly timm's ViT with ``global_pool="avg"``, so it too exports as a plain timm model.

This package sits above ``adapt``, ``methods`` and ``report`` (it reads what they write) and
below ``api``; nothing in those layers imports it. ``loader`` reads an export, ``sources``
reduces a run to a plain timm model, ``writer`` writes the folder.
"""

from greenfm.export.loader import EXPORT_FORMAT, ExportedModel, load_exported
from greenfm.export.writer import export_model, fixture_array

__all__ = ["EXPORT_FORMAT", "ExportedModel", "export_model", "fixture_array", "load_exported"]
