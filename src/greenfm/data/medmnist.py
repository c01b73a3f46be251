"""MedMNIST-style ``.npz`` files -> PNG images + a greenfm manifest table.

The layout: ``{train,val,test}_images`` (N, H, W) or (N, H, W, 3) uint8 and
``{split}_labels`` (N, 1) class indices, or (N, K) 0/1 for multi-label sets.
Labels become finding columns the probe and fine-tune code read directly:

- binary (two classes): one column, named by the positive class;
- multi-class: one-hot columns ``class_0 .. class_{k-1}`` (or the given names),
  plus ``meta_label`` with the integer class;
- multi-label: one 0/1 column per label.

MedMNIST has no patient identifiers: each image is its own patient
(``patient_id`` = image id) and ``meta_patient_note`` says so.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from greenfm.data.manifest import META_PREFIX, OPTIONAL_COLUMNS, REQUIRED_COLUMNS
from greenfm.errors import BadInputError
from greenfm.io_safety import atomic_output

SPLITS = ("train", "val", "test")
PATIENT_NOTE = "MedMNIST has no patient ids; each image is treated as its own patient"
# Class names of the MedMNIST sets in ../shared/data (MedMNIST v2 documentation).
KNOWN_LABELS: dict[str, list[str]] = {
    "pneumoniamnist": ["normal", "pneumonia"],
    "breastmnist": ["malignant", "normal_or_benign"],
    "retinamnist": [f"grade_{i}" for i in range(5)],
}

# The imaging modality of each MedMNIST v2 set (its documentation), recorded as ``meta_modality``
# so that the default preprocessing contract follows the data.
KNOWN_MODALITIES: dict[str, str] = {
    "chestmnist": "xray", "pneumoniamnist": "xray", "breastmnist": "us", "retinamnist": "fundus",
    "dermamnist": "photo", "octmnist": "other", "pathmnist": "photo", "bloodmnist": "photo",
    "tissuemnist": "photo", "organamnist": "ct", "organcmnist": "ct", "organsmnist": "ct",
}  # fmt: skip


def known_modality(stem: str) -> str | None:
    """The modality of a MedMNIST file named like ``pneumoniamnist_28.npz``, else None."""
    name = stem.lower().split("_")[0]
    return KNOWN_MODALITIES.get(name)


def load_medmnist(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (images, labels (N, K))} for the splits present; BadInputError if not this layout."""
    try:
        with np.load(path, allow_pickle=False) as data:
            files = set(data.files)
            out = {}
            for split in SPLITS:
                if f"{split}_images" in files:
                    if f"{split}_labels" not in files:
                        raise BadInputError(f"has {split}_images but no {split}_labels", source=str(path))
                    out[split] = (np.asarray(data[f"{split}_images"]), np.asarray(data[f"{split}_labels"]))
    except BadInputError:
        raise
    except (OSError, ValueError, EOFError) as err:
        raise BadInputError(f"cannot be read as a NumPy .npz ({str(err).splitlines()[0]})", source=str(path)) from None
    if not out:
        raise BadInputError("is not a MedMNIST-style .npz (no train_images/val_images/test_images)", source=str(path))
    for split, (images, labels) in out.items():
        if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3)):
            raise BadInputError(f"{split}_images has shape {images.shape}; expected (N, H, W) or (N, H, W, 3)", source=str(path))
        labels = labels.reshape(len(labels), -1)
        if len(labels) != len(images):
            raise BadInputError(f"{split} has {len(images)} images but {len(labels)} labels", source=str(path))
        out[split] = (images, labels)
    return out


def label_columns(
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    label_names: Sequence[str] | None = None,
    dataset: str = "",
    source: str | None = None,
) -> tuple[dict[str, pd.DataFrame], str]:
    """Per split, the finding columns (and ``meta_label``); and the label kind."""
    all_labels = np.concatenate([labels for _, labels in splits.values()])
    names = list(label_names) if label_names else None
    if names is None:
        names = next((v for k, v in KNOWN_LABELS.items() if dataset.lower().startswith(k)), None)
    if all_labels.shape[1] > 1:
        kind = "multi-label"
        k = all_labels.shape[1]
        names = _names(names, k, "label", source)
        make = lambda y: pd.DataFrame(y.astype(np.int8), columns=names)  # noqa: E731
    else:
        n_classes = int(all_labels.max()) + 1
        if names and len(names) > n_classes:
            n_classes = len(names)
        if n_classes <= 2:
            kind = "binary"
            positive = names[-1] if names else "class_1"  # [positive] or [negative, positive]
            make = lambda y: pd.DataFrame({finding_column(positive): y[:, 0].astype(np.int8)})  # noqa: E731
        else:
            kind = "multi-class"
            names = _names(names, n_classes, "class", source)

            def make(y: np.ndarray) -> pd.DataFrame:
                onehot = np.eye(n_classes, dtype=np.int8)[y[:, 0].astype(int)]
                frame = pd.DataFrame(onehot, columns=names)
                frame["meta_label"] = y[:, 0].astype(int)
                return frame

    return {split: make(labels) for split, (_, labels) in splits.items()}, kind


def medmnist_rows(path: Path, image_dir: Path, *, label_names: Sequence[str] | None = None, overwrite: bool = False):
    """Write every image as PNG under ``image_dir/<split>/`` and return (table, label kind, counts)."""
    from PIL import Image

    splits = load_medmnist(path)
    columns, kind = label_columns(splits, label_names=label_names, dataset=path.stem, source=str(path))
    if image_dir.exists() and any(image_dir.iterdir()) and not overwrite:
        raise BadInputError("image folder already exists; pass overwrite=True (--overwrite) to replace it", source=str(image_dir))
    frames = []
    for split, (images, _) in splits.items():
        folder = image_dir / split
        folder.mkdir(parents=True, exist_ok=True)
        ids = [f"{split}_{i:05d}" for i in range(len(images))]
        paths = [folder / f"{i}.png" for i in ids]
        for image, out in zip(images, paths):
            with atomic_output(out) as tmp:  # a full disk: one line, no 0-byte PNG
                pixels = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
                Image.fromarray(pixels).save(tmp, format="PNG", compress_level=1)
        frame = pd.DataFrame({"path": [str(p) for p in paths], "patient_id": ids, "id": ids, "split": split})
        frames.append(pd.concat([frame, columns[split]], axis=1))
    table = pd.concat(frames, ignore_index=True)
    table["meta_patient_note"] = PATIENT_NOTE
    if known_modality(path.stem):
        table["meta_modality"] = known_modality(path.stem)
    counts = {split: len(images) for split, (images, _) in splits.items()}
    return table, kind, counts


def _names(names: Sequence[str] | None, k: int, stem: str, source: str | None) -> list[str]:
    if names is None:
        return [f"{stem}_{i}" for i in range(k)]
    if len(names) != k:
        raise BadInputError(f"{len(names)} label names given for {k} classes", source=source)
    return [finding_column(n) for n in names]


def finding_column(name: str) -> str:
    """A label name as a finding column: lower case, runs of other characters -> ``_``."""
    column = re.sub(r"[^0-9a-z]+", "_", str(name).strip().lower()).strip("_") or "label"
    reserved = column in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) or column.startswith(META_PREFIX)
    return f"label_{column}" if reserved else column
