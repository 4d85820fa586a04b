"""From a camera frame to a face crop: EXIF orientation, the crop policy, YuNet detection, ``prepare --detect``
and prediction that crops new frames as the training data was cropped."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

import mfas
from mfas.cli.main import app
from mfas.data import open_store
from mfas.data.faces import CropPolicy, Face, FaceDetector
from mfas.data.images import read_image
from mfas.errors import ConfigError, DataError

SHARED = Path(__file__).resolve().parents[2] / "shared"
SAMPLES = SHARED / "data" / "real_rgb" / "silent-face-samples"
CROPS = SHARED / "data" / "real_rgb" / "crops-336"
needs_photos = pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"real face photos not found at {SAMPLES}")


def _with_orientation(jpeg: bytes, orientation: int) -> bytes:
    """``jpeg`` with an APP1 EXIF segment whose IFD0 holds the orientation tag (big-endian, as many cameras)."""
    tiff = b"MM" + struct.pack(">HI", 42, 8) + struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1,
                                                                                    orientation, 0) + b"\0\0\0\0"
    body = b"Exif\0\0" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body + jpeg[2:]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_exif_orientation_is_applied_as_opencv_does(tmp_path: Path, orientation: int):
    """Phone portraits are stored sideways with an orientation tag: read_image shows them upright, exactly as
    cv2.imread (which applies the tag) does."""
    img = np.zeros((40, 64, 3), np.uint8)
    img[:10, :20] = (255, 0, 0)  # a red corner, top left
    img[30:, 50:, 1] = 200
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 100])
    f = tmp_path / "o.jpg"
    f.write_bytes(_with_orientation(buf.tobytes(), orientation))
    want = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)
    got = read_image(f, "rgb")
    assert got.shape == want.shape == ((40, 64, 3) if orientation <= 4 else (64, 40, 3))
    np.testing.assert_array_equal(got, want)


def test_a_broken_exif_block_is_not_a_broken_image(tmp_path: Path):
    ok, buf = cv2.imencode(".jpg", np.full((20, 30, 3), 90, np.uint8))
    bad = bytes(buf)[:2] + b"\xff\xe1\x00\x0cExif\0\0MM\xff\xff" + bytes(buf)[2:]
    (tmp_path / "b.jpg").write_bytes(bad)
    assert read_image(tmp_path / "b.jpg", "rgb").shape == (20, 30, 3)


# ------------------------------------------------------------------------------------------- crop policy

def _frame_with_eyes(angle: float = 0.0) -> tuple[np.ndarray, Face]:
    """A 200x300 frame with two bright 'eyes' 60 px apart around (150, 100), the line between them tilted by
    ``angle`` degrees, and the face box around them."""
    img = np.zeros((200, 300, 3), np.uint8)
    c, a = np.array([150.0, 100.0]), np.radians(angle)
    d = 30 * np.array([np.cos(a), np.sin(a)])
    right, left = c - d, c + d
    for x, y in (right, left):
        cv2.circle(img, (round(x), round(y)), 4, (255, 255, 255), -1)
    face = Face(box=(110.0, 60.0, 80.0, 100.0), landmarks=(tuple(right), tuple(left), (150.0, 120.0),
                                                          (135.0, 140.0), (165.0, 140.0)), score=0.9)
    return img, face


def test_crop_is_square_around_the_box_and_the_same_for_every_modality():
    img, face = _frame_with_eyes()
    depth = img[..., 0].copy()
    out = CropPolicy(scale=1.0, size=50).crop({"rgb": img, "depth": depth}, face)
    assert out["rgb"].shape == (50, 50, 3) and out["depth"].shape == (50, 50)
    np.testing.assert_array_equal(out["rgb"][..., 0], out["depth"])  # one geometry for all modalities
    # a 100 px square around the box centre (150, 110), shrunk by 2: the eyes (y = 100) land on row 20
    rows = np.nonzero(out["depth"].max(1) > 100)[0]
    assert abs(rows.mean() - 20) <= 1.5


def test_align_levels_the_eyes():
    img, face = _frame_with_eyes(angle=25)
    tilted = CropPolicy(scale=1.5, size=120).crop({"rgb": img}, face)["rgb"][..., 0]
    level = CropPolicy(scale=1.5, size=120, align=True).crop({"rgb": img}, face)["rgb"][..., 0]

    def spots(a):
        n, _, stats, cent = cv2.connectedComponentsWithStats((a > 100).astype(np.uint8))
        return cent[1:][np.argsort(-stats[1:, cv2.CC_STAT_AREA])[:2]]

    t, lv = spots(tilted), spots(level)
    assert abs(t[0][1] - t[1][1]) > 15  # tilted: the eyes are on different rows
    assert abs(lv[0][1] - lv[1][1]) < 1.5  # aligned: on one row


def test_crop_at_the_frame_edge_pads_with_zeros_or_shifts_inside():
    img = np.full((100, 100), 200, np.uint8)
    face = Face(box=(0.0, 0.0, 40.0, 40.0), landmarks=(), score=0.9)
    padded = CropPolicy(scale=2.0, size=40, fit="pad").crop({"ir": img}, face)["ir"]
    shifted = CropPolicy(scale=2.0, size=40, fit="shift").crop({"ir": img}, face)["ir"]
    assert padded[:10, :10].max() == 0 and padded[-5:, -5:].min() == 200  # outside the frame: zeros
    assert shifted.min() == 200  # moved inside: nothing outside the frame


def test_crop_refuses_modalities_of_different_sizes():
    _, face = _frame_with_eyes()
    with pytest.raises(DataError, match=r"differ in size \(rgb 300x200, depth 100x100\)"):
        CropPolicy().crop({"rgb": np.zeros((200, 300, 3), np.uint8), "depth": np.zeros((100, 100), np.uint8)}, face)


@pytest.mark.parametrize("settings, culprit", [
    ({"scal": 1.5}, "unknown key 'scal'"),
    ({"scale": 0.1}, "scale must be between 0.5 and 8"),
    ({"size": 8}, "size must be a whole number between 16 and 4096"),
    ({"fit": "wrap"}, "fit must be one of pad, shift"),
    ({"align": "yes"}, "align must be true or false"),
    ({"detector": "haar"}, "unknown detector 'haar'"),
    ({"score_threshold": 1.5}, "score_threshold must lie between 0 and 1"),
])
def test_bad_crop_settings_name_the_key(settings: dict, culprit: str):
    with pytest.raises(ConfigError, match=re.escape(culprit)):
        CropPolicy.from_dict(settings, where="model.json: preprocessing.crop")


# ---------------------------------------------------------------------------------------------- detection

def test_no_face_in_a_blank_or_noise_frame():
    det = FaceDetector()
    assert det.detect(np.full((240, 320, 3), 128, np.uint8)) == []
    assert det.detect(np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)) == []


@needs_photos
def test_detects_the_face_of_a_real_photo_and_the_largest_first():
    det = FaceDetector()
    img = read_image(SAMPLES / "image_T1.jpg", "rgb")
    (face,) = det.detect(img)
    x, y, w, h = face.box
    assert face.score > 0.8 and 100 < w < 260 and 150 < h < 330  # a portrait's face, upright
    rx, ry = face.landmarks[0]
    lx, ly = face.landmarks[1]
    assert rx < lx and abs(ry - ly) < 0.2 * w and y < ry < y + h / 2  # eyes side by side in the upper half
    # the same face at half size beside it: two faces, the larger first
    small = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
    pair = np.zeros((img.shape[0], img.shape[1] + small.shape[1], 3), np.uint8)
    pair[:, :img.shape[1]] = img
    pair[:small.shape[0], img.shape[1]:] = small
    faces = det.detect(pair)
    assert len(faces) == 2 and faces[0].area > 3 * faces[1].area and faces[1].box[0] > img.shape[1] - 5
    # a frame larger than the search size: the box comes back in the frame's pixels
    big = cv2.resize(img, (img.shape[1] * 2, img.shape[0] * 2))
    (bf,) = det.detect(big)
    assert np.allclose(bf.box, [2 * v for v in face.box], rtol=0.1, atol=8)
    assert FaceDetector(CropPolicy(min_face=int(w) + 10)).detect(img) == []


# ------------------------------------------------------------------------------- prepare, train, predict

@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder tree of full frames: the three real photos, mirrored and shifted copies, and a blank frame."""
    if not SAMPLES.is_dir():
        pytest.skip(f"real face photos not found at {SAMPLES}")
    root = tmp_path_factory.mktemp("frames")
    photos = {"live": ["image_T1"], "attack": ["image_F1", "image_F2"]}
    for split in ("train", "val", "test"):
        for cls, names in photos.items():
            (root / split / cls).mkdir(parents=True)
            for name in names:
                img = cv2.imread(str(SAMPLES / f"{name}.jpg"))
                for k, shift in enumerate((0, 40, -40)):
                    out = np.roll(img, shift, axis=1)
                    if split != "train":
                        out = cv2.flip(out, 1)
                    cv2.imwrite(str(root / split / cls / f"{name}_{k}.png"), out)
    cv2.imwrite(str(root / "test" / "live" / "blank.png"), np.full((240, 320, 3), 120, np.uint8))
    return root


def test_prepare_detect_stores_crops_skips_frames_without_a_face_and_records_the_policy(frames: Path,
                                                                                       tmp_path: Path):
    r = CliRunner().invoke(app, ["data", "prepare", "folder", "--root", str(frames), "--out", str(tmp_path / "s"),
                                 "--modalities", "rgb", "--size", "64", "--detect", "--crop-scale", "1.3",
                                 "--workers", "2"])
    assert r.exit_code == 0, r.output
    st = open_store(tmp_path / "s")
    assert len(st) == 27 and st.image_size == (64, 64)
    crop = st.meta["provenance"]["preprocessing"]["crop"]
    assert crop["scale"] == 1.3 and crop["size"] == 64 and crop["detector"] == "yunet-2026may"
    skipped = (tmp_path / "s" / "skipped.csv").read_text()
    assert "blank.png" in skipped and "no face found" in skipped
    # crops centre the face: the detector finds it again, filling most of the crop
    stored = np.asarray(st.arrays["rgb"][0])
    (again,) = FaceDetector(CropPolicy(min_face=16)).detect(cv2.resize(stored, (192, 192)))
    assert again.box[2] > 0.5 * 192 / 1.3
    bad = CliRunner().invoke(app, ["data", "prepare", "folder", "--root", str(frames), "--out",
                                   str(tmp_path / "t"), "--crop-align"])
    assert bad.exit_code != 0 and "apply with --detect only" in bad.output


@pytest.fixture(scope="module")
def face_run(frames: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from mfas.data.prepare import prepare
    from mfas.engine.config import validate_config
    from mfas.engine.train import train

    work = tmp_path_factory.mktemp("face_run")
    store = work / "store"
    prepare("folder", frames, store, size=48, modalities=("rgb",), workers=1, crop={"scale": 1.4})
    proto = work / "p.yaml"
    proto.write_text("protocols:\n  - name: mine/frames\n    train: [own:train]\n    select: [own:val]\n"
                     "    tests:\n      - name: own\n        parts: [own:test]\n")
    cfg = validate_config({
        "name": "faces", "seed": 0, "protocol": "mine/frames", "protocol_file": str(proto),
        "output_dir": str(work / "runs"),
        "data": {"stores": {"own": str(store)}, "image_size": 32, "batch_size": 6, "sampler": "class_balanced"},
        "model": {"name": "cnn-concat-tiny", "img_size": 32, "modalities": ["rgb"]},
        "trainer": {"max_epochs": 1, "deterministic": True, "progress": False, "accelerator": "cpu"},
        "eval": {"policies": ["test_eer", "val_eer"], "selection": "last"}})
    return train(cfg), store


def test_bundle_records_the_crop_policy_and_predict_applies_it_to_raw_frames(face_run, frames: Path):
    from mfas.engine.evaluation import read_scores

    run, store = face_run
    pre = json.loads((run / "model.json").read_text())["preprocessing"]
    st = open_store(store)
    assert pre["crop"] == st.meta["provenance"]["preprocessing"]["crop"] and pre["store_size"] == [48, 48]
    p = mfas.load(run)
    # a raw frame scores exactly as the stored crop it became (the run's score file)
    scores = read_scores(run / "scores" / "own.csv")
    for name in ("image_T1_1", "image_F2_0"):
        cls = "live" if "T1" in name else "attack"
        r = p.predict(rgb=frames / "test" / cls / f"{name}.png")
        k = [i for i, s in enumerate(scores["sample_id"]) if s == f"test/{cls}/{name}.png"]
        assert len(k) == 1 and abs(scores["score"][k[0]] - r.score) < 1e-5
        assert r.face is not None and r.face.score > 0.8
    blank = p.predict(rgb=frames / "test" / "live" / "blank.png")
    assert blank.decision == "no_face" and blank.score is None and blank.face is None


def test_predict_cli_reports_no_face_and_all_faces(face_run, frames: Path, tmp_path: Path):
    run, _ = face_run
    runner = CliRunner()
    r = runner.invoke(app, ["predict", str(run), "--rgb", str(frames / "test" / "live" / "blank.png")])
    assert r.exit_code == 0 and "no_face" in r.output
    img = read_image(SAMPLES / "image_T1.jpg", "rgb")
    pair = np.concatenate([img, cv2.resize(img, (img.shape[1], img.shape[0]))[:, ::-1]], axis=1)
    cv2.imwrite(str(tmp_path / "pair.png"), cv2.cvtColor(pair, cv2.COLOR_RGB2BGR))
    r = runner.invoke(app, ["predict", str(run), "--rgb", str(tmp_path / "pair.png"), "--all-faces"])
    assert r.exit_code == 0 and r.output.count("face at") == 2, r.output
    d = tmp_path / "dir"
    d.mkdir()
    (d / "pair.png").write_bytes((tmp_path / "pair.png").read_bytes())
    (d / "blank.png").write_bytes((frames / "test" / "live" / "blank.png").read_bytes())
    r = runner.invoke(app, ["predict", str(run), "--rgb-dir", str(d), "--out", str(tmp_path / "p.csv")])
    assert r.exit_code == 0, r.output
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert rows[0] == "name,score,decision,label,pai,modalities,face,error"
    assert rows[1].startswith("blank,,no_face,,,rgb,,") and re.match(r"pair,0\.\d+,\w+,,,rgb,[\d. ]+,$", rows[2])


def test_predict_on_class_folders_writes_labels_and_metrics(face_run, frames: Path, tmp_path: Path):
    """A labelled folder (live/, attack/: the layout prepare folder reads) gives labels in the CSV and metrics at
    the threshold, with frames without a face counted apart; a subfolder that is not a class is an error, not
    silently skipped."""
    run, _ = face_run
    out = tmp_path / "pred.csv"
    r = CliRunner().invoke(app, ["predict", str(run), "--rgb-dir", str(frames / "test"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "labelled by class folders: 3 bona fide and 6 attacks scored" in r.output
    lines = out.read_text().splitlines()
    assert len(lines) == 11 and any(ln.startswith("live/blank,,no_face,1,bonafide,") for ln in lines)
    assert sum(",0,other," in ln for ln in lines) == 6
    m = json.loads((tmp_path / "pred.metrics.json").read_text())
    assert m["n"] == 10 and m["n_scored"] == 9 and m["no_face"] == {"bonafide": 1, "attack": 0}
    assert 0 <= m["auc"] <= 1 and {"apcer", "bpcer", "acer", "apcer_per_species"} <= set(m)
    odd = tmp_path / "odd"
    (odd / "holiday").mkdir(parents=True)
    (odd / "live").mkdir()
    r = CliRunner().invoke(app, ["predict", str(run), "--rgb-dir", str(odd), "--out", str(tmp_path / "o.csv")])
    assert r.exit_code == 2 and "subfolder(s) holiday are not class names" in r.output


def test_evaluate_a_test_only_store_with_a_protocol_file(face_run, frames: Path, tmp_path: Path):
    """Own data kept for testing: a store with only a test split, a protocol file that names it, and labels
    such as ``field:test`` that rich must not print as an emoji."""
    from mfas.data.prepare import prepare

    run, _ = face_run
    prepare("folder", frames / "test", tmp_path / "field", size=48, modalities=("rgb",), split="test", workers=1,
            crop={"scale": 1.4})
    proto = tmp_path / "field.yaml"
    proto.write_text("protocols:\n  - name: mine/field\n    train: [field:train]\n    tests:\n"
                     "      - name: field\n        parts: [field:test]\n")
    r = CliRunner().invoke(app, ["evaluate", str(run), "--protocol-file", str(proto), "--store",
                                 f"field={tmp_path / 'field'}", "--out", str(tmp_path / "ev")])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["tests"]["field"]["n"] == 9
    # an error naming the data reference field:train shows it verbatim (rich once printed ":train:" as an emoji)
    proto.write_text("protocols:\n  - name: mine/field2\n    train: [field:train]\n    tests:\n"
                     "      - name: field\n        parts: [field:train]\n")
    r = CliRunner().invoke(app, ["evaluate", str(run), "--protocol-file", str(proto), "--store",
                                 f"field={tmp_path / 'field'}", "--out", str(tmp_path / "ev2")])
    assert r.exit_code == 2 and "field:train: no samples" in r.output, r.output


def test_calibrate_writes_a_new_operating_point_and_keeps_the_old(face_run, frames: Path, tmp_path: Path):
    """On-site calibration: bpcer:0.0 on local captures accepts every bona fide; the previous threshold is kept
    in threshold_history, predict uses the new one, and --threshold overrides both."""
    import shutil

    from mfas.data.prepare import prepare
    from mfas.engine.predict import score_rows

    run, _ = face_run
    mine = tmp_path / "run"
    shutil.copytree(run, mine, ignore=shutil.ignore_patterns("*.ckpt", "tb", "logs"))
    site = tmp_path / "site"
    prepare("folder", frames / "val", site, size=48, modalities=("rgb",), split="val", workers=1,
            crop={"scale": 1.4})
    before = json.loads((mine / "model.json").read_text())["threshold"]
    r = CliRunner().invoke(app, ["calibrate", str(mine), "--data", str(site), "--policy", "bpcer:0.0"])
    assert r.exit_code == 0, r.output
    meta = json.loads((mine / "model.json").read_text())
    assert meta["threshold_history"] == [before] and meta["threshold"]["source"] == "calibration"
    assert meta["threshold"]["policy"] == "bpcer:0" and meta["threshold"]["n"] == 9
    p = mfas.load(mine)
    st = open_store(site)
    scores = score_rows(p.model, st, np.arange(len(st)))
    assert p.threshold == meta["threshold"]["value"] <= scores[st.labels == 1].min()  # no bona fide rejected
    assert mfas.load(mine, threshold=0.25).threshold == 0.25
    # prepared differently from the training data: refused, naming both
    plain = tmp_path / "plain"
    prepare("folder", frames / "val", plain, size=48, modalities=("rgb",), split="val", workers=1)
    r = CliRunner().invoke(app, ["calibrate", str(mine), "--data", str(plain), "--policy", "val_eer"])
    assert r.exit_code == 2 and "no face crop" in r.output and "face crop scale 1.4" in r.output
    r = CliRunner().invoke(app, ["calibrate", str(mine), "--data", str(site), "--policy", "test_eer"])
    assert r.exit_code == 2 and "validation data" in r.output


MINIFASNET = SHARED / "models" / "minifasnet" / "MiniFASNetV2.onnx"


@pytest.mark.skipif(not MINIFASNET.is_file() or not SAMPLES.is_dir(), reason=f"MiniFASNet or photos not found at "
                    f"{MINIFASNET.parent}, {SAMPLES}")
def test_minifasnet_peer_scores_raw_frames_and_stores_like_a_run(frames: Path, tmp_path: Path):
    """The released RGB peer behind the same interface: its bundle crops raw frames as Silent-Face does (box x
    2.7, moved inside the frame, 80 x 80), gives Silent-Face's answers on its own sample photos, is scored by
    evaluate on a store prepared with its crop (--crop-from), and cannot be trained."""
    runner = CliRunner()
    run = tmp_path / "mfn"
    r = runner.invoke(app, ["peer", "minifasnet", "--onnx", str(MINIFASNET), "--out", str(run)])
    assert r.exit_code == 0, r.output
    meta = json.loads((run / "model.json").read_text())
    assert meta["preprocessing"]["crop"]["scale"] == 2.7 and meta["preprocessing"]["crop"]["square"] is False
    p = mfas.load(run)
    live = p.predict(rgb=SAMPLES / "image_T1.jpg")
    prints = [p.predict(rgb=SAMPLES / f"image_F{k}.jpg") for k in (1, 2)]
    assert live.decision == "bonafide" and live.score > 0.9
    assert all(x.decision == "attack" and x.score < 0.1 for x in prints)
    r = runner.invoke(app, ["data", "prepare", "folder", "--root", str(frames / "test"), "--out",
                            str(tmp_path / "s"), "--modalities", "rgb", "--size", "80", "--split", "test",
                            "--crop-from", str(run), "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert open_store(tmp_path / "s").meta["provenance"]["preprocessing"]["crop"]["scale"] == 2.7
    r = runner.invoke(app, ["data", "prepare", "folder", "--root", str(frames / "test"), "--out",
                            str(tmp_path / "t"), "--modalities", "rgb", "--crop-from", str(run), "--crop-scale", "2"])
    assert r.exit_code == 2 and "--crop-from takes every crop setting from the model" in r.output
    proto = tmp_path / "p.yaml"
    proto.write_text("protocols:\n  - name: mine/peer\n    train: [field:train]\n    tests:\n"
                     "      - name: field\n        parts: [field:test]\n")
    r = runner.invoke(app, ["evaluate", str(run), "--protocol-file", str(proto), "--store",
                            f"field={tmp_path / 's'}", "--out", str(tmp_path / "ev")])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["tests"]["field"]["n"] == 9 and m["tests"]["field"]["threshold_free"]["auc"] > 0.9
    with pytest.raises(ConfigError, match="inference-only"):
        p.model.losses({}, None)
    # a different file under the recorded path is refused
    from mfas.models import create_model

    with pytest.raises(DataError, match="SHA-256"):
        create_model("minifasnet-v2", onnx=str(MINIFASNET.with_name("MiniFASNetV1SE.onnx")), sha256="0" * 64)


@needs_photos
def test_prepare_detect_cuts_depth_and_ir_with_the_box_found_in_rgb(tmp_path: Path):
    """RGB-D-IR captures: the face is found in RGB and the same crop is cut from the registered depth and IR
    (here grey copies of the RGB frame, so the stored depth and IR must be the grey of the stored RGB)."""
    from mfas.data.prepare import prepare

    img = cv2.imread(str(SAMPLES / "image_T1.jpg"))
    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    cap = tmp_path / "caps" / "live" / "c1"
    cap.mkdir(parents=True)
    cv2.imwrite(str(cap / "rgb.png"), img)
    cv2.imwrite(str(cap / "depth.png"), grey)
    cv2.imwrite(str(cap / "ir.png"), grey)
    prepare("folder", tmp_path / "caps", tmp_path / "s", size=64, workers=1, crop={"scale": 1.5})
    st = open_store(tmp_path / "s")
    rgb, depth, ir = (np.asarray(st.arrays[m][0]) for m in ("rgb", "depth", "ir"))
    want = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(int)
    assert np.abs(depth.astype(int) - want).mean() < 2 and np.array_equal(depth, ir)
