"""Bootstrap confidence intervals for any metric of (labels, scores[, pai])."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mfas.errors import MetricError
from mfas.metrics.core import check_scores, require_both_classes


def bootstrap_ci(metric: Callable[..., float], labels: object, scores: object, pai: object | None = None,
                 groups: object | None = None, n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0) -> dict[str, float]:
    """Percentile bootstrap interval of ``metric(labels, scores[, pai])``.

    Resampling is stratified by class (both classes keep their sizes, so every replicate is
    defined). With ``groups`` (video or subject ids) whole groups are resampled, which respects
    the correlation between frames of one video.
    Returns ``{"value", "low", "high", "level", "n_boot"}``.
    """
    y, s = check_scores(labels, scores)
    require_both_classes(y, "a bootstrap interval")
    if not 0 < level < 1:
        raise MetricError(f"level must lie in (0, 1), got {level}")
    p = None if pai is None else np.asarray(pai, dtype=object)
    g = np.arange(y.size) if groups is None else np.asarray(groups).astype(str)
    rng = np.random.default_rng(seed)
    # Each stratum is one class; its units are samples, or whole groups when groups are given.
    strata: list[list[np.ndarray]] = []
    for c in (0, 1):
        members = np.flatnonzero(y == c)
        _, inv = np.unique(g[members], return_inverse=True)
        order = np.argsort(inv, kind="stable")
        strata.append(np.split(members[order], np.flatnonzero(np.diff(inv[order])) + 1))

    def call(idx: np.ndarray) -> float:
        return float(metric(y[idx], s[idx]) if p is None else metric(y[idx], s[idx], p[idx]))

    stats = np.empty(n_boot)
    for b in range(n_boot):
        parts = []
        for units in strata:
            if groups is None:
                flat = np.concatenate(units)
                parts.append(flat[rng.integers(0, flat.size, flat.size)])
            else:
                parts.extend(units[i] for i in rng.integers(0, len(units), len(units)))
        stats[b] = call(np.concatenate(parts))
    alpha = (1.0 - level) / 2.0
    return {"value": call(np.arange(y.size)), "low": float(np.quantile(stats, alpha)),
            "high": float(np.quantile(stats, 1.0 - alpha)), "level": level, "n_boot": n_boot}
