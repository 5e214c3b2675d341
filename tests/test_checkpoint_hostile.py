"""Unusable checkpoint files and dicts: every command that reads a checkpoint answers with one line, exit 1,
no traceback, and leaves the user's files as they were; a pickle carrying code is never run."""

from __future__ import annotations

import builtins
import hashlib
import io
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from reidx.checkpoint import FORMAT, open_checkpoint
from reidx.data.prepare import prepare_dataset
from reidx.device import Devices
from reidx.models.loading import load_model, open_model_checkpoint
from reidx.train import run_training
from tests.tiny import TINY

NAMES = [
    "empty",
    "garbage",
    "truncated",
    "damaged",
    "code",
    "foreign",
    "missing",
    "mistyped",
    "unknown",
    "shape",
    "nan",
]


class RunsCode:
    """Unpickling this calls ``open(marker, "w")``: a stand-in for a hostile payload."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return builtins.open, (str(self.marker), "w")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset and an untrained CAD-Net run (its last.pt holds a training state)."""
    root = tmp_path_factory.mktemp("hostile")
    prepare_dataset("synthetic", None, root / "data", ids=6, cameras=2, images_per_camera=2, workers=2)
    options = {"dataset": str(root / "data"), **TINY, "val_ids": 0, "epochs": 0}
    run_training(root / "run", options, devices=Devices("cpu"), show_progress=False)
    return root


def saved(state: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def loaded(data: bytes) -> dict:
    return torch.load(io.BytesIO(data), weights_only=True)


def damaged(data: bytes) -> bytes:
    """``data`` with bytes inside its largest tensor flipped (the zip entry's CRC no longer matches)."""
    member = max(zipfile.ZipFile(io.BytesIO(data)).infolist(), key=lambda info: info.file_size)
    spot = member.header_offset + 200 + member.file_size // 2
    return data[:spot] + bytes(b ^ 0xFF for b in data[spot : spot + 16]) + data[spot + 16 :]


def variants(base: bytes, marker: Path) -> dict[str, tuple[bytes, str]]:
    """name -> (file bytes, a phrase its one-line error must contain)."""
    state = loaded(base)
    weight = next(name for name, tensor in state["model"].items() if tensor.dim() == 4)
    shape = tuple(state["model"][weight].shape)
    wrong = (shape[0] + 1, *shape[1:])
    with_weight = lambda tensor: saved({**state, "model": {**state["model"], weight: tensor}})  # noqa: E731
    return {
        "empty": (b"", "the file is empty"),
        "garbage": (b"not a checkpoint at all", "not a PyTorch checkpoint"),
        "truncated": (base[: len(base) // 2], "truncated or damaged"),
        "damaged": (damaged(base), "truncated or damaged"),
        "code": (saved({"format": FORMAT, "version": 2, "payload": RunsCode(marker)}), "never code"),
        "foreign": (saved({"weights": torch.zeros(3)}), "is not a reidx checkpoint"),
        "missing": (saved({k: v for k, v in state.items() if k != "model"}), "'model' entry should be a dict"),
        "mistyped": (saved({**state, "input_size": "64x32"}), "'input_size' entry should be a list"),
        "unknown": (
            saved({**state, "model_config": {**state["model_config"], "name": "nope"}}),
            "unknown model 'nope'",
        ),
        "shape": (with_weight(torch.zeros(wrong)), f"{weight!r} has shape {wrong}, the model needs {shape}"),
        "nan": (with_weight(torch.full(shape, float("nan"))), f"non-finite weights (NaN or Inf) in {weight!r}"),
    }


def tree(root: Path) -> dict[str, str]:
    """Every path under ``root`` with its content hash: what "nothing changed" compares."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        for path in sorted(root.rglob("*"))
    }


def one_line(code: int, err: str, phrase: str, what: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, (what, err)
    assert phrase in lines[0] and "weights_only" not in lines[0], (what, lines[0])


@pytest.mark.parametrize("name", NAMES)
def test_every_command_refuses_an_unusable_checkpoint_in_one_line(
    run_cli: Callable[..., tuple[int, str, str]], workspace: Path, tmp_path: Path, name: str
) -> None:
    marker = tmp_path / "code-ran"
    data, phrase = variants((workspace / "run" / "last.pt").read_bytes(), marker)[name]
    user = tmp_path / "user"
    shutil.copytree(workspace / "data", user / "data")
    run = user / "run"
    run.mkdir()
    shutil.copyfile(workspace / "run" / "config.json", run / "config.json")
    bad = run / "last.pt"
    bad.write_bytes(data)
    before = tree(user)
    commands = {
        "embed": ["embed", "--checkpoint", bad, "--dataset", user / "data", "--out", user / "idx"],
        "recover": ["recover", user / "data" / "lr", "--checkpoint", bad, "--out", user / "recovered"],
        "report": ["report", "--checkpoint", bad, "--dataset", user / "data", "--out", user / "report.md"],
        "train --resume": ["train", "--out", run, "--resume"],
    }
    for command, args in commands.items():
        code, _, err = run_cli("--device", "cpu", *args)
        one_line(code, err, phrase, command)
        assert tree(user) == before, command
    assert not marker.exists(), "unpickling the checkpoint ran code"


def test_search_refuses_an_unusable_checkpoint(run_cli, workspace: Path, tmp_path: Path) -> None:
    index, last = tmp_path / "idx", workspace / "run" / "last.pt"
    code, _, err = run_cli(
        "--device", "cpu", "embed", "--checkpoint", last, "--dataset", workspace / "data", "--out", index
    )
    assert code == 0, err
    query = next((workspace / "data" / "lr").rglob("*.png"))
    before = tree(index)
    for name, (data, phrase) in variants(last.read_bytes(), tmp_path / "code-ran").items():
        bad = tmp_path / f"{name}.pt"
        bad.write_bytes(data)
        code, _, err = run_cli("--device", "cpu", "search", query, "--gallery", index, "--checkpoint", bad)
        one_line(code, err, phrase, name)
        assert tree(index) == before, name
    assert not (tmp_path / "code-ran").exists()


def test_the_checkpoint_is_read_once_and_its_meta_describes_the_run(workspace: Path) -> None:
    path = workspace / "run" / "last.pt"
    checkpoint = open_checkpoint(path)
    assert checkpoint.fingerprint == hashlib.sha256(path.read_bytes()).hexdigest()
    meta = checkpoint.meta
    assert meta["epoch"] == 0 and meta["trial"] == 0 and meta["train_config"]["arch"] == "resnet18"
    dataset = meta["dataset"]
    assert dataset["path"] == str((workspace / "data").resolve())
    assert dataset["seed"] == 0 and dataset["rates"] == [2, 3, 4] and len(dataset["manifest_sha256"]) == 64
    model = load_model(open_model_checkpoint(path), "cpu")
    assert model.fingerprint == checkpoint.fingerprint and model.meta == meta and not model.model.training


def test_a_version_1_checkpoint_still_loads_for_inference(workspace: Path, tmp_path: Path) -> None:
    state = loaded((workspace / "run" / "last.pt").read_bytes())
    old = {key: value for key, value in state.items() if key != "meta"} | {"version": 1}
    (tmp_path / "old.pt").write_bytes(saved(old))
    checkpoint = open_checkpoint(tmp_path / "old.pt")
    assert checkpoint.meta == {} and checkpoint.train_config["arch"] == "resnet18"
    assert load_model(checkpoint).name == "cadnet"
