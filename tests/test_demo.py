"""The quick end-to-end pipeline: the same steps as `make demo`, at tiny sizes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def test_quick_demo_runs_the_whole_pipeline(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Report:" in done.stdout and "| checkpoint" in done.stdout
    for name in ("untrained", "baseline", "cadnet"):
        assert (out / "runs" / name / "last.pt").is_file()
    assert (out / "index" / "header.json").is_file()
    report = (out / "report.md").read_text()
    assert "Cross-resolution re-ID" in report and "published (paper)" in report
    for png in [out / "search.png", *(out / "report-plots").glob("*.png")]:
        with Image.open(png) as image:
            image.verify()
