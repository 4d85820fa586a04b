"""The HTTP service (mfas.serve): every endpoint and limit through FastAPI's TestClient."""

from __future__ import annotations

import base64
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

import mfas
from mfas.data.faces import CropPolicy
from mfas.engine.io import save_bundle
from mfas.models import create_model
from mfas.serve import ServeSettings, create_app

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_rgb" / "silent-face-samples"
THRESHOLD = {"threshold": {"value": 0.5, "policy": "fixed:0.5"}}


@pytest.fixture(scope="module")
def face_run(tmp_path_factory) -> Path:
    """An RGB model with a crop policy: the service finds the face, crops it, scores it."""
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("serve") / "rgb"
    save_bundle(d, create_model("mmfas-rgb-tiny").eval(), THRESHOLD,
                {"crop": CropPolicy(scale=1.5, size=64).as_dict(), "store_size": [64, 64]})
    return d


@pytest.fixture(scope="module")
def mm_run(tmp_path_factory) -> Path:
    """A three-modality model that scores whole images (no crop policy)."""
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("serve") / "mm"
    save_bundle(d, create_model("cnn-concat-tiny").eval(), THRESHOLD)
    return d


def _client(run: Path, **kw) -> TestClient:
    return TestClient(create_app(ServeSettings(run=run, **kw)))


def _png(a: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", a[..., ::-1] if a.ndim == 3 else a)
    assert ok
    return buf.tobytes()


def _face_file() -> Path:
    f = SAMPLES / "image_T1.jpg"
    if not f.exists():
        pytest.skip(f"{f} is not here (../shared/data)")
    return f


def test_health_ready_and_model_description(face_run: Path):
    with _client(face_run) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/readyz").json()["status"] == "ready"
        m = c.get("/v1/model").json()
        assert m["name"] == "mmfas-rgb-tiny" and m["modalities"] == ["rgb"] and m["threshold"] == 0.5
        assert m["crop"]["size"] == 64 and m["limits"]["queue_size"] == 32 and len(m["weights_sha256"]) == 64
        page = c.get("/")
        assert page.status_code == 200 and "mfas liveness check" in page.text
        assert c.get("/static/app.js").status_code == 200


def test_a_score_from_the_api_equals_mfas_load_predict_on_the_same_file(face_run: Path):
    f = _face_file()
    want = mfas.load(face_run).predict(rgb=f)
    assert want.face is not None
    with _client(face_run) as c:
        r = c.post("/v1/predict", files={"rgb": (f.name, f.read_bytes(), "image/jpeg")})
        assert r.status_code == 200, r.text
        got = r.json()
        assert abs(got["score"] - want.score) < 1e-6
        assert got["decision"] == want.decision and got["policy"] == "fixed:0.5" and got["modalities"] == ["rgb"]
        assert got["face"]["box"] == want.face.as_dict()["box"]
        assert got["model"]["name"] == "mmfas-rgb-tiny" and got["latency_ms"] > 0
        assert r.headers["x-request-id"] == got["request_id"]
        # the same bytes as base64 JSON, with a data URL prefix as a browser's FileReader gives it
        b64 = "data:image/jpeg;base64," + base64.b64encode(f.read_bytes()).decode()
        j = c.post("/v1/predict", json={"rgb": b64}).json()
        assert abs(j["score"] - want.score) < 1e-6


def test_no_face_is_a_decision_and_all_faces_is_bounded(face_run: Path):
    f = _face_file()
    grey = _png(np.full((120, 160, 3), 128, np.uint8))
    with _client(face_run, max_faces=1) as c:
        r = c.post("/v1/predict", files={"rgb": ("g.png", grey, "image/png")}).json()
        assert r["decision"] == "no_face" and r["score"] is None and r["face"] is None
        two = np.concatenate([cv2.imread(str(f))[..., ::-1]] * 2, axis=1)
        r = c.post("/v1/predict", files={"rgb": ("two.png", _png(np.ascontiguousarray(two)), "image/png")},
                   data={"all_faces": "true"}).json()
        assert len(r["faces"]) == 1  # two faces found, max_faces=1 scored


def test_three_modalities_missing_ones_and_mismatched_sizes(mm_run: Path):
    rng = np.random.default_rng(0)
    rgb, depth, ir = rng.integers(0, 256, (40, 48, 3), np.uint8), rng.integers(0, 256, (40, 48), np.uint8), \
        rng.integers(0, 256, (40, 48), np.uint8)
    p = mfas.load(mm_run)
    with _client(mm_run) as c:
        files = {"rgb": ("r.png", _png(rgb), "image/png"), "depth": ("d.png", _png(depth), "image/png"),
                 "ir": ("i.png", _png(ir), "image/png")}
        r = c.post("/v1/predict", files=files).json()
        assert abs(r["score"] - p.predict(rgb=rgb, depth=depth, ir=ir).score) < 1e-6
        assert r["modalities"] == ["rgb", "depth", "ir"] and r["face"] is None
        r = c.post("/v1/predict", files={"rgb": files["rgb"], "ir": files["ir"]}).json()
        assert r["modalities"] == ["rgb", "ir"] and abs(r["score"] - p.predict(rgb=rgb, ir=ir).score) < 1e-6
        bad = c.post("/v1/predict", files={"rgb": files["rgb"], "depth": ("d.png", _png(depth[:30]), "image/png")})
        assert bad.status_code == 422 and "differ in size" in bad.json()["error"]["message"]


@pytest.mark.parametrize(("kind", "status", "code"), [
    ("corrupt", 400, "bad_image"), ("text", 415, "unsupported_type"), ("mismatch", 415, "type_mismatch"),
    ("bytes", 413, "image_too_large"), ("pixels", 413, "too_many_pixels"), ("no_rgb", 400, "missing_rgb"),
    ("unknown_field", 400, "unknown_field"), ("body_type", 415, "unsupported_body"), ("base64", 400, "bad_base64"),
    ("empty", 400, "empty_image"), ("json", 400, "bad_json")])
def test_bad_requests_get_a_clear_4xx(face_run: Path, kind: str, status: int, code: str):
    img = _png(np.zeros((100, 100, 3), np.uint8))
    req = {
        "corrupt": dict(files={"rgb": ("x.png", img[:40], "image/png")}),
        "text": dict(files={"rgb": ("x.txt", b"hello", "text/plain")}),
        "mismatch": dict(files={"rgb": ("x.jpg", img, "image/jpeg")}),
        "bytes": dict(files={"rgb": ("x.png", img + b"\0" * 2048, "image/png")}),
        "pixels": dict(files={"rgb": ("x.png", img, "image/png")}),
        "no_rgb": dict(files={"depth": ("x.png", img, "image/png")}),
        "unknown_field": dict(files={"rgb": ("x.png", img, "image/png"), "thermal": ("t.png", img, "image/png")}),
        "body_type": dict(content=img, headers={"content-type": "image/png"}),
        "base64": dict(json={"rgb": "not base64!"}),
        "empty": dict(files={"rgb": ("x.png", b"", "image/png")}),
        "json": dict(content=b"{", headers={"content-type": "application/json"}),
    }[kind]
    with _client(face_run, max_upload_bytes=len(img) + 1024, max_pixels=100 * 100 - 1 if kind == "pixels"
                 else 4096 * 4096) as c:
        r = c.post("/v1/predict", **req)
        assert r.status_code == status, r.text
        err = r.json()["error"]
        assert err["code"] == code and err["message"]


def test_the_pixel_limit_is_checked_before_decoding(face_run: Path, monkeypatch: pytest.MonkeyPatch):
    import mfas.data.images as images

    decoded = []
    monkeypatch.setattr(images, "_decode_bytes", lambda raw: decoded.append(1))
    with _client(face_run, max_pixels=64 * 64) as c:
        r = c.post("/v1/predict", files={"rgb": ("x.png", _png(np.zeros((65, 64, 3), np.uint8)), "image/png")})
    assert r.status_code == 413 and decoded == []


def test_the_api_key_guards_the_api_and_metrics_not_health(face_run: Path):
    with _client(face_run, api_key="s3cret-key") as c:
        assert c.get("/v1/model").status_code == 401
        assert c.get("/metrics").status_code == 401
        assert c.get("/v1/model", headers={"X-API-Key": "wrong-key!"}).status_code == 401
        assert c.get("/v1/model", headers={"X-API-Key": "s3cret-key"}).status_code == 200
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200


def test_cors_is_off_unless_asked(face_run: Path):
    origin = {"Origin": "https://example.org"}
    with _client(face_run) as c:
        assert "access-control-allow-origin" not in c.get("/v1/model", headers=origin).headers
    with _client(face_run, cors_origins=["https://example.org"]) as c:
        assert c.get("/v1/model", headers=origin).headers["access-control-allow-origin"] == "https://example.org"


class _Slow:
    """A predictor whose model takes ``delay`` seconds per call and counts the captures of each call."""

    def __init__(self, run: Path, delay: float):
        self.p, self.delay, self.calls = mfas.load(run), delay, []

    def __getattr__(self, name):
        return getattr(self.p, name)

    def score_inputs(self, items):
        time.sleep(self.delay)
        self.calls.append(len(items))
        return self.p.score_inputs(items)


def _post_many(c: TestClient, n: int, body: dict) -> list:
    out = [None] * n

    def go(i):
        out[i] = c.post("/v1/predict", **body)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
        time.sleep(0.02)
    for t in threads:
        t.join()
    return out


def test_a_full_queue_answers_503_with_retry_after_and_a_slow_model_504(mm_run: Path):
    img = {"files": {"rgb": ("r.png", _png(np.zeros((32, 32, 3), np.uint8)), "image/png")}}
    slow = _Slow(mm_run, 0.6)
    with TestClient(create_app(ServeSettings(run=mm_run, queue_size=1), predictor=slow)) as c:
        codes = sorted(r.status_code for r in _post_many(c, 3, img))
        assert codes[0] == 200 and codes[-1] == 503
        busy = next(r for r in _post_many(c, 2, img) if r.status_code == 503)
        assert busy.headers["retry-after"] == "1" and busy.json()["error"]["code"] == "busy"
    with TestClient(create_app(ServeSettings(run=mm_run, timeout_s=0.2), predictor=_Slow(mm_run, 0.6))) as c:
        r = c.post("/v1/predict", **img)
        assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"


def test_micro_batching_scores_several_requests_in_one_call_with_the_same_scores(mm_run: Path):
    rng = np.random.default_rng(1)
    imgs = [rng.integers(0, 256, (32, 32, 3), np.uint8) for _ in range(4)]
    p = mfas.load(mm_run)
    slow = _Slow(mm_run, 0.3)
    with TestClient(create_app(ServeSettings(run=mm_run, max_batch=4, max_wait_ms=200), predictor=slow)) as c:
        out = [None] * 4

        def go(i):
            out[i] = c.post("/v1/predict", files={"rgb": ("r.png", _png(imgs[i]), "image/png")}).json()

        threads = [threading.Thread(target=go, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert max(slow.calls) > 1  # at least two requests shared a model call
    for i, r in enumerate(out):
        assert abs(r["score"] - p.predict(rgb=imgs[i]).score) < 1e-6


def test_metrics_count_requests_decisions_and_latency(face_run: Path):
    with _client(face_run) as c:
        grey = _png(np.full((64, 64, 3), 128, np.uint8))
        for _ in range(3):
            c.post("/v1/predict", files={"rgb": ("g.png", grey, "image/png")})
        c.post("/v1/predict", files={"rgb": ("x.txt", b"hi", "text/plain")})
        text = c.get("/metrics").text
    assert 'mfas_requests_total{path="/v1/predict",status="200"} 3' in text
    assert 'mfas_requests_total{path="/v1/predict",status="415"} 1' in text
    assert 'mfas_decisions_total{decision="no_face"} 3' in text
    assert "mfas_predict_seconds_count 4" in text and 'mfas_predict_seconds_bucket{le="+Inf"} 4' in text
    assert "mfas_queue_depth 0" in text


def test_captures_are_written_only_when_asked(face_run: Path, tmp_path: Path):
    grey = _png(np.full((64, 64, 3), 128, np.uint8))
    with _client(face_run, log_captures=tmp_path / "caps") as c:
        rid = c.post("/v1/predict", files={"rgb": ("g.png", grey, "image/png")}).json()["request_id"]
    assert (tmp_path / "caps" / rid / "rgb.png").read_bytes() == grey
    assert ServeSettings(run=face_run).log_captures is None


def test_the_serve_command_checks_its_options(face_run: Path, tmp_path: Path):
    from typer.testing import CliRunner

    from mfas.cli.main import app

    r = CliRunner().invoke(app, ["serve", "--help"])
    assert r.exit_code == 0 and "--max-upload-bytes" in r.output
    r = CliRunner().invoke(app, ["serve", str(face_run), "--max-batch", "0"])
    assert r.exit_code == 2 and "max-batch" in r.output
    (tmp_path / "key").write_text("short")
    r = CliRunner().invoke(app, ["serve", str(face_run), "--api-key-file", str(tmp_path / "key")])
    assert r.exit_code == 2 and "at least 8" in r.output
