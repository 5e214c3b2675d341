"""Remembered checkpoint fingerprints: reused only while the file is unchanged, re-hashed after any change."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
import torch

from reidx import fingerprints
from reidx.checkpoint import open_checkpoint, save_checkpoint
from reidx.errors import ReidxError
from reidx.models import build_model
from reidx.models.loading import load_model, open_model_checkpoint


@pytest.fixture
def checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiny baseline checkpoint, with its own cache folder and no settling delay."""
    monkeypatch.setenv(fingerprints.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(fingerprints, "SETTLED_NS", 0)
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "m.pt", build_model("baseline", num_classes=3, arch="resnet18"), (64, 32))
    return tmp_path / "m.pt"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_fingerprint_is_remembered_and_reused_while_the_file_is_unchanged(checkpoint: Path) -> None:
    first = open_checkpoint(checkpoint).fingerprint
    assert first == sha(checkpoint) and fingerprints.recall(checkpoint, fingerprints.stat_key(checkpoint)) == first
    again = load_model(checkpoint)  # the remembered path: mapped, not hashed or zip-checked
    assert again.fingerprint == first and not again.model.training
    eager = load_model(open_model_checkpoint(checkpoint))
    for name, tensor in eager.model.state_dict().items():
        assert torch.equal(tensor, again.model.state_dict()[name]), name


def test_any_change_to_the_file_is_hashed_again(checkpoint: Path, tmp_path: Path) -> None:
    open_checkpoint(checkpoint)
    torch.manual_seed(1)
    save_checkpoint(tmp_path / "other.pt", build_model("baseline", num_classes=3, arch="resnet18"), (64, 32))
    with open(checkpoint, "r+b") as handle:  # rewritten in place: same inode, same size, new bytes
        handle.write((tmp_path / "other.pt").read_bytes())
    info = os.stat(tmp_path / "other.pt")
    os.utime(checkpoint, ns=(info.st_atime_ns, info.st_mtime_ns))  # even with its mtime set back
    assert open_checkpoint(checkpoint).fingerprint == sha(checkpoint) == sha(tmp_path / "other.pt")
    shutil.copy(tmp_path / "other.pt", tmp_path / "copy.pt")
    os.replace(tmp_path / "copy.pt", checkpoint)  # replaced by another file
    assert load_model(checkpoint).fingerprint == sha(checkpoint)
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2])  # truncated after being remembered
    with pytest.raises(ReidxError, match="truncated or damaged"):
        load_model(checkpoint)


def test_an_unreadable_cache_is_ignored(checkpoint: Path) -> None:
    fingerprints.cache_path().parent.mkdir(parents=True)
    fingerprints.cache_path().write_text("{not json")
    assert load_model(checkpoint).fingerprint == sha(checkpoint)
    assert fingerprints.recall(checkpoint, fingerprints.stat_key(checkpoint)) == sha(checkpoint)
