"""LLM labeler: any OpenAI-compatible chat endpoint (vLLM, Ollama, a hosted API).

The GreenRFM protocol (METHODS 3.2): the prompt of ``prompt.py`` at
temperature 0, at most ``concurrency`` requests in flight, at most
``max_attempts`` attempts per report with ``retry_base_s * 2**attempt``
seconds between them (2 s then 4 s by default; a 429's Retry-After is
honoured up to 60 s). Timeouts, connection errors, HTTP 429 and 5xx and
unparseable answers are retried; other 4xx are not. A report that still
fails, or is shorter than 5 characters (never sent), gets NaN codes and is
counted in the ledger by cause. When several reports in a row cannot reach the
endpoint (refused, 401/403/404), or many in a row fail whatever the cause (a
server answering 500s or garbage), the rest are not sent and the ledger says
why. ``greenfm label`` turns any such failure into an error (see ``label_verb``).

Reports go nowhere unless the user names the endpoint: ``base_url`` (or
``GREENFM_LLM_BASE_URL``) has no default. The API key is never written to
disk or into run records.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import httpx
import numpy as np
from pydantic import Field

from greenfm.config import GreenfmConfig
from greenfm.errors import ConfigError
from greenfm.labeling.findings import Vocabulary, load_vocabulary
from greenfm.labeling.llm_cache import LabelCache, Ledger, cache_key
from greenfm.labeling.prompt import (
    PROMPT_VERSION,
    ParseError,
    parse_codes,
    prompt_hash,
    system_prompt,
)
from greenfm.labeling.results import LabelTable
from greenfm.labeling.text import MAX_CHARS, clean_report

ENV_BASE_URL, ENV_MODEL, ENV_API_KEY = "GREENFM_LLM_BASE_URL", "GREENFM_LLM_MODEL", "GREENFM_LLM_API_KEY"
_RETRYABLE = {"timeout", "connect", "http_429", "http_5xx", "http_error", "parse"}
_UNREACHABLE = {"connect", "http_401", "http_403", "http_404"}


class LLMConfig(GreenfmConfig):
    """Where and how to ask the LLM. ``base_url`` is the OpenAI-style root, e.g. http://localhost:8000/v1."""

    base_url: str = Field(description="OpenAI-compatible base URL (ends in /v1); env GREENFM_LLM_BASE_URL")
    model: str = Field(description="model name served by the endpoint; env GREENFM_LLM_MODEL")
    api_key: str | None = Field(default=None, exclude=True, repr=False, description="env GREENFM_LLM_API_KEY")
    concurrency: int = Field(default=24, ge=1, le=1024, description="requests in flight at most")
    timeout_s: float = Field(default=60.0, gt=0, description="seconds per request")
    max_attempts: int = Field(default=3, ge=1, le=3, description="attempts per report (GreenRFM: 3)")
    retry_base_s: float = Field(default=1.0, ge=0, description="sleep retry_base_s * 2**attempt between attempts")
    temperature: float = Field(default=0.0, ge=0, description="sampling temperature (0: deterministic)")
    max_tokens: int | None = Field(default=None, ge=1, description="completion token cap; None: the server's")
    min_chars: int = Field(default=5, ge=0, description="shorter reports are never sent (NaN)")
    max_chars: int = Field(default=MAX_CHARS, ge=100, description="longer reports are cut here")
    max_unreachable: int = Field(default=3, ge=1, description="stop after this many reports in a row find no endpoint")
    max_failing: int = Field(default=10, ge=1, description="stop after this many reports in a row fail for any cause")


def resolve_llm_config(
    base_url: str | None = None,
    model: str | None = None,
    api_key: str | None = None,
    **options,
) -> LLMConfig:
    """Options first, then the GREENFM_LLM_* environment variables; no endpoint, no labelling."""
    base_url = base_url or os.environ.get(ENV_BASE_URL)
    model = model or os.environ.get(ENV_MODEL)
    api_key = api_key or os.environ.get(ENV_API_KEY)
    if not base_url:
        raise ConfigError(
            f"the LLM engine needs an endpoint: pass --llm-base-url or set {ENV_BASE_URL} "
            "(reports are sent nowhere by default)"
        )
    parsed = urlparse(base_url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(f"LLM base URL '{base_url}' must look like http://host:port/v1")
    if not model:
        raise ConfigError(f"the LLM engine needs a model name: pass --llm-model or set {ENV_MODEL}")
    return LLMConfig(base_url=base_url, model=model, api_key=api_key, **{k: v for k, v in options.items() if v is not None})


class LLMLabeler:
    """Label reports with an OpenAI-compatible chat endpoint; see the module docstring."""

    engine = "llm"

    def __init__(self, vocabulary: str | Vocabulary = "chexpert14", config: LLMConfig | None = None, *,
                 cache: str | os.PathLike | None = None, **options):
        self.vocabulary = load_vocabulary(vocabulary)
        self.config = config or resolve_llm_config(**options)
        self.cache_path = cache
        self.system_prompt = system_prompt(self.vocabulary)
        self.prompt_hash = prompt_hash(self.vocabulary)
        self.ledger = Ledger()

    @property
    def source(self) -> dict[str, str]:
        return {
            "engine": self.engine, "vocabulary": self.vocabulary.tag, "model": self.config.model,
            "prompt_version": PROMPT_VERSION, "prompt_hash": self.prompt_hash, "base_url": self.config.base_url,
        }

    def __call__(self, report: object) -> list[float]:
        return [float(x) for x in self.label_many([report]).codes[0]]

    def label_many(self, reports: Iterable[object]) -> LabelTable:
        """Label every report; never raises for endpoint trouble (see ``self.ledger``)."""
        coro = self.alabel_many(list(reports))
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coro)
        with ThreadPoolExecutor(1) as pool:  # called from inside an event loop (e.g. a notebook)
            return pool.submit(asyncio.run, coro).result()

    async def alabel_many(self, reports: list[object]) -> LabelTable:
        k = len(self.vocabulary)
        codes = np.full((len(reports), k), np.nan, dtype=np.float32)
        issues: list[set[str]] = []
        self.ledger = ledger = Ledger(reports=len(reports))
        cache = LabelCache(self.cache_path)
        todo: list[tuple[int, str, str]] = []
        for i, raw in enumerate(reports):
            clean = clean_report(raw, max_chars=self.config.max_chars)
            issues.append(set(clean.issues))
            if len(clean.text) < self.config.min_chars:
                ledger.failures["too_short"] += 1
                issues[i].add("too_short")
                continue
            key = cache_key(self.config.model, PROMPT_VERSION, self.prompt_hash, self.vocabulary.ids, clean.text)
            hit = cache.get(key)
            if hit is not None and len(hit) == k:
                codes[i] = hit
                ledger.cache_hits += 1
                ledger.labeled += 1
            else:
                todo.append((i, clean.text, key))
        self._unreachable_in_a_row = 0
        self._failing_in_a_row = 0
        self._stopped: str | None = None
        try:
            if todo:
                limits = httpx.Limits(max_connections=self.config.concurrency)
                local = urlparse(self.config.base_url).hostname in ("localhost", "127.0.0.1", "::1")
                async with httpx.AsyncClient(
                    timeout=httpx.Timeout(self.config.timeout_s), limits=limits, trust_env=not local
                ) as client:
                    gate = asyncio.Semaphore(self.config.concurrency)
                    results = await asyncio.gather(*(self._one(client, gate, text) for _, text, _ in todo))
                for (i, _, key), (result, cause) in zip(todo, results):
                    if result is None:
                        ledger.failures[cause] += 1
                        issues[i].add(f"llm_{cause}")
                        continue
                    codes[i] = result
                    ledger.labeled += 1
                    cache.put(key, result, self.config.model, self.prompt_hash)
        finally:
            cache.close()
        failed = np.isnan(codes).all(axis=1) if k else np.zeros(len(reports), dtype=bool)
        evidence = [
            {"row": i, "finding": "", "code": math.nan, "mention": "", "cue": cause, "sentence": "", "start": -1, "end": -1}
            for i, row in enumerate(issues) for cause in sorted(row) if cause.startswith("llm_") or cause == "too_short"
        ]
        return LabelTable(self.vocabulary.ids, codes, evidence, [frozenset(x) for x in issues], failed, dict(self.source))

    async def _one(self, client: httpx.AsyncClient, gate: asyncio.Semaphore, text: str) -> tuple[list[int] | None, str]:
        cause = "endpoint_down"
        async with gate:
            for attempt in range(1, self.config.max_attempts + 1):
                if self._stopped:
                    return None, "endpoint_down"
                codes, cause, wait = await self._attempt(client, text)
                if codes is not None:
                    self._unreachable_in_a_row = self._failing_in_a_row = 0
                    return codes, ""
                self.ledger.attempt_errors[cause] += 1
                if cause not in _RETRYABLE or attempt == self.config.max_attempts:
                    break
                await asyncio.sleep(max(self.config.retry_base_s * 2**attempt, wait))
        self._failing_in_a_row += 1
        if cause in _UNREACHABLE:
            self._unreachable_in_a_row += 1
            if self._unreachable_in_a_row >= self.config.max_unreachable and not self._stopped:
                self._stopped = cause
                self.ledger.messages.append(_unreachable_message(self.config.base_url, cause))
        if self._failing_in_a_row >= self.config.max_failing and not self._stopped:
            self._stopped = cause
            self.ledger.messages.append(
                f"LLM endpoint {self.config.base_url}: {self._failing_in_a_row} reports in a row failed "
                f"(last: {cause}); the remaining reports were not sent"
            )
        return None, cause

    async def _attempt(self, client: httpx.AsyncClient, text: str) -> tuple[list[int] | None, str, float]:
        """One request: (codes, "", 0) or (None, cause, seconds the server asked us to wait)."""
        body = {
            "model": self.config.model,
            "messages": [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": text}],
            "temperature": self.config.temperature,
        }
        if self.config.max_tokens is not None:
            body["max_tokens"] = self.config.max_tokens
        headers = {"Authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}
        url = self.config.base_url.rstrip("/") + "/chat/completions"
        try:
            self.ledger.calls += 1
            response = await client.post(url, json=body, headers=headers)
        except httpx.TimeoutException:
            return None, "timeout", 0.0
        except httpx.ConnectError:
            self.ledger.calls -= 1  # nothing reached the server
            return None, "connect", 0.0
        except httpx.HTTPError:
            return None, "http_error", 0.0
        status = response.status_code
        if status == 429:
            return None, "http_429", _retry_after(response)
        if status >= 500:
            return None, "http_5xx", 0.0
        if status in (401, 403, 404):
            return None, f"http_{status}", 0.0
        if status >= 400:
            return None, "http_4xx", 0.0
        try:
            payload = response.json()
            usage = payload.get("usage") or {}
            self.ledger.prompt_tokens += int(usage.get("prompt_tokens") or 0)
            self.ledger.completion_tokens += int(usage.get("completion_tokens") or 0)
            answer = payload["choices"][0]["message"]["content"]
            return parse_codes(answer, len(self.vocabulary)), "", 0.0
        except (ParseError, ValueError, KeyError, IndexError, TypeError, AttributeError):
            return None, "parse", 0.0


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(float(response.headers.get("retry-after", 0)), 60.0)
    except ValueError:
        return 0.0


def _unreachable_message(base_url: str, cause: str) -> str:
    why = {
        "connect": "cannot connect (refused or unreachable)",
        "http_401": "HTTP 401: check the API key",
        "http_403": "HTTP 403: access denied",
        "http_404": "HTTP 404: wrong URL or unknown model",
    }[cause]
    return f"LLM endpoint {base_url}: {why}; the remaining reports were not sent"
