"""Batched inference: embeddings equal per-image forwards, in order, whatever the batch size; Parquet round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from greenfm.data.embeddings import read_embeddings
from greenfm.engine.embed import embed_dataset, embed_to_file, resolve_precision
from greenfm.errors import ConfigError
from greenfm.models import create_encoder


class Items(Dataset):
    """ImageDataset-shaped items and row identifiers."""

    def __init__(self, n: int = 7):
        self.images = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        self.ids = [f"img{i}" for i in range(n)]
        self.patient_ids = [f"p{i // 2}" for i in range(n)]
        self.paths = [f"/data/img{i}.png" for i in range(n)]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "index": i, "labels": torch.tensor([float("nan")])}


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return create_encoder("vit_tiny_test")


def test_batched_embeddings_equal_single_image_forwards(encoder):
    data = Items()
    encoder.train()
    out = embed_dataset(encoder, data, batch_size=3, device="cpu")
    assert out.shape == (7, 64) and out.dtype == np.float32
    assert encoder.training  # mode restored
    with torch.no_grad():
        expected = torch.cat([encoder.eval().embed(data.images[i : i + 1]) for i in range(7)]).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(embed_dataset(encoder, data, batch_size=7), out, rtol=1e-5, atol=1e-6)


def test_pool_and_plain_inputs(encoder):
    data = Items(4)
    cls = embed_dataset(encoder, TensorDataset(data.images), pool="cls", batch_size=2)
    with torch.no_grad():
        tokens = encoder.eval().forward_features(data.images)
    np.testing.assert_allclose(cls, tokens[:, 0].numpy(), rtol=1e-5, atol=1e-6)
    bare = embed_dataset(encoder.model, data, pool="patch_mean")  # a bare timm model, e.g. export_model()
    np.testing.assert_allclose(bare, tokens[:, 5:].mean(1).numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="valid"):
        embed_dataset(encoder, data, pool="avg")


def test_precision_choices():
    assert resolve_precision("auto", torch.device("cpu")) is None  # fp32 on the CPU
    assert resolve_precision("bf16", torch.device("cpu")) is torch.bfloat16
    with pytest.raises(ConfigError, match="unknown precision"):
        resolve_precision("int8", torch.device("cpu"))


def test_embeddings_file_round_trip(encoder, tmp_path):
    data = Items(5)
    path = embed_to_file(encoder, data, tmp_path / "emb.parquet", pool="mean-all-tokens", batch_size=2,
                         metadata={"run": "test"})  # fmt: skip
    table = read_embeddings(path)
    assert list(table.ids) == data.ids and list(table.patient_ids) == data.patient_ids
    np.testing.assert_array_equal(table.vectors, embed_dataset(encoder, data))
    meta = table.metadata
    assert meta["pool"] == "mean-all-tokens" and meta["dim"] == 64 and meta["run"] == "test"
    assert meta["model"]["name"] == "vit_small_patch14_reg4_dinov2" and meta["weights"] == {"kind": "random"}


def test_a_dataset_without_ids_cannot_be_written(encoder, tmp_path):
    with pytest.raises(ConfigError, match="ids"):
        embed_to_file(encoder, TensorDataset(torch.zeros(2, 3, 32, 32)), tmp_path / "x.parquet")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_bf16_channels_last_matches_fp32(encoder):
    data = Items(6)
    fp32 = embed_dataset(encoder, data, device="cpu")
    fast = embed_dataset(encoder, data, device="cuda", precision="auto")
    assert next(encoder.parameters()).device.type == "cpu"  # device restored
    cosine = (fp32 * fast).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(fast, axis=1)
    assert cosine.min() > 0.99
