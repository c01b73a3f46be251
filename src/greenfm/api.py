"""greenfm's Python API: one function per CLI verb, with the same arguments.

Heavy modules are imported inside each function, so importing the API is cheap.
Verbs with a typed config (``@verb``) take its fields as keywords, plus ``config``
(a YAML file of them); ``inspect.signature`` and ``help`` list them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from rich.console import Console
from rich.table import Table

from greenfm.options import VerbRequest, verb

console = Console()


# ----------------------------------------------------------------------------- data


def data_check(data: str | Path, *, skip_bad: bool = False):
    """Validate a manifest and print a summary of rows, patients, splits and labels, and byte-identical files."""
    from greenfm.data.duplicates import identical_files
    from greenfm.data.manifest import load_manifest

    manifest = load_manifest(data, skip_bad=skip_bad)
    console.print(manifest_summary_table(manifest))
    duplicates = identical_files(manifest.table)
    console.print(duplicates.summary(manifest.table))
    return manifest


def data_phantoms(
    *,
    out: str | Path,
    kind: str = "cxr",
    patients: int = 200,
    size: int | None = None,
    seed: int = 0,
    site: str = "A",
    images_per_patient: tuple[int, int] = (1, 4),
    unmentioned: str = "absent",
    workers: int | None = None,
    reader_error: float = 0.03,
):
    """Generate synthetic phantoms (chest radiographs or chest CT) with reports and labels; returns the manifest path."""
    from greenfm.data.phantoms import generate_phantoms, summarize_phantoms

    path = generate_phantoms(out, kind=kind, n_patients=patients, size=size, seed=seed, site=site,
                             images_per_patient=tuple(images_per_patient), unmentioned=unmentioned, workers=workers,
                             reader_error=reader_error)
    console.print(str(summarize_phantoms(path)))
    console.print(f"manifest: {path}")
    return path


def data_import(source: str | Path, *, out: str | Path, kind: str = "auto", skip_bad: bool = False,
                label_names: list[str] | None = None, pattern: str | None = None, overwrite: bool = False):
    """Turn a class-per-folder tree, a DICOM folder, a NIfTI folder or a MedMNIST .npz into a manifest."""
    from greenfm.data.importers import import_source

    summary = import_source(source, out, kind=kind, skip_bad=skip_bad, label_names=label_names, pattern=pattern,
                            overwrite=overwrite)
    console.print(str(summary))
    return summary


def data_split(*, data: str | Path, out: str | Path, val: float = 0.1, test: float = 0.2, seed: int = 0,
               stratify: bool = True, keep_test: bool = False, skip_bad: bool = False):
    """Patient-grouped train/val/test splits (stratified by label where possible) into a new manifest.

    A manifest that already has a ``split`` column is re-split from scratch unless ``keep_test``
    (its test rows stay; val is carved out of the rest); either way the command says how many
    rows changed split.
    """
    from greenfm.data.manifest import load_manifest
    from greenfm.data.splits import split_manifest

    source = load_manifest(data, skip_bad=skip_bad)
    manifest = split_manifest(source, out, val=val, test=test, seed=seed, stratify=stratify, keep_test=keep_test)
    console.print(manifest_summary_table(manifest))
    if source.has_splits:
        before = source.table["split"].astype("string").fillna("none").to_numpy()
        after = manifest.table["split"].astype("string").to_numpy()
        moved = {name: int(((before == name) & (after != name)).sum()) for name in ("train", "val", "test")}
        had = {name: int((before == name).sum()) for name in ("train", "val", "test")}
        changes = ", ".join(f"{moved[n]:,} of {had[n]:,} {n}" for n in had if had[n])
        console.print(f"the input already had a split column; rows now in another split: {changes}"
                      + ("" if keep_test else " (--keep-test keeps the given test split and carves val out of the rest)"))
    console.print(f"wrote {out}")
    return manifest


def data_cache(*, data: str | Path, out: str | Path, contract: str = "rfg", size: int | None = None,
               skip_bad: bool = False, workers: int | None = None, force: bool = False):
    """Decode and resize every image once into a memory-mapped store keyed by manifest hash and contract."""
    from greenfm.data.cache import build_cache
    from greenfm.data.contract import get_contract
    from greenfm.data.manifest import load_manifest

    manifest = load_manifest(data, skip_bad=skip_bad)
    store = build_cache(manifest, get_contract(contract, size=size), out, skip_bad=skip_bad, workers=workers, force=force)
    skipped = store.meta.get("n_skipped", 0)
    console.print(f"cache: {len(store)} images at {store.path}" + (f"; skipped {skipped} bad image(s)" if skipped else ""))
    return store


@verb("greenfm.data.fundus:FundusPreprocessConfig", command="data preprocess")
def data_preprocess(
    request: VerbRequest,
    *,
    out: Annotated[str | Path, "New folder for images/, manifest.csv and preprocess.json (the source is never written)."],
    overwrite: Annotated[bool, "Replace an earlier output of this verb in --out."] = False,
):
    """Fundus preprocessing (METHODS 2.4): crop to the fundus, 2.5% margin, pad square, Lanczos to 1024 px.

    Writes new image files and a manifest pointing at them; returns the summary.
    """
    cfg = request.build()  # options and input paths are checked before the heavy imports
    from greenfm.data.fundus import preprocess_fundus

    summary = preprocess_fundus(cfg, out, overwrite=overwrite)
    console.print(str(summary))
    return summary


def manifest_summary_table(manifest, title: str | None = None) -> Table:
    """A rich table: one row per finding with prevalence, uncertain and unknown counts per split."""
    table = manifest.table
    splits = sorted(table["split"].dropna().unique()) if manifest.has_splits else []
    header = (
        f"{len(table)} rows, {table['patient_id'].nunique()} patients"
        + (f", splits: " + ", ".join(f"{s} {int((table['split'] == s).sum())}" for s in splits) if splits else "")
        + (f", {len(manifest.problems)} skipped" if manifest.problems else "")
        + f", manifest hash {manifest.hash}"
    )
    out = Table(title=title or header, caption=header if title else None)
    for col in ("finding", "positive", "negative", "uncertain", "unknown", "prevalence"):
        out.add_column(col, justify="left" if col == "finding" else "right")
    for finding in manifest.findings:
        values = table[finding]
        pos, neg = int((values == 1).sum()), int((values == 0).sum())
        unc, unk = int((values == -1).sum()), int(values.isna().sum())
        prevalence = pos / (pos + neg) if pos + neg else float("nan")
        out.add_row(finding, str(pos), str(neg), str(unc), str(unk), f"{prevalence:.3f}")
    return out


# ----------------------------------------------------------------------------- pretraining and embeddings


@verb("greenfm.workflows.pretrain_config:PretrainConfig", command="pretrain", aliases={"init": ("--init-from",)})
def pretrain(
    request: VerbRequest,
    *,
    out: Annotated[str | Path, "Run folder (with --resume: the run to continue)."],
    resume: Annotated[bool, "Continue the interrupted run in --out exactly, from its saved config."] = False,
):
    """Continual pretraining of an image encoder (default recipe: token-reconstruction); writes a run folder.

    Every ``PretrainConfig`` field is a keyword (``config`` names a YAML file of them, with
    ``method:`` and ``train:`` sections; explicit keywords override it). ``resume=True``
    continues the interrupted run in ``out`` from its saved config; only training options
    may then be given.
    """
    if resume:
        train = request.train()
        from greenfm.workflows.pretrain import load_run_pretrain_config, run_pretrain

        cfg = load_run_pretrain_config(out)
        if train:
            cfg = cfg.model_copy(update={"train": {**cfg.train, **train}})
    else:
        cfg = request.build()  # options and input paths are checked before the heavy imports
        from greenfm.workflows.pretrain import run_pretrain

    from greenfm.engine.threads import verb_threads

    with verb_threads(cfg.train):
        result = run_pretrain(cfg, out, resume=resume)
    console.print(f"pretraining done: {result.steps} steps, {result.samples_seen} images; run folder {out}")
    return result


@verb("greenfm.workflows.image_text_config:ZeroshotConfig", command="zeroshot")
def zeroshot(request: VerbRequest, *, out: Annotated[str | Path, "Results folder (zeroshot.json, zeroshot_findings.csv)."]):
    """Zero-shot classification with an image-text model: prompt pairs, per-finding and macro AUROC with CIs.

    Each finding gets a positive and a negative prompt (``prompts``: p1-p5 of GreenRFM,
    p3 by default, or CheXficient's "{c}" / "no {c}"); an image's score is the softmax over
    the pair. Findings with one class in the split are skipped and counted. A greenrfm model
    scores on its unnormalised latents; ``readout="classifier"`` uses its shared classifier,
    sigmoid(C z_v), instead of prompts.
    """
    cfg = request.build()
    from greenfm.engine.threads import verb_threads
    from greenfm.workflows.image_text_eval import run_zeroshot

    with verb_threads({"threads": cfg.threads}):
        return run_zeroshot(cfg, out)


@verb("greenfm.workflows.image_text_config:RetrieveConfig", command="retrieve")
def retrieve(request: VerbRequest, *, out: Annotated[str | Path, "Results folder (retrieval.json)."]):
    """Image-to-text and text-to-image retrieval: Recall@K and mean rank beside the random baseline K/N."""
    cfg = request.build()
    from greenfm.engine.threads import verb_threads
    from greenfm.workflows.image_text_eval import run_retrieve

    with verb_threads({"threads": cfg.threads}):
        return run_retrieve(cfg, out)


@verb("greenfm.workflows.scaling_config:ScalingConfig", command="scaling",
      train_options=("batch_size", "lr", "precision", "devices", "num_workers", "threads", "seed"))
def scaling(request: VerbRequest, *, out: Annotated[str | Path, "Study folder (resumable: finished cells are kept)."]):
    """Data-scaling study (METHODS 5.3): recipes pretrained on nested patient subsets at equal steps, then evaluated.

    Every size is the shortest prefix of one seeded patient shuffle holding that many
    images; every cell trains ``steps`` optimiser steps of the same batch from the same
    init, and every model (the init as n = 0) gets the same frozen-encoder evaluations.
    Writes points with patient-bootstrap CIs, power-law fits, compute per cell and paired
    differences between recipes (``scaling.json``, CSVs); rerunning continues the study.
    """
    cfg = request.build()  # options and input paths are checked before the heavy imports
    from greenfm.engine.threads import verb_threads
    from greenfm.workflows.scaling import run_scaling

    with verb_threads(cfg.train):
        return run_scaling(cfg, out, echo=console.print)


@verb("greenfm.workflows.curate_config:CurateConfig", command="curate")
def curate(request: VerbRequest, *, out: Annotated[str | Path, "Subset manifest to write (.csv or .parquet); its summary goes beside it (<out>.curation.json)."]):
    """Curated subset of a manifest from precomputed embeddings (CheXficient prototypes, METHODS 4.2).

    The embeddings are visited in seeded global batches as a curation epoch would visit them;
    each batch keeps the support and thinned central rows around K prototypes. Prints the
    members, kept rows and keep ratio per cluster; any recipe can then pretrain on --out.
    """
    cfg = request.build()  # options and input paths are checked before the heavy imports
    from greenfm.workflows.curate import run_curate

    return run_curate(cfg, out, echo=console.print)


def embed(
    *,
    model: str | Path,
    data: str | Path,
    out: str | Path,
    backbone: str | None = None,
    img_size: int | None = None,
    pool: str | None = None,
    contract: str | None = None,
    modality: str | None = None,
    batch_size: int = 64,
    device: str = "auto",
    precision: str = "auto",
    cache: str | Path | None = None,
    num_workers: int | None = None,
    threads: int | None = None,
    seed: int = 0,
    skip_bad: bool = False,
):
    """Embed every image of a manifest with a model (run folder, export folder, weights file or hub name).

    Pooling: ``mean-all-tokens`` (RETFound-Green's evaluation, default for ViTs),
    ``mean-patch-tokens`` (its README) or ``cls``. Writes a Parquet file with id,
    patient_id, path and the vector; its metadata records model, pool and contract.
    ``model="random"`` with a ``backbone`` embeds with a random init drawn from ``seed``
    (a baseline); ``threads`` / ``num_workers`` (None: chosen from the machine) as in training.
    ``modality`` names the data's modality where the manifest does not (it picks the default
    contract, as in ``finetune``).
    """
    _must_exist(data, "manifest")  # before the heavy imports: a typo costs no torch start-up
    import torch

    from greenfm.data.cache import default_cache_root
    from greenfm.engine.embed import embed_to_file, resolve_device
    from greenfm.engine.threads import resolve_threads, torch_threads
    from greenfm.workflows.inputs import encoder_contract, image_dataset, load_checked_manifest, load_encoder

    torch.manual_seed(seed)  # a random init (model="random") follows the seed
    encoder = load_encoder(model, backbone=backbone, img_size=img_size)
    manifest = load_checked_manifest(data, skip_bad=skip_bad)
    the_contract = encoder_contract(encoder, contract, modality=modality, data=manifest)
    dataset = image_dataset(manifest, the_contract, cache_root=cache or default_cache_root(), skip_bad=skip_bad, labels=False)
    plan = resolve_threads(threads, num_workers, device_type=resolve_device(device).type)
    with torch_threads(plan.threads):
        path = embed_to_file(
            encoder, dataset, out, pool=pool, batch_size=batch_size, device=device, precision=precision,
            num_workers=plan.workers, metadata={"manifest_hash": manifest.hash, "model_ref": str(model), "seed": seed},
        )
    console.print(f"wrote {len(dataset)} embeddings ({encoder.embed_dim}-d, pool {encoder.resolve_pool(pool)}) to {path}")
    return path


def probe(
    *,
    embeddings: str | Path,
    labels: str | Path,
    protocol: str = "retfound-green",
    findings: list[str] | None = None,
    task: str = "auto",
    bootstrap: int = 1000,
    seed: int = 0,
    out: str | Path | None = None,
):
    """Linear probes on cached embeddings: fit on the train split, report test AUROC/AUPRC with patient-bootstrap CIs."""
    _must_exist(embeddings, "embeddings file")
    _must_exist(labels, "manifest")
    from greenfm.adapt.linear_probe import probe as run_probe

    result = run_probe(embeddings, labels, protocol=protocol, findings=findings, task=task,
                       bootstrap=bootstrap, seed=seed, out=out)
    console.print(result.summary())
    return result


# ----------------------------------------------------------------------------- labels from reports


def label(
    *,
    data: str | Path,
    out: str | Path,
    vocab: str = "chexpert14",
    engine: str = "rules",
    compare: bool = False,
    llm_base_url: str | None = None,
    llm_model: str | None = None,
    llm_api_key: str | None = None,
    concurrency: int = 24,
    cache: str | Path | None = None,
    overwrite: bool = False,
):
    """Distil the manifest's free-text reports into finding labels (rules offline, or an LLM endpoint you name).

    Writes a NEW manifest with one column per finding (1/0/-1/blank), an evidence
    sidecar and a JSON summary; prints prevalence, uncertainty and failure rates.
    ``compare=True`` also scores the labeler against label columns already present.
    """
    from greenfm.labeling import label_manifest

    summary = label_manifest(data, out, vocab=vocab, engine=engine, compare=compare, llm_base_url=llm_base_url,
                             llm_model=llm_model, llm_api_key=llm_api_key, concurrency=concurrency, cache=cache,
                             overwrite=overwrite)
    console.print(summary.to_text())
    return summary


# ----------------------------------------------------------------------------- report and export


def report(run_dirs: list[str | Path], *, out: str | Path, title: str | None = None):
    """One self-contained HTML report (plots embedded) over one or more run folders."""
    from greenfm.report import build_report

    path = build_report([Path(r) for r in run_dirs], Path(out), title=title)
    console.print(f"report: {path}")
    return path


def export(
    run_dir: str | Path,
    *,
    out: str | Path,
    fixture: str | Path | None = None,
    contract: str | None = None,
    pool: str | None = None,
    overwrite: bool = False,
):
    """Export a run: safetensors weights, config, contract, model card, metadata.json and reference embeddings."""
    from greenfm.export import export_model

    path = export_model(Path(run_dir), Path(out), fixture_image=fixture, contract=contract, pool=pool,
                        overwrite=overwrite)
    console.print(f"exported to {path}")
    return path


# ----------------------------------------------------------------------------- adaptation and label efficiency


@verb("greenfm.workflows.adapt_config:FinetuneConfig", command="finetune",
      aliases={"balanced": ("--balanced-sampling/--no-balanced-sampling",)})
def finetune(
    request: VerbRequest,
    *,
    out: Annotated[str | Path, "Run folder (with --resume: the run to continue)."],
    resume: Annotated[bool, "Continue the interrupted run in --out with its saved options."] = False,
):
    """Fine-tune with LoRA, a linear head or all weights; select by validation AUROC, test once.

    Every ``FinetuneConfig`` field is a keyword (``config`` names a YAML file of them with a
    ``train:`` section; explicit keywords override it). The best epoch is chosen by
    validation macro AUROC; the test split is scored once.
    """
    if resume:
        train = request.train()
        from greenfm.engine.threads import verb_threads
        from greenfm.workflows.finetune import run_finetune

        with verb_threads(train):
            return run_finetune(out=out, resume=True, train=train, echo=console.print)
    cfg = request.build()  # options and input paths are checked before the heavy imports
    from greenfm.engine.threads import verb_threads
    from greenfm.workflows.finetune import run_finetune

    with verb_threads(cfg.train):  # the test scoring after training too
        return run_finetune(out=out, echo=console.print, **_fields(cfg))


@verb("greenfm.workflows.adapt_config:LabelEfficiencyConfig", command="evaluate label-efficiency",
      aliases={"balanced": ("--balanced-sampling/--no-balanced-sampling",)})
def evaluate_label_efficiency(
    request: VerbRequest,
    *,
    out: Annotated[str | Path, "Results folder (resumable: finished cells are kept)."],
):
    """Label-efficiency curves (linear vs LoRA vs full at 1/10/100% labels) with CIs, as CSV, JSON and a plot.

    Fractions x seeds x modes on nested patient-grouped train subsets; takes every
    fine-tuning option of ``finetune`` (one shared options block). Finished cells are
    kept and never recomputed.
    """
    cfg = request.build()  # options and input paths are checked before the heavy imports
    from greenfm.engine.threads import verb_threads
    from greenfm.workflows.label_efficiency import run_label_efficiency

    with verb_threads(cfg.train):  # the probes' embedding pass and every cell's scoring too
        return run_label_efficiency(out=out, echo=console.print, **_fields(cfg))


def _must_exist(path: str | Path, what: str) -> None:
    from greenfm.errors import BadInputError

    if not Path(str(path)).expanduser().exists():
        raise BadInputError(f"{what} not found", source=str(path))


def _fields(cfg) -> dict:
    """A validated config as the keywords of its workflow function."""
    return {name: getattr(cfg, name) for name in type(cfg).model_fields}


def compare_studies(
    study_a: str | Path,
    study_b: str | Path,
    *,
    out: str | Path | None = None,
    name_a: str | None = None,
    name_b: str | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
):
    """Pair two label-efficiency studies of one data set cell by cell: B - A with paired patient-bootstrap CIs.

    Writes ``study_comparison.json`` and ``.csv`` to ``out`` when given; prints the table.
    """
    from greenfm.workflows.study_comparison import compare_studies as compare

    result = compare(study_a, study_b, name_a=name_a, name_b=name_b, n_resamples=bootstrap, seed=seed)
    console.print(result.table(), markup=False, highlight=False, soft_wrap=True)
    if out is not None:
        files = result.save(out)
        console.print("wrote " + ", ".join(str(path) for path in files.values()), markup=False, highlight=False,
                      soft_wrap=True)
    return result


# ----------------------------------------------------------------------------- demo


def demo(*, out: str | Path = "runs/demo", quick: bool = False):
    """The whole pipeline on built-in phantoms: data, starting model, token reconstruction, probes, adaptation, report."""
    from greenfm.workflows.demo import run_demo

    return run_demo(Path(out), quick=quick, console=console)
