"""The inference package: numpy preprocessing equal to the engine's, ONNX export and its parity with torch for
every exportable model, the ONNX bundle's integrity checks, inference without Lightning (and without torch for
the ONNX backend), and raw SimFAS frames with background -> detection -> decisions on both backends."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import mfas
from mfas.cli.main import app
from mfas.conventions import MODALITIES
from mfas.data.transforms import eval_transform
from mfas.engine.export import PARITY_TOL, export_onnx
from mfas.engine.io import save_bundle
from mfas.errors import ConfigError, DataError
from mfas.inference import preprocess
from mfas.models import create_model

ROOT = Path(__file__).resolve().parents[1]
THRESHOLD = {"threshold": {"value": 0.5, "policy": "fixed:0.5"}}


def _bundle(tmp: Path, name: str, **overrides) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = create_model(name, **overrides).eval()
    d = tmp / name
    save_bundle(d, model, THRESHOLD)
    return d, model


def _capture(rng: np.random.Generator, modalities, h: int = 70, w: int = 90) -> dict[str, np.ndarray]:
    return {m: rng.integers(0, 256, (h, w, 3) if m == "rgb" else (h, w), dtype=np.uint8) for m in modalities}


# ----------------------------------------------------------------------------------------- preprocessing

@pytest.mark.parametrize(("size", "target"), [((64, 64), (32, 32)), ((70, 90), (224, 224)), ((48, 48), (48, 48)),
                                              ((33, 57), (20, 31))])
def test_numpy_preprocessing_equals_the_engine_eval_transform(size, target):
    rng = np.random.default_rng(1)
    arrays = _capture(rng, ("rgb", "ir"), *size)  # depth absent
    norm = {"rgb": ((0.5, 0.4, 0.3), (0.2, 0.25, 0.3)), "depth": ((0.5,), (0.5,)), "ir": ((0.45,), (0.22,))}
    item = {m: torch.from_numpy(a).permute(2, 0, 1) if a.ndim == 3 else torch.from_numpy(a)[None]
            for m, a in arrays.items()}
    item["depth"] = torch.zeros(1, *size, dtype=torch.uint8)
    item["present"] = torch.tensor([True, False, True])
    want = eval_transform(target, norm)(item)
    got = preprocess.model_inputs(arrays, target, norm)
    for m in MODALITIES:
        assert got[m].shape == tuple(want[m].shape) and got[m].dtype == np.float32
        assert np.abs(got[m] - want[m].numpy()).max() < 2e-6, m
    assert got["present"].tolist() == [True, False, True] and not got["depth"].any()


def test_the_resize_shrinks_with_antialiasing_and_keeps_constant_images():
    flat = np.full((1, 50, 80), 0.3, np.float32)
    assert np.allclose(preprocess.resize(flat, (17, 23)), 0.3, atol=1e-6)
    stripes = np.tile(np.array([0.0, 1.0], np.float32), (1, 64, 32))  # one-pixel stripes
    small = preprocess.resize(stripes, (16, 16))
    # averaged, not aliased to 0 or 1 (the edge columns' filters are cut by the border and renormalised)
    assert np.allclose(small[..., 1:-1], 0.5, atol=1e-6) and np.abs(small - 0.5).max() < 0.05


# ------------------------------------------------------------------------------------------- ONNX export

EXPORTABLE = ["cnn-concat-tiny", "vit-concat-tiny", "mmfas-tiny", "mmfas-rgb-tiny", "mmda-tiny"]


@pytest.mark.parametrize("name", EXPORTABLE)
def test_onnx_scores_equal_torch_for_every_exportable_model(name: str, tmp_path: Path):
    d, model = _bundle(tmp_path, name)
    record = export_onnx(d, int8=name == "mmfas-tiny")
    meta = json.loads((d / "model.json").read_text())
    assert meta["onnx"]["fp32"]["file"] == "model.onnx" and meta["onnx"]["weights_sha256"] == meta["weights_sha256"]
    assert record["fp32"]["parity_max_abs"] <= PARITY_TOL
    pt, po = mfas.load(d), mfas.load(d, backend="onnx")
    assert po.backend.name == "onnx"
    rng = np.random.default_rng(2)
    patterns = [model.modalities] + ([model.modalities[:1], model.modalities[1:]] if model.supports_missing
                                     and len(model.modalities) > 1 else [])
    items = []
    for mods in patterns:
        cap = _capture(rng, mods)
        a, b = pt.predict(**cap), po.predict(**cap)
        assert abs(a.score - b.score) <= PARITY_TOL and a.modalities == b.modalities == tuple(mods), (mods, a, b)
        items.append(po.inputs(cap))
    # the graph's batch axis is dynamic, and a sample's score does not depend on the rest of its batch
    batch = po.score_inputs(items)
    single = np.array([po.score_inputs([x])[0] for x in items])
    assert batch.shape == (len(items),) and np.abs(batch - single).max() <= 1e-5
    if "int8" in record:
        # the tiny config keeps a large share of its weights outside MatMul/Gemm (patch convs, embeddings)
        assert (d / "model.int8.onnx").stat().st_size < 0.8 * (d / "model.onnx").stat().st_size
        q = mfas.load(d, backend="onnx-int8").predict(**_capture(rng, model.modalities))
        assert 0 <= q.score <= 1


def test_what_cannot_be_exported_says_why(tmp_path: Path):
    with pytest.raises(ConfigError, match="compat: official is not exported"):
        create_model("mmda-tiny", compat="official").export_view()
    onnx = ROOT.parent / "shared" / "models" / "minifasnet" / "MiniFASNetV2.onnx"
    if onnx.is_file():
        with pytest.raises(ConfigError, match="inference-only"):
            create_model("minifasnet-v2", onnx=str(onnx)).export_view()
    r = CliRunner().invoke(app, ["export", str(tmp_path), "--format", "tflite"])
    assert r.exit_code != 0 and "only onnx" in r.output


def test_the_onnx_backend_refuses_a_bundle_it_cannot_trust(tmp_path: Path):
    d, _ = _bundle(tmp_path, "cnn-concat-tiny")
    with pytest.raises(ConfigError, match="no ONNX export .* mfas export"):
        mfas.load(d, backend="onnx")
    r = CliRunner().invoke(app, ["export", str(d), "--format", "onnx"])
    assert r.exit_code == 0 and "model.onnx" in r.output, r.output
    with pytest.raises(ConfigError, match=r"no ONNX export \(int8\).*--int8"):
        mfas.load(d, backend="onnx-int8")
    with pytest.raises(ConfigError, match="backend must be one of"):
        mfas.load(d, backend="tensorrt")
    good = (d / "model.onnx").read_bytes()
    (d / "model.onnx").write_bytes(good[:-10] + b"0123456789")
    with pytest.raises(DataError, match="model.onnx.*does not match the hash"):
        mfas.load(d, backend="onnx")
    (d / "model.onnx").write_bytes(good)
    meta = json.loads((d / "model.json").read_text())
    for bad in ("../model.onnx", "/etc/passwd.onnx"):
        (d / "model.json").write_text(json.dumps({**meta, "onnx": {**meta["onnx"], "fp32": {
            **meta["onnx"]["fp32"], "file": bad}}}))
        with pytest.raises(ConfigError, match="onnx.fp32.file"):
            mfas.load(d, backend="onnx")
    # new weights after the export (a retrained model written over the bundle): the export no longer applies
    (d / "model.json").write_text(json.dumps(meta))
    model = create_model("cnn-concat-tiny")
    save_bundle(d, model, THRESHOLD)
    doc = json.loads((d / "model.json").read_text())
    (d / "model.json").write_text(json.dumps({**doc, "onnx": meta["onnx"]}))
    with pytest.raises(DataError, match="other weights"):
        mfas.load(d, backend="onnx")


# --------------------------------------------------------------------------- what a deployment imports

def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_importing_the_inference_package_imports_neither_lightning_nor_the_engine():
    r = _python("import sys, mfas.inference, mfas.inference.predictor, mfas.inference.folders, "
                "mfas.inference.backends, mfas.inference.bundle\n"
                "bad = [m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning', 'torch', "
                "'sklearn', 'matplotlib') or m.startswith('mfas.engine')]\n"
                "assert not bad, bad\n")
    assert r.returncode == 0, r.stderr


def test_the_onnx_backend_runs_without_torch_from_the_api_and_the_cli(tmp_path: Path):
    d, _ = _bundle(tmp_path, "mmfas-rgb-tiny")
    export_onnx(d)
    img = _capture(np.random.default_rng(3), ("rgb",))["rgb"]
    want = mfas.load(d).predict(rgb=img).score
    for cls in ("live", "attack"):
        (tmp_path / "caps" / cls).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "caps" / cls / "a.png"), img[..., ::-1])
    code = f"""
import sys, json
for m in ("torch", "lightning", "torchvision", "timm", "open_clip", "sklearn"):
    sys.modules[m] = None  # importing any of them fails
import numpy as np, mfas
p = mfas.load({str(d)!r}, backend="onnx")
img = np.random.default_rng(3).integers(0, 256, (70, 90, 3), dtype=np.uint8)
print(json.dumps(p.predict(rgb=img).as_dict()))
from typer.testing import CliRunner
from mfas.cli.main import app
r = CliRunner().invoke(app, ["predict", {str(d)!r}, "--rgb-dir", {str(tmp_path / "caps")!r}, "--backend", "onnx",
                             "--out", {str(tmp_path / "p.csv")!r}])
assert r.exit_code == 0, r.output
"""
    r = _python(code)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[0])
    assert abs(got["score"] - want) <= PARITY_TOL and got["decision"] in ("bonafide", "attack")
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert len(rows) == 3 and (tmp_path / "p.metrics.json").exists()


# ------------------------------------------------------------- raw SimFAS frames with background -> decisions

FRAME = (480, 640)
FACE = 160  # side of the pasted face in the frame


def _background(rng: np.random.Generator) -> dict[str, np.ndarray]:
    h, w = FRAME
    ramp = np.linspace(40, 200, w)[None, :] * np.ones((h, 1))
    rgb = np.stack([ramp, ramp[:, ::-1], np.full((h, w), 90.0)], -1) + rng.normal(0, 4, (h, w, 3))
    return {"rgb": rgb.clip(0, 255).astype(np.uint8), "depth": np.full((h, w), 12, np.uint8),
            "ir": np.full((h, w), 30, np.uint8)}


@pytest.fixture(scope="module")
def simfas_frames(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[int, int]]]:
    """Capture folders (``live|attack/<subject>_<k>/{rgb,depth,ir}.png``) of full 640x480 frames: SimFAS samples of
    domain P pasted at one place in every modality of a background frame, and that place per capture."""
    from mfas.data.synth.generate import plan, render

    root = tmp_path_factory.mktemp("simfas_frames") / "caps"
    rng = np.random.default_rng(0)
    where: dict[str, tuple[int, int]] = {}
    for spec in plan(0, ["P"], 48):
        images = render(spec, 112)
        frame = _background(rng)
        x, y = int(rng.integers(0, FRAME[1] - FACE)), int(rng.integers(0, FRAME[0] - FACE))
        for m, img in images.items():
            frame[m][y:y + FACE, x:x + FACE] = cv2.resize(img, (FACE, FACE), interpolation=cv2.INTER_LINEAR)
        name = f"s{spec.subject}_{spec.index}"
        cap = root / ("live" if spec.pai == "bonafide" else "attack") / name
        cap.mkdir(parents=True)
        cv2.imwrite(str(cap / "rgb.png"), frame["rgb"][..., ::-1])
        cv2.imwrite(str(cap / "depth.png"), frame["depth"])
        cv2.imwrite(str(cap / "ir.png"), frame["ir"])
        where[f"{cap.parent.name}/{name}"] = (x, y)
    return root, where


def test_raw_simfas_frames_go_through_detection_to_the_same_decisions_on_both_backends(simfas_frames, tmp_path):
    from mfas.data import open_store
    from mfas.engine.config import validate_config
    from mfas.engine.evaluation import read_scores
    from mfas.engine.train import train

    caps, where = simfas_frames
    runner = CliRunner()
    r = runner.invoke(app, ["data", "prepare", "folder", "--root", str(caps), "--out", str(tmp_path / "store"),
                            "--size", "48", "--detect", "--crop-scale", "1.3", "--split-ratios", "0.5,0.25,0.25",
                            "--split-by", "subject", "--subject-pattern", r"^(s\d+)_", "--workers", "1"])
    assert r.exit_code == 0, r.output
    st = open_store(tmp_path / "store")
    assert len(st) >= len(where) // 2 and set(st.modalities) == set(MODALITIES)
    proto = tmp_path / "p.yaml"
    proto.write_text("protocols:\n  - name: mine/sim\n    train: [own:train]\n    select: [own:val]\n"
                     "    tests:\n      - name: own\n        parts: [own:test]\n")
    run = train(validate_config({
        "name": "simframes", "seed": 0, "protocol": "mine/sim", "protocol_file": str(proto),
        "output_dir": str(tmp_path / "runs"),
        "data": {"stores": {"own": str(tmp_path / "store")}, "image_size": 32, "batch_size": 8},
        "model": {"name": "cnn-concat-tiny", "img_size": 32},
        "trainer": {"max_epochs": 1, "deterministic": True, "progress": False, "accelerator": "cpu"},
        "eval": {"policies": ["val_eer"], "selection": "last"}}))
    assert runner.invoke(app, ["export", str(run), "--format", "onnx"]).exit_code == 0
    pt, po = mfas.load(run), mfas.load(run, backend="onnx")
    stored = read_scores(run / "scores" / "own.csv")
    stored = dict(zip(stored["sample_id"], stored["score"], strict=True))
    checked = 0
    for sid, score in stored.items():
        name = sid.rsplit("/", 1)[0] if sid.endswith(".png") else sid
        key = next(k for k in where if name.endswith(k))
        files = {m: caps / key / f"{m}.png" for m in MODALITIES}
        a, b = pt.predict(**files), po.predict(**files)
        assert a.decision == b.decision != "no_face" and abs(a.score - b.score) <= PARITY_TOL
        assert abs(a.score - score) < 1e-5  # a raw frame scores as the stored crop it became
        x, y = where[key]
        cx, cy = a.face.box[0] + a.face.box[2] / 2, a.face.box[1] + a.face.box[3] / 2
        assert x < cx < x + FACE and y < cy < y + FACE and a.modalities == MODALITIES
        checked += 1
    assert checked >= 3
    empty = _background(np.random.default_rng(9))
    for p in (pt, po):
        assert p.predict(**empty).decision == "no_face"


def test_a_command_missing_an_optional_package_names_the_extra_to_install(capsys: pytest.CaptureFixture):
    import typer

    from mfas.cli.common import friendly_errors

    @friendly_errors
    def needs(name: str) -> None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    for module, extra in (("lightning.pytorch", "train"), ("onnxruntime", "infer"), ("timm", "torch")):
        with pytest.raises(typer.Exit) as e:
            needs(module)
        assert e.value.exit_code == 2 and f"pip install 'mfas[{extra}]'" in capsys.readouterr().err
    with pytest.raises(ModuleNotFoundError):  # not an optional package of mfas: a real bug, not hidden
        needs("mfas.nonexistent")
