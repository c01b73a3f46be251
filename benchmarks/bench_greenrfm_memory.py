"""Memory of one greenrfm align step on CT crops, against GreenRFM's claims (METHODS 8).

GreenRFM claims training within 24 GB of GPU memory (r3d_18, k2s2 stem) and within 6 GB
(GreenRFM-L, r3d_18_lite, k4s4). This script runs ONE optimiser step of the ``align`` stage
(image tower + tiny text tower, bias-free projections to 768, shared classifier, AdamW,
grad-norm clip 0.5) on synthetic (1, 96, 192, 192) crops (METHODS 3.7), each configuration
in its own subprocess so that peaks do not mix.

What is measured:

- without CUDA: the child's **peak host RSS** (``ru_maxrss``), fp32, and the RSS just before
  the step (model, optimiser state not yet allocated, batch built), so the step's own
  increment is visible. Host RSS includes the framework (~0.4 GB), so it is an upper
  bound on what the same step allocates for tensors;
- with CUDA: ``torch.cuda.max_memory_allocated`` in fp32 and bf16 autocast.

The text tower is greenfm's tiny BERT (2 layers, width 32), not CXR-BERT (110M parameters,
~1.3 GB more in fp32 with AdamW state at batch 10 and 128 tokens); the image side dominates.
A configuration whose predicted peak (linear in the batch, from two smaller batches)
exceeds ``--max-host-gb`` is not run on the host: its figure is the linear extrapolation,
marked as such.

    .venv/bin/python benchmarks/bench_greenrfm_memory.py            # writes benchmarks/results/greenrfm_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_common import command_line, machine_info, stamp  # noqa: E402

CROP = (1, 96, 192, 192)  # (C, D, H, W), METHODS 3.7 chest
CLAIMS_GB = {"r3d_18": 24.0, "r3d_18_lite": 6.0}
REPORT = "There is cardiomegaly. No pleural effusion. Small lung nodule in the right upper lobe."


def _rss_gb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024**2
    return float("nan")


def child(encoder: str, batch: int, checkpoint: bool, precision: str) -> dict:
    """One align step; returns the memory figures as a dict (printed as JSON by the parent's subprocess)."""
    import torch

    from greenfm.labeling.findings import load_vocabulary
    from greenfm.methods.greenrfm import GreenRFM
    from greenfm.models.backbones import create_encoder
    from greenfm.models.text_tiny import tiny_text_tower

    torch.manual_seed(0)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    findings = load_vocabulary("ct-rate-18").ids
    recipe = GreenRFM("align", findings, {"checkpoint_activations": checkpoint},
                      image=create_encoder(encoder), text=tiny_text_tower([REPORT], max_length=128)).to(device)  # fmt: skip
    train = GreenRFM.default_train_config(stage="align")
    optimizer = torch.optim.AdamW(recipe.optimizer_groups(train["weight_decay"]), lr=train["lr"])
    samples = [{"image": torch.randn(CROP), "report": REPORT, "labels": torch.randint(0, 2, (18,)).float(), "index": i}
               for i in range(batch)]  # fmt: skip
    data = {k: v.to(device) if hasattr(v, "to") else v for k, v in recipe.collate(samples).items()}
    del samples
    recipe.train()
    before = _rss_gb()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and precision == "bf16"):
        loss = recipe.training_step(data)["loss"]
    loss.backward()
    torch.nn.utils.clip_grad_norm_(recipe.parameters(), train["grad_clip"])
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize()
    out = {"encoder": encoder, "batch": batch, "checkpoint_activations": checkpoint, "precision": precision,
           "device": "cuda" if cuda else "cpu", "step_seconds": round(time.perf_counter() - start, 2),
           "loss": float(loss.detach()), "rss_before_step_gb": round(before, 3),
           "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 3)}  # fmt: skip
    if cuda:
        out["max_allocated_gb"] = round(torch.cuda.max_memory_allocated() / 1024**3, 3)
    return out


REUSE: Path | None = None  # --reuse: a JSON-lines file of earlier child rows, extended as children finish


def run_child(encoder: str, batch: int, checkpoint: bool, precision: str) -> dict:
    key = (encoder, batch, checkpoint, precision)
    if REUSE is not None and REUSE.is_file():
        for line in REUSE.read_text().splitlines():
            row = json.loads(line)
            if (row["encoder"], row["batch"], row["checkpoint_activations"], row["precision"]) == key and "error" not in row:
                row["reused"] = True  # measured by an earlier invocation of this script (same code, same machine)
                print(json.dumps(row), flush=True)
                return row
    command = [sys.executable, __file__, "--child", encoder, str(batch), str(int(checkpoint)), precision]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if done.returncode != 0:
        return {"encoder": encoder, "batch": batch, "checkpoint_activations": checkpoint, "precision": precision,
                "error": (done.stderr.strip().splitlines() or ["?"])[-1]}  # fmt: skip
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(result), flush=True)
    if REUSE is not None:
        with REUSE.open("a") as handle:
            handle.write(json.dumps(result) + "\n")
    return result


def available_gb() -> float:
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024**2
    return 0.0


def measure(encoder: str, checkpoint: bool, precision: str, target: int, probes: list[int], max_host_gb: float) -> dict:
    """Peak at ``target`` batch: run it when it fits, else extrapolate linearly from the probe batches."""
    import torch

    figure = "max_allocated_gb" if torch.cuda.is_available() else "peak_rss_gb"
    rows = [run_child(encoder, b, checkpoint, precision) for b in probes]
    good = [r for r in rows if figure in r]
    entry: dict = {"encoder": encoder, "checkpoint_activations": checkpoint, "precision": precision, "probes": rows,
                   "quantity": figure, "batch": target, "claim_gb": CLAIMS_GB[encoder]}  # fmt: skip
    if len(good) >= 2:
        (b0, m0), (b1, m1) = (good[0]["batch"], good[0][figure]), (good[-1]["batch"], good[-1][figure])
        slope = (m1 - m0) / (b1 - b0)
        entry["predicted_gb"] = round(m1 + slope * (target - b1), 2)
        entry["per_sample_gb"] = round(slope, 3)
    limit = min(max_host_gb, 0.8 * available_gb()) if figure == "peak_rss_gb" else float("inf")
    if target in [r["batch"] for r in good]:
        entry["measured_gb"] = next(r[figure] for r in good if r["batch"] == target)
    elif entry.get("predicted_gb", float("inf")) <= limit:
        row = run_child(encoder, target, checkpoint, precision)
        entry["probes"].append(row)
        entry["measured_gb"] = row.get(figure)
    else:
        entry["note"] = f"predicted peak above the {limit:.1f} GB this host allows; figure extrapolated"
    value = entry.get("measured_gb", entry.get("predicted_gb"))
    entry["value_gb"], entry["extrapolated"] = value, "measured_gb" not in entry
    entry["within_claim"] = value is not None and value <= CLAIMS_GB[encoder]
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", nargs=4, metavar=("ENCODER", "BATCH", "CHECKPOINT", "PRECISION"), help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=10, help="Batch of the measured step (GreenRFM: 10).")
    parser.add_argument("--max-host-gb", type=float, default=8.0, help="Never run a host step predicted above this.")
    parser.add_argument("--out", default=str(HERE / "results" / "greenrfm_memory.json"))
    parser.add_argument("--reuse", type=Path, default=None, help="JSON-lines file of child rows to reuse and extend.")
    args = parser.parse_args()
    global REUSE
    REUSE = args.reuse
    if args.child:
        encoder, batch, checkpoint, precision = args.child
        print(json.dumps(child(encoder, int(batch), bool(int(checkpoint)), precision)))
        return

    import torch

    precisions = ["fp32", "bf16"] if torch.cuda.is_available() else ["fp32"]
    plan = {"r3d_18": [1, 2], "r3d_18_lite": [2, 4]}  # probe batches; the target runs too when it fits
    load = os.getloadavg()
    results = []
    for encoder, probes in plan.items():
        for checkpoint in (False, True):
            for precision in precisions:
                results.append(measure(encoder, checkpoint, precision, args.batch, probes, args.max_host_gb))
    record = {"created": stamp(), "machine": machine_info(load_average=load), "crop": list(CROP), "batch": args.batch,
              "text_tower": "greenfm tiny BERT (2 layers, width 32, 128 tokens)", "stage": "align",
              "command": command_line("bench_greenrfm_memory.py"), "max_host_gb": args.max_host_gb,
              "results": results}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2))
    print(f"\nalign step, batch {args.batch}, crop {CROP}, load average {load[0]:.2f}")
    print(f"{'encoder':<12} {'ckpt':<5} {'prec':<5} {'quantity':<17} {'GB':>7} {'how':<13} {'claim':>6} within")
    for r in results:
        how = "extrapolated" if r["extrapolated"] else "measured"
        value = f"{r['value_gb']:.2f}" if r["value_gb"] is not None else "-"
        print(f"{r['encoder']:<12} {str(r['checkpoint_activations']):<5} {r['precision']:<5} {r['quantity']:<17} "
              f"{value:>7} {how:<13} {r['claim_gb']:>6.0f} {r['within_claim']}")  # fmt: skip
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
