"""The chest of a radiograph phantom: one patient's fixed anatomy and its geometry.

Everything lives in a patient frame in millimetres, as seen on a frontal film:
``X`` grows to the image right (the patient's left), ``Y`` grows downwards, the
origin is mid-thorax. Lungs, heart and diaphragm are implicit shapes: each
returns a signed margin in mm (> 0 inside), so drawing, lesion placement and the
lung depth along the beam all come from the same few formulas.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from greenfm.data.phantoms.raster import band, unit, upsample

RIGHT, LEFT = -1, 1
"""Patient sides as signs of X: the patient's right is on the image left."""
SIDE_NAMES = {RIGHT: "right", LEFT: "left"}
VESSEL_CELLS = (384, 96)
"""Vessel table cells: 192 angle cells per lung, radius cells of 3 mm from the hilum."""


@dataclass(frozen=True)
class ChestAnatomy:
    """One patient's fixed anatomy (mm unless stated)."""

    half_width: float  # inner rib cage, at the bases
    body_margin: float  # soft tissue outside the ribs (habitus)
    thickness: float  # antero-posterior body thickness, cm of water
    apex_y: float  # top of the lungs
    dome_right: float  # height of the right hemidiaphragm dome
    dome_left: float
    ctr: float  # cardiothoracic ratio while the heart is normal
    heart_tilt: float  # cardiac axis, degrees from the horizontal
    heart_ratio: float  # long / short axis of the cardiac silhouette
    mediastinum: float  # upper mediastinal half width
    rib_spacing: float
    rib_phase: float
    clavicle_y: float  # below the apex
    female: bool
    gastric_bubble: bool
    vessels: np.ndarray  # vascular markings: intensity per (angle cell, radius cell); see VESSEL_CELLS

    @property
    def dome(self) -> float:
        return 0.5 * (self.dome_right + self.dome_left)


def sample_anatomy(rng: np.random.Generator) -> ChestAnatomy:
    female = bool(rng.random() < 0.5)
    scale = 0.93 if female else 1.0
    dome_right = float(rng.normal(70, 10))
    # Vessels run radially: a spiky profile over angle, broken up a little along the radius; upsampled
    # once here so that drawing needs one nearest-cell lookup per pixel.
    coarse = np.minimum(rng.gamma(0.4, 1.0, (97, 1)), 2.0) * rng.gamma(3.0, 1 / 3.0, (97, 25))
    vessels = upsample(coarse.astype(np.float32), VESSEL_CELLS)
    return ChestAnatomy(
        half_width=float(rng.normal(142, 10) * scale),
        body_margin=float(rng.uniform(10, 36)),
        thickness=float(rng.normal(22, 2.5)),
        apex_y=float(rng.normal(-150, 8) * scale),
        dome_right=dome_right,
        dome_left=dome_right + float(rng.normal(14, 5)),
        ctr=float(np.clip(rng.normal(0.44, 0.025), 0.36, 0.48)),  # normal hearts stay below 0.48
        heart_tilt=float(rng.normal(38, 6)),
        heart_ratio=float(np.clip(rng.normal(1.3, 0.1), 1.05, 1.6)),
        mediastinum=float(rng.normal(22, 2.5)),
        rib_spacing=float(rng.normal(25, 1.5) * scale),
        rib_phase=float(rng.uniform(-4, 4)),
        clavicle_y=float(rng.normal(48, 6)),
        female=female,
        gastric_bubble=bool(rng.random() < 0.7),
        vessels=vessels.astype(np.float32),
    )


class Heart(NamedTuple):
    """The cardiac silhouette: an ellipse tilted along the cardiac axis."""

    x: float
    y: float
    long: float  # semi-axis along the cardiac axis
    short: float
    cos: float
    sin: float
    half_width: float  # horizontal half extent: what the cardiothoracic ratio measures

    def radius(self, X, Y):
        """Elliptical radius: < 1 inside the heart."""
        dx, dy = X - self.x, Y - self.y
        p = (dx * self.cos + dy * self.sin) / self.long
        q = (dy * self.cos - dx * self.sin) / self.short
        return np.sqrt(p * p + q * q)


def heart_geometry(an: ChestAnatomy, ctr: float, dome_shift: float = 0.0, magnification: float = 1.0) -> Heart:
    """The heart whose width is ``ctr`` x the inner thorax width (AP films magnify it)."""
    half = ctr * an.half_width * magnification
    phi, ratio = np.deg2rad(an.heart_tilt), an.heart_ratio
    c, s = float(np.cos(phi)), float(np.sin(phi))
    short = half / float(np.sqrt(ratio * ratio * c * c + s * s))
    long = ratio * short
    half_height = float(np.sqrt(long * long * s * s + short * short * c * c))
    return Heart(0.36 * half, an.dome + dome_shift - 0.55 * half_height, long, short, c, s, half)


def lung_margin(X, Y, an: ChestAnatomy, heart: Heart, dome_shift: float = 0.0, mediastinum_scale: float = 1.0):
    """Margins (mm, > 0 inside) of both lungs: (whole lung, lateral/apical wall only, height fraction).

    The height fraction runs from 0 at the bases to 1 at the apex; a pneumothorax
    and the narrowing of the upper chest use it.
    """
    W = an.half_width
    ax = np.abs(X)
    base = (X < 0) * np.float32(an.dome_right - an.dome_left) + np.float32(an.dome_left + dome_shift)
    up = unit((base - Y) / (base - an.apex_y))
    m_lat = W * (1.0 - 0.3 * up * up * up) - ax
    d = (ax - 0.5 * W) / W
    m_apex = Y - (an.apex_y + 300.0 * d * d)
    m_dia = base + 125.0 * d * d - Y
    knob = (X > 0) * (13.0 * band(Y + 70.0, 14.0))  # aortic knob
    m_med = ax - (an.mediastinum * mediastinum_scale + knob + 0.04 * np.maximum(Y + 100.0, 0.0))
    m_heart = (heart.radius(X, Y) - 1.0) * heart.short
    lateral_apical = np.minimum(m_lat, m_apex)
    margin = np.minimum(np.minimum(lateral_apical, m_dia), np.minimum(m_med, m_heart))
    return margin, lateral_apical, up


def costophrenic_y(an: ChestAnatomy, side: int, dome_shift: float = 0.0) -> float:
    """Height of the lateral costophrenic angle on one side."""
    return (an.dome_right if side == RIGHT else an.dome_left) + dome_shift + 125.0 * 0.25


def zone_of(an: ChestAnatomy, y: float) -> str:
    """``upper`` / ``mid`` / ``lower`` zone of a height in the lung."""
    frac = (y - an.apex_y) / (an.dome - an.apex_y)
    return "upper" if frac < 0.36 else "mid" if frac < 0.68 else "lower"


def sample_point_in_lung(
    rng: np.random.Generator, an: ChestAnatomy, *, basal_bias: float = 0.0, depth_mm: float = 8.0
) -> tuple[float, float]:
    """A point at least ``depth_mm`` inside a lung; ``basal_bias`` > 0 favours the bases, < 0 the apices."""
    heart = heart_geometry(an, an.ctr)
    lo, hi = an.apex_y, an.dome + 35.0
    for _ in range(200):
        side = RIGHT if rng.random() < 0.5 else LEFT
        x = side * rng.uniform(0.15, 0.95) * an.half_width
        y = lo + rng.beta(1.0 + max(basal_bias, 0.0), 1.0 + max(-basal_bias, 0.0)) * (hi - lo)
        margin = lung_margin(np.float32(x), np.float32(y), an, heart)[0]
        if float(margin) > depth_mm:
            return float(x), float(y)
    return -0.5 * an.half_width, an.apex_y + 80.0
