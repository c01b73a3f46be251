"""Fuzz every reader and the manifest loader with mutated valid files and random bytes.

Claim: each input is read, or refused with one line naming it (``BadInputError``),
within a per-input time limit and a memory cap; nothing else escapes, hangs or
kills the interpreter.

    .venv/bin/python benchmarks/fuzz_readers.py [--seconds 8 --timeout 10 --memory-mb 1024 --readers png,dicom]

One worker process (one core) reads the inputs under an address-space cap
(``RLIMIT_AS``: what it had after importing, plus ``--memory-mb``); a worker that
dies is a crash, one that does not answer within ``--timeout`` a hang (it is
killed and replaced). Inputs that escape are saved under
``benchmarks/results/fuzz_findings/`` to reproduce. Prints a table and writes
``benchmarks/results/fuzz_readers.json``. The seed files and the checks are those of
``tests/data/fuzz_seeds.py``, which the fast property tests also use.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import platform
import random
import resource
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "data"))
from fuzz_seeds import READERS, SUFFIX, exercise, mutate, place, seeds  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
_INTERESTING = [b"\x00", b"\xff", b"\x7f", b"\x80", b"\xff\xff\xff\x7f", b"\x00\x00\x00\x00", b"\xff\xff\xff\xff",
                b"\x00\x00\x01\x00", b"\n\n", b"-1", b"nan", b"99999999"]  # fmt: skip


def random_input(rng: random.Random, seed: bytes) -> bytes:
    """Random bytes one time in ten, else the seed with 1-4 edits, mostly in its first 512 bytes (headers)."""
    if rng.random() < 0.1:
        return rng.randbytes(rng.randint(0, 1024))
    edits = []
    for _ in range(rng.randint(1, 4)):
        position = rng.randrange(512) if rng.random() < 0.7 else rng.randrange(len(seed) + 1)
        payload = rng.choice(_INTERESTING) if rng.random() < 0.5 else rng.randbytes(rng.randint(1, 8))
        edits.append((rng.choice(["flip", "set", "set", "insert", "cut"]), position, payload))
    return mutate(seed, edits)


def worker(conn, memory_mb: int, folder: str, dicom_seed: bytes) -> None:
    """Read inputs sent over ``conn`` until told to stop; answer with the outcome."""
    os.environ.pop("GREENFM_MAX_DECODE_BYTES", None)  # the default budgets, as users get them
    logging.disable(logging.CRITICAL)  # libraries log and warn about every odd header: keep the table readable
    warnings.simplefilter("ignore")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    with open("/proc/self/status") as f:
        size_kb = next(int(line.split()[1]) for line in f if line.startswith("VmSize:"))
    cap = size_kb * 1024 + memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    work = Path(folder)
    while True:
        message = conn.recv()
        if message is None:
            return
        reader, data = message
        try:
            outcome = exercise(reader, place(reader, data, work / reader, dicom_seed))
        except MemoryError:
            outcome = "memory: MemoryError"
        except AssertionError as err:
            outcome = f"finding: {err}"
        except Exception as err:  # a finding: an exception that is not a one-line BadInputError
            frame = traceback.extract_tb(err.__traceback__)[-1]
            outcome = f"finding: {type(err).__name__}: {str(err)[:200]} at {Path(frame.filename).name}:{frame.lineno}"
        conn.send(outcome)


class Worker:
    def __init__(self, memory_mb: int, folder: Path, dicom_seed: bytes):
        self.args = (memory_mb, str(folder), dicom_seed)
        self.start()

    def start(self) -> None:
        self.conn, child = mp.Pipe()
        self.process = mp.get_context("fork").Process(target=worker, args=(child, *self.args), daemon=True)
        self.process.start()

    def run(self, reader: str, data: bytes, timeout: float) -> str:
        self.conn.send((reader, data))
        if not self.conn.poll(timeout):
            self.restart()
            return "hang"
        try:
            return self.conn.recv()
        except EOFError:
            code = self.process.exitcode
            self.restart()
            return f"crash: exit code {code}"

    def restart(self) -> None:
        self.process.kill()
        self.process.join()
        self.start()

    def close(self) -> None:
        self.conn.send(None)
        self.process.join(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="time budget per reader")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds one input may take")
    parser.add_argument("--memory-mb", type=int, default=1536, help="memory one input may add (RLIMIT_AS)")
    parser.add_argument("--readers", default=",".join(READERS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    findings_dir = RESULTS / "fuzz_findings"
    rows, started = [], time.time()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = seeds(Path(tmp) / "seeds")
        pool = Worker(args.memory_mb, Path(tmp) / "work", corpus["dicom"])
        for reader in args.readers.split(","):
            counts: Counter[str] = Counter()
            examples: dict[str, str] = {}
            t0 = time.time()
            while time.time() - t0 < args.seconds:
                data = random_input(rng, corpus[reader])
                outcome = pool.run(reader, data, args.timeout)
                kind = outcome.split(":")[0]
                counts[kind] += 1
                if kind not in ("ok", "refused"):
                    if outcome not in examples.values() and len(examples) < 5:
                        findings_dir.mkdir(parents=True, exist_ok=True)
                        saved = findings_dir / f"{reader}-{len(examples)}{SUFFIX[reader]}"
                        saved.write_bytes(data)
                        examples[str(saved)] = outcome
            elapsed = time.time() - t0
            rows.append({"reader": reader, "inputs": sum(counts.values()), "seconds": round(elapsed, 1),
                         **{k: counts.get(k, 0) for k in ("ok", "refused", "finding", "hang", "crash", "memory")},
                         "examples": examples})
            row = rows[-1]
            print(f"{reader:13s} {row['inputs']:6d} inputs {row['seconds']:6.1f} s  ok {row['ok']:5d}  refused "
                  f"{row['refused']:5d}  finding {row['finding']}  hang {row['hang']}  crash {row['crash']}  "
                  f"memory {row['memory']}", flush=True)
            for path, outcome in examples.items():
                print(f"    {outcome}  [{path}]")
        pool.close()
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {"machine": platform.platform(), "python": sys.version.split()[0], "cpu_count": os.cpu_count(),
              "seconds_per_reader": args.seconds, "timeout_s": args.timeout, "memory_mb": args.memory_mb,
              "seed": args.seed, "total_seconds": round(time.time() - started, 1), "readers": rows}
    (RESULTS / "fuzz_readers.json").write_text(json.dumps(record, indent=2))
    total = sum(r["inputs"] for r in rows)
    bad = sum(r[k] for r in rows for k in ("finding", "hang", "crash", "memory"))
    print(f"{total} inputs in {record['total_seconds']} s; {bad} escaped (findings, hangs, crashes, memory)")
    if not bad:
        shutil.rmtree(findings_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
