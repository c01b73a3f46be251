"""What the readers return: ``ImageData`` (one 2-D image) and ``Volume`` (a 3-D volume with its geometry).

Kept apart from ``greenfm.data.readers`` so that the format modules it dispatches to
(``dicom``, ``dicom_series``, ``volume_files``) can build them without importing it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class ImageData:
    """One 2-D image: ``array`` (H, W) or (H, W, C) and its ``metadata``.

    ``metadata`` always holds ``format``, ``source``, ``bits_stored`` (significant
    bits of integer pixels), ``photometric`` (``MONOCHROME2``, high = bright, or
    ``RGB``) and ``spacing`` ((row, column) mm or None), plus format-specific
    keys (DICOM: ``modality``, ``rescaled``, ``window``, ``frames``...).
    """

    array: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def format(self) -> str:
        return self.metadata["format"]

    @property
    def bits_stored(self) -> int | None:
        return self.metadata.get("bits_stored")

    @property
    def photometric(self) -> str:
        return self.metadata["photometric"]

    @property
    def spacing(self) -> tuple[float, float] | None:
        return self.metadata.get("spacing")


@dataclass
class Volume:
    """A 3-D volume: ``array`` (D, H, W), int16 or float32 (or uint8/uint16 for masks).

    ``spacing`` is (z, y, x) in mm, i.e. along (D, H, W). ``affine`` maps a voxel
    index (d, h, w, 1) to RAS+ world coordinates in mm (the NIfTI convention, with
    the index axes in array order). ``orientation`` names, for each array axis,
    the world direction it increases towards, e.g. ``"SPL"`` or ``"IPR"``.
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)  # type: ignore[return-value]

    @property
    def orientation(self) -> str:
        from nibabel.orientations import aff2axcodes

        return "".join(aff2axcodes(self.affine))
