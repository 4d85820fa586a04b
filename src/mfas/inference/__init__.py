"""Inference from a bundle: reading and checking it, preprocessing captures as the training data was made,
face detection, the torch and ONNX backends, and the predictor. Imports neither Lightning nor the training
engine; torch only for the torch backend. ``pip install 'mfas[infer]'`` installs what the ONNX backend needs.

    from mfas.inference import load
    p = load("runs/my-run", backend="onnx")
    p.predict(rgb="frame.jpg")
"""

from __future__ import annotations

from typing import Any

_NAMES = {"load": "predictor", "Predictor": "predictor", "Prediction": "predictor", "read_bundle_meta": "bundle",
          "BACKENDS": "backends"}
__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        import importlib

        return getattr(importlib.import_module(f"mfas.inference.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'mfas.inference' has no attribute {name!r}")
