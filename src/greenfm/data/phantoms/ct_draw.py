"""Drawing a chest CT phantom in Hounsfield units.

Arrays are (z, y, x) = (slice, row, column): slices go from the diaphragm
upwards (superior), rows from anterior to posterior, columns from the patient's
right to left, as an axial slice is displayed. Geometry is in millimetres in a
patient frame centred in the field. The chest is scaled to fill the field
(at the default 96 x 1.5 mm it is a small chest), so the default preprocessing
spacing needs no resampling. Lesion sizes are planned for that 96-voxel chest and
scale with it (``lesion_scale``): a volume of 32 voxels shows the same study, a
third the size, so lesions keep their proportion to the lungs at any size; the
recorded sizes are in mm of the volume drawn.

Tissues: air -1000, lung -850 with vessels, fat -100, muscle and blood 40,
liver 60, cancellous bone 250, cortical bone 700-900. Every shape is an implicit
function with a soft, partial-volume edge; noise and the reconstruction kernel
come last. Hand-written: no library draws chest CT phantoms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from greenfm.data.phantoms.raster import band, blurred_noise_std, gaussian_blur, smooth_noise, smoothstep
from greenfm.data.phantoms.sites import SiteProfile

SPACING_MM = (3.0, 1.5, 1.5)
"""(slice, row, column) spacing in mm."""

REFERENCE_SIZE = 96
"""The grid (columns) the chest's lesion sizes are planned for; other sizes scale them by ``size / 96``."""


def lesion_scale(size: int) -> float:
    """Factor from a lesion's planned size (mm in the 96-voxel chest) to its size in a ``size``-voxel volume."""
    return size / REFERENCE_SIZE


@dataclass(frozen=True)
class CtAnatomy:
    """One patient's fixed anatomy, as fractions of the field so it scales with the volume."""

    body_a: float  # body semi-axes (x, y), fraction of the field width
    body_b: float
    fat: float  # subcutaneous fat thickness, fraction of the field
    lung_height: float  # fraction of the z extent above the diaphragm that is lung
    dome: float  # diaphragm dome height, fraction of z extent from the bottom
    heart_scale: float  # heart size relative to normal when the heart is normal
    rib_phase: float
    seed: int  # vessel and parenchyma texture


@dataclass(frozen=True)
class CtStudy:
    """Everything needed to draw one volume. Positions are fractions of the field (x, y) and of z."""

    anatomy: CtAnatomy
    heart_scale: float
    nodules: tuple[tuple[float, float, float, float, bool], ...] = ()  # (x, y, z, diameter mm, solid)
    effusions: tuple[tuple[int, float], ...] = ()  # (side -1 right / +1 left, depth mm)
    consolidations: tuple[tuple[float, float, float, float, float], ...] = ()  # (x, y, z, radius mm, strength)
    pericardial_mm: float = 0.0
    emphysema: float = 0.0  # fraction of lung destroyed
    seed: int = 0


def sample_ct_anatomy(rng: np.random.Generator) -> CtAnatomy:
    return CtAnatomy(
        body_a=float(rng.uniform(0.40, 0.46)),
        body_b=float(rng.uniform(0.28, 0.34)),
        fat=float(rng.uniform(0.015, 0.05)),
        lung_height=1.0,
        dome=float(rng.uniform(0.18, 0.28)),
        heart_scale=float(np.clip(rng.normal(1.0, 0.05), 0.88, 1.1)),
        rib_phase=float(rng.uniform(0, 1)),
        seed=int(rng.integers(2**63)),
    )


def lung_mask(x, y, z, an: CtAnatomy, heart_scale: float | None = None):
    """Signed margin (fraction of the field, > 0 inside a lung) at points (x, y: field fractions; z: 0..1).

    The lungs are rounded columns narrowing to the apices, cut by the domes of
    the diaphragm, the mediastinum and the heart.
    """
    ax = np.abs(x)
    lung_a, lung_b = 0.16 * an.body_a / 0.43, 0.215 * an.body_b / 0.31
    cx = 0.185 * an.body_a / 0.43
    taper = np.clip((z - an.dome) / (1.0 - an.dome), 0.0, 1.0)
    shrink = 1.0 - 0.35 * taper * taper
    r = np.sqrt(((ax - cx) / (lung_a * shrink)) ** 2 + ((y - 0.02) / (lung_b * shrink)) ** 2)
    dome = an.dome + 0.1 * ((ax - cx) / lung_a) ** 2 + 0.04 * (x > 0) - 0.08 * np.clip(y / lung_b, 0.0, 1.0)
    mediastinum = ax - (0.04 + 0.02 * taper)
    heart = (heart_radius(x, y, z, an, an.heart_scale if heart_scale is None else heart_scale) - 1.0) * 0.12
    return np.minimum(np.minimum((1.0 - r) * lung_b, (z - dome) * 0.5), np.minimum(mediastinum, heart))


def heart_radius(x, y, z, an: CtAnatomy, scale: float):
    """Elliptical radius of the heart (< 1 inside): anterior, left of the midline, on the diaphragm."""
    hz = an.dome + 0.17
    return np.sqrt(((x - 0.04 * scale) / (0.13 * scale)) ** 2 + ((y + 0.06) / (0.1 * scale)) ** 2
                   + ((z - hz) / (0.2 * scale)) ** 2)


def render_ct(study: CtStudy, site: SiteProfile, size: int = 96) -> np.ndarray:
    """Draw one study as an int16 HU volume of shape ``(size // 2, size, size)``."""
    an = study.anatomy
    depth = size // 2
    fov = size * SPACING_MM[2]
    z_scale = depth * SPACING_MM[0] / fov  # z extent in units of the field width
    rng = np.random.default_rng(study.seed)
    texture = np.random.default_rng(an.seed)  # the patient's own vessels, the same in every study
    c = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    zc = (np.arange(depth, dtype=np.float32) + 0.5) / depth
    z, y, x = zc[:, None, None], c[None, :, None], c[None, None, :]
    shape = (depth, size, size)

    def soft(margin):  # partial-volume edge, one voxel wide
        return smoothstep(margin * size + 0.5)

    def paint(mask, value):  # replace what is there by a tissue, in proportion to the mask
        hu[...] += mask * (value - hu)

    body_r = np.sqrt((x / an.body_a) ** 2 + ((y - 0.02) / an.body_b) ** 2)
    cavity_r = np.sqrt((x / (an.body_a - an.fat - 0.05)) ** 2 + ((y - 0.03) / (an.body_b - an.fat - 0.045)) ** 2)
    cavity = soft((1.0 - cavity_r) * an.body_b)
    hu = np.full(shape, -1000.0, np.float32)
    paint(soft((1.0 - body_r) * an.body_b), -100.0)  # subcutaneous fat
    paint(soft((1.0 - body_r) * an.body_b - an.fat), 40.0)  # chest wall muscle
    paint(cavity, -90.0)  # mediastinal fat
    paint(cavity * soft((an.dome + 0.02 - z) * 0.5), 58.0)  # liver and spleen under the diaphragm

    # Heart in its sac (pericardial fat, or fluid), aorta, trachea.
    scale = study.heart_scale
    hr = heart_radius(x, y, z, an, scale)
    rim = study.pericardial_mm / fov
    paint(cavity * soft((1.0 - hr) * 0.1 * scale + rim + 0.006), 8.0 if rim > 0 else -90.0)
    paint(cavity * soft((1.0 - hr) * 0.1 * scale), 42.0)
    descending = soft(0.03 - np.sqrt((x - 0.05) ** 2 + (y - 0.15) ** 2)) * (z > an.dome - 0.05)
    ascending = soft(0.033 - np.sqrt((x + 0.03) ** 2 + (y + 0.03) ** 2)) * soft((z - (an.dome + 0.33)) * 0.3)
    paint(cavity * np.maximum(descending, ascending), 42.0)
    paint(soft(0.022 - np.sqrt(x**2 + (y - 0.05) ** 2)) * soft((z - (an.dome + 0.5)) * 0.3), -1000.0)

    # Lungs: vessels are where two smooth noise fields both cross zero (curves in 3D).
    margin = lung_mask(x, y, z, an, scale)
    lung = soft(margin) * cavity
    cells = (max(depth // 6, 3), max(size // 8, 4), max(size // 8, 4))
    n1, n2 = smooth_noise(texture, shape, cells), smooth_noise(texture, shape, cells)
    vessels = band(n1, 0.09) * band(n2, 0.09) * (1.0 - 0.5 * np.clip(np.abs(x) * 4.0, 0.0, 1.0))
    lung_hu = -850.0 + 25.0 * smooth_noise(texture, shape, (depth // 2, size // 3, size // 3)) + 880.0 * vessels
    if study.emphysema > 0:  # destroyed lobules, worst in the upper lobes
        holes = smooth_noise(rng, shape, (depth // 3, size // 5, size // 5)) * (0.6 + 0.8 * z)
        cut = float(np.quantile(holes, 1.0 - min(study.emphysema * 1.6, 0.9)))
        lung_hu = np.where(holes > cut, np.float32(-975.0), lung_hu)
    for cx, cy, cz, radius, strength in study.consolidations:
        d = np.sqrt((x - cx) ** 2 + (y - cy) ** 2 + ((z - cz) * z_scale) ** 2) * fov
        fluff = smooth_noise(rng, shape, (depth // 3, size // 6, size // 6))
        patch = smoothstep((1.0 - d / radius + 0.35 * fluff) * 3.0) * strength
        airways = band(n1, 0.05) * band(n2, 0.12)  # air bronchograms
        lung_hu += patch * (30.0 - 930.0 * airways - lung_hu)
    for side, fluid_mm in study.effusions:
        # Supine: fluid lies along the posterior chest wall, a crescent thickest where most dependent.
        dependent = np.clip((y - 0.02) / 0.2 + 0.35, 0.0, 1.0)
        on_side = (x * side) > 0
        fluid = soft(fluid_mm / fov * dependent - margin) * on_side
        squeezed = soft(fluid_mm / fov * dependent + 0.02 - margin) * (1 - fluid) * on_side
        lung_hu += squeezed * 300.0 + fluid * (10.0 - lung_hu)  # fluid, and collapsed lung next to it
    for cx, cy, cz, diameter, solid in study.nodules:
        d = np.sqrt((x - cx) ** 2 + (y - cy) ** 2 + ((z - cz) * z_scale) ** 2) * fov
        ball = smoothstep((diameter / 2 - d) / SPACING_MM[2] + 0.5)
        lung_hu += ball * ((35.0 if solid else -550.0) - lung_hu)
    paint(lung, lung_hu)

    # Bones: vertebral body with cortex and discs, spinal canal, ribs in the chest wall, sternum.
    spine_y = 0.2 * an.body_b / 0.31
    vr = np.sqrt(x**2 + ((y - spine_y) * 1.1) ** 2)
    disc = band(np.sin(np.pi * z * (depth * SPACING_MM[0] / 26.0)), 0.18)
    paint(soft(0.055 - vr), 230.0 - 150.0 * disc)
    paint(soft(vr - 0.046) * soft(0.055 - vr), 750.0)
    paint(soft(0.022 - np.sqrt(x**2 + (y - spine_y - 0.075) ** 2)), 15.0)
    phi = np.abs(np.arctan2(x, y - 0.03)) / np.pi  # 0 at the spine, 1 at the sternum
    ribs = band(np.sin(np.pi * ((z * depth * SPACING_MM[0] + 60.0 * phi) / 28.0 + an.rib_phase)), 0.12)
    paint(band((cavity_r - 1.06) * an.body_b, 0.008) * ribs * (phi < 0.8), 700.0)
    paint(soft(0.03 - np.abs(x)) * band(y + an.body_b - an.fat - 0.035, 0.012), 450.0)

    # Scanner: kernel blur, correlated noise at the site's level, calibration offset.
    sigma = tuple(site.ct_blur_mm / s for s in SPACING_MM)
    hu = gaussian_blur(hu, sigma)
    noise = gaussian_blur(rng.standard_normal(shape, dtype=np.float32), sigma)
    level = site.ct_noise_hu * float(np.exp(rng.normal(0, 0.1))) / blurred_noise_std(sigma)
    hu += noise * level + site.ct_hu_offset
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
