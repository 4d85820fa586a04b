"""Dataset adapters against fixture trees that mirror the real layouts, and the real published lists."""

from __future__ import annotations

import csv
import os
import re
from collections import Counter
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from mfas.cli.main import app
from mfas.data import open_store
from mfas.data.prepare import (
    ADAPTERS,
    Adapter,
    FramePolicy,
    Item,
    Option,
    Skip,
    cefa,
    padisi,
    prepare,
    register_adapter,
    wmca,
)
from mfas.data.prepare.listfiles import read_lines, split_from_name
from mfas.errors import ConfigError, DataError

SHARED = Path(os.environ.get("MFAS_SHARED", Path(__file__).resolve().parents[2] / "shared"))
LISTS = SHARED / "data" / "lists"
needs_lists = pytest.mark.skipif(not LISTS.is_dir(), reason=f"../shared lists not found at {LISTS}")


def jpg(path: Path, value: int, grey: bool = False, border: int = 0, size: tuple[int, int] = (40, 32)) -> None:
    """A small image of one brightness, optionally inside a black frame of ``border`` pixels."""
    h, w = size
    img = np.full((h, w) if grey else (h, w, 3), value, np.uint8)
    if border:
        img[:border] = 0
        img[-border:] = 0
        img[:, :border] = 0
        img[:, -border:] = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)


def store_rows(path: Path) -> list[dict]:
    with open(path / "manifest.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------- the real lists

MMDG_ROWS = {"C": (4800, 2401, 6739), "P": (1090, 272, 667), "S": (6297, 2100, 12564), "W": (1695, 1671, 1671)}
MMDG_LIVE = {"C": (1200, 601, 1200), "P": (597, 145, 363), "S": (900, 300, 1800), "W": (372, 324, 345)}


@needs_lists
@pytest.mark.parametrize("letter", list(MMDG_ROWS))
def test_mmdg_lists_row_and_label_counts(letter: str):
    for k, split in enumerate(("train", "val", "test")):
        path = LISTS / "mmdg" / f"{letter}-{split}.txt"
        rows = [f for _, f in read_lines(path)]
        assert split_from_name(path) == split
        assert len(rows) == MMDG_ROWS[letter][k]
        assert sum(f[-1] == "1" for f in rows) == MMDG_LIVE[letter][k]  # 1 = bona fide in MMDG lists
        assert all(len(f) == (2 if letter == "P" else 4) and f[-1] in ("0", "1") for f in rows)
        if letter != "P":  # every C/S/W line decodes to a known dataset and PAI, consistent with its label
            from mfas.data.prepare.lists import dataset_of, describe

            assert {dataset_of(f[0]) for f in rows} == {letter}
            bad = [f for f in rows if not isinstance(describe(letter, f[0], f[-1] == "1"), dict)]
            assert not bad


@needs_lists
def test_casia_fas_and_padisi_lists_parse_with_their_own_conventions():
    for lf in sorted((LISTS / "casia-fas").rglob("*_video_*.txt")):
        rows = [f for _, f in read_lines(lf)]
        assert rows and all(f[-1] in ("0", "1") for f in rows), lf  # 0 = bona fide there
    p1 = [f for _, f in read_lines(LISTS / "casia-fas/CASIA_CeFA/protocol/CASIA_CeFA@p1.1_video_train.txt")]
    assert len(p1) == 800  # readme: p1.1 train 800 videos
    grand = wmca.read_protocol(LISTS / "casia-fas/IDIAP_WMCA/WMCA_Grandtest.txt")
    assert {wmca.decode(Path(r["filepath"]).name) is not None for r in grand} == {True}  # every code known
    assert {(wmca.decode(Path(r["filepath"]).name)["pai"] == "bonafide") == (r["label"] == "bonafide")
            for r in grand} == {True}
    gt = {r["trial_id"]: r for r in csv.DictReader(open(LISTS / "padisi/padisi_USC_FACE_ground_truth.csv"))}
    assert all(padisi.pai_of(r["ground_truth"]) for r in gt.values())
    part = list(csv.DictReader(open(LISTS / "padisi/padisi_USC_FACE_dataset_partition_3folds_part0.csv")))
    c = Counter((r["partition_name"], gt[r["trial_id"]]["ground_truth"] == "m00000") for r in part)
    assert (c["train", True], c["train", False], c["valid", True], c["test", False]) == (597, 493, 145, 304)


def test_wmca_codes_cover_each_attack_category_once():
    cats = Counter(v[0] for v in wmca.CODES.values())
    assert set(cats) == {"glasses", "rigid mask", "fake head", "paper mask", "flexible mask", "print", "replay"}
    assert wmca.decode("002_01_000_0_00")["pai"] == "bonafide"
    assert wmca.decode("002_01_003_2_81")["pai"] == "mask_flexible"
    assert wmca.decode("002_01_003_9_99") is None


# -------------------------------------------------------------------------------- frame policies

def test_frame_policies():
    fr = list(range(0, 100, 5))
    assert FramePolicy.parse("even:3").select(fr) == ([0, 50, 95], [])
    assert FramePolicy.parse("even:50").select(fr)[0] == fr
    assert FramePolicy.parse("first").select(fr) == ([0], [])
    assert FramePolicy.parse("fixed:5,7").select(fr) == ([5], [7])
    assert FramePolicy.parse("all").select(fr)[0] == fr
    for bad in ("even:0", "some", "fixed:"):
        with pytest.raises(ConfigError, match="frame policy"):
            FramePolicy.parse(bad)


# ----------------------------------------------------------------------------------------- CeFA

def cefa_tree(root: Path) -> None:
    """Real relative paths (MMDG C lists): two AF subjects, one CA subject, a 3D mask; black borders."""
    vids = {"CeFA-Race/AF/AF-000/1_000_1_1_1": 200, "CeFA-Race/AF/AF-000/1_000_3_1_2": 120,
            "CeFA-Race/AF/AF-006/1_006_3_1_4": 90, "CeFA-Race/CA/CA-207/2_207_1_1_1": 210,
            "CeFA-Mask/3D-Mask/001/1_001_0_0_2_1_3": 150}
    for v, val in vids.items():
        for m, grey in (("profile", False), ("depth", True), ("ir", True)):
            for n in (26, 51, 76):
                if v.endswith("1_006_3_1_4") and m == "ir" and n == 76:
                    continue  # a frame missing in one modality
                jpg(root / "CeFA" / v / m / f"{n:04d}.jpg", val, grey, border=6)


def test_cefa_adapter_counts_labels_pai_subjects_split_and_border_crop(tmp_path: Path):
    cefa_tree(tmp_path / "raw")
    rep = prepare("cefa", tmp_path / "raw", tmp_path / "store", size=16, frames="all")
    rows = store_rows(tmp_path / "store")
    assert rep.build.written == len(rows) == 14
    pai = Counter((r["video"].split("/")[2], r["pai"]) for r in rows)
    assert pai[("1_000_1_1_1", "bonafide")] == 3 and pai[("1_000_3_1_2", "print")] == 3
    assert pai[("1_006_3_1_4", "replay")] == 2 and pai[("1_001_0_0_2_1_3", "mask_rigid")] == 3
    split = {r["subject"]: r["split"] for r in rows}  # subject n: n mod 20 < 6 train, 6 val, else test
    assert split == {"AF-000": "train", "AF-006": "val", "CA-207": "test", "3D-Mask-001": "train"}
    assert [s for s in rep.skipped if "frame 76 missing in ir" in s[2]]
    st = open_store(tmp_path / "store")
    rgb = np.asarray(st.arrays["rgb"])
    assert rgb.min() > 60  # the black frame was cut away before resizing
    assert st.present().all()


def test_cefa_mmfas_split_list_is_6_1_13_by_subject():
    table = cefa.mmfas_split()
    for race in ("AF", "CA", "EA"):
        c = Counter(v for (g, _), v in table.items() if g == race)
        assert (c["train"], c["val"], c["test"]) == (150, 25, 325)
    assert len(table) == len(set(table))  # one split per subject


def test_decoding_is_the_same_in_one_or_two_worker_processes(tmp_path: Path):
    cefa_tree(tmp_path / "raw")
    prepare("cefa", tmp_path / "raw", tmp_path / "a", size=16, workers=1)
    prepare("cefa", tmp_path / "raw", tmp_path / "b", size=16, workers=2)
    a, b = open_store(tmp_path / "a"), open_store(tmp_path / "b")
    assert (tmp_path / "a/manifest.csv").read_text() == (tmp_path / "b/manifest.csv").read_text()
    for m in ("rgb", "depth", "ir"):
        assert np.array_equal(a.arrays[m], b.arrays[m])


def test_strict_mode_and_bad_options_name_the_problem(tmp_path: Path):
    cefa_tree(tmp_path / "raw")
    with pytest.raises(DataError, match="frame 76 missing in ir"):
        prepare("cefa", tmp_path / "raw", tmp_path / "s", size=16, strict=True, frames="all")
    assert not (tmp_path / "s").exists()
    with pytest.raises(ConfigError, match="did you mean 'frames'"):
        prepare("cefa", tmp_path / "raw", tmp_path / "s", frame="all")
    with pytest.raises(ConfigError, match="unknown dataset adapter"):
        prepare("oulu", tmp_path / "raw", tmp_path / "s")


def test_corrupt_image_is_skipped_with_its_path(tmp_path: Path):
    cefa_tree(tmp_path / "raw")
    bad = tmp_path / "raw/CeFA/CeFA-Race/AF/AF-000/1_000_1_1_1/depth/0051.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    rep = prepare("cefa", tmp_path / "raw", tmp_path / "store", size=16, frames="all")
    hit = [s for s in rep.skipped if s[1].endswith("depth/0051.jpg")]
    assert hit and "cannot decode" in hit[0][2]
    assert "skipped.csv" in os.listdir(tmp_path / "store")


# ---------------------------------------------------------------------------------- MMDG lists

def test_lists_adapter_on_mmdg_lines_with_crlf_and_a_line_in_two_splits(tmp_path: Path):
    raw = tmp_path / "raw"
    c = "CeFA/CeFA-Race/AF/AF-300/1_300_1_1_1/{m}/0026.jpg"
    s = "CASIA-SURF-CROP/fake_part/fake_test_part/CLKJ_AS0002/01_e_s.rssdk/{m}/141.jpg"
    w = "WMCA-Image/R_CDIT/002_01_003_2_81/{m}/0012.jpg"
    s2 = s.replace("141.jpg", "191.jpg")
    for tpl in (c, s, s2, w):
        for m in ("profile", "color", "depth", "ir"):
            jpg(raw / tpl.format(m=m), 120, m in ("depth", "ir"))
    line = lambda t, lab: " ".join(t.format(m=m) for m in ("color" if "CeFA" not in t else "profile",  # noqa: E731
                                                             "depth", "ir")) + f" {lab}"
    (tmp_path / "C-val.txt").write_bytes(line(c, 1).encode())  # no final newline
    (tmp_path / "C-test.txt").write_bytes((line(c, 1) + "\r\n" + line(c, 1)).encode())  # CRLF + repeat
    (tmp_path / "S-test.txt").write_bytes((line(s, 0) + "\r\n" + line(s2, 1)).encode())  # 2nd contradicts
    odd = line(w, 0).replace("color/0012.jpg", "color/0024.jpg")  # RGB from another frame
    (tmp_path / "W-test.txt").write_bytes((line(w, 0) + "\r\n" + odd).encode())
    rep = prepare("lists", raw, tmp_path / "store", size=16,
                  lists=[tmp_path / f for f in ("C-val.txt", "C-test.txt", "S-test.txt", "W-test.txt")])
    rows = store_rows(tmp_path / "store")
    got = sorted((r["split"], r["domain"], r["pai"]) for r in rows)
    assert got == [("test", "C", "bonafide"), ("test", "S", "cut"), ("test", "W", "mask_flexible"),
                   ("val", "C", "bonafide")]
    reasons = [r for _, _, r in rep.skipped]
    assert "duplicate line in the same split" in reasons
    assert any("label says bona fide" in r for r in reasons)
    assert any(r.startswith("mismatched frame indices") for r in reasons)
    meta = open_store(tmp_path / "store").meta
    assert meta["provenance"]["in_several_splits_count"] == 1  # the CeFA frame in val and test
    assert len(meta["provenance"]["inputs"]) == 4 and all(len(h) == 64 for h in meta["provenance"]["inputs"].values())
    assert meta["provenance"]["preprocessing"]["black_border_crop"] == ["C"]


def test_lists_adapter_reads_padisi_npz_lines_without_unpickling(tmp_path: Path):
    raw = tmp_path / "raw"
    raw.mkdir()
    rng = np.random.default_rng(0)
    np.savez(raw / "zaaa0001.npz", data=rng.random((1, 5, 20, 24)).astype(np.float32))
    np.savez(raw / "zaaa0002.npz", data=rng.random((5, 20, 24)))
    np.savez(raw / "zaaa0003.npz", data=np.array([{"a": 1}], dtype=object))  # needs pickle: refused
    (raw / "zaaa0004.npz").write_bytes(b"PK\x03\x04 truncated")
    (tmp_path / "P-train.txt").write_text("zaaa0001.npz\t1\nzaaa0002.npz\t0\nzaaa0003.npz\t0\nzaaa0004.npz\t0\n")
    gt = tmp_path / "gt.csv"
    gt.write_text("file,ground_truth\nzaaa0002.npz,m50201\n")
    rep = prepare("lists", raw, tmp_path / "store", size=16, lists=[tmp_path / "P-train.txt"], ground_truth=gt)
    rows = store_rows(tmp_path / "store")
    assert [(r["sample_id"], r["pai"]) for r in rows] == [("train/P/zaaa0001", "bonafide"),
                                                          ("train/P/zaaa0002", "print")]
    reasons = {Path(w).name: r for _, w, r in rep.skipped}
    assert "without unpickling" in reasons["zaaa0003.npz"] and "corrupt" in reasons["zaaa0004.npz"]
    st = open_store(tmp_path / "store")
    assert st.arrays["rgb"].shape[1:] == (16, 16, 3) and st.present().all()


@needs_lists
def test_lists_adapter_on_a_casia_fas_video_list(tmp_path: Path):
    src = LISTS / "casia-fas/CASIA_CeFA/protocol/CASIA_CeFA@p1.1_video_train.txt"
    lines = [f for _, f in read_lines(src)][:4]
    for folder, _ in lines:
        for m in ("color", "depth", "ir"):
            for n in (1, 2, 3, 4, 5):
                jpg(tmp_path / "raw" / Path(folder).parent / m / f"{n:04d}.jpg", 90, m != "color")
    lf = tmp_path / "CASIA_CeFA@p1.1_video_train.txt"
    lf.write_text("\n".join(" ".join(f) for f in lines))
    prepare("lists", tmp_path / "raw", tmp_path / "store", size=16, lists=[lf], frames="even:2")
    rows = store_rows(tmp_path / "store")
    assert len(rows) == 8 and {r["frame"] for r in rows} == {"1", "5"}
    live = {f[0].split("/")[-2] for f in lines if f[1] == "0"}  # 0 = bona fide in CASIA-FAS lists
    assert {r["video"].split("/")[-1] for r in rows if r["label"] == "1"} == live


# ----------------------------------------------------------------------------------------- SURF

def test_surf_adapter_release_layout_and_challenge_lists(tmp_path: Path):
    raw = tmp_path / "raw/CASIA-SURF-CROP"
    for v in ("real_part/real_train_part/CLKJ_AS0005/real.rssdk", "fake_part/fake_val_part/CLKJ_AS0005/04_en_b.rssdk"):
        for m in ("color", "depth", "ir"):
            for n in (31, 51):
                jpg(raw / v / m / f"{n}.jpg", 100, m != "color")
    prepare("surf", tmp_path / "raw", tmp_path / "a", size=16)
    rows = store_rows(tmp_path / "a")
    assert sorted((r["split"], r["pai"], r["subject"]) for r in rows) == [
        ("train", "bonafide", "S/CLKJ_AS0005")] * 2 + [("val", "cut", "S/CLKJ_AS0005")] * 2
    # challenge naming: the columns are colour, IR, depth; images told apart by brightness
    ch = tmp_path / "ch"
    for k, val in ((0, 10), (1, 200), (2, 90)):
        jpg(ch / "Val/0000" / f"00000{k}.jpg", val, k > 0)
    (tmp_path / "val_private_list.txt").write_text("Val/0000/000000.jpg Val/0000/000001.jpg Val/0000/000002.jpg 1\n")
    prepare("surf", ch, tmp_path / "b", size=16, lists=[tmp_path / "val_private_list.txt"])
    st = open_store(tmp_path / "b")
    assert st.row(0)["split"] == "val" and st.row(0)["pai"] == "bonafide"
    assert abs(int(st.arrays["ir"][0].mean()) - 200) < 3 and abs(int(st.arrays["depth"][0].mean()) - 90) < 3


# ----------------------------------------------------------------------------------------- WMCA

def h5_video(path: Path, frames: list[int], channels: int, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for n in frames:
            a = np.zeros((channels, 24, 20), np.uint8)
            for c in range(channels):
                a[c] = value + 10 * c
            f.create_group(f"Frame_{n}").create_dataset("array", data=a)


@needs_lists
def test_wmca_adapter_on_hdf5_fixtures_with_real_protocol_rows(tmp_path: Path):
    grand = wmca.read_protocol(LISTS / "casia-fas/IDIAP_WMCA/WMCA_Grandtest.txt")
    want = {}
    for r in grand:  # one video per (group, species)
        key = (r["group"], wmca.decode(Path(r["filepath"]).name)["pai"])
        want.setdefault(key, r)
    rows = list(want.values())
    raw = tmp_path / "raw"
    for k, r in enumerate(rows):
        rel = Path(*Path(r["filepath"]).parts[1:]).with_suffix(".hdf5")
        frames = [0, 1, 2, 3] if k else [0, 1, 2]
        h5_video(raw / "preprocessed-face-station_CDIT" / rel, frames, 4, 50)
        h5_video(raw / "preprocessed-face-station_RGB" / rel, [0, 1, 2, 3], 3, 100)
    csv_path = tmp_path / "PROTOCOL-grandtest.csv"
    with open(csv_path, "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=["", "client_id", "filepath", "group", "label"])
        wr.writeheader()
        wr.writerows(rows)
    (raw / "preprocessed-face-station_CDIT" / Path(*Path(rows[1]["filepath"]).parts[1:]).with_suffix(".hdf5")
     ).unlink()
    rep = prepare("wmca", raw, tmp_path / "store", size=16, protocol_csv=csv_path, frames="all")
    out = store_rows(tmp_path / "store")
    groups = {"train": "train", "dev": "val", "eval": "test"}
    expected = {(groups[g], p) for (g, p) in want} - {(groups[rows[1]["group"]],
                                                       wmca.decode(Path(rows[1]["filepath"]).name)["pai"])}
    assert {(r["split"], r["pai"]) for r in out} >= expected
    reasons = [r for _, _, r in rep.skipped]
    assert "missing modality file (HDF5 not found)" in reasons
    assert any("frame 3 missing in cdit station" in r for r in reasons)
    st = open_store(tmp_path / "store")
    assert int(st.arrays["depth"][0].mean()) == 60 and int(st.arrays["ir"][0].mean()) == 70  # CDIT ch 1, 2
    assert np.allclose(st.arrays["rgb"][0].mean(axis=(0, 1)), [100, 110, 120], atol=1)


# --------------------------------------------------------------------------------------- PADISI

@needs_lists
def test_padisi_adapter_with_real_ground_truth_and_partition(tmp_path: Path):
    gt = list(csv.DictReader(open(LISTS / "padisi/padisi_USC_FACE_ground_truth.csv")))
    pick = {}
    for r in gt:
        pick.setdefault(padisi.pai_of(r["ground_truth"]), r)
    raw = tmp_path / "raw"
    (raw / "meta").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for r in pick.values():
        np.savez(raw / f"{r['trial_id']}.npz", data=rng.random((1, 5, 12, 12)))
    for name in ("padisi_USC_FACE_ground_truth.csv", "padisi_USC_FACE_dataset_partition_3folds_part0.csv"):
        (raw / "meta" / name).write_bytes((LISTS / "padisi" / name).read_bytes())
    rep = prepare("padisi", raw, tmp_path / "store", size=8)
    rows = store_rows(tmp_path / "store")
    assert {r["pai"] for r in rows} == set(pick)  # every species PADISI has
    assert all(r["split"] in ("train", "val", "test") and r["subject"].startswith("P/") for r in rows)
    assert rep.build.n_skipped == 2029 - len(pick)  # the trials whose files are absent, each reported
    assert {r for _, _, r in rep.skipped} == {"missing sample file (no npz for this trial)"}


# -------------------------------------------------------------------------------------- HQ-WMCA

def fake_depth(rgb: np.ndarray) -> np.ndarray:
    """A stand-in reconstruction backend for the tests: a ramp the size of the RGB frame."""
    return np.tile(np.linspace(0, 1, rgb.shape[1]), (rgb.shape[0], 1))


def test_hqwmca_depth_is_reconstructed_for_3d_and_removed_for_flat_attacks(tmp_path: Path):
    raw = tmp_path / "raw"
    raw.mkdir()
    rows = [("v_live", "train", "bonafide", ""), ("v_print", "train", "attack", "print"),
            ("v_mask", "eval", "attack", "rigid mask"), ("v_replay", "dev", "attack", "replay")]
    for name, *_ in rows:
        with h5py.File(raw / f"{name}.h5", "w") as f:
            f["color"] = np.full((12, 3, 20, 20), 120, np.uint8)
            f["nir"] = np.full((12, 20, 20), 700, np.uint16)
            f["swir"] = np.stack([np.full((12, 20, 20), v, np.uint8) for v in (10, 200, 90)], axis=1)
    proto = tmp_path / "grand_test.csv"
    proto.write_text("filepath,group,label,pai\n" + "\n".join(",".join(r) for r in rows) + "\n")
    none = prepare("hqwmca", raw, tmp_path / "a", size=16, protocol_csv=proto, frames="even:2")
    a = open_store(tmp_path / "a")
    assert none.build.written == 8 and not a.present(("depth",)).any()
    assert "absent for every sample" in a.meta["provenance"]["depth"]
    prepare("hqwmca", raw, tmp_path / "b", size=16, protocol_csv=proto, frames="even:2",
            depth_backend="test_prepare:fake_depth")
    b = open_store(tmp_path / "b")
    has = {r["pai"]: r["has_depth"] for r in store_rows(tmp_path / "b")}
    assert has == {"bonafide": "1", "print": "0", "mask_rigid": "1", "replay": "0"}
    assert {r["split"] for r in store_rows(tmp_path / "b")} == {"train", "val", "test"}
    d = b.arrays["depth"][b.present(("depth",))[:, 0]][0]
    assert d[:, 0].mean() < d[:, -1].mean()  # the backend's ramp, resized
    with pytest.raises(ConfigError, match="module:function"):
        prepare("hqwmca", raw, tmp_path / "c", protocol_csv=proto, depth_backend="nocolon")
    # SWIR in the ir slot, as the mmFAS paper: one band of the multi-band stream, recorded in store.json
    prepare("hqwmca", raw, tmp_path / "s", size=16, protocol_csv=proto, frames="even:1", ir_stream="swir:1")
    s = open_store(tmp_path / "s")
    assert s.meta["provenance"]["ir_slot"] == "HQ-WMCA stream 'swir:1'" and (s.arrays["ir"] == 200).all()
    with pytest.raises(ConfigError, match="NAME:BAND"):
        prepare("hqwmca", raw, tmp_path / "t", protocol_csv=proto, ir_stream="swir:x")
    with pytest.raises(DataError, match="band 7 asked of a frame of shape"):
        prepare("hqwmca", raw, tmp_path / "u", size=16, protocol_csv=proto, frames="even:1", ir_stream="swir:7")
    assert not (tmp_path / "u").exists()


# ---------------------------------------------------------------------------------------- folder

def test_folder_adapter_tree_csv_and_cli(tmp_path: Path):
    raw = tmp_path / "raw"
    for split, cls, sample, mods in (("train", "live", "a", "rgb depth ir"), ("train", "print", "b", "rgb depth ir"),
                                     ("test", "attack", "c", "color depth nir"), ("test", "live", "d", "rgb depth"),
                                     ("val", "banana", "e", "rgb depth ir")):
        for m in mods.split():
            jpg(raw / split / cls / sample / f"{m}.png", 80, m not in ("rgb", "color"))
    rep = prepare("folder", raw, tmp_path / "store", size=16)
    rows = store_rows(tmp_path / "store")
    assert sorted((r["split"], r["label"], r["pai"]) for r in rows) == [
        ("test", "0", "other"), ("train", "0", "print"), ("train", "1", "bonafide")]
    reasons = [r for _, _, r in rep.skipped]
    assert "missing modality file: ir" in reasons and any("class folder" in r for r in reasons)
    table = tmp_path / "mine.csv"
    table.write_text("rgb,depth,label,split\ntrain/live/a/rgb.png,train/live/a/depth.png,live,train\n"
                     "test/live/d/rgb.png,test/live/d/depth.png,0,test\n")
    res = CliRunner().invoke(app, ["data", "prepare", "folder", "--root", str(raw), "--out", str(tmp_path / "c"),
                                   "--csv", str(table), "--modalities", "rgb,depth", "--size", "16",
                                   "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert "wrote 2 samples" in res.output and "train: 1 samples, 1 bona fide" in res.output
    st = open_store(tmp_path / "c")
    assert st.meta["modalities"] == ["rgb", "depth"]
    # nothing readable: an error naming the file, and no store
    table.write_text("rgb,depth,label\nnope.png,nope-d.png,1\n")
    res = CliRunner().invoke(app, ["data", "prepare", "folder", "--root", str(raw), "--out", str(tmp_path / "e"),
                                   "--csv", str(table), "--modalities", "rgb,depth", "--workers", "1"])
    assert res.exit_code != 0 and "nope.png" in res.output and not (tmp_path / "e").exists()
    res = CliRunner().invoke(app, ["data", "prepare", "folder", "--root", str(raw), "--out", str(tmp_path / "e"),
                                   "--list", "x.txt"])
    assert res.exit_code == 2 and "does not apply to folder" in res.output


# ------------------------------------------------------------------- protocols on prepared stores

def test_mmdg_and_mmfas_protocols_resolve_to_prepared_stores_through_datasets_yaml(tmp_path: Path):
    from mfas.protocols import StoreSet, get_protocol, load_datasets_yaml, resolve

    raw = tmp_path / "raw"
    paths = {"C": "CeFA/CeFA-Race/AF/AF-{i:03d}/1_{i:03d}_1_1_{p}/{m}/0026.jpg",
             "S": "CASIA-SURF-CROP/real_part/real_train_part/CLKJ_AS{i:04d}/{v}.rssdk/{m}/31.jpg",
             "W": "WMCA-Image/R_CDIT/{i:03d}_01_000_{code}/{m}/0012.jpg"}
    for letter, tpl in paths.items():
        for split in ("train", "val", "test"):
            lines = []
            for i, lab in ((1, 1), (2, 0)):
                fmt = dict(i=i + 10 * ("train", "val", "test").index(split), p=1 if lab else 4,
                           v="real" if lab else "01_e_s", code="0_00" if lab else "3_01")
                if letter == "S":
                    tpl_s = tpl if lab else tpl.replace("real_part/real_train_part", "fake_part/fake_train_part")
                    files = [tpl_s.format(m=m, **fmt) for m in ("color", "depth", "ir")]
                elif letter == "W":
                    files = [tpl.format(m=m, **fmt) for m in ("color", "depth", "ir")]
                else:
                    files = [tpl.format(m=m, **fmt) for m in ("profile", "depth", "ir")]
                for f in files:
                    jpg(raw / f, 100, "profile" not in f and "color" not in f)
                lines.append(" ".join(files) + f" {lab}")
            (tmp_path / f"{letter}-{split}.txt").write_text("\r\n".join(lines))
        prepare("lists", raw, tmp_path / f"stores/{letter}", size=16,
                lists=[tmp_path / f"{letter}-{s}.txt" for s in ("train", "val", "test")])
    (raw / "P").mkdir()
    for split in ("train", "val", "test"):
        for k in (1, 2):
            np.savez(raw / "P" / f"z{split}{k}.npz", data=np.random.default_rng(k).random((5, 8, 8)))
        (tmp_path / f"P-{split}.txt").write_text(f"z{split}1.npz\t1\nz{split}2.npz\t0")
    prepare("lists", raw / "P", tmp_path / "stores/P", size=16,
            lists=[tmp_path / f"P-{s}.txt" for s in ("train", "val", "test")])
    y = tmp_path / "datasets.yaml"
    y.write_text("stores:\n" + "".join(f"  {k}: stores/{k}\n" for k in "CPSW")
                 + "".join(f"  mmfas-{k}: stores/{k}\n" for k in "CSW") + "  mmfas-H: stores/W\n")
    stores = StoreSet(load_datasets_yaml(y))
    for name in ("loo/CPS-W", "loo/PSW-C", "missing/CSW-P", "limited/CW-PS", "mmfas/cross"):
        p = get_protocol(name)
        stores.check(p)
        for ref in (*p.train, *p.select, *(part for t in p.tests for part in t.parts)):
            st, idx = resolve(ref, stores)
            assert idx.size == 2 and set(st.column("split")[idx].tolist()) == {ref.split}
    w = open_store(tmp_path / "stores/W")
    assert sorted(w.column("pai").tolist()) == ["bonafide"] * 3 + ["print"] * 3


REAL_CROPS = SHARED / "data" / "real_rgb" / "crops-336"


@pytest.mark.skipif(not REAL_CROPS.is_dir(), reason=f"real RGB crops not found at {REAL_CROPS}")
def test_folder_adapter_reads_real_rgb_only_crops_in_class_folders(tmp_path: Path):
    rep = prepare("folder", REAL_CROPS, tmp_path / "crops", size=32, modalities=("rgb",), split="test", workers=2)
    st = open_store(tmp_path / "crops")
    labels = Counter(st.labels.tolist())
    assert (labels[1], labels[0]) == (438, 593)  # real/ 438 bona fide, fake/ 593 attacks
    assert st.meta["modalities"] == ["rgb"] and set(st.column("split").tolist()) == {"test"}
    assert rep.build.n_skipped == 0


def test_the_shipped_mmfas_cross_definition_matches_the_protocol():
    from importlib import resources

    import yaml

    from mfas.protocols import get_protocol

    d = yaml.safe_load(resources.files("mfas.data.prepare").joinpath("lists/mmfas_cross.yaml").read_text())
    p = get_protocol("mmfas/cross")
    assert [(r.store, r.split) for r in p.train] == [(d["train"]["store"], d["train"]["split"])]
    assert [(r.store, r.split) for r in p.select] == [(d["select"]["store"], d["select"]["split"])]
    assert {t.name: (t.parts[0].store, t.parts[0].split) for t in p.tests} == {
        k: (v["store"], v["split"]) for k, v in d["tests"].items()}


# -------------------------------------------------------------------- the adapter registry and CLI

def flags_in(text: str) -> set[str]:
    import re

    return set(re.findall(r"(?<![\w-])--[a-z][\w-]*", text))


def test_each_adapter_subcommand_lists_its_own_options_and_no_other_adapters():
    runner = CliRunner()
    listing = runner.invoke(app, ["data", "prepare", "--help"], env={"COLUMNS": "250"})
    assert listing.exit_code == 0
    common = {"--root", "--out", "--size", "--workers", "--strict", "--no-strict", "--overwrite", "--no-overwrite",
              "--help", "--detect", "--crop-scale", "--crop-align", "--crop-fit", "--min-face", "--crop-from"}
    every = {o.cli_flag for a in ADAPTERS.values() for o in a.options}
    for name, adapter in ADAPTERS.items():
        assert name in listing.output and adapter.description in listing.output
        res = runner.invoke(app, ["data", "prepare", name, "--help"], env={"COLUMNS": "250"})
        assert res.exit_code == 0, res.output
        own = {o.cli_flag for o in adapter.options}
        assert flags_in(res.output) == own | common, name  # its own and the common ones, nothing else
        assert not flags_in(res.output) & (every - own)
    cefa_help = runner.invoke(app, ["data", "prepare", "cefa", "--help"], env={"COLUMNS": "250"}).output
    assert "--split" in cefa_help and "--frames" in cefa_help and "--depth-backend" not in cefa_help


@pytest.fixture
def registry():
    """The adapter registry, restored after the test (an adapter a test registers does not outlive it)."""
    saved = dict(ADAPTERS)
    yield ADAPTERS
    ADAPTERS.clear()
    ADAPTERS.update(saved)


def test_one_class_is_a_whole_adapter_python_api_and_cli_subcommand(tmp_path: Path, registry):
    @register_adapter("toy")
    class ToyAdapter(Adapter):
        """Grey RGB images ``<k>.png`` under the root: all an adapter is, in one class."""

        description = "Toy: the first --count PNGs under --root, RGB only."
        options = (Option("count", 2, "How many images to take.", type=int),
                   Option("tag", "toy", "A word recorded in store.json."))

        def plan(self, root: Path, options: dict):
            for k in range(options["count"]):
                f = root / f"{k}.png"
                if not f.is_file():
                    yield Skip(f"toy/{k}", str(f), "missing image")
                    continue
                yield Item(sample_id=f"toy/{k}", label=k % 2, pai="bonafide" if k % 2 else "print", dataset="toy",
                           domain="toy", split="test", sources={"rgb": f}, video=f"toy/{k}")

        def modalities(self, options: dict) -> tuple[str, ...]:
            return ("rgb",)

        def provenance(self, options: dict) -> dict:
            return {"tag": options["tag"]}

    for k in range(3):
        jpg(tmp_path / "raw" / f"{k}.png", 50 + 40 * k)
    runner = CliRunner()
    listing = runner.invoke(app, ["data", "prepare", "--help"], env={"COLUMNS": "250"}).output
    assert "toy" in listing and ToyAdapter.description in listing
    res = runner.invoke(app, ["data", "prepare", "toy", "--root", str(tmp_path / "raw"), "--out", str(tmp_path / "s"),
                              "--count", "4", "--tag", "x", "--size", "8", "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert "wrote 3 samples" in res.output and "1 input(s) skipped" in res.output
    st = open_store(tmp_path / "s")
    assert st.meta["modalities"] == ["rgb"] and st.arrays["rgb"].shape == (3, 8, 8, 3)
    prov = st.meta["provenance"]
    assert (prov["adapter"], prov["tag"], prov["options"]) == ("toy", "x", {"count": "4", "tag": "x"})
    # the Python API, its option check, and the other subcommands, which do not take the toy's options
    assert prepare("toy", tmp_path / "raw", tmp_path / "p", size=8).build.written == 2
    with pytest.raises(ConfigError, match="did you mean 'count'"):
        prepare("toy", tmp_path / "raw", tmp_path / "q", cuont=1)
    res = runner.invoke(app, ["data", "prepare", "cefa", "--root", str(tmp_path / "raw"), "--out", str(tmp_path / "c"),
                              "--count", "3"], env={"COLUMNS": "250"})
    assert res.exit_code == 2 and "--count does not apply to cefa (it takes --frames, --split)" in res.output
    res = runner.invoke(app, ["data", "prepare", "toy", "--root", str(tmp_path / "raw"), "--out", str(tmp_path / "c"),
                              "--cuont", "3"], env={"COLUMNS": "250"})
    assert res.exit_code == 2 and "--count" in res.output  # click names the nearest option
    with pytest.raises(ConfigError, match="already registered"):
        register_adapter("toy")(ToyAdapter)
    with pytest.raises(ConfigError, match="'size' is reserved"):
        register_adapter("toy2")(type("Sized", (Adapter,), {"options": (Option("size", 1, "clashes"),)}))


def test_hdf5_adapters_name_the_extra_when_h5py_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """h5py is an optional dependency (``mfas[hdf5]``): without it, the HDF5 adapters say how to install it."""
    import sys

    raw = tmp_path / "raw"
    raw.mkdir()
    with h5py.File(raw / "v.h5", "w") as f:
        f["color"] = np.zeros((2, 3, 8, 8), np.uint8)
        f["nir"] = np.zeros((2, 8, 8), np.uint8)
    proto = tmp_path / "p.csv"
    proto.write_text("filepath,group,label,pai\nv,train,bonafide,\n")
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ConfigError, match=r"mfas\[hdf5\]"):
        prepare("hqwmca", raw, tmp_path / "s", size=8, protocol_csv=proto)
    assert not (tmp_path / "s").exists()


def _subject_tree(root: Path) -> Path:
    """live/ 4 subjects and print/ 6 subjects, 5 images each, named <subject>_<k>.png."""
    for cls, n in (("live", 4), ("print", 6)):
        (root / cls).mkdir(parents=True)
        for subj in range(n):
            for k in range(5):
                cv2.imwrite(str(root / cls / f"s{cls[0]}{subj}_{k}.png"), np.full((20, 20, 3), 10 * subj + k, np.uint8))
    return root


def test_folder_split_helper_keeps_subjects_together_and_classes_in_ratio(tmp_path: Path):
    root = _subject_tree(tmp_path / "tree")
    args = dict(size=16, modalities=("rgb",), workers=1, split_ratios="0.6,0.2,0.2", split_by="subject",
                subject_pattern=r"^(\w+?)_")
    prepare("folder", root, tmp_path / "a", **args)
    st = open_store(tmp_path / "a")
    split, subj, y = st.column("split"), st.column("subject"), st.labels
    for s in set(subj.tolist()):  # every subject in exactly one split
        assert len(set(split[subj == s].tolist())) == 1, s
    assert len(set(subj.tolist())) == 10
    counts = Counter(zip(split.tolist(), y.tolist(), strict=True))
    # per class: round(cumsum(0.6, 0.2, 0.2) * subjects) -> live 2/1/1, print 4/1/1 subjects of 5 images
    assert counts == {("train", 1): 10, ("val", 1): 5, ("test", 1): 5, ("train", 0): 20, ("val", 0): 5,
                      ("test", 0): 5}
    assert all(sid.startswith(f"{sp}/") for sid, sp in zip(st.column("sample_id"), split, strict=True))
    # deterministic, and another seed gives another assignment
    prepare("folder", root, tmp_path / "b", **args)
    assert (open_store(tmp_path / "b").column("split") == split).all()
    prepare("folder", root, tmp_path / "c", split_seed=3, **args)
    assert not (open_store(tmp_path / "c").column("split") == split).all()


@pytest.mark.parametrize("options, culprit", [
    ({"split_ratios": "0.5,0.5"}, "expected three fractions"),
    ({"split_ratios": "0.7,0.2,0.2"}, "that sum to 1"),
    ({"split_ratios": "a,b,c"}, "expected three numbers"),
    ({"split_by": "subject"}, "--split-by: apply with --split-ratios only"),
    ({"split_ratios": "0.6,0.2,0.2", "split_by": "person"}, "expected one of sample, subject, video"),
    ({"split_ratios": "0.6,0.2,0.2", "split_by": "subject", "subject_pattern": r"^x(\d+)"}, "does not match"),
    ({"split_ratios": "0.6,0.2,0.2", "split_by": "subject", "subject_pattern": "["}, "not a regular expression"),
])
def test_folder_split_helper_errors_name_the_option(tmp_path: Path, options: dict, culprit: str):
    root = _subject_tree(tmp_path / "tree")
    with pytest.raises(ConfigError, match=re.escape(culprit)):
        prepare("folder", root, tmp_path / "s", size=16, modalities=("rgb",), workers=1, **options)


def test_folder_split_ratios_refuse_a_tree_with_split_folders(tmp_path: Path):
    root = _subject_tree(tmp_path / "tree" / "train").parent
    with pytest.raises(ConfigError, match="has split folders"):
        prepare("folder", root, tmp_path / "s", size=16, modalities=("rgb",), workers=1, split_ratios="0.6,0.2,0.2")
