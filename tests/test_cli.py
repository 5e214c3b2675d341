"""The CLI itself: train flags generated from TrainConfig, torch-free help and path errors, config value types,
the one Devices object, examples in every --help."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import click
import faiss
import pytest
import torch
import typer
from typer._click.exceptions import UsageError

from reidx.cli import app
from reidx.cli_options import train_overrides
from reidx.device import Devices
from reidx.errors import ReidxError
from reidx.models import list_models
from reidx.train.config import TrainConfig, flag, read_config_file

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("prepare", "train", "recover", "embed", "search", "serve", "export", "report")

#: Runs each argument list through the console entry point in this one process and says, after each,
#: whether torch had been imported by then.
TORCH_PROBE = """
import json, sys
from reidx.cli import main
seen = []
for args in json.loads(sys.argv[1]):
    sys.argv = ["reidx", *args]
    try:
        main()
    except SystemExit as exc:
        seen.append([exc.code, "torch" in sys.modules])
print(json.dumps(seen))
"""


def train_command() -> typer.core.TyperCommand:
    return typer.main.get_command(app).commands["train"]


def parsed_overrides(*args: str) -> dict:
    """The TrainConfig overrides that ``reidx train --out o ARGS`` hands to run_training."""
    context = train_command().make_context("train", ["--out", "o", *args])
    options = {k: v for k, v in context.params.items() if k not in ("out", "config", "resume", "json_output")}
    return train_overrides(options)


def test_help_and_missing_path_errors_do_not_import_torch(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    cases = [
        ["--help"],
        ["search", str(missing / "q.jpg"), "--gallery", str(tmp_path)],
        ["search", str(tmp_path), "--gallery", str(missing)],
        ["embed", "--checkpoint", str(missing / "m.pt"), "--out", str(tmp_path / "idx"), str(tmp_path)],
        ["report", "--checkpoint", str(missing / "m.pt"), "--dataset", str(tmp_path)],
        ["recover", str(tmp_path), "--checkpoint", str(missing / "m.pt"), "--out", str(tmp_path / "rec")],
        ["prepare", "--dataset", "market1501", "--root", str(missing), "--out", str(tmp_path / "out")],
        ["serve", "--gallery", str(missing)],
        ["serve", "--gallery", str(tmp_path), "--host", "0.0.0.0"],
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-c", TORCH_PROBE, json.dumps(cases)], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen[0] == [0, False], "`reidx --help` imported torch"
    for args, (code, imported) in zip(cases[1:], seen[1:], strict=True):
        assert code == 1 and not imported, (args, code, imported)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == len(cases) - 1 and all(
        ("not found" in e or "does not exist" in e or "no index at" in e or "beyond this machine" in e) for e in errors
    ), errors


def test_every_trainconfig_field_is_a_train_flag_with_its_default_in_the_help() -> None:
    command = train_command()
    params = command.get_params(click.Context(command))  # the models' own options included
    options = {opt: param for param in params for opt in [*param.opts, *param.secondary_opts]}
    for spec in fields(TrainConfig):
        option = options[f"--{flag(spec.name)}"]
        assert option.help.startswith(spec.metadata["help"]), spec.name
    assert "(default 60)" in options["--epochs"].help and "(default 256x128)" in options["--input-size"].help
    assert "--no-pretrained" in options and "--no-amp" in options and "--no-residual-recovery" in options


def test_train_flags_become_the_same_overrides_as_before() -> None:
    assert parsed_overrides() == {}
    assert parsed_overrides(
        *["--dataset", "D", "--arch", "resnet18", "--no-pretrained", "--epochs", "1", "--input-size", "64x32"],
        *["--optimizer", "adam", "--lr", "0.002", "--no-adv-image", "--residual-recovery", "--margin", "1.5"],
        *["--model", "baseline", "--d-betas", "0.5", "0.9"],
    ) == {
        "dataset": ("D",),
        "arch": "resnet18",
        "pretrained": False,
        "epochs": 1,
        "input_size": (64, 32),
        "optimizer": "adam",
        "lr": 0.002,
        "adv_image": False,
        "residual_recovery": True,
        "margin": 1.5,
        "model": "baseline",
        "d_betas": (0.5, 0.9),
    }
    assert parsed_overrides("--pretrained", "w.pth") == {"pretrained": "w.pth"}
    assert parsed_overrides("--dataset", "A", "--dataset", "B") == {"dataset": ("A", "B")}
    with pytest.raises(ReidxError, match="both --pretrained PATH and --no-pretrained"):
        parsed_overrides("--pretrained", "w.pth", "--no-pretrained")


def test_train_choices_come_from_the_registries(run_cli) -> None:
    with pytest.raises(UsageError, match="'resnet99' is not one of"):
        parsed_overrides("--arch", "resnet99")
    code, out, _ = run_cli("train", "--help")
    assert code == 0 and "|".join(list_models()) in out.replace(" ", "").replace("\n", "")


@pytest.mark.parametrize("columns", ["80", "120"])
def test_train_help_shows_every_flag_whole(run_cli, monkeypatch: pytest.MonkeyPatch, columns: str) -> None:
    monkeypatch.setenv("COLUMNS", columns)
    code, out, _ = run_cli("train", "--help")
    flags = {opt for param in train_command().params for opt in [*param.opts, *param.secondary_opts]}
    shown = set(re.findall(r"--[a-z0-9-]+", out))
    assert code == 0 and "…" not in out and flags <= shown, sorted(flags - shown)
    assert max(len(line) for line in out.splitlines()) <= int(columns)


@pytest.mark.parametrize("command", ["prepare", "train", "recover", "embed", "search", "report", "serve", "export"])
def test_every_help_fits_80_columns_uncut(run_cli, monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    """No flag name or help text cut with an ellipsis at 80 columns (a word wider than the help column is)."""
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run_cli(command, "--help")
    assert code == 0 and "…" not in out, [line for line in out.splitlines() if "…" in line]


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ('epochs = "ten"', 'epochs = "ten" is not an integer'),
        ("epochs = 2.5", "epochs = 2.5 is not an integer"),
        ("input_size = 5", 'input_size = 5 is not "HxW" text'),
        ('input_size = "big"', 'input_size = "big" is not "HxW" text'),
        ("lr = true", "lr = true is not a finite number"),
        ("lr = inf", "lr = inf is not a finite number"),
        ("lambda-rec = nan", "lambda-rec = nan is not a finite number"),
        ("margin = [1, 2]", "margin = [1, 2] is not a finite number"),
        ("d_betas = [0.9]", "d_betas = [0.9] is not a list of two finite numbers"),
        ("d_betas = [0.9, inf]", "d_betas = [0.9, inf] is not a list of two finite numbers"),
        ('adv-image = "no"', 'adv-image = "no" is not true or false'),
        ("model = 3", "model = 3 is not a string"),
    ],
)
def test_config_values_of_the_wrong_type_name_the_file_the_key_and_the_type(
    tmp_path: Path, line: str, needle: str
) -> None:
    path = tmp_path / "run.toml"
    path.write_text(line + "\n")
    with pytest.raises(ReidxError) as caught:
        read_config_file(path)
    assert caught.value.message.startswith(f"{path}: {needle}")
    assert caught.value.fix.startswith(f"write it like {line.split(' =')[0]} = ")


def test_config_values_are_converted_to_the_field_types(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"config": {"lr": 1, "input_size": [64, 32], "d_betas": [0, 1], "pretrained": "w"}}))
    assert read_config_file(path) == {"lr": 1.0, "input_size": (64, 32), "d_betas": (0.0, 1.0), "pretrained": "w"}
    assert isinstance(read_config_file(path)["lr"], float)


def test_a_bad_config_file_is_one_line_and_writes_nothing(run_cli, tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('epochs = "ten"\n')
    code, _, err = run_cli("train", "--out", str(tmp_path / "run"), "--config", str(config))
    errors = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(errors) == 1 and str(config) in errors[0] and "is not an integer" in errors[0], err
    assert not (tmp_path / "run").exists()


def test_devices_are_resolved_once_and_lazily() -> None:
    cpu = Devices("cpu")
    assert cpu.torch == torch.device("cpu") and cpu.faiss_gpu is False
    auto = Devices("auto")
    assert auto.torch.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert auto.faiss_gpu is (faiss.get_num_gpus() > 0)
    with pytest.raises(ReidxError, match="unknown device 'gpu'"):
        Devices("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ReidxError, match="torch sees no GPU"):
            _ = Devices("cuda").torch


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_has_examples(run_cli, command: str) -> None:
    code, out, _ = run_cli(command, "--help")
    assert code == 0 and "Examples" in out and f"reidx {command}" in out
