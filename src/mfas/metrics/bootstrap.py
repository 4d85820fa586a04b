"""Bootstrap confidence intervals for any metric of (labels, scores[, pai])."""

from __future__ import annotations

from collections.abc import Callable, Mapping

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
    return bootstrap_cis({"metric": metric}, labels, scores, pai, groups, n_boot, level, seed)["metric"]


def bootstrap_cis(metrics: Mapping[str, Callable[..., float]], labels: object, scores: object,
                  pai: object | None = None, groups: object | None = None, n_boot: int = 1000,
                  level: float = 0.95, seed: int = 0) -> dict[str, dict[str, float]]:
    """:func:`bootstrap_ci` of several metrics over the same resamples: ``{name: {"value", "low", ...}}``.

    Each metric sees exactly the replicates it would see alone with the same ``seed``.
    """
    y, s = check_scores(labels, scores)
    require_both_classes(y, "a bootstrap interval")
    if not 0 < level < 1:
        raise MetricError(f"level must lie in (0, 1), got {level}")
    if n_boot < 1:
        raise MetricError(f"n_boot must be at least 1, got {n_boot}")
    p = None if pai is None else np.asarray(pai, dtype=object)
    if p is not None and p.shape != y.shape:
        raise MetricError(f"pai ({p.size}) and labels ({y.size}) differ in length")
    if groups is not None and np.asarray(groups).shape != y.shape:
        raise MetricError(f"groups ({np.asarray(groups).size}) and labels ({y.size}) differ in length")
    rng = np.random.default_rng(seed)
    # Each stratum is one class; its units are samples, or whole groups when groups are given. A replicate
    # draws units with replacement; a sample then appears as often as its unit was drawn.
    g = None if groups is None else np.asarray(groups).astype(str)
    strata: list[tuple[np.ndarray, np.ndarray, int]] = []  # (members, unit of each member, number of units)
    for c in (0, 1):
        members = np.flatnonzero(y == c)
        if g is None:
            strata.append((members, np.arange(members.size), members.size))
        else:
            ids, inv = np.unique(g[members], return_inverse=True)
            strata.append((members, inv.ravel(), ids.size))
    # The metrics see each replicate sorted by score (the same multiset as the draw, so the same value), so
    # the sorts inside them run on presorted data, several times faster on large sets.
    order = np.argsort(s, kind="stable")
    ys, ss, ps = y[order], s[order], None if p is None else p[order]

    def call(fn: Callable[..., float], pos: np.ndarray) -> float:
        return float(fn(ys[pos], ss[pos]) if ps is None else fn(ys[pos], ss[pos], ps[pos]))

    stats = {name: np.empty(n_boot) for name in metrics}
    copies = np.empty(y.size, dtype=np.int64)
    for b in range(n_boot):
        for members, unit, k in strata:
            copies[members] = np.bincount(rng.integers(0, k, k), minlength=k)[unit]
        pos = np.repeat(np.arange(y.size), copies[order])
        for name, fn in metrics.items():
            stats[name][b] = call(fn, pos)
    alpha = (1.0 - level) / 2.0
    everything = np.arange(y.size)
    return {name: {"value": call(fn, everything), "low": float(np.quantile(stats[name], alpha)),
                   "high": float(np.quantile(stats[name], 1.0 - alpha)), "level": level, "n_boot": n_boot}
            for name, fn in metrics.items()}
