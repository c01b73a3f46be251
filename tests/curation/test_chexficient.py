"""The ``chexficient`` recipe and the ``curated-*`` wrapper through the engine: loss on kept rows, the
temperature, the subset from epoch 2 (sampler, epoch length, subset.json), exact resume mid-curation,
an edited subset file, two-pass mode, and recipes that cannot be curated."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from recipe_toys import config, recipe, samples

from greenfm.engine import fit, load_checkpoint, read_metrics
from greenfm.errors import ConfigError
from greenfm.methods.base import Recipe
from greenfm.methods.curated import curated


def test_model_matches_the_spec():
    chex = recipe()
    assert chex.logit_scale.item() == pytest.approx(math.log(100))
    assert chex.image_projection.bias is not None and chex.text_projection.bias is not None
    assert chex.curator.clusters == 6 and chex.lr_horizon == "fixed"
    with torch.no_grad():
        chex.logit_scale.fill_(7.0)
    chex.on_after_optimizer_step(0)
    assert chex.logit_scale.item() == 7.0  # never clamped
    groups = chex.optimizer_groups(1e-4)
    decayed = {id(p) for p in groups[0]["params"]}
    assert id(chex.image_projection.weight) not in decayed and id(chex.logit_scale) not in decayed
    assert id(chex.curator.prototypes) not in {id(p) for p in chex.parameters()}  # a buffer: no grad, no decay
    with pytest.raises(Exception, match="test set"):
        recipe(selection_split="test")


def test_the_loss_runs_on_the_kept_rows_only():
    chex = recipe().eval()  # no dropout: the check recomputes the embeddings
    rows = samples(48)
    batch = chex.collate(rows)
    chex.warm_up(iter([batch]))
    out = chex.training_step(batch)
    keep = chex.curator._pending[2]
    assert 0 < int(keep.sum()) < 48 and out["samples_trained"].item() == int(keep.sum())
    with torch.no_grad():
        u = chex.encode_image(batch["image"])[keep]
        v = chex.encode_text(batch["input_ids"], batch["attention_mask"])[keep]
        logits = chex.logit_scale.exp() * u @ v.t()
        target = torch.arange(len(u))
        expected = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-4)


def test_curated_run_trains_on_its_subset_from_epoch_two(tmp_path):
    chex = recipe()
    result = fit(chex, samples(96), config(), tmp_path / "run", export=False)
    subset = json.loads((tmp_path / "run" / "subset.json").read_text())
    n = subset["size"]
    assert 0 < n < 96 and subset["indices"] == chex.training_subset() and len(subset["ids"]) == n
    assert subset["curation"]["global_batch"] == 24 and subset["curation"]["max_per_cluster"] == 1  # m scaled to B
    steps_sub = math.ceil(n / 24)
    assert result.steps == 4 + 2 * steps_sub  # epoch 1 over all 96, then the subset
    ledger = result.compute
    assert ledger["samples_seen"] == 96 + 2 * n and ledger["samples_trained"] < ledger["samples_seen"]
    assert ledger["compute_fraction_of_full_data"] == pytest.approx((96 + 2 * n) / (3 * 96))
    first = [r for r in read_metrics(tmp_path / "run", "step") if r["epoch"] == 0]
    assert all(r["kept_fraction"] < 1 for r in first)
    from greenfm.report.curation import curation_body
    from greenfm.report.runs import RunArtifacts

    html = curation_body([RunArtifacts(root=tmp_path / "run", name="chex", compute=ledger)])
    assert f"subset of {n:,} of 96 samples" in html and "of the full-data run" in html


def test_a_run_killed_mid_curation_resumes_to_the_same_subset(tmp_path):
    same = dict(epochs=2, schedule="constant")  # max_steps would shorten a cosine's horizon, not curation's state
    whole = recipe()
    fit(whole, samples(96), config(**same), tmp_path / "whole", export=False)
    parts = tmp_path / "parts"
    fit(recipe(), samples(96), config(**same, max_steps=2, checkpoint_every_steps=1), parts, export=False)
    assert not (parts / "subset.json").exists()  # stopped inside epoch 1
    resumed = recipe()
    fit(resumed, samples(96), config(**same, checkpoint_every_steps=1), parts, resume=True, export=False)
    assert resumed.training_subset() == whole.training_subset()
    assert json.loads((parts / "subset.json").read_text())["indices"] == whole.training_subset()
    saved = load_checkpoint(parts / "checkpoints" / "last.ckpt")
    assert saved["model"]["curator._extra_state"]["subset"].tolist() == whole.training_subset()


def test_an_edited_subset_file_is_refused_on_resume(tmp_path):
    run = tmp_path / "run"
    fit(recipe(), samples(96), config(epochs=3, max_steps=5, checkpoint_every_steps=1), run, export=False)
    record = json.loads((run / "subset.json").read_text())
    record["indices"] = record["indices"][:-1]
    (run / "subset.json").write_text(json.dumps(record))
    with pytest.raises(ConfigError, match="subset.json no longer matches"):
        fit(recipe(), samples(96), config(epochs=3), run, resume=True, export=False)


def test_two_pass_trains_on_kept_rows_only(tmp_path):
    chex = recipe(curation_mode="two_pass")
    result = fit(chex, samples(48), config(epochs=1), tmp_path / "run", export=False)
    assert result.compute["samples_trained"] == sum(chex.curator.kept_per_cluster)
    assert result.compute["samples_trained"] < 48


def test_curated_unicl_wrapper(tmp_path):
    wrapped = recipe("curated-unicl")
    assert wrapped.name == "curated-unicl" and "clusters" in type(wrapped).Config.model_fields
    result = fit(wrapped, samples(48), config(epochs=2), tmp_path / "run", export=False)
    assert result.compute["curated_subset_size"] == len(wrapped.training_subset()) < 48


def test_a_recipe_without_the_hook_cannot_be_curated():
    class Plain(Recipe):
        name = "plain"

        def __init__(self, config=None):
            super().__init__(config)

    class PlainConfig(Plain.Config):
        embed_dim: int = 8

    Plain.Config = PlainConfig
    wrapped = curated(Plain)
    with pytest.raises(ConfigError, match="cannot be curated"):
        wrapped()


def test_curated_greenrfm_curates_the_align_stage(tmp_path):
    from recipe_toys import FINDINGS, REPORTS

    from greenfm.methods.registry import get_method
    from greenfm.models.backbones import create_encoder
    from greenfm.models.text_tiny import tiny_text_tower

    torch.manual_seed(0)
    towers = {"image": create_encoder("vit_tiny_test", img_size=32), "text": tiny_text_tower(REPORTS * 4, max_length=16)}
    cls = get_method("curated-greenrfm")
    options = {"latent_dim": 16, "warmup_samples": 48}
    with pytest.raises(ConfigError, match="curates the align stage"):
        cls.from_towers(towers, options, findings=FINDINGS, stage="image")
    aligned = cls.from_towers(towers, options, findings=FINDINGS, stage="align")
    result = fit(aligned, samples(48), config(epochs=2), tmp_path / "run", export=False)
    assert result.compute["curated_subset_size"] == len(aligned.training_subset()) < 48
    steps = read_metrics(tmp_path / "run", "step")
    assert all(math.isfinite(r["loss"]) and "bce" in r and "contrastive" in r for r in steps)
