"""Sites for the synthetic phantoms: who is imaged, and how.

A site bundles a population (how sick, how often bedside films, how many lines
and tubes) with an acquisition chain (field of view, dose, blur, look-up table,
post-processing, CT noise and kernel). Training a starting model on one site and
adapting it to another is the domain shift the demo exercises; the profiles are
documented below and in ``SITES``.

- ``A``, outpatient clinic. Population: mostly normal, erect PA films, few lines.
  Radiographs: flat-panel detector, 360 mm field, full dose, sharp, moderate
  S-shaped curve. CT: standard dose (12 HU noise), soft kernel.
- ``B``, inpatient wards and ICU. Population: sicker (more effusions,
  consolidation and pneumothorax), 85% bedside AP films taken supine (magnified
  heart; effusions layer into a basal veil without a meniscus, pneumothorax
  air collects at the base), many lines and ECG leads. Radiographs: portable
  computed radiography, 420 mm field (smaller anatomy), a sixth of the dose
  (2.4x the quantum noise) and twice the electronic noise, 2.5x the blur (2 mm),
  flat gamma-lifted curve (gamma 0.7, slope 2.0), more rotation (5 degrees) and
  offset, strong heel-effect drift. CT: low dose (28 HU noise), sharp kernel,
  +15 HU calibration offset.
- ``C``, screening centre. Population: few acute findings, more nodules and
  emphysema. Radiographs: another vendor, 330 mm field (larger anatomy), steep
  S-shaped curve with edge enhancement, darker. CT: very low dose (35 HU noise).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from greenfm.errors import ConfigError


@dataclass(frozen=True)
class SiteProfile:
    """One population and acquisition chain. Every field has a physical meaning."""

    name: str
    description: str = ""
    # -- population -------------------------------------------------------------------------
    odds_scale: dict[str, float] = field(default_factory=dict)
    """Multiplies the odds of a finding (by finding id) relative to the reference population."""
    frailty_shift: float = 0.0
    """Shifts every patient's latent illness; raises all findings together."""
    portable_fraction: float = 0.05
    """Share of bedside AP radiographs (magnified heart, hedged heart-size statements)."""
    device_fraction: float = 0.05
    """Share of studies with a central line and ECG leads drawn and reported."""
    age_mean: float = 58.0
    # -- radiograph acquisition ---------------------------------------------------------------
    field_of_view_mm: float = 360.0
    """Width of the square field imaged; a larger field makes the anatomy smaller."""
    quanta_per_mm2: float = 900.0
    """X-ray quanta reaching the detector per mm^2 at full transmission; sets quantum noise."""
    electronic_noise: float = 0.004
    """Additive detector noise, as a fraction of the display range."""
    blur_mm: float = 0.8
    """Gaussian sigma of focal-spot and detector blur."""
    gamma: float = 1.0
    """Exponent of the display curve (>1 darkens mid-tones)."""
    contrast: float = 3.0
    """Slope of the S-shaped look-up table (higher = harder image)."""
    brightness: float = 0.0
    """Offset of the display window, as a fraction of the display range."""
    edge_enhance: float = 0.0
    """Unsharp-mask gain of the vendor's post-processing."""
    drift: float = 0.03
    """Amplitude of the low-frequency intensity gradient (heel effect, uneven processing)."""
    rotation_deg: float = 1.5
    """Standard deviation of patient rotation in the image plane."""
    offset_mm: float = 10.0
    """Standard deviation of patient position in the field."""
    # -- CT acquisition -----------------------------------------------------------------------
    ct_noise_hu: float = 12.0
    """Standard deviation of image noise in water, HU."""
    ct_blur_mm: float = 0.9
    """Gaussian sigma of the reconstruction kernel (smaller = sharper, noisier look)."""
    ct_hu_offset: float = 0.0
    """Calibration offset added to every voxel, HU."""

    def __post_init__(self) -> None:
        checks = {
            "field_of_view_mm": self.field_of_view_mm > 50,
            "quanta_per_mm2": self.quanta_per_mm2 > 0,
            "electronic_noise": self.electronic_noise >= 0,
            "blur_mm": self.blur_mm >= 0,
            "gamma": self.gamma > 0,
            "contrast": self.contrast > 0,
            "portable_fraction": 0 <= self.portable_fraction <= 1,
            "device_fraction": 0 <= self.device_fraction <= 1,
            "ct_noise_hu": self.ct_noise_hu >= 0,
            "ct_blur_mm": self.ct_blur_mm >= 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"site {self.name!r}: invalid value for {', '.join(bad)}")
        if any(v <= 0 for v in self.odds_scale.values()):
            raise ConfigError(f"site {self.name!r}: odds_scale values must be positive")


SITES: dict[str, SiteProfile] = {
    "A": SiteProfile(
        name="A",
        description="outpatient clinic, erect PA films on a flat-panel detector",
        odds_scale={"pneumothorax": 0.9, "consolidation": 0.9},
        frailty_shift=-0.3,
        portable_fraction=0.03,
        device_fraction=0.03,
        age_mean=55.0,
    ),
    "B": SiteProfile(
        name="B",
        description="inpatient wards and ICU, mostly bedside AP computed radiography",
        odds_scale={"pleural_effusion": 1.6, "consolidation": 1.5, "pneumothorax": 1.4},
        frailty_shift=0.4,
        portable_fraction=0.85,
        device_fraction=0.45,
        age_mean=66.0,
        field_of_view_mm=420.0,
        quanta_per_mm2=150.0,
        electronic_noise=0.016,
        blur_mm=2.0,
        gamma=0.7,
        contrast=2.0,
        brightness=0.03,
        drift=0.09,
        rotation_deg=5.0,
        offset_mm=14.0,
        ct_noise_hu=28.0,
        ct_blur_mm=0.5,
        ct_hu_offset=15.0,
    ),
    "C": SiteProfile(
        name="C",
        description="screening centre, another vendor's processing",
        odds_scale={"lung_nodule": 2.0, "emphysema": 1.8, "consolidation": 0.5, "pneumothorax": 0.4,
                    "pleural_effusion": 0.6},
        frailty_shift=-0.5,
        portable_fraction=0.0,
        device_fraction=0.0,
        age_mean=62.0,
        field_of_view_mm=330.0,
        quanta_per_mm2=600.0,
        blur_mm=0.6,
        gamma=1.15,
        contrast=5.0,
        brightness=-0.05,
        edge_enhance=0.8,
        drift=0.02,
        ct_noise_hu=35.0,
        ct_blur_mm=0.7,
    ),
}


def get_site(site: str | SiteProfile) -> SiteProfile:
    """Return a site profile by name (``"A"``, ``"B"``, ``"C"``) or pass one through."""
    if isinstance(site, SiteProfile):
        return site
    key = str(site).strip().upper()
    if key not in SITES:
        raise ConfigError(f"unknown phantom site {site!r}; choose one of {', '.join(SITES)} or pass a SiteProfile")
    return SITES[key]


def custom_site(base: str | SiteProfile = "A", **changes) -> SiteProfile:
    """A new profile from an existing one with some fields changed (unknown fields raise)."""
    profile = get_site(base)
    try:
        return replace(profile, **changes)
    except TypeError as err:
        raise ConfigError(f"custom site: {err}") from None
