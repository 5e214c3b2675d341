"""Several training sources: the union of their training splits with identities kept apart, validation held
out per source with cameras, every source named in the checkpoint, and --resume only on the same source list."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from reidx.checkpoint import open_checkpoint
from reidx.data.manifest import read_dataset
from reidx.data.prepare import prepare_dataset
from reidx.errors import ReidxError
from reidx.train.config import build_config, read_config_file
from reidx.train.data import load_training_set
from tests.conftest import make_training_only_tree
from tests.tiny import CLI_TINY

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A synthetic set with cameras (10 ids x 2 cameras x 2 images, 5 training ids), a training-only TownCentre-like set
    (3 tracks, 14 frames) and the synthetic set prepared with other rates."""
    root = tmp_path_factory.mktemp("sources")
    prepare_dataset("synthetic", None, root / "synth", ids=10, cameras=2, images_per_camera=2, workers=2)
    prepare_dataset("synthetic", None, root / "synth34", rates=(3, 4), ids=6, cameras=2, images_per_camera=2)
    prepare_dataset("towncentre", make_training_only_tree(root / "raw", "TownCentre"), root / "town")
    return {"synth": root / "synth", "town": root / "town", "synth34": root / "synth34"}


def test_the_union_keeps_identities_apart_and_validates_on_sources_with_cameras(sources: dict[str, Path]) -> None:
    one = load_training_set(sources["synth"], 0, 0.2, 0)
    both = load_training_set([sources["synth"], sources["town"]], 0, 0.2, 0)
    assert both.paths[: len(one.paths)] == one.paths and both.labels[: len(one.labels)] == one.labels
    town = [label for path, label in zip(both.paths, both.labels, strict=True) if "TownCentre" in path]
    assert len(town) == 14 and sorted(set(town)) == list(range(one.num_classes, one.num_classes + 3))
    assert both.num_classes == one.num_classes + 3 == 3 + 3  # 2 of 5 synthetic training ids held out, no track
    assert both.validation.equals(one.validation)  # the training-only set has no second camera to validate on
    first, second = both.sources
    assert (first["ids"], first["validation_ids"], first["first_label"], first["training_only"]) == (3, 2, 0, False)
    assert (second["ids"], second["images"], second["validation_ids"], second["first_label"]) == (3, 14, 0, 3)
    assert second["training_only"] and second["name"] == "towncentre" and second["trial"] == 0
    alone = load_training_set([sources["town"]], 5, 0.2, 0)  # a one-trial training-only set: its trial 0
    assert alone.sources[0]["trial"] == 0 and alone.num_classes == 3 and alone.validation.empty
    with pytest.raises(ReidxError, match="synth has no training images for trial 5"):
        load_training_set([sources["town"], sources["synth"]], 5, 0.2, 0)


def test_validation_pids_of_two_tested_sources_stay_apart(sources: dict[str, Path], tmp_path: Path) -> None:
    other = tmp_path / "other"
    prepare_dataset("synthetic", None, other, ids=10, cameras=2, images_per_camera=2, seed=3)
    data = load_training_set([sources["synth"], other], 0, 0.2, 0)
    rows = data.validation
    assert rows["pid"].nunique() == 4 and rows["path"].str.startswith(str(other)).sum() == rows.shape[0] // 2


def test_sources_that_cannot_be_joined_are_refused(sources: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ReidxError, match="prepared with rates 3,4.*with 2,3,4"):
        load_training_set([sources["synth"], sources["synth34"]], 0, 0.1, 0)
    with pytest.raises(ReidxError, match="both train on .*one person would get two labels"):
        load_training_set([sources["synth"], sources["synth"]], 0, 0.1, 0)
    again = tmp_path / "town-again"  # the same images prepared twice
    prepare_dataset("towncentre", Path(read_dataset(sources["town"])[1].extra["root"]), again)
    with pytest.raises(ReidxError, match=f"town and {again} both train on"):
        load_training_set([sources["town"], again], 0, 0.1, 0)


def test_a_config_file_takes_one_path_or_a_list(tmp_path: Path) -> None:
    (tmp_path / "one.toml").write_text('dataset = "data/a"\n')
    (tmp_path / "two.toml").write_text('dataset = ["data/a", "data/b"]\n')
    (tmp_path / "bad.toml").write_text("dataset = 3\n")
    assert read_config_file(tmp_path / "one.toml")["dataset"] == ("data/a",)
    config = build_config({}, tmp_path / "two.toml")
    assert config.dataset == ("data/a", "data/b") and config.to_dict()["dataset"] == ["data/a", "data/b"]
    assert build_config({}, tmp_path / "one.toml").to_dict()["dataset"] == "data/a"  # as written before
    with pytest.raises(ReidxError, match="dataset = 3 is not a path or a list of paths"):
        read_config_file(tmp_path / "bad.toml")


@pytest.mark.slow
def test_two_sources_through_the_cli_then_resume_only_on_them(
    run_cli: Cli, sources: dict[str, Path], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    given = ["--dataset", sources["synth"], "--dataset", sources["town"]]
    code, out, err = run_cli("--device", "cpu", "train", *given, "--out", run, "--epochs", "0", *CLI_TINY)
    assert code == 0, err
    assert "no epoch trained (--epochs 0): last.pt holds the initialised model, no best.pt" in out
    assert json.loads((run / "config.json").read_text())["config"]["dataset"] == [
        str(sources["synth"].resolve()),
        str(sources["town"].resolve()),
    ]
    for args, match in (
        (["--dataset", sources["town"]], "was trained on 2 source(s)"),
        (["--dataset", sources["town"], "--dataset", sources["synth"]], "is another dataset"),
    ):
        code, _, err = run_cli("--device", "cpu", "train", "--out", run, "--resume", "--epochs", "1", *args)
        assert code == 1 and match in err and len(err.strip().splitlines()) == 1, err
    code, out, err = run_cli("--device", "cpu", "train", "--out", run, "--resume", "--epochs", "1")
    assert code == 0, err
    meta = open_checkpoint(run / "last.pt").meta
    assert [source["name"] for source in meta["sources"]] == ["synthetic", "towncentre"]
    assert meta["dataset"]["path"] == str(sources["synth"].resolve()) and meta["trial"] == 0
    assert [source["images"] for source in meta["sources"]] == [3 * 4, 14]  # val 0.1 holds 2 of 5 ids out
    frame, _ = read_dataset(sources["synth"])
    tested = set(frame.loc[frame["split"] != "train", "path"])
    trained = set(load_training_set([sources["synth"], sources["town"]], 0, 0.1, 0).paths)
    assert not tested & trained  # the test split of a source that is also trained on is never touched
