"""Who is ill, and when: the disease course behind the synthetic phantoms.

Each patient has a latent frailty that raises every finding a little (so findings
co-occur as in real wards), chronic findings (a nodule, an enlarged heart) that
persist from their onset to the last study, and acute findings (pneumothorax,
consolidation) that come and go between studies. Some findings drive others in
the same study (a large heart brings effusions). The renderers turn each
present finding into a ``Lesion`` that the report writer describes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from greenfm.data.phantoms.sites import SiteProfile


@dataclass(frozen=True)
class FindingSpec:
    """How one finding behaves in the reference population."""

    name: str
    prevalence: float
    """Chance per patient (chronic) or per study (acute) for an average patient."""
    chronic: bool
    frailty_weight: float = 0.7
    """Log-odds added per unit of the patient's latent frailty."""
    drivers: dict[str, float] = field(default_factory=dict)
    """Log-odds added when another finding (listed earlier) is present in the same study."""
    persistence: float = 0.45
    """Acute findings only: chance that a finding present in one study is still there in the next."""


@dataclass(frozen=True)
class Lesion:
    """One drawn abnormality, as the renderer made it and the report writer describes it."""

    finding: str
    side: str = ""
    """``right`` / ``left`` / ``bilateral`` (patient's side), or empty."""
    zone: str = ""
    """Where: ``upper`` / ``mid`` / ``lower`` / ``apical`` / ``basal`` (CXR) or a lobe (CT)."""
    grade: str = ""
    """Size word: ``trace`` / ``small`` / ``moderate`` / ``large`` / ``mild`` / ``marked`` ..."""
    size_mm: float = 0.0
    """The defining measurement: nodule diameter, effusion depth, pneumothorax rim ..."""
    contrast: float = 1.0
    """How opaque or lucent it is, in the finding's own unit (the ``meta_contrast_*`` column; see ``cxr``, ``ct``)."""
    detail: str = ""
    """An optional extra descriptor (``air bronchograms``, ``ground-glass`` ...)."""


CXR_FINDINGS: tuple[FindingSpec, ...] = (
    FindingSpec("cardiomegaly", 0.15, chronic=True, frailty_weight=0.9),
    FindingSpec("lung_nodule", 0.2, chronic=True, frailty_weight=0.3),
    FindingSpec("consolidation", 0.12, chronic=False, frailty_weight=0.8),
    FindingSpec("pneumothorax", 0.08, chronic=False, frailty_weight=0.5, persistence=0.35),
    FindingSpec("pleural_effusion", 0.09, chronic=False, frailty_weight=0.9,
                drivers={"cardiomegaly": 1.3, "consolidation": 0.9}, persistence=0.6),
)

CT_FINDINGS: tuple[FindingSpec, ...] = (
    FindingSpec("cardiomegaly", 0.14, chronic=True, frailty_weight=0.9),
    FindingSpec("emphysema", 0.16, chronic=True, frailty_weight=0.6),
    FindingSpec("lung_nodule", 0.16, chronic=True, frailty_weight=0.3, drivers={"emphysema": 0.6}),
    FindingSpec("consolidation", 0.10, chronic=False, frailty_weight=0.8),
    FindingSpec("pleural_effusion", 0.08, chronic=False, frailty_weight=0.9,
                drivers={"cardiomegaly": 1.3, "consolidation": 0.9}, persistence=0.6),
    FindingSpec("pericardial_effusion", 0.05, chronic=False, frailty_weight=0.7,
                drivers={"cardiomegaly": 0.8, "pleural_effusion": 0.6}, persistence=0.6),
)


def sample_course(
    rng: np.random.Generator, specs: tuple[FindingSpec, ...], n_studies: int, site: SiteProfile
) -> np.ndarray:
    """Presence of each finding (columns, in ``specs`` order) in each study (rows), as bool."""
    frailty = rng.standard_normal() + site.frailty_shift
    names = [s.name for s in specs]
    present = np.zeros((n_studies, len(specs)), dtype=bool)
    for k, spec in enumerate(specs):
        base = _logit(spec.prevalence) + np.log(site.odds_scale.get(spec.name, 1.0)) + spec.frailty_weight * frailty
        if spec.chronic:
            # Onset at the first study mostly; later onsets then persist.
            logit = base + _driver_logit(spec, names, present[0])
            if rng.random() < _sigmoid(logit):
                onset = 0 if rng.random() < 0.75 else int(rng.integers(0, n_studies))
                present[onset:, k] = True
            continue
        for t in range(n_studies):
            if t > 0 and present[t - 1, k] and rng.random() < spec.persistence:
                present[t, k] = True
                continue
            logit = base + _driver_logit(spec, names, present[t])
            present[t, k] = rng.random() < _sigmoid(logit)
    return present


def _driver_logit(spec: FindingSpec, names: list[str], row: np.ndarray) -> float:
    return sum(w for other, w in spec.drivers.items() if row[names.index(other)])


def _logit(p: float) -> float:
    return float(np.log(p / (1.0 - p)))


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))
