"""``reidx report`` on tiny prepared datasets (multi-shot synthetic and single-shot VIPeR-like, 2 trials each)
with tiny untrained checkpoints: every number is recomputed here through the embedding and metrics APIs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from reidx.checkpoint import LoadedModel, save_checkpoint
from reidx.data.loading import iterate_images
from reidx.data.manifest import INFO_NAME, MANIFEST_NAME, DatasetInfo, read_dataset, write_dataset
from reidx.data.prepare import prepare_dataset
from reidx.data.transforms import to_unit_range
from reidx.errors import ReidxError
from reidx.evaluation.embed import embed_paths
from reidx.metrics import evaluate_embeddings, recovery_metrics
from reidx.models import build_model
from reidx.models.loading import load_model
from reidx.report import Report, collect, run_report
from reidx.report.cache import CACHE_DIR
from reidx.report.export import render

INPUT_SIZE = (64, 32)
MODES = ["fused", "f", "g"]


@dataclass
class Workspace:
    root: Path
    synthetic: Path
    viper: Path
    cadnet: Path
    baseline: Path
    out: Path
    report: Report

    @property
    def text(self) -> str:
        return self.out.read_text()


def write_viper(root: Path, ids: int) -> Path:
    rng = np.random.default_rng(1)
    for pid in range(ids):
        for camera, angle in (("cam_a", 0), ("cam_b", 90)):
            path = root / camera / f"{pid:03d}_{angle}.bmp"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (32, 16, 3), dtype=np.uint8)).save(path)
    return root


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("report")
    synthetic, viper = root / "data" / "synthetic", root / "data" / "viper"
    prepare_dataset(
        "synthetic",
        None,
        synthetic,
        rates=(2, 3, 4),
        unseen_rates=(8,),
        trials=2,
        ids=8,
        cameras=2,
        images_per_camera=2,
        workers=1,
    )
    prepare_dataset(
        "viper",
        write_viper(root / "raw", 8),
        viper,
        rates=(2, 3, 4),
        unseen_rates=(8,),
        trials=2,
        test_ids=4,
        workers=1,
    )
    torch.manual_seed(0)
    cadnet, baseline = root / "runs" / "cadnet" / "last.pt", root / "runs" / "baseline" / "last.pt"
    model = build_model("cadnet", num_classes=4, arch="resnet18", discriminator_width=8)
    save_checkpoint(cadnet, model, INPUT_SIZE, train={"config": {"pretrained": False}})
    save_checkpoint(baseline, build_model("baseline", num_classes=4, arch="resnet18"), INPUT_SIZE)
    (baseline.parent / "config.json").write_text(json.dumps({"config": {"pretrained": True}}))
    out = root / "report.md"
    report = run_report([cadnet, baseline], [synthetic, viper], out=out, modes=MODES, published=True, workers=0)
    return Workspace(root, synthetic, viper, cadnet, baseline, out, report)


# --- independent recomputation -------------------------------------------------------------------------


@cache
def _model(checkpoint: Path) -> LoadedModel:
    return load_model(checkpoint)


@cache
def _vectors(checkpoint: Path, dataset: Path, mode: str) -> dict[str, np.ndarray]:
    """Embeddings of every query, HR source and gallery image of ``dataset``, by path."""
    frame, _ = read_dataset(dataset)
    test = frame[frame["split"] != "train"]
    paths = list(dict.fromkeys([*test["path"], *test["source"]]))
    return dict(zip(paths, embed_paths(_model(checkpoint), paths, mode, workers=0), strict=True))


def _embeddings(checkpoint: Path, dataset: Path, mode: str, rows: pd.DataFrame) -> np.ndarray:
    vectors = _vectors(checkpoint, dataset, mode)
    return np.stack([vectors[path] for path in rows["path"]])


def queries_of(frame: pd.DataFrame, trial: int, query_set: str) -> pd.DataFrame:
    """``query_set``: "mixed", "r8", "hr" or "mixed@R" (the mixed queries at rate R)."""
    queries = frame[(frame["split"] == "query") & (frame["trial"] == trial)]
    name, _, rate = query_set.partition("@")
    rows = queries[queries["query_set"] == ("mixed" if name == "hr" else name)]
    if name == "hr":
        rows = rows.drop_duplicates("source").assign(path=rows["source"])
    return rows[rows["rate"] == int(rate)] if rate else rows


@cache
def expected(checkpoint: Path, dataset: Path, mode: str, query_set: str, trial: int) -> tuple[float, ...]:
    """(rank1, rank5, rank10, mAP, mINP) of one trial, straight from the embedding and metrics APIs."""
    frame, info = read_dataset(dataset)
    gallery = frame[(frame["split"] == "gallery") & (frame["trial"] == trial)]
    queries = queries_of(frame, trial, query_set)
    metrics = evaluate_embeddings(
        _embeddings(checkpoint, dataset, mode, queries),
        _embeddings(checkpoint, dataset, mode, gallery),
        queries["pid"].to_numpy(),
        gallery["pid"].to_numpy(),
        queries["camid"].to_numpy(),
        gallery["camid"].to_numpy(),
        protocol=info.protocol,
        seed=info.seed + trial,
    )
    return metrics.cmc[0], metrics.cmc[4], metrics.cmc[9], metrics.mAP, metrics.mINP


#: t_{0.975, df}, df = 1, 2, 3 (printed tables of Student's t)
T975 = {1: 12.706, 2: 4.303, 3: 3.182}


def cell(values: list[float], trials: int) -> str:
    """Mean ± 95% CI half-width (Student t on the sample sd), in percent."""
    mean = 100 * float(np.mean(values))
    if trials == 1:
        return f"{mean:.1f}"
    half = T975[trials - 1] * float(np.std(values, ddof=1)) / np.sqrt(trials)
    return f"{mean:.1f} ± {100 * half:.1f}"


def expected_cells(checkpoint: Path, dataset: Path, mode: str, query_set: str, trials: list[int]) -> list[str]:
    per_trial = np.array([expected(checkpoint, dataset, mode, query_set, t) for t in trials])
    return [cell(per_trial[:, i].tolist(), len(trials)) for i in range(per_trial.shape[1])]


# --- markdown parsing ----------------------------------------------------------------------------------


@dataclass
class Table:
    heading: str
    header: list[str]
    rows: list[list[str]]
    caption: str
    lines: list[str]

    def value(self, row_start: str, mode: str | None, column: str) -> str:
        index = self.header.index(column)
        row = next(r for r in self.rows if r[0].startswith(row_start) and (mode is None or r[1] == mode))
        return row[index].replace("**", "")


def tables(markdown: str) -> list[Table]:
    lines, found, heading, i = markdown.splitlines(), [], "", 0
    while i < len(lines):
        if lines[i].startswith("## "):
            heading = lines[i][3:]
        if lines[i].startswith("|"):
            start = i
            while i < len(lines) and lines[i].startswith("|"):
                i += 1
            block = lines[start:i]
            cells = [[c.strip() for c in line.strip()[1:-1].split(" | ")] for line in block]
            caption = next(line for line in lines[i:] if line.strip())
            found.append(Table(heading, cells[0], cells[2:], caption, block))
        i += 1
    return found


def table(markdown: str, heading: str) -> Table:
    return next(t for t in tables(markdown) if t.heading.startswith(heading))


# --- tests ---------------------------------------------------------------------------------------------


def test_main_table_numbers_equal_the_metrics_on_the_same_embeddings(workspace: Workspace) -> None:
    main = table(workspace.text, "Cross-resolution re-ID")
    for dataset, label in ((workspace.synthetic, "synthetic"), (workspace.viper, "viper")):
        for checkpoint, name, modes in (
            (workspace.cadnet, "cadnet/last.pt", MODES),
            (workspace.baseline, "baseline/last.pt", ["fused"]),
        ):
            for mode in modes:
                r1, r5, r10, mean_ap, minp = expected_cells(checkpoint, dataset, mode, "mixed", [0, 1])
                assert main.value(name, mode, f"{label} R1 / R5 / R10") == f"{r1} / {r5} / {r10}"
                map_column = "mAP" if label == "synthetic" else "mAP (single-shot, = mean reciprocal rank)"
                assert main.value(name, mode, f"{label} {map_column}") == mean_ap
                minp_column = "mINP" if label == "synthetic" else "mINP (single-shot, = mean reciprocal rank)"
                assert main.value(name, mode, f"{label} {minp_column}") == minp


def test_rate_table_has_hr_each_seen_rate_mixed_and_unseen(workspace: Workspace) -> None:
    rates = table(workspace.text, "Rank-1 by query rate: synthetic")
    frame, _ = read_dataset(workspace.synthetic)
    seen = sorted(frame.loc[frame["query_set"] == "mixed", "rate"].unique())
    columns = {
        "HR": "hr",
        **{f"LR {r} (of mixed)": f"mixed@{r}" for r in seen},
        "LR {2,3,4} mixed": "mixed",
        "LR 8 unseen": "r8",
    }
    assert rates.header[2:] == list(columns)
    for column, query_set in columns.items():
        trials = [t for t in (0, 1) if len(queries_of(frame, t, query_set))]
        for checkpoint, name, mode in (
            (workspace.cadnet, "cadnet/last.pt", "g"),
            (workspace.baseline, "baseline/last.pt", "fused"),
        ):
            rank1 = expected_cells(checkpoint, workspace.synthetic, mode, query_set, trials)[0]
            assert rates.value(name, mode, column) == rank1


def test_recovery_table_equals_recovery_metrics_of_g_and_of_bilinear(workspace: Workspace) -> None:
    recovery = table(workspace.text, "HR recovery: synthetic")
    frame, _ = read_dataset(workspace.synthetic)
    loaded = _model(workspace.cadnet)
    for name, label in (("mixed", "LR {2,3,4} mixed"), ("r8", "LR 8 unseen")):
        rows = frame[(frame["split"] == "query") & (frame["query_set"] == name)].drop_duplicates(["path", "source"])
        ((lr, _),) = iterate_images(list(rows["path"]), INPUT_SIZE, len(rows), workers=0)
        ((hr, _),) = iterate_images(list(rows["source"]), INPUT_SIZE, len(rows), workers=0)
        model = recovery_metrics(to_unit_range(loaded.model.recover(lr)), to_unit_range(hr)).summary()
        bilinear = recovery_metrics(to_unit_range(lr), to_unit_range(hr)).summary()
        assert recovery.value("cadnet/last.pt", None, f"{label} SSIM ↑") == f"{model['ssim']:.3f}"
        assert recovery.value("cadnet/last.pt", None, f"{label} PSNR dB ↑") == f"{model['psnr']:.2f}"
        assert recovery.value("bilinear", None, f"{label} PSNR dB ↑") == f"{bilinear['psnr']:.2f}"
        assert recovery.value("baseline/last.pt", None, f"{label} SSIM ↑") == "n/a"


def test_markdown_tables_are_valid_and_each_names_protocol_rates_trials_checkpoint(workspace: Workspace) -> None:
    found = tables(workspace.text)
    headings = [t.heading for t in found]
    assert headings[0] == "Cross-resolution re-ID"
    for expected_heading in (
        "Rank-1 by query rate: synthetic",
        "Rank-1 by query rate: viper",
        "HR recovery: synthetic",
        "HR recovery: viper",
        "Published (paper)",
    ):
        assert any(h.startswith(expected_heading) for h in headings), expected_heading
    for found_table in found:
        assert re.fullmatch(r"\| --- (\| --- )*\|", found_table.lines[1])
        widths = {len(re.split(r"(?<!\\)\|", line)) for line in found_table.lines}
        assert len(widths) == 1, found_table.heading
        for word in ("protocol", "rates", "trials", "checkpoint"):
            assert word in found_table.caption, (found_table.heading, word)
    assert "mean of the precision at each true match" in workspace.text
    trials = "trials: mean ± 95% CI over 2 test trials (0, 1) of one checkpoint (Student t, 1 df)"
    assert trials in table(workspace.text, "Cross-resolution").caption


def test_labels_name_the_initialisation_and_skipped_modes_are_noted(workspace: Workspace) -> None:
    main = table(workspace.text, "Cross-resolution re-ID")
    labels = {row[0] for row in main.rows}
    assert labels == {"cadnet/last.pt [cadnet, resnet18, scratch]", "baseline/last.pt [baseline, resnet18, ImageNet]"}
    assert "baseline/last.pt [baseline, resnet18, ImageNet] has no f, g embedding: skipped" in workspace.text


def test_published_rows_are_apart_and_labelled(workspace: Workspace) -> None:
    published = table(workspace.text, "Published (paper)")
    assert published.header == ["method", "MLR-VIPeR R1 / R5 / R10"]
    assert published.value("CAD-Net, published (paper)", None, "MLR-VIPeR R1 / R5 / R10") == "43.1 / 68.2 / 77.5"
    measured = [t for t in tables(workspace.text) if t.heading != published.heading]
    assert all("published" not in " ".join(r[0] for r in t.rows) for t in measured)


def test_every_plot_exists_and_is_a_readable_png(workspace: Workspace) -> None:
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", workspace.text)
    names = {Path(link).name for link in links}
    assert {
        "cmc-synthetic.png",
        "rank1-vs-rate-viper.png",
        "recovery-synthetic.png",
        "ranked-viper-cadnet-last-fused.png",
        "ranked-viper-baseline-last-fused.png",
    } <= names
    assert len(links) == 10
    for link in links:
        with Image.open(workspace.out.parent / link) as image:
            image.verify()
            assert image.format == "PNG"


def test_csv_and_json_hold_the_same_results(workspace: Workspace) -> None:
    report = workspace.report
    frame = pd.read_csv(StringIO(render(report, "csv", published=True)))
    ranking = frame[frame["table"] == "ranking"]
    assert len(ranking) == len(report.ranking)
    assert np.allclose(ranking["rank1"], [e.result.rank1 for e in report.ranking])
    assert set(frame["table"]) == {"ranking", "per-trial", "paired", "recovery", "published (paper)"}
    document = json.loads(render(report, "json"))
    assert [r["mAP"] for r in document["ranking"]] == [e.result.mAP for e in report.ranking]
    assert [r["mINP"] for r in document["ranking"]] == [e.result.metrics["mINP"] for e in report.ranking]
    assert np.allclose(ranking["mINP"], [e.result.mINP for e in report.ranking]) and "mINP_ci95" in frame
    assert {d["protocol"] for d in document["datasets"]} == {"multi-shot", "single-shot"}
    assert "published" not in document


def test_rerun_hits_the_cache_and_one_trial_reads_from_it(workspace: Workspace, capsys: pytest.CaptureFixture) -> None:
    again = run_report(
        [workspace.cadnet, workspace.baseline],
        [workspace.synthetic, workspace.viper],
        out=workspace.root / "again.md",
        modes=MODES,
        published=True,
        workers=0,
    )
    assert again.evaluated == 0 and again.cached == workspace.report.evaluated
    assert "evaluated 0, cached" in capsys.readouterr().err
    one = run_report(
        [workspace.cadnet], [workspace.viper], out=workspace.root / "trial1.md", modes=["f"], trial=1, workers=0
    )
    assert one.evaluated == 0
    main = table((workspace.root / "trial1.md").read_text(), "Cross-resolution")
    assert "trials: trial 1 of 2" in main.caption
    r1, r5, r10, *_ = expected_cells(workspace.cadnet, workspace.viper, "f", "mixed", [1])
    assert main.value("cadnet/last.pt", "f", "viper R1 / R5 / R10") == f"{r1} / {r5} / {r10}"


def copied(workspace: Workspace, name: str, checkpoint: Path) -> tuple[Path, Path]:
    """A copy of the synthetic dataset and of ``checkpoint`` under ``name``, so a test may change them."""
    data = workspace.root / "data" / name
    shutil.copytree(workspace.synthetic, data)
    run = workspace.root / "runs" / name / "last.pt"
    run.parent.mkdir(parents=True)
    shutil.copy(checkpoint, run)
    return data, run


def test_a_changed_manifest_invalidates_the_cache(workspace: Workspace) -> None:
    data, run = copied(workspace, "copy", workspace.baseline)
    first = collect([run], [data], workers=0)
    assert (first.evaluated, first.cached) == (2, 0)  # fused + recovery
    assert (collect([run], [data], workers=0).cached) == 2
    frame, info = read_dataset(data)
    gallery = frame.index[frame["split"] == "gallery"]
    for name in (MANIFEST_NAME, INFO_NAME):  # the user replaces them (reidx replaces only files it wrote)
        (data / name).unlink()
    write_dataset(data, frame.drop(gallery[-1]), DatasetInfo(**vars(info)))
    changed = collect([run], [data], workers=0)
    assert (changed.evaluated, changed.cached) == (2, 0)
    assert len(list((run.parent / CACHE_DIR).glob("*.json"))) == 3  # model info + one entry per mode, none stale


def test_an_edited_image_invalidates_the_cache(workspace: Workspace) -> None:
    """The cache key covers the images, not only the manifest: editing one in place recomputes the report."""
    data, run = copied(workspace, "edited", workspace.cadnet)
    before = run_report([run], [data], out=workspace.root / "edited.md", modes=["f"], trial=0, workers=0)
    assert (collect([run], [data], modes=["f"], trial=0, workers=0).cached) == 2
    frame, _ = read_dataset(data)
    query = frame[(frame["split"] == "query") & (frame["trial"] == 0) & (frame["query_set"] == "mixed")].iloc[0]
    assert query["path"].startswith(str(data.resolve()))  # an LR image of the copy, not of the original
    image = Image.open(query["path"])
    Image.fromarray(255 - np.asarray(image)).save(query["path"])  # same size and name, other pixels
    after = run_report([run], [data], out=workspace.root / "edited.md", modes=["f"], trial=0, workers=0)
    assert (after.evaluated, after.cached) == (2, 0)  # ranking and recovery, both recomputed
    recovery = after.recovery[0].payload["sets"]["mixed"]["bilinear"]
    assert recovery != before.recovery[0].payload["sets"]["mixed"]["bilinear"]
    r1, r5, r10, *_ = expected_cells(run, data, "f", "mixed", [0])
    main = table((workspace.root / "edited.md").read_text(), "Cross-resolution")
    assert main.value("edited/last.pt", "f", "synthetic R1 / R5 / R10") == f"{r1} / {r5} / {r10}"


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def test_missing_checkpoint_is_one_line_from_the_console_script(workspace: Workspace) -> None:
    reidx = Path(sys.executable).with_name("reidx")
    result = subprocess.run(
        [str(reidx), "report", "--checkpoint", str(workspace.root / "nope.pt"), "--dataset", str(workspace.synthetic)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "checkpoint not found" in _one_line(result.stderr) and "Traceback" not in result.stderr


def test_bad_inputs_are_one_clear_line(workspace: Workspace, run_cli, tmp_path: Path) -> None:
    frame, info = read_dataset(workspace.synthetic)
    train_only = tmp_path / "train-only"
    write_dataset(train_only, frame[frame["split"] == "train"], info)
    cadnet = ["report", "--checkpoint", str(workspace.cadnet), "--dataset"]
    synthetic = [*cadnet, str(workspace.synthetic)]
    cases = [
        ([*cadnet, str(tmp_path / "missing")], "dataset not found"),
        ([*cadnet, str(train_only)], "has no test split"),
        ([*synthetic, "--trial", "7"], "has no trial 7"),
        ([*synthetic, "--modes", "fused,x"], "unknown mode"),
        ([*synthetic, "--format", "xml"], "--format"),
        (
            ["report", "--checkpoint", str(workspace.baseline), "--dataset", str(workspace.synthetic), "--modes", "g"],
            "none of the checkpoints has",
        ),
    ]
    for args, message in cases:
        code, _, err = run_cli(*args)
        assert code != 0
        assert message in _one_line(err), args


def test_a_run_is_evaluated_only_on_the_trial_it_trained_on(workspace: Workspace) -> None:
    """Other trials' test ids are the run's training ids: evaluating there would leak."""
    run = workspace.root / "runs" / "viper-t1" / "last.pt"
    model = build_model("cadnet", num_classes=4, arch="resnet18", discriminator_width=8)
    training = {"pretrained": False, "dataset": str(workspace.viper), "trial": 1}
    save_checkpoint(run, model, INPUT_SIZE, train={"config": training})
    report = run_report(
        [run], [workspace.viper, workspace.synthetic], out=workspace.root / "t1.md", modes=["f"], workers=0
    )
    viper = next(e for e in report.entries("viper") if e.mode == "f")
    assert viper.result.trials == 1
    r1, r5, r10, *_ = expected_cells(run, workspace.viper, "f", "mixed", [1])
    main = table((workspace.root / "t1.md").read_text(), "Cross-resolution")
    assert main.value("viper-t1/last.pt", "f", "viper R1 / R5 / R10") == f"{r1} / {r5} / {r10}"
    synthetic = next(e for e in report.entries("synthetic") if e.mode == "f")
    assert synthetic.result.trials == 2, "a dataset the run did not train on is evaluated on every trial"
    with pytest.raises(ReidxError, match="trained on trial 1"):
        run_report([run], [workspace.viper], out=workspace.root / "t0.md", modes=["f"], trial=0, workers=0)
