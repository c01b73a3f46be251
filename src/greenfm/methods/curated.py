"""Curation for any contrastive recipe: ``CurationMixin`` and the ``curated(...)`` wrapper (METHODS 4.2).

During the first epoch each global batch is embedded, :class:`greenfm.curation.PrototypeCurator`
keeps support + thinned central rows around K prototypes, the loss runs on the kept rows only
(all rows when none is kept) and the prototypes follow the kept rows after each optimiser step.
At the start of the second epoch the union of kept ids becomes the fixed training subset: the
engine reads it from :meth:`training_subset`, draws the sampler from it and recomputes the epoch
length and the learning-rate horizon (``lr_horizon``).

**The hook a recipe exposes** to be curated (``unicl`` and ``clip`` get it from
:class:`UniCLLatents`; a new recipe such as ``greenrfm``'s ``align`` stage defines the two methods):

- ``joint_latents(batch) -> dict[str, Tensor]``: this rank's per-row tensors, at least ``image``
  and ``text`` (L2-normalised, with gradient), plus whatever the loss needs per row (target ids);
- ``loss_from_latents(latents) -> dict``: the recipe's loss (``{"loss": ..., scalars}``) on
  gathered per-row tensors (every rank's rows, already restricted to those kept);
- ``latent_width``: the width of each of ``image`` and ``text`` (the joint embedding is
  ``[image; text]``, twice as wide).

``curated(Recipe)`` then returns a registered-style recipe class whose ``Config`` adds the
curation options to the recipe's own. ``curation_mode='two_pass'`` embeds the global batch
without gradients, selects, and runs forward and backward on the kept rows only.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from greenfm.config import GreenfmConfig
from greenfm.curation import PrototypeCurator, scaled_max_per_cluster
from greenfm.errors import ConfigError
from greenfm.methods.contrastive_loss import unicl_loss
from greenfm.methods.greenrfm import GreenRFM
from greenfm.methods.unicl import CLIP, UniCL, UniCLConfig


class CurationOptions(GreenfmConfig):
    """The curation options every curated recipe adds to its own (``method:`` keys)."""

    clusters: int = Field(6, ge=1, description="Number of prototypes K.")
    max_per_cluster: int | None = Field(
        None, ge=1, description="Central rows kept per cluster and batch; default max(1, round(0.125 B / K)) for "
        "the global batch B (10 at B = 480, K = 6: the paper's keep ratio at any batch).",
    )
    thinning: Literal["fps", "density", "random"] = Field(
        "fps", description="How the central band is thinned: farthest-point sampling, sparsest rows, or random."
    )
    curation_mode: Literal["in_batch", "two_pass"] = Field(
        "in_batch", description="in_batch (official): forward the whole batch, loss on kept rows; two_pass: embed "
        "without gradients, select, then train on the kept rows only.",
    )
    warmup_samples: int = Field(800, ge=1, description="Samples embedded by the initial model for the k-means "
                                "initialisation (10 x the official per-GPU batch of 80).")  # fmt: skip
    kmeans_backend: Literal["auto", "faiss", "sklearn"] = Field("auto", description="k-means: faiss when installed, else scikit-learn.")
    prototype_seed: int = Field(42, description="Seed of the k-means and of farthest-point sampling's start.")
    lr_horizon: Literal["fixed", "official"] = Field(
        "fixed", description="fixed: one cosine over the run's real length; official: the release's horizon of "
        "epochs x the current epoch length (the lr drifts back up at the end).",
    )


class UniCLLatents:
    """The curation hook of ``unicl`` / ``clip`` (built from their public encoders and loss)."""

    @property
    def latent_width(self) -> int:
        return self.config.embed_dim

    def joint_latents(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        image = self.encode_image(batch["image"]).float()
        if self.config.lock_text:
            features = self.locked_text_features(batch["texts"], batch["image"].device)
            text = F.normalize(self.text_projection(features), dim=-1)
        else:
            text = self.encode_text(batch["input_ids"], batch["attention_mask"])
        return {"image": image, "text": text.float(), "target_ids": batch["target_ids"]}

    def loss_from_latents(self, latents: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        loss = unicl_loss(latents["image"], latents["text"], latents["target_ids"], self.logit_scale.float())
        return {"loss": loss, "temperature": (1.0 / self.logit_scale.exp()).detach()}


class CurationMixin:
    """Adds prototype curation to a recipe exposing ``joint_latents`` / ``loss_from_latents`` (module docstring)."""

    curation_epochs = 1

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        for hook in ("joint_latents", "loss_from_latents"):
            if not callable(getattr(self, hook, None)):
                raise ConfigError(f"recipe '{self.name}' cannot be curated: it has no {hook}() (see greenfm.methods.curated)")
        cfg = self.config
        self.curator = PrototypeCurator(2 * self.latent_width, clusters=cfg.clusters, max_per_cluster=cfg.max_per_cluster or 1,
                                        thinning=cfg.thinning, seed=cfg.prototype_seed,
                                        kmeans_backend=cfg.kmeans_backend)  # fmt: skip
        self.lr_horizon = cfg.lr_horizon
        self.register_buffer("curation_batch", torch.zeros((), dtype=torch.long))  # global batch B, set at step 1
        self.curating = True
        self.flags = {**self.flags, "curation": {k: getattr(cfg, k) for k in CurationOptions.model_fields}}

    # --- engine hooks --------------------------------------------------------------------

    def setup(self, context: Any) -> None:
        super().setup(context)
        self.curator.setup(context)

    def warm_up(self, batches: Iterator[dict[str, Any]]) -> None:
        """Prototypes from the initial model: k-means on the first ``warmup_samples`` of epoch 1."""
        if bool(self.curator.initialized):
            return
        need = math.ceil(self.config.warmup_samples / self.context.world_size)
        latents, ids, have = [], [], 0
        was_training = self.training
        self.eval()
        try:
            for batch in batches:
                rows = self.joint_latents(batch)
                latents.append(self._joint(rows).detach())
                ids.append(torch.as_tensor(batch["index"]).to(latents[-1].device))
                have += len(ids[-1])
                if have >= need:
                    break
        finally:
            self.train(was_training)
        self.curator.initialize(torch.cat(latents), torch.cat(ids), limit=self.config.warmup_samples)

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self.curating = epoch < self.curation_epochs and self.curator.subset is None
        if not self.curating:
            self.curator.finish()

    def training_subset(self) -> list[int] | None:
        """The fixed curated subset (dataset indices) once the curation epoch is over, else None."""
        return self.curator.subset

    def curation_summary(self) -> dict[str, Any]:
        return {**self.curator.summary(), "global_batch": int(self.curation_batch),
                "curation_mode": self.config.curation_mode}  # fmt: skip

    def commit_curation(self) -> None:
        """After an optimiser step of the curation epoch: record the step's selection, move the prototypes."""
        if self.curating:
            if int(self.curation_batch) == 0 and getattr(self, "_staged_batch", 0):
                self.curation_batch.fill_(self._staged_batch)
            self.curator.update()

    def on_after_optimizer_step(self, step: int) -> None:
        self.commit_curation()
        super().on_after_optimizer_step(step)

    # --- the step ------------------------------------------------------------------------

    @staticmethod
    def _joint(latents: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.normalize(torch.cat([latents["image"].float(), latents["text"].float()], dim=1), dim=1)

    def _max_per_cluster(self, global_batch: int) -> None:
        """m for this batch: the configured one, else scaled to the run's global batch (the first step's,
        fixed once a step is taken so a short last batch does not change it)."""
        batch = int(self.curation_batch) or global_batch
        self._staged_batch = batch
        self.curator.max_per_cluster = self.config.max_per_cluster or scaled_max_per_cluster(batch, self.config.clusters)

    def training_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        if not self.curating:
            gathered = {k: self.context.all_gather(v) for k, v in self.joint_latents(batch).items()}
            return {**self.loss_from_latents(gathered), "kept_fraction": torch.tensor(1.0)}
        if not bool(self.curator.initialized):
            raise ConfigError(f"recipe '{self.name}': curation needs its warm-up (run it through greenfm.engine.fit, "
                              "or call warm_up(batches) first)")  # fmt: skip
        ids = self.context.all_gather(torch.as_tensor(batch["index"]).to(batch["image"].device))
        if self.config.curation_mode == "two_pass":
            return self._two_pass(batch, ids)
        gathered = {k: self.context.all_gather(v) for k, v in self.joint_latents(batch).items()}
        self._max_per_cluster(len(ids))
        keep = self.curator.select(self._joint(gathered), ids)
        rows = keep if bool(keep.any()) else torch.ones_like(keep)
        out = self.loss_from_latents({k: v[rows] for k, v in gathered.items()})
        return {**out, "samples_trained": rows.sum().float() / self.context.world_size,
                "kept_fraction": keep.float().mean()}  # fmt: skip

    def _two_pass(self, batch: dict[str, Any], ids: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            joint = self.context.all_gather(self._joint(self.joint_latents(batch)))
        self._max_per_cluster(len(ids))
        keep = self.curator.select(joint, ids)
        sizes = self.context.all_gather(torch.tensor([len(batch["index"])], device=keep.device))
        start = int(sizes[: self.context.rank].sum())
        local = keep[start : start + int(sizes[self.context.rank])]
        if not bool(keep.any()):
            local = torch.ones_like(local)
        rows = torch.nonzero(local).squeeze(1)
        sub = {k: _take(v, rows) for k, v in batch.items()}
        gathered = {k: self.context.all_gather(v) for k, v in self.joint_latents(sub).items()}
        out = self.loss_from_latents(gathered)
        trained = float(keep.sum()) if bool(keep.any()) else float(len(keep))
        return {**out, "samples_trained": torch.tensor(trained / self.context.world_size),
                "kept_fraction": keep.float().mean()}  # fmt: skip


def _take(value: Any, rows: torch.Tensor) -> Any:
    """Rows of one batch entry (tensors with a batch dimension, lists); anything else as it is."""
    if isinstance(value, torch.Tensor) and value.ndim >= 1:
        return value[rows.to(value.device)]
    if isinstance(value, list):
        return [value[i] for i in rows.tolist()]
    return value


def curated(recipe: type, name: str | None = None) -> type:
    """``recipe`` with curation: a subclass whose ``Config`` adds :class:`CurationOptions`."""
    config = type(f"Curated{recipe.Config.__name__}", (recipe.Config, CurationOptions), {})
    own = callable(getattr(recipe, "joint_latents", None))
    hooks = (UniCLLatents,) if not own and issubclass(recipe, UniCL) else ()  # others must bring the hook
    return type(f"Curated{recipe.__name__}", (CurationMixin, *hooks, recipe),
                {"name": name or f"curated-{recipe.name}", "Config": config, "__module__": __name__})


CuratedUniCL = curated(UniCL)
CuratedCLIP = curated(CLIP)


class CuratedGreenRFM(curated(GreenRFM, "curated-greenrfm")):
    """GreenRFM's align stage on a curated subset; stages image and text train with ``greenrfm``."""

    stages = ("align",)

    def __init__(self, stage: str, *args: Any, **kwargs: Any):
        if stage != "align":
            raise ConfigError(f"curated-greenrfm curates the align stage; train stage {stage} with --recipe greenrfm")
        super().__init__(stage, *args, **kwargs)
