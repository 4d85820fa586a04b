"""The service's page in a real headless Chromium (Playwright): an upload, and live decisions from a fake camera.

Chromium comes from the distribution (`apt-get install chromium`; `.ci/run` installs it); without it, or without
Playwright, these tests skip and say why."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

from mfas.data.faces import CropPolicy  # noqa: E402
from mfas.engine.io import save_bundle  # noqa: E402
from mfas.models import create_model  # noqa: E402
from mfas.serve import ServeSettings, create_app  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_rgb" / "silent-face-samples"
CHROMIUM = os.environ.get("MFAS_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (apt-get install chromium, or "
                                                         "set MFAS_CHROMIUM to its path)")


@pytest.fixture(scope="module")
def face_image() -> Path:
    f = SAMPLES / "image_T1.jpg"
    if not f.exists():
        pytest.skip(f"{f} is not here (../shared/data)")
    return f


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("browser") / "rgb"
    save_bundle(run, create_model("mmfas-rgb-tiny").eval(), {"threshold": {"value": 0.5, "policy": "fixed:0.5"}},
                {"crop": CropPolicy(scale=1.5, size=64).as_dict(), "store_size": [64, 64]})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(ServeSettings(run=run)), host="127.0.0.1", port=port,
                                        log_level="warning"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    assert srv.started, "the server did not start"
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    t.join(10)


def _y4m(image: Path, out: Path, frames: int = 10) -> Path:
    """A YUV4MPEG2 (4:2:0) video of ``image`` for Chromium's fake camera."""
    bgr = cv2.imread(str(image))
    h, w = (bgr.shape[0] // 2) * 2, (bgr.shape[1] // 2) * 2
    yuv = cv2.cvtColor(np.ascontiguousarray(bgr[:h, :w]), cv2.COLOR_BGR2YUV_I420)
    with open(out, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F10:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            f.write(b"FRAME\n" + yuv.tobytes())
    return out


def _browser(p, *args: str):
    return p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", *args])


def test_uploading_an_image_shows_the_decision_score_and_face_box(server: str, face_image: Path):
    with sync_api.sync_playwright() as p:
        browser = _browser(p)
        page = browser.new_page()
        page.goto(server + "/")
        page.wait_for_function("document.getElementById('model').textContent.includes('mmfas-rgb-tiny')")
        page.set_input_files("#rgb", str(face_image))
        page.click("#check")
        page.wait_for_function("document.getElementById('decision').dataset.decision !== ''", timeout=30000)
        decision = page.get_attribute("#decision", "data-decision")
        score = page.text_content("#score")
        latency = page.text_content("#latency")
        error = page.text_content("#error")
        browser.close()
    assert decision in ("bonafide", "attack"), error
    assert 0 <= float(score) <= 1 and "ms" in latency


def test_a_fake_camera_gives_live_decisions(server: str, face_image: Path, tmp_path: Path):
    video = _y4m(face_image, tmp_path / "cam.y4m")
    with sync_api.sync_playwright() as p:
        browser = _browser(p, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                           f"--use-file-for-fake-video-capture={video}")
        page = browser.new_page()
        page.goto(server + "/")
        page.fill("#fps", "4")
        page.click("#camera-start")
        # live: several frames scored one after another
        page.wait_for_function("Number(document.getElementById('decision').dataset.count || 0) >= 3",
                               timeout=30000)
        decision = page.get_attribute("#decision", "data-decision")
        error = page.text_content("#error")
        page.click("#camera-stop")
        browser.close()
    assert decision in ("bonafide", "attack"), error
