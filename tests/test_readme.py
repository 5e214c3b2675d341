"""The README's promises hold: its runnable commands run as written, and the CLI reference is current."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- readme-test: run -->"


def runnable_commands() -> list[str]:
    """`reidx …` lines of the bash blocks that follow the run marker (they need no external data)."""
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(re.escape(MARKER) + r"\s*```bash\n(.*?)```", text, re.S):
        commands += [line.strip() for line in block.splitlines() if line.strip().startswith("reidx ")]
    return commands


def test_readme_cli_commands_run_as_written(tmp_path: Path) -> None:
    commands = runnable_commands()
    assert len(commands) >= 5, "the README tour lost its commands"
    reidx = Path(sys.executable).with_name("reidx")
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    for command in commands:
        args = shlex.split(command)[1:]
        done = subprocess.run([str(reidx), *args], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"`{command}` failed:\n{done.stderr[-2000:]}"


def test_cli_reference_is_current() -> None:
    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "scripts" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (ROOT / "docs" / "cli.md").read_text() == module.render(), "run `python scripts/cli_reference.py`"
