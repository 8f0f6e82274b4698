"""The ``gazerad`` command line: flags built from the settings dataclasses, old flag names,
config files, the torchrun command line of server jobs, and a fast ``gazerad --help``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gazerad.cli import build_parser, main
from gazerad.cli._settings import describe_default, settings_from_args

TRAINING = ("pretrain", "train-kacl", "train-attention")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    return build_parser()


@pytest.fixture(scope="module")
def commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return _subparsers(parser)


def _classes(commands: dict[str, argparse.ArgumentParser]) -> dict[str, type]:
    return {name: commands[name].get_default("settings_class") for name in TRAINING}


def test_training_commands_have_a_flag_per_setting_and_show_defaults(commands) -> None:
    from gazerad.engine.config import field_specs

    for name, cls in _classes(commands).items():
        sub = commands[name]
        assert cls is not None and dataclasses.is_dataclass(cls), name
        by_flag = {o: a for a in sub._actions for o in a.option_strings}
        text = sub.format_help()
        assert "--config FILE" in text
        for spec in field_specs(cls):
            action = by_flag.get(spec.flag)
            assert action is not None and action.dest == spec.name, f"{name}: no {spec.flag}"
            assert action.default is None, f"{name} {spec.flag}: a default would override the config file"
            line = sub._get_formatter()._expand_help(action)
            if spec.help:
                assert spec.help.split()[0] in line, (name, spec.flag, line)
            if not spec.required and spec.default is not None and "default" not in spec.help:
                assert describe_default(spec) in line, (name, spec.flag, line)
    assert "(default 224)" in " ".join(commands["train-kacl"].format_help().split())


def test_bool_tuple_and_choice_flags(parser) -> None:
    a = parser.parse_args(
        [
            "pretrain",
            "--data",
            "d",
            "--out",
            "o",
            "--no-amp",
            "--betas",
            "0.8",
            "0.9",
            "--splits",
            "train",
            "test",
            "--channels-last",
            "false",
            "--precision",
            "bf16",
            "--quiet",
        ]
    )
    cfg = settings_from_args(a)
    assert (cfg.amp, cfg.betas, cfg.splits, cfg.channels_last, cfg.precision, cfg.progress) == (False, (0.8, 0.9), ("train", "test"), False, "bf16", False)
    assert settings_from_args(parser.parse_args(["pretrain", "--data", "d", "--out", "o", "--amp"])).amp is True
    for bad in (["--precision", "int8"], ["--framework", "swav"], ["--backbone", "vgg"], ["--epochs", "many"], ["--betas", "0.9"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["pretrain", "--data", "d", "--out", "o", *bad])
    with pytest.raises(SystemExit):
        parser.parse_args(["train-kacl", "--data", "d", "--out", "o", "--method", "other"])


@pytest.mark.parametrize(
    "command, old, new, value, dest",
    [
        ("pretrain", "--size", "--image-size", "64", "image_size"),
        ("train-attention", "--size", "--image-size", "64", "image_size"),
        ("train-attention", "--studies", "--data", "s", "data"),
        ("evaluate", "--size", "--image-size", "64", "image_size"),
        ("show", "--studies", "--data", "s", "data"),
        ("train-kacl", "--cam", "--cam-method", "gradcampp", "cam_method"),
        ("evaluate-localization", "--cam", "--cam-method", "gradcampp", "cam_method"),
        ("evaluate-localization", "--threshold", "--cam-threshold", "0.3", "cam_threshold"),
        ("serve", "--studies", "--data", "s", "studies"),
    ],
)
def test_old_flag_names_are_hidden_aliases(parser, commands, command, old, new, value, dest) -> None:
    need = {"evaluate": ["--encoder", "e", "--data", "d"], "evaluate-localization": ["--model", "m", "--data", "d"]}.get(command, [])
    a = parser.parse_args([command, *need, old, value])
    b = parser.parse_args([command, *need, new, value])
    assert getattr(a, dest) == getattr(b, dest) and str(getattr(a, dest)) in (value, str(float(value)) if "." in value else value)
    text = commands[command].format_help()
    assert new in text
    if command != "serve":  # serve's --studies is its own (gazerad.serving.launch)
        assert old + " " not in text and old + "," not in text, f"{old} should not be listed in {command} --help"


def test_quiet_no_amp_and_precision_keep_working(parser) -> None:
    for name in TRAINING:
        a = parser.parse_args([name, "--data", "d", "--out", "o", "--quiet", "--no-amp", "--precision", "fp32"])
        assert (a.progress, a.amp, a.precision) == (False, False, "fp32")
        a = parser.parse_args([name, "--data", "d", "--out", "o"])
        assert a.progress is None and a.amp is None and a.precision is None  # not given: the config decides


def test_synth_size_is_the_generated_side(commands) -> None:
    text = " ".join(commands["synth"].format_help().split())
    assert "--size" in text and "generated images" in text and "--image-size" in text


def test_config_file_and_flag_override(parser, tmp_path: Path) -> None:
    cfg_file = tmp_path / "kacl.json"
    cfg_file.write_text(
        json.dumps({"side": 96, "kacl": {"data": "studies", "out": "run", "image_size": "@side", "epochs": 3, "backbone": "resnet10", "amp": False}})
    )
    a = parser.parse_args(["train-kacl", "--config", str(cfg_file), "--epochs", "1", "--lr", "0.01"])
    cfg = settings_from_args(a)
    assert (cfg.data, cfg.image_size, cfg.epochs, cfg.lr, cfg.backbone, cfg.amp) == ("studies", 96, 1, 0.01, "resnet10", False)
    att = tmp_path / "att.yaml"
    att.write_text("data: s\nout: o\nimage_size: 64\nepochs: 2\n")  # keys at top level
    cfg = settings_from_args(parser.parse_args(["train-attention", "--config", str(att), "--size", "32", "--amp"]))
    assert (cfg.image_size, cfg.epochs, cfg.amp) == (32, 2, True)
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: s\nout: o\nimage_sise: 64\n")
    with pytest.raises(ValueError, match=r"bad.yaml.*unknown config keys \['image_sise'\]"):
        settings_from_args(parser.parse_args(["train-attention", "--config", str(bad)]))


def test_missing_and_invalid_settings_are_one_line_errors(capsys, tmp_path: Path) -> None:
    assert main(["train-kacl", "--out", str(tmp_path / "o")]) == 2
    assert "gazerad train-kacl: error: --data required (or --config FILE)" in capsys.readouterr().err
    assert main(["train-attention", "--data", "d", "--out", "o", "--image-size", "40"]) == 2
    assert "multiple of 16" in capsys.readouterr().err
    assert main(["show"]) == 2 and "--data required" in capsys.readouterr().err


def test_help_is_fast_and_imports_no_torch() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from gazerad.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n        main(['--help'])\n    except SystemExit:\n        pass\n"
        "assert 'torch' not in sys.modules, 'gazerad --help imported torch'\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for cmd in (["-m", "gazerad", "--help"], ["-m", "gazerad.cli", "--help"]):
        r = subprocess.run([sys.executable, *cmd], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and all(c in r.stdout for c in ("train-kacl", "train-attention", "pretrain", "serve")), r.stderr


def _changed(spec: Any, choices: tuple | None) -> Any:
    """A value of ``spec`` other than its default (valid for the dataclass's own checks)."""
    d = spec.default
    if spec.is_flag:
        return not d
    if spec.bool_or_text:
        return False
    if spec.nargs is not None:
        if spec.type is str:
            return ("train", "test")
        return tuple(x * 2 for x in d) if spec.type is int else tuple(x * 0.5 for x in d)
    if choices:
        return next(c for c in choices if c != d)
    if spec.type is int:
        return d + 16 if isinstance(d, int) else 48
    if spec.type is float:
        return d * 0.5 if d else 0.25
    return f"x-{spec.name}"


def test_config_argv_round_trips_every_setting(parser, commands) -> None:
    from gazerad.engine.config import config_argv, field_specs

    for name, cls in _classes(commands).items():
        by_dest = {a.dest: a for a in commands[name]._actions}
        values = {s.name: _changed(s, by_dest[s.name].choices) for s in field_specs(cls)}
        cfg = cls(**values)
        for s in field_specs(cls):
            assert getattr(cfg, s.name) != s.default, (name, s.name)
        argv = config_argv(cfg)
        back = settings_from_args(parser.parse_args([name, *argv]))
        assert back == cfg, (name, argv)
        # only the data and output folders differ from the defaults: the rest is left out ...
        minimal = cls(data="d", out="o")
        assert config_argv(minimal) == ["--data", "d", "--out", "o"]
        # ... unless asked for, and then it parses back as well
        assert settings_from_args(parser.parse_args([name, *config_argv(minimal, defaults=True)])) == minimal


def test_server_params_come_from_the_settings(parser) -> None:
    from gazerad.attention.config import AttentionConfig
    from gazerad.engine.config import field_specs
    from gazerad.kacl.config import KACLConfig
    from gazerad.pretrain.config import PretrainConfig
    from gazerad.serving import train

    classes = {"attention": AttentionConfig, "localization": KACLConfig, "classification": KACLConfig, "pretrain": PretrainConfig}
    for job, cls in classes.items():
        specs = {s.name: s for s in field_specs(cls)}
        schema = train._schema(job)  # every number has bounds, else this raises
        for key in train._SETTINGS[job]:
            assert key in specs, (job, key)
            if key not in train._SERVER_DEFAULTS[job]:
                assert train.DEFAULTS[job][key] == specs[key].default, (job, key)
        assert set(train.DEFAULTS[job]) <= set(schema)
    assert train.DEFAULTS["attention"]["batch_size"] == AttentionConfig.batch_size
    assert "input_size" not in train.DEFAULTS["attention"]
    # the former key still works, and wins over the default the app's trainer sends along
    p = train.check_params("attention", {**train.DEFAULTS["attention"], "input_size": 64, "device": "auto"})
    assert p["image_size"] == 64 and "input_size" not in p
    assert train.check_params("attention", {"image_size": 96})["image_size"] == 96
    with pytest.raises(ValueError, match="'input_size' must be a finite number"):
        train.check_params("attention", {"input_size": 8})
    with pytest.raises(ValueError, match="unknown training parameter 'out'"):
        train.check_params("pretrain", {"out": "/tmp"})


def test_torchrun_command_line_of_server_jobs_parses_back(parser) -> None:
    from gazerad.serving import train

    for job, command in (("localization", "train-kacl"), ("classification", "train-kacl"), ("pretrain", "pretrain")):
        p = train.check_params(job, {"epochs": 2, "max_steps": 3, "seed": 5, "precision": "fp32"})
        cfg = train._job_config(job, p, data="ws", out="run/out", device="cpu")
        argv = train._cli_args(command, cfg, "cpu")
        assert argv[0] == command and "--size" not in argv
        back = settings_from_args(parser.parse_args(argv))
        assert back == cfg, argv
        gpu = settings_from_args(parser.parse_args(train._cli_args(command, cfg, "cuda")))
        assert gpu.device is None and dataclasses.replace(gpu, device="cpu") == cfg  # each rank picks its GPU


# ---------------------------------------------------------------------------- bad input (a CLI fuzzing pass)
def _fails(capsys, argv: list[str], code: int, words: str) -> str:
    assert main(argv) == code
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and err.count("\n") == 1, err
    return err


def test_misplaced_unreadable_or_corrupt_files_are_one_line_errors(capsys, studies: Path, tmp_path: Path) -> None:
    folder = tmp_path / "a_folder"
    folder.mkdir()
    _fails(capsys, ["show", "--data", str(studies), "--out", str(folder)], 2, "is a folder: give the path of a file")
    _fails(capsys, ["synth", "--out", str(tmp_path / "never"), "--n", "2", "--size", "64", "--preview", str(folder)], 2, "is a folder")
    assert not (tmp_path / "never").exists()  # checked before the study set is generated
    _fails(capsys, ["synth", "--out", str(tmp_path / "never"), "--n", "1", "--size", "100000000"], 2, "size must be 64 to 4096")
    bad = tmp_path / "shard.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    _fails(capsys, ["relation-merge", "--out", str(tmp_path / "m.npz"), str(bad), str(bad)], 2, "not a relation .npz file")
    (tmp_path / "empty.npz").write_bytes(b"")
    _fails(capsys, ["relation-merge", "--out", str(tmp_path / "m.npz"), str(tmp_path / "empty.npz"), str(bad)], 2, "not a relation .npz file")
    image = next((studies / "images").glob("*.png"))
    _fails(capsys, ["info", "--window", "nan", "1", str(image)], 2, "finite centre")


def test_bad_settings_name_the_key_and_failed_runs_leave_no_empty_folder(capsys, studies: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    for value, words in ((64.7, "config key 'image_size' must be an integer, got 64.7"), ('"abc"', "must be an integer, got 'abc'")):
        cfg.write_text(f'{{"data": "{studies}", "out": "{tmp_path / "run"}", "image_size": {value}}}')
        _fails(capsys, ["train-kacl", "--config", str(cfg)], 2, words)
    run = tmp_path / "run"
    base = ["train-kacl", "--data", str(studies), "--out", str(run), "--epochs", "1", "--image-size", "64", "--batch-size", "4"]
    _fails(capsys, [*base, "--device", "bogus"], 2, "device 'bogus' is not one of auto, cpu, cuda, cuda:N")
    assert not run.exists()  # the failed run's empty folder is gone
    _fails(capsys, [*base, "--splits", "nosuchsplit"], 2, "nosuchsplit")
    assert not run.exists()


def test_unexpected_errors_are_one_line_unless_asked(capsys, studies: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gazerad.io.xray

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise TypeError("something no check caught")

    monkeypatch.setattr(gazerad.io.xray, "read_xray", boom)
    monkeypatch.delenv("GAZERAD_TRACEBACK", raising=False)
    image = str(next((studies / "images").glob("*.png")))
    _fails(capsys, ["info", image], 1, "unexpected TypeError: something no check caught (GAZERAD_TRACEBACK=1 shows where)")
    monkeypatch.setenv("GAZERAD_TRACEBACK", "1")
    with pytest.raises(TypeError, match="something no check caught"):
        main(["info", image])
