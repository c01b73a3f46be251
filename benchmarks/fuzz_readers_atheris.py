"""Coverage-guided fuzzing of one reader with atheris (libFuzzer for Python; optional, not a
greenfm dependency: ``pip install atheris``). Complements ``fuzz_readers.py``'s random mutations.

    .venv/bin/python benchmarks/fuzz_readers_atheris.py dicom [--seconds 20]

Starts from the reader's seed file (``tests/data/fuzz_seeds.py``), instruments greenfm and
the decoding libraries, and stops at the first input that escapes as anything but a one-line
``BadInputError`` (libFuzzer saves it as ``crash-*``), at a timeout (10 s per input) or at
2 GiB of memory. Prints libFuzzer's statistics ("Done N runs in S second(s)").
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

try:
    import atheris
except ImportError:  # optional: pip install atheris
    raise SystemExit("fuzz_readers_atheris.py needs atheris (pip install atheris); fuzz_readers.py needs nothing extra") from None

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "data"))
with atheris.instrument_imports(include=["greenfm", "pydicom", "nibabel", "nrrd", "PIL", "fuzz_seeds"]):
    from fuzz_seeds import READERS, exercise, place, seeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reader", choices=READERS)
    parser.add_argument("--seconds", type=int, default=20)
    args, _ = parser.parse_known_args()
    tmp = Path(tempfile.mkdtemp(prefix="greenfm-atheris-"))
    corpus = tmp / "corpus"
    corpus.mkdir()
    seed = seeds(tmp / "seeds")
    (corpus / "seed").write_bytes(seed[args.reader])
    def one_input(data: bytes) -> None:
        exercise(args.reader, place(args.reader, data, tmp / "work", seed["dicom"]))

    import logging
    import warnings

    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    libfuzzer = [sys.argv[0], str(corpus), f"-max_total_time={args.seconds}", "-timeout=10", "-rss_limit_mb=2048",
                 "-print_final_stats=1"]
    atheris.Setup(libfuzzer, one_input)
    atheris.Fuzz()  # libFuzzer exits the process when done


if __name__ == "__main__":
    main()
