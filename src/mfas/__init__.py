"""mfas: multimodal (RGB + depth + infrared) face anti-spoofing.

Conventions: label 1 = bona fide, score = P(bona fide); modalities ``rgb``, ``depth``, ``ir``.
``mfas.load(run)`` returns a predictor for new captures.
"""

__version__ = "0.1.0"


def load(path, device: str = "cpu", threshold: float | None = None):
    """Load a trained run (``model.safetensors`` + ``model.json``) for inference; see ``Predictor``.
    ``threshold`` replaces the bundle's operating point."""
    from mfas.engine.predict import load as _load

    return _load(path, device, threshold)
