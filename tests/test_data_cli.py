"""``reidx prepare`` from the command line: summary, JSON, and one clear line for each bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code != 0
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_prepare_json_and_table(tmp_path: Path, run_cli, viper_tree) -> None:
    viper_tree(tmp_path / "v", ids=6)
    code, out, err = run_cli(
        "prepare",
        "--dataset",
        "viper",
        "--root",
        tmp_path / "v",
        "--out",
        tmp_path / "o",
        "--trials",
        "2",
        "--json",
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["dataset"] == "viper" and result["trials"] == 2 and result["rates"] == [2, 3, 4]
    assert result["extra"]["summary"]["query (mixed)"] == {"ids": 3, "images": 3, "cameras": 1}
    code, out, err = run_cli(
        "prepare",
        "--dataset",
        "viper",
        "--root",
        tmp_path / "v",
        "--out",
        tmp_path / "o",
        "--overwrite",
        "--unseen",
        "8",
    )
    assert code == 0, err
    assert "query (r8)" in out and "single-shot" in out


def test_help_has_examples(run_cli) -> None:
    code, out, _ = run_cli("prepare", "--help")
    assert code == 0 and "Examples" in out and "--downsample" in out


@pytest.mark.parametrize(
    ("arguments", "needles"),
    [
        (["--root", "{tmp}/absent"], ["does not exist", "absent"]),
        (["--root", "{tmp}/wrong"], ["expected bounding_box_train/, query/, bounding_box_test/"]),
        (["--root", "{tmp}/m", "--downsample", ""], ["--downsample is empty"]),
        (["--root", "{tmp}/m", "--downsample", "1,2"], ["rates must be integers >= 2"]),
        (["--root", "{tmp}/m", "--unseen", "0"], ["rates must be integers >= 2"]),
        (["--root", "{tmp}/truncated"], ["cannot read image", "0001_c1s1_000101_01.jpg"]),
    ],
)
def test_bad_input_gives_one_line(tmp_path: Path, run_cli, market_tree, arguments, needles) -> None:
    market_tree(tmp_path / "m")
    (tmp_path / "wrong" / "images").mkdir(parents=True)
    bad = market_tree(tmp_path / "truncated") / "bounding_box_train" / "0001_c1s1_000101_01.jpg"
    bad.write_bytes(bad.read_bytes()[:30])
    args = [arg.format(tmp=tmp_path) for arg in arguments]
    code, _, err = run_cli("prepare", "--dataset", "market1501", "--out", tmp_path / "out", *args)
    assert_one_line_error(code, err, *needles)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_unknown_dataset_lists_the_registry_names(tmp_path: Path, run_cli) -> None:
    from reidx.data.registry import dataset_names

    code, _, err = run_cli("prepare", "--dataset", "market", "--out", tmp_path / "o")
    flat = " ".join(err.replace("│", " ").split())
    assert code == 2 and "Traceback" not in err and "'market' is not one of" in flat
    assert all(f"'{name}'" in flat for name in dataset_names()), flat


def test_console_script_prints_no_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "reidx",
            "prepare",
            "--dataset",
            "viper",
            "--root",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_one_line_error(result.returncode, result.stderr, "does not exist")
