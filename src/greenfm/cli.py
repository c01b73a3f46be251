"""The ``greenfm`` command line: a thin typer wrapper over ``greenfm.api``.

Each command calls the API function of the same name with the same arguments.
User errors (``GreenfmError``) print one line and exit with status 2.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import typer

from greenfm.errors import GreenfmError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Build, adapt and evaluate medical-imaging foundation models on modest hardware.")
data_app = typer.Typer(no_args_is_help=True, help="Import, check, cache and split data; generate phantoms.")
evaluate_app = typer.Typer(no_args_is_help=True, help="Evaluation protocols.")
app.add_typer(data_app, name="data")
app.add_typer(evaluate_app, name="evaluate")

SKIP_BAD = typer.Option(False, "--skip-bad", help="Skip unusable rows or files and count them instead of stopping.")


def _api():
    from greenfm import api  # imported lazily so that `greenfm --help` stays fast

    return api


# ----------------------------------------------------------------------------- data


@data_app.command("phantoms")
def data_phantoms(
    out: Path = typer.Option(..., "--out", help="Folder to write images and manifest.csv into."),
    kind: str = typer.Option("cxr", help="cxr (2D chest radiographs) or ct (3D chest CT in HU)."),
    patients: int = typer.Option(200, help="Number of synthetic patients (1-4 studies each)."),
    size: Optional[int] = typer.Option(None, help="Image side in pixels (cxr, default 128) or in-plane voxels (ct, default 96)."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives identical files."),
    site: str = typer.Option("A", help="Acquisition profile: A outpatient clinic, B wards/ICU bedside AP, C screening centre."),
    images_per_patient: Tuple[int, int] = typer.Option((1, 4), help="Minimum and maximum studies per patient."),
    unmentioned: str = typer.Option("absent", help="Label of findings a report does not mention: absent (0) or missing (empty)."),
    workers: Optional[int] = typer.Option(None, help="Processes drawing images (default: by size of the job)."),
) -> None:
    """Generate synthetic phantoms with reports and labels (greenfm's embedded default data)."""
    _api().data_phantoms(out=out, kind=kind, patients=patients, size=size, seed=seed, site=site,
                         images_per_patient=images_per_patient, unmentioned=unmentioned, workers=workers)


@data_app.command("import")
def data_import(
    source: Path = typer.Argument(..., help="A class-per-folder tree, a DICOM folder, a NIfTI folder or a MedMNIST .npz."),
    out: Path = typer.Option(..., "--out", help="Manifest to write (CSV or Parquet)."),
    kind: str = typer.Option("auto", help="auto, folders, dicom, nifti or medmnist."),
    label_names: Optional[str] = typer.Option(None, help="Comma-separated class names (MedMNIST; binary: the positive class)."),
    pattern: Optional[str] = typer.Option(None, help="Glob restricting the files of folder kinds, e.g. '**/*.png'."),
    overwrite: bool = typer.Option(False, help="Replace a manifest (and images) this importer wrote before."),
    skip_bad: bool = SKIP_BAD,
) -> None:
    """Turn a folder or archive of images into a greenfm manifest (the source is never written)."""
    names = [n.strip() for n in label_names.split(",")] if label_names else None
    _api().data_import(source, out=out, kind=kind, skip_bad=skip_bad, label_names=names, pattern=pattern, overwrite=overwrite)


@data_app.command("check")
def data_check(
    data: Path = typer.Argument(..., help="Manifest to validate."),
    skip_bad: bool = SKIP_BAD,
) -> None:
    """Validate a manifest and print a summary of its rows, patients, splits and labels."""
    _api().data_check(data, skip_bad=skip_bad)


@data_app.command("split")
def data_split(
    data: Path = typer.Option(..., "--data", help="Input manifest (never overwritten)."),
    out: Path = typer.Option(..., "--out", help="New manifest with a patient-level 'split' column."),
    val: float = typer.Option(0.1, help="Fraction of patients for validation."),
    test: float = typer.Option(0.2, help="Fraction of patients for test."),
    seed: int = typer.Option(0, help="Random seed."),
    stratify: bool = typer.Option(True, help="Stratify patients by their finding pattern."),
    skip_bad: bool = SKIP_BAD,
) -> None:
    """Make patient-grouped train/val/test splits, stratified by label where possible."""
    _api().data_split(data=data, out=out, val=val, test=test, seed=seed, stratify=stratify, skip_bad=skip_bad)


@data_app.command("cache")
def data_cache(
    data: Path = typer.Option(..., "--data", help="Manifest of the images to cache."),
    out: Path = typer.Option(..., "--out", help="Cache root folder; one sub-folder per manifest hash and contract."),
    contract: str = typer.Option("rfg", help="Preprocessing contract preset or a contract JSON file."),
    size: Optional[int] = typer.Option(None, help="Override the contract's image side."),
    workers: Optional[int] = typer.Option(None, help="Decoding processes (default: usable cores)."),
    force: bool = typer.Option(False, help="Rebuild even when a complete cache exists."),
    skip_bad: bool = SKIP_BAD,
) -> None:
    """Decode and resize every image once into a memory-mapped store."""
    _api().data_cache(data=data, out=out, contract=contract, size=size, workers=workers, force=force, skip_bad=skip_bad)


# ----------------------------------------------------------------------------- pretrain, embed, probe


@app.command("pretrain")
def pretrain(
    data: Optional[Path] = typer.Option(None, "--data", help="Manifest of the training images."),
    out: Path = typer.Option(..., "--out", help="Run folder (with --resume: the run to continue)."),
    recipe: Optional[str] = typer.Option(None, help="Pretraining recipe [default: token-reconstruction]."),
    backbone: Optional[str] = typer.Option(None, help="Encoder architecture [default: vit_small_patch14_reg4_dinov2]."),
    init: Optional[str] = typer.Option(None, "--init", "--init-from", help="Starting weights: random, a weights file, a greenfm run/export folder, or a hub name (a new run from weights only)."),
    img_size: Optional[int] = typer.Option(None, help="Input side in pixels [default: 392]."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file with any other option (method:, train: sections)."),
    epochs: Optional[int] = typer.Option(None, help="Epochs [recipe default]."),
    max_steps: Optional[int] = typer.Option(None, help="Stop after this many optimiser steps."),
    batch_size: Optional[int] = typer.Option(None, help="Global batch size."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate."),
    devices: Optional[int] = typer.Option(None, help="Devices (processes) per node for DDP."),
    num_nodes: Optional[int] = typer.Option(None, help="Machines (with torchrun or SLURM)."),
    precision: Optional[str] = typer.Option(None, help="auto, 32, bf16-mixed or 16-mixed."),
    num_workers: Optional[int] = typer.Option(None, help="DataLoader workers per device."),
    seed: Optional[int] = typer.Option(None, help="Random seed."),
    cache: Optional[Path] = typer.Option(None, help="Decode-once cache root."),
    skip_bad: bool = SKIP_BAD,
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in --out exactly."),
) -> None:
    """Continual pretraining of an image encoder (Token Reconstruction by default)."""
    _api().pretrain(data=data, out=out, recipe=recipe, backbone=backbone, init=init, img_size=img_size, config=config,
                    epochs=epochs, max_steps=max_steps, batch_size=batch_size, lr=lr, devices=devices,
                    num_nodes=num_nodes, precision=precision, num_workers=num_workers, seed=seed, cache=cache, skip_bad=skip_bad, resume=resume)


@app.command("embed")
def embed(
    model: str = typer.Option(..., "--model", help="Run folder, export folder, weights file or hub name."),
    data: Path = typer.Option(..., "--data", help="Manifest of the images to embed."),
    out: Path = typer.Option(..., "--out", help="Embeddings Parquet file to write."),
    backbone: Optional[str] = typer.Option(None, help="Architecture, when --model is a weights file or hub name."),
    img_size: Optional[int] = typer.Option(None, help="Input side, when --model is a weights file or hub name."),
    pool: Optional[str] = typer.Option(None, help="mean-all-tokens (default for ViTs), mean-patch-tokens or cls."),
    contract: Optional[str] = typer.Option(None, help="Preprocessing contract (default: the model's own)."),
    batch_size: int = typer.Option(64, help="Images per forward pass."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    precision: str = typer.Option("auto", help="auto (bf16 on CUDA, fp32 on CPU), 32, bf16 or 16."),
    cache: Optional[Path] = typer.Option(None, help="Decode-once cache root."),
    num_workers: int = typer.Option(0, help="DataLoader workers."),
    skip_bad: bool = SKIP_BAD,
) -> None:
    """Embed every image of a manifest into a Parquet file (id, patient_id, path, vector)."""
    _api().embed(model=model, data=data, out=out, backbone=backbone, img_size=img_size, pool=pool, contract=contract,
                 batch_size=batch_size, device=device, precision=precision, cache=cache, num_workers=num_workers,
                 skip_bad=skip_bad)


@app.command("probe")
def probe(
    embeddings: Path = typer.Option(..., "--embeddings", help="Embeddings Parquet file from `greenfm embed`."),
    labels: Path = typer.Option(..., "--labels", help="Manifest with split and finding columns."),
    protocol: str = typer.Option("retfound-green", help="retfound-green (C=1, no tuning) or tuned (C chosen on val)."),
    findings: Optional[List[str]] = typer.Option(None, "--finding", help="Finding column to probe (repeatable; default all)."),
    task: str = typer.Option("auto", help="auto, binary, multiclass or multilabel."),
    bootstrap: int = typer.Option(1000, help="Patient-bootstrap resamples for the 95% CIs (0: none)."),
    seed: int = typer.Option(0, help="Seed of the bootstrap."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for probe.json and predictions.parquet."),
) -> None:
    """Linear probes on embeddings: test AUROC/AUPRC per finding with patient-bootstrap CIs."""
    _api().probe(embeddings=embeddings, labels=labels, protocol=protocol, findings=findings, task=task,
                 bootstrap=bootstrap, seed=seed, out=out)


# ----------------------------------------------------------------------------- label


@app.command("label")
def label(
    data: Path = typer.Option(..., "--data", help="Manifest with a 'report' column (never overwritten)."),
    out: Path = typer.Option(..., "--out", help="New manifest to write, with one column per finding."),
    vocab: str = typer.Option("chexpert14", help="chexpert14, nih14, ct-rate-18, merlin-30, phantom-cxr5 or a YAML file."),
    engine: str = typer.Option("rules", help="rules (offline, default) or llm (an OpenAI-compatible endpoint you name)."),
    compare: bool = typer.Option(False, "--compare", help="Score the labeler against label columns already in the manifest."),
    llm_base_url: Optional[str] = typer.Option(None, help="LLM endpoint base URL (or GREENFM_LLM_BASE_URL); reports go nowhere else."),
    llm_model: Optional[str] = typer.Option(None, help="LLM model name (or GREENFM_LLM_MODEL)."),
    llm_api_key: Optional[str] = typer.Option(None, help="API key; prefer the GREENFM_LLM_API_KEY environment variable."),
    concurrency: int = typer.Option(24, help="Concurrent LLM requests."),
    cache: Optional[Path] = typer.Option(None, help="LLM answer cache file (reruns cost nothing)."),
    overwrite: bool = typer.Option(False, help="Replace an existing --out."),
) -> None:
    """Turn free-text reports into structured labels (1 / 0 / -1 / blank) with evidence."""
    _api().label(data=data, out=out, vocab=vocab, engine=engine, compare=compare, llm_base_url=llm_base_url,
                 llm_model=llm_model, llm_api_key=llm_api_key, concurrency=concurrency, cache=cache, overwrite=overwrite)


# ----------------------------------------------------------------------------- finetune, label efficiency


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _names(text: Optional[str]) -> Optional[list[str]]:
    return [v.strip() for v in text.split(",") if v.strip()] if text else None


@app.command("finetune")
def finetune(
    model: str = typer.Option(..., "--model", help="Pretrained run folder, export folder, weights file or hub name."),
    data: Path = typer.Option(..., "--data", help="Manifest with train/val/test splits and finding columns."),
    out: Path = typer.Option(..., "--out", help="Run folder."),
    mode: str = typer.Option("lora", help="linear (head on frozen features), lora or full."),
    preset: str = typer.Option("med-peft", help="LoRA preset: med-peft (Q and V of the fused qkv) or broad (qkv, proj, mlp)."),
    rank: int = typer.Option(8, help="LoRA rank r."),
    alpha: float = typer.Option(32, help="LoRA alpha (scaling alpha / r)."),
    lora_dropout: float = typer.Option(0.1, help="Dropout on the LoRA input."),
    layer_decay: float = typer.Option(0.65, help="Layer-wise learning-rate decay (1: off)."),
    task: str = typer.Option("auto", help="auto, multilabel (BCE) or multiclass (cross-entropy)."),
    findings: Optional[str] = typer.Option(None, help="Comma-separated finding columns (default: all)."),
    pos_weight: Optional[str] = typer.Option(None, help="'balanced' for BCE pos_weight from train prevalence."),
    balanced: bool = typer.Option(False, "--balanced-sampling", help="Sample label patterns evenly."),
    label_fraction: float = typer.Option(1.0, help="Fraction of the train split used (nested, patient-grouped)."),
    fraction_seed: int = typer.Option(0, help="Seed of the label-fraction draw."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML of training options."),
    epochs: Optional[int] = typer.Option(None, help="Epochs."),
    max_steps: Optional[int] = typer.Option(None, help="Stop after this many optimiser steps."),
    batch_size: Optional[int] = typer.Option(None, help="Global batch size."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate."),
    precision: Optional[str] = typer.Option(None, help="auto, 32, bf16-mixed or 16-mixed."),
    devices: Optional[int] = typer.Option(None, help="Devices for DDP."),
    seed: Optional[int] = typer.Option(None, help="Training seed."),
    contract: Optional[str] = typer.Option(None, help="Preprocessing contract (default: the model's own)."),
    augment: str = typer.Option("auto", help="Training augmentation: auto, rfg, cxr, medpeft or none."),
    backbone: Optional[str] = typer.Option(None, help="Architecture, when --model is a weights file or hub name."),
    img_size: Optional[int] = typer.Option(None, help="Input side, when --model is a weights file or hub name."),
    bootstrap: int = typer.Option(1000, help="Patient-bootstrap resamples for the test CIs."),
    cache: Optional[Path] = typer.Option(None, help="Decode-once cache root."),
    skip_bad: bool = SKIP_BAD,
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in --out."),
) -> None:
    """Fine-tune with LoRA, a linear head or all weights; select by validation AUROC, test once."""
    _api().finetune(model=model, data=data, out=out, mode=mode, preset=preset, rank=rank, alpha=alpha,
                    lora_dropout=lora_dropout, layer_decay=layer_decay, task=task, findings=_names(findings),
                    pos_weight=pos_weight, balanced=balanced, label_fraction=label_fraction,
                    fraction_seed=fraction_seed, config=config, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
                    lr=lr, precision=precision, devices=devices, seed=seed, contract=contract, augment=augment, backbone=backbone, img_size=img_size,
                    bootstrap=bootstrap, cache=cache, skip_bad=skip_bad, resume=resume)


@evaluate_app.command("label-efficiency")
def evaluate_label_efficiency(
    model: str = typer.Option(..., "--model", help="Pretrained run folder, export folder, weights file or hub name."),
    data: Path = typer.Option(..., "--data", help="Manifest with train/val/test splits and finding columns."),
    out: Path = typer.Option(..., "--out", help="Results folder (resumable: finished cells are kept)."),
    fractions: str = typer.Option("0.01,0.1,1.0", help="Comma-separated label fractions of the train split."),
    seeds: str = typer.Option("0,1,2", help="Comma-separated seeds (fraction draw and training)."),
    modes: str = typer.Option("linear,lora,full", help="Comma-separated modes."),
    linear_via: str = typer.Option("probe", help="linear mode as a logistic-regression probe on embeddings, or finetune."),
    findings: Optional[str] = typer.Option(None, help="Comma-separated finding columns (default: all)."),
    task: str = typer.Option("auto", help="auto, multilabel or multiclass."),
    preset: str = typer.Option("med-peft", help="LoRA preset: med-peft or broad."),
    rank: int = typer.Option(8, help="LoRA rank."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML of training options for every fine-tune."),
    epochs: Optional[int] = typer.Option(None, help="Epochs per fine-tuning cell."),
    max_steps: Optional[int] = typer.Option(None, help="Optimiser steps per fine-tuning cell."),
    precision: Optional[str] = typer.Option(None, help="auto, 32, bf16-mixed or 16-mixed."),
    devices: Optional[int] = typer.Option(None, help="Devices for DDP."),
    pool: Optional[str] = typer.Option(None, help="Pooling of the linear probe's embeddings."),
    batch_size: Optional[int] = typer.Option(None, help="Global batch size."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate."),
    bootstrap: int = typer.Option(1000, help="Patient-bootstrap resamples for the test CIs."),
    backbone: Optional[str] = typer.Option(None, help="Architecture, when --model is a weights file or hub name."),
    img_size: Optional[int] = typer.Option(None, help="Input side, when --model is a weights file or hub name."),
    cache: Optional[Path] = typer.Option(None, help="Decode-once cache root."),
    skip_bad: bool = SKIP_BAD,
) -> None:
    """Label-efficiency curves (linear vs LoRA vs full at 1/10/100% labels) with CIs, as CSV, JSON and a plot."""
    _api().evaluate_label_efficiency(model=model, data=data, out=out, fractions=_floats(fractions), seeds=_ints(seeds),
                                     modes=_names(modes), linear_via=linear_via, findings=_names(findings), task=task,
                                     preset=preset, rank=rank, config=config, epochs=epochs, max_steps=max_steps,
                                     precision=precision, devices=devices, pool=pool,
                                     batch_size=batch_size, lr=lr, bootstrap=bootstrap,
                                     backbone=backbone, img_size=img_size, cache=cache, skip_bad=skip_bad)


@evaluate_app.command("compare")
def evaluate_compare(
    study_a: Path = typer.Argument(..., help="Label-efficiency study folder A (e.g. the starting model)."),
    study_b: Path = typer.Argument(..., help="Label-efficiency study folder B (e.g. the pretrained model)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for study_comparison.json and .csv."),
    name_a: Optional[str] = typer.Option(None, help="Name of A in the table [default: its folder name]."),
    name_b: Optional[str] = typer.Option(None, help="Name of B in the table [default: its folder name]."),
    bootstrap: int = typer.Option(1000, min=1, help="Shared patient-bootstrap resamples."),
    seed: int = typer.Option(0, help="Seed of the resamples."),
) -> None:
    """Is B better than A? Two studies of one manifest paired cell by cell, with paired 95% CIs of B - A."""
    _api().compare_studies(study_a, study_b, out=out, name_a=name_a, name_b=name_b, bootstrap=bootstrap, seed=seed)


# ----------------------------------------------------------------------------- report, export


@app.command("report")
def report(
    run_dirs: List[Path] = typer.Argument(..., help="Run folders (pretraining, probes, fine-tuning, label efficiency)."),
    out: Path = typer.Option(..., "--out", help="HTML file to write."),
    title: Optional[str] = typer.Option(None, help="Report title."),
) -> None:
    """Write one self-contained HTML report a clinician can open (curves, ROC, CIs, green card)."""
    _api().report(run_dirs, out=out, title=title)


@app.command("export")
def export(
    run_dir: Path = typer.Argument(..., help="A pretraining or fine-tuning run folder."),
    out: Path = typer.Option(..., "--out", help="Model folder to write."),
    fixture: Optional[Path] = typer.Option(None, help="Image for the reference embeddings (default: a built-in synthetic one)."),
    contract: Optional[str] = typer.Option(None, help="Preprocessing contract preset or JSON (default: the run's)."),
    pool: Optional[str] = typer.Option(None, help="Pooling recorded with the export."),
    overwrite: bool = typer.Option(False, help="Replace an existing export folder."),
) -> None:
    """Export weights, config, contract, model card and reference embeddings (loading reproduces them exactly)."""
    _api().export(run_dir, out=out, fixture=fixture, contract=contract, pool=pool, overwrite=overwrite)


# ----------------------------------------------------------------------------- demo


@app.command("demo")
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Folder for the demo's data, runs and report."),
    quick: bool = typer.Option(False, help="A much shorter run (for tests)."),
) -> None:
    """Run the whole pipeline on the embedded phantom data."""
    _api().demo(out=out, quick=quick)


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point of the ``greenfm`` console script."""
    import click

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        code = app(args=argv, standalone_mode=False)
    except GreenfmError as err:
        typer.secho(f"error: {err}", err=True, fg="red")
        sys.exit(2)
    except click.exceptions.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted; finished work is kept (resume with --resume where the verb offers it)", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
