"""Workflow tests: one small phantom chest X-ray set, split by patient, shared by the session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def phantom_split(tmp_path_factory) -> Path:
    """48 phantom patients (32 px radiographs, 5 findings), split train / val / test by patient."""
    from greenfm.data.phantoms import generate_phantoms
    from greenfm.data.splits import split_manifest

    root = tmp_path_factory.mktemp("workflow_phantoms")
    source = generate_phantoms(root / "phantoms", n_patients=48, size=32, seed=3, workers=1)
    split_manifest(source, root / "split.csv", val=0.25, test=0.3, seed=0)
    return root / "split.csv"


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory) -> Path:
    """One decode-once cache for every test (keyed by manifest and contract)."""
    return tmp_path_factory.mktemp("workflow_cache")
