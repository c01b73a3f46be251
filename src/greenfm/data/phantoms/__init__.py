"""Synthetic phantoms: greenfm's built-in data set, used by ``greenfm demo`` and the tests.

Chest radiographs (8-bit PNG) and chest CT volumes (int16 HU NIfTI), each with a
radiologist-style report, written with a ``manifest.csv`` by ``generate_phantoms``.

Modules, one idea each:

- ``writer``: ``generate_phantoms`` and ``summarize_phantoms`` (files, seeds, workers);
- ``sites``: populations and acquisition chains (``SiteProfile``, ``SITES``);
- ``course``: who is ill and when (chronic and acute findings across studies);
- ``cxr_anatomy``, ``cxr_draw``, ``cxr``: radiograph anatomy, drawing, and per-patient records;
- ``ct_draw``, ``ct``: CT volumes and per-patient records;
- ``reading``: what the reporting radiologist concludes: the pixel truth, up to a reader-error rate;
- ``reports``, ``phrases_cxr``, ``phrases_ct``: report composition and phrase books;
- ``raster``: fast blur, noise and shape helpers shared by 2D and 3D.
"""

from greenfm.data.phantoms.ct import CT_FINDING_IDS
from greenfm.data.phantoms.cxr import CXR_FINDING_IDS
from greenfm.data.phantoms.sites import SITES, SiteProfile, custom_site, get_site
from greenfm.data.phantoms.writer import PhantomSummary, finding_ids, generate_phantoms, summarize_phantoms

__all__ = [
    "CT_FINDING_IDS",
    "CXR_FINDING_IDS",
    "SITES",
    "PhantomSummary",
    "SiteProfile",
    "custom_site",
    "finding_ids",
    "generate_phantoms",
    "get_site",
    "summarize_phantoms",
]
