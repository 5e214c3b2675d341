"""Hostile dataset and index input: one line naming the file and the fix, exit 1, nothing written or changed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from test_safety_images import bomb_png

from reidx.checkpoint import save_checkpoint
from reidx.data.base import Options
from reidx.data.manifest import read_dataset
from reidx.data.prepare import prepare_dataset
from reidx.data.registry import get_reader
from reidx.data.transforms import downsample
from reidx.gallery.directory import HEADER_NAME, METADATA_NAME
from reidx.gallery.faiss import INDEX_NAME
from reidx.models import build_model
from reidx.retrieval import build_index, images_table
from reidx.retrieval.inputs import dataset_table
from reidx.retrieval.requests import EmbedJob

INPUT_SIZE = (64, 32)


def solid(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (16, 8)) -> Path:
    """A (H, W) image of one colour, with a darker top half so down-sampling keeps some structure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.empty((*size, 3), dtype=np.uint8)
    array[:] = colour
    array[: size[0] // 2] //= 2
    Image.fromarray(array).save(path)
    return path


def tree_state(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_one_line(code: int, err: str, *needles: str) -> None:
    """Exit 1, one error line, no traceback, every needle in it."""
    assert code == 1, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)


# ----------------------------------------------------------------------------------------------- prepare


def test_prepare_refuses_a_decompression_bomb(tmp_path: Path, run_cli) -> None:
    for pid in (1, 2):
        for cam in (1, 2):
            solid(tmp_path / "mine" / f"{pid:04d}_c{cam}_a.png", (40 * pid, 30 * cam, 9))
            solid(tmp_path / "mine" / f"{pid:04d}_c{cam}_b.png", (40 * pid, 30 * cam, 90))
    bomb_png(tmp_path / "mine" / "0002_c2_bomb.png")
    before = tree_state(tmp_path / "mine")
    code, _, err = run_cli("prepare", "--dataset", "folder", "--root", tmp_path / "mine", "--out", tmp_path / "out")
    assert_one_line(code, err, "0002_c2_bomb.png", "claims 100000x100000", "REIDX_MAX_PIXELS")
    assert not (tmp_path / "out").exists() and tree_state(tmp_path / "mine") == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_same_stem_sources_get_their_own_lr_files(tmp_path: Path) -> None:
    """a.jpg and a.png are two people: each query must keep its own pixels."""
    red, blue = solid(tmp_path / "imgs" / "a.png", (250, 10, 10)), solid(tmp_path / "imgs" / "a.bmp", (10, 10, 250))
    rows = ["path,pid,camid,split", "imgs/a.png,1,0,query", "imgs/a.bmp,2,0,query"]
    for pid, colour in ((1, (250, 10, 10)), (2, (10, 10, 250))):
        solid(tmp_path / "imgs" / f"g{pid}.png", colour)
        rows.append(f"imgs/g{pid}.png,{pid},1,gallery")
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    prepare_dataset("folder", tmp_path / "list.csv", tmp_path / "out", rates=(2,), workers=1)
    frame, _ = read_dataset(tmp_path / "out")
    query = frame[frame["split"] == "query"].set_index("pid")
    out = (tmp_path / "out").resolve()
    assert query.loc[1, "path"] == str(out / "lr/r2/imgs/a.png.png") and query.loc[2, "path"] == str(
        out / "lr/r2/imgs/a.bmp.png"
    )
    for pid, source in ((1, red), (2, blue)):
        written = np.asarray(Image.open(query.loc[pid, "path"]).convert("RGB"))
        assert np.array_equal(written, np.asarray(downsample(Image.open(source).convert("RGB"), 2)))


def test_prepare_names_both_files_when_lr_names_cannot_be_unique(tmp_path: Path) -> None:
    from reidx.data.base import Record
    from reidx.data.prepare import lr_stems
    from reidx.errors import ReidxError

    root = tmp_path
    records = [Record(str(root / name), 1, 0) for name in ("a.jpg", "a.png", "a.jpg.png")]
    with pytest.raises(ReidxError, match=r"a\.jpg and .*a\.jpg\.png would share the low-resolution file"):
        lr_stems(records, root)
    assert lr_stems(records[:2], root) == {str(root / "a.jpg"): "a.jpg", str(root / "a.png"): "a.png"}
    assert lr_stems(records[2:], root) == {str(root / "a.jpg.png"): "a.jpg"}  # alone: the usual name


# ------------------------------------------------------------------------------------------- folder CSV


def write_csv_dataset(tmp_path: Path, extra: list[str], header: str = "path,pid,camid,split") -> Path:
    """Two train ids and two test ids (query cam 0, gallery cam 1), plus ``extra`` rows."""
    rows = [header]
    for pid in (1, 2, 3, 4):
        for camid in (0, 1):
            name = f"imgs/{pid}_{camid}.png"
            solid(tmp_path / name, (50 * pid, 40 * camid, 7))
            split = "train" if pid <= 2 else ("query" if camid == 0 else "gallery")
            rows.append(f"{name},{pid},{camid}" + (f",{split}" if "split" in header else ""))
    (tmp_path / "list.csv").write_text("\n".join(rows + extra) + "\n")
    return tmp_path / "list.csv"


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["imgs/x.png,1.5,0,train"], ["line 10: pid '1.5' is not a whole number"]),
        (["imgs/x.png,,0,train"], ["line 10: pid is empty, not", "whole number"]),
        (["imgs/x.png,bob,0,train"], ["line 10: pid 'bob'"]),
        (["imgs/x.png,-3,0,train"], ["line 10: pid -3 is below -1"]),
        (["imgs/x.png,5,-1,train"], ["line 10: camid -1 is below 0"]),
        (["imgs/x.png,5,cam2,train"], ["line 10: camid 'cam2'"]),
        (["imgs/x.png,5,0,probe"], ["line 10: unknown split value 'probe'"]),
        (["imgs/x.png,5,0,"], ["line 10: unknown split value ''"]),
        (["imgs/x.png,5,0,train,oops"], ["line 10 has 5 cells, the header 4"]),
        ([",5,0,train"], ["line 10: the path is empty"]),
        (["imgs/absent.png,5,0,train"], ["line 10: image imgs/absent.png not found"]),
        (["imgs/1_0.png,1,0,train"], ["lines 2 and 10 both list imgs/1_0.png"]),
        (["imgs/3_1.png,3,1,train"], ["lines 7 and 10 both list imgs/3_1.png", "never both"]),
        (["imgs/x.png,3,0,train"], ["pid 3 is both a train identity (line 10) and a test identity (line 6)", "leak"]),
    ],
)
def test_bad_csv_cells_are_one_line(tmp_path: Path, run_cli, extra: list[str], needles: list[str]) -> None:
    csv_path = write_csv_dataset(tmp_path, extra)
    solid(tmp_path / "imgs" / "x.png", (1, 2, 3))
    before = tree_state(tmp_path)
    code, _, err = run_cli("prepare", "--dataset", "folder", "--root", csv_path, "--out", tmp_path / "out")
    assert_one_line(code, err, "list.csv", *needles)
    assert not (tmp_path / "out").exists() and tree_state(tmp_path) == before


def test_csv_whole_numbers_and_junk_rows_still_read(tmp_path: Path) -> None:
    csv_path = write_csv_dataset(tmp_path, ["imgs/x.png, 5.0 ,0 , Train", "imgs/y.png,-1,0,gallery", ""])
    solid(tmp_path / "imgs" / "x.png", (1, 2, 3))
    solid(tmp_path / "imgs" / "y.png", (1, 2, 3))
    source = get_reader("folder").read(csv_path, tmp_path, Options())
    assert [r.pid for r in source.train] == [1, 1, 2, 2, 5] and len(source.gallery) == 2  # junk -1 dropped


def test_folder_standard_split_refuses_a_train_id_in_the_test_set(tmp_path: Path, run_cli) -> None:
    for folder, name in [("train", "0001_c1_a.png"), ("train", "0002_c1_a.png"), ("query", "0002_c1_q.png")]:
        solid(tmp_path / "mine" / folder / name, (9, 9, 9))
    solid(tmp_path / "mine" / "gallery" / "0002_c2_g.png", (9, 9, 9))
    code, _, err = run_cli("prepare", "--dataset", "folder", "--root", tmp_path / "mine", "--out", tmp_path / "out")
    assert_one_line(code, err, "pid 2 is both a train identity (train/0002_c1_a.png)", "query/0002_c1_q.png")


# ----------------------------------------------------------------------------------------------- camids


def test_one_camid_rule_across_readers(tmp_path: Path) -> None:
    """The same Market-style names give the same camids in market1501, folder, a CSV, a prepared dataset
    and loose files for embed/search; c0 is camera 0, not 'unknown' (-1)."""
    names = {"bounding_box_train": [], "query": [], "bounding_box_test": []}
    for pid in (1, 2, 3, 4):
        for cam in (0, 1, 6):
            folder = "bounding_box_train" if pid <= 2 else ("query" if cam == 0 else "bounding_box_test")
            names[folder].append(solid(tmp_path / "market" / folder / f"{pid:04d}_c{cam}s1_000001_00.png", (9, 9, 9)))
    expected = {str(p.resolve()): int(p.name.split("_c")[1][0]) for paths in names.values() for p in paths}
    readers = {}
    for dataset in ("market1501", "folder"):
        source = get_reader(dataset).read(tmp_path / "market", tmp_path, Options())
        readers[dataset] = {r.path: r.camid for r in source.train + source.query + source.gallery}
    loose = images_table([tmp_path / "market"])
    readers["embed/search"] = dict(zip(loose["path"], loose["camid"].tolist(), strict=True))
    prepare_dataset("market1501", tmp_path / "market", tmp_path / "prepared", rates=(2,), workers=1)
    table = dataset_table(tmp_path / "prepared", "gallery")
    readers["manifest"] = {
        str((tmp_path / "prepared" / p).resolve()) if not Path(p).is_absolute() else p: c
        for p, c in zip(table["path"], table["camid"].tolist(), strict=True)
    }
    for name, camids in readers.items():
        assert all(camids[path] == expected[path] for path in camids), name
    assert set(readers["market1501"].values()) == {0, 1, 6}


# ------------------------------------------------------------------------------------------------ pairs


def test_two_camera_pairs_without_a_split_prepare(tmp_path: Path) -> None:
    """GRID/VIPeR-style pairs in a CSV without a split: each test person gets one query and its pair as gallery."""
    rows = ["path,pid,camid"]
    for pid in range(1, 11):
        for camid in (1, 2):
            solid(tmp_path / "pairs" / f"{pid}_{camid}.png", (20 * pid, 100 * camid, 5))
            rows.append(f"pairs/{pid}_{camid}.png,{pid},{camid}")
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    info = prepare_dataset("folder", tmp_path / "pairs.csv", tmp_path / "out", rates=(2,), workers=1)
    assert info.extra["valid_queries"]["mixed"] == [5, 5]
    frame, _ = read_dataset(tmp_path / "out")
    query, gallery = frame[frame["split"] == "query"], frame[frame["split"] == "gallery"]
    assert sorted(query["pid"]) == sorted(gallery["pid"]) and query["pid"].is_unique
    for pid in query["pid"]:
        assert set(query[query["pid"] == pid]["camid"]) != set(gallery[gallery["pid"] == pid]["camid"])


def test_mixed_camera_counts_leave_every_query_a_match() -> None:
    from reidx.data.base import Record, per_camera_query_split

    records = [
        Record(f"{pid}_{cam}_{k}", pid, cam) for pid in range(1, 21) for cam, n in ((1, 2), (2, 1)) for k in range(n)
    ]
    split = per_camera_query_split(records, np.random.default_rng(0), 10, None)
    for query in split.query:
        assert any(g.pid == query.pid and g.camid != query.camid for g in split.gallery)
    assert len(split.query) == 10 and len(split.gallery) == 20
    pairs = [Record(f"{pid}_{cam}", pid, cam) for pid in range(1, 41) for cam in (1, 2)]
    split = per_camera_query_split(pairs, np.random.default_rng(0), 20, None)
    assert len(split.query) == len(split.gallery) == 20 and {q.camid for q in split.query} == {1, 2}


@pytest.mark.parametrize(
    ("rows", "needles"),
    [
        (["{pid}_a.png,{pid},0", "{pid}_b.png,{pid},0"], ["only ones from their own camera", "different camids"]),
        (["{pid}_a.png,{pid},0,query", "{pid}_b.png,{pid},1,{train_or_query}"], ["have no gallery image", "gallery"]),
    ],
)
def test_no_valid_query_names_the_cause(tmp_path: Path, run_cli, rows: list[str], needles: list[str]) -> None:
    lines = ["path,pid,camid" + (",split" if rows[0].count(",") == 3 else "")]
    for pid in range(1, 7):
        for row in rows:
            line = row.format(pid=pid, train_or_query="train" if pid > 3 else "query")
            solid(tmp_path / line.split(",")[0], (30 * pid, 0, 0))
            lines.append(line)
    if "split" in lines[0]:  # train ids 4-6 keep their query image out of the test set
        lines = [line for line in lines if not (line.endswith(",query") and int(line.split(",")[1]) > 3)]
    (tmp_path / "list.csv").write_text("\n".join(lines) + "\n")
    code, _, err = run_cli("prepare", "--dataset", "folder", "--root", tmp_path / "list.csv", "--out", tmp_path / "o")
    assert_one_line(code, err, "0 of", *needles)
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------ index files


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint, a 6-image flat index of it, and a query image (treat as read-only)."""
    root = tmp_path_factory.mktemp("tamper")
    torch.manual_seed(0)
    save_checkpoint(root / "model.pt", build_model("baseline", num_classes=3, arch="resnet18"), INPUT_SIZE)
    from reidx.models.loading import load_model

    for pid in (1, 2, 3):
        for cam in (1, 2):
            solid(root / "gallery" / f"{pid:04d}_c{cam}s1_000001_00.png", (70 * pid, 50 * cam, 20), INPUT_SIZE)
    solid(root / "query.png", (70, 50, 20), INPUT_SIZE)
    build_index(load_model(root / "model.pt"), images_table([root / "gallery"]), root / "idx", job=EmbedJob(workers=0))
    return root


def header_edit(change):
    def apply(directory: Path) -> None:
        fields = json.loads((directory / HEADER_NAME).read_text())
        (directory / HEADER_NAME).write_text(json.dumps(change(fields)))

    return apply


def metadata_edit(change):
    def apply(directory: Path) -> None:
        frame = pd.read_parquet(directory / METADATA_NAME)
        change(frame).to_parquet(directory / METADATA_NAME, index=False)

    return apply


def truncate(name: str):
    def apply(directory: Path) -> None:
        data = (directory / name).read_bytes()
        (directory / name).write_bytes(data[: len(data) // 2])

    return apply


def garbage(name: str):
    return lambda directory: (directory / name).write_bytes(b"\x00\xffnot what reidx wrote" * 50)


TAMPERING = {
    "header garbage": (garbage(HEADER_NAME), HEADER_NAME),
    "header list": (lambda d: (d / HEADER_NAME).write_text("[1, 2]"), HEADER_NAME),
    "header missing dim": (header_edit(lambda f: {k: v for k, v in f.items() if k != "dim"}), "missing dim"),
    "header extra key": (header_edit(lambda f: {**f, "evil": 1}), "unknown evil"),
    "header dim text": (header_edit(lambda f: {**f, "dim": "512"}), 'dim is "512"'),
    "header count bool": (header_edit(lambda f: {**f, "count": True}), "count is true"),
    "header count wrong": (header_edit(lambda f: {**f, "count": 5}), "header.json 5"),
    "header input size": (
        header_edit(lambda f: {**f, "fingerprint": {**f["fingerprint"], "input_size": [0, 32]}}),
        "input size",
    ),
    "header no mode": (
        header_edit(lambda f: {**f, "fingerprint": {"checkpoint_sha256": "x", "input_size": [64, 32]}}),
        "fingerprint",
    ),
    "header mode unknown": (
        header_edit(lambda f: {**f, "fingerprint": {**f["fingerprint"], "mode": "zzz"}}),
        "zzz",
    ),
    "header input size huge": (
        header_edit(lambda f: {**f, "fingerprint": {**f["fingerprint"], "input_size": [10**6, 10**6]}}),
        "input size",
    ),
    "header ivfpq params": (header_edit(lambda f: {**f, "index_type": "ivfpq"}), "index params"),
    "header checkpoint number": (header_edit(lambda f: {**f, "checkpoint": 7}), "checkpoint is 7"),
    "metadata garbage": (garbage(METADATA_NAME), METADATA_NAME),
    "metadata truncated": (truncate(METADATA_NAME), METADATA_NAME),
    "metadata no pid": (metadata_edit(lambda m: m.drop(columns="pid")), "columns pid are missing"),
    "metadata pid text": (metadata_edit(lambda m: m.assign(pid=m["pid"].astype(str))), "column pid holds"),
    "metadata camid null": (metadata_edit(lambda m: m.assign(camid=[None, *m["camid"][1:]])), "column camid"),
    "metadata path number": (metadata_edit(lambda m: m.assign(path=range(len(m)))), "column path"),
    "metadata short": (metadata_edit(lambda m: m.iloc[:-1]), "metadata.parquet 5"),
    "index garbage": (garbage(INDEX_NAME), INDEX_NAME),
    "index truncated": (truncate(INDEX_NAME), INDEX_NAME),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_tampered_index_is_one_line_on_search_and_append(tmp_path: Path, run_cli, index_dir: Path, case: str) -> None:
    tamper, needle = TAMPERING[case]
    directory = Path(shutil.copytree(index_dir / "idx", tmp_path / "idx"))
    tamper(directory)
    before = tree_state(tmp_path)
    code, _, err = run_cli(
        "--device", "cpu", "search", index_dir / "query.png", "--gallery", directory, "--workers", "0"
    )
    assert_one_line(code, err, needle, "reidx embed")
    code, _, err = run_cli(
        "--device", "cpu", "embed", index_dir / "query.png", "--checkpoint", index_dir / "model.pt",
        "--out", directory, "--append", "--workers", "0",
    )  # fmt: skip
    assert_one_line(code, err, needle, "reidx embed")
    after = tree_state(tmp_path)
    assert after == before, sorted(set(after) ^ set(before))


def test_untampered_copy_searches(tmp_path: Path, run_cli, index_dir: Path) -> None:
    directory = Path(shutil.copytree(index_dir / "idx", tmp_path / "idx"))
    code, out, err = run_cli("--device", "cpu", "search", index_dir / "query.png", "--gallery", directory, "--json")
    assert code == 0, err
    assert json.loads(out)[0]["results"][0]["camid"] in (1, 2)


def test_search_refuses_a_bomb_query(tmp_path: Path, run_cli, index_dir: Path) -> None:
    bomb = bomb_png(tmp_path / "0001_c1_bomb.png")
    code, _, err = run_cli("--device", "cpu", "search", bomb, "--gallery", index_dir / "idx", "--workers", "0")
    assert_one_line(code, err, "0001_c1_bomb.png", "over the limit")


def test_market_name_parser_edges(tmp_path: Path) -> None:
    from reidx.data.base import market_identity, parse_market_name
    from reidx.errors import ReidxError
    from reidx.retrieval.inputs import identity_from_name

    assert market_identity("0002_c0s1_000451_03.jpg") == (2, 0) and market_identity("-1_c3_x.jpg") == (-1, 3)
    for name in ("-5_c1_x.jpg", "0001_x.jpg", f"{'9' * 19}_c1_x.jpg", "c1_0001.jpg"):
        assert market_identity(name) is None and identity_from_name(name) == (-1, -1)
        with pytest.raises(ReidxError, match="expected a Market-style name"):
            parse_market_name(Path(name))
