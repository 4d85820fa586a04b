"""Averages over several test sets (mmFAS' image-weighted column) and over seeds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from mfas.errors import MetricError


def weighted_average(rows: Sequence[Mapping[str, float]], weights: Sequence[float],
                     keys: Sequence[str] | None = None) -> dict[str, float]:
    """Average each metric in ``keys`` over ``rows`` with ``weights`` (e.g. image counts).

    Equal weights give the plain mean used by the MMDG/MMDA average rows.
    """
    if len(rows) != len(weights) or not rows:
        raise MetricError(f"need one weight per row, got {len(rows)} rows and {len(weights)} weights")
    w = np.asarray(weights, dtype=np.float64)
    if (w < 0).any() or w.sum() <= 0:
        raise MetricError("weights must be non-negative and not all zero")
    keys = list(keys) if keys is not None else [k for k in rows[0] if isinstance(rows[0][k], float | int)]
    out = {}
    for k in keys:
        missing = [i for i, r in enumerate(rows) if k not in r]
        if missing:
            raise MetricError(f"metric {k!r} is missing from row {missing[0]}")
        out[k] = float(np.dot(w, [float(r[k]) for r in rows]) / w.sum())
    return out


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0.0 for a single value) over seeds."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        raise MetricError("mean_std of no values")
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0
