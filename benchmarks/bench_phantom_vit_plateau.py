"""Why does the demo's tiny ViT not learn the radiograph phantoms from random weights?

Claim under test: ``vit_tiny_test`` trained from scratch on ~1,400 site-A phantoms at
64 px stays at the label-prevalence loss for the whole budget of
``greenfm finetune --epochs 10 --batch-size 64`` (220 steps), whatever the usual
optimisation and configuration knobs, while a small CNN on the same images and loop
leaves it in the first epochs. Each variant changes one thing from the baseline
(greenfm's ``vit_tiny_test`` at 64 px: patch 8, width 64, 4 blocks, 4 registers,
LayerScale 1e-5, AdamW lr 1e-3, weight decay 0.05, batch 64, constant lr):

    .venv/bin/python benchmarks/bench_phantom_vit_plateau.py [--epochs 4 --patients 800 --only baseline,cnn]

The loss is the same masked BCE on the report labels as fine-tuning; "train AUROC" is
the macro AUROC on 500 training images (can the model fit what it sees?), "val" on
the validation split (pixel truth). Prints a table and writes
benchmarks/results/phantom_vit_plateau.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import command_line, machine_info, stamp  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "phantom_vit_plateau.json"
FINDINGS = ("cardiomegaly", "pleural_effusion", "pneumothorax", "consolidation", "lung_nodule")
VIT = {"patch_size": 8, "embed_dim": 64, "depth": 4, "num_heads": 4, "reg_tokens": 4, "init_values": 1e-5,
       "no_embed_class": True}  # greenfm's vit_tiny_test (models/backbones.py)
VARIANTS = {  # name: (model kwargs changed, training options changed)
    "baseline": ({}, {}),
    "layerscale 1.0": ({"init_values": 1.0}, {}),
    "layerscale 1.0 + mean-pooled patches": ({"init_values": 1.0, "global_pool": "avg"}, {}),
    "patch 4 (256 tokens)": ({"patch_size": 4}, {}),
    "width 192 + 3 heads": ({"embed_dim": 192, "num_heads": 3}, {}),
    "1 block + layerscale 1.0 + mean-pooled": ({"depth": 1, "init_values": 1.0, "global_pool": "avg"}, {}),
    "no LayerNorm (1 block)": ({"depth": 1, "init_values": 1.0, "global_pool": "avg", "no_norm": True}, {}),
    "position embedding std 1.0": ({}, {"pos_std": 1.0}),
    "lr 3e-3": ({}, {"lr": 3e-3}),
    "lr 3e-4": ({}, {"lr": 3e-4}),
    "no weight decay": ({}, {"weight_decay": 0.0}),
    "batch 16 (4x the steps)": ({}, {"batch": 16}),
    "per-pixel standardised input": ({}, {"pixel_std": True}),
    "plain timm ViT (no registers or LayerScale)": ({"model": "vit_tiny_patch16_224", "reg_tokens": 0,
                                                      "no_embed_class": False, "init_values": None}, {}),
    "conv stem (three stride-2 3x3 convs)": ({"conv_stem": True}, {}),
    "layerscale 1.0 + max-pooled patches": ({"init_values": 1.0, "global_pool": "max"}, {}),
    "conv stem + layerscale 1.0 + max-pooled": ({"conv_stem": True, "init_values": 1.0, "global_pool": "max"}, {}),
    "patch 16 (16 tokens)": ({"patch_size": 16}, {}),
    "patch MLP (no attention)": ({"model": "patch_mlp"}, {}),
    "cnn": ({"model": "cnn"}, {}),
    "cnn without BatchNorm": ({"model": "cnn", "batch_norm": False}, {}),
}


def build(kwargs: dict):
    import timm
    import torch
    from torch import nn

    kwargs = dict(kwargs)
    name = kwargs.pop("model", "vit_small_patch14_reg4_dinov2")
    if name == "cnn":  # the control: four 3x3 conv layers, BatchNorm (unless turned off), global max pooling
        norm = nn.BatchNorm2d if kwargs.get("batch_norm", True) else (lambda _: nn.Identity())

        def block(i: int, o: int) -> nn.Module:
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), norm(o), nn.ReLU(), nn.MaxPool2d(2))

        return nn.Sequential(block(3, 16), block(16, 32), block(32, 64), block(64, 64), nn.AdaptiveMaxPool2d(1),
                             nn.Flatten(), nn.Linear(64, len(FINDINGS)))
    if name == "patch_mlp":  # the ViT's 8x8 patch projection and a per-token MLP, without attention
        return nn.Sequential(nn.Conv2d(3, 64, 8, stride=8), nn.GELU(), nn.Conv2d(64, 64, 1), nn.GELU(),
                             nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(64, len(FINDINGS)))
    merged = {**VIT, **kwargs}
    if merged.pop("no_norm", False):
        merged["norm_layer"] = torch.nn.Identity
    if merged.get("init_values") is None:
        merged.pop("init_values")  # timm drops None kwargs; the plain ViT has no LayerScale by default
    conv_stem = merged.pop("conv_stem", False)
    model = timm.create_model(name, pretrained=False, img_size=64, num_classes=len(FINDINGS), **merged)
    if conv_stem:  # "early convolutions": the patch projection becomes 3x3 convs of stride 2 (8x down)
        width = model.embed_dim

        def conv(i: int, o: int) -> list[nn.Module]:
            return [nn.Conv2d(i, o, 3, stride=2, padding=1), nn.BatchNorm2d(o), nn.ReLU()]

        model.patch_embed.proj = nn.Sequential(*conv(3, width // 4), *conv(width // 4, width // 2),
                                               nn.Conv2d(width // 2, width, 3, stride=2, padding=1))
    return model


def run_variant(arrays: Path, name: str, epochs: int, seed: int = 0) -> dict:
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    model_kwargs, options = VARIANTS[name]
    data = np.load(arrays)
    x, y = data["x_train"], data["y_train"]
    model = build(model_kwargs)
    if "pos_std" in options:
        torch.nn.init.normal_(model.pos_embed, std=options["pos_std"])
    opt = torch.optim.AdamW(model.parameters(), lr=options.get("lr", 1e-3), weight_decay=options.get("weight_decay", 0.05))
    mean, std = x.mean(0).astype(np.float32), x.std(0).astype(np.float32) + 1.0

    def tensor(batch: np.ndarray) -> torch.Tensor:
        if options.get("pixel_std"):
            t = torch.from_numpy((batch - mean) / std)
        else:
            t = torch.from_numpy(batch).float().div_(255.0).sub_(0.5).div_(0.25)
        return t[:, None].expand(-1, 3, -1, -1)

    @torch.no_grad()
    def macro(images: np.ndarray, truth: np.ndarray) -> float:
        model.eval()
        score = torch.sigmoid(model(tensor(images))).numpy()
        return float(np.mean([roc_auc_score(truth[:, k] == 1, score[:, k]) for k in range(len(FINDINGS))]))

    rng = np.random.default_rng(seed)
    batch, steps, history, start = options.get("batch", 64), 0, [], time.perf_counter()
    for epoch in range(epochs):
        model.train()
        losses, order = [], rng.permutation(len(x))
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            yb = torch.from_numpy(y[idx]).float()
            known = (yb >= 0).float()
            loss = (torch.nn.functional.binary_cross_entropy_with_logits(model(tensor(x[idx])), yb.clamp(min=0),
                                                                         reduction="none") * known).sum() / known.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            steps += 1
        history.append({"epoch": epoch + 1, "steps": steps, "loss": round(float(np.mean(losses)), 4),
                        "train_auroc": round(macro(x[:500], y[:500]), 3),
                        "val_auroc": round(macro(data["x_val"], data["t_val"]), 3)})
        print(f"{name}: {history[-1]}", flush=True)
    return {"variant": name, "model": model_kwargs, "options": options, "history": history,
            "train_s": round(time.perf_counter() - start, 1)}


def _prevalence_loss(labels: np.ndarray) -> float:
    """Masked BCE of a model that predicts each finding's training prevalence: the plateau."""
    total, count = 0.0, 0
    for k in range(labels.shape[1]):
        known = labels[:, k][labels[:, k] >= 0]
        p = float(known.mean())
        total -= float(np.sum(known * np.log(p) + (1 - known) * np.log(1 - p)))
        count += len(known)
    return round(total / count, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=800)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    parser.add_argument("--results", type=Path, default=RESULTS, help=f"JSON to write (default {RESULTS.name})")
    args = parser.parse_args()
    from greenfm.api import data_split
    from greenfm.data.phantoms import generate_phantoms

    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest = generate_phantoms(root / "A", n_patients=args.patients, size=64, seed=args.seed, site="A")
        split = root / "split.csv"
        data_split(data=manifest, out=split, val=0.1, test=0.2, seed=args.seed)
        table = pd.read_csv(split)
        images = np.stack([np.asarray(Image.open(split.parent / p)) for p in table["path"]])
        train, val = (table["split"] == "train").to_numpy(), (table["split"] == "val").to_numpy()
        arrays = root / "arrays.npz"
        np.savez(arrays, x_train=images[train], y_train=table.loc[train, list(FINDINGS)].to_numpy(float),
                 x_val=images[val], t_val=table.loc[val, [f"meta_true_{f}" for f in FINDINGS]].to_numpy())
        runs = [run_variant(arrays, name, args.epochs, args.seed) for name in names]
        prevalence_loss = _prevalence_loss(table.loc[train, list(FINDINGS)].to_numpy(float))
    result = {"claim": __doc__.splitlines()[0], "command": command_line("bench_phantom_vit_plateau.py"),
              "stamp": stamp(), "machine": machine_info(load_average=[round(v, 2) for v in os.getloadavg()]),
              "train_images": int(train.sum()), "runs": runs, "prevalence_loss": prevalence_loss}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    if args.results.is_file() and args.only:  # a partial run updates its variants, keeps the others
        earlier = json.loads(args.results.read_text())
        if earlier.get("train_images") == result["train_images"]:
            kept = [r for r in earlier.get("runs", []) if r["variant"] not in names]
            result["runs"] = kept + runs
    args.results.write_text(json.dumps(result, indent=2) + "\n")
    runs = result["runs"]
    print(f"\n{'variant':46s} {'steps':>5s} {'loss':>7s} {'train':>6s} {'val':>6s}   (last epoch)")
    for r in runs:
        last = r["history"][-1]
        print(f"{r['variant']:46s} {last['steps']:5d} {last['loss']:7.4f} {last['train_auroc']:6.3f} "
              f"{last['val_auroc']:6.3f}")
    print(f"\nloss of predicting the label prevalence: {prevalence_loss}; wrote {args.results}")


if __name__ == "__main__":
    main()
