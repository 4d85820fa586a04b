"""One call that produces every number DESIGN.md asks for, for one scored set.

Which numbers those are is :data:`mfas.metrics.definitions.METRICS`; this module only runs them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from mfas.metrics import definitions
from mfas.metrics.bootstrap import bootstrap_cis
from mfas.metrics.core import apcer_per_species, check_scores, require_both_classes, species_array
from mfas.metrics.thresholds import Scores, ThresholdPolicy, choose_threshold


def threshold_free(labels: object, scores: object, pai: object | None = None) -> dict:
    """Counts, then every ``threshold_free`` metric of the definitions (AUC, EER, fixed-rate operating points)."""
    y, s = check_scores(labels, scores)
    n_bf, n_at = require_both_classes(y, "PAD metrics")
    p = species_array(pai, y)
    species, counts = np.unique(p[y == 0].astype(str), return_counts=True)
    out: dict = {
        "n_bonafide": n_bf,
        "n_attack": n_at,
        "n_per_species": {str(k): int(v) for k, v in zip(species, counts, strict=True)},
    }
    out.update({m.key: float(m.compute(y, s, p)) for m in definitions.select("threshold_free")})
    return out


def rates_at(labels: object, scores: object, threshold: float, pai: object | None = None) -> dict:
    """Every ``policy`` metric of the definitions at ``threshold``, and APCER per species. Needs both classes."""
    y, s = check_scores(labels, scores)
    require_both_classes(y, "error rates")
    p = species_array(pai, y)
    out: dict = {"threshold": float(threshold), "apcer_per_species": apcer_per_species(y, s, threshold, p)}
    out.update({m.key: float(m.compute(y, s, p, threshold)) for m in definitions.select("policy")})
    return out


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


def confidence_intervals(labels: object, scores: object, pai: object | None = None, *,
                         thresholds: Mapping[str, float] | None = None, groups: object | None = None,
                         n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """Bootstrap intervals (:func:`~mfas.metrics.bootstrap.bootstrap_cis`) of every metric with ``ci=True``.

    ``thresholds`` maps each threshold policy to the threshold it applied to this set. A policy that
    takes its threshold from the evaluated set itself (``test_eer``) chooses it again in every resample,
    since that choice is part of what it measures; the others keep their threshold fixed.
    Returns ``{"threshold_free": {key: ci}, "policies": {policy: {key: ci}}}``, each ci as
    ``{"value", "low", "high", "level", "n_boot"}``.
    """
    y, s = check_scores(labels, scores)
    require_both_classes(y, "a bootstrap interval")
    p = species_array(pai, y)
    fns: dict[tuple[str, str | None, str], object] = {}
    for m in definitions.select("threshold_free", ci=True):
        fns[("threshold_free", None, m.key)] = m.compute
    for text, value in (thresholds or {}).items():
        pol = ThresholdPolicy.parse(text)
        for m in definitions.select("policy", ci=True):
            fns[("policies", text, m.key)] = _at_policy(m.compute, pol, float(value))
    res = bootstrap_cis({str(k): fn for k, fn in fns.items()}, y, s, p, groups=groups, n_boot=n_boot,
                        level=level, seed=seed) if fns else {}
    out: dict = {"threshold_free": {}, "policies": {text: {} for text in (thresholds or {})}}
    for (block, pol, key) in fns:
        target = out["threshold_free"] if block == "threshold_free" else out["policies"][pol]
        target[key] = res[str((block, pol, key))]
    return out


def _at_policy(compute, pol: ThresholdPolicy, value: float):
    if pol.paper_compatible:  # the threshold comes from the evaluated set: choose it on each resample
        return lambda y, s, p: compute(y, s, p, choose_threshold(pol, test=(y, s, p)).value)
    return lambda y, s, p: compute(y, s, p, value)
