"""One call that produces every number DESIGN.md asks for, for one scored set."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from mfas.metrics.core import (
    accuracy_at_bpcer,
    bpcer_at_apcer,
    check_scores,
    eer,
    rates_at,
    require_both_classes,
    roc_auc,
    species_array,
    tpr_at_fpr,
)
from mfas.metrics.thresholds import Scores, ThresholdPolicy, choose_threshold


def threshold_free(labels: object, scores: object, pai: object | None = None) -> dict:
    """AUC, EER and the fixed-rate operating points; none of them needs a threshold policy."""
    y, s = check_scores(labels, scores)
    n_bf, n_at = require_both_classes(y, "PAD metrics")
    p = species_array(pai, y)
    e = eer(y, s)
    species, counts = np.unique(p[y == 0].astype(str), return_counts=True)
    return {
        "n_bonafide": n_bf,
        "n_attack": n_at,
        "n_per_species": {str(k): int(v) for k, v in zip(species, counts, strict=True)},
        "auc": roc_auc(y, s),
        "eer": e.eer,
        "eer_threshold": e.threshold,
        "bpcer_at_apcer_1": bpcer_at_apcer(y, s, 0.01, p),
        "bpcer_at_apcer_5": bpcer_at_apcer(y, s, 0.05, p),
        "tpr_at_fpr_1": tpr_at_fpr(y, s, 0.01),
        "acc_at_bpcer_1": accuracy_at_bpcer(y, s, 0.01),
    }


def evaluate_scores(test: Scores, *, val: Scores | None = None,
                    policies: Iterable[str] = ("test_eer", "val_eer")) -> dict:
    """All metrics of ``test = (labels, scores[, pai])`` under each threshold policy.

    Returns ``{"threshold_free": {...}, "policies": {policy: {"threshold": {...}, rates...}}}``.
    A policy that needs validation scores is skipped with a reason when ``val`` is None, so the
    output always says why a block is absent instead of silently dropping it.
    """
    labels, scores, *rest = test
    pai = rest[0] if rest else None
    out: dict = {"threshold_free": threshold_free(labels, scores, pai), "policies": {}, "skipped": {}}
    for text in policies:
        pol = ThresholdPolicy.parse(text)
        if pol.needs_validation and val is None:
            out["skipped"][str(pol)] = "no validation scores"
            continue
        thr = choose_threshold(pol, test=test, val=val)
        block = rates_at(labels, scores, thr.value, pai)
        block["threshold"] = thr.as_dict()
        block["label"] = pol.label
        out["policies"][str(pol)] = block
    return out
