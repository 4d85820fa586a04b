"""mfas: multimodal (RGB + depth + infrared) face anti-spoofing.

Conventions: label 1 = bona fide, score = P(bona fide); modalities ``rgb``, ``depth``, ``ir``.
``mfas.load(run)`` returns a predictor for new captures.
"""

__version__ = "0.1.0"


def load(path, device: str = "cpu", threshold: float | None = None, backend: str = "torch"):
    """Load a trained run (``model.safetensors`` + ``model.json``) for inference; see
    :class:`mfas.inference.Predictor`. ``threshold`` replaces the bundle's operating point; ``backend``: ``torch``,
    ``onnx`` or ``onnx-int8`` (after ``mfas export RUN --format onnx``)."""
    from mfas.inference.predictor import load as _load

    return _load(path, device, threshold, backend)
