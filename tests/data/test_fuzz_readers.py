"""Property tests: every reader and the manifest loader, fed random bytes and mutated valid files,
either read the file or refuse it with one line naming it (``BadInputError``), within bounded
time and memory. The longer campaign is ``benchmarks/fuzz_readers.py``; see docs/reliability.md.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from fuzz_seeds import READERS, exercise, mutate, place, seeds
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

BUDGET = 64 * 2**20  # every decode stays under this: a header cannot make a test allocate gigabytes
SETTINGS = settings(max_examples=40, deadline=2000, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

_INTERESTING = [b"\x00", b"\xff", b"\x7f", b"\x80", b"\xff\xff\xff\x7f", b"\x00\x00\x00\x00", b"\xff\xff\xff\xff",
                b"\x00\x00\x01\x00", b"\n\n", b"-1", b"nan"]  # fmt: skip
EDIT = st.tuples(
    st.sampled_from(["flip", "set", "insert", "cut"]),
    st.integers(min_value=0, max_value=4096),
    st.one_of(st.sampled_from(_INTERESTING), st.binary(min_size=1, max_size=8)),
)


@pytest.fixture(scope="module")
def seed_bytes():
    with tempfile.TemporaryDirectory() as folder:
        yield seeds(Path(folder))


@pytest.fixture(autouse=True)
def _small_budget(monkeypatch):
    monkeypatch.setenv("GREENFM_MAX_DECODE_BYTES", str(BUDGET))


@pytest.mark.parametrize("reader", READERS)
def test_seed_files_are_read(reader, seed_bytes, tmp_path):
    assert exercise(reader, place(reader, seed_bytes[reader], tmp_path, seed_bytes["dicom"])) == "ok"


@pytest.mark.parametrize("reader", READERS)
def test_mutated_files_are_read_or_refused_in_one_line(reader, seed_bytes, tmp_path):
    @SETTINGS
    @given(edits=st.lists(EDIT, min_size=1, max_size=4))
    def check(edits):
        data = mutate(seed_bytes[reader], edits)
        exercise(reader, place(reader, data, tmp_path, seed_bytes["dicom"]))

    check()


@pytest.mark.parametrize("reader", READERS)
def test_random_bytes_are_refused_in_one_line(reader, seed_bytes, tmp_path):
    @settings(SETTINGS, max_examples=15)
    @given(data=st.binary(min_size=0, max_size=600))
    def check(data):
        exercise(reader, place(reader, data, tmp_path, seed_bytes["dicom"]))

    check()
