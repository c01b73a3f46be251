"""Does GreenRFM's staged supervision (image, text, then align) win here? Zero-shot and retrieval, paired.

Question (METHODS 3.4-3.5, principle S of MUST): at equal total optimiser steps, does the
staged ``greenrfm`` (image stage, text stage, align from both) beat (a) align alone from the
unsupervised towers (``init_from_stage1=false``, the official release's behaviour) and
(b) the image stage alone (its supervised head read out directly)?

Data: greenfm chest-radiograph phantoms of site A (``--patients``, 64 px, five findings and
a report per image), split by patient (val 0.1, test 0.3).

Towers: image ``vit_tiny_test`` at 64 px (random init, seed = run seed); text: greenfm's tiny
BERT (2 layers, width 32, 64 tokens, WordPiece fitted to the training reports), [CLS].
Steps: ``--steps`` in total per arm: staged = image ``steps/3`` + text ``steps/3`` + align the
rest; align-only and image-only spend all of them in their one stage. Batch 32; no augmentation;
contract ``cxr-medpeft``. Stage 1: AdamW lr ``--lr1`` (1e-3), wd 1e-4, cosine per step to 1e-5;
align: lr ``--lr2`` (3e-4), wd 0, constant, grad-norm clip 0.5 (METHODS 3.4's shape; the
paper's lr 1e-4 / 1e-5 are for 5 epochs of a pretrained r3d_18 and learn nothing in a few
hundred CPU steps from random towers). Label policy ``mask``.

Evaluation on the test split: zero-shot with prompts p3 on unnormalised latents (temperature
1) and the shared-classifier readout ``sigmoid(C z_v)``; the image-only arm's stage-1 head
``sigmoid(W f_v + b)``; macro AUROC with 1,000 patient-bootstrap resamples, paired
differences on the same resamples (``greenfm.evaluate.paired``); report -> image retrieval
R@K on L2-normalised latents beside the random baseline.

    .venv/bin/python benchmarks/run_greenrfm_study.py [--steps 300] [--patients 600] [--seeds 0,1]

Prints a table and writes benchmarks/results/greenrfm_study_<steps>steps_seeds<seeds>.json.

``--kind ct`` runs the same three arms on chest CT phantoms (METHODS 3.6-3.7): ``--patients``
(default 120) with 1-4 studies each, ``--size`` (default 32) in-plane voxels and ``size // 2``
slices at the phantoms' 3 x 1.5 x 1.5 mm, contract ``ct-chest`` with crop ``--crop`` (default
16,32,32, padded to the same size: the whole volume, a random crop in training only where the
volume is larger), image tower ``r3d_18_lite`` (k4s4 stem, one channel, random init), tiny text
tower at 128 tokens (the CT reports are longer), batch ``--batch`` (default 16), six findings.
Defaults for ct: ``--steps 180 --seeds 0``; it writes greenrfm_study_ct_<steps>steps_seeds<seeds>.json.

    .venv/bin/python benchmarks/run_greenrfm_study.py --kind ct [--steps 180] [--patients 120] [--seeds 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import command_line, machine_info  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"  # greenrfm_study_<steps>steps_seeds<a-b>.json
ARMS = ("staged", "align_only", "image_only")


def phantom_manifest(root: Path, patients: int, kind: str = "cxr", size: int = 64) -> Path:
    from greenfm.data.phantoms import generate_phantoms
    from greenfm.data.splits import split_manifest

    source = generate_phantoms(root / "phantoms", kind=kind, n_patients=patients, size=size, seed=11, site="A",
                               workers=1 if kind == "ct" else None)  # fmt: skip
    split_manifest(source, root / "phantoms_split.csv", val=0.1, test=0.3, seed=0)
    return root / "phantoms_split.csv"


def tower_options(args, work: Path) -> dict:
    """Image tower, input size and contract of the arms: a ViT on radiographs, r3d_18_lite on CT crops."""
    if args.kind == "cxr":
        return {"backbone": "vit_tiny_test", "img_size": 64, "contract": "cxr-medpeft"}
    crop = [int(v) for v in args.crop.split(",")]
    contract = work / "ct_contract.json"
    contract.write_text(json.dumps({"preset": "ct-chest", "size": crop, "pad_size": crop}) + "\n")
    return {"backbone": "r3d_18_lite", "img_size": None, "contract": str(contract)}


def stage_run(data: Path, out: Path, stage: str, steps: int, seed: int, args, cache: Path, text: str | None,
              **options) -> dict:  # fmt: skip
    from greenfm.workflows.pretrain import PretrainConfig, run_pretrain

    if stage == "align":
        train = {"lr": args.lr2, "weight_decay": 0.0, "schedule": "constant", "grad_clip": 0.5}
    else:
        train = {"lr": args.lr1, "min_lr": 1e-5, "weight_decay": 1e-4, "schedule": "cosine"}
    train.update(max_steps=steps, epochs=1000, batch_size=args.batch, num_workers=0, seed=seed, progress_bar=False,
                 show_ledger=False, checkpoint_every_epochs=None, accelerator="cpu", track_energy=False)  # fmt: skip
    base = dict(recipe="greenrfm", stage=stage, data=str(data), init="random", augment="none", cache=str(cache),
                text_tower=text, train=train, **args.towers)  # fmt: skip
    base.update(options)
    run_pretrain(PretrainConfig(**base), out)
    ledger = json.loads((out / "compute.json").read_text())
    return {"stage": stage, "steps": ledger["optimizer_steps"], "samples_seen": ledger["samples_seen"],
            "wall_s": ledger["wall_time_s"], "training_flops": ledger.get("total_training_flops"),
            "peak_host_rss_gb": round(ledger["peak_host_rss_bytes"] / 1e9, 2) if ledger.get("peak_host_rss_bytes") else None}


def train_arm(arm: str, data: Path, root: Path, seed: int, args, cache: Path, text: str) -> tuple[Path, list[dict]]:
    steps = args.steps
    if arm == "staged":
        first = steps // 3
        ledgers = [stage_run(data, root / "image", "image", first, seed, args, cache, None),
                   stage_run(data, root / "text", "text", first, seed, args, cache, text)]  # fmt: skip
        ledgers.append(stage_run(data, root / "align", "align", steps - 2 * first, seed, args, cache, None,
                                 init=None, init_image=str(root / "image"), init_text=str(root / "text"),
                                 backbone=None, img_size=None, contract=None))  # fmt: skip
        return root / "align", ledgers
    if arm == "align_only":
        ledger = stage_run(data, root / "align", "align", steps, seed, args, cache, text,
                           method={"init_from_stage1": False})  # fmt: skip
        return root / "align", [ledger]
    return root / "image", [stage_run(data, root / "image", "image", steps, seed, args, cache, None)]


def head_predictions(run: Path, data: Path, cache: Path) -> pd.DataFrame:
    """The image stage's own head, sigmoid(W f_v + b), on the test split (long predictions)."""
    import torch

    from greenfm.data.contract import Contract
    from greenfm.engine.embed import embed_dataset
    from greenfm.models.export import load_exported_heads, load_exported_towers, read_export_config
    from greenfm.workflows.inputs import image_dataset, load_checked_manifest

    config = read_export_config(run / "exported")
    findings = config["metadata"]["findings"]
    encoder = load_exported_towers(run / "exported", ["image"])["image"]
    heads = load_exported_heads(run / "exported")
    manifest = load_checked_manifest(data).split("test")
    dataset = image_dataset(manifest, Contract.from_dict(config["preprocessing"]), cache_root=cache, labels=False)
    features = torch.from_numpy(embed_dataset(encoder, dataset, pool=config["metadata"]["flags"]["image_pool"]))
    scores = torch.sigmoid(features @ heads["classifier_weight"].T + heads["classifier_bias"]).numpy()
    labels = np.asarray(dataset.manifest.labels(findings), dtype=float)
    n, k = scores.shape
    return pd.DataFrame({"id": np.repeat(dataset.ids, k), "patient_id": np.repeat(dataset.patient_ids, k),
                         "split": "test", "finding": np.tile(np.asarray(findings, dtype=object), n),
                         "label": labels.reshape(-1), "score": scores.reshape(-1)})  # fmt: skip


def macro_with_ci(predictions: pd.DataFrame) -> dict:
    from greenfm.evaluate.zeroshot import score_zeroshot

    findings = list(dict.fromkeys(predictions["finding"]))
    wide = predictions.pivot(index="id", columns="finding", values="score")[findings]
    labels = predictions.pivot(index="id", columns="finding", values="label")[findings]
    patients = predictions.drop_duplicates("id").set_index("id").loc[wide.index, "patient_id"].to_numpy()
    metrics = score_zeroshot(wide.to_numpy(), labels.to_numpy(), patients, findings, n_resamples=1000, seed=0)
    return {"macro_auroc": metrics.macro_auroc, "macro_ci": metrics.macro_auroc_ci,
            "findings_scored": f"{metrics.n_evaluable} of {metrics.n_classes}",
            "per_finding": {f.name: f.auroc for f in metrics.findings}}  # fmt: skip


def evaluate_arm(arm: str, run: Path, data: Path, out: Path, cache: Path) -> dict:
    from greenfm.workflows.image_text_config import RetrieveConfig, ZeroshotConfig
    from greenfm.workflows.image_text_eval import run_retrieve, run_zeroshot

    if arm == "image_only":
        predictions = head_predictions(run, data, cache)
        out.mkdir(parents=True, exist_ok=True)
        predictions.to_parquet(out / "head_predictions.parquet", index=False)
        return {"head": macro_with_ci(predictions)}
    result = {}
    for readout in ("prompts", "classifier"):
        run_zeroshot(ZeroshotConfig(model=str(run), data=str(data), cache=str(cache), readout=readout, resamples=0),
                     out / readout)  # fmt: skip
        result[readout] = macro_with_ci(pd.read_parquet(out / readout / "predictions.parquet"))
    rt = run_retrieve(RetrieveConfig(model=str(run), data=str(data), cache=str(cache)), out / "retrieval")["result"]
    result["retrieval_report_to_image"] = {str(r["k_used"]): [r["recall"], r["random"]]
                                           for r in rt["text_to_image"]["recall"]}  # fmt: skip
    result["retrieval_n"] = [rt["n_images"], rt["n_unique_texts"]]
    return result


def paired(a: Path, b: Path, names: tuple[str, str]) -> dict:
    from greenfm.evaluate.paired import paired_comparison

    result = paired_comparison(pd.read_parquet(a), pd.read_parquet(b), model_a=names[0], model_b=names[1],
                               wilcoxon=False)  # fmt: skip
    macro = result.rows[-1]
    return {"a": names[0], "b": names[1], "macro_difference_b_minus_a": macro.difference,
            "ci": macro.difference_ci, "verdict": macro.verdict}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("cxr", "ct"), default="cxr", help="phantom radiographs or chest CTs")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps per arm (cxr 300, ct 180)")
    parser.add_argument("--patients", type=int, default=None, help="phantom patients (cxr 600, ct 120)")
    parser.add_argument("--seeds", default=None, help="comma-separated run seeds (cxr 0,1; ct 0)")
    parser.add_argument("--size", type=int, default=None, help="phantom size: cxr pixels (64), ct in-plane voxels (32)")
    parser.add_argument("--crop", default="16,32,32", help="ct: the contract's (D,H,W) crop")
    parser.add_argument("--batch", type=int, default=None, help="batch size (cxr 32, ct 16)")
    parser.add_argument("--lr1", type=float, default=1e-3)
    parser.add_argument("--lr2", type=float, default=3e-4)
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)")
    args = parser.parse_args()
    ct = args.kind == "ct"
    for name, cxr_default, ct_default in (("steps", 300, 180), ("patients", 600, 120), ("seeds", "0,1", "0"),
                                          ("size", 64, 32), ("batch", 32, 16)):  # fmt: skip
        if getattr(args, name) is None:
            setattr(args, name, ct_default if ct else cxr_default)
    import torch

    from greenfm.models.text_tiny import tiny_text_tower

    torch.set_num_threads(2)
    started = time.perf_counter()
    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict = {}
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        cache = work / "cache"
        data = phantom_manifest(work, args.patients, args.kind, args.size)
        args.towers = tower_options(args, work)
        table = pd.read_csv(data)
        text = str(tiny_text_tower(table.loc[table["split"] == "train", "report"].tolist(),
                                   max_length=128 if ct else 64).save(work / "tiny_text"))  # fmt: skip
        results["data"] = {"kind": args.kind, "volumes_or_images": len(table),
                           "patients": int(table["patient_id"].nunique()), "test": int((table["split"] == "test").sum()),
                           **args.towers}  # fmt: skip
        for seed in seeds:
            for arm in ARMS:
                root = work / f"seed{seed}" / arm
                run, ledgers = train_arm(arm, data, root, seed, args, cache, text)
                results.setdefault(arm, {})[seed] = {"ledger": ledgers, **evaluate_arm(arm, run, data, root / "eval", cache)}
                print(f"seed {seed} {arm}: {json.dumps({k: v for k, v in results[arm][seed].items() if k != 'ledger'}, default=str)[:300]}", flush=True)
            s = work / f"seed{seed}"
            results.setdefault("paired", {})[seed] = {
                "prompts_staged_vs_align_only": paired(s / "align_only/eval/prompts/predictions.parquet",
                                                       s / "staged/eval/prompts/predictions.parquet",
                                                       ("align_only", "staged")),
                "classifier_staged_vs_align_only": paired(s / "align_only/eval/classifier/predictions.parquet",
                                                          s / "staged/eval/classifier/predictions.parquet",
                                                          ("align_only", "staged")),
                "staged_prompts_vs_image_only_head": paired(s / "image_only/eval/head_predictions.parquet",
                                                            s / "staged/eval/prompts/predictions.parquet",
                                                            ("image_only", "staged")),
            }  # fmt: skip
    print(f"\n{'seed':4} {'arm':11} {'readout':10} {'macro AUROC [95% CI]':28} {'R@1':>12} {'R@10':>12} {'steps':>5} {'train s':>8}")
    for seed in seeds:
        for arm in ARMS:
            r = results[arm][seed]
            steps = sum(x["steps"] for x in r["ledger"])
            wall = sum(x["wall_s"] for x in r["ledger"])
            for readout in ("prompts", "classifier", "head"):
                if readout not in r:
                    continue
                m = r[readout]
                ci = m["macro_ci"]
                rec = r.get("retrieval_report_to_image", {})
                r1 = f"{rec['1'][0]:.3f}({rec['1'][1]:.3f})" if rec and readout == "prompts" else ""
                r10 = f"{rec['10'][0]:.3f}({rec['10'][1]:.3f})" if rec and readout == "prompts" else ""
                print(f"{seed:<4} {arm:11} {readout:10} {m['macro_auroc']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]{'':8} "
                      f"{r1:>12} {r10:>12} {steps:>5} {wall:>8.0f}")  # fmt: skip
        for name, p in results["paired"][seed].items():
            print(f"seed {seed} {name}: {p['b']} - {p['a']} {p['macro_difference_b_minus_a']:+.3f} "
                  f"[{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}] {p['verdict']}")  # fmt: skip
    out = {"command": command_line(Path(__file__).name),
           "args": {k: str(v) for k, v in vars(args).items() if k != "towers"},
           "results": results, "machine": machine_info(), "total_wall_s": round(time.perf_counter() - started, 1)}  # fmt: skip
    kind = "_ct" if ct else ""
    path = RESULTS / f"greenrfm_study{kind}_{args.steps}steps_seeds{'-'.join(str(s) for s in seeds)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"wrote {path} ({out['total_wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
