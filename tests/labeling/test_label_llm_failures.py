"""``greenfm label --engine llm`` against dead or misbehaving endpoints: an error, never a blank manifest."""

from __future__ import annotations

import pandas as pd
import pytest
from fake_llm_server import FakeChatServer, chat, free_port

from greenfm.cli import main
from greenfm.errors import GreenfmError
from greenfm.labeling import label_manifest
from greenfm.labeling.label_verb import LabelingIncomplete, default_llm_cache

VOCAB = "phantom-cxr5"
FAST = {"retry_base_s": 0.001, "timeout_s": 2.0}
N = 12


@pytest.fixture()
def manifest(tmp_path):
    reports = [f"report {i}: the heart is enlarged." if i % 3 else f"report {i}: fail me please" for i in range(N)]
    table = pd.DataFrame({"path": [f"{i}.png" for i in range(N)], "patient_id": [f"p{i}" for i in range(N)],
                          "report": reports, "id": [f"r{i}" for i in range(N)]})
    table.loc[N - 1, "report"] = "ok"  # too short: never sent, blank in any run, not a failure
    path = tmp_path / "reports.csv"
    table.to_csv(path, index=False)
    return path


def _label(manifest, out, url, llm_options=FAST):
    return label_manifest(manifest, out, vocab=VOCAB, engine="llm", llm_base_url=url, llm_model="m",
                          concurrency=4, llm_options=llm_options)


def _good(report, n):
    return 200, chat("1,0,0,0,0"), 0.0


def test_refused_connections_raise_and_write_nothing(manifest, tmp_path):
    out = tmp_path / "labels.csv"
    with pytest.raises(LabelingIncomplete) as err:
        _label(manifest, out, f"http://127.0.0.1:{free_port()}/v1")
    message = str(err.value)
    assert "\n" not in message and isinstance(err.value, GreenfmError)
    assert message.startswith(f"LLM labelling failed for {N - 1} of {N} reports (")
    assert "connect" in message and "cannot connect" in message
    assert str(default_llm_cache(out)) in message and "rerun the same command to resume" in message
    assert err.value.labeled == 0 and err.value.partial is None
    assert not out.exists() and not list(tmp_path.glob("labels.partial*")), "no all-blank manifest, no partial file"


@pytest.mark.parametrize("answer", [(500, "internal error", 0.0), (200, "<html>not json</html>", 0.0),
                                    (200, chat("I am a teapot"), 0.0)], ids=["500", "not-json", "garbage-answer"])
def test_misbehaving_server_raises_and_stops_early(manifest, tmp_path, answer):
    out = tmp_path / "labels.csv"
    with FakeChatServer(lambda r, n: answer) as server, pytest.raises(LabelingIncomplete) as err:
        _label(manifest, out, server.base_url, llm_options={**FAST, "max_failing": 3})
    assert f"failed for {N - 1} of {N} reports" in str(err.value)
    assert "reports in a row failed" in str(err.value)
    assert len(server.requests) < 3 * (N - 1), "stops sending once every report fails"
    assert not out.exists()


def test_partial_failure_writes_labelled_rows_and_a_rerun_resumes_from_the_cache(manifest, tmp_path):
    out = tmp_path / "labels.csv"

    def flaky(report, n):
        return (500, "busy", 0.0) if "fail me" in report else _good(report, n)

    with FakeChatServer(flaky) as server, pytest.raises(LabelingIncomplete) as err:
        _label(manifest, out, server.base_url)
    n_fail = len(range(0, N - 1, 3))
    assert str(err.value).startswith(f"LLM labelling failed for {n_fail} of {N} reports (http_5xx {n_fail})")
    partial = tmp_path / "labels.partial.csv"
    assert err.value.partial == partial and not out.exists()
    rows = pd.read_csv(partial)
    assert len(rows) == N - n_fail and not rows["report"].str.contains("fail me").any()
    assert (rows.loc[rows["report"] != "ok", "cardiomegaly"] == 1).all()

    with FakeChatServer(_good) as server:
        summary = _label(manifest, out, server.base_url)
    assert len(server.requests) == n_fail, "a rerun sends only what the cache lacks"
    assert summary.ledger["cache_hits"] == N - 1 - n_fail
    assert out.exists() and not partial.exists()
    assert summary.to_text().startswith(f"labeled {N - 1} of {N} reports")


def test_cli_exits_2_with_one_line(manifest, tmp_path, capsys):
    out = tmp_path / "labels.csv"
    with FakeChatServer(lambda r, n: (401, {"error": "bad key"}, 0.0)) as server:  # not retried: a fast CLI test
        args = ["label", "--data", str(manifest), "--out", str(out), "--vocab", VOCAB, "--engine", "llm",
                "--llm-base-url", server.base_url, "--llm-model", "m"]
        with pytest.raises(SystemExit) as exit_:
            main(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: LLM labelling failed for {N - 1} of {N} reports") and "\n" not in err
    assert "HTTP 401" in err
    assert not out.exists()
