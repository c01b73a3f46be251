"""The demo's 3-D stage: GreenRFM-lite on chest CT phantoms, all three stages, then zero-shot.

``run_greenrfm_demo`` generates (or reuses) CT phantoms with reports, splits them by
patient, trains ``greenrfm`` (METHODS 3.4-3.7) with the ``r3d_18_lite`` image tower (k4s4
stem, one channel, random init) and greenfm's tiny text tower: the image stage (supervised
head on the findings), the text stage (the same on the reports), then the align stage from
both; it scores zero-shot on the test split (prompts p3, macro AUROC with a patient-bootstrap
CI; the shared-classifier readout beside it) and sums the three stages' compute ledgers.
It uses the verbs' Python API (``run_pretrain``, ``run_zeroshot``), no subprocess.

A re-run on the same folder reuses finished work: the phantoms and the text tower when the
setting is unchanged, and each stage whose export and ``compute.json`` are written (an
unfinished stage folder is removed and redone). A finished stage's optimiser checkpoint is
deleted (it is only needed to resume; about 380 MB for r3d_18_lite), its export is kept.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from greenfm.data.phantoms import generate_phantoms
from greenfm.data.splits import split_manifest
from greenfm.errors import ConfigError
from greenfm.evaluate.prompts import DEFAULT_PROMPT_FAMILY

STAGES = ("image", "text", "align")


@dataclass(frozen=True)
class GreenRFMDemoSetting:
    """Sizes of the 3-D stage: phantoms, crop, steps per stage, optimiser rates, bootstrap."""

    patients: int
    phantom_size: int  # in-plane voxels; size // 2 slices of 3 mm
    crop: tuple[int, int, int]  # the contract's (D, H, W) crop, also its pad size (the whole volume)
    batch: int
    steps: tuple[int, int, int]  # image, text, align
    bootstrap: int
    text_max_length: int = 128
    lr_stage1: float = 1e-3  # image and text stages: AdamW, cosine to 1e-5
    lr_align: float = 3e-4  # align: constant, clip 0.5 (METHODS 3.4's shape at a CPU-demo rate)


FULL = GreenRFMDemoSetting(patients=240, phantom_size=32, crop=(16, 32, 32), batch=16, steps=(40, 30, 50),
                           bootstrap=1000)  # fmt: skip
QUICK = GreenRFMDemoSetting(patients=12, phantom_size=32, crop=(8, 16, 16), batch=4, steps=(2, 2, 2), bootstrap=100,
                            text_max_length=32)  # fmt: skip


def greenrfm_demo_setting(quick: bool) -> GreenRFMDemoSetting:
    return QUICK if quick else FULL


def run_greenrfm_demo(out: str | Path, *, quick: bool = False, seed: int = 0) -> dict[str, Any]:
    """Run (or reuse) the 3-D stage under ``out`` and return its figures.

    The dict holds ``zeroshot`` (prompt id, macro AUROC, its 95% patient-bootstrap CI,
    findings scored), ``classifier`` (the same for ``sigmoid(C z_v)``), ``sizes`` (patients,
    volumes, per split, the crop, the backbone), ``compute`` (the three stages' summed wall
    seconds, FLOPs, samples and optimiser steps) and ``stages`` (each stage's ledger).
    """
    from greenfm.models.text_tiny import tiny_text_tower
    from greenfm.workflows.image_text_config import ZeroshotConfig
    from greenfm.workflows.image_text_eval import run_zeroshot

    out = Path(out)
    setting = greenrfm_demo_setting(quick)
    data = _data(out, setting, seed)
    table = pd.read_csv(data)
    text = out / "text_tower"
    if not (text / "config.json").is_file():
        shutil.rmtree(text, ignore_errors=True)
        tiny_text_tower(table.loc[table["split"] == "train", "report"].tolist(),
                        max_length=setting.text_max_length).save(text)  # fmt: skip
    contract = out / "data" / "contract.json"
    crop = list(setting.crop)
    contract.write_text(json.dumps({"preset": "ct-chest", "size": crop, "pad_size": crop}) + "\n")
    runs = out / "runs"
    ledgers = {stage: _stage(runs, stage, steps, data, contract, text, out / "cache", setting, seed)
               for stage, steps in zip(STAGES, setting.steps)}  # fmt: skip
    readouts = {}
    for readout in ("prompts", "classifier"):
        metrics = run_zeroshot(ZeroshotConfig(model=str(runs / "align"), data=str(data), cache=str(out / "cache"),
                                              readout=readout, resamples=setting.bootstrap, seed=seed),
                               out / "zeroshot" / readout)["metrics"]  # fmt: skip
        readouts[readout] = {"macro_auroc": metrics.macro_auroc, "macro_ci": _ci(metrics.macro_auroc_ci),
                             "findings_scored": metrics.n_evaluable, "findings": metrics.n_classes}  # fmt: skip
    by_split = table.groupby("split")["patient_id"].agg(["size", "nunique"])
    splits = {s: {"volumes": int(r["size"]), "patients": int(r["nunique"])} for s, r in by_split.iterrows()}
    return {
        "zeroshot": {"prompts": DEFAULT_PROMPT_FAMILY, "split": "test", **readouts["prompts"]},
        "classifier": {"split": "test", **readouts["classifier"]},
        "sizes": {"patients": int(table["patient_id"].nunique()), "volumes": len(table),
                  "splits": splits,
                  "crop": crop, "backbone": "r3d_18_lite", "batch": setting.batch, "steps": list(setting.steps)},
        "compute": {key: _sum(ledgers, key) for key in ("wall_s", "training_flops", "samples_seen", "optimizer_steps")},
        "stages": ledgers,
        "setting": "quick" if quick else "full",
        "run": str(runs / "align"),
    }  # fmt: skip


def format_greenrfm_demo(result: dict[str, Any]) -> list[str]:
    """A few lines for the demo's printed summary."""
    sizes, compute, zs, cl = result["sizes"], result["compute"], result["zeroshot"], result["classifier"]
    test = sizes["splits"].get("test", {})
    flops = f"{compute['training_flops']:.2g} FLOPs" if compute.get("training_flops") else "FLOPs not counted"
    return [
        f"GreenRFM-lite on CT phantoms: {sizes['patients']} patients, {sizes['volumes']} volumes, crop "
        f"{'x'.join(str(v) for v in sizes['crop'])}, {sizes['backbone']} (k4s4), stages image/text/align "
        f"{'/'.join(str(s) for s in sizes['steps'])} steps",
        f"  zero-shot macro AUROC (prompts {zs['prompts']}, test: {test.get('volumes', '?')} volumes, "
        f"{test.get('patients', '?')} patients): {_auroc(zs)}; classifier readout {_auroc(cl)}",
        f"  compute, three stages: {compute['wall_s']:.0f} s wall, {flops}, {compute['samples_seen']} samples, "
        f"{compute['optimizer_steps']} steps",
    ]


# -- internals --------------------------------------------------------------------------------


def _data(out: Path, setting: GreenRFMDemoSetting, seed: int) -> Path:
    """Phantoms split by patient; reused when ``data/setting.json`` matches (else everything is redone)."""
    key = {"patients": setting.patients, "phantom_size": setting.phantom_size, "seed": seed, "setting": asdict(setting)}
    saved = out / "data" / "setting.json"
    split = out / "data" / "split.csv"
    if saved.is_file() and split.is_file() and json.loads(saved.read_text()) == json.loads(json.dumps(key)):
        return split
    folders = [out / f for f in ("data", "runs", "text_tower", "zeroshot", "cache")]
    if not saved.is_file():  # never delete what this stage did not write
        foreign = [f.name for f in folders if f.is_dir() and any(f.iterdir())]
        if foreign:
            raise ConfigError(f"{out}: holds {', '.join(foreign)} not written by the 3-D demo stage; choose an empty "
                              "or a new folder")  # fmt: skip
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    source = generate_phantoms(out / "data" / "phantoms", kind="ct", n_patients=setting.patients,
                               size=setting.phantom_size, seed=seed + 11, workers=1)  # fmt: skip
    split_manifest(source, split, val=0.1, test=0.3, seed=seed)
    saved.write_text(json.dumps(key) + "\n")
    return split


def _stage(runs: Path, stage: str, steps: int, data: Path, contract: Path, text: Path, cache: Path,
           setting: GreenRFMDemoSetting, seed: int) -> dict[str, Any]:  # fmt: skip
    from greenfm.workflows.pretrain import PretrainConfig, run_pretrain

    run = runs / stage
    compute = run / "compute.json"
    if not ((run / "exported" / "config.json").is_file() and compute.is_file()):
        shutil.rmtree(run, ignore_errors=True)
        if stage == "align":
            train = {"lr": setting.lr_align, "weight_decay": 0.0, "schedule": "constant", "grad_clip": 0.5}
            towers = {"init_image": str(runs / "image"), "init_text": str(runs / "text")}
        else:
            train = {"lr": setting.lr_stage1, "min_lr": 1e-5, "weight_decay": 1e-4, "schedule": "cosine"}
            towers = {"backbone": "r3d_18_lite", "init": "random", "contract": str(contract),
                      **({"text_tower": str(text)} if stage == "text" else {})}  # fmt: skip
        train.update(max_steps=steps, epochs=1000, batch_size=setting.batch, num_workers=0, seed=seed,
                     progress_bar=False, show_ledger=False, checkpoint_every_epochs=None, accelerator="cpu",
                     track_energy=False)  # fmt: skip
        run_pretrain(PretrainConfig(recipe="greenrfm", stage=stage, data=str(data), augment="none", cache=str(cache),
                                    train=train, **towers), run)  # fmt: skip
        shutil.rmtree(run / "checkpoints", ignore_errors=True)  # a finished stage is never resumed: ~380 MB each
    ledger = json.loads(compute.read_text())
    return {"wall_s": float(ledger["wall_time_s"]), "training_flops": ledger.get("total_training_flops"),
            "samples_seen": int(ledger["samples_seen"]), "optimizer_steps": int(ledger["optimizer_steps"])}  # fmt: skip


def _sum(ledgers: dict[str, dict[str, Any]], key: str) -> Any:
    values = [ledger.get(key) for ledger in ledgers.values()]
    if any(v is None for v in values):
        return None
    return sum(values)


def _ci(ci: Any) -> list[float] | None:
    return [float(ci[0]), float(ci[1])] if ci is not None else None


def _auroc(figures: dict[str, Any]) -> str:
    if figures.get("macro_auroc") is None:
        return "not scorable (no finding with both classes in the test split)"
    ci = figures.get("macro_ci")
    text = f"{figures['macro_auroc']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
    return f"{text} ({figures['findings_scored']} of {figures['findings']} findings)"
