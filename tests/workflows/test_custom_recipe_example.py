"""``examples/custom_recipe.py``: a recipe defined outside greenfm trains through ``greenfm pretrain``
with nothing but its own class and one registration line, and exports its image tower."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from greenfm.methods import available_methods, register_method
from greenfm.models.export import load_exported_encoder
from greenfm.workflows.pretrain import PretrainConfig, run_pretrain

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_recipe.py"


def test_the_example_recipe_trains_and_exports(phantom_split, cache_root, tmp_path):
    spec = importlib.util.spec_from_file_location("greenfm_example_custom_recipe", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    import sys

    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    register_method("rotation", f"{spec.name}:RotationPrediction")
    assert "rotation" in available_methods()

    config = PretrainConfig(recipe="rotation", data=str(phantom_split), backbone="vit_tiny_test", img_size=32,
                            init="random", cache=str(cache_root),
                            train={"max_steps": 3, "batch_size": 8, "num_workers": 0, "track_energy": False,
                                   "progress_bar": False, "checkpoint_every_epochs": None, "accelerator": "cpu"})  # fmt: skip
    result = run_pretrain(config, tmp_path / "run")
    assert result.steps == 3 and "accuracy" in result.history[-1]
    encoder = load_exported_encoder(tmp_path / "run" / "exported")
    assert encoder.embed_dim == 64
    record = json.loads((tmp_path / "run" / "exported" / "config.json").read_text())["metadata"]
    assert record["recipe"] == "rotation"
