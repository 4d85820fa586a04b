"""mfas: multimodal (RGB + depth + infrared) face anti-spoofing.

Conventions: label 1 = bona fide, score = P(bona fide); modalities ``rgb``, ``depth``, ``ir``.
"""

__version__ = "0.1.0"
