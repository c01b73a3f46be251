"""2-D readers and the cheap probe: PNG / JPEG / TIFF / NumPy, and every bad-input path."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from greenfm.data.arrays import checked_array
from greenfm.data.readers import probe, read_image, sniff_format
from greenfm.errors import BadInputError


def _one_line_naming(err: pytest.ExceptionInfo, path) -> str:
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message
    return message


@pytest.fixture
def grey16(tmp_path):
    array = (np.arange(48 * 40, dtype=np.uint32).reshape(48, 40) * 31 % 65536).astype(np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(array).save(path)
    return path, array


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_grey_keeps_every_value(tmp_path, suffix):
    array = np.array([[0, 1, 255], [256, 4095, 65535]], dtype=np.uint16)
    path = tmp_path / f"x{suffix}"
    Image.fromarray(array).save(path)
    image = read_image(path)
    assert image.array.dtype == np.uint16
    np.testing.assert_array_equal(image.array, array)
    assert image.bits_stored == 16 and image.photometric == "MONOCHROME2"
    assert image.format == ("png" if suffix == ".png" else "tiff")


def test_16_bit_png_via_pil_i16_mode(grey16):
    path, array = grey16
    assert Image.open(path).mode.startswith("I")  # PIL decodes 16-bit grey PNG as "I;16" (or "I")
    np.testing.assert_array_equal(read_image(path).array, array)


@pytest.mark.parametrize("suffix,fmt", [(".png", "png"), (".jpg", "jpeg"), (".tiff", "tiff")])
def test_8_bit_rgb_and_grey(tmp_path, suffix, fmt):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    grey = np.tile(np.arange(30, dtype=np.uint8) * 8, (20, 1))
    Image.fromarray(rgb).save(tmp_path / f"rgb{suffix}")
    Image.fromarray(grey).save(tmp_path / f"grey{suffix}")
    colour, mono = read_image(tmp_path / f"rgb{suffix}"), read_image(tmp_path / f"grey{suffix}")
    assert colour.array.shape == (20, 30, 3) and colour.array.dtype == np.uint8 and colour.photometric == "RGB"
    assert mono.array.shape == (20, 30) and mono.array.dtype == np.uint8 and mono.bits_stored == 8
    assert colour.format == fmt and colour.metadata["source"] == str(tmp_path / f"rgb{suffix}")
    if fmt != "jpeg":  # lossless formats round-trip exactly
        np.testing.assert_array_equal(colour.array, rgb)
        np.testing.assert_array_equal(mono.array, grey)


def test_float_tiff_and_palette_png(tmp_path):
    values = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    Image.fromarray(values).save(tmp_path / "f.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "f.tif").array, values)
    Image.fromarray(np.zeros((4, 4), np.uint8)).convert("P").save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").array.shape == (4, 4, 3)


def test_format_is_chosen_by_content_not_extension(tmp_path, grey16):
    path, array = grey16
    disguised = tmp_path / "really_a_png.jpg"
    disguised.write_bytes(path.read_bytes())
    assert sniff_format(disguised) == "png"
    np.testing.assert_array_equal(read_image(disguised).array, array)


def test_probe_accepts_good_files(tmp_path, grey16):
    probe(grey16[0])
    np.save(tmp_path / "a.npy", np.zeros((4, 4), np.float32))
    probe(tmp_path / "a.npy")


def test_corrupt_png_is_bad_input(tmp_path, grey16):
    path, _ = grey16
    data = bytearray(path.read_bytes())
    data[60] ^= 0xFF  # flip a byte inside the compressed data: the chunk CRC no longer matches
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(bytes(data))
    with pytest.raises(BadInputError) as err:
        probe(corrupt)
    _one_line_naming(err, corrupt)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(path.read_bytes()[:100])
    for check in (probe, read_image):
        with pytest.raises(BadInputError) as err:
            check(truncated)
        _one_line_naming(err, truncated)


@pytest.mark.parametrize(
    "name,content,reason",
    [
        ("notes.txt", b"hello", "unsupported"),
        ("fake.png", b"not a png at all", "wrong magic"),
        ("empty.png", b"", "empty"),
    ],
)
def test_unsupported_and_empty_files(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(BadInputError, match=reason) as err:
        probe(path)
    _one_line_naming(err, path)


def test_missing_file(tmp_path):
    with pytest.raises(BadInputError, match="not found"):
        probe(tmp_path / "absent.png")


@pytest.mark.parametrize(
    "array,reason",
    [
        (np.zeros((2, 3, 4, 5), np.uint8), "expected a 2-D image"),
        (np.zeros((4, 4), np.complex64), "unsupported pixel type complex64"),
        (np.zeros((0, 4), np.uint8), "empty"),
        (np.array([[1.0, np.inf]]), "infinite"),
    ],
)
def test_unexpected_dtype_or_shape(tmp_path, array, reason):
    path = tmp_path / "x.npy"
    np.save(path, array)
    with pytest.raises(BadInputError, match=reason) as err:
        probe(path) if array.dtype.kind == "c" or array.size == 0 else read_image(path)
    _one_line_naming(err, path)


def test_nan_is_an_error_unless_replaced(tmp_path):
    path = tmp_path / "nan.npy"
    np.save(path, np.array([[1.0, np.nan], [2.0, 3.0]], np.float32))
    with pytest.raises(BadInputError, match="1 NaN"):
        read_image(path)
    np.testing.assert_array_equal(read_image(path, nan_fill=0.0).array, [[1, 0], [2, 3]])


def test_dtype_policy_keeps_values_exactly():
    assert checked_array(np.array([[0, 70000]], np.int64), "x").dtype == np.float32
    assert checked_array(np.array([[0, 60000]], np.int32), "x").dtype == np.uint16
    assert checked_array(np.array([[-5, 300]], np.int32), "x").dtype == np.int16
    assert checked_array(np.array([[True, False]]), "x").dtype == np.uint8
    assert checked_array(np.array([[1.5]], np.float64), "x").dtype == np.float32
    big_endian = np.array([[1, 2]], dtype=">u2")
    assert checked_array(big_endian, "x").dtype.isnative


def test_npz_pick_by_key_and_index(tmp_path):
    images = np.arange(3 * 5 * 5, dtype=np.uint8).reshape(3, 5, 5)
    np.savez(tmp_path / "m.npz", train_images=images, train_labels=np.zeros((3, 1)))
    np.testing.assert_array_equal(read_image(tmp_path / "m.npz", key="train_images", index=2).array, images[2])
    with pytest.raises(BadInputError, match="several arrays"):
        read_image(tmp_path / "m.npz")
    with pytest.raises(BadInputError, match="out of range"):
        read_image(tmp_path / "m.npz", key="train_images", index=9)


def test_multipage_tiff_needs_a_frame(tmp_path):
    pages = [Image.fromarray(np.full((4, 4), v, np.uint8)) for v in (10, 20)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    with pytest.raises(BadInputError, match="2 pages"):
        read_image(tmp_path / "stack.tif")
    assert read_image(tmp_path / "stack.tif", frame=1).array[0, 0] == 20


def test_window_is_for_dicom_only(grey16):
    with pytest.raises(BadInputError, match="DICOM files only"):
        read_image(grey16[0], window=(40, 400))
