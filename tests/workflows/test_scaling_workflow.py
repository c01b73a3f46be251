"""``greenfm scaling`` end to end on phantoms: two image-text recipes on nested subsets at equal steps,
paired cell by cell; the init as n = 0; capped and merged sizes; resuming an interrupted study; the
one-line errors of a continued study with other sizes or steps; the report's scaling figures."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from greenfm import api
from greenfm.errors import ConfigError
from greenfm.models.text_tiny import tiny_text_tower
from greenfm.workflows import scaling as scaling_module
from greenfm.workflows.scaling import read_cells, run_scaling
from greenfm.workflows.scaling_config import ScalingConfig

TRAIN = {"batch_size": 8, "num_workers": 0, "lr": 1e-3, "track_energy": False, "accelerator": "cpu"}
STEPS = 2


@pytest.fixture(scope="module")
def text_folder(phantom_split, tmp_path_factory):
    reports = pd.read_csv(phantom_split)["report"].tolist()
    return str(tiny_text_tower(reports, max_length=48).save(tmp_path_factory.mktemp("scaling_text") / "tower"))


def _config(data, cache, **options):
    base = dict(data=str(data), sizes=[10, 1000, 2000], steps=STEPS, init="random", backbone="vit_tiny_test",
                img_size=32, cache=str(cache), train=TRAIN, bootstrap=30, fit_resamples=0)  # fmt: skip
    return ScalingConfig(**{**base, **options})


@pytest.fixture(scope="module")
def study(phantom_split, cache_root, text_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("scaling") / "study"
    config = _config(phantom_split, cache_root, recipe=["unicl", "clip"], eval=["probe", "zeroshot"],
                     text_tower=text_folder, method={"embed_dim": 16})  # fmt: skip
    run_scaling(config, out, echo=lambda _: None)
    return out, config


def test_subsets_are_nested_capped_and_merged(study):
    out, _ = study
    result = json.loads((out / "scaling.json").read_text())
    assert [s["requested"] for s in result["subsets"]][-1] == [1000, 2000]  # both beyond the data: one subset
    assert any("capped" in n for n in result["notes"]) and any("merged" in n for n in result["notes"])
    patients = [set(pd.read_parquet(out / "subsets" / f"{s['key']}.parquet")["patient_id"]) for s in result["subsets"]]
    assert all(small < large for small, large in zip(patients, patients[1:]))
    assert [len(p) for p in patients] == [s["patients"] for s in result["subsets"]]


def test_every_cell_trains_the_same_steps_and_batch_from_one_init(study):
    out, _ = study
    cells = [r for r in read_cells(out / "cells.jsonl").values() if r["kind"] == "pretrain"]
    assert len(cells) == 2 * 2
    for cell in cells:
        ledger = json.loads((out / cell["run_dir"] / "compute.json").read_text())
        assert ledger["optimizer_steps"] == STEPS and ledger["samples_seen"] == STEPS * 8
        assert cell["epochs"] == pytest.approx(STEPS * 8 / cell["images"])
        saved = (out / cell["run_dir"] / "config.yaml").read_text()
        assert str(out / "init" / cell["recipe"]) in saved  # every size starts from the recipe's one init
    points = pd.read_csv(out / "scaling_points.csv")
    init = points[(points["size"] == "init") & (points["evaluation"] == "probe")]
    assert init["value"].nunique() == 1  # unicl and clip start from the same seeded towers
    assert (init["training_flops"] == 0).all()
    trained = points[points["size"] != "init"]
    assert (trained["training_flops"] > 0).all() and trained["ci_low"].le(trained["value"]).all()


def test_recipes_pair_cell_by_cell(study):
    out, _ = study
    pairs = pd.read_csv(out / "scaling_pairs.csv")
    between = pairs[pairs["kind"] == "recipes"]
    assert set(between["comparison"]) == {"unicl - clip"}
    assert len(between) == 2 * 2  # probe and zero-shot at each of the two sizes
    assert (between["ci_low"] <= between["difference"]).all() and (between["difference"] <= between["ci_high"]).all()
    assert {"next-size", "vs-init"} <= set(pairs["kind"])
    result = json.loads((out / "scaling.json").read_text())
    names = {o["ordering"] for o in result["orderings"]}
    assert {"unicl >= clip at matched n", "unicl: non-decreasing in n", "clip: smallest n >= init"} <= names
    fits = {(f["recipe"], f["evaluation"]): f for f in result["fits"]}
    assert not fits[("unicl", "probe")]["fitted"] and "at least 4 sizes" in fits[("unicl", "probe")]["reason"]


def test_a_continued_study_with_other_sizes_or_steps_is_refused(study, phantom_split, cache_root, text_folder):
    out, config = study
    for change, word in (({"sizes": [10, 30]}, "sizes"), ({"steps": 3}, "steps")):
        with pytest.raises(ConfigError, match=f"other {word}"):
            run_scaling(config.model_copy(update=change), out, echo=lambda _: None)


def test_the_report_draws_a_figure_per_evaluation(study, tmp_path):
    out, _ = study
    page = api.report([out], out=tmp_path / "report.html").read_text()
    scaling = page[page.index('id="scaling"'):]
    assert scaling.count("data:image/png") >= 2 and "unicl - clip" in scaling
    assert "could not be drawn" not in page


def test_an_interrupted_study_continues_without_redoing_finished_work(phantom_split, cache_root, tmp_path, monkeypatch):
    out = tmp_path / "study"
    config = _config(phantom_split, cache_root, recipe=["token-reconstruction"], sizes=[10, 30], steps=4,
                     eval=["probe", "zeroshot"], train={**TRAIN, "checkpoint_every_steps": 1})  # fmt: skip
    real, calls = scaling_module.evaluate_cell, []

    def stop_at_the_second(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(scaling_module, "evaluate_cell", stop_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        run_scaling(config, out, echo=lambda _: None)
    small, large = (s["key"] for s in json.loads((out / "scaling_study.json").read_text())["plan"]["subsets"])
    done = read_cells(out / "cells.jsonl")
    assert set(done) == {"token-reconstruction/init/probe", f"token-reconstruction/{small}/pretrain"}
    first = (out / "cells" / f"token-reconstruction-{small}" / "compute.json").stat().st_mtime_ns
    # the second cell's pretraining stopped after its checkpoint at step 2 of 4: no export, no ledger
    from greenfm.workflows.pretrain import run_pretrain
    from greenfm.workflows.pretrain_config import PretrainConfig

    cell = out / "cells" / f"token-reconstruction-{large}"
    half = PretrainConfig(recipe="token-reconstruction", data=str(out / "subsets" / f"{large}.parquet"),
                          init=str(out / "init" / "token-reconstruction"), cache=str(cache_root),
                          train={**TRAIN, "max_steps": 2, "epochs": 2, "drop_last": True, "checkpoint_every_steps": 1,
                                 "schedule_interval": "step", "t_initial": 4, "warmup": 0})  # fmt: skip
    run_pretrain(half, cell)
    for leftover in ("compute.json", "exported"):
        path = cell / leftover
        __import__("shutil").rmtree(path) if path.is_dir() else path.unlink()

    monkeypatch.setattr(scaling_module, "evaluate_cell", real)
    messages = []
    run_scaling(config, out, echo=messages.append)
    assert (out / "cells" / f"token-reconstruction-{small}" / "compute.json").stat().st_mtime_ns == first
    assert any("resuming" in m for m in messages)
    ledger = json.loads((cell / "compute.json").read_text())
    assert ledger["optimizer_steps"] == 4
    done = read_cells(out / "cells.jsonl")
    assert len(done) == 5 and not any("zeroshot" in key for key in done)
    assert any("zero-shot does not apply to 'token-reconstruction'" in m for m in messages)


def test_an_unknown_recipe_or_a_split_less_manifest_is_one_line(phantom_split, cache_root, tmp_path):
    with pytest.raises(ConfigError, match="unknown method 'bogus'; valid: .*clip"):
        run_scaling(_config(phantom_split, cache_root, recipe=["bogus"]), tmp_path / "a", echo=lambda _: None)
    with pytest.raises(ConfigError, match="greenrfm trains in stages.*--recipe supervised"):  # before any work
        run_scaling(_config(phantom_split, cache_root, recipe=["clip", "greenrfm"]), tmp_path / "a", echo=lambda _: None)
    plain = tmp_path / "plain.csv"
    table = pd.read_csv(phantom_split).drop(columns="split")
    table["path"] = [str(phantom_split.parent / p) for p in table["path"]]
    table.to_csv(plain, index=False)
    with pytest.raises(ConfigError, match="no split column"):
        run_scaling(_config(plain, cache_root, recipe=["clip"]), tmp_path / "b", echo=lambda _: None)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
