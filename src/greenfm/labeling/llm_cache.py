"""The LLM labeler's on-disk cache and its ledger of calls, tokens and failures.

The cache is one SQLite file (standard library, safe to reuse across runs):
a row per successfully labelled report, keyed by sha256(model, prompt version,
prompt hash, finding ids, report). A rerun with the same model, prompt and
vocabulary sends nothing for reports it has seen; failures are never cached,
so a rerun retries them.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from greenfm.errors import BadInputError


def cache_key(model: str, prompt_version: str, prompt_hash: str, finding_ids: list[str], report: str) -> str:
    material = "\x1f".join([model, prompt_version, prompt_hash, ",".join(finding_ids), report])
    return hashlib.sha256(material.encode("utf-8", errors="replace")).hexdigest()


class LabelCache:
    """report key -> codes, in a SQLite file; ``None`` path keeps nothing."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None
        self._db: sqlite3.Connection | None = None
        self._pending = 0
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._db = sqlite3.connect(str(self.path))
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS labels (key TEXT PRIMARY KEY, codes TEXT NOT NULL,"
                    " model TEXT, prompt_hash TEXT, created REAL)"
                )
            except sqlite3.DatabaseError as err:
                raise BadInputError(f"not a usable label cache ({err})", source=str(self.path)) from None

    def get(self, key: str) -> list[int] | None:
        if self._db is None:
            return None
        row = self._db.execute("SELECT codes FROM labels WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, codes: list[int], model: str, prompt_hash: str) -> None:
        if self._db is None:
            return
        self._db.execute(
            "INSERT OR REPLACE INTO labels VALUES (?, ?, ?, ?, ?)",
            (key, json.dumps(codes), model, prompt_hash, time.time()),
        )
        self._pending += 1
        if self._pending >= 50:  # an interrupted run keeps most of what it paid for
            self.commit()

    def commit(self) -> None:
        if self._db is not None:
            self._db.commit()
            self._pending = 0

    def close(self) -> None:
        if self._db is not None:
            self.commit()
            self._db.close()
            self._db = None


@dataclass
class Ledger:
    """What an LLM labelling run cost and what went wrong.

    ``failures`` counts reports left unlabelled, by final cause (``too_short``,
    ``parse``, ``timeout``, ``connect``, ``http_429``, ``http_5xx``,
    ``http_4xx``, ``endpoint_down``); ``attempt_errors`` counts every failed
    attempt, including those a retry fixed.
    """

    reports: int = 0
    calls: int = 0
    cache_hits: int = 0
    labeled: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failures: Counter = field(default_factory=Counter)
    attempt_errors: Counter = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "reports": self.reports, "calls": self.calls, "cache_hits": self.cache_hits,
            "labeled": self.labeled, "failed": self.failed, "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens, "failures": dict(sorted(self.failures.items())),
            "attempt_errors": dict(sorted(self.attempt_errors.items())), "messages": list(self.messages),
        }

    def summary(self) -> str:
        causes = ", ".join(f"{k} {v}" for k, v in sorted(self.failures.items())) or "none"
        return (
            f"{self.reports} reports: {self.labeled} labeled ({self.cache_hits} from cache), {self.calls} calls, "
            f"{self.prompt_tokens} prompt + {self.completion_tokens} completion tokens; failures: {causes}"
        )
