"""What runs a bundle's model on prepared inputs: torch (the weights) or onnxruntime (an export of them).

A backend maps a batch of :func:`mfas.inference.preprocess.stack` arrays (``rgb`` (N, 3, H, W), ``depth`` and
``ir`` (N, 1, H, W) float32, ``present`` (N, 3) bool) to the (N,) float32 P(bona fide). torch is imported only by
:class:`TorchBackend`, onnxruntime only by :class:`OnnxBackend`.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mfas.errors import ConfigError, DataError
from mfas.fs import first_line, sha256_file

#: the names ``backend=`` takes
BACKENDS = ("torch", "onnx", "onnx-int8")


class Backend(Protocol):
    name: str

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray: ...


class TorchBackend:
    """The bundle's model rebuilt in torch (:func:`mfas.inference.torch_model.load_bundle`)."""

    name = "torch"

    def __init__(self, path: str | Path, device: str = "cpu"):
        try:
            import torch
        except ImportError:
            raise ConfigError("backend 'torch' needs torch (pip install 'mfas[torch]'); an exported bundle runs "
                              "without it: backend='onnx'") from None
        from mfas.inference.torch_model import load_bundle

        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError, ValueError) as e:
            raise ConfigError(f"device {device!r}: {first_line(e) if str(e) else 'not a device'}") from None
        self.model, self.meta = load_bundle(path)
        try:
            self.model.to(self.device).eval()
        except (RuntimeError, AssertionError) as e:  # e.g. cuda on a machine without one
            raise ConfigError(f"device {device!r}: cannot be used ({first_line(e)})") from None
        self._torch = torch
        self._lock = threading.Lock()  # modules with caches (MMDA's text features) are not re-entrant

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        torch = self._torch
        with self._lock, torch.no_grad():
            x = {k: torch.from_numpy(np.ascontiguousarray(v)).to(self.device) for k, v in batch.items()}
            return self.model(x).score.float().cpu().numpy()


class OnnxBackend:
    """An ONNX export of the bundle (``mfas export RUN --format onnx``) run by onnxruntime on the CPU.

    Refused, naming the file: a bundle without the export asked for, an ONNX file whose SHA-256 is not the one
    recorded, an export made from other weights than the bundle's (the model was retrained or recalibrated with
    new weights after exporting)."""

    def __init__(self, path: str | Path, meta: dict, variant: str = "fp32", threads: int | None = None):
        from mfas.inference.bundle import bundle_paths

        mj, _ = bundle_paths(path)
        section = meta.get("onnx") or {}
        self.name = "onnx" if variant == "fp32" else f"onnx-{variant}"
        if variant not in section:
            flag = " --int8" if variant == "int8" else ""
            have = f" (it has: {', '.join(k for k in ('fp32', 'int8') if k in section)})" if section else ""
            raise ConfigError(f"{mj}: no ONNX export ({variant}) in this bundle{have}; make one with: mfas export "
                              f"{mj.parent} --format onnx{flag}")
        if section.get("weights_sha256") != meta["weights_sha256"]:
            raise DataError(mj, "onnx: the export was made from other weights than model.safetensors holds; "
                                f"export again: mfas export {mj.parent} --format onnx")
        entry = section[variant]
        f = mj.parent / entry["file"]
        if not f.is_file():
            raise DataError(f, f"the bundle's ONNX export ({variant}) is missing; export again")
        if sha256_file(f) != entry["sha256"]:
            raise DataError(f, f"does not match the hash in {mj.name} (corrupted or replaced); export again")
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError("backend 'onnx' needs onnxruntime (pip install 'mfas[infer]')") from None
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads or os.environ.get("MFAS_ORT_THREADS", 0) or 0)
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(f), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise DataError(f, f"onnxruntime cannot load it ({first_line(e)})") from None
        # the exporter drops inputs a model never reads (an RGB-only model's depth and ir)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.path = f

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        feed: dict[str, Any] = {k: np.ascontiguousarray(batch[k]) for k in self.inputs}
        (score,) = self.session.run(["score"], feed)
        return np.asarray(score, np.float32).reshape(-1)


def make_backend(name: str, path: str | Path, meta: dict, device: str = "cpu") -> Backend:
    """The backend ``name`` (:data:`BACKENDS`) for the bundle at ``path`` whose checked ``model.json`` is ``meta``."""
    if name == "torch":
        return TorchBackend(path, device)
    if name in ("onnx", "onnx-int8"):
        if device not in ("cpu", None):
            raise ConfigError(f"device {device!r}: the ONNX backends run on the CPU")
        return OnnxBackend(path, meta, "fp32" if name == "onnx" else "int8")
    raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
