"""Small, fast raster helpers shared by the 2D and 3D phantoms.

Thousands of phantoms must render in seconds, and ``scipy.ndimage`` filters are
several times slower than needed at these sizes (and small BLAS products stall
when threads are oversubscribed), so blurring is a sum of shifted slices and
band-limited noise is a coarse random grid interpolated with gathers.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=16)
def unit_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-0.5, 0.5): (x across columns, y down rows), float32, read-only."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    x, y = np.tile(c[None, :], (size, 1)), np.tile(c[:, None], (1, size))
    x.flags.writeable = y.flags.writeable = False
    return x, y


@lru_cache(maxsize=64)
def gaussian_taps(sigma: float) -> np.ndarray:
    """Normalised Gaussian weights over +-3 sigma."""
    reach = max(int(np.ceil(3.0 * sigma)), 1)
    w = np.exp(-0.5 * (np.arange(-reach, reach + 1) / sigma) ** 2)
    return (w / w.sum()).astype(np.float32)


def gaussian_blur(image: np.ndarray, sigma: float | tuple[float, ...]) -> np.ndarray:
    """Separable Gaussian blur of a 2D or 3D array, edges extended; ``sigma`` in pixels, one or per axis.

    A sum of shifted slices: for the small kernels used here this beats both
    ``scipy.ndimage`` and FFTs. Sigmas are rounded to 0.05 px (to reuse taps);
    axes with sigma below 0.25 px are left alone.
    """
    out = np.asarray(image, dtype=np.float32)
    sigmas = (sigma,) * out.ndim if np.isscalar(sigma) else tuple(sigma)
    for axis, s in enumerate(sigmas):
        s = round(float(s) * 20) / 20
        if s < 0.25:
            continue
        taps = gaussian_taps(s)
        reach, n = taps.size // 2, out.shape[axis]
        padded = _pad_edge(out, axis, reach)
        acc = taps[reach] * out
        for k, weight in enumerate(taps):
            if k != reach:
                acc += weight * padded[_along(axis, slice(k, k + n), out.ndim)]
        out = acc
    return out


def blurred_noise_std(sigma: tuple[float, ...]) -> float:
    """Standard deviation of unit white noise after ``gaussian_blur`` with these per-axis sigmas."""
    variance = 1.0
    for s in sigma:
        s = round(float(s) * 20) / 20
        if s >= 0.25:
            variance *= float(np.sum(gaussian_taps(s).astype(np.float64) ** 2))
    return float(np.sqrt(variance))


def _pad_edge(a: np.ndarray, axis: int, reach: int) -> np.ndarray:
    """``np.pad(mode="edge")`` along one axis, without its per-call overhead."""
    shape = list(a.shape)
    n = shape[axis]
    shape[axis] = n + 2 * reach
    out = np.empty(shape, dtype=a.dtype)
    out[_along(axis, slice(reach, reach + n), a.ndim)] = a
    out[_along(axis, slice(0, reach), a.ndim)] = a[_along(axis, slice(0, 1), a.ndim)]
    out[_along(axis, slice(reach + n, None), a.ndim)] = a[_along(axis, slice(n - 1, n), a.ndim)]
    return out


def _along(axis: int, index: slice, ndim: int) -> tuple[slice, ...]:
    full = [slice(None)] * ndim
    full[axis] = index
    return tuple(full)


@lru_cache(maxsize=64)
def _interpolation(size: int, cells: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left and right coarse cells and smoothed weights for each of ``size`` fine positions."""
    pos = (np.arange(size) + 0.5) * (cells / size)
    left = np.floor(pos).astype(np.intp)
    frac = (pos - left).astype(np.float32)
    return left, left + 1, frac * frac * (3 - 2 * frac)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], cells: int | tuple[int, ...]) -> np.ndarray:
    """Band-limited noise (zero mean, variance 0.5-1): a coarse Gaussian grid smoothly interpolated.

    Features are about ``size / cells`` pixels wide.
    """
    cells = (cells,) * len(shape) if isinstance(cells, int) else tuple(cells)
    return upsample(rng.standard_normal(tuple(c + 1 for c in cells), dtype=np.float32), shape)


def upsample(coarse: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Smooth (C1) interpolation of a grid of ``n + 1`` nodes per axis onto ``shape``; two gathers per axis."""
    out = coarse
    for axis, n in enumerate(shape):
        left, right, weight = _interpolation(n, coarse.shape[axis] - 1)
        w = weight.reshape([-1 if a == axis else 1 for a in range(len(shape))])
        lo = out.take(left, axis=axis)
        out = lo + (out.take(right, axis=axis) - lo) * w
    return out


def band(dist, half: float):
    """A flat-topped bump, 1 at ``dist = 0`` and 0.5 at ``|dist| = half``."""
    q = (dist / half) ** 2
    return 1.0 / (1.0 + q * q * q)


def unit(x):
    """``x`` clipped to [0, 1] (two ufuncs: cheaper than ``np.clip``'s Python wrapper on small arrays)."""
    return np.minimum(np.maximum(x, 0.0), 1.0)


def smoothstep(x):
    """0 below 0, 1 above 1, smooth in between."""
    x = unit(x)
    return x * x * (3.0 - 2.0 * x)


def segment_distance(x, y, start: tuple[float, float], end: tuple[float, float]):
    """Distance from points (x, y) to the segment start-end."""
    dx, dy = end[0] - start[0], end[1] - start[1]
    t = unit(((x - start[0]) * dx + (y - start[1]) * dy) / (dx * dx + dy * dy))
    ex, ey = x - start[0] - t * dx, y - start[1] - t * dy
    return np.sqrt(ex * ex + ey * ey)
