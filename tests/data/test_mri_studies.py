"""MRI-study manifests and ``MRIStudyDataset`` (METHODS 3.6, "MRI") on tiny NIfTI studies written here."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from greenfm.data.mri_studies import (
    KNEE_14,
    PATH_COLUMNS,
    SPINE_9,
    MRIStudyDataset,
    is_study_manifest,
    load_study_manifest,
    mri_study_dataset,
    positive_oversampling_weights,
)
from greenfm.errors import GreenfmError

PAD, CROP = (6, 16, 16), (4, 12, 12)  # tiny (D, H, W) stand-ins for (24, 240, 240) / (20, 192, 192)
SHARED_MR = Path(__file__).resolve().parents[3] / "shared" / "data" / "volumes" / "example_mr_sm.nii.gz"
SHARED_DICOM_SERIES = SHARED_MR.parent / "example_ct_dicom"  # a CT series: it stands in for an MR series folder


def write_volume(path: Path, seed: int, shape=(14, 12, 5)) -> None:
    """A NIfTI volume, (x, y, z) = (W, H, D) on disk, with an outlier voxel the percentile clip must tame."""
    data = np.random.default_rng(seed).normal(100.0 + seed, 20.0, size=shape).astype(np.float32)
    data[0, 0, 0] = 1e6
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))


def study(root: Path, name: str, cells: list[str], seed: int) -> dict[str, str]:
    """A study folder ``root/name`` with one file per named cell; the cells relative to ``root``."""
    out = {}
    for k, cell in enumerate(cells):
        write_volume(root / name / f"{cell}.nii.gz", seed + k)
        out[f"path_{cell}"] = f"{name}/{cell}.nii.gz"
    return out


ALL = [c.removeprefix("path_") for c in PATH_COLUMNS]


def knee_labels(positive: str | None = None, **given) -> dict[str, float]:
    labels = {f: 0.0 for f in KNEE_14[:-1]}
    if positive:
        labels[positive] = 1.0
    labels.update(given)
    return labels


def write_manifest(root: Path, rows: list[dict]) -> Path:
    path = root / "studies.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture
def two_studies(tmp_path):
    """Study A has all nine volumes; study B lacks sag T1 and the whole coronal plane."""
    rows = [
        {"patient_id": "p1", "split": "train", **study(tmp_path, "A", ALL, 0), **knee_labels("acl")},
        {"patient_id": "p2", "split": "val", **study(tmp_path, "B", ["sag_pd", "sag_t2", "tra_pd", "tra_t1", "tra_t2"], 20),
         **knee_labels()},
    ]
    return write_manifest(tmp_path, rows)


def test_items_are_planes_by_sequences_and_missing_ones_are_zeros(two_studies):
    assert is_study_manifest(pd.read_csv(two_studies).columns)
    dataset = mri_study_dataset(two_studies, train=False, skip_bad=False, labels=True, crop=CROP, pad=PAD)
    assert len(dataset) == 2 and dataset.problems == []
    a, b = dataset[0], dataset[1]
    assert a["image"].dtype == torch.float32 and tuple(a["image"].shape) == (3, 3, *CROP) and a["index"] == 0
    assert all(a["image"][p, s].abs().sum() > 0 for p in range(3) for s in range(3))
    image = b["image"]
    assert torch.count_nonzero(image[0, 1]) == 0, "sag T1 is missing: zeros"
    assert torch.count_nonzero(image[1]) == 0, "no coronal sequence: a zero plane"
    assert torch.count_nonzero(image[0, 0]) > 0 and torch.count_nonzero(image[2, 2]) > 0
    assert dataset.manifest.table["id"].tolist()[1].endswith("B/sag_pd.nii.gz")


def test_each_volume_is_clipped_to_its_percentiles_and_z_scored(two_studies):
    dataset = MRIStudyDataset(two_studies, pad_size=(5, 12, 14), crop_size=(5, 12, 14))  # the file's own size
    raw = dataset.read(0, "path_sag_pd")
    lo, hi = np.percentile(raw, [1, 99])
    clipped = np.clip(raw, lo, hi)
    expected = (clipped - clipped.mean()) / clipped.std()
    got = dataset[0]["image"][0, 0].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-3)
    assert got.max() < 4, "the 1e6 outlier is clipped before the z-score"


def test_training_crops_are_random_and_evaluation_crops_centred(two_studies):
    train = mri_study_dataset(two_studies, train=True, skip_bad=False, labels=False, crop=CROP, pad=PAD)
    evaluation = mri_study_dataset(two_studies, train=False, skip_bad=False, labels=False, crop=CROP, pad=PAD)
    assert "labels" not in train[0]
    torch.manual_seed(0)
    crops = [train[0]["image"] for _ in range(6)]
    assert any(not torch.equal(crops[0], c) for c in crops[1:])
    full = MRIStudyDataset(two_studies, pad_size=PAD, crop_size=PAD)[0]["image"]
    d, h, w = ((p - c) // 2 for p, c in zip(PAD, CROP))
    torch.testing.assert_close(evaluation[0]["image"], full[..., d:d + CROP[0], h:h + CROP[1], w:w + CROP[2]])


def test_nor_is_derived_from_the_other_knee_findings(tmp_path):
    cells = study(tmp_path, "S", ["sag_pd"], 0)
    rows = [
        {"patient_id": "a", "id": "all-zero", **cells, **knee_labels(), "knee_nor": 0},  # given NOR is wrong
        {"patient_id": "b", "id": "one-positive", **cells, **knee_labels("cartilage")},
        {"patient_id": "c", "id": "uncertain", **cells, **knee_labels(lcl=-1.0)},
        {"patient_id": "d", "id": "unknown", **cells, **knee_labels(pcl=np.nan)},
        {"patient_id": "d", "id": "unknown-said-normal", **cells, **knee_labels(pcl=np.nan), "knee_nor": 1},
        {"patient_id": "e", "id": "unknown-but-positive", **cells, **knee_labels("acl", pcl=np.nan)},
    ]
    manifest = load_study_manifest(write_manifest(tmp_path, rows))
    assert manifest.findings == list(KNEE_14)
    nor = manifest.table.set_index("id")["knee_nor"]
    assert nor["all-zero"] == 1 and nor["one-positive"] == 0 and nor["uncertain"] == -1
    assert np.isnan(nor["unknown"]) and nor["unknown-said-normal"] == 1 and nor["unknown-but-positive"] == 0


def test_missing_or_unreadable_studies_are_one_line_or_skipped_and_counted(tmp_path):
    good = study(tmp_path, "good", ["sag_pd", "tra_t2"], 0)
    broken = tmp_path / "bad" / "tra_t2.nii.gz"
    broken.parent.mkdir()
    broken.write_bytes(b"not a volume at all" * 30)
    rows = [
        {"patient_id": "p1", **good, "acl": 1},
        {"patient_id": "p2", "path_sag_pd": "gone/sag_pd.nii.gz", "acl": 0},
        {"patient_id": "p3", "path_tra_t2": "bad/tra_t2.nii.gz", "acl": 0},
        {"patient_id": "p4", "acl": 1},
    ]
    path = write_manifest(tmp_path, rows)
    with pytest.raises(GreenfmError) as err:
        load_study_manifest(path)
    message = str(err.value)
    assert "\n" not in message and "3 problem(s) in 4 rows" in message
    assert "row 3" in message and "path_sag_pd: file not found" in message
    assert "row 5" in message and "no sequence file" in message
    dataset = mri_study_dataset(path, train=False, skip_bad=True, labels=True, crop=CROP, pad=PAD)
    assert len(dataset) == 1 and len(dataset.problems) == 3
    assert [p.row for p in dataset.problems] == [2, 3, 4]
    assert "path_tra_t2: content is not valid NIFTI" in str(dataset.problems[1])
    assert tuple(dataset[0]["image"].shape) == (3, 3, *CROP)


def test_a_file_that_fails_to_decode_names_the_study_and_column(tmp_path, two_studies):
    dataset = mri_study_dataset(two_studies, train=False, skip_bad=False, labels=True, crop=CROP, pad=PAD)
    Path(dataset.manifest.table["path_tra_t1"].iat[1]).write_bytes(b"")  # emptied after loading
    with pytest.raises(GreenfmError, match=r"study '.*B/sag_pd.nii.gz' path_tra_t1: file is empty"):
        dataset[1]


def test_study_manifests_are_recognised_and_findings_can_name_a_vocabulary(two_studies):
    assert is_study_manifest(two_studies) and not is_study_manifest(["path", "patient_id", "acl"])
    dataset = mri_study_dataset(two_studies, train=False, findings="mri-knee-14", crop=CROP, pad=PAD)
    assert dataset.findings == list(KNEE_14) and dataset[0]["labels"].tolist() == [0, 0, 1] + [0] * 11
    with pytest.raises(GreenfmError, match=r"finding\(s\) \['disc_degeneration', 'disc_bulge'"):
        mri_study_dataset(two_studies, train=False, findings="mri-spine-9")
    with pytest.raises(GreenfmError, match="three positive"):
        mri_study_dataset(two_studies, train=False, crop=(0, 8, 8))


def test_reports_ride_along_for_image_text_stages(tmp_path):
    from greenfm.data.reports import WithReports, manifest_reports

    rows = [{"patient_id": "p", "report": "Tear of the medial meniscus.", **study(tmp_path, "S", ["sag_pd"], 0),
             **knee_labels("meniscus_medial")}]
    dataset = mri_study_dataset(write_manifest(tmp_path, rows), train=False, crop=CROP, pad=PAD)
    item = WithReports(dataset, manifest_reports(dataset.manifest))[0]
    assert item["report"] == "Tear of the medial meniscus." and item["labels"][0] == 1 and item["labels"][-1] == 0


def test_sequence_columns_outside_the_nine_are_refused(tmp_path):
    path = write_manifest(tmp_path, [{"patient_id": "p", "path_ax_t2": "x.nii.gz", **study(tmp_path, "S", ["tra_t2"], 0)}])
    with pytest.raises(GreenfmError, match=r"unknown column\(s\) \['path_ax_t2'\].*path_<plane>_<sequence>"):
        load_study_manifest(path)


def test_a_study_folder_column_anchors_the_sequence_cells(tmp_path):
    study(tmp_path / "site", "S1", ["cor_pd"], 0)
    path = write_manifest(tmp_path, [{"patient_id": "p", "path": "site/S1", "path_cor_pd": "cor_pd.nii.gz", "acl": 1}])
    manifest = load_study_manifest(path)
    assert manifest.table["path_cor_pd"].iat[0] == str(tmp_path / "site" / "S1" / "cor_pd.nii.gz")
    assert manifest.table["path"].iat[0] == str(tmp_path / "site" / "S1")


def test_oversampling_weights_raise_a_rare_finding_to_the_ratio():
    labels = np.zeros((100, 3), dtype=np.float32)
    labels[:4, 0] = 1  # rare: 4 of 100
    labels[:50, 1] = 1  # common
    labels[90:, 2] = np.nan  # unknown: neither positive nor negative
    weights = positive_oversampling_weights(labels, ratio=0.3)
    assert weights.shape == (100,) and weights.min() == 1.0
    share = weights[labels[:, 0] == 1].sum() / weights[labels[:, 0] == 0].sum()
    assert share >= 0.3 - 1e-6 and share < 0.4
    assert np.all(weights[50:] == 1.0)
    assert positive_oversampling_weights(labels, ratio=0.3, max_factor=2.0).max() == 2.0


def test_the_mri_vocabularies_match_the_dataset_and_the_rule_labeller():
    from greenfm.labeling import RuleLabeler, load_vocabulary

    for name, ids in (("mri-knee-14", KNEE_14), ("mri-spine-9", SPINE_9)):
        vocab = load_vocabulary(name)
        assert tuple(vocab.ids) == ids and vocab.findings[-1].kind == "no_finding"
        labeler = RuleLabeler(vocab)
        for finding in vocab.findings[:-1]:
            for phrase in finding.synonyms:
                assert labeler.label(f"Findings: {phrase} in the image.").codes[finding.id] == 1.0, (name, phrase)
        normal = labeler.label("Findings: no abnormality.").codes
        assert normal[ids[-1]] == 1.0 and all(normal[i] != 1.0 for i in ids[:-1])


@pytest.mark.skipif(not SHARED_MR.is_file(), reason="../shared/data/volumes/example_mr_sm.nii.gz is absent")
def test_a_real_mr_volume_as_a_single_sequence_study(tmp_path):
    path = write_manifest(tmp_path, [{"patient_id": "tsx", "id": "example", "path_tra_t2": str(SHARED_MR), **knee_labels()}])
    dataset = mri_study_dataset(path, train=False, skip_bad=False, labels=True)
    item = dataset[0]
    assert tuple(item["image"].shape) == (3, 3, 20, 192, 192)  # METHODS' (192, 192, 20) crop, (H, W, D) there
    nonzero = [(p, s) for p in range(3) for s in range(3) if torch.count_nonzero(item["image"][p, s])]
    assert nonzero == [(2, 2)]
    voxels = item["image"][2, 2]
    # the (D, H, W) = (20, 91, 117) volume, padded to (24, 240, 240) and centre-cropped: all of it is inside
    inside = voxels[:, 50:141, 37:154]
    assert abs(float(inside.mean())) < 1e-3 and abs(float(inside.std()) - 1.0) < 1e-2
    assert torch.count_nonzero(voxels) == torch.count_nonzero(inside)
    assert item["labels"][-1] == 1.0, "all knee findings 0: NOR is 1"


@pytest.mark.skipif(not SHARED_DICOM_SERIES.is_dir(), reason="../shared/data/volumes/example_ct_dicom is absent")
def test_a_cell_may_name_a_dicom_series_folder(tmp_path):
    path = write_manifest(tmp_path, [{"patient_id": "p", "path_sag_t1": str(SHARED_DICOM_SERIES), "acl": 0}])
    image = mri_study_dataset(path, train=False, crop=(20, 192, 192))[0]["image"]
    assert tuple(image.shape) == (3, 3, 20, 192, 192)
    assert torch.count_nonzero(image[0, 1]) > 0.9 * image[0, 1].numel()  # 512 x 512 slices fill the crop
    assert torch.count_nonzero(image) == torch.count_nonzero(image[0, 1])


def test_a_masked_bce_classifier_on_the_three_plane_encoder_learns(two_studies):
    from greenfm.labeling.policies import policy_masked_bce
    from greenfm.models import create_encoder

    torch.manual_seed(0)
    dataset = mri_study_dataset(two_studies, train=True, skip_bad=False, labels=True, crop=(2, 8, 8), pad=PAD)
    batch = torch.utils.data.default_collate([dataset[0], dataset[1]])
    batch["labels"][1, 3] = float("nan")  # an unknown label: masked out of the loss
    encoder = create_encoder("r3d_18_mri").train()
    head = torch.nn.Linear(encoder.embed_dim, len(dataset.findings))
    # The last residual block of every plane tower and the head train: a CPU test cannot afford the whole
    # 99M-parameter backward; gradients still have to cross the plane average into all three towers.
    trained = [p for n, p in encoder.named_parameters() if ".layer4.1." in n]
    for n, p in encoder.named_parameters():
        p.requires_grad_(".layer4.1." in n)
    before = {p: encoder.model[p].layer4[1].conv2[0].weight.detach().clone() for p in ("sag", "cor", "tra")}
    optimiser = torch.optim.SGD([*trained, *head.parameters()], lr=0.05, momentum=0.9)
    losses = []
    for _ in range(3):
        loss = policy_masked_bce(head(encoder(batch["image"])), batch["labels"])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    assert all(not torch.equal(before[p], encoder.model[p].layer4[1].conv2[0].weight) for p in before)
