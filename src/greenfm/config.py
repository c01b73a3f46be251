"""Typed configuration: validated before any work starts, saved with every run.

Every recipe, adaptation and evaluation has a pydantic model deriving from
``GreenfmConfig``. Field descriptions are the help text. A YAML file supplies
any subset of fields; explicit CLI options override it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from greenfm.errors import ConfigError

C = TypeVar("C", bound="GreenfmConfig")


class MustExist:
    """Field marker: the value names a file or folder that must exist before any work starts."""


ExistingPath = Annotated[str, MustExist()]


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
        if first["type"] == "missing":
            raise ConfigError(f"{source}{cls.__name__} needs option '{where}' (on the command line or in --config)") from None
        raise ConfigError(
            f"{source}invalid {cls.__name__} option '{where}': {first['msg']} ({err.error_count()} problem(s))"
        ) from None


def load_config(
    cls: type[C],
    config_file: str | Path | None = None,
    /,
    *,
    sections: dict[str, type[GreenfmConfig]] | None = None,
    **explicit: Any,
) -> C:
    """Build ``cls`` from a config file with the explicitly given options on top.

    The file is a YAML mapping whose top-level keys are ``cls``'s fields; mapping
    fields (``train:``, ``method:``) are sections, merged key by key with the explicit
    ones. ``None`` means "not given". A key ``cls`` lacks is a one-line error naming it,
    as is a key of a section that ``sections`` types (``{"train": TrainConfig}``).
    """
    values = read_config_file(cls, config_file, sections=sections) if config_file is not None else {}
    for key, value in explicit.items():
        if value is None:
            continue
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            value = {**values[key], **{k: v for k, v in value.items() if v is not None}}
        values[key] = value
    unknown = sorted(set(values) - set(cls.model_fields))
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} option '{unknown[0]}'")
    for key, section in (sections or {}).items():
        check_section(values.get(key), key, section, "")
    return build_config(cls, **values) if config_file is None else _build_from_file(cls, config_file, values)


def read_config_file(
    cls: type[GreenfmConfig], path: str | Path, *, sections: dict[str, type[GreenfmConfig]] | None = None
) -> dict[str, Any]:
    """A verb's config file: top-level keys are ``cls``'s fields, ``sections`` type some of its mappings."""
    values = read_yaml(path)
    for key, value in values.items():
        if key not in cls.model_fields:
            raise ConfigError(f"{path}: unknown key '{key}' (valid: {', '.join(cls.model_fields)})")
        if key in (sections or {}):
            check_section(value, key, sections[key], f"{path}: ")
    return values


def check_section(value: Any, key: str, section: type[GreenfmConfig], source: str) -> None:
    """A typed section holds that type's fields only (a misspelt key must not be ignored)."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise ConfigError(f"{source}'{key}' must be a mapping of {section.__name__} options")
    for name in value:
        if name not in section.model_fields:
            raise ConfigError(f"{source}unknown key '{key}.{name}' (not a {section.__name__} option)")


def _build_from_file(cls: type[C], path: str | Path, values: dict[str, Any]) -> C:
    try:
        return build_config(cls, **values)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def check_inputs(config: GreenfmConfig) -> None:
    """Fail in one line when a field marked ``ExistingPath`` names nothing on disk."""
    for name, field in type(config).model_fields.items():
        value = getattr(config, name)
        if value is not None and any(isinstance(m, MustExist) for m in field.metadata):
            if not Path(value).expanduser().exists():
                raise ConfigError(f"{value}: not found (option '{name}' must name an existing file or folder)")


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
