"""No command replaces a file reidx did not write (issue 21, class 1): every output option of every command,
found in the CLI definition itself, is tried against a user's file at its path, through a link to one and,
for folders, with a user's file where the command would write one. Plus the reported cases, one by one.

Each refusal is one line naming the path and the fix, exit 1, the user's bytes unchanged, nothing left behind.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer

from reidx.cli import app
from reidx.cli_options import OUT_DIR, OUT_FILE
from reidx.data.prepare import prepare_dataset
from reidx.models.loading import load_model
from reidx.retrieval import build_index, images_table
from reidx.retrieval.requests import EmbedJob
from tests.tiny import CLI_TINY

Cli = Callable[..., tuple[int, str, str]]
USER_BYTES = b"# my notes\nthe user's own file, not reidx's\n"
#: Parameter names and help words that say "this is a path the command writes".
LOOKS_LIKE_OUTPUT = re.compile(r"\b(write|writes|output)\b", re.IGNORECASE)
OUTPUT_NAMES = {"out", "output", "montage", "grid", "plots", "save", "log", "cache"}


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    """A CAD-Net checkpoint ``ck.pt``, a synthetic dataset ``ds``, ``photos/`` (4 images), its index ``idx``
    and a query image ``q.png``."""
    root = tmp_path_factory.mktemp("every-output")
    shutil.copyfile(tiny_checkpoint, root / "ck.pt")
    prepare_dataset("synthetic", None, root / "ds", rates=(2,), ids=6, cameras=2, images_per_camera=2, workers=1)
    (root / "photos").mkdir()
    for path in sorted((root / "ds" / "hr").rglob("*.png"))[:4]:
        shutil.copyfile(path, root / "photos" / path.name)
    shutil.copyfile(sorted((root / "ds" / "lr").rglob("*.png"))[0], root / "q.png")
    build_index(load_model(root / "ck.pt"), images_table([root / "photos"]), root / "idx", job=EmbedJob(workers=0))
    return root


def base_args(ws: Path) -> dict[str, list[str]]:
    """The smallest valid run of each command that writes, without its output options."""
    run = ["--workers", "0"]
    return {
        "prepare": ["prepare", "--dataset", "synthetic", "--ids", "6", "--cameras", "2", "--images-per-camera", "2",
                    "--downsample", "2", "--workers", "1"],
        "train": ["train", "--dataset", str(ws / "ds"), "--epochs", "0", "--val-ids", "0", *CLI_TINY],
        "recover": ["recover", str(ws / "q.png"), "--checkpoint", str(ws / "ck.pt"), *run],
        "embed": ["embed", "--checkpoint", str(ws / "ck.pt"), str(ws / "photos"), *run],
        "search": ["search", str(ws / "q.png"), "--gallery", str(ws / "idx"), *run],
        "export": ["export", "--checkpoint", str(ws / "ck.pt")],
        "report": ["report", "--checkpoint", str(ws / "ck.pt"), "--dataset", str(ws / "ds"), *run],
    }  # fmt: skip


def commands() -> dict[str, Any]:
    return dict(typer.main.get_command(app).commands)


def output_options() -> list[tuple[str, Any]]:
    """(command, option) for every option marked as a path the command writes."""
    return [
        (name, param)
        for name, command in sorted(commands().items())
        for param in command.params
        if param.param_type_name == "option" and param.metavar in (OUT_FILE, OUT_DIR)
    ]


def is_path(param: Any) -> bool:
    """Whether a CLI parameter takes a path (typer's own click keeps the annotation, older ones a click type)."""
    descriptor = getattr(param, "type_descriptor", None)
    return "Path" in str(descriptor.annotation) if descriptor is not None else type(param.type).__name__ == "Path"


OUTPUTS = output_options()
IDS = [f"{name} {option.opts[0]}" for name, option in OUTPUTS]


def test_every_output_option_is_marked_and_every_writing_command_can_be_run() -> None:
    for name, command in commands().items():
        for param in command.params:
            if param.metavar in (OUT_FILE, OUT_DIR) or not is_path(param):
                continue
            looks = param.name in OUTPUT_NAMES or LOOKS_LIKE_OUTPUT.search(getattr(param, "help", "") or "")
            assert not looks, f"reidx {name} {param.opts[0]} looks like an output: give it metavar OUT_FILE or OUT_DIR"
    assert {name for name, _ in OUTPUTS} <= set(base_args(Path("."))), "add the new command to base_args"
    assert len(OUTPUTS) >= 9  # prepare, train, recover (2), embed, search, export, report (2)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def args_for(ws: Path, tmp: Path, name: str, option: Any, path: Path) -> list[str]:
    """The command's smallest run writing ``option`` to ``path`` (other required outputs go to fresh paths)."""
    others = [
        [param.opts[0], str(tmp / f"fresh-{param.name}")]
        for command, param in OUTPUTS
        if command == name and param is not option and param.required
    ]
    return [
        "--device",
        "cpu",
        *base_args(ws)[name],
        *[arg for pair in others for arg in pair],
        option.opts[0],
        str(path),
    ]


def refused(result: tuple[int, str, str], *names: str) -> str:
    """Assert a one-line refusal naming each of ``names``; return the line."""
    code, _, err = result
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]  # after any progress bar
    assert code == 1 and len(lines) == 1, err
    assert "Traceback" not in err and " — " in lines[0], err  # what, then the fix
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(("name", "option"), OUTPUTS, ids=IDS)
@pytest.mark.parametrize("how", ["a file", "a link to a file"])
def test_no_output_option_replaces_a_users_file(
    run_cli: Cli, ws: Path, tmp_path: Path, name: str, option: Any, how: str
) -> None:
    mine = tmp_path / "mine" / "notes.md"
    mine.parent.mkdir()
    mine.write_bytes(USER_BYTES)
    path = tmp_path / ("out.md" if how == "a link to a file" else "notes.md")
    if how == "a link to a file":
        path.symlink_to(mine)
    else:
        path = mine
    before = listing(tmp_path)
    line = refused(run_cli(*args_for(ws, tmp_path, name, option, path)))
    assert path.name in line or mine.name in line, line  # the link, or the file it points at
    assert "--overwrite" not in line.split(" — ")[1]
    assert mine.read_bytes() == USER_BYTES and listing(tmp_path) == before  # nothing written, nothing left


@pytest.fixture(scope="module")
def written(ws: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, Any], list[str]]:
    """``written(command, option)``: the files a successful run writes in that folder option (run once each)."""
    from typer.testing import CliRunner

    found: dict[str, list[str]] = {}

    def names(name: str, option: Any) -> list[str]:
        key = f"{name} {option.opts[0]}"
        if key not in found:
            tmp = tmp_path_factory.mktemp("reference")
            result = CliRunner().invoke(app, args_for(ws, tmp, name, option, tmp / "folder"))
            assert result.exit_code == 0, result.output
            found[key] = [p.name for p in sorted((tmp / "folder").iterdir()) if p.is_file()]
        return found[key]

    return names


FOLDERS = [case for case in OUTPUTS if case[1].metavar == OUT_DIR]


@pytest.mark.parametrize(("name", "option"), FOLDERS, ids=[f"{name} {option.opts[0]}" for name, option in FOLDERS])
def test_no_folder_output_replaces_a_users_file_inside_it(
    run_cli: Cli, ws: Path, tmp_path: Path, written, name: str, option: Any
) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    for file_name in written(name, option):
        (folder / file_name).write_bytes(USER_BYTES)
    before = {p: digest(p) for p in folder.iterdir()}
    listed = listing(tmp_path)
    refused(run_cli(*args_for(ws, tmp_path, name, option, folder)), "folder")
    assert {p: digest(p) for p in folder.iterdir()} == before and listing(tmp_path) == listed


# --- the reported cases -------------------------------------------------------------------------------------


@pytest.fixture
def user_run(ws: Path, tmp_path: Path) -> Path:
    """``run/ck.pt`` (a copy of the checkpoint: the user's file), ``notes.md`` and ``some_code.py``."""
    (tmp_path / "run").mkdir()
    shutil.copyfile(ws / "ck.pt", tmp_path / "run" / "ck.pt")
    (tmp_path / "notes.md").write_bytes(USER_BYTES)
    (tmp_path / "some_code.py").write_bytes(b"print('mine')\n")
    return tmp_path


def unchanged(folder: Path, run: Callable[[], str]) -> str:
    """Run ``run`` and assert every file below ``folder`` kept its bytes and nothing appeared; its result."""
    before = {p: digest(p) for p in folder.rglob("*") if p.is_file()}
    line = run()
    assert {p: digest(p) for p in folder.rglob("*") if p.is_file()} == before
    return line


def test_report_never_replaces_its_checkpoint_or_a_users_file(run_cli: Cli, ws: Path, user_run: Path) -> None:
    report = ["--device", "cpu", "report", "--checkpoint", str(user_run / "run" / "ck.pt"), "--dataset",
              str(ws / "ds"), "--workers", "0", "--out"]  # fmt: skip
    line = unchanged(user_run, lambda: refused(run_cli(*report, user_run / "run" / "ck.pt"), "ck.pt"))
    assert "is or contains the input" in line
    for name in ("notes.md", "some_code.py"):
        line = unchanged(user_run, lambda name=name: refused(run_cli(*report, user_run / name), name))
        assert "was not written by reidx" in line and "choose another --out" in line


def test_search_never_replaces_its_query_or_a_checkpoint(run_cli: Cli, ws: Path, user_run: Path) -> None:
    shutil.copyfile(ws / "q.png", user_run / "q.png")
    search = ["--device", "cpu", "search", str(user_run / "q.png"), "--gallery", str(ws / "idx"), "--workers", "0"]
    line = unchanged(user_run, lambda: refused(run_cli(*search, "--montage", user_run / "q.png"), "q.png"))
    assert "is or contains the input" in line
    line = unchanged(user_run, lambda: refused(run_cli(*search, "--montage", user_run / "run" / "ck.pt"), "ck.pt"))
    assert "was not written by reidx" in line


def test_recover_never_replaces_a_users_file_with_its_grid(run_cli: Cli, ws: Path, user_run: Path) -> None:
    recover = ["--device", "cpu", "recover", str(ws / "q.png"), "--checkpoint", str(ws / "ck.pt"), "--workers", "0"]
    args = [*recover, "--out", user_run / "rec", "--grid", user_run / "notes.md"]
    unchanged(user_run, lambda: refused(run_cli(*args), "notes.md", "choose another --grid"))
    assert not (user_run / "rec").exists()


def test_reidx_rewrites_its_own_files_and_only_as_the_same_kind(run_cli: Cli, ws: Path, tmp_path: Path) -> None:
    search = ["--device", "cpu", "search", str(ws / "q.png"), "--gallery", str(ws / "idx"), "--workers", "0"]
    montage = tmp_path / "hits.png"
    for _ in range(2):  # a montage reidx wrote is rewritten by the next search
        code, _, err = run_cli(*search, "--montage", montage)
        assert code == 0, err
    (tmp_path / "link.png").symlink_to(montage)
    code, _, err = run_cli(*search, "--montage", tmp_path / "link.png")  # written through the link
    assert code == 0 and (tmp_path / "link.png").is_symlink(), err
    report = ["--device", "cpu", "report", "--checkpoint", str(ws / "ck.pt"), "--dataset", str(ws / "ds"),
              "--workers", "0", "--plots", str(tmp_path / "plots"), "--out"]  # fmt: skip
    line = unchanged(tmp_path, lambda: refused(run_cli(*report, montage), "hits.png"))
    assert "holds an image reidx wrote, not a report" in line
    montage.write_bytes(montage.read_bytes() + b"edited")  # the user edits it: it is theirs now
    line = unchanged(tmp_path, lambda: refused(run_cli(*search, "--montage", montage), "hits.png"))
    assert "was not written by reidx" in line
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith((".tmp", ".lock"))]
