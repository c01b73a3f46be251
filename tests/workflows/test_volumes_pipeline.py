"""CT phantom volumes through embed, probe, finetune (linear, full) and pretrain with 3-D encoders."""

from __future__ import annotations

import json

import pytest
import torch

from greenfm import api
from greenfm.data.cache import build_cache
from greenfm.data.contract import get_contract
from greenfm.data.embeddings import read_embeddings
from greenfm.data.manifest import load_manifest
from greenfm.data.volume_dataset import VolumeDataset
from greenfm.errors import ConfigError
from greenfm.models import create_encoder
from greenfm.workflows.finetune import run_finetune
from greenfm.workflows.inputs import encoder_contract, image_dataset

SMALL = {"preset": "ct-chest", "size": [8, 16, 16], "pad_size": [10, 20, 20], "spacing": [6.0, 3.0, 3.0]}


@pytest.fixture(scope="module")
def ct_split(tmp_path_factory):
    """16 CT phantom patients (32 x 32 in-plane, 16 slices), split by patient, with a small-crop
    contract file and a cache built once (one process) for every test of the module."""
    from greenfm.data.phantoms import generate_phantoms
    from greenfm.data.splits import split_manifest

    root = tmp_path_factory.mktemp("ct_volumes")
    source = generate_phantoms(root / "phantoms", kind="ct", n_patients=16, size=32, seed=3, workers=1)
    split = split_manifest(source, root / "split.csv", val=0.25, test=0.3, seed=0)
    contract_file = root / "small.json"
    contract_file.write_text(json.dumps(SMALL))
    build_cache(load_manifest(root / "split.csv"), get_contract(contract_file), root / "cache", progress=False, workers=1)
    return {"data": root / "split.csv", "contract": str(contract_file), "cache": root / "cache", "split": split}


def test_3d_encoders_get_volume_contracts_and_mismatches_fail_in_one_line(ct_split):
    r3d, vit = create_encoder("r3d_18_lite"), create_encoder("vit_tiny_test")
    manifest = load_manifest(ct_split["data"])
    assert encoder_contract(r3d, None, data=manifest).size == (96, 192, 192)  # ct-chest: the data name no modality
    assert encoder_contract(r3d, None, modality="mri", data=manifest).intensity == "percentile-zscore"
    assert encoder_contract(r3d, ct_split["contract"]).size == (8, 16, 16)
    for encoder, contract, message in ((r3d, "cxr-medpeft", "r3d_18_lite takes volumes"),
                                       (vit, "ct-chest", "is for 3-D volumes")):  # fmt: skip
        with pytest.raises(ConfigError, match=message) as err:
            encoder_contract(encoder, contract)
        assert "\n" not in str(err.value)
    contract = get_contract(ct_split["contract"])
    training = image_dataset(manifest, contract, cache_root=ct_split["cache"], augment=None)
    evaluation = image_dataset(manifest, contract, cache_root=ct_split["cache"])
    assert isinstance(training, VolumeDataset) and training.train and not evaluation.train
    with pytest.raises(ConfigError, match="2-D image augmentation"):
        from greenfm.data.augment import get_augment

        image_dataset(manifest, contract, augment=get_augment("cxr", get_contract("cxr-medpeft")))


def test_embed_then_probe_volumes(ct_split, tmp_path):
    path = api.embed(model="random", backbone="r3d_18_lite", data=ct_split["data"], out=tmp_path / "e.parquet",
                     contract=ct_split["contract"], cache=ct_split["cache"], batch_size=16, num_workers=0, threads=1)
    table = read_embeddings(path)
    assert table.vectors.shape == (len(load_manifest(ct_split["data"])), 512)
    assert torch.isfinite(torch.tensor(table.vectors)).all() and table.metadata["pool"] == "avg"
    assert table.metadata["contract"]["pad_size"] == [10, 20, 20]
    result = api.probe(embeddings=path, labels=ct_split["data"], bootstrap=20, out=tmp_path / "probe")
    assert (tmp_path / "probe" / "probe.json").is_file() and result is not None


@pytest.mark.parametrize("mode", ["linear", "full"])
def test_finetune_a_3d_encoder(ct_split, tmp_path, mode):
    lines: list[str] = []
    result = run_finetune(model="random", backbone="r3d_18_lite", data=ct_split["data"], out=tmp_path / mode, mode=mode,
                          contract=ct_split["contract"], cache=ct_split["cache"], max_steps=2, batch_size=8,
                          bootstrap=20, echo=lines.append)  # fmt: skip
    counts = result.parameters
    assert (counts["trainable"] == 512 * 2 + 512 * result.classifier["num_classes"] + result.classifier["num_classes"]
            if mode == "linear" else counts["trainable"] == counts["total"])  # fmt: skip
    assert result.test is not None and 0.0 <= (result.test["macro_auroc"] or 0.0) <= 1.0
    saved = json.loads((tmp_path / mode / "finetune.json").read_text())
    assert saved["classifier"]["mode"] == mode and (tmp_path / mode / "exported" / "best.safetensors").is_file()
    assert any(line.startswith("trainable parameters") for line in lines)


def test_lora_on_a_3d_cnn_is_refused_in_one_line(ct_split, tmp_path):
    with pytest.raises(ConfigError, match="LoRA applies to ViTs, and r3d_18_lite is a 3-D CNN") as err:
        run_finetune(model="random", backbone="r3d_18_lite", data=ct_split["data"], out=tmp_path / "lora",
                     mode="lora", contract=ct_split["contract"], cache=ct_split["cache"], echo=lambda _: None)
    assert "\n" not in str(err.value)


def test_supervised_pretraining_of_a_3d_encoder(ct_split, tmp_path):
    api.pretrain(recipe="supervised", data=ct_split["data"], out=tmp_path / "run", backbone="r3d_18_lite",
                 contract=ct_split["contract"], max_steps=2, batch_size=8, num_workers=0, cache=ct_split["cache"])
    exported = json.loads((tmp_path / "run" / "exported" / "config.json").read_text())
    assert exported["preprocessing"]["size"] == [8, 16, 16] and exported["preprocessing"]["pad_size"] == [10, 20, 20]
    path = api.embed(model=tmp_path / "run", data=ct_split["data"], out=tmp_path / "e.parquet", cache=ct_split["cache"],
                     batch_size=16, num_workers=0, threads=1)  # the run's own volume contract
    assert read_embeddings(path).vectors.shape[1] == 512


def test_shared_nifti_and_dicom_series_are_embedded(shared_data, tmp_path):
    import pandas as pd

    folder = shared_data / "volumes"
    names = ("example_ct_sm.nii.gz", "example_ct_dicom")
    pd.DataFrame([{"path": str(folder / n), "patient_id": f"p{k}"} for k, n in enumerate(names)]).to_csv(
        tmp_path / "shared.csv", index=False)
    (tmp_path / "coarse.json").write_text(json.dumps({**SMALL, "spacing": [6.0, 6.0, 6.0]}))
    path = api.embed(model="random", backbone="r3d_18", data=tmp_path / "shared.csv", out=tmp_path / "e.parquet",
                     contract=str(tmp_path / "coarse.json"), cache=tmp_path / "cache", num_workers=0, threads=1)
    table = read_embeddings(path)
    assert table.vectors.shape == (2, 512) and [p.rsplit("/", 1)[-1] for p in table.paths] == list(names)
