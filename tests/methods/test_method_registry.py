"""The method registry: lookup by name, clear errors."""

from __future__ import annotations

import pytest

from greenfm.errors import ConfigError
from greenfm.methods import available_methods, get_method, register_method
from greenfm.methods.token_reconstruction import TokenReconstruction


def test_lookup_by_name():
    assert get_method("token-reconstruction") is TokenReconstruction
    assert "token-reconstruction" in available_methods()


def test_unknown_name_lists_valid_names():
    with pytest.raises(ConfigError, match=r"unknown method 'dino'; valid: .*token-reconstruction"):
        get_method("dino")


def test_register_needs_module_colon_class():
    with pytest.raises(ConfigError, match="package.module:Class"):
        register_method("broken", "greenfm.methods.token_reconstruction.TokenReconstruction")
