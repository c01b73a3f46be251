"""CheXficient curator overhead: select + prototype update per step vs the training step of the same batch.

Claim (METHODS 4.2): curation adds at most 5% to a training step at the official global batch of 480.

Both are measured on this machine, side by side, in interleaved rounds:

- **curator**: ``PrototypeCurator.select`` on the 480 gathered joint embeddings (1,024-d, as
  CheXficient's ``[u; v]`` of two 512-d heads) + ``update`` (Sinkhorn-Knopp EMA on the kept rows);
- **training step**: the ``chexficient`` recipe's forward, InfoNCE and backward plus AdamW on
  the same 480 samples, with a ViT-S/16 image tower at 224 px and the bundled MiniLM-L6 text tower
  (both trained; the model a user of one modest GPU would train). The 480 samples run as
  micro-batches of ``--micro`` whose gradients add up (the towers' FLOPs of one 480 step; a CPU
  cannot hold 480 images' activations at once), with the loss over each micro-batch.

    .venv/bin/python benchmarks/bench_curator.py [--rounds N] [--micro M] [--backbone NAME] [--img-size S]

Prints a table and writes benchmarks/results/curator.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import command_line, machine_info, stamp  # noqa: E402

from greenfm.curation import PrototypeCurator  # noqa: E402
from greenfm.methods.registry import get_method  # noqa: E402
from greenfm.models.backbones import create_encoder  # noqa: E402
from greenfm.models.text import create_text_tower  # noqa: E402

REPORTS = ["Heart size is normal. The lungs are clear.", "Small left pleural effusion. No pneumothorax.",
           "Mild cardiomegaly with a right pleural effusion.", "Large right pneumothorax with a visible pleural line.",
           "Patchy opacity in the right lower lobe, consistent with pneumonia."]  # fmt: skip


def curator_seconds(batch: int, dim: int, repeats: int) -> float:
    """Median seconds of one select + update on ``batch`` gathered embeddings."""
    g = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(6, dim, generator=g), dim=1)
    curator = PrototypeCurator(dim)
    curator.initialize(F.normalize(centres[torch.arange(800) % 6] + 0.3 * torch.randn(800, dim, generator=g), dim=1),
                       torch.arange(800))  # fmt: skip
    times = []
    for r in range(repeats):
        c = F.normalize(centres[torch.randint(6, (batch,), generator=g)] + 0.3 * torch.randn(batch, dim, generator=g), dim=1)
        tic = time.perf_counter()
        curator.select(c, torch.arange(r * batch, (r + 1) * batch))
        curator.update()
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def train_step_seconds(recipe, optimizer, batches) -> float:
    """Seconds of one optimiser step over ``batches`` (micro-batches whose gradients add up)."""
    tic = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    for batch in batches:
        recipe.training_step(batch)["loss"].backward()
    optimizer.step()
    return time.perf_counter() - tic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=480)
    parser.add_argument("--micro", type=int, default=32)
    parser.add_argument("--backbone", default="vit_small_patch16_224")
    parser.add_argument("--img-size", type=int, default=224)
    args = parser.parse_args()
    torch.manual_seed(0)
    image = create_encoder(args.backbone, img_size=args.img_size)
    text = create_text_tower("minilm", max_length=64)
    recipe = get_method("chexficient").from_towers({"image": image, "text": text}, {})
    recipe.curating = False  # the step of the curated epoch minus the curator: all rows, InfoNCE
    recipe.train()
    optimizer = torch.optim.AdamW(recipe.parameters(), lr=5e-5)
    g = torch.Generator().manual_seed(1)
    samples = [{"image": torch.randn(3, args.img_size, args.img_size, generator=g), "report": REPORTS[i % 5], "index": i}
               for i in range(args.batch)]  # fmt: skip
    batches = [recipe.collate(samples[i : i + args.micro]) for i in range(0, args.batch, args.micro)]
    dim = 2 * recipe.config.embed_dim
    curator_seconds(args.batch, dim, 3)  # warm-up (imports, k-means)
    train_step_seconds(recipe, optimizer, batches[:1])
    rounds = []
    for r in range(args.rounds):
        step = train_step_seconds(recipe, optimizer, batches)
        cur = curator_seconds(args.batch, dim, 20)
        rounds.append({"train_step_s": step, "curator_s": cur, "overhead": cur / step})
        print(f"round {r}: training step {step:.2f} s, curator {cur * 1e3:.1f} ms, overhead {cur / step:.3%}", flush=True)
    overhead = statistics.median(r["overhead"] for r in rounds)
    result = {"claim": "curator select + update <= 5% of the training step at global batch 480",
              "command": command_line("bench_curator.py"), "when": stamp(), "load_average": os.getloadavg(),
              "machine": machine_info(), "model": f"{args.backbone} @ {args.img_size} px + MiniLM-L6 (bundled), "
              f"CheXficient heads 2 x 512, fp32, micro-batches of {args.micro}", "global_batch": args.batch,
              "joint_dim": dim, "rounds": rounds, "median_overhead": overhead, "holds": overhead <= 0.05}  # fmt: skip
    out = Path(__file__).resolve().parent / "results" / "curator.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n{'':24}{'seconds':>10}\n{'training step (480)':24}{statistics.median(r['train_step_s'] for r in rounds):>10.2f}"
          f"\n{'curator select+update':24}{statistics.median(r['curator_s'] for r in rounds):>10.4f}"
          f"\noverhead (median of rounds): {overhead:.3%}  (claim <= 5%: {'holds' if overhead <= 0.05 else 'fails'})"
          f"\nload average {os.getloadavg()}; written {out}")  # fmt: skip


if __name__ == "__main__":
    main()
