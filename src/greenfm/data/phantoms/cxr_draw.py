"""Drawing a chest-radiograph phantom: thickness map, detector and display.

The image is a projection. Every structure adds water-equivalent thickness (cm)
along the beam and aerated lung removes it; the detector counts
``exp(-mu * thickness)`` quanta with Poisson-like noise, blurs, and the vendor's
processing maps attenuation through a window, a gamma and an S-shaped look-up
table to 8 bits. Rotation, offset and field of view move the pixel grid, not the
anatomy, so they cost nothing, and a lesion keeps its size in mm at any pixel
size. Every shape is hand-written: no library draws chest radiographs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from greenfm.data.phantoms.cxr_anatomy import (
    LEFT,
    RIGHT,
    VESSEL_CELLS,
    ChestAnatomy,
    costophrenic_y,
    heart_geometry,
    lung_margin,
)
from greenfm.data.phantoms.raster import (
    band,
    gaussian_blur,
    segment_distance,
    smooth_noise,
    smoothstep,
    unit,
    unit_grid,
)
from greenfm.data.phantoms.sites import SiteProfile

MU_PER_CM = 0.2
"""Effective attenuation of water at chest energies, per cm."""
LUNG_AIR_FRACTION = 0.8
"""Share of lung depth that is air (lung density about 0.2 g/ml)."""
AP_MAGNIFICATION = 1.1
"""Apparent widening of the heart on a bedside AP film."""


@dataclass(frozen=True)
class CxrStudy:
    """Everything needed to draw one radiograph (mm, patient frame)."""

    anatomy: ChestAnatomy
    ctr: float
    dome_shift: float  # how much lower the diaphragm sits than usual (deeper breath), mm
    portable: bool
    device: bool
    effusions: tuple[tuple[int, float, float], ...] = ()  # (side, fluid depth at the angle, share of air replaced)
    pneumothorax: tuple[int, float, float] | None = None  # (side, rim width at the apex, share of lung gone)
    consolidations: tuple[tuple[float, float, float, float, bool], ...] = ()  # (x, y, radius, density, bronchograms)
    nodules: tuple[tuple[float, float, float, float], ...] = ()  # (x, y, diameter, contrast)
    zoom: float = 1.0  # field of view relative to the site's (collimation and patient size)
    seed: int = 0  # this exposure's positioning, texture and noise


class _Grid:
    """The pixel grid of one exposure in the patient frame (mm), and windows onto it."""

    def __init__(self, size: int, fov: float, theta: float, x0: float, y0: float):
        self.size, self.fov, self.px_mm = size, fov, fov / size
        self.cos, self.sin, self.x0, self.y0 = float(np.cos(theta)), float(np.sin(theta)), x0, y0
        u, w = unit_grid(size)
        self.X = (self.cos * fov) * u - (self.sin * fov) * w + x0
        self.Y = (self.sin * fov) * u + (self.cos * fov) * w + y0

    def to_pixel(self, x: float, y: float) -> tuple[float, float]:
        """(column, row) of a point in the patient frame."""
        dx, dy = x - self.x0, y - self.y0
        col = ((self.cos * dx + self.sin * dy) / self.fov + 0.5) * self.size - 0.5
        row = ((self.cos * dy - self.sin * dx) / self.fov + 0.5) * self.size - 0.5
        return col, row

    def window(self, x0: float, x1: float, y0: float, y1: float) -> tuple[slice, slice]:
        """Pixel slices covering the box [x0, x1] x [y0, y1] (mm); most shapes are drawn only there."""
        corners = [self.to_pixel(x, y) for x in (x0, x1) for y in (y0, y1)]
        cols, rows = [c for c, _ in corners], [r for _, r in corners]
        clamp = lambda v: int(min(max(v, 0), self.size))  # noqa: E731
        return (slice(clamp(np.floor(min(rows))), clamp(np.ceil(max(rows)) + 1)),
                slice(clamp(np.floor(min(cols))), clamp(np.ceil(max(cols)) + 1)))


def render_cxr(study: CxrStudy, site: SiteProfile, size: int = 128) -> np.ndarray:
    """Draw one study as a ``(size, size)`` uint8 radiograph (bright = attenuating)."""
    rng = np.random.default_rng(study.seed)
    an = study.anatomy
    W, T, shift = an.half_width, an.thickness, study.dome_shift
    fov = site.field_of_view_mm * study.zoom
    theta = float(np.deg2rad(rng.normal(0, site.rotation_deg)))
    ox, oy = (float(v) for v in rng.normal(0, site.offset_mm, 2))
    grid = _Grid(size, fov, theta, ox, oy + 0.5 * (an.apex_y + an.dome + 30.0) + 18.0)
    X, Y, px_mm = grid.X, grid.Y, grid.px_mm

    # Body: an elliptical cross-section, wider at the shoulders.
    shoulders = smoothstep((an.apex_y + 20.0 - Y) * (1 / 90.0) + 0.5)
    Wb = (W + an.body_margin) * (1.0 + 0.25 * shoulders)
    density = T * np.sqrt(np.maximum(1.0 - (X / Wb) ** 2, 0.0))
    if an.female:
        for side in (RIGHT, LEFT):
            cx, cy = side * 0.62 * W, an.dome_right + 5.0
            sl = grid.window(cx - 150, cx + 150, cy - 150, cy + 45)
            r2 = ((X[sl] - cx) ** 2 + (Y[sl] - cy) ** 2) * (1 / 75.0**2)
            density[sl] += 2.2 / (1.0 + r2 * r2 * r2)
    if an.gastric_bubble:
        cx, cy = 0.45 * W, an.dome_left + shift + 30.0
        sl = grid.window(cx - 70, cx + 70, cy - 40, cy + 40)
        r2 = ((X[sl] - cx) * (1 / 32.0)) ** 2 + ((Y[sl] - cy) * (1 / 16.0)) ** 2
        density[sl] -= (0.25 * T) / (1.0 + r2 * r2)
    carina = 0.5 * (an.apex_y + an.dome_right) + 5.0
    top, bottom = grid.y0 - 0.75 * fov, grid.y0 + 0.75 * fov  # beyond the image at any rotation
    sl = grid.window(-30, 30, top, carina + 30)
    density[sl] -= (0.18 * T) * band(X[sl], 8.0) * smoothstep((carina - Y[sl]) * (1 / 8.0) + 0.5)

    # The lungs and everything inside them, drawn in the thorax window only.
    magnification = AP_MAGNIFICATION if study.portable else 1.0
    heart = heart_geometry(an, study.ctr, shift, magnification)
    lungs = grid.window(-W - 4, W + 4, an.apex_y - 4, max(an.dome_right, an.dome_left) + shift + 45)
    in_lung = np.zeros_like(X)
    noise = lambda px, source=rng: smooth_noise(source, (size, size), max(size // px, 4))[lungs]  # noqa: E731
    density[lungs] += _draw_lungs(study, heart, X[lungs], Y[lungs], in_lung[lungs], noise, px_mm, magnification)
    sl = grid.window(heart.x - 1.4 * heart.long, heart.x + 1.4 * heart.long, heart.y - 1.4 * heart.long,
                     heart.y + 1.4 * heart.long)
    density[sl] += 0.6 * smoothstep((1.0 - heart.radius(X[sl], Y[sl])) * 12.0 + 0.5)  # denser than the mediastinum

    # Bones: spine, posterior and anterior ribs, clavicles.
    sl = grid.window(-60, 60, top, bottom)
    vertebra = Y[sl] * (1 / 29.0)
    density[sl] += 1.8 * band(X[sl], 17.0) * (0.6 + 0.4 * np.abs(vertebra - np.round(vertebra)))  # discs darker
    sl = grid.window(-1.25 * W, 1.25 * W, an.apex_y - 20, an.dome + shift + 110)
    density[sl] += _ribs(an, X[sl], Y[sl], in_lung[sl])
    sl = grid.window(-W, W, an.apex_y + an.clavicle_y - 45, an.apex_y + an.clavicle_y + 20)
    uu = np.abs(X[sl]) * (1 / W)
    vc = Y[sl] - (an.apex_y + an.clavicle_y - 32.0 * uu + 12.0 * uu * uu)
    density[sl] += 4.0 * band(vc, 7.0) * band((uu - 0.45) * (1 / 0.42), 1.0)

    for x, y, diameter, contrast in study.nodules:
        _add_nodule(density, grid.to_pixel(x, y), diameter, contrast, px_mm)
    if study.device:
        _add_lines_and_leads(density, grid, an, heart.y - 0.8 * heart.short, rng)
    return _acquire(density, an, site, rng, px_mm)


def _draw_lungs(study: CxrStudy, heart, X, Y, in_lung, noise, px_mm: float, magnification: float) -> np.ndarray:
    """Thickness change inside the thorax window: air, markings, and the lung findings.

    Fills ``in_lung`` (0..1, how much lung lies along the beam) for the ribs; ``noise(px, source)``
    gives band-limited texture with features about ``px`` pixels wide over the window.
    """
    an = study.anatomy
    W, shift = an.half_width, study.dome_shift
    margin, lateral_apical, up = lung_margin(X, Y, an, heart, shift, magnification)
    # Depth of lung along the beam: a chord through a rounded surface rises steeply at the edge.
    q = 1.0 - unit(margin * (1 / 45.0))
    lung_depth = (0.72 * an.thickness) * np.sqrt(1.0 - q * q)
    in_lung[...] = unit(lung_depth * 0.3)

    # Vascular markings radiate from the hila and thin out towards the periphery.
    dx = np.abs(X) - (an.mediastinum + 20.0)
    dy = Y - (0.5 * (an.apex_y + an.dome_right) + 30.0)
    r = np.sqrt(dx * dx + dy * dy)
    diamond = dy / (np.abs(dx) + np.abs(dy) + 1e-3)
    angle = np.where(dx >= 0, 1.0 + diamond, 3.0 - diamond)  # in [0, 4), monotone in the true angle
    cell = (angle * 48.0).astype(np.int32) + (X >= 0) * np.int32(192)
    cell *= VESSEL_CELLS[1]
    cell += np.minimum(r * (1 / 3.0), VESSEL_CELLS[1] - 1).astype(np.int32)
    streaks = an.vessels.take(cell)
    r2 = r * r
    taper = r2 / ((r2 + 28.0**2) * (1.0 + r * (1 / 45.0)) ** 2)
    markings = (6.0 * streaks * taper + 3.5 * band(r, 18.0) + 0.5 * noise(6)) * in_lung

    # Fluid and exudate replace air; a pneumothorax removes lung tissue from the rim.
    fluid = 0.0
    for side, depth, fraction in study.effusions:
        if study.portable:  # supine: the fluid layers behind the lung, a veil densest at the base, no meniscus
            f = (fraction * min(depth / 90.0, 1.0) * 0.75) * (1.0 - up) * ((X * side) > 0)
        else:
            top = costophrenic_y(an, side, shift) - depth * (0.7 + 0.3 * unit(np.abs(X) * (1 / W)) ** 2)
            f = smoothstep((Y - top) * (1 / (4.0 + 0.2 * depth)) + 0.5) * (((X * side) > 0) * fraction)
        fluid = np.maximum(fluid, f)
    exudate, bronchi = 0.0, 0.0
    if study.consolidations:
        # Their own stream: a finding changes only its own pixels, not the exposure's noise.
        texture = np.random.default_rng([study.seed, 1])
        fine = noise(4, texture)
        fluff = 0.55 * noise(16, texture) + 0.45 * fine
        for x, y, radius, strength, bronchograms in study.consolidations:
            reach = np.sqrt((X - x) ** 2 + (Y - y) ** 2) * (1 / radius) + 0.45 * fluff
            patch = smoothstep((1.1 - reach) * 2.0) * (strength * (0.8 + 0.2 * fine))
            exudate = np.maximum(exudate, patch)
            if bronchograms:
                bronchi = np.maximum(bronchi, patch * np.maximum(streaks - 1.2, 0.0))
    air = (LUNG_AIR_FRACTION * lung_depth) * ((1.0 - fluid) * (1.0 - exudate))
    change = markings * (1.0 - 0.7 * fluid) - air - 0.9 * bronchi
    if study.pneumothorax is not None:
        # Air fills the pleural space through the whole depth of the chest along the apical and
        # lateral wall: the rim loses the lung's tissue and markings (the share ``gone``); the
        # collapsed lung inside it is denser, and its edge (the visceral pleura) is a thin line.
        side, gap, gone = study.pneumothorax
        on_side = ((X * side) > 0) & (margin > -3.0)
        # Erect, air rises to the apex; supine (bedside films) it collects at the base: a deep sulcus.
        g = gap * ((0.3 + 0.7 * (1.0 - up)) if study.portable else (0.6 + 0.4 * up))
        rim = smoothstep((g - lateral_apical) * (1 / 3.0) + 0.5) * on_side
        half = max(0.8, 0.4 * px_mm)
        line = (2.0 / half) * band(lateral_apical - g, half) * (on_side & (margin > 0))
        collapse = min(gap / (0.5 * W), 0.9)
        tissue = (1.0 - LUNG_AIR_FRACTION) * 0.72 * an.thickness
        change -= (gone * rim) * (tissue + markings)
        change += (0.3 * collapse) * air * (1.0 - rim) * on_side + line  # tissue moves, mass is kept
    return change


def _ribs(an: ChestAnatomy, X, Y, in_lung) -> np.ndarray:
    """Posterior ribs (arcs falling laterally) and fainter anterior ribs (falling medially)."""
    W = an.half_width
    ax = np.abs(X)
    uu = np.minimum(ax * (1 / W), 1.2)
    v = Y + 18.0 * uu - 70.0 * uu * uu - (an.apex_y + an.rib_phase)
    sp, curv = 0.78 * an.rib_spacing, 0.9
    p = (np.sqrt(sp * sp + (4 * curv) * np.maximum(v, 0.0)) - sp) * (1 / (2 * curv))
    frac = p - np.round(p)
    reach = band((ax - (0.5 * W + 8.0)) * (1 / (0.56 * W + 8.0)), 1.0) * (ax > 14.0)
    ribs = band(frac * (sp + 2 * curv * p), 4.8) * (unit(10.5 - p) * reach)
    pa = (Y + 48.0 * (1.0 - uu) - (an.apex_y + 35.0 + an.rib_phase)) * (1 / (1.1 * an.rib_spacing))
    fa = (pa - np.round(pa)) * (1.1 * an.rib_spacing)
    ribs_ant = band(fa, 5.5) * ((pa > -0.5) & (pa < 5.5)) * band((uu - 0.72) * (1 / 0.42), 1.0)
    return (1.6 * ribs + 0.6 * ribs_ant) * (0.55 + 0.45 * in_lung)


def _add_nodule(density: np.ndarray, centre: tuple[float, float], diameter: float, contrast: float,
                px_mm: float) -> None:
    """A sphere's exact projection, in place: its chord length times ``contrast``, averaged over each pixel.

    The disc keeps the nodule's true diameter and sharp edge at any pixel size (4 x 4 samples per
    pixel give the partial pixels at its rim), so a 20 mm nodule spans 3.6 px at 64 px on site A.
    """
    radius = diameter / (2 * px_mm)  # pixels
    col, row = centre
    size = density.shape[0]
    r0, r1 = max(int(np.floor(row - radius)) - 1, 0), min(int(np.ceil(row + radius)) + 2, size)
    c0, c1 = max(int(np.floor(col - radius)) - 1, 0), min(int(np.ceil(col + radius)) + 2, size)
    if r0 >= r1 or c0 >= c1:
        return
    sub = (np.arange(_NODULE_SAMPLES, dtype=np.float32) + 0.5) / _NODULE_SAMPLES - 0.5
    rr = (np.arange(r0, r1, dtype=np.float32)[:, None] + sub[None, :]).reshape(-1, 1) - np.float32(row)
    cc = (np.arange(c0, c1, dtype=np.float32)[:, None] + sub[None, :]).reshape(1, -1) - np.float32(col)
    chord = np.sqrt(np.maximum(radius * radius - rr * rr - cc * cc, 0.0))  # half chord, pixels
    n = _NODULE_SAMPLES
    mean = chord.reshape(r1 - r0, n, c1 - c0, n).mean(axis=(1, 3))
    density[r0:r1, c0:c1] += (2.0 * px_mm / 10.0 * contrast) * mean  # chord in cm of water-equivalent


_NODULE_SAMPLES = 4


def _add_lines_and_leads(density: np.ndarray, grid: _Grid, an: ChestAnatomy, tip_y: float,
                         rng: np.random.Generator) -> None:
    """A right jugular central line down to the cavo-atrial junction, and three ECG electrodes."""
    W, X, Y = an.half_width, grid.X, grid.Y
    path = [(-0.62 * W, an.apex_y - 45.0), (-0.3 * W, an.apex_y + 20.0), (-16.0, an.apex_y + 75.0), (-12.0, tip_y)]
    sl = grid.window(-0.62 * W - 10, 0, an.apex_y - 55, tip_y + 10)
    segments = zip(path[:-1], path[1:], strict=True)
    nearest = np.minimum.reduce([segment_distance(X[sl], Y[sl], a, b) for a, b in segments])
    density[sl] += 2.5 * band(nearest, max(1.2, 0.4 * grid.px_mm))
    for _ in range(3):
        ex, ey = rng.uniform(-0.8, 0.8) * W, an.apex_y + rng.uniform(0, 200)
        sl = grid.window(ex - 15, ex + 15, ey - 15, ey + 15)
        de = np.sqrt((X[sl] - ex) ** 2 + (Y[sl] - ey) ** 2)
        density[sl] += 2.0 * band(de - 7.0, max(1.5, 0.4 * grid.px_mm)) + 0.8 * band(de, 3.0)


def _acquire(density: np.ndarray, an: ChestAnatomy, site: SiteProfile, rng: np.random.Generator,
             px_mm: float) -> np.ndarray:
    """Detector, processing and display: thickness map (cm of water) -> uint8."""
    size = density.shape[0]
    atten = MU_PER_CM * np.maximum(density, 0.0)
    exposure = site.quanta_per_mm2 * px_mm * px_mm * float(np.exp(rng.normal(0, 0.15)))
    # Log-domain quantum noise, 1 / sqrt(counts); uniform deviates of unit variance are three times
    # cheaper than Gaussian ones and indistinguishable once blurred and quantised.
    noise = rng.random((size, size), dtype=np.float32) - 0.5
    atten += noise * np.exp(atten * 0.5) * float(np.sqrt(12.0 / exposure))
    atten = gaussian_blur(atten, site.blur_mm * float(np.exp(rng.normal(0, 0.15))) / px_mm)
    # Window, gamma and S-shaped look-up table compose into one monotone curve: tabulate it.
    thickness = MU_PER_CM * an.thickness
    lo, hi = thickness * rng.uniform(0.06, 0.14), thickness * rng.uniform(1.2, 1.3)
    gamma = site.gamma * float(np.exp(rng.normal(0, 0.08)))
    c = site.contrast * float(np.exp(rng.normal(0, 0.1)))
    grid = np.linspace(0.0, 1.0, _LUT_SIZE, dtype=np.float32) ** gamma
    s0 = 1 / (1 + np.exp(c / 2))
    lut = ((1 / (1 + np.exp(-c * (grid - 0.5))) - s0) * (1 / (1 - 2 * s0))).astype(np.float32)
    index = np.minimum(np.maximum((atten - lo) * ((_LUT_SIZE - 1) / (hi - lo)), 0.0), _LUT_SIZE - 1).astype(np.int32)
    v = lut.take(index)
    if site.edge_enhance > 0:
        v += site.edge_enhance * (v - gaussian_blur(v, 4.0 * size / 128))
    u, w = unit_grid(size)
    g = [float(v) for v in rng.normal(0, site.drift, 3)]
    v += g[0] * u + g[1] * w + g[2] * _centred_square(size) + (site.brightness + rng.normal(0, 0.02))
    # Electronic noise: the quantum-noise field reversed, which is white and unrelated to it after the blur.
    v += noise[::-1, ::-1] * (site.electronic_noise * np.sqrt(12.0))
    return np.minimum(np.maximum(v * 255.0 + 0.5, 0.0), 255.0).astype(np.uint8)


_LUT_SIZE = 2048


@lru_cache(maxsize=8)
def _centred_square(size: int) -> np.ndarray:
    u = unit_grid(size)[0]
    return u * u - np.float32(1 / 12)
