"""Each reader on a tiny fake copy of its real layout: ids, images and cameras per split."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from reidx.data import registry
from reidx.data.base import Options, Record, Source
from reidx.data.manifest import check_testable, read_dataset
from reidx.data.prepare import prepare_dataset
from reidx.data.readers.viper import VIPeR
from reidx.data.registry import dataset_names, get_reader, register_dataset
from reidx.errors import ReidxError
from reidx.registry import Registry


def stats(records: list[Record]) -> tuple[int, int, int]:
    """(ids, images, cameras)."""
    return len({r.pid for r in records}), len(records), len({r.camid for r in records})


def read(name: str, root: Path | None, tmp_path: Path, **options) -> Source:
    return get_reader(name).read(root, tmp_path / "work", Options(**options))


def test_registry_lists_names_on_unknown_dataset() -> None:
    assert {"market1501", "dukemtmc", "cuhk03", "viper", "caviar", "folder", "synthetic"} <= set(dataset_names())
    with pytest.raises(ReidxError, match="unknown dataset 'nope'.*market1501.*viper"):
        get_reader("nope")


def test_register_dataset_adds_a_reader_and_refuses_a_clash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "READERS", Registry("dataset", "reidx.data.readers"))

    @register_dataset("test-viper-copy")
    class Copy(VIPeR):
        pass

    assert isinstance(get_reader("test-viper-copy"), Copy)
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("test-viper-copy")(VIPeR)


@pytest.mark.parametrize("nesting", ["", "Market-1501-v15.09.15", "market1501/Market-1501-v15.09.15"])
def test_market1501_layouts(tmp_path: Path, market_tree, nesting: str) -> None:
    base = market_tree(tmp_path / "data" / nesting)
    source = read("market1501", tmp_path / "data", tmp_path)
    assert source.root == base.resolve()
    assert stats(source.train) == (4, 16, 2)
    assert stats(source.query) == (3, 4, 2)
    assert stats(source.gallery) == (4, 8, 4)  # ids 5-7 plus distractor 0; junk -1 dropped
    assert all(r.pid != -1 for r in source.gallery) and any(r.pid == 0 for r in source.gallery)
    assert {r.camid for r in source.train} == {1, 2}  # c1, c2: camids as written
    assert all(Path(r.path).is_absolute() for r in source.train)


def test_market1501_wrong_layout_names_the_folders(tmp_path: Path, market_tree) -> None:
    market_tree(tmp_path / "data")
    (tmp_path / "data" / "query").rename(tmp_path / "data" / "queries")
    with pytest.raises(ReidxError, match="expected bounding_box_train/, query/, bounding_box_test/"):
        read("market1501", tmp_path / "data", tmp_path)


def test_market1501_unparseable_name_is_named(tmp_path: Path, market_tree, write_image) -> None:
    market_tree(tmp_path / "data")
    write_image(tmp_path / "data" / "query" / "holiday.jpg")
    with pytest.raises(ReidxError, match="holiday.jpg"):
        read("market1501", tmp_path / "data", tmp_path)


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(ReidxError, match="does not exist"):
        read("market1501", tmp_path / "absent", tmp_path)


def test_dukemtmc_layout(tmp_path: Path, write_image) -> None:
    base = tmp_path / "dukemtmc-reid" / "DukeMTMC-reID"
    for folder, pid, cam in [("bounding_box_train", 1, 1), ("bounding_box_train", 1, 8), ("query", 2, 3)]:
        write_image(base / folder / f"{pid:04d}_c{cam}_f0046182.jpg")
    write_image(base / "bounding_box_test" / "0002_c5_f0050001.jpg")
    source = read("dukemtmc", tmp_path, tmp_path)
    assert source.root == base.resolve()
    assert {r.camid for r in source.train} == {1, 8}
    assert stats(source.query) == (1, 1, 1) and source.gallery[0].camid == 5


def test_cuhk03_image_folders(tmp_path: Path, cuhk03_tree) -> None:
    cuhk03_tree(tmp_path / "cuhk03")
    source = read("cuhk03", tmp_path, tmp_path)
    assert stats(source.images) == (6, 36, 2)
    assert {r.pid for r in source.images} == {1001, 1002, 1003, 2001, 2002, 2003}
    labeled_and_detected = [r for r in source.images if r.pid == 1001 and r.camid == 0]
    assert len(labeled_and_detected) == 3


def write_cuhk03_mat(path: Path, pids: int = 3) -> None:
    """A tiny cuhk-03.mat in MATLAB v7.3 form: ``labeled``/``detected`` are 1x2 cell arrays (camera pairs)
    of references to (10, pids) cell arrays, each cell a reference to an image stored as (3, W, H) or an
    empty (2,) array. Cells 1-2 (view 1) and 6-7 (view 2) hold images."""
    with h5py.File(path, "w") as mat:
        for kind in ("labeled", "detected"):
            pairs = np.empty((1, 2), dtype=h5py.ref_dtype)
            for campair in range(2):
                cells = np.empty((pids, 10), dtype=h5py.ref_dtype)
                for pid in range(pids):
                    for index in range(10):
                        name = f"#refs#/{kind}{campair}_{pid}_{index}"
                        if index in (0, 1, 5, 6):
                            image = np.full((16, 8, 3), 10 * pid + index, dtype=np.uint8)
                            cells[pid, index] = mat.create_dataset(name, data=image.T).ref
                        else:
                            cells[pid, index] = mat.create_dataset(name, data=np.zeros(2, np.uint64)).ref
                pairs[0, campair] = mat.create_dataset(f"#refs#/{kind}{campair}", data=cells.T).ref
            mat.create_dataset(kind, data=pairs)


def test_cuhk03_mat_is_extracted(tmp_path: Path) -> None:
    (tmp_path / "cuhk03_release").mkdir()
    write_cuhk03_mat(tmp_path / "cuhk03_release" / "cuhk-03.mat")
    source = read("cuhk03", tmp_path, tmp_path)
    assert source.root == tmp_path / "work"
    # 2 pairs x 3 pids x (labeled + detected) x 4 images
    assert stats(source.images) == (6, 48, 2)
    first = next(r for r in source.images if r.path.endswith("images_labeled/1_001_2_07.png"))
    assert first.camid == 1
    from PIL import Image

    with Image.open(first.path) as image:
        assert image.size == (8, 16) and image.getpixel((0, 0)) == (6, 6, 6)


def test_cuhk03_wrong_layout(tmp_path: Path) -> None:
    with pytest.raises(ReidxError, match="images_labeled/, images_detected/ or cuhk-03.mat"):
        read("cuhk03", tmp_path, tmp_path)


def test_viper_layout(tmp_path: Path, viper_tree) -> None:
    viper_tree(tmp_path / "VIPeR", ids=7)
    source = read("viper", tmp_path, tmp_path)
    assert stats(source.images) == (7, 14, 2)
    assert {r.camid for r in source.images if "/cam_a/" in r.path} == {0}
    assert {r.pid for r in source.images} == set(range(7))


def test_caviar_cameras_and_low_resolution_camera(tmp_path: Path, caviar_tree) -> None:
    caviar_tree(tmp_path / "CAVIAR4REID")
    source = read("caviar", tmp_path, tmp_path)
    assert stats(source.images) == (8, 42, 2)
    assert source.facts["lr_camid"] == 1 and source.facts["two_camera_ids"] == 6
    one_camera = {r.pid for r in source.images if r.camid == 0} - {r.pid for r in source.images if r.camid == 1}
    assert one_camera == {7, 8}
    assert "011-020" in get_reader("caviar").lr_camera(source, Options())


def test_folder_csv_with_split(tmp_path: Path, write_image) -> None:
    rows = ["path,pid,camid,split"]
    for pid, camid, split in [
        (1, 0, "train"),
        (1, 1, "train"),
        (2, 0, "query"),
        (2, 1, "gallery"),
        (-1, 1, "gallery"),
    ]:
        write_image(tmp_path / "imgs" / f"{pid}_{camid}.png")
        rows.append(f"imgs/{pid}_{camid}.png,{pid},{camid},{split}")
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    source = read("folder", tmp_path / "list.csv", tmp_path)
    assert stats(source.train) == (1, 2, 2) and stats(source.query) == (1, 1, 1) and stats(source.gallery) == (1, 1, 1)
    assert source.query[0].path == str((tmp_path / "imgs" / "2_0.png").resolve())


def test_folder_csv_without_split_and_bad_csv(tmp_path: Path, write_image) -> None:
    write_image(tmp_path / "a.png")
    write_image(tmp_path / "b.png")
    (tmp_path / "list.csv").write_text("path,pid,camid\na.png,1,0\nb.png,1,1\n")
    assert stats(read("folder", tmp_path / "list.csv", tmp_path).images) == (1, 2, 2)
    (tmp_path / "bad.csv").write_text("file,person\na.png,1\n")
    with pytest.raises(ReidxError, match="bad.csv lacks columns path, pid, camid"):
        read("folder", tmp_path / "bad.csv", tmp_path)
    (tmp_path / "split.csv").write_text("path,pid,camid,split\na.png,1,0,probe\n")
    with pytest.raises(ReidxError, match="split.csv, line 2: unknown split value 'probe'"):
        read("folder", tmp_path / "split.csv", tmp_path)


def test_folder_market_names_recursive_and_standard(tmp_path: Path, write_image, market_tree) -> None:
    for name in ["a/0001_c1_x.jpg", "a/0001_c2_y.jpg", "b/0002_c1_z.png", "b/-1_c1_junk.png"]:
        write_image(tmp_path / "mine" / name)
    source = read("folder", tmp_path / "mine", tmp_path)
    assert stats(source.images) == (2, 3, 2) and {r.camid for r in source.images} == {1, 2}
    market_tree(tmp_path / "std")
    source = read("folder", tmp_path / "std", tmp_path)
    assert stats(source.query) == (3, 4, 2) and stats(source.gallery) == (4, 8, 4) and len(source.train) == 16


@pytest.mark.parametrize(
    ("name", "folder", "ids", "images"),
    [("3dpes", "3DPeS", 3, 7), ("sarc3d", "SARC3D", 2, 8), ("towncentre", "TownCentre", 3, 14)],
)
def test_training_only_readers(
    tmp_path: Path, training_only_tree, name: str, folder: str, ids: int, images: int
) -> None:
    base = training_only_tree(tmp_path / "data", folder)
    for root in (base, tmp_path / "data"):  # the set's folder, or the folder above it
        source = read(name, root, tmp_path)
        assert source.root == base.resolve() and stats(source.images) == (ids, images, 1)
    reader = get_reader(name)
    assert reader.training_only
    split = reader.split(source, np.random.default_rng(0), Options())
    assert split.train == source.images and split.query == split.gallery == []


def test_training_only_names_parsed(tmp_path: Path, training_only_tree) -> None:
    pids = {Path(r.path).name: r.pid for r in read("3dpes", training_only_tree(tmp_path, "3DPeS"), tmp_path).images}
    assert pids["2_B_715_FRAME_179_RGB.png"] == 2 and pids["1_4_FRAME_185_RGB.png"] == 1
    sarc = read("sarc3d", training_only_tree(tmp_path, "SARC3D"), tmp_path).images
    assert [Path(r.path).name for r in sarc if r.pid == 1][0] == "001_Right.png"  # the odd spelling is read
    assert {r.camid for r in sarc} == {0}


def test_training_only_unparseable_name_is_named(tmp_path: Path, training_only_tree, write_image) -> None:
    base = training_only_tree(tmp_path, "SARC3D")
    write_image(base / "003_top.png")
    with pytest.raises(ReidxError, match="003_top.png: expected a folder of PPP_VIEW.png"):
        read("sarc3d", base, tmp_path)
    with pytest.raises(ReidxError, match="is not a towncentre folder"):
        read("towncentre", tmp_path / "SARC3D", tmp_path)


def test_frames_per_id_evenly_spaced_and_seeded(tmp_path: Path, training_only_tree) -> None:
    reader = get_reader("towncentre")
    source = read("towncentre", training_only_tree(tmp_path, "TownCentre"), tmp_path)

    def kept(seed: int) -> dict[int, list[int]]:
        split = reader.split(source, np.random.default_rng(seed), Options(frames_per_id=2))
        frames: dict[int, list[int]] = {}
        for record in split.train:
            frames.setdefault(record.pid, []).append(int(Path(record.path).stem.split("_")[1]))
        return {pid: sorted(values) for pid, values in frames.items()}

    first = kept(0)
    assert first[0] == [8] and len(first[1]) == 2  # fewer frames than asked: all kept
    low, high = first[2]
    assert low < 5 <= high and high - low == 5  # track 2 (frames 0-9): two frames 10/2 apart
    assert kept(0) == first
    assert any(kept(seed)[2] != first[2] for seed in range(1, 6))


def test_prepare_training_only_set_through_the_cli(tmp_path: Path, training_only_tree, run_cli) -> None:
    base = training_only_tree(tmp_path / "data", "TownCentre")
    out = tmp_path / "town"
    code, _, err = run_cli("prepare", "--dataset", "towncentre", "--root", base, "--frames-per-id", "3", "--out", out)
    assert code == 0, err
    frame, info = read_dataset(out)
    assert info.training_only and info.extra["frames_per_id"] == 3
    assert set(frame["split"]) == {"train"} and len(frame) == 1 + 3 + 3 and set(frame["camid"]) == {0}
    assert json.loads((out / "dataset.json").read_text())["training_only"] is True
    with pytest.raises(ReidxError, match=r"is for training only: its images have no camera labels"):
        check_testable(out, info)
    code, _, err = run_cli(
        "prepare", "--dataset", "towncentre", "--root", base, "--test-ids", "2", "--out", tmp_path / "x"
    )
    assert code != 0 and "--test-ids does not apply to towncentre" in err
    code, _, err = run_cli(
        "prepare", "--dataset", "viper", "--root", base, "--frames-per-id", "2", "--out", tmp_path / "y"
    )
    assert code != 0 and "--frames-per-id does not apply to viper" in err


def test_tested_datasets_are_not_training_only(tmp_path: Path, viper_tree) -> None:
    info = prepare_dataset("viper", viper_tree(tmp_path / "viper", 6), tmp_path / "mlr", rates=(2,))
    assert not info.training_only
    check_testable(tmp_path / "mlr", read_dataset(tmp_path / "mlr")[1])  # no error
