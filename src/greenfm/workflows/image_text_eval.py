"""``greenfm zeroshot`` and ``greenfm retrieve``: the two evaluations every image-text model needs.

Both load an image-text run or export (``ImageTextModel.from_export``), embed the chosen
split's images through the model's own preprocessing contract, and score with
``greenfm.evaluate`` (prompt-pair zero-shot AUROC with patient-bootstrap CIs; image-text
Recall@K with the random baseline). Results land in ``--out`` as JSON/CSV that
``greenfm report`` renders.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from greenfm.data.cache import default_cache_root
from greenfm.data.contract import Contract
from greenfm.data.manifest import Manifest
from greenfm.engine.embed import embed_dataset
from greenfm.errors import BadInputError, ConfigError
from greenfm.evaluate.prompts import prompt_pairs
from greenfm.models.image_text import ImageTextModel
from greenfm.workflows.image_text_config import ImageTextEvalConfig, RetrieveConfig, ZeroshotConfig
from greenfm.workflows.inputs import image_dataset, load_checked_manifest, load_image_text

log = logging.getLogger(__name__)
console = Console()


def run_zeroshot(config: ZeroshotConfig, out: str | Path) -> dict[str, Any]:
    """Zero-shot AUROC per finding and macro, with CIs; writes ``out/zeroshot.json``."""
    from greenfm.evaluate.image_text_results import write_zeroshot_results
    from greenfm.evaluate.zeroshot import score_zeroshot, zeroshot_probabilities

    if config.readout == "prompts":
        prompt_pairs([], config.prompts)  # an unknown family fails before any work
    model, manifest, contract = _inputs(config)
    findings, phrases = _findings(manifest, config.vocab)
    dataset = image_dataset(manifest, contract, cache_root=config.cache or default_cache_root(), skip_bad=config.skip_bad,
                            labels=False)  # fmt: skip
    if config.readout == "classifier":
        columns = _classifier_columns(model, findings, config.model)
        latents = _image_latents(model, dataset, config.batch_size, normalize=False)  # C reads the raw z_v
        probabilities = model.classify_latents(torch.from_numpy(latents)).numpy()[:, columns].astype(np.float64)
        pairs, family = None, None
    else:
        images = _image_latents(model, dataset, config.batch_size)
        pairs, family = prompt_pairs(phrases, config.prompts), config.prompts
        positive = model.encode_texts([p for p, _ in pairs]).numpy()
        negative = model.encode_texts([n for _, n in pairs]).numpy()
        probabilities = zeroshot_probabilities(images, positive, negative, normalize=model.normalize)
    labels = dataset.manifest.labels(findings)
    metrics = score_zeroshot(probabilities, labels, dataset.patient_ids, findings, n_resamples=config.resamples,
                             seed=config.seed)  # fmt: skip
    path = write_zeroshot_results(
        out, metrics, prompt_family=family, prompts=pairs, readout=config.readout, model_ref=config.model,
        data_ref={"manifest": config.data, "split": config.split, "images": len(dataset),
                  "patients": int(len(set(dataset.patient_ids))), "manifest_hash": manifest.hash},
        extra={"normalize": model.normalize, "recipe": model.recipe,
               "score": "sigmoid(C z_v)" if config.readout == "classifier" else
               "softmax([z_v.t+, z_v.t-])[0]" + ("" if model.normalize else " on unnormalised latents, temperature 1")},
    )  # fmt: skip
    _write_predictions(Path(out), dataset, findings, labels, probabilities, config.split or "all")
    _print_zeroshot(metrics, config)
    return {"path": path, "metrics": metrics}


def _write_predictions(out: Path, dataset, findings, labels, scores, split: str) -> Path:
    """``predictions.parquet`` (long: id, patient_id, split, finding, label, score): ROC curves in the
    report, and ``greenfm.evaluate.paired.paired_comparison`` of two models on the same images."""
    import pandas as pd

    n, k = scores.shape
    table = pd.DataFrame({
        "id": np.repeat(dataset.ids, k), "patient_id": np.repeat(dataset.patient_ids, k), "split": split,
        "finding": np.tile(np.asarray(findings, dtype=object), n), "label": np.asarray(labels, dtype=float).reshape(-1),
        "score": np.asarray(scores, dtype=float).reshape(-1),
    })  # fmt: skip
    path = out / "predictions.parquet"
    table.to_parquet(path, index=False)
    return path


def run_retrieve(config: RetrieveConfig, out: str | Path) -> dict[str, Any]:
    """Image-to-text and text-to-image Recall@K and mean rank; writes ``out/retrieval.json``."""
    from greenfm.data.reports import manifest_reports
    from greenfm.evaluate.image_text_results import write_retrieval_results
    from greenfm.evaluate.retrieval import retrieval_metrics

    model, manifest, contract = _inputs(config)
    dataset = image_dataset(manifest, contract, cache_root=config.cache or default_cache_root(), skip_bad=config.skip_bad,
                            labels=False)  # fmt: skip
    texts = manifest_reports(dataset.manifest, what="retrieval")
    images = _image_latents(model, dataset, config.batch_size)
    text_latents = model.encode_texts(texts).numpy()
    result = retrieval_metrics(images, text_latents, texts, ks=config.ks)
    path = write_retrieval_results(
        out, result, model_ref=config.model,
        data_ref={"manifest": config.data, "split": config.split, "images": len(dataset), "manifest_hash": manifest.hash},
    )  # fmt: skip
    _print_retrieval(result)
    return {"path": path, "result": result}


# -- shared ---------------------------------------------------------------------------------


def _inputs(config: ImageTextEvalConfig) -> tuple[ImageTextModel, Manifest, Contract]:
    model = load_image_text(config.model)
    manifest = load_checked_manifest(config.data, skip_bad=config.skip_bad)
    if config.split and manifest.has_splits:
        manifest = manifest.split(config.split)
        if len(manifest) == 0:
            raise BadInputError(f"no rows in split '{config.split}'", source=config.data)
    if not model.preprocessing:
        raise BadInputError("the model records no preprocessing contract", source=config.model)
    return model, manifest, Contract.from_dict(model.preprocessing)


def _findings(manifest: Manifest, vocab: str | None) -> tuple[list[str], list[str]]:
    """Finding columns to score and the phrase each prompt uses for them."""
    from greenfm.labeling.label_text import prompt_name

    if vocab is None:
        findings = list(manifest.findings)
        phrases = [prompt_name(f) for f in findings]
    elif "," in vocab or vocab in manifest.findings:
        findings = [v.strip() for v in vocab.split(",") if v.strip()]
        unknown = [f for f in findings if f not in manifest.findings]
        if unknown:
            raise ConfigError(f"--vocab names columns the manifest lacks: {unknown}")
        phrases = [prompt_name(f) for f in findings]
    else:
        from greenfm.labeling.findings import load_vocabulary

        vocabulary = load_vocabulary(vocab)
        chosen = [f for f in vocabulary.findings if f.id in manifest.findings]
        if not chosen:
            raise ConfigError(f"vocabulary '{vocab}' shares no finding with the manifest's columns {manifest.findings}")
        findings, phrases = [f.id for f in chosen], [f.prompt_name for f in chosen]
    if not findings:
        raise ConfigError("the manifest has no finding columns to score zero-shot")
    return findings, phrases


def _classifier_columns(model: ImageTextModel, findings: list[str], source: Any) -> list[int]:
    """The classifier output of each finding to score; a finding it was not trained on is one line."""
    if model.classifier is None:
        raise BadInputError("--readout classifier needs a model with a shared classifier (a greenrfm align run)",
                            source=str(source))  # fmt: skip
    unknown = [f for f in findings if f not in model.findings]
    if unknown:
        raise ConfigError(f"--readout classifier: the model's classifier has no output for {unknown}; it was trained "
                          f"on {model.findings}")  # fmt: skip
    return [model.findings.index(f) for f in findings]


def _image_latents(model: ImageTextModel, dataset, batch_size: int, *, normalize: bool | None = None) -> np.ndarray:
    features = embed_dataset(model.image, dataset, pool=model.pool, batch_size=batch_size)
    with torch.no_grad():
        latents = torch.from_numpy(features)
        if model.image_projection is not None:
            latents = model.image_projection(latents)
        if model.normalize if normalize is None else normalize:
            latents = torch.nn.functional.normalize(latents, dim=-1)
    return latents.numpy()


def _print_zeroshot(metrics, config: ZeroshotConfig) -> None:
    how = f"prompts {config.prompts}" if config.readout == "prompts" else "readout classifier"
    table = Table(title=f"zero-shot AUROC ({how}; 95% patient-bootstrap CI)")
    for column in ("finding", "AUROC", "95% CI", "positives / n"):
        table.add_column(column)
    for f in metrics.findings:
        ci = f"[{f.auroc_ci[0]:.3f}, {f.auroc_ci[1]:.3f}]" if getattr(f, "auroc_ci", None) else "-"
        value = f"{f.auroc:.3f}" if f.auroc is not None else "skipped"
        table.add_row(f.name, value, ci, f"{getattr(f, 'n_positive', '?')} / {getattr(f, 'n', '?')}")
    console.print(table)
    macro_ci = getattr(metrics, "macro_auroc_ci", None)
    ci_text = f" [{macro_ci[0]:.3f}, {macro_ci[1]:.3f}]" if macro_ci else ""
    against = ""
    if macro_ci:
        against = " (CI above chance 0.5)" if macro_ci[0] > 0.5 else " (CI includes or is below chance 0.5)"
    macro = metrics.macro_auroc
    console.print(f"macro AUROC {macro:.3f}{ci_text}{against}; {metrics.n_evaluable} of {metrics.n_classes} findings scored"
                  if macro is not None else "macro AUROC: no finding could be scored")  # fmt: skip


def _print_retrieval(result: dict[str, Any]) -> None:
    table = Table(title=f"retrieval over {result['n_images']} images and {result['n_unique_texts']} distinct texts")
    for column in ("direction", "K", "Recall@K", "random K/N"):
        table.add_column(column)
    for direction in ("image_to_text", "text_to_image"):
        for row in result[direction]["recall"]:
            table.add_row(direction.replace("_", " "), str(row["k_used"]), f"{row['recall']:.3f}", f"{row['random']:.3f}")
    console.print(table)
    for direction in ("image_to_text", "text_to_image"):
        d = result[direction]
        console.print(f"{direction.replace('_', ' ')}: mean rank {d['mean_rank']:.1f} (random {d['random_mean_rank']:.1f})")
