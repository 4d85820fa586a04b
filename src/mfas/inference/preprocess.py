"""The evaluation preprocessing of a bundle in numpy: images at the stored size -> model inputs.

It is the engine's :func:`mfas.data.transforms.eval_transform` (uint8 -> [0, 1], antialiased bilinear resize to
the model's input size, per-modality ``(x - mean) / std``, absent modalities zero) written without torch, so the
ONNX backend needs no torch and both backends see the same arrays. The resize reproduces torch's
``interpolate(mode="bilinear", antialias=True, align_corners=False)`` on float images (tested to 1e-6).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Mapping, Sequence

import numpy as np

from mfas.conventions import MODALITIES, MODALITY_CHANNELS


@functools.lru_cache(maxsize=64)
def aa_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float64 matrix of torch's antialiased bilinear resize along one axis (half-pixel centres;
    a triangle filter widened by the scale when shrinking, truncated at the borders and renormalised)."""
    f = np.float32  # torch computes the weights of float images in float32; so do we, to match it to 1e-7
    scale = f(n_in) / f(n_out)
    support = scale if scale >= 1 else f(1)
    inv = f(1) / scale if scale >= 1 else f(1)
    w = np.zeros((n_out, n_in), np.float64)
    for i in range(n_out):
        center = scale * (f(i) + f(0.5))
        lo = max(int(center - support + f(0.5)), 0)
        hi = min(int(center + support + f(0.5)), n_in)
        taps = np.arange(lo, hi).astype(np.float32)
        t = np.maximum(f(0), f(1) - np.abs((taps - center + f(0.5)) * inv)).astype(np.float32)
        total = t.sum(dtype=np.float32)
        if total > 0:
            w[i, lo:hi] = t / total
    w.setflags(write=False)
    return w


@functools.lru_cache(maxsize=1)
def _blas():
    """numpy's BLAS libraries (threadpoolctl), or None where threadpoolctl is missing."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController().select(user_api="blas")


def resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Float image(s) ``(..., H, W)`` resized to ``size`` (H, W) as torch's antialiased bilinear resize does."""
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x.astype(np.float32, copy=False)
    blas = _blas()
    # One BLAS thread: these matmuls are small, and OpenBLAS's threads keep spinning after them, taking the
    # cores from the model that runs next (measured: a 112x112 ResNet call went from 34 to 97 ms on 2 cores).
    # The limit is process-wide for its few microseconds.
    with blas.limit(limits=1) if blas is not None else contextlib.nullcontext():
        out = aa_weights(h, size[0]) @ x.astype(np.float64) @ aa_weights(w, size[1]).T
    return out.astype(np.float32)


def to_chw(a: np.ndarray) -> np.ndarray:
    """A uint8 ``H x W x 3`` or ``H x W`` image as float32 ``C x H x W`` in [0, 1]."""
    a = a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0)
    return a.astype(np.float32) / np.float32(255.0)


def model_inputs(arrays: Mapping[str, np.ndarray], size: Sequence[int],
                 norm: Mapping[str, tuple[Sequence[float], Sequence[float]]]) -> dict[str, np.ndarray]:
    """One capture's model inputs: ``{m: float32 (C, H, W)}`` for every modality and ``present`` (3,) bool.

    ``arrays``: the given modalities as uint8 images of one size (the stored size); the others are absent and
    zero. ``norm``: ``{m: (mean, std)}`` of the bundle."""
    size = (int(size[0]), int(size[1]))
    out: dict[str, np.ndarray] = {}
    for m in MODALITIES:
        if m in arrays:
            x = resize(to_chw(arrays[m]), size)
            if m in norm:
                mean, std = (np.asarray(v, np.float32).reshape(-1, 1, 1) for v in norm[m])
                x = (x - mean) / std
            out[m] = np.ascontiguousarray(x, np.float32)
        else:
            out[m] = np.zeros((MODALITY_CHANNELS[m], *size), np.float32)
    out["present"] = np.array([m in arrays for m in MODALITIES])
    return out


def stack(items: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Captures of :func:`model_inputs` as one batch: ``{m: (N, C, H, W)}``, ``present`` (N, 3)."""
    if not items:
        raise ValueError("no captures to stack")
    return {k: np.stack([it[k] for it in items]) for k in (*MODALITIES, "present")}


def input_bytes(size: Sequence[int]) -> int:
    """Bytes of one capture's model inputs (for sizing batches)."""
    return 4 * math.prod(size) * sum(MODALITY_CHANNELS.values())
