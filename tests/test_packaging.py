"""Set-up files agree with each other: Dockerfile vs pyproject, CI vs README, Makefile targets."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def _requirement_name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower()


def _dockerfile_pip_installs() -> list[list[str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    installs = []
    for line in text.splitlines():
        for part in line.split("&&"):
            words = shlex.split(part.replace("RUN ", "", 1).strip()) if "pip install" in part else []
            if words:
                start = words.index("install") + 1
                installs.append([word for word in words[start:] if not word.startswith("-")])
    return installs


def test_dockerfile_installs_exactly_the_project_package_set() -> None:
    declared = {
        _requirement_name(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    }
    installs = _dockerfile_pip_installs()
    assert ["."] in installs, "the Dockerfile must `pip install .` so it gets pyproject's dependencies"
    extra = {_requirement_name(arg) for args in installs for arg in args if arg != "."}
    assert extra <= declared, f"Dockerfile installs packages pyproject does not declare: {extra - declared}"
    text = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["reidx"]' in text
    assert re.search(r"^FROM nvidia/cuda:\S+runtime", text, re.M), "base image must be a CUDA runtime"


def test_faiss_gpu_on_linux_x86_64_and_cpu_elsewhere() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    gpu = next(d for d in deps if d.startswith("faiss-gpu"))
    cpu = next(d for d in deps if d.startswith("faiss-cpu"))
    assert "platform_machine == 'x86_64'" in gpu and "platform_machine != 'x86_64'" in cpu


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
    makefile = (ROOT / "Makefile").read_text()
    for target in ("test:", "demo:", "bench:"):
        assert re.search(rf"^{target}", makefile, re.M), f"Makefile lacks {target}"
