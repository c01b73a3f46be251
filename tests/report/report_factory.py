"""Artefacts for report tests: a manifest, label-efficiency results, a tiny data set (imported by conftest)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

FINDINGS = ("effusion", "nodule", "rare")


class Noise(Dataset):
    """Eight seeded 32 x 32 images: enough for a two-epoch token-reconstruction run."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> dict:
        return {"image": torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(i))}


def write_manifest(folder: Path, n_patients: int = 60, seed: int = 0) -> tuple[Path, pd.DataFrame]:
    """A manifest (two images per patient, patient-level splits) whose 'rare' finding is never present."""
    rng = np.random.default_rng(seed)
    patients = np.repeat(np.arange(n_patients), 2)
    split = np.array(["train", "train", "train", "val", "test"])[patients % 5]
    labels = rng.integers(0, 2, size=(len(patients), 2)).astype(float)
    labels[::9, 1] = -1.0  # some uncertain
    table = pd.DataFrame(
        {
            "path": [f"img/{i}.png" for i in range(len(patients))],
            "id": [f"img{i}" for i in range(len(patients))],
            "patient_id": [f"p{p}" for p in patients],
            "split": split,
            "effusion": labels[:, 0],
            "nodule": labels[:, 1],
            "rare": 0.0,
        }
    )
    path = folder / "manifest.csv"
    table.to_csv(path, index=False)
    return path, table


def write_label_efficiency(path: Path, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for mode, base in (("linear-probe", 0.62), ("lora", 0.68)):
        for fraction in (0.01, 0.1, 1.0):
            for s in range(3):
                auroc = base + 0.05 * np.log10(fraction * 100) + rng.normal(0, 0.01)
                rows.append(
                    {
                        "mode": mode,
                        "fraction": fraction,
                        "seed": s,
                        "finding": "macro",
                        "auroc": auroc,
                        "ci_low": auroc - 0.05,
                        "ci_high": auroc + 0.04,
                        "n_train_images": int(2000 * fraction),
                    }
                )
                rows.append(
                    {
                        "mode": mode,
                        "fraction": fraction,
                        "seed": s,
                        "finding": "rare",
                        "auroc": None,
                        "ci_low": None,
                        "ci_high": None,
                        "skipped": "only one class present",
                    }
                )
    table = pd.DataFrame(rows)
    table.to_csv(path, index=False)
    return table
