"""Typed configuration: validated before any work starts, saved with every run.

Every recipe, adaptation and evaluation has a pydantic model deriving from
``GreenfmConfig``. Field descriptions are the help text. A YAML file supplies
any subset of fields; explicit CLI options override it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from greenfm.errors import ConfigError

C = TypeVar("C", bound="GreenfmConfig")


class GreenfmConfig(BaseModel):
    """Base for greenfm's typed configs: unknown keys are errors, values are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def build_config(cls: type[C], yaml_path: str | Path | None = None, /, **overrides: Any) -> C:
    """Build ``cls`` from an optional YAML file, then explicit overrides (``None`` = not given)."""
    values: dict[str, Any] = {}
    if yaml_path is not None:
        values.update(read_yaml(yaml_path))
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return cls(**values)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or cls.__name__
        source = f"{yaml_path}: " if yaml_path else ""
        raise ConfigError(
            f"{source}invalid {cls.__name__} option '{where}': {first['msg']} ({err.error_count()} problem(s))"
        ) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with a one-line error when it is not one."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping of option: value")
    return data


def given(**options: Any) -> dict[str, Any]:
    """The options that were given (not None): what overrides a config file or a default."""
    return {k: v for k, v in options.items() if v is not None}


def train_overrides(config_file: str | Path | None, **explicit: Any) -> dict[str, Any]:
    """Training options from a YAML file, with the explicitly given (not None) options on top."""
    return {**(read_yaml(config_file) if config_file is not None else {}), **given(**explicit)}


def write_yaml(data: dict[str, Any], path: str | Path) -> Path:
    """Write a mapping as YAML atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    tmp.replace(path)
    return path
