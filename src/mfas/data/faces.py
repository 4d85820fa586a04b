"""Face detection and the crop policy: from a camera frame to the face crop a model was trained on.

A :class:`CropPolicy` says how a crop is cut around a detected face (box scale, square or not, output side,
eye-level alignment, what happens at the frame's edge, the smallest face and the detector's score threshold). It
is recorded where crops are made (``store.json`` of a store prepared with ``--detect``) and copied into the
bundle (``model.json``, ``preprocessing.crop``), so ``mfas predict`` and ``mfas.load(run).predict`` cut new
frames exactly as the training data was cut.

For RGB-D-IR captures the face is found in RGB and the same crop is cut from the registered depth and IR
images: the modalities of one capture are pixel-aligned (``docs/datasets.md``).

The detector is YuNet (OpenCV Zoo, MIT; shipped in ``mfas/data/assets/yunet`` with its licence) through
``cv2.FaceDetectorYN``.
"""

from __future__ import annotations

import functools
import hashlib
import math
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import cv2
import numpy as np

from mfas.errors import ConfigError, DataError

YUNET = Path(__file__).with_name("assets") / "yunet" / "face_detection_yunet_2026may.onnx"
YUNET_SHA256 = "ebafce4e3c118d6554634be5c27ab333b4c047a9a8c3faf1d7cf93101c22f0f0"
#: detectors a policy may name: name -> (file, sha256)
DETECTORS = {"yunet-2026may": (YUNET, YUNET_SHA256)}
FITS = ("pad", "shift")


@dataclass(frozen=True)
class Face:
    """One detected face, in the pixels of the frame it was found in."""

    box: tuple[float, float, float, float]  # x, y (top left), width, height
    landmarks: tuple[tuple[float, float], ...]  # right eye, left eye, nose tip, right and left mouth corner
    score: float  # the detector's confidence, 0-1

    @property
    def area(self) -> float:
        return self.box[2] * self.box[3]

    def as_dict(self) -> dict:
        return {"box": [round(v, 2) for v in self.box], "score": round(self.score, 4),
                "landmarks": [[round(x, 2), round(y, 2)] for x, y in self.landmarks]}


@dataclass(frozen=True)
class CropPolicy:
    """How a face crop is cut from a frame.

    Attributes:
        scale: the crop's side over the face box's (the longer side when ``square``): 1 is the box, 1.5 keeps
            some hair and background, Silent-Face's MiniFASNet uses 2.7 and 4.0.
        square: cut a square around the box's centre (the box's longer side times ``scale``); otherwise the
            box scaled on each axis, stretched to the square output.
        size: side of the output crop in pixels.
        align: rotate about the box's centre so that the eyes are level (from the landmarks).
        fit: at the frame's edge, ``pad`` fills the crop with zeros (0 is "no value" for depth), ``shift``
            moves the crop window inside the frame, first shrinking it (both sides alike) when it is larger than
            the frame, as Silent-Face does.
        min_face: faces whose box is shorter than this (pixels) are ignored.
        score_threshold: detections below this confidence are ignored.
        detector: the detector's name (:data:`DETECTORS`).
    """

    scale: float = 1.5
    square: bool = True
    size: int = 224
    align: bool = False
    fit: str = "pad"
    min_face: int = 32
    score_threshold: float = 0.6
    detector: str = "yunet-2026may"

    def __post_init__(self) -> None:
        where = "crop policy"
        for name in ("scale", "score_threshold"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ConfigError(f"{where}: {name} must be a number, got {v!r}")
        if not 0.5 <= self.scale <= 8:
            raise ConfigError(f"{where}: scale must be between 0.5 and 8 (times the face box), got {self.scale!r}")
        if not 0 < self.score_threshold < 1:
            raise ConfigError(f"{where}: score_threshold must lie between 0 and 1, got {self.score_threshold!r}")
        for name, lo, hi in (("size", 16, 4096), ("min_face", 1, 4096)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ConfigError(f"{where}: {name} must be a whole number between {lo} and {hi}, got {v!r}")
        for name in ("square", "align"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{where}: {name} must be true or false, got {getattr(self, name)!r}")
        if self.fit not in FITS:
            raise ConfigError(f"{where}: fit must be one of {', '.join(FITS)}, got {self.fit!r}")
        if self.detector not in DETECTORS:
            raise ConfigError(f"{where}: unknown detector {self.detector!r}; known: {', '.join(DETECTORS)}")

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping, where: str = "crop policy") -> CropPolicy:
        """A policy from ``model.json`` / ``store.json`` / a config; a :class:`ConfigError` names a bad key."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"{where}: expected a mapping of crop settings, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        bad = [k for k in d if k not in known]
        if bad:
            raise ConfigError(f"{where}: unknown key {bad[0]!r}; known: {', '.join(sorted(known))}")
        try:
            return cls(**dict(d))
        except ConfigError as e:
            raise ConfigError(f"{where}: {str(e).removeprefix('crop policy: ')}") from None

    # -------------------------------------------------------------------------------------------- geometry

    def window(self, face: Face, frame: tuple[int, int]) -> tuple[float, float, float, float, float]:
        """The crop window ``(cx, cy, width, height, angle)`` in the frame's pixels (``frame`` = (H, W));
        ``angle`` (degrees, counter-clockwise) levels the eyes when ``align``."""
        x, y, w, h = face.box
        cx, cy = x + w / 2, y + h / 2
        if self.square:
            cw = ch = max(w, h) * self.scale
        else:
            cw, ch = w * self.scale, h * self.scale
        angle = 0.0
        if self.align and len(face.landmarks) >= 2:
            (rx, ry), (lx, ly) = face.landmarks[0], face.landmarks[1]
            angle = math.degrees(math.atan2(ly - ry, lx - rx))
        if self.fit == "shift":
            fh, fw = frame
            k = min(1.0, fw / cw, fh / ch)  # shrink both sides alike (keeps the aspect), as Silent-Face does
            cw, ch = cw * k, ch * k
            cx = min(max(cx, cw / 2), fw - cw / 2)
            cy = min(max(cy, ch / 2), fh - ch / 2)
        return cx, cy, cw, ch, angle

    def crop(self, images: Mapping[str, np.ndarray], face: Face) -> dict[str, np.ndarray]:
        """The crop of every image (pixel-aligned modalities of one capture, H x W or H x W x C uint8) around
        ``face``: ``size`` x ``size``, the same geometry for each. Shrinking uses area interpolation and
        enlarging bilinear, as stores resize."""
        shapes = {m: a.shape[:2] for m, a in images.items()}
        if len(set(shapes.values())) > 1:
            sizes = ", ".join(f"{m} {w}x{h}" for m, (h, w) in shapes.items())
            raise DataError("crop", f"the modalities differ in size ({sizes}); one face box cannot apply to all: "
                                    "give pixel-aligned images")
        frame = next(iter(shapes.values()))
        cx, cy, cw, ch, angle = self.window(face, frame)
        return {m: _cut(a, cx, cy, cw, ch, angle, self.size) for m, a in images.items()}


def _cut(img: np.ndarray, cx: float, cy: float, cw: float, ch: float, angle: float, size: int) -> np.ndarray:
    """``img`` in the window (rotated by ``angle`` about its centre), zeros outside the frame, at size x size."""
    if angle:
        # rotate the frame about the window's centre (scale 1, so nothing is lost before the resize below)
        rot = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)
        img = cv2.warpAffine(img, rot, (img.shape[1], img.shape[0]), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    x0, y0 = int(round(cx - cw / 2)), int(round(cy - ch / 2))
    x1, y1 = x0 + max(1, int(round(cw))), y0 + max(1, int(round(ch)))
    h, w = img.shape[:2]
    out = np.zeros((y1 - y0, x1 - x0, *img.shape[2:]), img.dtype)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = img[sy0:sy1, sx0:sx1]
    interp = cv2.INTER_AREA if out.shape[0] > size or out.shape[1] > size else cv2.INTER_LINEAR
    return cv2.resize(out, (size, size), interpolation=interp)


class FaceDetector:
    """YuNet through ``cv2.FaceDetectorYN``: :meth:`detect` returns the faces of an RGB frame, largest first.

    Frames larger than ``max_side`` are searched at that size (YuNet finds faces of about 10 to 300 pixels) and
    the boxes are scaled back. Deterministic: the same frame gives the same faces.
    """

    def __init__(self, policy: CropPolicy | None = None, model: str | Path | None = None, max_side: int = 640):
        self.policy = policy or CropPolicy()
        path = Path(model) if model is not None else DETECTORS[self.policy.detector][0]
        if not path.is_file():
            raise DataError(path, "face detector model not found" + ("" if model is not None else
                                  " (the file ships with mfas: reinstall the package)"))
        if model is None:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest != DETECTORS[self.policy.detector][1]:
                raise DataError(path, f"face detector model has SHA-256 {digest[:12]}..., not the shipped one's")
        self.path, self.max_side = path, int(max_side)
        log = cv2.utils.logging
        level = log.getLogLevel()
        log.setLogLevel(log.LOG_LEVEL_ERROR)  # OpenCV 5 warns on every new network that targets are not supported
        try:
            self._net = cv2.FaceDetectorYN.create(str(path), "", (320, 320), float(self.policy.score_threshold),
                                                  0.3, 50)
            self._net.detect(np.zeros((320, 320, 3), np.uint8))  # the warning comes with the first run
        except cv2.error as e:
            raise DataError(path, f"face detector model cannot be loaded: {str(e).strip().splitlines()[-1]}") from None
        finally:
            log.setLogLevel(level)
        self._lock = threading.Lock()  # the network keeps its input size between calls

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Faces in ``rgb`` (H x W x 3 uint8, RGB order; a grey H x W frame is accepted), largest first, those
        smaller than the policy's ``min_face`` left out."""
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[..., None], 3, axis=2)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise DataError("detect", f"expected an H x W x 3 uint8 RGB frame, got {rgb.dtype} {rgb.shape}")
        h, w = rgb.shape[:2]
        k = min(1.0, self.max_side / max(h, w))
        img = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        if k < 1:
            img = cv2.resize(img, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)
        with self._lock:
            self._net.setInputSize((img.shape[1], img.shape[0]))
            _, found = self._net.detect(img)
        faces = []
        for row in [] if found is None else found:
            v = [float(t) / k for t in row[:14]]
            face = Face(box=(v[0], v[1], v[2], v[3]), landmarks=tuple((v[i], v[i + 1]) for i in range(4, 14, 2)),
                        score=float(row[14]))
            if min(face.box[2], face.box[3]) >= self.policy.min_face:
                faces.append(face)
        return sorted(faces, key=lambda f: (-f.area, f.box[0], f.box[1]))


@functools.lru_cache(maxsize=8)
def detector_for(policy: CropPolicy) -> FaceDetector:
    """One shipped detector per policy and process, reused: decoding workers crop thousands of captures, and
    a detector is thread-safe."""
    return FaceDetector(policy)


def largest_face_crop(images: Mapping[str, np.ndarray], policy: CropPolicy, where: object,
                      detector: FaceDetector | None = None) -> tuple[dict[str, np.ndarray], Face]:
    """Detect in ``images["rgb"]`` and crop every image around the largest face; a :class:`DataError` naming
    ``where`` when there is no RGB image or no face."""
    if "rgb" not in images:
        raise DataError(where, "the crop policy finds faces in RGB, and this capture has no RGB image")
    faces = (detector or FaceDetector(policy)).detect(images["rgb"])
    if not faces:
        raise DataError(where, f"no face found (YuNet, score >= {policy.score_threshold}, box >= "
                               f"{policy.min_face} px)")
    return policy.crop(images, faces[0]), faces[0]
