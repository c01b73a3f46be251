"""One image file -> its stored pixels under a contract: the single decoding path.

``decode_to_contract`` builds the decode-once cache (``greenfm.data.cache``) and serves
the uncached ``ImageDataset`` (``greenfm.data.dataset``), so the two give identical
images. Under a volume contract (a 3-entry size) it reads a 3-D volume instead
(NIfTI, NRRD, a DICOM series folder, ``.npz`` / ``.npy``) and stores (C, D, H, W)
(``greenfm.data.volumes.volume_to_stored``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from greenfm.data.contract import Contract, to_contract
from greenfm.errors import BadInputError, GreenfmError


def decode_to_contract(path: str | Path, contract: Contract) -> np.ndarray:
    """Read one image file and bring it to the contract: stored pixels (C, H, W).

    Without contract windows, a grey DICOM is shown through its own VOI LUT or
    window when it has one (how it is meant to be displayed); with windows it
    is read in modality units (HU for CT) and windowed by ``to_contract``.
    Raises ``BadInputError`` naming the file when it cannot be decoded.
    """
    from greenfm.data.readers import read_image, sniff_format  # local: readers pull in optional codecs

    if contract.is_volume:
        return decode_volume_to_contract(path, contract)
    try:
        window = "dicom" if contract.windows is None and sniff_format(path) == "dicom" and _has_voi(path) else None
        image = read_image(path, window=window)
        array, bits = image.array, image.metadata.get("bits_stored")
        if image.metadata.get("rescaled") and contract.windows is None:
            # Modality values (after slope/intercept) have no fixed range: scale per image.
            array, bits = array.astype(np.float32), None
        return to_contract(array, contract, bits_stored=bits, source=str(path))
    except BadInputError as err:
        if "3-D volume" in str(err) or "DICOM series" in str(err):  # a volume given to a 2-D model
            raise BadInputError(
                f"is a 3-D volume, but this model takes 2-D images; use a 3-D encoder ({_3D_ENCODERS}) "
                f"with a volume contract ({_VOLUME_CONTRACTS})", source=str(path)) from None
        raise
    except GreenfmError:
        raise
    except (OSError, ValueError, TypeError, RuntimeError, MemoryError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise BadInputError(f"cannot decode image ({reason})", source=str(path)) from None


_2D_FORMATS = ("png", "jpeg", "tiff")
_3D_ENCODERS = "r3d_18, r3d_18_lite"
_VOLUME_CONTRACTS = "ct-chest, ct-abdomen, mri"


def decode_volume_to_contract(path: str | Path, contract: Contract) -> np.ndarray:
    """Read one volume (file or DICOM series folder) and bring it to a volume contract: (C, D, H, W).

    A 2-D image given to a volume contract, or an unreadable volume, raises one
    ``BadInputError`` naming the file.
    """
    from greenfm.data.readers import read_volume, sniff_format
    from greenfm.data.volumes import volume_to_stored

    try:
        fmt = sniff_format(path)
        if fmt in _2D_FORMATS:
            raise BadInputError(f"is a 2-D {fmt.upper()} image, but this model takes 3-D volumes "
                                f"(contract size {tuple(contract.size)})", source=str(path))  # fmt: skip
        volume = read_volume(path)
        return volume_to_stored(volume, contract, source=str(path))
    except GreenfmError:
        raise
    except (OSError, ValueError, TypeError, RuntimeError, MemoryError, IndexError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise BadInputError(f"cannot decode volume ({reason})", source=str(path)) from None


def _has_voi(path: str | Path) -> bool:
    """A grey DICOM carrying a VOI LUT or window (header only, pixels not read)."""
    from greenfm.data.dicom import GREY, read_header

    ds = read_header(Path(path))
    grey = str(ds.get("PhotometricInterpretation", "MONOCHROME2")) in GREY
    return grey and ("VOILUTSequence" in ds or "WindowCenter" in ds)
