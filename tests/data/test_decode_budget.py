"""The decode budget: sizes read from headers, refused in one line before any pixel is allocated."""

from __future__ import annotations

import gzip
import resource
import struct
import zlib
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from greenfm.data.contract import Contract
from greenfm.data.dataset import decode_to_contract
from greenfm.data.decode_budget import ENV_MAX_DECODE_BYTES, decode_budget, parse_bytes
from greenfm.data.readers import probe, read_image, read_volume
from greenfm.errors import BadInputError, ConfigError


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_flat_png16(path: Path, side: int) -> Path:
    """A valid, tiny 16-bit grey PNG of side x side black pixels (compressed row by row)."""
    compressor, idat = zlib.compressobj(9), []
    row = bytes(1 + 2 * side)  # filter byte + pixels
    for _ in range(side):
        idat.append(compressor.compress(row))
    idat.append(compressor.flush())
    header = struct.pack(">IIBBBBB", side, side, 16, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", b"".join(idat))
                     + _png_chunk(b"IEND", b""))
    return path


@pytest.fixture(autouse=True)
def _no_budget_in_env(monkeypatch):
    monkeypatch.delenv(ENV_MAX_DECODE_BYTES, raising=False)


def _one_line(err, path) -> str:
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    return message


def test_a_13000_pixel_16_bit_png_is_refused_before_decoding(tmp_path):
    path = write_flat_png16(tmp_path / "bomb.png", 13_000)
    assert path.stat().st_size < 1_000_000, "a small file declaring 338 MB of pixels"
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for read in (read_image, probe, lambda p: decode_to_contract(p, Contract(size=32))):
        with pytest.raises(BadInputError) as err:
            read(path)
        message = _one_line(err, path)
        assert "13000 x 13000 x 2 bytes" in message and "322.3 MiB" in message and "256.0 MiB" in message
        assert ENV_MAX_DECODE_BYTES in message
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 100, f"the refusal itself allocated {grown_mb:.0f} MB"


def test_the_budget_is_configurable_by_environment_and_argument(tmp_path, monkeypatch):
    path = tmp_path / "small.png"
    Image.fromarray(np.zeros((100, 100), np.uint16)).save(path)  # 20,000 bytes decoded
    assert read_image(path).array.shape == (100, 100)
    with pytest.raises(BadInputError, match="over the decode budget of 19.5 KiB"):
        read_image(path, max_decode_bytes=20_000 - 1)
    monkeypatch.setenv(ENV_MAX_DECODE_BYTES, "10K")
    with pytest.raises(BadInputError, match="over the decode budget of 10.0 KiB"):
        probe(path)
    assert read_image(path, max_decode_bytes=20_000).array.shape == (100, 100), "the argument beats the environment"


def test_budget_sizes_parse():
    assert parse_bytes("1073741824") == parse_bytes("1G") == parse_bytes("1GiB") == 2**30
    assert parse_bytes("512m") == 512 * 2**20 and parse_bytes("1.5K") == 1536
    for bad in ("lots", "-1G", "0", "nan"):
        with pytest.raises(ConfigError):
            parse_bytes(bad)
    assert decode_budget(volume=False) == 256 * 2**20 and decode_budget(volume=True) == 2**30


def test_dicom_rows_columns_frames_are_checked_from_the_header(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))  # 128 x 128, 16 bits
    path = tmp_path / "ct.dcm"
    ds.save_as(path)
    with pytest.raises(BadInputError) as err:
        read_image(path, max_decode_bytes=128 * 128 * 2 - 1)
    assert "128 x 128 x 1 x 2 bytes" in _one_line(err, path)
    ds.Rows, ds.Columns, ds.NumberOfFrames = 60_000, 60_000, 500  # a header claiming 3.6 TB
    ds.save_as(path)
    for read in (probe, read_volume):
        with pytest.raises(BadInputError) as err:
            read(path)
        assert "500 x 60000 x 60000 x 1 x 2 bytes" in _one_line(err, path)


def test_dicom_series_total_is_checked_before_decoding(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    folder = tmp_path / "series"
    folder.mkdir()
    for i in range(4):
        ds.ImagePositionPatient = [0.0, 0.0, float(i)]
        ds.save_as(folder / f"{i}.dcm")
    assert read_volume(folder).shape == (4, 128, 128)
    with pytest.raises(BadInputError) as err:
        read_volume(folder, max_decode_bytes=4 * 128 * 128 * 2 - 1)
    assert "4 x 128 x 128 x 2 bytes" in _one_line(err, folder)


def test_nifti_nrrd_and_numpy_headers_are_checked(tmp_path):
    volume = np.zeros((8, 9, 10), np.int16)
    nifti = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(nifti))
    nrrd_path = tmp_path / "v.nrrd"
    nrrd.write(str(nrrd_path), volume)
    npy = tmp_path / "v.npy"
    np.save(npy, volume)
    npz = tmp_path / "v.npz"
    np.savez_compressed(npz, volume=volume)
    for path in (nifti, nrrd_path, npy, npz):
        assert read_volume(path).shape[0] > 0
        for read in (probe, lambda p: read_volume(p, max_decode_bytes=100)):
            with pytest.raises(BadInputError) as err:
                read(path, max_decode_bytes=100) if read is probe else read(path)
            assert "over the decode budget of 100 bytes" in _one_line(err, path)


def test_a_nifti_header_declaring_a_huge_volume_is_refused_by_default(tmp_path):
    path = tmp_path / "huge.nii"
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4)), str(path))
    raw = bytearray(path.read_bytes())
    raw[40:56] = struct.pack("<8h", 3, 30000, 30000, 30000, 1, 1, 1, 1)  # dim: 27e12 voxels in a 360-byte file
    path.write_bytes(bytes(raw))
    for read in (probe, read_volume):
        with pytest.raises(BadInputError) as err:
            read(path)
        assert "30000 x 30000 x 30000 x 4 bytes" in _one_line(err, path)


@pytest.mark.parametrize("encoding", ["gzip", "bzip2"])
def test_a_compressed_nrrd_inflating_past_its_header_is_refused(tmp_path, encoding):
    import bz2

    path = tmp_path / "bomb.nrrd"
    header = f"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 2 2 2\nencoding: {encoding}\n\n".encode()
    payload = bytes(8 * 2**20)  # 8 MiB of zeros for a volume of 8 voxels
    path.write_bytes(header + (gzip.compress(payload) if encoding == "gzip" else bz2.compress(payload)))
    assert path.stat().st_size < 1_000_000
    with pytest.raises(BadInputError) as err:
        read_volume(path)
    assert "NRRD data inflates past the 8 bytes its header declares" in _one_line(err, path)
    good = tmp_path / "good.nrrd"
    nrrd.write(str(good), np.arange(8, dtype=np.uint8).reshape(2, 2, 2), {"encoding": encoding})
    assert read_volume(good).shape == (2, 2, 2)
