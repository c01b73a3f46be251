"""greenfm's Python API: one function per CLI verb, with the same arguments.

Heavy modules are imported inside each function, so importing the API is cheap.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

console = Console()


# ----------------------------------------------------------------------------- data


def data_check(data: str | Path, *, skip_bad: bool = False):
    """Validate a manifest and print a summary of rows, patients, splits and labels."""
    from greenfm.data.manifest import load_manifest

    manifest = load_manifest(data, skip_bad=skip_bad)
    console.print(manifest_summary_table(manifest))
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
):
    """Generate synthetic phantoms (chest radiographs or chest CT) with reports and labels; returns the manifest path."""
    from greenfm.data.phantoms import generate_phantoms, summarize_phantoms

    path = generate_phantoms(out, kind=kind, n_patients=patients, size=size, seed=seed, site=site,
                             images_per_patient=tuple(images_per_patient), unmentioned=unmentioned, workers=workers)
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
               stratify: bool = True, skip_bad: bool = False):
    """Patient-grouped train/val/test splits (stratified by label where possible) into a new manifest."""
    from greenfm.data.manifest import load_manifest
    from greenfm.data.splits import split_manifest

    manifest = split_manifest(load_manifest(data, skip_bad=skip_bad), out, val=val, test=test, seed=seed,
                              stratify=stratify)
    console.print(manifest_summary_table(manifest))
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


def pretrain(
    *,
    data: str | Path | None = None,
    out: str | Path,
    recipe: str | None = None,
    backbone: str | None = None,
    init: str | None = None,
    img_size: int | None = None,
    config: str | Path | None = None,
    epochs: int | None = None,
    max_steps: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    devices: int | None = None,
    num_nodes: int | None = None,
    precision: str | None = None,
    num_workers: int | None = None,
    seed: int | None = None,
    cache: str | Path | None = None,
    skip_bad: bool = False,
    resume: bool = False,
):
    """Continual pretraining (default recipe: token-reconstruction); writes a run folder at ``out``.

    ``config`` is a YAML file with any PretrainConfig field (``method:`` and ``train:``
    sections included); explicit arguments override it. ``resume=True`` continues the
    interrupted run in ``out`` exactly, from its saved config.
    """
    from greenfm.workflows.pretrain import PretrainConfig, load_run_pretrain_config, run_pretrain
    from greenfm.config import build_config, given, read_yaml

    explicit_train = given(epochs=epochs, max_steps=max_steps, batch_size=batch_size, lr=lr, devices=devices,
                           num_nodes=num_nodes, precision=precision, num_workers=num_workers, seed=seed)
    if resume:
        cfg = load_run_pretrain_config(out)
        if explicit_train:
            cfg = cfg.model_copy(update={"train": {**cfg.train, **explicit_train}})
    else:
        base = read_yaml(config) if config is not None else {}
        cfg = build_config(
            PretrainConfig,
            **base,
            **given(data=str(data) if data else None, recipe=recipe, backbone=backbone, init=init,
                    img_size=img_size, cache=str(cache) if cache else None),
            skip_bad=skip_bad or base.get("skip_bad", False),
            train={**base.get("train", {}), **explicit_train},
        )
    result = run_pretrain(cfg, out, resume=resume)
    console.print(f"pretraining done: {result.steps} steps, {result.samples_seen} images; run folder {out}")
    return result


def embed(
    *,
    model: str | Path,
    data: str | Path,
    out: str | Path,
    backbone: str | None = None,
    img_size: int | None = None,
    pool: str | None = None,
    contract: str | None = None,
    batch_size: int = 64,
    device: str = "auto",
    precision: str = "auto",
    cache: str | Path | None = None,
    num_workers: int = 0,
    skip_bad: bool = False,
):
    """Embed every image of a manifest with a model (run folder, export folder, weights file or hub name).

    Pooling: ``mean-all-tokens`` (RETFound-Green's evaluation, default for ViTs),
    ``mean-patch-tokens`` (its README) or ``cls``. Writes a Parquet file with id,
    patient_id, path and the vector; its metadata records model, pool and contract.
    """
    from greenfm.engine.embed import embed_to_file
    from greenfm.workflows.inputs import encoder_contract, image_dataset, load_checked_manifest, load_encoder
    from greenfm.workflows.pretrain import default_cache_root

    encoder = load_encoder(model, backbone=backbone, img_size=img_size)
    manifest = load_checked_manifest(data, skip_bad=skip_bad)
    the_contract = encoder_contract(encoder, contract)
    dataset = image_dataset(manifest, the_contract, cache_root=cache or default_cache_root(), skip_bad=skip_bad, labels=False)
    path = embed_to_file(
        encoder, dataset, out, pool=pool, batch_size=batch_size, device=device, precision=precision,
        num_workers=num_workers, metadata={"manifest_hash": manifest.hash, "model_ref": str(model)},
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


def finetune(*, model: str | Path, data: str | Path, out: str | Path, **options):
    """Fine-tune a pretrained model on labelled data: ``mode`` linear (head on frozen features), lora or full.

    Options (all keyword, as on the CLI): mode, preset (med-peft | broad), rank, alpha,
    lora_dropout, layer_decay, task, findings, pos_weight, balanced, config, epochs,
    max_steps, batch_size, lr, precision, devices, seed, backbone, img_size, contract,
    augment, label_fraction, fraction_seed, bootstrap, cache, skip_bad, resume. The best
    epoch is chosen by validation macro AUROC; the test split is scored once.
    """
    from greenfm.workflows.finetune import run_finetune

    return run_finetune(model=model, data=data, out=out, echo=console.print, **options)


def evaluate_label_efficiency(*, model: str | Path, data: str | Path, out: str | Path, **options):
    """Label-fraction curves: fractions x seeds x modes on nested patient-grouped train subsets.

    Options: fractions, seeds, modes, linear_via (probe | finetune), bootstrap, and the
    fine-tuning options of ``finetune``. Finished cells are kept and never recomputed.
    """
    from greenfm.workflows.label_efficiency import run_label_efficiency

    return run_label_efficiency(model=model, data=data, out=out, echo=console.print, **options)


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
