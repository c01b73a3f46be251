"""The demo's stages, one function each; ``demo.run_demo`` runs them in order.

Each stage writes under the demo folder and reuses its own finished output (a
phantom set with the same settings, a run folder with an export), so a re-run
redoes only what is missing; an unfinished run folder is removed and redone.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from greenfm.data.cache import build_cache
from greenfm.data.contract import Contract
from greenfm.data.dataset import ImageDataset
from greenfm.data.manifest import load_manifest
from greenfm.data.phantoms import generate_phantoms, get_site, summarize_phantoms
from greenfm.data.splits import split_manifest
from greenfm.evaluate.paired import PairedComparison, paired_comparison

if TYPE_CHECKING:
    from greenfm.workflows.demo_setting import DemoSetting

START, ADAPTED = "starting model", "adapted (token reconstruction)"
INIT_NOTE = ("A real user starts from a general-domain model instead, a DINOv2 checkpoint: greenfm pretrain "
             "--data MANIFEST --backbone vit_small_patch14_reg4_dinov2 --init <weights file, or "
             "hf-hub:timm/vit_small_patch14_reg4_dinov2.lvd142m>.")  # fmt: skip


@dataclass
class DemoData:
    """Where the demo's inputs are: manifests, the contract (and its JSON file), the cache root."""

    source: Path
    target: Path
    contract: Contract | None = None
    contract_file: Path | None = None
    cache: Path | None = None


# ----------------------------------------------------------------------------- 1-2. data


def make_data(out: Path, setting: DemoSetting, console: Console) -> DemoData:
    """Source and target phantoms (reused when ``phantoms.json`` matches), with a summary of each."""
    paths = []
    for role, site, patients, seed in (("source", setting.source_site, setting.source_patients, setting.seed + 1),
                                       ("target", setting.target_site, setting.target_patients, setting.seed + 2)):
        folder = out / "data" / role
        manifest = _phantoms(folder, site=site, patients=patients, size=setting.phantom_size, seed=seed)
        profile = get_site(site)
        console.print(f"[bold]{role}[/bold] site {site} ({profile.description}): {folder}")
        console.print(str(summarize_phantoms(manifest)), highlight=False)
        paths.append(manifest)
    return DemoData(source=paths[0], target=paths[1])


def _phantoms(folder: Path, *, site: str, patients: int, size: int, seed: int) -> Path:
    settings = folder / "phantoms.json"
    if settings.is_file() and (folder / "manifest.csv").is_file():
        saved = json.loads(settings.read_text())
        if (saved.get("n_patients"), saved.get("size"), saved.get("seed"), saved.get("site", {}).get("name")) == (
            patients, size, seed, site):  # fmt: skip
            return folder / "manifest.csv"
    return generate_phantoms(folder, kind="cxr", n_patients=patients, size=size, seed=seed, site=site)


def split_and_cache(out: Path, data: DemoData, setting: DemoSetting, console: Console) -> DemoData:
    """Patient-grouped split of the target site; the contract; both sites decoded once into the cache."""
    split_path = out / "data" / "target_split.csv"
    target = split_manifest(load_manifest(data.target), split_path, val=setting.val, test=setting.test,
                            seed=setting.seed)  # fmt: skip
    counts = target.table.groupby("split")["patient_id"].agg(["size", "nunique"])
    console.print("target split (images / patients): " + ", ".join(
        f"{s} {int(counts.loc[s, 'size'])} / {int(counts.loc[s, 'nunique'])}" for s in ("train", "val", "test")))
    contract = Contract(modality="xray", size=setting.image_size, channels=3, mean=0.5, std=0.5,
                        resize="squash", interpolation="bilinear")  # fmt: skip
    contract_file = out / "data" / "contract.json"
    contract_file.write_text(json.dumps(contract.to_dict(), indent=2) + "\n")
    cache = out / "cache"
    for manifest in (load_manifest(data.source), target):
        store = build_cache(manifest, contract, cache, progress=False)
        console.print(f"cache: {len(store)} images at {setting.image_size} px in {store.path}")
    console.print(f"contract: x-ray, {setting.image_size} px, grey repeated to 3 channels, normalised (x - 0.5) / 0.5")
    return DemoData(source=data.source, target=split_path, contract=contract, contract_file=contract_file, cache=cache)


# ----------------------------------------------------------------------------- 3. starting model


def starting_model(out: Path, data: DemoData, setting: DemoSetting, console: Console) -> tuple[Path, str]:
    """Train (or reuse) the supervised warm start on the source site; returns its run folder and a description."""
    import torch

    from greenfm.engine import TrainConfig, fit, write_run_config
    from greenfm.models.backbones import create_encoder
    from greenfm.methods.supervised import Supervised
    from greenfm.models.export import export_towers

    run = out / "runs" / "start"
    source = load_manifest(data.source)
    site = get_site(setting.source_site)
    arch = setting.backbone
    description = (
        f"a {arch['embed_dim']}-wide, {arch['depth']}-block ViT (patch {arch['patch_size']}, "
        f"{arch['img_size']} px, 4 registers), trained from random weights for {setting.warm_start_epochs} epochs "
        f"with the report labels of {len(source)} radiographs of {source.table['patient_id'].nunique()} patients "
        f"from site {site.name} ({site.description}), none of them from the target site"
    )
    if (run / "exported" / "config.json").is_file():
        console.print(f"reusing the starting model in {run}")
    else:
        shutil.rmtree(run, ignore_errors=True)
        torch.manual_seed(setting.seed)
        encoder = create_encoder(arch["name"], **{k: v for k, v in arch.items() if k != "name"})
        method = Supervised(encoder, len(source.findings))
        # No augmentation: in this short run the light crop-and-rotation augmentation kept the
        # ViT at the label prevalence (docs/results.md).
        store = build_cache(source, data.contract, data.cache, progress=False)
        dataset = ImageDataset(source, data.contract, cache=store)
        steps = setting.warm_start_epochs * -(-len(dataset) // setting.warm_start_batch)
        config = TrainConfig(
            epochs=setting.warm_start_epochs, batch_size=setting.warm_start_batch, lr=setting.warm_start_lr,
            min_lr=setting.warm_start_lr / 100, weight_decay=0.05, warmup=max(1, steps // 10),
            schedule_interval="step", seed=setting.seed, num_workers=0, accelerator="cpu",
            checkpoint_every_epochs=None, track_energy=False, progress_bar=True, log_every_steps=25,
        )  # fmt: skip
        record = {"method": method.name, "site": site.name, "manifest_hash": source.hash, "backbone": arch,
                  "contract": data.contract.to_dict()}  # fmt: skip
        write_run_config(run, {"warm_start": record, "train": config.to_dict()}, manifest_hash=source.hash,
                         seed=setting.seed)  # fmt: skip
        result = fit(method, dataset, config, run, run_record=record)
        export_towers(method.export_towers(), run / "exported", preprocessing=data.contract,
                      metadata={"description": description, **record})  # fmt: skip
        console.print(f"warm start: {result.steps} steps, final training loss "
                      f"{result.history[-1]['loss']:.4f} (first epoch {result.history[0]['loss']:.4f})")  # fmt: skip
    console.print(f"[bold]starting model[/bold]: {description}.")
    console.print(f"[dim]{INIT_NOTE}[/dim]")
    return run, description


# ----------------------------------------------------------------------------- 4. token reconstruction


def token_reconstruction(
    out: Path, data: DemoData, start: Path, setting: DemoSetting, console: Console
) -> tuple[Path, dict[str, Any]]:
    """Continual pretraining of the starting model on the target train split with ``run_pretrain``."""
    from greenfm.methods.token_reconstruction import TokenReconstructionConfig, default_train_config
    from greenfm.workflows.pretrain import PretrainConfig, run_pretrain

    run = out / "runs" / "pretrain"
    recipe = default_train_config()
    n_train = int((load_manifest(data.target).table["split"] == "train").sum())
    steps = setting.pretrain_epochs * -(-n_train // setting.pretrain_batch)
    train = {  # on top of the recipe's defaults (run_pretrain merges them)
        "epochs": setting.pretrain_epochs, "batch_size": setting.pretrain_batch, "lr": setting.pretrain_lr,
        "schedule_interval": "step", "t_initial": None, "warmup": max(1, steps // 10),
        "checkpoint_every_epochs": None, "num_workers": 0, "accelerator": "cpu", "seed": setting.seed,
        "track_energy": setting.track_energy, "log_every_steps": 10,
    }  # fmt: skip
    objective = TokenReconstructionConfig()
    console.print(
        f"objective: METHODS defaults (noise {objective.noise_std} x image std, mask ratio ~ U(0, "
        f"{objective.mask_max:.3g}), last sample clean, zero mask token, projector with LayerScale "
        f"{objective.layerscale_init:g}); AdamW betas {tuple(recipe['betas'])}, weight decay "
        f"{recipe['weight_decay']:g}, grad clip {recipe['grad_clip']:g}; augmentation: greenfm's chest X-ray preset "
        "(small crops and rotations; the paper's fundus augmentation does not apply to radiographs)"
    )
    console.print(
        f"[yellow]changed for a short CPU run[/yellow]: lr {setting.pretrain_lr:g} (recipe {recipe['lr']:g}, "
        f"tuned for 100 epochs of 75k images) over {setting.pretrain_epochs} epochs of {n_train} images "
        f"({steps} steps; recipe {recipe['epochs']} epochs), batch {setting.pretrain_batch} (recipe "
        f"{recipe['batch_size']}), cosine per step with {train['warmup']} warm-up steps (recipe: per epoch, 10 epochs)"
    )
    compute_file = run / "compute.json"
    if (run / "exported" / "config.json").is_file() and compute_file.is_file():
        from greenfm.engine.ledger import print_ledger

        console.print(f"reusing the token-reconstruction run in {run}; its compute ledger:")
        print_ledger(json.loads(compute_file.read_text()), console)
    else:
        shutil.rmtree(run, ignore_errors=True)
        config = PretrainConfig(
            recipe="token-reconstruction", data=str(data.target), init=str(start), img_size=setting.image_size,
            contract=str(data.contract_file), augment="cxr", splits=["train"], cache=str(data.cache), train=train,
        )  # fmt: skip
        run_pretrain(config, run)  # the engine prints the run's compute ledger at the end
    return run, json.loads(compute_file.read_text())


# ----------------------------------------------------------------------------- 5. embed and compare


def embed_and_compare(
    out: Path, data: DemoData, start: Path, adapted: Path, setting: DemoSetting
) -> PairedComparison:
    """Embed the target site with both models, probe each (same protocol, same resamples), compare."""
    from greenfm.adapt.linear_probe import probe
    from greenfm.engine.embed import embed_to_file
    from greenfm.workflows.inputs import load_encoder

    target = load_manifest(data.target)
    dataset = ImageDataset(target, data.contract, cache=build_cache(target, data.contract, data.cache, progress=False),
                           labels=False)  # fmt: skip
    predictions = {}
    for name, run in (("start", start), ("adapted", adapted)):
        encoder = load_encoder(run)
        path = embed_to_file(encoder, dataset, out / "embeddings" / f"{name}.parquet", batch_size=256, device="cpu",
                             metadata={"manifest_hash": target.hash, "model_ref": str(run)})  # fmt: skip
        result = probe(path, target, protocol="retfound-green", bootstrap=setting.bootstrap, seed=setting.seed,
                       out=run / "probe")  # fmt: skip
        predictions[name] = result.predictions
    return paired_comparison(predictions["start"], predictions["adapted"], model_a=START, model_b=ADAPTED,
                             n_resamples=setting.bootstrap, seed=setting.seed)  # fmt: skip


# ----------------------------------------------------------------------------- 7. image-text


def image_text(out: Path, data: DemoData, init: Path, setting: DemoSetting, console: Console) -> dict[str, Any]:
    """``unicl`` on the target site's reports from the adapted model, then zero-shot on its test split.

    The text tower is the offline MiniLM, locked (only the image tower, the projections and
    the temperature train; each distinct text is encoded once). Returns the zero-shot macro
    AUROC with its CI, the retrieval R@10 and the run's compute ledger.
    """
    from greenfm.workflows.image_text_config import RetrieveConfig, ZeroshotConfig
    from greenfm.workflows.image_text_eval import run_retrieve, run_zeroshot
    from greenfm.workflows.pretrain import PretrainConfig, run_pretrain

    run = out / "runs" / "image_text"
    n_train = int((load_manifest(data.target).table["split"] == "train").sum())
    steps = setting.image_text_epochs * -(-n_train // setting.image_text_batch)
    method = {"lock_text": True, "embed_dim": 128, "label_text_mode": "per_finding", "p_label_text": 0.5}
    train = {"epochs": setting.image_text_epochs, "batch_size": setting.image_text_batch, "lr": setting.image_text_lr,
             "weight_decay": 0.05, "warmup": min(5, steps // 10), "checkpoint_every_epochs": None, "num_workers": 0,
             "accelerator": "cpu", "seed": setting.seed, "track_energy": setting.track_energy, "log_every_steps": 10}  # fmt: skip
    console.print(
        f"recipe unicl (METHODS 5): image tower = the adapted model, text tower = all-MiniLM-L6-v2 (offline, locked), "
        f"bias-free projections to 128-d, learnable temperature from 0.07; half the pairs take a label text "
        f"('There is (no) {{finding}}.'), the others their report; {setting.image_text_epochs} epochs, batch "
        f"{setting.image_text_batch}, lr {setting.image_text_lr:g}"
    )
    compute_file = run / "compute.json"
    if not ((run / "exported" / "config.json").is_file() and compute_file.is_file()):
        shutil.rmtree(run, ignore_errors=True)
        config = PretrainConfig(recipe="unicl", data=str(data.target), init=str(init), text_tower="minilm",
                                text_max_length=96, contract=str(data.contract_file), augment="none", splits=["train"],
                                cache=str(data.cache), method=method, train=train)  # fmt: skip
        run_pretrain(config, run)
    zeroshot = run_zeroshot(ZeroshotConfig(model=str(run), data=str(data.target), cache=str(data.cache),
                                           resamples=setting.bootstrap, seed=setting.seed), run / "zeroshot")["metrics"]  # fmt: skip
    retrieval = run_retrieve(RetrieveConfig(model=str(run), data=str(data.target), cache=str(data.cache)),
                             run / "retrieval")["result"]  # fmt: skip
    recall = {r["k"]: r for r in retrieval["image_to_text"]["recall"]}
    return {"run": str(run), "zeroshot_macro_auroc": zeroshot.macro_auroc, "zeroshot_macro_ci": zeroshot.macro_auroc_ci,
            "findings_scored": zeroshot.n_evaluable, "findings": zeroshot.n_classes,
            "recall_at_10": recall.get(10, {}).get("recall"), "recall_at_10_random": recall.get(10, {}).get("random"),
            "compute": json.loads(compute_file.read_text())}  # fmt: skip


# ----------------------------------------------------------------------------- 6. label efficiency and report


def label_efficiency(out: Path, data: DemoData, adapted: Path, setting: DemoSetting,
                     console: Console) -> tuple[Any, list[dict[str, Any]] | None]:
    """Linear probe vs LoRA vs full fine-tuning of the adapted model at 1 / 10 / 100% labels, one seed,
    and the modes compared at each fraction with paired CIs (``label_efficiency_pairs``).

    Runs ``greenfm.workflows.label_efficiency`` when it is installed (skipped otherwise);
    finished cells are reused on a re-run.
    """
    try:
        from greenfm.workflows.label_efficiency import run_label_efficiency
    except ImportError:
        console.print("[dim]label efficiency: greenfm.workflows.label_efficiency is not installed; skipped[/dim]")
        return None, None
    from greenfm.config import write_yaml
    from greenfm.workflows.label_efficiency_pairs import format_paired_modes, paired_modes

    study = out / "runs" / "label_efficiency"
    study.mkdir(parents=True, exist_ok=True)
    # Every fine-tune: a fixed small step budget at lr 1e-3 (greenfm's batch-scaled defaults barely move a
    # tiny ViT in a few steps, docs/results.md), in-process data loading, no energy tracker per cell.
    train = write_yaml({"num_workers": 0, "track_energy": False, "accelerator": "cpu"}, study / "demo_train.yaml")
    result = run_label_efficiency(
        model=adapted, data=data.target, out=study, fractions=setting.label_fractions, seeds=(setting.seed,),
        modes=("linear", "lora", "full"), bootstrap=setting.bootstrap, bootstrap_seed=setting.seed, config=train,
        max_steps=setting.finetune_steps, batch_size=setting.finetune_batch, lr=setting.finetune_lr,
        cache=data.cache, echo=lambda line: console.print(line, highlight=False),
    )  # fmt: skip
    pairs = paired_modes(study, setting.label_fractions, seed=setting.seed, n_resamples=setting.bootstrap,
                         bootstrap_seed=setting.seed)  # fmt: skip
    console.print(f"the modes compared at each fraction on the same site {setting.target_site} test images "
                  "(patient bootstrap, paired):", highlight=False)
    for line in format_paired_modes(pairs):
        console.print(line, highlight=False)
    return result, pairs  # run_label_efficiency has printed its table


def report(out: Path, runs: list[Path], label_efficiency: Any, console: Console) -> Path | None:
    """The HTML report over the demo's runs, when ``greenfm.report`` offers ``build_report``."""
    try:
        from greenfm.report import build_report
    except (ImportError, AttributeError):
        console.print("[dim]report: greenfm.report.build_report is not available; skipped[/dim]")
        return None
    folders = list(runs)
    if label_efficiency is not None and Path(label_efficiency.out).is_dir():
        folders.append(Path(label_efficiency.out))
    return build_report(folders, out / "report.html", title="greenfm demo: token reconstruction on phantoms")

