"""Image-text training step: greenfm's ``fit`` with the ``clip`` recipe against open_clip's step.

Claim: greenfm's contrastive step (engine ``fit`` + the ``clip`` recipe: tokenising collate,
all-gather-ready loss, logging and the compute ledger) trains at >= 0.95x the images/s of
open_clip's training step on the same towers, batch and precision, and its loss equals
open_clip's ``ClipLoss`` to 1e-6 on the same features.

open_clip's step, as its ``train_one_epoch`` runs it: tokenise the batch's texts, encode
both towers, L2-normalise, ``open_clip.loss.ClipLoss``, backward, grad-norm clip, AdamW
step, ``logit_scale`` clamped to ln(100). Its model is an exact copy of greenfm's recipe
at the start (the same timm image tower, the same Hugging Face text tower and projections),
so only the loop around them differs. Both run on the CPU in fp32 on pre-loaded phantom
images and their reports; greenfm's loader reads them from a list in memory too.

Steady state: each run trains ``warmup + measured`` steps; the time from the end of step
``warmup`` to the end of the last step counts (greenfm: read in the recipe's
``on_after_optimizer_step`` hook). Runs alternate (greenfm, open_clip, open_clip, greenfm,
...) and the ratio is the median of the per-round ratios.

    .venv/bin/python benchmarks/bench_unicl_step.py [--rounds N] [--quick] [--only NAME ...]

Needs the ``bench`` extra (``pip install -e .[bench]``: open-clip-torch). Prints a table and
writes benchmarks/results/unicl_step.json.
"""

from __future__ import annotations

import copy
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import command_line, selected_configs, side_by_side_arguments, write_side_by_side  # noqa: E402

from greenfm.engine import TrainConfig, fit  # noqa: E402
from greenfm.methods.contrastive_loss import unicl_loss  # noqa: E402
from greenfm.methods.unicl import CLIP  # noqa: E402
from greenfm.models.backbones import create_encoder  # noqa: E402
from greenfm.models.text import create_text_tower  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "unicl_step.json"
CONFIGS = {
    "tiny_vit64_minilm_b32_1thread": dict(backbone="vit_tiny_test", img_size=64, text="minilm", batch=32,
                                          threads=1, warmup=3, measured=8, rounds=3),
    "tiny_vit64_minilm_b32_2threads": dict(backbone="vit_tiny_test", img_size=64, text="minilm", batch=32,
                                           threads=2, warmup=3, measured=8, rounds=3),
}
QUICK = {"warmup": 1, "measured": 3, "rounds": 1}
DEFAULTS = ("tiny_vit64_minilm_b32_1thread", "tiny_vit64_minilm_b32_2threads")


def phantom_samples(n: int, img_size: int, root: Path) -> list[dict]:
    """``n`` phantom radiographs (normalised tensors) with their reports, in memory."""
    from greenfm.data.contract import get_contract
    from greenfm.data.dataset import ImageDataset
    from greenfm.data.manifest import load_manifest
    from greenfm.data.phantoms import generate_phantoms

    manifest = load_manifest(generate_phantoms(root / "phantoms", n_patients=max(8, n // 2), size=img_size, seed=0))
    data = ImageDataset(manifest, get_contract("cxr-medpeft", size=img_size), labels=False)
    reports = manifest.table["report"].tolist()
    return [{"image": data[i]["image"], "report": reports[i], "index": i} for i in range(min(n, len(data)))]


class TimedCLIP(CLIP):
    """The ``clip`` recipe, noting the time of every optimiser step."""

    def on_after_optimizer_step(self, step: int) -> None:
        super().on_after_optimizer_step(step)
        self.step_times.append(time.perf_counter())


def build_recipe(cfg: dict) -> TimedCLIP:
    torch.manual_seed(0)
    image = create_encoder(cfg["backbone"], img_size=cfg["img_size"])
    text = create_text_tower(cfg["text"])
    recipe = TimedCLIP(image, text, None, {"embed_dim": 256})
    recipe.step_times = []
    return recipe


def run_greenfm(recipe: TimedCLIP, samples: list[dict], cfg: dict, work: Path) -> float:
    steps = cfg["warmup"] + cfg["measured"]
    config = TrainConfig(
        epochs=1000, max_steps=steps, batch_size=cfg["batch"], lr=1e-5, weight_decay=0.2, grad_clip=1.0, warmup=0,
        num_workers=0, accelerator="cpu", precision="32", progress_bar=False, show_ledger=False,
        log_every_steps=10, checkpoint_every_epochs=None, track_energy=False,
    )  # fmt: skip
    recipe.step_times = []
    fit(recipe, samples, config, work / f"greenfm-{time.monotonic_ns()}", export=False)
    times = recipe.step_times
    assert len(times) == steps, f"greenfm ran {len(times)} steps, {steps} expected"
    return cfg["measured"] * cfg["batch"] / (times[-1] - times[cfg["warmup"] - 1])


def run_open_clip(model: TimedCLIP, samples: list[dict], cfg: dict) -> float:
    from open_clip.loss import ClipLoss

    loss_fn = ClipLoss()
    groups = model.optimizer_groups(0.2)
    optimizer = torch.optim.AdamW(groups, lr=1e-5)
    model.train()
    batch, times = cfg["batch"], []
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(0)).tolist()
    for step in range(cfg["warmup"] + cfg["measured"]):
        rows = [samples[order[(step * batch + k) % len(samples)]] for k in range(batch)]
        images = torch.stack([r["image"] for r in rows])
        tokens = model.text.tokenize([r["report"] for r in rows])
        image_features = F.normalize(model.image_projection(model.image.embed(images, model.pool)), dim=-1)
        text_features = F.normalize(model.text_projection(model.text(tokens["input_ids"], tokens["attention_mask"])), dim=-1)
        loss = loss_fn(image_features, text_features, model.logit_scale.exp())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        times.append(time.perf_counter())
    return cfg["measured"] * batch / (times[-1] - times[cfg["warmup"] - 1])


def loss_difference(recipe: TimedCLIP, samples: list[dict]) -> float:
    """|greenfm unicl_loss - open_clip ClipLoss| on the same features of one batch, all targets unique."""
    from open_clip.loss import ClipLoss

    g = torch.Generator().manual_seed(1)
    u = F.normalize(torch.randn(64, 256, generator=g), dim=-1)
    v = F.normalize(torch.randn(64, 256, generator=g), dim=-1)
    scale = recipe.logit_scale.detach()
    return abs(float(unicl_loss(u, v, None, scale)) - float(ClipLoss()(u, v, scale.exp())))


def measure(name: str, cfg: dict, samples: list[dict], work: Path) -> dict:
    torch.set_num_threads(cfg["threads"])
    start = build_recipe(cfg)
    greenfm_rates, open_clip_rates, ratios = [], [], []
    for r in range(cfg["rounds"]):
        pair = {}
        for variant in (("greenfm", "open_clip") if r % 2 == 0 else ("open_clip", "greenfm")):
            model = copy.deepcopy(start)
            model.step_times = []
            if variant == "greenfm":
                pair[variant] = run_greenfm(model, samples, cfg, work)
            else:
                pair[variant] = run_open_clip(model, samples, cfg)
        greenfm_rates.append(pair["greenfm"])
        open_clip_rates.append(pair["open_clip"])
        ratios.append(pair["greenfm"] / pair["open_clip"])
        print(f"  {name} round {r + 1}: greenfm {pair['greenfm']:.1f} img/s, open_clip {pair['open_clip']:.1f} img/s")
    return {
        "greenfm_images_per_s": statistics.median(greenfm_rates),
        "open_clip_images_per_s": statistics.median(open_clip_rates),
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "loss_abs_difference_vs_ClipLoss": loss_difference(start, samples),
        "load_average": list(__import__("os").getloadavg()),
    }


def main() -> None:
    parser = side_by_side_arguments(__doc__.splitlines()[0], CONFIGS, DEFAULTS,
                                    rounds_help="alternating rounds per configuration (default 3)",
                                    quick_help="1 round of 3 measured steps, a smoke test")  # fmt: skip
    args = parser.parse_args()
    configs = selected_configs(args, CONFIGS, {k: QUICK for k in CONFIGS}, DEFAULTS)
    load_start, started = __import__("os").getloadavg(), time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        work = Path(tmp)
        samples = {}
        for name, cfg in configs.items():
            key = cfg["img_size"]
            if key not in samples:
                samples[key] = phantom_samples(max(64, cfg["batch"] * 4), cfg["img_size"], work / f"data{key}")
            results[name] = measure(name, cfg, samples[key], work)
    print(f"\n{'config':34} {'greenfm img/s':>14} {'open_clip img/s':>16} {'ratio':>7} {'|loss diff|':>12}")
    for name, r in results.items():
        print(f"{name:34} {r['greenfm_images_per_s']:14.1f} {r['open_clip_images_per_s']:16.1f} {r['ratio']:7.3f} "
              f"{r['loss_abs_difference_vs_ClipLoss']:12.2e}")
    write_side_by_side(RESULTS, claim="greenfm clip step >= 0.95x open_clip's step; loss == ClipLoss to 1e-6",
                       command=command_line(Path(__file__).name), results=results, configs=configs,
                       load_start=load_start, started=started)  # fmt: skip


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
