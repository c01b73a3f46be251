"""Click commands generated from ``greenfm.options.Verb``: one option per config field.

``--kebab-name`` per field, its description as help, its default shown, a
``Literal``'s values as choices, ``bool`` as ``--x/--no-x``, lists comma-separated.
Mapping fields (``train``, ``method``) are reached with ``--config`` or ``--set``.
Only options given on the command line are passed on, so a config file's values
are never overwritten by defaults. The options are built when the command is run or
its help is shown, never when ``greenfm --help`` lists it.
"""

from __future__ import annotations

from typing import Any

import click
import yaml
from click.core import ParameterSource
from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticUndefined

from greenfm.errors import ConfigError
from greenfm.options import (
    Verb,
    help_of,
    is_mapping,
    is_sequence,
    item_literals,
    literal_values,
    unwrap_optional,
)

SET_HELP = "Set any option, also inside a section: --set train.weight_decay=0.1 (repeatable; YAML values)."
GIVEN = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


class FieldType(click.ParamType):
    """Text -> a value of the field's type: comma-separated lists, checked with pydantic."""

    def __init__(self, annotation: Any, metavar: str) -> None:
        self.annotation, self.name = annotation, metavar

    def convert(self, value: Any, param, ctx) -> Any:
        if not isinstance(value, str):
            return value
        if is_sequence(self.annotation) and value not in [str(v) for v in literal_values(self.annotation)]:
            value = [item.strip() for item in value.split(",") if item.strip()]
        try:
            return TypeAdapter(self.annotation).validate_python(value, strict=False)
        except ValidationError as err:
            self.fail(err.errors()[0]["msg"], param, ctx)


def field_option(name: str, info: Any, aliases: tuple[str, ...] = (), help_text: str | None = None,
                 show_default: bool = True) -> click.Option:
    """One click option for one pydantic field."""
    flag = "--" + name.replace("_", "-")
    annotation = info.annotation
    base = unwrap_optional(annotation)
    default = None if info.default is PydanticUndefined or info.default_factory else info.default
    help_text = help_text if help_text is not None else (info.description or "")
    choices = [str(v) for v in literal_values(annotation)] or [str(v) for v in item_literals(annotation)]
    if choices and (is_sequence(annotation) or not all(isinstance(v, str) for v in literal_values(annotation))):
        help_text += f"  [values: {', '.join(choices)}]"
    if isinstance(default, (list, tuple)):
        default = ",".join(str(v) for v in default)  # as it would be typed
    shown = show_default and default is not None
    if base is bool:
        return click.Option([name, f"{flag}/--no-{flag[2:]}", *aliases], default=default, help=help_text,
                            show_default=shown)  # fmt: skip
    if is_sequence(annotation):
        kind: click.ParamType = FieldType(annotation, "A,B,...")
    elif literal_values(annotation) and all(isinstance(v, str) for v in literal_values(annotation)):
        kind = click.Choice(choices)
    elif base in (int, float, str):
        kind = {int: click.INT, float: click.FLOAT, str: click.STRING}[base]
    else:
        kind = FieldType(annotation, "VALUE")
    return click.Option([name, flag, *aliases], type=kind, default=default, help=help_text, show_default=shown)


def verb_params(verb: Verb) -> list[click.Parameter]:
    """The options of a verb's command: its own (``--out``), ``--config``, ``--set``, then one per field."""
    params: list[click.Parameter] = []
    for p in verb.own_parameters():
        flag = "--" + p.name.replace("_", "-")
        required = p.default is p.empty
        if p.default is False or p.default is True:
            params.append(click.Option([p.name, flag], is_flag=True, default=p.default, help=help_of(verb, p.name)))
        else:
            params.append(click.Option([p.name, flag], required=required, default=None if required else p.default,
                                       help=help_of(verb, p.name), show_default=not required))  # fmt: skip
    params.append(click.Option(["config", "--config"], type=click.Path(dir_okay=False), help=help_of(verb, "config")))
    params.append(click.Option(["set_values", "--set"], multiple=True, metavar="KEY=VALUE", help=SET_HELP))
    for name, info in verb.config_class.model_fields.items():
        if not is_mapping(info.annotation):
            params.append(field_option(name, info, verb.aliases.get(name, ())))
    if verb.train_shortcuts():
        from greenfm.engine.train_config import TrainConfig

        for name in verb.train_shortcuts():
            params.append(field_option(name, TrainConfig.model_fields[name], verb.aliases.get(name, ()),
                                       help_text=help_of(verb, name), show_default=False))  # fmt: skip
    return params


class VerbCommand(click.Command):
    """A verb's command; its options are generated on first use."""

    def __init__(self, name: str, verb: Verb) -> None:
        self.verb, self._params = verb, None
        epilog = ("Precedence: defaults < --config file < --set < options given here. A key the verb lacks is an "
                  "error naming it.")  # fmt: skip
        super().__init__(name, callback=self._invoke, help=verb.short_help, epilog=epilog, no_args_is_help=True,
                         context_settings={"max_content_width": 110})  # fmt: skip

    @property
    def params(self) -> list[click.Parameter]:  # type: ignore[override]
        if self._params is None:
            self._params = verb_params(self.verb)
        return self._params

    @params.setter
    def params(self, value: list[click.Parameter]) -> None:
        self._params = list(value) or None

    def _invoke(self, **values: Any) -> Any:
        ctx = click.get_current_context()
        set_values = values.pop("set_values", ())
        own = {p.name for p in self.verb.own_parameters()}
        given = {k: v for k, v in values.items() if k in own or ctx.get_parameter_source(k) in GIVEN}
        return self.verb(**merge_sections(parse_sets(set_values, self.verb), given))


def parse_sets(items: tuple[str, ...], verb: Verb) -> dict[str, Any]:
    """``--set a=1 --set train.lr=0.1`` -> ``{"a": 1, "train": {"lr": 0.1}}``; unknown keys are errors."""
    known = set(verb.__signature__.parameters)
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: write KEY=VALUE, e.g. --set train.lr=0.001")
        head, _, rest = key.strip().partition(".")
        if head not in known:
            raise ConfigError(f"--set: unknown option '{head}'")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        if rest:
            out.setdefault(head, {})[rest] = value
        else:
            out[head] = value
    return out


def merge_sections(low: dict[str, Any], high: dict[str, Any]) -> dict[str, Any]:
    """``high`` over ``low``, mapping values merged key by key."""
    merged = dict(low)
    for key, value in high.items():
        merged[key] = {**merged[key], **value} if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged
