"""Pretraining objectives, one file each; look them up by name with ``get_method``."""

from greenfm.methods.registry import available_methods, get_method, register_method

__all__ = ["available_methods", "get_method", "register_method"]
