"""Finding vocabularies: the ordered lists of findings a labeler assigns.

A vocabulary is a YAML file (schema in ``vocabularies/chexpert14.yaml``):
``name``, ``version``, ``provenance`` and an ordered ``findings`` list whose
entries have a snake_case ``id`` (the manifest column), a display ``name``,
``synonyms`` (mentions), optional ``normal`` statements (absent), ``exclude``
phrases and ``kind`` (``finding`` or ``no_finding``). Built-in vocabularies
load by name (``chexpert14``, ``nih14``, ``ct-rate-18``, ``merlin-30``,
``phantom-cxr5``; hyphens and case do not matter), any other by path.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path

import yaml

from greenfm.errors import BadInputError, ConfigError

_ID = re.compile(r"^[a-z][a-z0-9_]*$")
_RESERVED = {"path", "patient_id", "id", "study_id", "split", "report"}
_KINDS = ("finding", "no_finding")
_FINDING_KEYS = {"id", "name", "synonyms", "normal", "exclude", "kind", "ignore", "description"}


@dataclass(frozen=True)
class Finding:
    """One finding: ``id`` is the manifest column, ``name`` what people read."""

    id: str
    name: str
    synonyms: tuple[str, ...] = ()
    normal: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    kind: str = "finding"
    ignore: tuple[str, ...] = ()

    @property
    def prompt_name(self) -> str:
        """The name as it appears in prompts and templates: lower case, no underscores."""
        return self.name.lower().replace("_", " ")


@dataclass(frozen=True)
class Vocabulary:
    """An ordered list of findings with a name, a version and where it came from."""

    name: str
    findings: tuple[Finding, ...]
    version: str = "1"
    description: str = ""
    provenance: str = ""
    source: str = field(default="", compare=False)

    def __len__(self) -> int:
        return len(self.findings)

    @property
    def ids(self) -> list[str]:
        return [f.id for f in self.findings]

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.findings]

    def __getitem__(self, finding_id: str) -> Finding:
        for f in self.findings:
            if f.id == finding_id:
                return f
        raise KeyError(finding_id)

    @property
    def hash(self) -> str:
        """Content hash (first 12 hex digits): changes whenever ids, names or phrases change."""
        payload = json.dumps(
            [self.name, self.version, [vars(f) for f in self.findings]], sort_keys=True, default=list
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    @property
    def tag(self) -> str:
        return f"{self.name}@v{self.version}:{self.hash}"


def builtin_vocabularies() -> list[str]:
    """The names of the vocabularies shipped with greenfm."""
    folder = resources.files("greenfm.labeling") / "vocabularies"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_vocabulary(name_or_path: str | Path | Vocabulary) -> Vocabulary:
    """A built-in vocabulary by name, or a user vocabulary from a YAML path."""
    if isinstance(name_or_path, Vocabulary):
        return name_or_path
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.suffix.lower() in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"{path}: vocabulary file not found")
        return _load_file(str(path.resolve()), path.stat().st_mtime_ns)
    key = _normalise(text)
    for builtin in builtin_vocabularies():
        if _normalise(builtin) == key:
            return _load_builtin(builtin)
    raise ConfigError(
        f"unknown vocabulary '{text}'; built-in: {', '.join(builtin_vocabularies())} (or give a YAML path)"
    )


def parse_vocabulary(data: object, source: str) -> Vocabulary:
    """Validate a vocabulary mapping; every error is one line naming ``source``."""
    if not isinstance(data, dict) or not isinstance(data.get("findings"), list) or not data["findings"]:
        raise BadInputError("a vocabulary needs a non-empty 'findings' list", source=source)
    findings: list[Finding] = []
    seen_ids: dict[str, int] = {}
    seen_names: dict[str, int] = {}
    for i, raw in enumerate(data["findings"], start=1):
        where = f"finding {i}"
        if not isinstance(raw, dict):
            raise BadInputError(f"{where} is not a mapping", source=source)
        unknown = set(raw) - _FINDING_KEYS
        if unknown:
            raise BadInputError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}", source=source)
        fid, name = str(raw.get("id", "")).strip(), str(raw.get("name", "")).strip()
        if not _ID.match(fid):
            raise BadInputError(f"{where}: id '{fid}' must be snake_case (a-z, 0-9, _)", source=source)
        if fid in _RESERVED or fid.startswith("meta_"):
            raise BadInputError(f"{where}: id '{fid}' is a reserved manifest column", source=source)
        if not name:
            raise BadInputError(f"{where} ('{fid}') has no name", source=source)
        if fid in seen_ids:
            raise BadInputError(f"duplicate finding id '{fid}' (findings {seen_ids[fid]} and {i})", source=source)
        if name.lower() in seen_names:
            raise BadInputError(
                f"duplicate finding name '{name}' (findings {seen_names[name.lower()]} and {i})", source=source
            )
        seen_ids[fid], seen_names[name.lower()] = i, i
        kind = str(raw.get("kind", "finding"))
        if kind not in _KINDS:
            raise BadInputError(f"{where} ('{fid}'): kind must be one of {', '.join(_KINDS)}", source=source)
        findings.append(
            Finding(
                id=fid,
                name=name,
                synonyms=_phrases(raw, "synonyms", where, source),
                normal=_phrases(raw, "normal", where, source),
                exclude=_phrases(raw, "exclude", where, source),
                kind=kind,
                ignore=_phrases(raw, "ignore", where, source),
            )
        )
    for f in findings:
        stray = [x for x in f.ignore if x not in seen_ids]
        if stray:
            raise BadInputError(f"finding '{f.id}' ignores unknown id(s) {', '.join(stray)}", source=source)
    return Vocabulary(
        name=str(data.get("name") or Path(source).stem),
        findings=tuple(findings),
        version=str(data.get("version", "1")),
        description=str(data.get("description", "")),
        provenance=str(data.get("provenance", "")).strip(),
        source=source,
    )


def _phrases(raw: dict, key: str, where: str, source: str) -> tuple[str, ...]:
    value = raw.get(key) or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise BadInputError(f"{where}: '{key}' must be a list of phrases", source=source)
    phrases = tuple(str(v).strip() for v in value if str(v).strip())
    for p in phrases:
        if p.startswith("re:"):
            try:
                re.compile(p[3:])
            except re.error as err:
                raise BadInputError(f"{where}: bad regular expression '{p}' ({err})", source=source) from None
    return phrases


def _normalise(name: str) -> str:
    return re.sub(r"[-_\s]", "", name.lower())


@cache
def _load_builtin(name: str) -> Vocabulary:
    ref = resources.files("greenfm.labeling") / "vocabularies" / f"{name}.yaml"
    return parse_vocabulary(yaml.safe_load(ref.read_text(encoding="utf-8")), f"{name}.yaml")


@lru_cache(maxsize=32)
def _load_file(path: str, mtime_ns: int) -> Vocabulary:  # mtime in the key: an edited file reloads
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise BadInputError(f"not valid YAML ({str(err).splitlines()[0]})", source=path) from None
    except (OSError, UnicodeDecodeError) as err:
        raise BadInputError(f"cannot be read ({err})", source=path) from None
    return parse_vocabulary(data, path)
