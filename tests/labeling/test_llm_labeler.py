"""LLM labeler against a real local HTTP server imitating /v1/chat/completions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fake_llm_server import FakeChatServer, chat, free_port

from greenfm.errors import ConfigError
from greenfm.labeling import LLMLabeler, load_vocabulary, resolve_llm_config
from greenfm.labeling.prompt import (
    PROMPT_VERSION,
    ParseError,
    parse_codes,
    prompt_hash,
    system_prompt,
)

VOCAB = "phantom-cxr5"  # cardiomegaly, pleural_effusion, pneumothorax, consolidation, lung_nodule
FAST = {"retry_base_s": 0.001, "timeout_s": 2.0}


def labeler(server_url: str, **options) -> LLMLabeler:
    return LLMLabeler(VOCAB, base_url=server_url, model="fake-model", **{**FAST, **options})


def good(report: str, n: int):
    return 200, chat("1,0,-1,0,1" if "heart" in report else "0,1,0,0,0"), 0.0


def test_prompt_follows_the_greenrfm_protocol():
    vocab = load_vocabulary(VOCAB)
    prompt = system_prompt(vocab)
    assert "radiologist" in prompt
    assert "1. cardiomegaly\n2. pleural effusion\n3. pneumothorax\n4. consolidation\n5. lung nodule" in prompt
    assert "Return only 5 comma-separated numbers" in prompt
    example = prompt.strip().splitlines()[-1]
    assert len(parse_codes(example, 5)) == 5
    assert prompt_hash(vocab) == prompt_hash(load_vocabulary(VOCAB)) != prompt_hash(load_vocabulary("chexpert14"))


@pytest.mark.parametrize(
    ("answer", "expected"),
    [("1,0,-1,0,1", [1, 0, -1, 0, 1]), (" 1, 0 ,-1,0 ,1\n", [1, 0, -1, 0, 1]), ("1,0,-1,0,1,1,1", [1, 0, -1, 0, 1])],
)
def test_parse_keeps_the_first_k_codes(answer, expected):
    assert parse_codes(answer, 5) == expected


@pytest.mark.parametrize("answer", ["1,0,-1,0", "1,0,2,0,1", "yes", "", "1;0;-1;0;1", "1,0,-1,0,1."])
def test_parse_rejects_short_or_invalid_answers(answer):
    with pytest.raises(ParseError):
        parse_codes(answer, 5)


def test_labels_reports_and_keeps_a_ledger():
    reports = ["The heart is enlarged.", "Small left effusion.", "hi"]
    with FakeChatServer(good) as server:
        lab = labeler(server.base_url, api_key="secret")
        table = lab.label_many(reports)
    np.testing.assert_array_equal(table.codes[0], [1, 0, -1, 0, 1])
    np.testing.assert_array_equal(table.codes[1], [0, 1, 0, 0, 0])
    assert np.isnan(table.codes[2]).all() and table.failed.tolist() == [False, False, True]
    body = server.requests[0]
    assert body["model"] == "fake-model" and body["temperature"] == 0
    assert body["messages"][0]["role"] == "system" and body["messages"][0]["content"] == lab.system_prompt
    assert body["messages"][1]["content"] in reports
    assert server.headers[0]["Authorization"] == "Bearer secret"
    ledger = lab.ledger
    assert (ledger.reports, ledger.calls, ledger.labeled, ledger.cache_hits) == (3, 2, 2, 0)
    assert (ledger.prompt_tokens, ledger.completion_tokens) == (200, 20)
    assert ledger.failures == {"too_short": 1}, "a report under 5 characters is never sent"
    assert table.source["model"] == "fake-model" and table.source["prompt_hash"] == lab.prompt_hash
    assert table.source["prompt_version"] == PROMPT_VERSION and "secret" not in str(table.source)


def test_malformed_answer_is_retried_then_counted():
    def answer(report, n):
        if "flaky" in report:
            return 200, chat("yes, cardiomegaly" if n == 1 else "0,0,1,0,0"), 0.0
        return 200, chat("I cannot tell."), 0.0

    with FakeChatServer(answer) as server:
        lab = labeler(server.base_url)
        table = lab.label_many(["flaky report text", "hopeless report text"])
    np.testing.assert_array_equal(table.codes[0], [0, 0, 1, 0, 0])
    assert np.isnan(table.codes[1]).all()
    assert server.seen["flaky report text"] == 2 and server.seen["hopeless report text"] == 3
    assert lab.ledger.failures == {"parse": 1} and lab.ledger.attempt_errors["parse"] == 4


@pytest.mark.parametrize("status", [429, 500, 503])
def test_rate_limits_and_server_errors_are_retried(status):
    def answer(report, n):
        return (status, {"error": "busy"}, 0.0) if n < 3 else good(report, n)

    with FakeChatServer(answer) as server:
        lab = labeler(server.base_url)
        table = lab.label_many(["The heart is enlarged."])
    np.testing.assert_array_equal(table.codes[0], [1, 0, -1, 0, 1])
    cause = "http_429" if status == 429 else "http_5xx"
    assert lab.ledger.attempt_errors == {cause: 2} and lab.ledger.failed == 0 and lab.ledger.calls == 3


def test_persistent_errors_give_nan_after_three_attempts():
    with FakeChatServer(lambda r, n: (500, "oops", 0.0)) as server:
        lab = labeler(server.base_url)
        table = lab.label_many(["report one is here", "report two is here"])
    assert np.isnan(table.codes).all()
    assert server.seen == {"report one is here": 3, "report two is here": 3}
    assert lab.ledger.failures == {"http_5xx": 2}
    assert all("llm_http_5xx" in issues for issues in table.issues)


def test_timeouts_are_retried():
    def answer(report, n):
        return (200, chat("0,0,0,0,1"), 1.0) if n == 1 else (200, chat("0,0,0,1,0"), 0.0)

    with FakeChatServer(answer) as server:
        lab = labeler(server.base_url, timeout_s=0.25)
        table = lab.label_many(["a slow first answer"])
    np.testing.assert_array_equal(table.codes[0], [0, 0, 0, 1, 0])
    assert lab.ledger.attempt_errors == {"timeout": 1}


def test_endpoint_that_is_down_fails_cleanly():
    url = f"http://127.0.0.1:{free_port()}/v1"
    reports = [f"report number {i} with text" for i in range(30)]
    lab = labeler(url, concurrency=2, max_unreachable=2)
    table = lab.label_many(reports)
    assert np.isnan(table.codes).all() and table.failed.all()
    assert lab.ledger.calls == 0 and lab.ledger.labeled == 0
    assert lab.ledger.failed == 30
    assert lab.ledger.failures["connect"] >= 2 and lab.ledger.failures["endpoint_down"] > 0
    assert sum(lab.ledger.attempt_errors.values()) < 3 * 30, "stops trying once the endpoint is known to be down"
    assert any("cannot connect" in m for m in lab.ledger.messages)


def test_wrong_model_404_is_not_retried():
    with FakeChatServer(lambda r, n: (404, {"error": "model not found"}, 0.0)) as server:
        lab = labeler(server.base_url, concurrency=1, max_unreachable=2)
        lab.label_many([f"report {i} text" for i in range(5)])
    assert len(server.requests) == 2, "one request each for two reports, then the rest are not sent"
    assert lab.ledger.failures == {"http_404": 2, "endpoint_down": 3}
    assert any("HTTP 404" in m for m in lab.ledger.messages)


def test_concurrency_is_bounded():
    with FakeChatServer(lambda r, n: (200, chat("0,0,0,0,0"), 0.05)) as server:
        lab = labeler(server.base_url, concurrency=3)
        table = lab.label_many([f"report {i} text" for i in range(12)])
    assert not np.isnan(table.codes).any()
    assert 1 < server.max_in_flight <= 3


def test_cache_makes_a_rerun_free(tmp_path):
    cache = tmp_path / "llm-cache.sqlite"
    reports = ["The heart is enlarged.", "Small left effusion."]
    with FakeChatServer(good) as server:
        first = LLMLabeler(VOCAB, base_url=server.base_url, model="m1", cache=cache, **FAST)
        a = first.label_many(reports)
        second = LLMLabeler(VOCAB, base_url=server.base_url, model="m1", cache=cache, **FAST)
        b = second.label_many(reports)
        other_model = LLMLabeler(VOCAB, base_url=server.base_url, model="m2", cache=cache, **FAST)
        other_model.label_many(reports)
    np.testing.assert_array_equal(a.codes, b.codes)
    assert first.ledger.calls == 2 and second.ledger.calls == 0 and second.ledger.cache_hits == 2
    assert other_model.ledger.calls == 2, "the model is part of the cache key"
    assert len(server.requests) == 4


def test_failures_are_not_cached(tmp_path):
    cache = tmp_path / "cache.sqlite"
    with FakeChatServer(lambda r, n: (500, "down", 0.0)) as server:
        LLMLabeler(VOCAB, base_url=server.base_url, model="m", cache=cache, **FAST).label_many(["report text here"])
    with FakeChatServer(good) as server:
        lab = LLMLabeler(VOCAB, base_url=server.base_url, model="m", cache=cache, **FAST)
        table = lab.label_many(["report text here"])
    assert lab.ledger.calls == 1 and not math.isnan(table.codes[0, 0])


def test_no_endpoint_no_labelling(monkeypatch):
    for var in ("GREENFM_LLM_BASE_URL", "GREENFM_LLM_MODEL", "GREENFM_LLM_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match="GREENFM_LLM_BASE_URL"):
        resolve_llm_config(model="m")
    with pytest.raises(ConfigError, match="model"):
        resolve_llm_config(base_url="http://localhost:8000/v1")
    with pytest.raises(ConfigError, match="http://host:port/v1"):
        resolve_llm_config(base_url="localhost:8000", model="m")


def test_environment_variables_name_the_endpoint(monkeypatch):
    monkeypatch.setenv("GREENFM_LLM_BASE_URL", "http://localhost:11434/v1")
    monkeypatch.setenv("GREENFM_LLM_MODEL", "qwen2.5:7b")
    monkeypatch.setenv("GREENFM_LLM_API_KEY", "k3y")
    config = resolve_llm_config(concurrency=4)
    assert (config.base_url, config.model, config.api_key, config.concurrency) == (
        "http://localhost:11434/v1", "qwen2.5:7b", "k3y", 4)
    assert "api_key" not in config.to_dict() and "k3y" not in repr(config)
    assert resolve_llm_config(model="other").model == "other", "options beat the environment"
