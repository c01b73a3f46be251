"""``greenfm label``: reports in a manifest -> label columns in a new manifest.

Reads the manifest's ``report`` column, labels it with the rule engine
(default, offline) or an LLM endpoint, and writes three files:

- ``OUT`` (CSV or Parquet by suffix): the input rows with one column per
  finding id (1 / 0 / -1 / empty), relative ``path`` entries rewritten for the
  new location, and ``meta_labeler`` naming the engine, vocabulary, model and
  prompt hash. Label columns the input already had are kept as
  ``meta_given_<id>``;
- ``OUT_STEM.evidence.csv``: per report and finding, the code, the deciding
  sentence, mention and cue (for the LLM engine: the failures);
- ``OUT_STEM.labeling.json``: the summary below, the source and, for the LLM,
  the ledger.

The input is never overwritten, nor an existing ``OUT`` unless ``overwrite``.

The LLM engine keeps every answer in a SQLite cache (``cache``, by default
``OUT_STEM.llm-cache.sqlite``). When any report could not be labelled for
a reason other than being too short (endpoint down, HTTP errors, unparseable
answers), ``OUT`` is not written: the labelled rows go to
``OUT_STEM.partial.<suffix>`` (when there are any) and ``LabelingIncomplete``
is raised, one line counting the failures and naming the cache; the CLI exits
with status 2. Rerunning the same command resumes: cached reports are not
sent again. There is never an all-blank ``OUT`` from a dead endpoint.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from greenfm.data.manifest import write_table
from greenfm.io_safety import disk_full_guard
from greenfm.errors import BadInputError, ConfigError, GreenfmError
from greenfm.labeling.agreement import compare_labels, micro_average
from greenfm.labeling.findings import Vocabulary, load_vocabulary
from greenfm.labeling.results import LabelTable

ENGINES = ("rules", "llm")
NOT_ENDPOINT_FAILURES = ("too_short",)  # the report's fault: blank in a complete run too


class LabelingIncomplete(GreenfmError):
    """The LLM engine could not label every report; ``OUT`` was not written (exit status 2)."""

    def __init__(self, message: str, *, failed: int, labeled: int, cache: Path, partial: Path | None):
        self.failed, self.labeled, self.cache, self.partial = failed, labeled, cache, partial
        super().__init__(message)
_STRING_COLUMNS = {c: "string" for c in ("path", "patient_id", "id", "study_id", "split", "report")}


@dataclass
class LabelRunSummary:
    """What ``label_manifest`` did: counts per finding, problems, cost and agreement."""

    out: Path
    evidence: Path
    record: Path
    n_reports: int
    n_labeled: int
    per_finding: pd.DataFrame
    issues: dict[str, int]
    source: dict[str, Any]
    ledger: dict[str, Any] | None = None
    comparison: pd.DataFrame | None = None
    messages: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out), "evidence": str(self.evidence), "n_reports": self.n_reports, "n_labeled": self.n_labeled,
            "source": self.source, "issues": self.issues, "ledger": self.ledger, "messages": self.messages,
            "per_finding": _records(self.per_finding),
            "comparison": None if self.comparison is None else _records(self.comparison),
            "comparison_micro": None if self.comparison is None else micro_average(self.comparison),
        }

    def to_text(self) -> str:
        lines = [f"labeled {self.n_labeled} of {self.n_reports} reports with {self.source.get('engine')} ({self.source.get('vocabulary')})"]
        if self.source.get("model"):
            lines[0] += f", model {self.source['model']}, prompt {self.source['prompt_hash']}"
        table = self.per_finding[["finding", "prevalence", "uncertain_rate", "blank_rate", "failure_rate"]]
        lines.append(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
        if self.issues:
            lines.append("reports with problems: " + ", ".join(f"{k} {v}" for k, v in self.issues.items()))
        if self.ledger:
            lines.append("LLM: " + _ledger_line(self.ledger))
        lines += self.messages
        if self.comparison is not None:
            cols = ["finding", "n", "support", "precision", "recall", "f1", "exact"]
            lines.append("agreement with the manifest's labels (reference -1/NaN not compared; predicted -1/NaN = negative):")
            lines.append(self.comparison[cols].to_string(index=False, float_format=lambda x: f"{x:.3f}"))
            micro = micro_average(self.comparison)
            lines.append(f"micro: precision {micro['precision']:.3f} recall {micro['recall']:.3f} f1 {micro['f1']:.3f}")
        lines.append(f"wrote {self.out} (+ {self.evidence.name}, {self.record.name})")
        return "\n".join(lines)


def label_manifest(
    data: str | Path,
    out: str | Path,
    *,
    vocab: str | Vocabulary = "chexpert14",
    engine: str = "rules",
    compare: bool = False,
    llm_base_url: str | None = None,
    llm_model: str | None = None,
    llm_api_key: str | None = None,
    concurrency: int = 24,
    cache: str | Path | None = None,
    overwrite: bool = False,
    llm_options: dict[str, Any] | None = None,
) -> LabelRunSummary:
    """Label the ``report`` column of manifest ``data`` and write a new manifest ``out``.

    ``llm_options`` passes further ``LLMConfig`` fields (``timeout_s``,
    ``max_attempts``, ``retry_base_s``...). Raises ``LabelingIncomplete`` when
    the LLM engine leaves reports unlabelled (see the module docstring).
    """
    data, out = Path(data), Path(out)
    if out.resolve() == data.resolve():
        raise ConfigError(f"--out {out} is the input manifest; greenfm never overwrites its input")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} already exists; choose another --out or pass --overwrite")
    if out.suffix.lower() not in (".csv", ".parquet", ".pq"):
        raise ConfigError(f"--out {out} must end in .csv or .parquet")
    vocabulary = load_vocabulary(vocab)
    if engine == "llm" and cache is None:
        cache = default_llm_cache(out)
    labeler = make_labeler(
        engine, vocabulary, base_url=llm_base_url, model=llm_model, api_key=llm_api_key,
        concurrency=concurrency, cache=cache, **((llm_options or {}) if engine == "llm" else {}),
    )
    table, decode_problems = read_table(data)
    if "report" not in table.columns:
        raise BadInputError("the manifest has no 'report' column to label", source=str(data))
    labels = labeler.label_many(table["report"].tolist())
    ledger = getattr(labeler, "ledger", None)
    if ledger is not None:
        _refuse_incomplete(ledger, labels, table, data, out, Path(cache) if cache is not None else None)
    issues = labels.issue_counts()
    if decode_problems:
        issues["decode"] = max(issues.get("decode", 0), decode_problems)

    given = [f for f in vocabulary.ids if f in table.columns]
    comparison = None
    if compare:
        if not given:
            raise BadInputError(
                f"--compare: the manifest has no label column of vocabulary '{vocabulary.name}' "
                f"({', '.join(vocabulary.ids[:4])}, ...)", source=str(data),
            )
        comparison = compare_labels(labels.frame(), table, given)

    result = _with_labels(table, labels, given, data.parent, out.parent)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_table(result, out)
    stem = out.with_suffix("")
    evidence_path, record_path = Path(f"{stem}.evidence.csv"), Path(f"{stem}.labeling.json")
    key = "id" if "id" in result.columns else "path" if "path" in result.columns else None
    with disk_full_guard(out.parent, what=evidence_path.name, cleanup=[out, evidence_path]):  # one line, no partial outputs
        labels.evidence_frame(result[key].astype(str).tolist() if key else None).to_csv(evidence_path, index=False)
    _partial_path(out).unlink(missing_ok=True)  # left by an earlier incomplete run, now superseded
    summary = LabelRunSummary(
        out=out, evidence=evidence_path, record=record_path, n_reports=len(labels), n_labeled=int((~labels.failed).sum()),
        per_finding=per_finding_rates(labels), issues=issues, source=labels.source,
        ledger=ledger.to_dict() if ledger is not None else None, comparison=comparison,
        messages=list(ledger.messages) if ledger is not None else [],
    )
    with disk_full_guard(out.parent, what=record_path.name, cleanup=[out, evidence_path, record_path]):
        record_path.write_text(json.dumps(summary.to_dict(), indent=2, default=_json_default))
    return summary


def default_llm_cache(out: str | Path) -> Path:
    """Where the LLM engine caches answers when no cache is named: ``OUT_STEM.llm-cache.sqlite``."""
    return Path(f"{Path(out).with_suffix('')}.llm-cache.sqlite")


def _partial_path(out: Path) -> Path:
    return Path(f"{out.with_suffix('')}.partial{out.suffix}")


def _refuse_incomplete(ledger, labels: LabelTable, table: pd.DataFrame, data: Path, out: Path, cache: Path | None) -> None:
    """Raise ``LabelingIncomplete`` when reports failed for endpoint reasons, after saving the labelled rows."""
    causes = {k: v for k, v in ledger.failures.items() if k not in NOT_ENDPOINT_FAILURES and v}
    failed = sum(causes.values())
    if not failed:
        return
    endpoint_failed = np.array([any(i.startswith("llm_") for i in row) for row in labels.issues], dtype=bool)
    partial = None
    if ledger.labeled:
        partial = _partial_path(out)
        keep = ~endpoint_failed
        kept = LabelTable(labels.findings, labels.codes[keep], [], [labels.issues[i] for i in np.flatnonzero(keep)],
                          labels.failed[keep], dict(labels.source))
        given = [f for f in labels.findings if f in table.columns]
        partial.parent.mkdir(parents=True, exist_ok=True)
        write_table(_with_labels(table.loc[keep].reset_index(drop=True), kept, given, data.parent, out.parent), partial)
    written = f"wrote the rows labelled so far to {partial}" if partial else "nothing labelled, nothing written"
    where = f"{ledger.labeled} answers are cached in {cache}" if cache else "no cache was kept"
    why = f"; {ledger.messages[0]}" if ledger.messages else ""
    message = (
        f"LLM labelling failed for {failed} of {ledger.reports} reports "
        f"({', '.join(f'{k} {v}' for k, v in sorted(causes.items()))}); {out} not written; {written}; "
        f"{where}: rerun the same command to resume (cached reports are not sent again){why}"
    )
    raise LabelingIncomplete(message, failed=failed, labeled=ledger.labeled, cache=cache, partial=partial)


def make_labeler(engine: str, vocabulary: str | Vocabulary, **options):
    """The labeler for ``engine`` (``rules`` or ``llm``); LLM options: base_url, model, api_key, concurrency, cache."""
    if engine == "rules":
        from greenfm.labeling.rules import RuleLabeler

        return RuleLabeler(vocabulary)
    if engine == "llm":
        from greenfm.labeling.llm import LLMLabeler

        cache = options.pop("cache", None)
        return LLMLabeler(vocabulary, cache=cache, **options)
    raise ConfigError(f"unknown labeling engine '{engine}'; choose one of {', '.join(ENGINES)}")


def per_finding_rates(labels: LabelTable) -> pd.DataFrame:
    """Per finding: counts of 1 / 0 / -1 / blank among labeled reports, and rates.

    prevalence, uncertain_rate and blank_rate are shares of the reports the
    labeler could read; failure_rate is the share of all reports it could not
    (empty, non-English for the rules, every LLM attempt failed).
    """
    ok = ~labels.failed
    n_ok, n = int(ok.sum()), len(labels)
    rows = []
    for j, f in enumerate(labels.findings):
        col = labels.codes[ok, j]
        counts = {"positive": int((col == 1).sum()), "negative": int((col == 0).sum()),
                  "uncertain": int((col == -1).sum()), "blank": int(np.isnan(col).sum())}
        rows.append({
            "finding": f, **counts, "failed": n - n_ok,
            "prevalence": counts["positive"] / n_ok if n_ok else math.nan,
            "uncertain_rate": counts["uncertain"] / n_ok if n_ok else math.nan,
            "blank_rate": counts["blank"] / n_ok if n_ok else math.nan,
            "failure_rate": (n - n_ok) / n if n else math.nan,
        })
    return pd.DataFrame(rows)


def read_table(path: Path) -> tuple[pd.DataFrame, int]:
    """A CSV or Parquet manifest; undecodable bytes become U+FFFD (counted), never an error."""
    if not path.is_file():
        raise BadInputError("manifest not found", source=str(path))
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path), 0
        try:
            return pd.read_csv(path, dtype=_STRING_COLUMNS), 0
        except UnicodeDecodeError:
            table = pd.read_csv(path, dtype=_STRING_COLUMNS, encoding="utf-8", encoding_errors="replace")
            text = table.select_dtypes(include=["object", "string"])
            return table, int(text.apply(lambda c: c.astype("string").str.contains("\ufffd", regex=False)).any(axis=1).sum())
    except pd.errors.EmptyDataError:
        raise BadInputError("the manifest is empty", source=str(path)) from None
    except (pd.errors.ParserError, ValueError, OSError) as err:
        raise BadInputError(f"cannot be read as a table ({str(err).splitlines()[0]})", source=str(path)) from None


def _with_labels(table: pd.DataFrame, labels: LabelTable, given: list[str], src: Path, dst: Path) -> pd.DataFrame:
    result = table.rename(columns={f: f"meta_given_{f}" for f in given}).copy()
    for j, f in enumerate(labels.findings):
        result[f] = pd.array(np.where(np.isnan(labels.codes[:, j]), np.nan, labels.codes[:, j]), dtype="Float32").astype("Int8")
    source = labels.source
    result["meta_labeler"] = ":".join(
        str(source[k]) for k in ("engine", "vocabulary", "model", "prompt_hash") if source.get(k)
    )
    if "path" in result.columns:
        result["path"] = [_rebase(p, src, dst) for p in result["path"]]
    return result


def _rebase(p: Any, src: Path, dst: Path) -> Any:
    """A path relative to the input manifest, made relative to the output's folder."""
    if p is None or (isinstance(p, float) and math.isnan(p)) or pd.isna(p) or os.path.isabs(str(p)):
        return p
    return os.path.relpath((src / str(p)).resolve(), dst.resolve())


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(frame.to_json(orient="records"))


def _ledger_line(ledger: dict[str, Any]) -> str:
    causes = ", ".join(f"{k} {v}" for k, v in ledger["failures"].items()) or "none"
    return (f"{ledger['calls']} calls, {ledger['cache_hits']} cache hits, {ledger['prompt_tokens']} prompt + "
            f"{ledger['completion_tokens']} completion tokens, {ledger['failed']} failed ({causes})")


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    return str(x)


def evaluate_against_manifest(
    manifest: str | Path | pd.DataFrame,
    vocabulary: str | Vocabulary = "phantom-cxr5",
    *,
    engine: str = "rules",
    **engine_options,
) -> pd.DataFrame:
    """Label a manifest's ``report`` column and compare with its own label columns.

    One line for "how well does the labeler read these reports?", e.g. on
    synthetic phantom reports whose true findings are known.
    """
    vocab = load_vocabulary(vocabulary)
    table = manifest if isinstance(manifest, pd.DataFrame) else read_table(Path(manifest))[0]
    if "report" not in table.columns:
        raise BadInputError("the manifest has no 'report' column")
    present = [f for f in vocab.ids if f in table.columns]
    if not present:
        raise BadInputError(f"the manifest has no label column of vocabulary '{vocab.name}'")
    labels = make_labeler(engine, vocab, **engine_options).label_many(table["report"].tolist())
    return compare_labels(labels.frame(), table.reset_index(drop=True), present)
