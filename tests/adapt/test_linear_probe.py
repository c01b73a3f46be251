"""Linear probes: protocols, task types, bad inputs, and the `probe` verb end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from greenfm.adapt.linear_probe import fit_probes, probe, run_probe
from greenfm.data.embeddings import Embeddings, read_embeddings, write_embeddings
from greenfm.errors import BadInputError, ConfigError, GreenfmError


def make_table(n_patients=150, per_patient=2, findings=("effusion", "nodule"), seed=0):
    """Manifest-like table with patient-level splits and 0/1 findings."""
    rng = np.random.default_rng(seed)
    patient = np.repeat(np.arange(n_patients), per_patient)
    split = rng.choice(["train", "val", "test"], n_patients, p=[0.6, 0.2, 0.2])[patient]
    table = pd.DataFrame(
        {"id": [f"img{i}" for i in range(len(patient))], "path": [f"img{i}.png" for i in range(len(patient))],
         "patient_id": [f"p{p}" for p in patient], "split": split}
    )  # fmt: skip
    for f in findings:
        table[f] = (rng.random(len(table)) < 0.35).astype(float)
    return table


def separable(table, findings, dim=12, signal=2.5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(len(table), dim))
    for j, f in enumerate(findings):
        x[:, j] += signal * np.nan_to_num(table[f].to_numpy())
    return x


def test_probe_beats_chance_on_separable_embeddings_and_not_on_noise():
    table = make_table()
    x = separable(table, ["effusion", "nodule"])
    result = run_probe(x, table, bootstrap=200)
    assert result.task == "multilabel" and result.test.n_evaluable == 2
    assert all(f.auroc > 0.9 and f.auroc_ci[0] > 0.8 for f in result.test.findings)
    noise = run_probe(np.random.default_rng(9).normal(size=x.shape), table, bootstrap=200)
    assert abs(noise.test.macro_auroc - 0.5) < 0.12
    low, high = noise.test.macro_auroc_ci
    assert low < 0.5 < high


def test_retfound_green_protocol_is_the_plain_sklearn_pipeline():
    table = make_table(findings=("effusion",))
    x = separable(table, ["effusion"], signal=1.0)
    result = run_probe(x, table, bootstrap=0)
    train, test = (table.split == "train").to_numpy(), (table.split == "test").to_numpy()
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=20000, random_state=42))
    reference.fit(x[train], table.effusion[train])
    expected = reference.predict_proba(x[test])[:, 1]
    got = result.predictions.query("split == 'test'")["score"].to_numpy()
    np.testing.assert_allclose(got, expected, atol=1e-12)
    assert result.test["effusion"].auroc == pytest.approx(roc_auc_score(table.effusion[test], expected))
    assert result.task == "binary" and result.chosen_c == 1.0 and result.test.bootstrap is None


def test_tuned_protocol_chooses_c_on_validation_and_needs_a_val_split():
    table = make_table()
    x = separable(table, ["effusion", "nodule"], dim=40, signal=0.8)
    result = run_probe(x, table, protocol="tuned", c_grid=[1e-3, 1e-2, 1e-1, 1.0], bootstrap=0)
    assert result.chosen_c in (1e-3, 1e-2, 1e-1, 1.0)
    by_c = result.val_macro_auroc_by_c
    assert by_c[f"{result.chosen_c:g}"] == max(by_c.values())
    with pytest.raises(GreenfmError, match="validation split"):
        run_probe(x, table.assign(split=table.split.replace("val", "train")), protocol="tuned", bootstrap=0)


def test_multilabel_excludes_nan_and_uncertain_labels_per_finding():
    table = make_table()
    rng = np.random.default_rng(1)
    x = separable(table, ["effusion", "nodule"])
    labels = table[["effusion", "nodule"]].to_numpy()
    labels[rng.random(labels.shape) < 0.2] = np.nan
    labels[rng.random(labels.shape) < 0.1] = -1
    train = (table.split == "train").to_numpy()
    fitted = fit_probes(x[train], labels[train], task="multilabel", names=["effusion", "nodule"])
    keep = train & np.isin(labels[:, 1], [0, 1])
    reference = make_pipeline(StandardScaler(), LogisticRegression(max_iter=20000, random_state=42))
    reference.fit(x[keep], labels[keep, 1])
    np.testing.assert_allclose(fitted.predict(x)[:, 1], reference.predict_proba(x)[:, 1], atol=1e-12)
    result = run_probe(x, table.assign(effusion=labels[:, 0], nodule=labels[:, 1]), bootstrap=50)
    test = (table.split == "test").to_numpy()
    assert result.test["nodule"].n == int(np.isin(labels[test, 1], [0, 1]).sum())


def test_multiclass_from_one_hot_columns_and_from_an_integer_column():
    table = make_table(findings=())
    rng = np.random.default_rng(2)
    grade = rng.integers(0, 3, len(table))
    x = rng.normal(size=(len(table), 8))
    x[np.arange(len(table)), grade] += 2.5
    one_hot = table.assign(**{f"grade{k}": (grade == k).astype(float) for k in range(3)})
    by_columns = run_probe(x, one_hot, task="multiclass", bootstrap=100)
    by_integer = run_probe(x, table.assign(grade=grade.astype(float)), bootstrap=100)  # auto: > 2 values
    assert by_columns.task == by_integer.task == "multiclass"
    assert by_integer.names == ["grade=0", "grade=1", "grade=2"]
    assert by_columns.test.macro_auroc == pytest.approx(by_integer.test.macro_auroc)
    test = (table.split == "test").to_numpy()
    scores = by_integer.predictions.query("split == 'test'").pivot(index="id", columns="finding", values="score")
    proba = scores.loc[table.id[test], by_integer.names].to_numpy()
    assert np.allclose(proba.sum(axis=1), 1.0)  # one multinomial model, not one per class
    expected = roc_auc_score(grade[test], proba, multi_class="ovr", average="macro")
    assert by_integer.test.macro_auroc == pytest.approx(expected)
    assert by_integer.test.macro_auroc > 0.85


def test_findings_that_cannot_be_fitted_are_skipped_and_counted():
    table = make_table(findings=("effusion", "nodule", "mass", "rare"))
    table["mass"] = np.nan  # never labelled
    table.loc[table.split == "train", "rare"] = 0  # one class in train
    x = separable(table, ["effusion", "nodule"])
    result = run_probe(x, table, bootstrap=50)
    assert result.skipped == {"mass": "no labels in train", "rare": result.skipped["rare"]}
    assert result.skipped["rare"].startswith("one class in train")
    assert (result.test.n_evaluable, result.test.n_classes) == (2, 4)
    assert result.test["rare"].auroc is None and result.test["rare"].skipped.startswith("one class")
    assert set(result.predictions.finding) == {"effusion", "nodule"}
    with pytest.raises(GreenfmError, match="no finding can be fitted"):
        run_probe(x, table, findings=["mass", "rare"], bootstrap=0)


def test_bad_splits_give_clear_errors():
    table = make_table()
    x = separable(table, ["effusion"])
    with pytest.raises(GreenfmError, match=r"no 'test' split \(splits found: train, val\)$"):  # plain names
        run_probe(x, table.assign(split=table.split.replace("test", "val")))
    with pytest.raises(GreenfmError, match="no 'split' column"):
        run_probe(x, table.drop(columns="split"))
    leaky = table.copy()
    leaky.loc[0, "split"], leaky.loc[1, "split"] = "train", "test"  # one patient, two splits
    with pytest.raises(GreenfmError, match="1 patient"):
        run_probe(x, leaky)
    with pytest.raises(ConfigError, match="'retfound-green', 'tuned'"):
        run_probe(x, table, protocol="best")
    with pytest.raises(GreenfmError, match="not in the manifest"):
        run_probe(x, table, findings=["fracture"])


def test_probe_verb_joins_files_on_id_and_writes_results(tmp_path):
    table = make_table()
    x = separable(table, ["effusion", "nodule"]).astype(np.float32)
    manifest = tmp_path / "manifest.csv"
    table.sample(frac=1.0, random_state=0).to_csv(manifest, index=False)  # row order differs from the embeddings
    extra = pd.DataFrame({"id": ["unused"], "patient_id": ["pX"], "path": ["u.png"]})
    emb = Embeddings(
        ids=pd.concat([table.id, extra.id]), patient_ids=pd.concat([table.patient_id, extra.patient_id]),
        paths=pd.concat([table.path, extra.path]), vectors=np.vstack([x, np.zeros((1, x.shape[1]))]),
        metadata={"model": "tiny", "pool": "avg"},
    )  # fmt: skip
    emb_file = write_embeddings(tmp_path / "emb.parquet", emb)
    result = probe(emb_file, manifest, bootstrap=100, seed=3, out=tmp_path / "run")
    assert result.test.macro_auroc > 0.9 and result.counts["n_unused_embeddings"] == 1
    saved = json.loads((tmp_path / "run" / "probe.json").read_text())
    assert saved["test"]["bootstrap"] == {
        "n_resamples": 100, "seed": 3, "level": 0.95, "cluster": "patient",
        "n_clusters": result.counts["n_test_patients"], "method": "percentile",
    }  # fmt: skip
    assert saved["sources"]["embeddings_metadata"]["model"] == "tiny" and saved["sources"]["manifest_hash"]
    preds = pd.read_parquet(tmp_path / "run" / "predictions.parquet")
    assert set(preds.columns) == {"id", "patient_id", "split", "finding", "label", "score"}
    assert len(preds.query("split == 'test'")) == 2 * result.counts["n_test_images"]


def test_embeddings_round_trip_and_id_mismatch(tmp_path):
    table = make_table(n_patients=20)
    x = np.random.default_rng(0).normal(size=(len(table), 5)).astype(np.float32)
    emb = Embeddings(table.id, table.patient_id, table.path, x, {"model": "m"})
    path = write_embeddings(tmp_path / "e.parquet", emb)
    back = read_embeddings(path)
    np.testing.assert_array_equal(back.vectors, x)
    assert back.metadata == {"model": "m", "dim": 5} and list(back.ids) == list(table.id)
    rest = Embeddings(table.id[3:], table.patient_id[3:], table.path[3:], x[3:])
    partial = write_embeddings(tmp_path / "partial.parquet", rest)
    manifest = tmp_path / "m.csv"
    table.to_csv(manifest, index=False)
    with pytest.raises(BadInputError, match=r"3 of 40 manifest id\(s\) have no embedding .*\['img0', 'img1', 'img2'\]"):
        probe(partial, manifest, bootstrap=0)
    with pytest.raises(BadInputError, match="not found"):
        read_embeddings(tmp_path / "missing.parquet")
    with pytest.raises(BadInputError, match="missing column"):
        table.to_parquet(tmp_path / "bad.parquet")
        read_embeddings(tmp_path / "bad.parquet")


def test_breastmnist_raw_pixels_beat_chance(shared_data):
    data = np.load(shared_data / "medmnist" / "breastmnist_28.npz")
    xs, frames = [], []
    for split in ("train", "val", "test"):
        images = data[f"{split}_images"]
        xs.append(images.reshape(len(images), -1).astype(np.float32) / 255)
        frames.append(pd.DataFrame({"split": split, "malignant": (data[f"{split}_labels"][:, 0] == 0).astype(float)}))
    table = pd.concat(frames, ignore_index=True)
    table["id"] = [f"breast{i}" for i in range(len(table))]
    table["patient_id"] = table["id"]  # MedMNIST has no patient ids: each image is its own patient
    result = run_probe(np.concatenate(xs), table, bootstrap=200)
    assert result.test["malignant"].auroc > 0.6


def test_auto_reads_one_hot_columns_as_multiclass_like_finetune_and_reports_accuracy():
    from greenfm.data.manifest import Manifest
    from greenfm.data.tasks import resolve_task

    table = make_table(findings=())
    rng = np.random.default_rng(3)
    grade = rng.integers(0, 3, len(table))
    x = rng.normal(size=(len(table), 8))
    x[np.arange(len(table)), grade] += 2.5
    one_hot = table.assign(**{f"class_{k}": (grade == k).astype(float) for k in range(3)})
    result = run_probe(x, one_hot, task="auto", bootstrap=0)
    manifest = Manifest(one_hot.assign(path=[f"/x/{p}" for p in one_hot.path]), ["class_0", "class_1", "class_2"])
    assert result.task == resolve_task(manifest, None, "auto")[0] == "multiclass"
    c = result.classification
    test = (table.split == "test").to_numpy()
    assert c["n"] == int(test.sum()) and np.asarray(c["matrix"]).sum() == c["n"]
    assert c["accuracy"] == pytest.approx(np.trace(np.asarray(c["matrix"])) / c["n"]) and c["accuracy"] > 0.6
    assert "accuracy" in result.summary() and "test_classification" in result.to_dict()
