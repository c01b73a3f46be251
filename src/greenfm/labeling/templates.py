"""Template reports for label-only data (CheXficient style, METHODS 4.5).

A versioned YAML bank (``templates/chexficient-v1.yaml``) holds positive,
negative and uncertain sentence templates and "no finding" sentences. A row's
report renders every positive (1) and uncertain (-1) finding and up to
``max_negatives`` of its negatives (0), each with a template drawn by a
generator seeded from (seed, row index): the same seed gives the same text
for a row whatever the other rows are. Blank findings are not mentioned; a
row with no positive or uncertain finding starts with a "no finding" sentence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from greenfm.errors import BadInputError, ConfigError
from greenfm.labeling.findings import Vocabulary, load_vocabulary

_PARTS = ("positive", "negative", "uncertain", "no_finding")


@dataclass(frozen=True)
class TemplateBank:
    name: str
    version: str
    positive: tuple[str, ...]
    negative: tuple[str, ...]
    uncertain: tuple[str, ...]
    no_finding: tuple[str, ...]

    @property
    def tag(self) -> str:
        return f"{self.name}@v{self.version}"


def builtin_banks() -> list[str]:
    folder = resources.files("greenfm.labeling") / "templates"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_template_bank(name_or_path: str | Path = "chexficient-v1") -> TemplateBank:
    """A shipped bank by name, or a bank from a YAML path with the same keys."""
    text = str(name_or_path)
    if text in builtin_banks():
        ref = resources.files("greenfm.labeling") / "templates" / f"{text}.yaml"
        source, raw = f"{text}.yaml", ref.read_text(encoding="utf-8")
    elif Path(text).is_file():
        source, raw = text, Path(text).read_text(encoding="utf-8")
    else:
        raise ConfigError(f"unknown template bank '{text}'; built-in: {', '.join(builtin_banks())} (or a YAML path)")
    data = yaml.safe_load(raw)
    if not isinstance(data, dict):
        raise BadInputError("a template bank must be a mapping", source=source)
    parts = {}
    for part in _PARTS:
        items = data.get(part)
        if not isinstance(items, list) or not items or not all(isinstance(t, str) for t in items):
            raise BadInputError(f"'{part}' must be a non-empty list of sentences", source=source)
        if part != "no_finding" and not all("{c}" in t or "{C}" in t for t in items):
            raise BadInputError(f"every '{part}' template needs {{c}} or {{C}}", source=source)
        parts[part] = tuple(items)
    return TemplateBank(str(data.get("name", Path(source).stem)), str(data.get("version", "1")), **parts)


def render_report(
    codes: Mapping[str, float],
    vocabulary: Vocabulary,
    rng: np.random.Generator,
    *,
    bank: TemplateBank,
    max_negatives: int = 3,
) -> str:
    """One report from one row of codes (finding id -> 1 / 0 / -1 / NaN)."""
    positive, uncertain, negative = [], [], []
    for f in vocabulary.findings:
        if f.kind == "no_finding":
            continue
        value = codes.get(f.id, np.nan)
        if value == 1:
            positive.append(f)
        elif value == -1:
            uncertain.append(f)
        elif value == 0:
            negative.append(f)
    if len(negative) > max_negatives:
        keep = sorted(rng.choice(len(negative), size=max_negatives, replace=False))
        negative = [negative[i] for i in keep]
    sentences = []
    if not positive and not uncertain:
        sentences.append(bank.no_finding[rng.integers(len(bank.no_finding))])
    for group, templates in ((positive, bank.positive), (uncertain, bank.uncertain), (negative, bank.negative)):
        for f in group:
            template = templates[rng.integers(len(templates))]
            c = f.prompt_name
            sentences.append(template.replace("{c}", c).replace("{C}", c[:1].upper() + c[1:]))
    return " ".join(sentences)


def synthesize_reports(
    labels: pd.DataFrame,
    vocabulary: str | Vocabulary = "chexpert14",
    *,
    seed: int = 0,
    max_negatives: int = 3,
    bank: str | Path | TemplateBank = "chexficient-v1",
) -> list[str]:
    """Template reports for every row of a label table whose columns are finding ids."""
    vocab = load_vocabulary(vocabulary)
    bank = bank if isinstance(bank, TemplateBank) else load_template_bank(bank)
    if max_negatives < 0:
        raise ConfigError(f"max_negatives must be >= 0, got {max_negatives}")
    columns = [f.id for f in vocab.findings if f.id in labels.columns]
    if not columns:
        raise BadInputError(f"the table has no label column of vocabulary '{vocab.name}' ({', '.join(vocab.ids[:4])}, ...)")
    values = labels[columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    return [
        render_report(
            dict(zip(columns, row)), vocab, np.random.default_rng([seed, i]), bank=bank, max_negatives=max_negatives
        )
        for i, row in enumerate(values)
    ]
