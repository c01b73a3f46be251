"""The ``greenfm`` command line: a thin typer wrapper over ``greenfm.api``.

Each command calls the API function of the same name with the same arguments.
Verbs declared with ``@verb`` in ``greenfm.api`` (pretrain, finetune, evaluate
label-efficiency, ...) get their options generated from their typed config
(``greenfm.cli_options``); the others are written out below. User errors
(``GreenfmError``) print one line and exit with status 2. Nothing here imports
torch: a verb checks its options and paths before its heavy imports.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import click
import typer
from typer.core import TyperGroup

from greenfm import api  # light: the verbs' heavy modules are imported when they run
from greenfm.cli_options import VerbCommand
from greenfm.errors import GreenfmError
from greenfm.options import VERBS, Verb


class VerbGroup(TyperGroup):
    """A command group that also holds the verbs declared in ``greenfm.api`` with ``@verb``."""

    words: tuple[str, ...] = ()

    def _verbs(self) -> dict[str, Verb]:
        n = len(self.words) + 1
        return {path[-1]: verb for path, verb in VERBS.items() if len(path) == n and path[:-1] == self.words}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._verbs()})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        verb = self._verbs().get(name)
        return VerbCommand(name, verb) if verb is not None else super().get_command(ctx, name)


def verb_group(*words: str) -> type[VerbGroup]:
    return type("VerbGroup", (VerbGroup,), {"words": words})


app = typer.Typer(cls=verb_group(), no_args_is_help=True, add_completion=False,
                  help="Build, adapt and evaluate medical-imaging foundation models on modest hardware.")
data_app = typer.Typer(cls=verb_group("data"), no_args_is_help=True,
                       help="Import, check, cache and split data; generate phantoms.")
evaluate_app = typer.Typer(cls=verb_group("evaluate"), no_args_is_help=True, help="Evaluation protocols.")
app.add_typer(data_app, name="data")
app.add_typer(evaluate_app, name="evaluate")

CONTRACT_PRESETS = "rfg, imagenet, cxr-medpeft, clip, ct-chest, ct-abdomen, mri"  # greenfm.data.contract.PRESETS (that module imports torch)
SKIP_BAD = typer.Option(False, "--skip-bad", help="Skip unusable rows or files and count them instead of stopping.")


def _api():
    return api


# ----------------------------------------------------------------------------- data


@data_app.command("phantoms")
def data_phantoms(
    out: Path = typer.Option(..., "--out", help="Folder to write images and manifest.csv into."),
    kind: str = typer.Option("cxr", help="cxr (2D chest radiographs) or ct (3D chest CT in HU)."),
    patients: int = typer.Option(200, help="Number of synthetic patients (1-4 studies each)."),
    size: Optional[int] = typer.Option(None, help="Image side in pixels (cxr, default 128) or in-plane voxels (ct, default 96; the chest and its lesions scale with it)."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives identical files."),
    site: str = typer.Option("A", help="Acquisition profile: A outpatient clinic, B wards/ICU bedside AP, C screening centre."),
    images_per_patient: Tuple[int, int] = typer.Option((1, 4), help="Minimum and maximum studies per patient."),
    unmentioned: str = typer.Option("absent", help="Label of findings a report does not mention: absent (0) or missing (empty)."),
    workers: Optional[int] = typer.Option(None, help="Processes drawing images (default: by size of the job)."),
    reader_error: float = typer.Option(0.03, help="Chance per image and finding that the report's label disagrees with the pixel truth (missed, hedged or false finding); 0 = labels equal the truth."),
) -> None:
    """Generate synthetic phantoms with reports and labels (greenfm's embedded default data)."""
    _api().data_phantoms(out=out, kind=kind, patients=patients, size=size, seed=seed, site=site,
                         images_per_patient=images_per_patient, unmentioned=unmentioned, workers=workers, reader_error=reader_error)


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
    val: float = typer.Option(0.1, help="Share of the images for validation, in whole patients (met to within one patient)."),
    test: float = typer.Option(0.2, help="Share of the images for test, in whole patients (met to within one patient)."),
    seed: int = typer.Option(0, help="Random seed."),
    stratify: bool = typer.Option(True, help="Stratify patients by their finding pattern."),
    keep_test: bool = typer.Option(False, "--keep-test", help="Keep the input's test split; carve --val out of its other rows only (--test is then unused)."),
    skip_bad: bool = SKIP_BAD,
) -> None:
    """Make patient-grouped train/val/test splits, stratified by label where possible.

    An existing split column is replaced (the command says how many rows moved) unless --keep-test.
    """
    _api().data_split(data=data, out=out, val=val, test=test, seed=seed, stratify=stratify, keep_test=keep_test,
                      skip_bad=skip_bad)


@data_app.command("cache")
def data_cache(
    data: Path = typer.Option(..., "--data", help="Manifest of the images to cache."),
    out: Path = typer.Option(..., "--out", help="Cache root folder; one sub-folder per manifest hash and contract."),
    contract: str = typer.Option("rfg", help=f"Preprocessing contract: a preset ({CONTRACT_PRESETS}) or a JSON file."),
    size: Optional[int] = typer.Option(None, help="Override the contract's image side."),
    workers: Optional[int] = typer.Option(None, help="Decoding processes (default: usable cores)."),
    force: bool = typer.Option(False, help="Rebuild even when a complete cache exists."),
    skip_bad: bool = SKIP_BAD,
) -> None:
    """Decode and resize every image once into a memory-mapped store."""
    _api().data_cache(data=data, out=out, contract=contract, size=size, workers=workers, force=force, skip_bad=skip_bad)


# ----------------------------------------------------------------------------- embed, probe (pretrain: @verb in api)


@app.command("embed")
def embed(
    model: str = typer.Option(..., "--model", help="Run folder, export folder, weights file, hub name, or 'random' (a random init of --backbone, drawn from --seed: a baseline)."),
    data: Path = typer.Option(..., "--data", help="Manifest of the images to embed."),
    out: Path = typer.Option(..., "--out", help="Embeddings Parquet file to write."),
    backbone: Optional[str] = typer.Option(None, help="Architecture, when --model is a weights file, hub name or 'random' (a timm name, or vit_tiny_test: greenfm's 64 px test ViT)."),
    img_size: Optional[int] = typer.Option(None, help="Input side, when --model is a weights file or hub name."),
    pool: Optional[str] = typer.Option(None, help="mean-all-tokens (default for ViTs), mean-patch-tokens or cls."),
    contract: Optional[str] = typer.Option(None, help=f"Preprocessing contract: a preset ({CONTRACT_PRESETS}) or a JSON file (default: the model's own, else one for the data's modality, printed)."),
    modality: Optional[str] = typer.Option(None, help="The data's modality (xray, fundus, us, ct, mri, ...) where the manifest has no meta_modality; picks the default contract."),
    batch_size: int = typer.Option(64, help="Images per forward pass."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    precision: str = typer.Option("auto", help="auto (bf16 on CUDA, fp32 on CPU), 32, bf16 or 16."),
    cache: Optional[Path] = typer.Option(None, help="Decode-once cache root."),
    num_workers: Optional[int] = typer.Option(None, min=0, help="DataLoader workers (default: chosen from the machine: 0 on CPU, up to 4 on a GPU)."),
    threads: Optional[int] = typer.Option(None, min=1, help="torch threads (default: the cores other jobs leave free; never more than OMP_NUM_THREADS)."),
    seed: int = typer.Option(0, help="Seed of a random init (--model random)."),
    skip_bad: bool = SKIP_BAD,
) -> None:
    """Embed every image of a manifest into a Parquet file (id, patient_id, path, vector)."""
    _api().embed(model=model, data=data, out=out, backbone=backbone, img_size=img_size, pool=pool, contract=contract,
                 modality=modality, batch_size=batch_size, device=device, precision=precision, cache=cache, num_workers=num_workers,
                 threads=threads, seed=seed, skip_bad=skip_bad)


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


# ----------------------------------------------------------------------------- evaluate (finetune, label-efficiency: @verb in api)


@evaluate_app.command("compare")
def evaluate_compare(
    study_a: Path = typer.Argument(..., help="Label-efficiency study folder A (e.g. the starting model)."),
    study_b: Path = typer.Argument(..., help="Label-efficiency study folder B (e.g. the pretrained model)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for study_comparison.json and .csv."),
    name_a: Optional[str] = typer.Option(None, help="Name of A in the table (default: its folder name)."),
    name_b: Optional[str] = typer.Option(None, help="Name of B in the table (default: its folder name)."),
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
    before = list(logging.getLogger().handlers)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # the console handler made here: not records meant for
        if handler not in before:  # a run's train.log only (the ledger, already printed as a table)
            handler.addFilter(lambda record: not getattr(record, "file_only", False))
    try:
        code = app(args=argv, standalone_mode=False)
    except GreenfmError as err:
        typer.secho(f"error: {err}", err=True, fg="red")
        sys.exit(2)
    except (FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError) as err:
        typer.secho(f"error: {path_problem(err)}", err=True, fg="red")
        sys.exit(2)
    except ABORT:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except EXIT as err:
        sys.exit(err.exit_code)
    except CLICK_ERROR as err:
        err.show()
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted; finished work is kept (resume with --resume where the verb offers it)", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


def path_problem(err: OSError) -> str:
    """One line for a path the user named that cannot be used as given (a file where a folder goes, ...)."""
    where = err.filename or "a path"
    if isinstance(err, FileExistsError):
        return f"{where}: exists and is not a folder where greenfm writes one; name another --out or remove it"
    if isinstance(err, NotADirectoryError):
        return f"{where}: part of this path is a file, not a folder; name another --out"
    if isinstance(err, IsADirectoryError):
        return f"{where}: is a folder where greenfm expects a file"
    return f"{where}: permission denied ({err.strerror})"


def _both(name: str) -> tuple[type[BaseException], ...]:
    """An exception class of click and of typer, whose recent versions carry their own copy of click."""
    import typer.exceptions

    classes = [getattr(click.exceptions, name)]
    for module in (typer.exceptions, getattr(typer, "_click", None) and typer._click.exceptions):
        if module is not None and hasattr(module, name):
            classes.append(getattr(module, name))
    return tuple(dict.fromkeys(classes))


ABORT, EXIT, CLICK_ERROR = _both("Abort"), _both("Exit"), _both("ClickException")


if __name__ == "__main__":
    main()
