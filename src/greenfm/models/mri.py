"""The three-plane MRI encoder of GreenRFM (METHODS 3.6, "MRI"): one 3D ResNet-18 per plane.

A study is three stacks (sagittal, coronal, transverse), each holding the PD, T1 and T2
sequences of that plane as channels: input (B, 3 planes, 3 sequences, D, H, W), a missing
sequence being zeros. Each plane has its own torchvision ``r3d_18`` whose ``stem[0]`` is
``Conv3d(3, 64, k=(1, 2, 2), s=(1, 2, 2), padding=0, bias=False)`` (in-plane patches only:
MRI slices are thick) and ``fc = Identity``; the three pooled 512-d plane features are
averaged into the study's 512-d embedding.

The bare model (``ThreePlaneR3D``) is an ``nn.ModuleDict`` of the three towers keyed by
plane, so its state dict (``sag.stem.0.weight``, ...) loads into a plain rebuild::

    towers = nn.ModuleDict()
    for plane in spec["planes"]:
        m = torchvision.models.video.r3d_18()
        m.stem[0] = nn.Conv3d(**spec["replace"]["stem.0"]["args"]); m.fc = nn.Identity()
        towers[plane] = m
    embedding = torch.stack([towers[p](x[:, i]) for i, p in enumerate(spec["planes"])]).mean(0)

``greenfm.models.create_encoder("r3d_18_mri")`` wraps it in an ``Encoder`` (``embed`` and
``forward`` give the 512-d study feature); exports and ``load_exported_encoder`` rebuild it
from the ``spec``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from greenfm.errors import BadInputError, ConfigError
from greenfm.models.video3d import R3D_WIDTH, build_r3d, r3d_features, r3d_spec
from greenfm.models.weights import LoadReport, load_kinetics_r3d, load_state_dict_into, read_state_dict, resolve_weights

PLANES = ("sag", "cor", "tra")  # sagittal, coronal, transverse (axial)
SEQUENCES = ("pd", "t1", "t2")
# greenfm name -> (stem kernel, stem stride): in-plane 2x2 patches, every slice kept
MRI_VARIANTS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {"r3d_18_mri": ((1, 2, 2), (1, 2, 2))}
MRI_OVERRIDES = frozenset({"stem_kernel", "stem_stride"})

# METHODS 3.4 / 3.6 for a recipe whose image tower is this encoder (``is_three_plane_spec(encoder.spec)``):
# the align stage as for CT (AdamW lr 1e-5, wd 0, 5 epochs, grad-norm clip 0.5, fp32, no warm-up) but with a
# cosine per step and batch 8; reports tokenised to 256 tokens instead of 128.
MRI_ALIGN_TRAIN = {"epochs": 5, "batch_size": 8, "lr": 1e-5, "min_lr": 0.0, "weight_decay": 0.0, "schedule": "cosine",
                   "schedule_interval": "step", "warmup": 0, "grad_clip": 0.5, "precision": "32"}  # fmt: skip
MRI_TEXT_MAX_LENGTH = 256


def mri_spec(
    name: str = "r3d_18_mri",
    *,
    in_chans: int = len(SEQUENCES),
    stem_kernel: int | tuple[int, int, int] | None = None,
    stem_stride: int | tuple[int, int, int] | None = None,
) -> dict[str, Any]:
    """The JSON-able recipe of the three-plane encoder: one ``r3d_spec`` tower per plane, averaged."""
    if name not in MRI_VARIANTS:
        raise ConfigError(f"unknown MRI encoder '{name}'; choose one of {sorted(MRI_VARIANTS)}")
    kernel, stride = MRI_VARIANTS[name]
    kernel = stem_kernel if stem_kernel is not None else kernel
    stride = stem_stride if stem_stride is not None else (stride if stem_kernel is None else kernel)
    spec = r3d_spec("r3d_18", in_chans=in_chans, stem_kernel=kernel, stem_stride=stride)
    spec.update(planes=list(PLANES), fuse="mean", greenfm_name=name)
    if in_chans == len(SEQUENCES):
        spec["sequences"] = list(SEQUENCES)  # the channel order of each plane
    return spec


def is_three_plane_spec(spec: dict[str, Any]) -> bool:
    return spec.get("library") == "torchvision" and bool(spec.get("planes"))


class ThreePlaneR3D(nn.ModuleDict):
    """Three torchvision ``r3d_18`` towers keyed by plane; plane features averaged.

    ``forward(x)`` takes (B, P, C, D, H, W) and returns (B, 512). ``forward_features`` gives the
    plane feature maps stacked on a plane axis, (B, 512, P, D', H', W'), so that averaging over
    every axis after the channel one is exactly the mean of the per-plane pooled features.
    """

    def __init__(self, towers: dict[str, nn.Module]):
        super().__init__(towers)
        self.planes = tuple(towers)
        self.num_features = R3D_WIDTH

    def _planes_of(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.ndim != 6 or x.shape[1] != len(self.planes):
            raise ConfigError(
                f"the three-plane MRI encoder takes (B, {len(self.planes)} planes, sequences, D, H, W); "
                f"got shape {tuple(x.shape)}"
            )
        return [x[:, i] for i in range(len(self.planes))]

    def forward_features(self, x: torch.Tensor, *, checkpoint_stages: bool = False) -> torch.Tensor:
        """(B, 512, P, D', H', W'); ``checkpoint_stages`` recomputes each tower's stages in backward (less memory)."""
        planes = zip(self.planes, self._planes_of(x))
        if not checkpoint_stages:
            return torch.stack([r3d_features(self[p], xp) for p, xp in planes], dim=2)
        from torch.utils.checkpoint import checkpoint

        maps = []
        for plane, xp in planes:
            tower = self[plane]
            for stage in (tower.stem, tower.layer1, tower.layer2, tower.layer3, tower.layer4):
                xp = checkpoint(stage, xp, use_reentrant=False)
            maps.append(xp)
        return torch.stack(maps, dim=2)

    def plane_features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled 512-d feature of each plane, (B, P, 512)."""
        return torch.stack([self[p](xp) for p, xp in zip(self.planes, self._planes_of(x))], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.plane_features(x).mean(dim=1)


def build_three_plane_r3d(spec: dict[str, Any]) -> ThreePlaneR3D:
    """The bare three-plane model of ``spec`` (random weights)."""
    return ThreePlaneR3D({plane: build_r3d(spec) for plane in spec["planes"]})


def load_three_plane_weights(model: ThreePlaneR3D, weights: Any) -> tuple[dict[str, Any], LoadReport]:
    """Initial weights for every tower: ``"random"``, ``"torchvision"`` (Kinetics-400 in each plane),
    a three-plane file (keys ``sag.stem.0.weight``, ...), or a one-tower 3D ResNet-18 file (a CT
    stage-1 export, say) copied into each plane. The replaced stems keep their init when shapes differ.
    """
    if str(weights) == "torchvision":
        reports = {}
        for plane in model.planes:
            source, reports[plane] = load_kinetics_r3d(model[plane])
        return source, _merged(reports)
    source, path = resolve_weights(weights, model, library="torchvision")
    if path is None:
        return source, LoadReport()
    state = read_state_dict(path)
    if any(k.split(".", 1)[0] in model.planes for k in state):
        report = load_state_dict_into(model, state)
    else:
        report = _merged({plane: load_state_dict_into(model[plane], state) for plane in model.planes})
    if len(report.missing) == len(model.state_dict()):
        raise BadInputError(
            f"no tensor in the file fits the three-plane r3d_18 (file keys start {sorted(state)[:3]})", source=str(path)
        )
    return source, report


def _merged(reports: dict[str, LoadReport]) -> LoadReport:
    out = LoadReport()
    for plane, report in reports.items():
        for name in ("missing", "unexpected", "skipped", "resampled", "adapted"):
            getattr(out, name).extend(f"{plane}.{entry}" for entry in getattr(report, name))
    return out
