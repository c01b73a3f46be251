"""Pretraining methods by name.

Each entry maps a recipe name to ``module:Class``; the module is imported only
when that method is asked for, so one method's dependencies never burden another.
A method class is a ``greenfm.methods.base.Recipe``: built with ``from_towers``, it has a
``Config`` (a ``GreenfmConfig``) and a ``default_train_config()`` holding its
recommended optimiser settings. A new recipe adds one line here.
"""

from __future__ import annotations

import importlib

from greenfm.errors import ConfigError

_METHODS: dict[str, str] = {
    "token-reconstruction": "greenfm.methods.token_reconstruction:TokenReconstruction",
    "supervised": "greenfm.methods.supervised:Supervised",
    "unicl": "greenfm.methods.unicl:UniCL",
    "clip": "greenfm.methods.unicl:CLIP",
    "chexficient": "greenfm.methods.chexficient:CheXficient",
    "curated-unicl": "greenfm.methods.curated:CuratedUniCL",
    "curated-clip": "greenfm.methods.curated:CuratedCLIP",
    "curated-greenrfm": "greenfm.methods.curated:CuratedGreenRFM",
    "greenrfm": "greenfm.methods.greenrfm:GreenRFM",
}


def available_methods() -> list[str]:
    return sorted(_METHODS)


def register_method(name: str, target: str) -> None:
    """Add a method (``"package.module:Class"``) under ``name``; re-registering a name replaces it."""
    if ":" not in target:
        raise ConfigError(f"method target '{target}' must read 'package.module:Class'")
    _METHODS[name] = target


def get_method(name: str) -> type:
    """The method class registered under ``name``."""
    if name not in _METHODS:
        raise ConfigError(f"unknown method '{name}'; valid: {', '.join(available_methods())}")
    module_name, _, attr = _METHODS[name].partition(":")
    return getattr(importlib.import_module(module_name), attr)
