"""Which starting model should the demo train? Its first four stages under several settings.

The demo's starting model (``workflows.demo_stages.starting_model``) is a tiny ViT trained
from random weights on the report labels of site A; the demo then adapts it to site B
by token reconstruction and linear-probes both on site B's test patients. This script
runs exactly those stages (phantoms, split + cache, starting model, token reconstruction,
embed + probe; no label-efficiency, image-text or 3-D stage) of the ``FULL`` setting with
one change per row, in fresh folders, and prints the starting model's probe AUROC and the
paired token-reconstruction difference of each. Settings (name: change to ``FULL``):

- ``32px-p8-4ep``: none (the demo as shipped: 32 px, patch 8, 16 tokens, 4 epochs);
- ``32px-p8-8ep``: 8 epochs of warm start;
- ``64px-p16-4ep`` / ``64px-p16-8ep``: 64 px with patch 16, so the same 16 tokens see the
  findings at full resolution, for 4 or 8 epochs;
- ``32px-p8-4ep-3000pt``, ``64px-p16-4ep-3000pt``, ``64px-p16-8ep-3000pt``: the same on
  3,000 site-A patients instead of 800 (a ViT from random weights needs images more
  than epochs: ``BENCHMARKS.md``, *Why the tiny ViT stays at the label prevalence*).

    .venv/bin/python benchmarks/run_demo_start_settings.py [--only 32px-p8-4ep,64px-p16-8ep --out /tmp/demo-start]

Writes benchmarks/results/demo_start_settings.json (one row per setting, with the wall
time of each stage).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import command_line, machine_info, stamp  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "demo_start_settings.json"
SETTINGS = {
    "32px-p8-4ep": {},
    "32px-p8-8ep": {"warm_start_epochs": 8},
    "64px-p16-4ep": {"image_size": 64, "patch_size": 16},
    "64px-p16-8ep": {"image_size": 64, "patch_size": 16, "warm_start_epochs": 8},
    "32px-p8-4ep-3000pt": {"source_patients": 3000},
    "64px-p16-4ep-3000pt": {"image_size": 64, "patch_size": 16, "source_patients": 3000},
    "64px-p16-8ep-3000pt": {"image_size": 64, "patch_size": 16, "warm_start_epochs": 8, "source_patients": 3000},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help=f"comma-separated settings, of {', '.join(SETTINGS)}")
    parser.add_argument("--out", default=None, help="folder for the demo runs (default: a temporary folder)")
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SETTINGS)
    if set(names) - set(SETTINGS):
        raise SystemExit(f"--only: choose from {', '.join(SETTINGS)}, got {args.only!r}")
    from greenfm.workflows.demo import RESULTS_FILE, run_demo
    from greenfm.workflows.demo_setting import FULL

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        for name in names:
            setting = replace(FULL, label_efficiency=False, image_text=False, greenrfm=False, **SETTINGS[name])
            run_demo(root / name, setting=setting)
            done = json.loads((root / name / RESULTS_FILE).read_text())
            macro = next(r for r in done["comparison"]["rows"] if r["name"] == "macro")
            rows.append({"setting": name, "changes": SETTINGS[name], "starting_model": done["starting_model"],
                         "start_auroc": round(macro["auroc_a"], 4), "adapted_auroc": round(macro["auroc_b"], 4),
                         "difference": round(macro["difference"], 4),
                         "difference_ci": [round(v, 4) for v in macro["difference_ci"]],
                         "per_finding_start": {r["name"]: round(r["auroc_a"], 3) for r in done["comparison"]["rows"]
                                               if r["name"] != "macro"},
                         "timings": done.get("timings")})
    result = {"claim": __doc__.splitlines()[0], "command": command_line("run_demo_start_settings.py"),
              "stamp": stamp(), "machine": machine_info(load_average=[round(v, 2) for v in os.getloadavg()]),
              "rows": rows}
    if RESULTS.is_file() and args.only:  # a partial run updates its settings, keeps the others
        kept = [r for r in json.loads(RESULTS.read_text()).get("rows", []) if r["setting"] not in names]
        result["rows"] = kept + rows
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{'setting':20s} {'start':>7s} {'adapted':>8s}  difference [95% paired CI]")
    for r in result["rows"]:
        lo, hi = r["difference_ci"]
        print(f"{r['setting']:20s} {r['start_auroc']:7.3f} {r['adapted_auroc']:8.3f}  {r['difference']:+.3f} "
              f"[{lo:+.3f}, {hi:+.3f}]")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
