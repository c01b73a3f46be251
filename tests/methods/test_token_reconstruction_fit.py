"""Token reconstruction through the engine's ``fit``: it trains, the teacher holds, the export is plain timm."""

from __future__ import annotations

import timm
import torch
from safetensors.torch import load_file
from torch.utils.data import Dataset

from greenfm.engine import TrainConfig, fit
from greenfm.methods import get_method
from greenfm.models import create_encoder


class SmoothImages(Dataset):
    def __init__(self, n: int = 16, size: int = 32):
        g = torch.Generator().manual_seed(0)
        low = torch.rand(n, 3, 4, 4, generator=g)
        self.images = (torch.nn.functional.interpolate(low, size=size, mode="bilinear") - 0.5) / 0.5

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i]}


def test_fit_trains_the_student_only_and_exports_plain_timm(tmp_path):
    torch.manual_seed(0)
    method_cls = get_method("token-reconstruction")
    method = method_cls(create_encoder("vit_tiny_test"))
    teacher_before = {k: v.clone() for k, v in method.teacher.state_dict().items()}
    student_before = method.student.pos_embed.detach().clone()
    data = SmoothImages()

    def held_out_loss() -> float:
        with torch.random.fork_rng(), torch.no_grad():
            torch.manual_seed(123)
            return method.training_step({"image": data.images})["loss"].item()

    start = held_out_loss()
    recipe = method_cls.default_train_config()
    config = TrainConfig(**{
        **recipe, "epochs": 12, "batch_size": 8, "lr": 1e-3, "warmup": 1, "t_initial": None, "min_lr": 1e-4,
        "warmup_lr_init": 1e-4, "num_workers": 0, "track_energy": False, "progress_bar": False,
        "accelerator": "cpu", "checkpoint_every_epochs": 12,
    })  # fmt: skip
    result = fit(method, data, config, tmp_path / "run")
    assert result.steps == 24
    method.train()
    assert held_out_loss() < 0.95 * start  # a short run; the plain-loop test measures more
    assert all(torch.equal(teacher_before[k], v) for k, v in method.teacher.state_dict().items())
    assert not torch.equal(method.student.pos_embed, student_before)

    spec = method.encoder.spec
    plain = timm.create_model(spec["name"], pretrained=False, **spec["kwargs"]).eval()
    plain.load_state_dict(load_file(str(result.exported)), strict=True)
    x = data.images[:2]
    method.eval()
    with torch.no_grad():
        assert torch.equal(plain.forward_features(x), method.student.forward_features(x))
