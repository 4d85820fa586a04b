"""The store: round trip, clear errors on bad input, refusal of incomplete or damaged stores."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import make_samples
from mfas.data import Sample, StoreDataset, StoreWriter, open_store, store_info
from mfas.errors import DataError, StoreError


def test_round_trip(tiny_store: Path):
    st = open_store(tiny_store, verify=True)
    src = make_samples()
    assert len(st) == 12
    assert st.modalities == ("rgb", "depth", "ir")
    assert st.labels.tolist() == [s.label for s in src]
    assert st.column("pai").tolist() == [s.pai for s in src]
    for i, s in enumerate(src):
        np.testing.assert_array_equal(st.arrays["rgb"][i], s.images["rgb"])
        np.testing.assert_array_equal(st.arrays["depth"][i], s.images["depth"])
        assert st.present(("ir",))[i, 0] == (s.images["ir"] is not None)
    meta = json.loads((tiny_store / "store.json").read_text())
    assert meta["complete"] is True and meta["count"] == 12
    assert meta["counts"]["present"] == {"rgb": 12, "depth": 12, "ir": 8}
    # arrays are plain .npy files readable with numpy's memory map
    arr = np.load(tiny_store / "rgb.npy", mmap_mode="r")
    assert arr.shape == (12, 16, 16, 3) and arr.dtype == np.uint8


def test_select_and_info(tiny_store: Path):
    st = open_store(tiny_store)
    idx = st.select(split="train", domain="A")
    assert all(st.row(int(i))["split"] == "train" and st.row(int(i))["domain"] == "A" for i in idx)
    info = store_info(st)
    assert info["label"] == {"bonafide (1)": 6, "attack (0)": 6}
    assert info["present"]["ir"] == 8
    assert sum(info["pai"].values()) == 12


def test_dataset_items_carry_presence_and_metadata(tiny_store: Path):
    ds = StoreDataset(open_store(tiny_store))
    item = ds[0]  # sample 0 has no IR
    assert item["rgb"].shape == (3, 16, 16) and item["depth"].shape == (1, 16, 16)
    assert item["present"].tolist() == [True, True, False]
    assert int(item["ir"].abs().sum()) == 0
    assert item["label"].item() == 0 and item["pai"] == "replay" and item["video"] == "v0"
    dropped = StoreDataset(open_store(tiny_store), drop=("depth",))[1]
    assert dropped["present"].tolist() == [True, False, True]
    assert int(dropped["depth"].sum()) == 0


def write_image(path: Path, img: np.ndarray) -> Path:
    cv2.imwrite(str(path), img)
    return path


def test_writer_reads_image_files(tmp_path: Path):
    rgb = np.zeros((20, 20, 3), np.uint8)
    rgb[..., 2] = 200  # red in BGR order on disk
    depth3 = np.full((20, 20, 3), 90, np.uint8)  # grey depth saved as 3 channels, as CeFA does
    s = Sample("a", 1, "bonafide", "x", images={"rgb": write_image(tmp_path / "c.png", rgb),
                                                "depth": write_image(tmp_path / "d.png", depth3)})
    with StoreWriter(tmp_path / "st", size=(20, 20)) as w:
        w.add(s)
    st = open_store(tmp_path / "st")
    assert st.arrays["rgb"][0, 0, 0].tolist() == [200, 0, 0]  # stored as RGB
    assert st.arrays["depth"][0, 0, 0] == 90


@pytest.mark.parametrize("case, pattern", [
    ("missing", "file does not exist"),
    ("corrupt", "cannot decode image"),
    ("empty", "file is empty"),
    ("channels", "wrong channel count"),
    ("size", "does not match the store's 20x20"),
    ("format", "unsupported image format"),
])
def test_bad_inputs_name_the_file_and_reason(tmp_path: Path, case: str, pattern: str):
    good = write_image(tmp_path / "ok.png", np.zeros((20, 20, 3), np.uint8))
    bad = {
        "missing": tmp_path / "nope.png",
        "corrupt": tmp_path / "corrupt.jpg",
        "empty": tmp_path / "empty.png",
        "channels": write_image(tmp_path / "colour_ir.png", np.dstack([np.zeros((20, 20)), np.full((20, 20), 255),
                                                                      np.zeros((20, 20))]).astype(np.uint8)),
        "size": write_image(tmp_path / "small.png", np.zeros((10, 12), np.uint8)),
        "format": tmp_path / "data.gif",
    }[case]
    if case == "corrupt":
        bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    if case in ("empty", "format"):
        bad.write_bytes(b"" if case == "empty" else b"GIF89a")
    s = Sample("b", 1, "bonafide", "x", images={"rgb": good, "ir": bad})
    with pytest.raises(DataError, match=pattern) as err:
        with StoreWriter(tmp_path / "st", size=(20, 20)) as w:
            w.add(s)
    assert str(bad) in str(err.value)
    assert not (tmp_path / "st").exists()  # nothing valid was left behind


def test_skip_mode_counts_and_lists_every_skipped_input(tmp_path: Path):
    samples = make_samples(6, size=8)
    samples[2].images["rgb"] = tmp_path / "gone.jpg"
    samples[4].images["depth"] = np.zeros((9, 8), np.uint8)
    samples.append(Sample("s000", 1, "bonafide", "toy", images={"rgb": np.zeros((8, 8, 3), np.uint8)}))
    with StoreWriter(tmp_path / "st", size=(8, 8), on_error="skip") as w:
        w.add_many(samples)
    assert w.report.written == 4 and w.report.n_skipped == 3
    reasons = {sid: reason for sid, _, reason in w.report.skipped}
    assert reasons["s002"] == "file does not exist"
    assert "size 8x9" in reasons["s004"]
    assert reasons["s000"] == "duplicate sample_id"
    meta = json.loads((tmp_path / "st" / "store.json").read_text())
    assert meta["skipped"] == 3
    assert len((tmp_path / "st" / "skipped.csv").read_text().strip().splitlines()) == 4


@pytest.mark.parametrize("field, value, pattern", [
    ("label", 2, "label must be 1"), ("pai", "deepfake", "unknown PAI"), ("pai", "print", "contradicts"),
    ("split", "dev", "split must be"), ("sample_id", "a,b", "comma"),
])
def test_bad_metadata_is_refused(tmp_path: Path, field: str, value: object, pattern: str):
    s = make_samples(1, size=8)[0]
    s.label, s.pai = 1, "bonafide"
    setattr(s, field, value)
    with pytest.raises(DataError, match=pattern), StoreWriter(tmp_path / "st", size=(8, 8)) as w:
        w.add(s)


def test_refuses_to_overwrite_without_permission(tiny_store: Path):
    with pytest.raises(StoreError, match="already exists"):
        StoreWriter(tiny_store, size=(16, 16))


def corrupt(store: Path, how: str) -> None:
    if how == "no_json":
        (store / "store.json").unlink()
    elif how == "truncated_array":
        data = (store / "depth.npy").read_bytes()
        (store / "depth.npy").write_bytes(data[: len(data) - 100])
    elif how == "missing_array":
        (store / "ir.npy").unlink()
    elif how == "manifest_rows":
        lines = (store / "manifest.csv").read_text().splitlines()
        (store / "manifest.csv").write_text("\n".join(lines[:-2]) + "\n")
    elif how == "manifest_column":
        lines = (store / "manifest.csv").read_text().splitlines()
        (store / "manifest.csv").write_text("\n".join(",".join(r.split(",")[:-1]) for r in lines) + "\n")
    elif how == "unknown_label":
        text = (store / "manifest.csv").read_text().replace(",toy,B,val,1,bonafide,", ",toy,B,val,7,bonafide,", 1)
        (store / "manifest.csv").write_text(text)
    elif how == "incomplete_flag":
        meta = json.loads((store / "store.json").read_text())
        meta["complete"] = False
        (store / "store.json").write_text(json.dumps(meta))
    elif how == "bad_json":
        (store / "store.json").write_text("{ not json")


@pytest.mark.parametrize("how, pattern", [
    ("no_json", "store.json is missing"),
    ("truncated_array", "depth.npy: .* bytes but store.json says"),
    ("missing_array", "ir.npy: missing"),
    ("manifest_rows", "rows but store.json says 12"),
    ("manifest_column", "missing column"),
    ("unknown_label", "unknown label 7"),
    ("incomplete_flag", "marked incomplete"),
    ("bad_json", "not valid JSON"),
])
def test_damaged_store_is_refused_with_a_clear_error(tiny_store: Path, how: str, pattern: str):
    corrupt(tiny_store, how)
    with pytest.raises(StoreError, match=pattern):
        open_store(tiny_store)


def test_verify_detects_changed_pixels(tiny_store: Path):
    arr = np.load(tiny_store / "rgb.npy", mmap_mode="r+")
    arr[3, 0, 0, 0] ^= 0xFF
    arr.flush()
    del arr
    open_store(tiny_store)  # sizes still match: opening is cheap and does not hash
    with pytest.raises(StoreError, match="does not match the hash"):
        open_store(tiny_store, verify=True)


SLOW_BUILD = """
import sys, time
import numpy as np
from mfas.data import Sample, StoreWriter
path, overwrite = sys.argv[1], sys.argv[2] == "1"
with StoreWriter(path, size=(16, 16), overwrite=overwrite) as w:
    for i in range(10_000):
        w.add(Sample(f"k{i}", 1, "bonafide", "x", images={"rgb": np.zeros((16, 16, 3), np.uint8)}))
        if i == 20:
            print("writing", flush=True)
        if i > 20:
            time.sleep(0.01)
"""


def kill_mid_build(path: Path, overwrite: bool) -> None:
    proc = subprocess.Popen([sys.executable, "-c", SLOW_BUILD, str(path), "1" if overwrite else "0"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_killed_build_leaves_no_valid_store(tmp_path: Path):
    target = tmp_path / "st"
    kill_mid_build(target, overwrite=False)
    assert not target.exists()
    partial = tmp_path / "st.partial"
    assert partial.exists()
    with pytest.raises(StoreError, match="incomplete or not a store"):
        open_store(partial)
    with pytest.raises(StoreError, match="no such store"):
        open_store(target)


def test_killed_rebuild_keeps_the_previous_store(tiny_store: Path):
    kill_mid_build(tiny_store, overwrite=True)
    st = open_store(tiny_store, verify=True)
    assert len(st) == 12
