"""Options declared once: config fields -> API keywords and CLI options; one config-file format for every verb."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

from greenfm import api
from greenfm.cli import main
from greenfm.cli_options import verb_params
from greenfm.options import VERBS
from greenfm.workflows.adapt_config import AdaptOptions, FinetuneConfig, LabelEfficiencyConfig


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


@pytest.fixture()
def captured(monkeypatch):
    """Replace each verb's work by recording the config it would run with."""
    seen: dict[str, object] = {}

    def capture(name):
        def run(request, *, out, resume=False):
            seen[name] = request.build()
            seen["out"] = out

        return run

    for verb in VERBS.values():
        monkeypatch.setattr(verb, "run", capture(verb.__name__))
    return seen


@pytest.fixture()
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "manifest.csv"
    path.write_text("path,patient_id,split\na.png,p1,train\n")
    return path


def one_line_error(code: int, err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_pretrain_config_with_train_section_and_a_repeated_option(tmp_path, manifest, captured, capsys):
    config = tmp_path / "tr.yaml"
    config.write_text(f"data: {manifest}\nbackbone: vit_tiny_test\nmethod:\n  noise_std: 0.2\n"
                      "train:\n  epochs: 5\n  lr: 0.01\n")  # fmt: skip
    code, _, err = run_cli(["pretrain", "--config", str(config), "--out", str(tmp_path / "run"),
                            "--backbone", "vit_small_patch14_reg4_dinov2", "--epochs", "7",
                            "--set", "train.weight_decay=0.3"], capsys)  # fmt: skip
    assert code == 0, err
    cfg = captured["pretrain"]
    assert cfg.backbone == "vit_small_patch14_reg4_dinov2"  # the command line wins over the file
    assert cfg.train == {"epochs": 7, "lr": 0.01, "weight_decay": 0.3}
    assert cfg.method == {"noise_std": 0.2}


def test_finetune_config_with_train_section_and_a_repeated_option(tmp_path, manifest, captured, capsys):
    config = tmp_path / "ft.yaml"
    config.write_text(f"model: random\ndata: {manifest}\nrank: 4\nfindings: [a, b]\ntrain:\n  epochs: 3\n  lr: 0.5\n")
    code, _, err = run_cli(["finetune", "--config", str(config), "--out", str(tmp_path / "run"), "--rank", "16",
                            "--lr", "0.1", "--findings", "c,d", "--no-balanced-sampling"], capsys)  # fmt: skip
    assert code == 0, err
    cfg = captured["finetune"]
    assert (cfg.rank, cfg.findings, cfg.train) == (16, ["c", "d"], {"epochs": 3, "lr": 0.1})
    assert cfg.mode == "lora" and cfg.alpha == 32.0  # untouched options keep their defaults


def test_api_takes_the_same_file_and_keywords(tmp_path, manifest, captured):
    config = tmp_path / "le.yaml"
    config.write_text(f"model: random\ndata: {manifest}\nfractions: [0.5, 1.0]\ntrain:\n  epochs: 2\n")
    api.evaluate_label_efficiency(config=config, out=tmp_path / "study", alpha=8, epochs=4, pos_weight="balanced")
    cfg = captured["evaluate_label_efficiency"]
    assert (cfg.fractions, cfg.alpha, cfg.pos_weight, cfg.train) == ([0.5, 1.0], 8, "balanced", {"epochs": 4})


@pytest.mark.parametrize("text, key", [("rnak: 4\n", "rnak"), ("train:\n  epoch: 3\n", "train.epoch")])
def test_unknown_key_in_the_file_is_one_line_naming_it(tmp_path, manifest, captured, capsys, text, key):
    config = tmp_path / "bad.yaml"
    config.write_text(f"model: random\ndata: {manifest}\n" + text)
    code, _, err = run_cli(["finetune", "--config", str(config), "--out", str(tmp_path / "run")], capsys)
    one_line_error(code, err, f"'{key}'", str(config))


def test_unknown_set_key_and_missing_input_are_one_line(tmp_path, manifest, captured, capsys):
    code, _, err = run_cli(["finetune", "--model", "random", "--data", str(manifest), "--out", "r",
                            "--set", "nope=1"], capsys)  # fmt: skip
    one_line_error(code, err, "'nope'")
    code, _, err = run_cli(["finetune", "--model", "random", "--data", str(tmp_path / "none.csv"), "--out", "r"],
                           capsys)  # fmt: skip
    one_line_error(code, err, "none.csv", "not found")


def test_api_rejects_an_unknown_keyword():
    with pytest.raises(TypeError, match="rnak"):
        api.finetune(out="x", model="random", data="m.csv", rnak=4)


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["finetune"], ["[default: lora]", "[linear|lora|full]", "med-peft (Q and V", "[default: 0.65]",
                        "--balanced-sampling", "train:"]),
        (["evaluate", "label-efficiency"], ["[default: 0.01,0.1,1.0]", "[values: linear, lora, full]",
                                            "[probe|finetune]", "--alpha", "--pos-weight"]),
        (["pretrain"], ["[default: token-reconstruction]", "--init-from", "--config", "train:"]),
        (["evaluate", "compare"], ["--name-a", "--bootstrap"]),
    ],
)  # fmt: skip
def test_help_shows_defaults_and_choices(argv, needles, capsys):
    code, out, _ = run_cli([*argv, "--help"], capsys)
    assert code == 0
    flat = " ".join(out.split()).replace("- ", "-")  # undo wrapping at hyphens
    for needle in needles:
        assert needle in flat, needle
    assert not re.search(r" \.(\s|$)", flat.replace("...", "")), "an emptied '[...]' (rich markup) left ' .'"


def test_finetune_and_label_efficiency_share_one_options_block():
    def options(command):
        return {p.name: (tuple(p.opts), tuple(p.secondary_opts), p.help, p.default) for p in verb_params(VERBS[command])}

    finetune, study = options(("finetune",)), options(("evaluate", "label-efficiency"))
    shared = {name for name in AdaptOptions.model_fields if name != "train"}
    assert shared | {"config", "set_values", "out", "epochs", "lr", "seed", "devices"} <= set(finetune) & set(study)
    assert all(finetune[name] == study[name] for name in set(finetune) & set(study) if name != "out")
    assert set(finetune) - set(study) == {"resume", *FinetuneConfig.model_fields} - set(AdaptOptions.model_fields)
    assert set(study) - set(finetune) == set(LabelEfficiencyConfig.model_fields) - set(AdaptOptions.model_fields)


@pytest.mark.parametrize("command", list(VERBS))
def test_api_signature_is_the_config_fields(command):
    verb = VERBS[command]
    params = inspect.signature(verb).parameters
    fields = verb.config_class.model_fields
    own = {p.name for p in verb.own_parameters()}
    assert set(params) == own | {"config"} | set(fields) | set(verb.train_shortcuts())
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params.values())
    for name, info in fields.items():
        if not info.is_required() and info.default_factory is None:
            assert params[name].default == info.default, name


def test_the_cli_checks_inputs_before_importing_torch(tmp_path):
    code = (
        "import sys\n"
        "import greenfm.cli\n"
        "heavy = ('torch', 'timm', 'pandas')\n"
        "assert not [m for m in heavy if m in sys.modules], 'import'\n"
        "try:\n"
        f"    greenfm.cli.main(['finetune', '--model', 'random', '--data', {str(tmp_path / 'none.csv')!r}, '--out', 'x'])\n"
        "except SystemExit as done:\n"
        "    assert done.code == 2\n"
        "assert not [m for m in heavy if m in sys.modules], 'finetune'\n"
    )  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_help_lists_every_contract_preset():
    from greenfm.cli import CONTRACT_PRESETS
    from greenfm.data.contract import PRESETS

    assert CONTRACT_PRESETS.split(", ") == list(PRESETS)
    assert all(name in AdaptOptions.model_fields["contract"].description for name in PRESETS)


def test_embed_and_probe_check_their_files_before_importing_torch(tmp_path):
    missing = str(tmp_path / "none.csv")
    code = (
        "import sys\n"
        "import greenfm.cli\n"
        "heavy = ('torch', 'timm', 'pandas')\n"
        f"for argv in (['embed', '--model', 'random', '--backbone', 'vit_tiny_test', '--data', {missing!r}, '--out', 'x'],\n"
        f"             ['probe', '--embeddings', {missing!r}, '--labels', {missing!r}]):\n"
        "    try:\n"
        "        greenfm.cli.main(argv)\n"
        "    except SystemExit as done:\n"
        "        assert done.code == 2\n"
        "    assert not [m for m in heavy if m in sys.modules], argv[0]\n"
    )  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("not found") == 2
