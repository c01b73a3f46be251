"""The report in a real headless browser: every section renders, every image decodes, the page is not blank.

Needs a Chromium binary (Debian: ``apt-get install -y chromium``); skipped with the
reason when none is found. ``GREENFM_CHROMIUM`` names a binary explicitly.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from greenfm.report import build_report
from greenfm.report.fragments import SECTIONS

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)


def chromium() -> str | None:
    given = os.environ.get("GREENFM_CHROMIUM")
    if given:
        return given if shutil.which(given) or Path(given).is_file() else None
    return next((path for name in CANDIDATES if (path := shutil.which(name))), None)


BROWSER = chromium()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(BROWSER is None, reason="no Chromium binary on PATH (apt-get install -y chromium)"),
]


def run_browser(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    command = [BROWSER, *FLAGS, f"--user-data-dir={profile}", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"chromium failed ({result.returncode}): {result.stderr[-2000:]}"
    return result


@pytest.fixture(scope="module")
def page(report_runs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("browser") / "report.html"
    return build_report([report_runs["full"], report_runs["empty"]], out)


def test_rendered_dom_has_every_section_and_all_images_decoded(page, tmp_path):
    dom = run_browser(["--dump-dom", page.resolve().as_uri()], tmp_path / "profile").stdout
    body = re.search(r"<body([^>]*)>", dom)
    assert body, dom[:500]
    assert 'data-images-ok="true"' in body.group(1), body.group(1)
    count = re.search(r'data-images-count="(\d+)"', body.group(1))
    assert count and int(count.group(1)) == 3
    for section_id, title in SECTIONS:
        assert f'id="{section_id}"' in dom and title in dom
    assert 'id="caveat"' in dom and "not for clinical decisions" in dom


def test_screenshot_is_not_blank(page, tmp_path):
    shot = Path(os.environ.get("GREENFM_REPORT_SCREENSHOT", tmp_path / "report.png"))
    run_browser([f"--screenshot={shot}", "--window-size=1280,4000", page.resolve().as_uri()], tmp_path / "profile")
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.shape == (4000, 1280)
    assert pixels.std() > 20  # a blank or single-colour page has almost none
    top = pixels[:110]  # the dark masthead
    assert top.mean() < 140 and (pixels > 240).mean() > 0.3  # white cards below it
    for band in np.array_split(pixels, 4):  # content all down the page, not only in the header
        assert band.std() > 8 and (band < 100).mean() > 0.001
