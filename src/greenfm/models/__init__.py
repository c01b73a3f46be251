"""Backbones: ``create_encoder`` builds timm 2D models, tiny test ViTs and 3D ResNets as an ``Encoder``."""

from greenfm.models.backbones import TINY_CONFIGS, Encoder, build_model, create_encoder
from greenfm.models.export import default_preprocessing, export_encoder, load_exported_encoder
from greenfm.models.weights import LoadReport

__all__ = [
    "TINY_CONFIGS",
    "Encoder",
    "LoadReport",
    "build_model",
    "create_encoder",
    "default_preprocessing",
    "export_encoder",
    "load_exported_encoder",
]
