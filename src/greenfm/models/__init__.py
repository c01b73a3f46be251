"""Backbones: ``create_encoder`` builds timm 2D models, tiny test ViTs and 3D ResNets as an ``Encoder``.

Text towers: ``create_text_tower`` builds a Hugging Face text model and tokenizer as a ``TextTower``
(``transformers`` is imported only when a tower is built).
"""

from greenfm.models.backbones import TINY_CONFIGS, Encoder, build_model, create_encoder
from greenfm.models.export import default_preprocessing, export_encoder, load_exported_encoder
from greenfm.models.text import DEFAULT_TEXT_TOWER, TextTower, count_truncated, create_text_tower
from greenfm.models.weights import LoadReport

__all__ = [
    "DEFAULT_TEXT_TOWER",
    "TINY_CONFIGS",
    "Encoder",
    "LoadReport",
    "TextTower",
    "build_model",
    "count_truncated",
    "create_encoder",
    "create_text_tower",
    "default_preprocessing",
    "export_encoder",
    "load_exported_encoder",
]
