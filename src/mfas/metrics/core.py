"""Threshold-free and fixed-threshold PAD error rates (ISO/IEC 30107-3 vocabulary).

Conventions (docs/metrics.md): ``label = 1`` is bona fide, ``label = 0`` an attack; a score is the
probability of bona fide, and a presentation is *accepted as bona fide* when ``score >= threshold``.

* APCER (per species) = attacks of that species accepted / attacks of that species;
  reported APCER = maximum over species (ISO); ``apcer_pooled`` pools all attacks.
* BPCER = bona fide presentations rejected / bona fide presentations.
* The ROC puts bona fide as the positive class: FPR = APCER_pooled, TPR = 1 - BPCER.

The reported metrics (HTER, ACER, ... and their keys) are listed once in :mod:`mfas.metrics.definitions`.

Everything is computed from one sort of the scores, so cost is O(n log n).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mfas.errors import MetricError

POOLED = "attack"


def check_scores(labels: object, scores: object) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert ``labels`` (0/1) and ``scores`` (finite floats) to 1-D arrays."""
    y = np.asarray(labels)
    try:
        s = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise MetricError(f"scores must be numbers (P(bona fide)), got {str(e).splitlines()[0]}") from None
    if y.ndim != 1 or s.ndim != 1:
        raise MetricError(f"labels and scores must be 1-D, got shapes {y.shape} and {s.shape}")
    if y.shape != s.shape:
        raise MetricError(f"labels ({y.size}) and scores ({s.size}) differ in length")
    if y.size and not np.isin(y, (0, 1)).all():
        bad = y[~np.isin(y, (0, 1))][0]
        raise MetricError(f"labels must be 1 (bona fide) or 0 (attack), found {getattr(bad, 'item', lambda: bad)()!r}")
    if not np.isfinite(s).all():
        raise MetricError(f"{int((~np.isfinite(s)).sum())} score(s) are NaN or infinite")
    return y.astype(np.int8), s


def require_both_classes(y: np.ndarray, what: str = "this metric") -> tuple[int, int]:
    """Return (n_bonafide, n_attack); raise a clear error when either is zero."""
    n_bf = int((y == 1).sum())
    n_at = int((y == 0).sum())
    if n_bf == 0 or n_at == 0:
        missing = "bona fide (label 1)" if n_bf == 0 else "attack (label 0)"
        raise MetricError(
            f"{what} needs both classes, but the set has no {missing} samples "
            f"({n_bf} bona fide, {n_at} attacks)"
        )
    return n_bf, n_at


@dataclass(frozen=True)
class ErrorCurve:
    """Error rates at every distinct operating point, thresholds ascending.

    ``thresholds[k]`` is a score value; at it, samples with ``score >= thresholds[k]`` are
    accepted. The last threshold lies just above the highest score (everything rejected).
    """

    thresholds: np.ndarray  # (K,)
    apcer: np.ndarray  # (K,) pooled APCER (FPR with bona fide positive); non-increasing
    bpcer: np.ndarray  # (K,) BPCER (FNR); non-decreasing

    @property
    def fpr(self) -> np.ndarray:
        return self.apcer

    @property
    def tpr(self) -> np.ndarray:
        return 1.0 - self.bpcer


def _grid(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct sorted scores plus one threshold above the maximum, and each score's index."""
    uniq, inverse = np.unique(s, return_inverse=True)
    top = np.nextafter(uniq[-1], np.inf) if uniq.size else 1.0
    return np.append(uniq, top), inverse


def _below_counts(inverse: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    """For each of ``k`` grid thresholds, how many masked samples score strictly below it."""
    per_value = np.bincount(inverse[mask], minlength=k - 1)
    return np.concatenate(([0], np.cumsum(per_value)))


def error_curve(labels: object, scores: object) -> ErrorCurve:
    """APCER (pooled) and BPCER at every distinct threshold. Needs both classes."""
    y, s = check_scores(labels, scores)
    n_bf, n_at = require_both_classes(y, "an error curve")
    thr, inv = _grid(s)
    below_bf = _below_counts(inv, y == 1, thr.size)
    below_at = _below_counts(inv, y == 0, thr.size)
    return ErrorCurve(thresholds=thr, apcer=1.0 - below_at / n_at, bpcer=below_bf / n_bf)


def roc_auc(labels: object, scores: object) -> float:
    """Area under the ROC with bona fide as positive (Mann-Whitney U, ties count one half)."""
    y, s = check_scores(labels, scores)
    n_bf, n_at = require_both_classes(y, "AUC")
    _, inv = np.unique(s, return_inverse=True)
    k = int(inv.max()) + 1
    pos = np.bincount(inv[y == 1], minlength=k).astype(np.float64)
    neg = np.bincount(inv[y == 0], minlength=k).astype(np.float64)
    neg_below = np.concatenate(([0.0], np.cumsum(neg)[:-1]))
    return float((pos * (neg_below + 0.5 * neg)).sum() / (n_bf * n_at))


@dataclass(frozen=True)
class EER:
    eer: float
    threshold: float
    apcer: float
    bpcer: float


def eer(labels: object, scores: object) -> EER:
    """Equal error rate: the grid threshold minimising |APCER_pooled - BPCER|.

    EER is reported as the mean of the two rates there, so HTER at this threshold equals the
    EER. Ties on |APCER - BPCER| go to the lower mean error, then to the lower threshold.
    """
    c = error_curve(labels, scores)
    mean = (c.apcer + c.bpcer) / 2.0
    # rounding makes equal gaps compare equal despite float noise, so ties break by rule
    gap = np.round(np.abs(c.apcer - c.bpcer), 12)
    k = int(np.lexsort((c.thresholds, np.round(mean, 12), gap))[0])
    return EER(eer=float(mean[k]), threshold=float(c.thresholds[k]), apcer=float(c.apcer[k]),
               bpcer=float(c.bpcer[k]))


def species_array(pai: object | None, y: np.ndarray) -> np.ndarray:
    """PAI species per sample as a string array; attacks without species pool as ``attack``."""
    if pai is None:
        return np.where(y == 1, "bonafide", POOLED).astype(object)
    p = np.asarray(pai, dtype=object)
    if p.shape != y.shape:
        raise MetricError(f"pai ({p.size}) and labels ({y.size}) differ in length")
    bad = [i for i, v in enumerate(p.tolist()) if not isinstance(v, str) or not v]
    if bad:
        raise MetricError(f"sample {bad[0]}: PAI species must be a non-empty string (e.g. 'print', or "
                          f"'bonafide'), got {p[bad[0]]!r}")
    wrong = (y == 1) & (p != "bonafide") | (y == 0) & (p == "bonafide")
    if wrong.any():
        i = int(np.flatnonzero(wrong)[0])
        raise MetricError(f"sample {i}: label {int(y[i])} contradicts PAI species {p[i]!r}")
    return p


def apcer_per_species(labels: object, scores: object, threshold: float,
                      pai: object | None = None) -> dict[str, float]:
    """APCER of each attack species at ``threshold`` (species sorted by name)."""
    y, s = check_scores(labels, scores)
    p = species_array(pai, y)
    out: dict[str, float] = {}
    for sp in sorted(set(p[y == 0].tolist())):
        m = (y == 0) & (p == sp)
        out[sp] = float((s[m] >= threshold).mean())
    return out


def _species_apcer_curves(y: np.ndarray, s: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grid thresholds and the worst-species APCER at each of them."""
    thr, inv = _grid(s)
    worst = np.zeros(thr.size)
    for sp in set(p[y == 0].tolist()):
        m = (y == 0) & (p == sp)
        worst = np.maximum(worst, 1.0 - _below_counts(inv, m, thr.size) / m.sum())
    return thr, worst


def bpcer_at_apcer(labels: object, scores: object, target: float, pai: object | None = None) -> float:
    """Lowest BPCER over thresholds whose APCER (worst species) is <= ``target``.

    BPCER20 in ISO terms is ``bpcer_at_apcer(..., 0.05)``; BPCER100 is ``0.01``.
    """
    y, s = check_scores(labels, scores)
    n_bf, _ = require_both_classes(y, "BPCER at fixed APCER")
    p = species_array(pai, y)
    thr, worst = _species_apcer_curves(y, s, p)
    # worst-species APCER never rises with the threshold, so the first admissible one is best
    k = int(np.argmax(worst <= target + 1e-12))
    return float((s[y == 1] < thr[k]).sum() / n_bf)


def tpr_at_fpr(labels: object, scores: object, target: float) -> float:
    """Highest TPR (= 1 - BPCER) over thresholds with FPR (= pooled APCER) <= ``target``."""
    c = error_curve(labels, scores)
    ok = c.apcer <= target + 1e-12
    return float(c.tpr[ok].max())


def accuracy_at_bpcer(labels: object, scores: object, target: float) -> float:
    """Accuracy at the highest threshold whose BPCER is <= ``target`` (mmFAS' Acc@BPCER=1%)."""
    y, s = check_scores(labels, scores)
    require_both_classes(y, "accuracy at fixed BPCER")
    c = error_curve(y, s)
    k = int(np.flatnonzero(c.bpcer <= target + 1e-12)[-1])
    t = c.thresholds[k]
    return float(((s >= t) == (y == 1)).mean())
