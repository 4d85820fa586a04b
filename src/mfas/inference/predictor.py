"""Inference on new captures from a bundle: ``mfas.load(run).predict(rgb=..., depth=..., ir=...)``.

The steps are those that made the training data, read from the bundle's ``preprocessing``: find the face in RGB
and crop every modality around it (the crop policy, when the store was prepared with ``--detect``), resize to the
store's size as the store did, then the evaluation preprocessing (:mod:`mfas.inference.preprocess`); the scores
come from a backend (:mod:`mfas.inference.backends`). Neither Lightning nor the training engine is imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mfas.conventions import MODALITIES
from mfas.data.faces import CropPolicy, Face, FaceDetector
from mfas.data.images import conform, fit_size, max_pixels, read_image
from mfas.errors import ConfigError, DataError, MfasError
from mfas.inference import preprocess
from mfas.inference.backends import Backend, make_backend
from mfas.inference.bundle import read_bundle_meta


@dataclass(frozen=True)
class Prediction:
    score: float | None  # P(bona fide); None when no face was found
    decision: str  # "bonafide" or "attack" at the bundle's threshold, or "no_face"
    threshold: float
    policy: str  # how the threshold was chosen
    modalities: tuple[str, ...]  # the modalities that were used
    face: Face | None = None  # the face that was scored (bundles with a crop policy), in the frame's pixels

    @property
    def is_bonafide(self) -> bool:
        return self.decision == "bonafide"

    def as_dict(self) -> dict:
        return {"score": self.score, "decision": self.decision, "threshold": self.threshold, "policy": self.policy,
                "modalities": list(self.modalities), "face": None if self.face is None else self.face.as_dict()}


class Predictor:
    """A trained model with its preprocessing and operating point. Deterministic, batch-independent.

    ``backend``: ``torch`` (the weights, any torch device), ``onnx`` or ``onnx-int8`` (the bundle's ONNX export,
    onnxruntime on the CPU; torch is not needed)."""

    def __init__(self, path: str | Path, device: str = "cpu", threshold: float | None = None,
                 backend: str = "torch"):
        """``threshold``: decide at this score instead of the bundle's (policy ``given``)."""
        if backend == "torch":
            self.backend: Backend = make_backend("torch", path, {}, device)
            self.meta = self.backend.meta  # every key used below was checked by load_bundle
        else:
            self.meta = read_bundle_meta(path)
            self.backend = make_backend(backend, path, self.meta, device)
        self.path = Path(path)
        pre = self.meta["preprocessing"]
        self.size = tuple(pre["input_size"])
        self.modalities = tuple(pre["modalities"])
        self.norm = {m: (tuple(v["mean"]), tuple(v["std"])) for m, v in pre["norm"].items()}
        self.threshold = float(self.meta["threshold"]["value"])
        self.policy = str(self.meta["threshold"]["policy"])
        if threshold is not None:
            if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
                raise ConfigError(f"threshold must be a score between 0 and 1, got {threshold!r}")
            self.threshold, self.policy = float(threshold), "given"
        self.supports_missing = bool(self.meta["supports_missing"])
        # how the training images were made from captures: crop around the face, then the store's resize
        self.store_size = tuple(pre["store_size"]) if pre.get("store_size") else None
        self.crop = CropPolicy.from_dict(pre["crop"], where="model.json: preprocessing.crop") \
            if pre.get("crop") else None
        self.detector = FaceDetector(self.crop) if self.crop is not None else None

    @property
    def model(self):
        """The torch model (backend ``torch`` only): for explanations and features."""
        if not hasattr(self.backend, "model"):
            raise ConfigError(f"the {self.backend.name} backend has no torch model; load with backend='torch'")
        return self.backend.model

    @property
    def name(self) -> str:
        return str(self.meta["model"]["name"])

    def _inputs(self, rgb: object, depth: object, ir: object) -> dict[str, np.ndarray]:
        """The given images of the model's modalities as checked uint8 arrays of one size."""
        given = {"rgb": rgb, "depth": depth, "ir": ir}
        used = tuple(m for m in MODALITIES if given[m] is not None and m in self.modalities)
        if not used:
            raise MfasError(f"no input for any of the model's modalities ({', '.join(self.modalities)})")
        ignored = [m for m in MODALITIES if given[m] is not None and m not in self.modalities]
        if ignored:
            raise MfasError(f"the model does not use {', '.join(ignored)}; it takes {', '.join(self.modalities)}")
        absent = [m for m in self.modalities if m not in used]
        if absent and not self.supports_missing:
            raise MfasError(f"this model needs {', '.join(self.modalities)}; missing: {', '.join(absent)}")
        arrays = {m: self._load(m, given[m]) for m in used}
        sizes = {a.shape[:2] for a in arrays.values()}
        if len(sizes) > 1:
            sizes_txt = ", ".join(f"{m} {a.shape[1]}x{a.shape[0]}" for m, a in arrays.items())
            raise MfasError(f"the modalities differ in size ({sizes_txt}); give pixel-aligned images of one size")
        return arrays

    def _load(self, m: str, image: object) -> np.ndarray:
        """One modality as a uint8 H x W x 3 (rgb) or H x W array, checked like store inputs."""
        if isinstance(image, str | Path):
            return read_image(image, m)
        arr = np.asarray(image)
        if arr.ndim >= 2 and arr.shape[0] * arr.shape[1] > max_pixels():
            raise DataError(f"{m} array", f"image of {arr.shape[1]}x{arr.shape[0]} exceeds the limit of "
                                          f"{max_pixels():,} pixels")
        return conform(arr, m, f"{m} array")

    def faces(self, rgb: object) -> list[Face]:
        """The faces the bundle's crop policy finds in an RGB frame (path or array), largest first."""
        if self.detector is None:
            raise MfasError("this model has no crop policy (it was trained on a store prepared without --detect): "
                            "it scores whole images as given")
        return self.detector.detect(self._load("rgb", rgb))

    def inputs(self, arrays: dict[str, np.ndarray], face: Face | None = None) -> dict[str, np.ndarray]:
        """The model inputs of one capture (:func:`mfas.inference.preprocess.model_inputs`): cropped around
        ``face`` by the crop policy, resized to the stored size, then the evaluation preprocessing."""
        if face is not None:
            arrays = self.crop.crop(arrays, face)
        if self.store_size is not None:  # as the store resized its images, so a file scores as its stored sample
            arrays = {m: fit_size(a, self.store_size, True, m, m) for m, a in arrays.items()}
        return preprocess.model_inputs(arrays, self.size, self.norm)

    def score_inputs(self, items: Sequence[dict[str, np.ndarray]]) -> np.ndarray:
        """(N,) P(bona fide) of prepared captures (:meth:`inputs`), run as one batch. A capture's score does not
        depend on the others of the batch."""
        return self.backend(preprocess.stack(items))

    def decision(self, score: float) -> str:
        return "bonafide" if score >= self.threshold else "attack"

    def prepare(self, rgb: object = None, depth: object = None, ir: object = None, largest_only: bool = True
                ) -> tuple[list[tuple[dict[str, np.ndarray], Face | None]], tuple[str, ...]]:
        """Checked, detected and cropped captures ready to score: ([(model inputs, face)], modalities used); an
        empty list when the crop policy finds no face. For services that batch captures of several requests."""
        arrays = self._inputs(rgb, depth, ir)
        used = tuple(arrays)
        if self.crop is None:
            return [(self.inputs(arrays), None)], used
        if "rgb" not in arrays:
            raise MfasError("this model crops around the face it finds in RGB (its crop policy); give an RGB image")
        faces = self.detector.detect(arrays["rgb"])
        return [(self.inputs(arrays, f), f) for f in (faces[:1] if largest_only else faces)], used

    def result(self, score: float | None, modalities: tuple[str, ...], face: Face | None = None) -> Prediction:
        if score is None:
            return Prediction(score=None, decision="no_face", threshold=self.threshold, policy=self.policy,
                              modalities=modalities)
        return Prediction(score=float(score), decision=self.decision(score), threshold=self.threshold,
                          policy=self.policy, modalities=modalities, face=face)

    def predict(self, rgb: object = None, depth: object = None, ir: object = None) -> Prediction:
        """Score one presentation. Images: file paths or uint8 arrays (RGB order, H x W x 3 / H x W), pixel-aligned.

        With a crop policy in the bundle the face is found in RGB and the largest one is cropped from every
        modality as the training data was; no face gives ``decision == "no_face"`` (and no score)."""
        results = self.predict_all(rgb=rgb, depth=depth, ir=ir, largest_only=True)
        return results[0]

    def predict_all(self, rgb: object = None, depth: object = None, ir: object = None,
                    largest_only: bool = False) -> list[Prediction]:
        """Score every face of the frame (largest first); one ``no_face`` result when there is none. Without a
        crop policy the whole images are one presentation."""
        items, used = self.prepare(rgb, depth, ir, largest_only)
        if not items:
            return [self.result(None, used)]
        scores = [float(self.score_inputs([x])[0]) for x, _ in items]  # one at a time: the batch-1 path
        return [self.result(s, used, f) for s, (_, f) in zip(scores, items, strict=True)]


def load(path: str | Path, device: str = "cpu", threshold: float | None = None, backend: str = "torch"
         ) -> Predictor:
    """Load a run folder or bundle for inference (``backend``: torch, onnx or onnx-int8). Nothing is unpickled."""
    return Predictor(path, device, threshold, backend)
