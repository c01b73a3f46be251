"""``MODEL_CARD.md``: the human-readable card written into every model export.

Sections after the compute-and-carbon card of self-supervised model releases:
model details, intended and out-of-scope use, training data, preprocessing,
evaluation, compute, limitations, how to load it with plain timm, and the files
with their checksums. Everything comes from the export's ``config.json`` /
``metadata.json`` and the run folder (``greenfm.report.runs``); what the run does
not record is written as "not recorded", never guessed.
"""

from __future__ import annotations

import json
from typing import Any

from greenfm.report.green_card import green_card
from greenfm.report.runs import DataFacts, RunArtifacts

INTENDED_USE = (
    "Research use only. This model produces image embeddings (and, for a fine-tuned classifier, finding "
    "scores) for research on medical-imaging methods: linear probes, retrieval, label-efficiency and "
    "compute studies. It is **not a medical device** and **must not be used for clinical decisions**: "
    "not to diagnose, treat, triage, screen or reassure any patient."
)
OUT_OF_SCOPE = (
    "Any clinical or patient-facing use; use on images prepared differently from the preprocessing contract "
    "below; use on modalities, body parts, scanners, sites or populations not represented in the training data "
    "without a new evaluation."
)


def model_card(name: str, config: dict[str, Any], metadata: dict[str, Any], run: RunArtifacts, data: DataFacts) -> str:
    """The card as Markdown text."""
    parts = [
        f"# Model card: {name}",
        "> **Research use only. Not for clinical decisions.** Numbers below describe one test set; they do not "
        "show that the model is safe or effective for patient care.",
        _details(config, run),
        "## Intended use\n\n" + INTENDED_USE,
        "## Out-of-scope use\n\n" + OUT_OF_SCOPE,
        _training_data(data),
        _preprocessing(config),
        _evaluation(run),
        _compute(run),
        _limitations(config, run, data),
        _how_to_load(config),
        _files(metadata),
    ]
    return "\n\n".join(parts).rstrip() + "\n"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _details(config: dict[str, Any], run: RunArtifacts) -> str:
    spec, task, source = config.get("model", {}), config.get("task"), config.get("source_run", {})
    rows = [
        ["Architecture", f"timm `{spec.get('name')}`"],
        [
            "Parameters",
            f"{config.get('n_parameters'):,}" if isinstance(config.get("n_parameters"), int) else "not recorded",
        ],
        ["Embedding", f"{config.get('embed_dim')} values, pooling `{config.get('pooling')}`"],
        [
            "Output",
            f"{task['type']} head, {task['num_classes']} outputs ({task['activation']})" if task else "embeddings only",
        ],
        ["Trained by", f"greenfm `{source.get('method') or 'unknown method'}`"],
        ["Initial weights", _init(run)],
        ["Weights taken from", f"`{source.get('weights')}`" + (" (LoRA merged)" if source.get("lora_merged") else "")],
        ["greenfm version", config.get("greenfm_version", "not recorded")],
    ]
    return "## Model details\n\n" + _table(["Property", "Value"], rows)


def _init_weights(run: RunArtifacts) -> dict[str, Any] | None:
    """Where the backbone's initial weights came from, as the run or the method's export recorded it."""
    flags = run.record.get("flags") if isinstance(run.record.get("flags"), dict) else {}
    for value in (
        run.record.get("init_weights"),
        flags.get("init_weights"),
        (run.export_config or {}).get("init_weights"),
    ):
        if isinstance(value, dict):
            return value
    return None


def _init(run: RunArtifacts) -> str:
    source = _init_weights(run)
    if isinstance(source, dict):
        kind = source.get("kind")
        where = source.get("name") or source.get("path") or ""
        return f"{kind} {where}".strip()
    return "not recorded"


def _training_data(data: DataFacts) -> str:
    rows = [["Manifest hash", f"`{data.manifest_hash}`" if data.manifest_hash else "not recorded"]]
    if data.manifest_path is not None:
        rows.append(
            [
                "Manifest file",
                f"`{data.manifest_path.name}`" + (f" ({data.manifest_problem})" if data.manifest_problem else ""),
            ]
        )
    if data.rows is not None:
        rows += [["Images", f"{data.rows:,}"], ["Patients", f"{data.patients:,}"]]
    for split, (images, patients) in data.splits.items():
        rows.append([f"Split `{split}`", f"{images:,} images, {patients:,} patients"])
    if data.training_images is not None:
        rows.append(["Training set of the run (images)", f"{data.training_images:,}"])
    text = "## Training data\n\n" + _table(["Property", "Value"], rows)
    if data.findings:
        labels = [[n, p, q, u, k, f"{100 * p / (p + q):.1f}%" if p + q else "-"] for n, p, q, u, k in data.findings]
        text += "\n\nLabels in the manifest:\n\n" + _table(
            ["Finding", "Positive", "Negative", "Uncertain", "Unknown", "Prevalence"], labels
        )
    return text


def _preprocessing(config: dict[str, Any]) -> str:
    contract = config.get("contract") or {}
    rows = [[f"`{k}`", json.dumps(v)] for k, v in contract.items()]
    return (
        "## Preprocessing contract\n\nInputs must be prepared exactly like this (also in `contract.json`; "
        "`load_exported` refuses a different one):\n\n" + _table(["Field", "Value"], rows) + _steps(contract)
    )


def _steps(contract: dict[str, Any]) -> str:
    """The contract as code a user can follow; the reference embeddings come from exactly these steps."""
    if not contract or contract.get("bit_depth", 8) != 8 or contract.get("windows"):
        return ""  # 16-bit or windowed contracts: greenfm.export.load_exported(...).preprocess_file
    size = list(contract.get("size") or [224, 224])
    interp = "BICUBIC" if contract.get("interpolation") == "bicubic" else "BILINEAR"
    antialias = bool(contract.get("antialias", True))
    resize = {
        "squash": f"x = F.resize(x, {size}, interpolation={interp}, antialias={antialias})",
        "shorter-center-crop": (f"s = max({size[0]} / x.shape[-2], {size[1]} / x.shape[-1])\n"
                                f"x = F.resize(x, [max({size[0]}, round(x.shape[-2] * s)), max({size[1]}, "
                                f"round(x.shape[-1] * s))], interpolation={interp}, antialias={antialias})\n"
                                f"x = F.center_crop(x, {size})"),  # fmt: skip
        "letterbox": (f"s = min({size[0]} / x.shape[-2], {size[1]} / x.shape[-1])\n"
                      f"x = F.resize(x, [max(1, round(x.shape[-2] * s)), max(1, round(x.shape[-1] * s))], "
                      f"interpolation={interp}, antialias={antialias})\n"
                      f"top, left = ({size[0]} - x.shape[-2]) // 2, ({size[1]} - x.shape[-1]) // 2\n"
                      f"x = F.pad(x, [left, top, {size[1]} - x.shape[-1] - left, {size[0]} - x.shape[-2] - top])"),
    }[contract.get("resize", "squash")]  # fmt: skip
    channels = int(contract.get("channels", 3))
    mean, std = contract.get("mean"), contract.get("std")
    return f"""

For an 8-bit image, step by step (the reference embeddings are made exactly so). Resize the
**uint8** pixels and keep them uint8: resizing floats and rounding later gives other pixels
(embeddings off by about 3e-3, beyond the reference tolerance). On uint8 input torchvision's
antialiased resize matches PIL's `Image.resize`.

```python
import numpy as np, torch
from PIL import Image
from torchvision.transforms.v2 import functional as F
from torchvision.transforms import InterpolationMode
BILINEAR, BICUBIC = InterpolationMode.BILINEAR, InterpolationMode.BICUBIC

a = np.array(Image.open("image.png"))              # uint8, (H, W) grey or (H, W, 3)
x = torch.from_numpy(a[None] if a.ndim == 2 else a[..., :3].transpose(2, 0, 1).copy())   # uint8 (C, H, W)
{resize}
x = x.float() / 255                                 # [0, 1]
x = x.expand({channels}, -1, -1) if x.shape[0] == 1 else x   # grey -> {channels} channels
x = (x - torch.tensor({mean}).view(-1, 1, 1)) / torch.tensor({std}).view(-1, 1, 1)
x = x[None]                                         # (1, {channels}, {size[0]}, {size[1]}) float32
```"""


def _evaluation(run: RunArtifacts) -> str:
    ev = run.evaluation
    if ev is None:
        return "## Evaluation\n\nThis run holds no test evaluation (no `finetune.json` or `probe.json`)."
    rows = []
    for f in ev.get("findings") or []:
        prevalence = f"{100 * f['prevalence']:.1f}%" if isinstance(f.get("prevalence"), (int, float)) else "-"
        if f.get("skipped"):
            rows.append([f.get("name"), f.get("n"), prevalence, f"skipped: {f['skipped']}", "-"])
        else:
            rows.append(
                [
                    f.get("name"),
                    f.get("n"),
                    prevalence,
                    _ci(f.get("auroc"), f.get("auroc_ci")),
                    _ci(f.get("auprc"), f.get("auprc_ci")),
                ]
            )
    rows.append(
        [
            f"**macro** ({ev.get('n_evaluable')}/{ev.get('n_classes')} scored)",
            ev.get("n_images", ""),
            "",
            _ci(ev.get("macro_auroc"), ev.get("macro_auroc_ci")),
            _ci(ev.get("macro_auprc"), ev.get("macro_auprc_ci")),
        ]
    )
    boot = ev.get("bootstrap") if isinstance(ev.get("bootstrap"), dict) else None
    how = (
        f"95% intervals from {boot.get('n_resamples')} {boot.get('cluster')}-level bootstrap resamples of the test set."
        if boot
        else "No confidence intervals were computed."
    )
    source = run.evaluation_source
    return f"## Evaluation\n\nTest split, from `{source}.json`. {how}\n\n" + _table(
        ["Finding", "Test images", "Prevalence", "AUROC (95% CI)", "AUPRC (95% CI)"], rows
    )


def _ci(value: Any, ci: Any) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci):
        return f"{value:.3f} ({ci[0]:.3f}-{ci[1]:.3f})"
    return f"{value:.3f}"


def _compute(run: RunArtifacts) -> str:
    items = green_card(run.compute, n_parameters=run.n_parameters, record=run.record)
    rows = [[i.label, i.value, i.detail] for i in items]
    lead = "" if run.compute is not None else "This run holds no compute ledger (`compute.json`).\n\n"
    return (
        "## Compute and carbon\n\n"
        + lead
        + _table(["Quantity", "Value", "Notes"], rows)
        + ('\n\n"unavailable" means the quantity could not be measured on this machine; it is never 0.')
    )


def _limitations(config: dict[str, Any], run: RunArtifacts, data: DataFacts) -> str:
    items = [
        "Confidence intervals reflect test-set sampling only; retraining with another seed varies results further.",
        "Performance on images from other sites, scanners, protocols or populations is unknown until measured.",
        "Labels may come from automated report labelling and carry its errors.",
    ]
    flags = run.record.get("flags") if isinstance(run.record.get("flags"), dict) else {}
    if flags.get("no_pretrained_init") or (_init_weights(run) or {}).get("kind") == "random":
        items.insert(
            0,
            "**Initialised from random weights**: a self-distillation target from a random network is "
            "degenerate; this model is for software tests only.",
        )
    if data.manifest_hash is None:
        items.append("The run does not record which data it was trained on (no manifest hash).")
    if run.evaluation is None:
        items.append("The export has not been evaluated on a held-out test set in this run.")
    for warning in run.record.get("warnings") or []:
        items.append(str(warning))
    return "## Limitations\n\n" + "\n".join(f"- {item}" for item in items)


def _how_to_load(config: dict[str, Any]) -> str:
    spec = config.get("model", {})
    kwargs = json.dumps(spec.get("kwargs", {}), indent=None)
    recipe = config.get("pooling_recipe", "")
    return f"""## How to load

With plain timm and safetensors (no greenfm needed):

```python
import json, timm, torch
from safetensors.torch import load_file

cfg = json.load(open("config.json"))
model = timm.create_model(cfg["model"]["name"], pretrained=False, **cfg["model"]["kwargs"])
model.load_state_dict(load_file("model.safetensors"))
model.eval()
# model name: {spec.get("name")}
# kwargs: {kwargs}
with torch.no_grad():
    embedding = {recipe}   # x: (B, C, H, W) prepared per contract.json
```

With greenfm, which also checks the contract, the checksums and the reference embeddings:

```python
from greenfm.export import load_exported

model = load_exported("MODEL_DIR")
embedding = model.embed_file("image.png")   # decodes and preprocesses per contract.json
```"""


def _files(metadata: dict[str, Any]) -> str:
    files = metadata.get("files") or {}
    rows = [[f"`{name}`", f"`{digest}`"] for name, digest in files.items()]
    return "## Files\n\n" + _table(["File", "sha256"], rows)
