"""Verbs declared once: a typed config + an API function give the API signature and the CLI options.

A verb is an API function decorated with ``@verb``::

    @verb("greenfm.workflows.adapt_config:FinetuneConfig", command="finetune")
    def finetune(request: VerbRequest, *, out: Annotated[Path, "Run folder."], resume: bool = False): ...

The config class (named lazily, so that nothing heavy is imported until the verb
runs or its options are listed) supplies every option: its fields become keyword
arguments of ``greenfm.api.finetune`` (``inspect.signature`` shows them) and
``--kebab-case`` options of ``greenfm finetune`` whose help is the field's
description, with the default and the valid values of a ``Literal`` shown.
Mapping fields (``train``, ``method``) are sections of the config file; on the
command line they are reached with ``--set train.lr=1e-3``. A few ``TrainConfig``
fields (``TRAIN_OPTIONS``) are offered as plain options too; they go to ``train``.

Precedence, for every verb: config defaults < ``--config`` file < ``--set`` < explicit options.
"""

from __future__ import annotations

import importlib
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from greenfm.config import GreenfmConfig, check_inputs, check_section, load_config, read_config_file

TRAIN_OPTIONS = ("epochs", "max_steps", "batch_size", "lr", "precision", "devices", "num_nodes", "num_workers", "threads", "seed")
CONFIG_HELP = "YAML mapping of any option below, keys in snake_case (img_size: 224)"
VERBS: dict[tuple[str, ...], Verb] = {}  # command path -> verb, in declaration order


@dataclass
class VerbRequest:
    """What a verb was asked: a config file and the explicitly given options, not yet validated."""

    verb: Verb
    config_file: str | Path | None
    given: dict[str, Any]

    def build(self) -> GreenfmConfig:
        """The validated config (file, then given options); named input files must exist."""
        config = load_config(self.verb.config_class, self.config_file, sections=self.sections(), **self.given)
        check_inputs(config)
        return config

    def train(self) -> dict[str, Any]:
        """The ``train`` options of the file and the given options (for resuming a run)."""
        cls, sections = self.verb.config_class, self.sections()
        from_file = read_config_file(cls, self.config_file, sections=sections) if self.config_file else {}
        train = {**(from_file.get("train") or {}), **(self.given.get("train") or {})}
        if "train" in sections:
            check_section(train, "train", sections["train"], "")
        return train

    def sections(self) -> dict[str, type[GreenfmConfig]]:
        """The typed sections of the config file: ``train:`` holds ``TrainConfig`` fields."""
        if "train" not in self.verb.config_class.model_fields:
            return {}
        from greenfm.engine.train_config import TrainConfig

        return {"train": TrainConfig}


@dataclass(eq=False, repr=False)
class Verb:
    """An API function whose keyword arguments are its config's fields (see the module docstring)."""

    run: Callable[..., Any]
    config_ref: str
    command: tuple[str, ...]
    train_options: tuple[str, ...] = TRAIN_OPTIONS
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.__name__ = self.__qualname__ = self.run.__name__
        self.__module__ = self.run.__module__

    def __repr__(self) -> str:
        return f"<greenfm verb {self.__name__} (greenfm {' '.join(self.command)}; options: {self.config_ref})>"

    @property
    def config_class(self) -> type[GreenfmConfig]:
        module, _, name = self.config_ref.partition(":")
        return getattr(importlib.import_module(module), name)

    @property
    def short_help(self) -> str:
        return (inspect.getdoc(self.run) or "").split("\n\n")[0].replace("\n", " ")

    @property
    def __doc__(self) -> str:  # type: ignore[override]
        return (inspect.getdoc(self.run) or "") + "\n\nKeyword arguments:\n" + "\n".join(
            f"  {p.name}: {help_of(self, p.name)}" for p in self.__signature__.parameters.values()
        )

    # -- the keyword signature --------------------------------------------------------------

    def own_parameters(self) -> list[inspect.Parameter]:
        """The API function's own keywords (``out``, ``resume``), after its ``request``."""
        return list(inspect.signature(self.run).parameters.values())[1:]

    def train_shortcuts(self) -> list[str]:
        fields = self.config_class.model_fields
        return [name for name in self.train_options if "train" in fields and name not in fields]

    @property
    def __signature__(self) -> inspect.Signature:
        kw = inspect.Parameter.KEYWORD_ONLY
        hints = typing.get_type_hints(self.run)
        params = [p.replace(kind=kw, annotation=_type_name(hints.get(p.name, p.empty))) for p in self.own_parameters()]
        params.append(inspect.Parameter("config", kw, default=None, annotation="str | Path | None"))
        for name, info in self.config_class.model_fields.items():
            default = None if info.is_required() or info.default_factory is not None else info.default
            params.append(inspect.Parameter(name, kw, default=default, annotation=_type_name(info.annotation)))
        if self.train_shortcuts():
            from greenfm.engine.train_config import TrainConfig

            for name in self.train_shortcuts():
                annotation = _type_name(TrainConfig.model_fields[name].annotation | None)
                params.append(inspect.Parameter(name, kw, default=None, annotation=annotation))
        return inspect.Signature(params)

    # -- calling -------------------------------------------------------------------------------

    def __call__(self, **kwargs: Any) -> Any:
        known = self.__signature__.parameters
        for name in kwargs:
            if name not in known:
                raise TypeError(f"{self.__name__}() got an unexpected keyword argument '{name}'")
        own = {p.name: kwargs.pop(p.name) for p in self.own_parameters() if p.name in kwargs}
        config_file = kwargs.pop("config", None)
        shortcuts = {name: kwargs.pop(name) for name in self.train_shortcuts() if name in kwargs}
        given = {k: _plain(v) for k, v in kwargs.items() if v is not None}
        shortcuts = {k: v for k, v in shortcuts.items() if v is not None}
        if shortcuts:
            given["train"] = {**(given.get("train") or {}), **shortcuts}
        return self.run(VerbRequest(self, config_file, given), **own)


def verb(config: str, *, command: str, train_options: tuple[str, ...] = TRAIN_OPTIONS,
         aliases: dict[str, tuple[str, ...]] | None = None) -> Callable[[Callable[..., Any]], Verb]:
    """Declare an API function as a verb: ``config`` is ``"module:ConfigClass"``, ``command`` its CLI words."""

    def declare(run: Callable[..., Any]) -> Verb:
        declared = Verb(run, config, tuple(command.split()), train_options, dict(aliases or {}))
        VERBS[declared.command] = declared
        return declared

    return declare


def help_of(declared: Verb, name: str) -> str:
    """The help text of one keyword: the field description, or the API function's annotation."""
    fields = declared.config_class.model_fields
    if name in fields:
        return fields[name].description or ""
    if name == "config":
        sections = [f"{key}:" for key, info in fields.items() if is_mapping(info.annotation)]
        return CONFIG_HELP + (f", with {' and '.join(sections)} sections." if sections else ".")
    if name in declared.train_shortcuts():
        from greenfm.engine.train_config import TrainConfig

        return f"{TrainConfig.model_fields[name].description} (train.{name}; default: the verb's own)"
    hints = typing.get_type_hints(declared.run, include_extras=True)
    return next((m for m in getattr(hints.get(name), "__metadata__", ()) if isinstance(m, str)), "")


# -- field types ---------------------------------------------------------------------------------


def unwrap_optional(annotation: Any) -> Any:
    """``X | None`` -> ``X``; ``Annotated[X, ...]`` -> ``X``."""
    if get_origin(annotation) is typing.Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, _UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return unwrap_optional(args[0])
    return annotation


def literal_values(annotation: Any) -> list[Any]:
    """The values a ``Literal`` (or a union holding one) allows."""
    annotation = unwrap_optional(annotation)
    if get_origin(annotation) is Literal:
        return list(get_args(annotation))
    if get_origin(annotation) in (Union, _UnionType):
        return [v for a in get_args(annotation) for v in literal_values(a)]
    return []


def is_sequence(annotation: Any) -> bool:
    annotation = unwrap_optional(annotation)
    if get_origin(annotation) in (list, tuple):
        return True
    return get_origin(annotation) in (Union, _UnionType) and any(is_sequence(a) for a in get_args(annotation))


def is_mapping(annotation: Any) -> bool:
    return get_origin(unwrap_optional(annotation)) is dict or unwrap_optional(annotation) is dict


def item_literals(annotation: Any) -> list[Any]:
    """The allowed values of a ``list[Literal[...]]``'s items."""
    annotation = unwrap_optional(annotation)
    args = get_args(annotation) if get_origin(annotation) in (list, tuple) else ()
    return literal_values(args[0]) if args else []


def _plain(value: Any) -> Any:
    """Paths given to the API become strings, as a config file would hold them."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if get_origin(annotation) is None else None
    return text or str(annotation).replace("typing.", "")


_UnionType = type(int | None)
