"""Video-level score fusion: frames of one video become one presentation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mfas.errors import MetricError
from mfas.metrics.core import check_scores

METHODS = ("mean", "median", "min", "max")


@dataclass(frozen=True)
class FusedScores:
    video: np.ndarray  # (V,) video ids, sorted
    labels: np.ndarray  # (V,)
    scores: np.ndarray  # (V,)
    pai: np.ndarray | None  # (V,) or None
    n_frames: np.ndarray  # (V,) frames fused into each video


def fuse_videos(video: object, labels: object, scores: object, pai: object | None = None,
                method: str = "mean") -> FusedScores:
    """Fuse frame scores into one score per video with ``mean``, ``median``, ``min`` or ``max``.

    Raises when the frames of one video disagree on label or PAI species.
    """
    if method not in METHODS:
        raise MetricError(f"unknown fusion method {method!r}; use one of {', '.join(METHODS)}")
    y, s = check_scores(labels, scores)
    v = np.asarray(video).astype(str)
    if v.shape != y.shape:
        raise MetricError(f"video ids ({v.size}) and scores ({y.size}) differ in length")
    order = np.argsort(v, kind="stable")
    v, y, s = v[order], y[order], s[order]
    p = None if pai is None else np.asarray(pai, dtype=object)[order]
    ids, start, counts = np.unique(v, return_index=True, return_counts=True)
    for name, arr in (("label", y), ("PAI species", p)):
        if arr is None:
            continue
        firsts = np.repeat(arr[start], counts)
        if (firsts != arr).any():
            bad = v[np.flatnonzero(firsts != arr)[0]]
            raise MetricError(f"video {bad!r}: its frames disagree on {name}")
    reduce = {"mean": np.add.reduceat, "min": np.minimum.reduceat, "max": np.maximum.reduceat}
    if method == "median":
        fused = np.array([np.median(s[a:a + n]) for a, n in zip(start, counts, strict=True)])
    elif method == "mean":
        fused = reduce["mean"](s, start) / counts
    else:
        fused = reduce[method](s, start)
    return FusedScores(video=ids, labels=y[start], scores=fused,
                       pai=None if p is None else p[start], n_frames=counts)
