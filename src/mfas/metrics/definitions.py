"""Every reported metric, defined once.

:data:`METRICS` drives ``metrics.json`` (:func:`mfas.metrics.threshold_free`, :func:`mfas.metrics.rates_at`,
the protocol's average row), the report's tables, the bootstrap intervals, the ``mfas train | evaluate``
summary table and the metric list of ``docs/metrics.md`` (:func:`markdown_table` prints it; a test checks it).
A new metric is one new :class:`Metric` entry in this file; the docs table is regenerated from it.

A metric of the ``threshold_free`` block is ``compute(labels, scores, pai)``; one of the ``policy`` block is
``compute(labels, scores, pai, threshold)`` and is reported once per threshold policy. The arguments are
already validated: ``labels`` int 0/1 with both classes present, ``scores`` finite floats, ``pai`` one species
string per sample (``bonafide`` for label 1; attacks without species pool as ``attack``).

Consumers read the list through :func:`select` and :func:`get` at call time, never by copying it at import,
so a test can add an entry with ``monkeypatch``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mfas.errors import MetricError
from mfas.metrics.core import accuracy_at_bpcer, apcer_per_species, bpcer_at_apcer, eer, roc_auc, tpr_at_fpr

BLOCKS = ("threshold_free", "policy")


@dataclass(frozen=True)
class Metric:
    """One reported number: its ``metrics.json`` key, how it is shown, and how it is computed."""

    key: str  # key in metrics.json (threshold_free block, or each policies[<policy>] block)
    label: str  # column header in the report and the CLI
    block: str  # "threshold_free" or "policy" (computed at each threshold policy's threshold)
    compute: Callable[..., float]  # (labels, scores, pai) or (labels, scores, pai, threshold)
    definition: str  # one line for docs/metrics.md
    better: str | None = "lower"  # "higher" or "lower" is better; None for a value that is not a score
    unit: str = "%"  # "%": a rate in [0, 1] shown x 100; "raw": shown as is
    averaged: bool = True  # enters the protocol's average row (image-weighted or plain mean)
    table: bool = True  # a column of the report's per-run tables
    cli: bool = False  # a column of the summary `mfas train | evaluate` print
    ci: bool = False  # the report adds a bootstrap 95% confidence interval

    def __post_init__(self) -> None:
        if self.block not in BLOCKS:
            raise MetricError(f"metric {self.key!r}: block must be one of {BLOCKS}, got {self.block!r}")
        if self.better not in ("higher", "lower", None):
            raise MetricError(f"metric {self.key!r}: better must be 'higher', 'lower' or None")
        if self.unit not in ("%", "raw"):
            raise MetricError(f"metric {self.key!r}: unit must be '%' or 'raw', got {self.unit!r}")

    @property
    def header(self) -> str:
        """The label with the direction: ``AUC ↑``, ``HTER ↓``."""
        return self.label + {"higher": " ↑", "lower": " ↓", None: ""}[self.better]

    def fmt(self, value: float | None) -> str:
        if value is None:
            return "—"
        return f"{100 * value:.2f}" if self.unit == "%" else f"{value:.4f}"


# -- fixed-threshold rates (accept as bona fide when score >= threshold) -----------------------------------

def _apcer_pooled(y: np.ndarray, s: np.ndarray, p: np.ndarray, t: float) -> float:
    return float((s[y == 0] >= t).mean())


def _bpcer(y: np.ndarray, s: np.ndarray, p: np.ndarray, t: float) -> float:
    return float((s[y == 1] < t).mean())


def _apcer(y: np.ndarray, s: np.ndarray, p: np.ndarray, t: float) -> float:
    return max(apcer_per_species(y, s, t, p).values())


def _accuracy(y: np.ndarray, s: np.ndarray, p: np.ndarray, t: float) -> float:
    return int((s[y == 1] >= t).sum() + (s[y == 0] < t).sum()) / y.size


METRICS: tuple[Metric, ...] = (
    # threshold-free
    Metric("auc", "AUC", "threshold_free", lambda y, s, p: roc_auc(y, s),
           "area under the ROC with bona fide positive (Mann-Whitney; ties count one half); equals "
           "scikit-learn's `roc_auc_score`", better="higher", cli=True, ci=True),
    Metric("eer", "EER", "threshold_free", lambda y, s, p: eer(y, s).eer,
           "on the grid of distinct scores, the threshold minimising abs(APCER_pooled - BPCER); EER is the mean "
           "of the two there, so HTER at that threshold equals the EER. Ties go to the lower mean error, then "
           "the lower threshold"),
    Metric("eer_threshold", "EER threshold", "threshold_free", lambda y, s, p: eer(y, s).threshold,
           "the threshold of the EER point (what `test_eer` applies)", better=None, unit="raw", averaged=False,
           table=False),
    Metric("bpcer_at_apcer_1", "BPCER@APCER=1%", "threshold_free", lambda y, s, p: bpcer_at_apcer(y, s, 0.01, p),
           "lowest BPCER over thresholds whose APCER (worst species) <= 1% (ISO's BPCER100)"),
    Metric("bpcer_at_apcer_5", "BPCER@APCER=5%", "threshold_free", lambda y, s, p: bpcer_at_apcer(y, s, 0.05, p),
           "lowest BPCER over thresholds whose APCER (worst species) <= 5% (ISO's BPCER20)"),
    Metric("tpr_at_fpr_1", "TPR@FPR=1%", "threshold_free", lambda y, s, p: tpr_at_fpr(y, s, 0.01),
           "highest TPR = 1 - BPCER with FPR = APCER_pooled <= 1% (bona fide positive, FLIP's convention)",
           better="higher"),
    Metric("acc_at_bpcer_1", "Acc@BPCER=1%", "threshold_free", lambda y, s, p: accuracy_at_bpcer(y, s, 0.01),
           "accuracy at the highest threshold with BPCER <= 1% (mmFAS' \"Accuracy\")", better="higher"),
    # at each threshold policy's threshold
    Metric("apcer", "APCER (max over PAI)", "policy", _apcer,
           "**maximum** over PAI species of (attacks of that species accepted / attacks of that species) "
           "(ISO/IEC 30107-3)"),
    Metric("apcer_pooled", "APCER (pooled)", "policy", _apcer_pooled,
           "all attacks accepted / all attacks", table=False),
    Metric("bpcer", "BPCER", "policy", _bpcer, "bona fide presentations rejected / bona fide presentations"),
    Metric("acer", "ACER", "policy", lambda y, s, p, t: (_apcer(y, s, p, t) + _bpcer(y, s, p, t)) / 2.0,
           "(APCER + BPCER) / 2 with the worst-species APCER (OULU-NPU/ChaLearn); ACER >= HTER"),
    Metric("hter", "HTER", "policy", lambda y, s, p, t: (_apcer_pooled(y, s, p, t) + _bpcer(y, s, p, t)) / 2.0,
           "(APCER_pooled + BPCER) / 2 — the number the MMDG/MMDA/FLIP papers call HTER", cli=True, ci=True),
    Metric("accuracy", "Accuracy", "policy", _accuracy, "correct decisions / presentations", better="higher",
           table=False),
)


def select(block: str | None = None, **flags: bool) -> list[Metric]:
    """The metrics of ``block`` (all blocks when None) whose flags match, e.g. ``select("policy", ci=True)``."""
    if block is not None and block not in BLOCKS:
        raise MetricError(f"unknown metric block {block!r}; use one of {BLOCKS}")
    return [m for m in METRICS if (block is None or m.block == block)
            and all(getattr(m, k) == v for k, v in flags.items())]


def get(key: str) -> Metric:
    for m in METRICS:
        if m.key == key:
            return m
    raise MetricError(f"unknown metric {key!r}; defined: {', '.join(m.key for m in METRICS)}")


def markdown_table() -> str:
    """The metric list as docs/metrics.md shows it (between its ``metrics:begin``/``end`` markers)."""
    yes = {True: "yes", False: ""}
    rows = ["| key | label | block | better | unit | averaged | report | CLI | 95% CI | definition |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for m in METRICS:
        block = "threshold-free" if m.block == "threshold_free" else "per threshold policy"
        rows.append(f"| `{m.key}` | {m.label} | {block} | {m.better or '—'} | {m.unit} | {yes[m.averaged]} "
                    f"| {yes[m.table]} | {yes[m.cli]} | {yes[m.ci]} | {m.definition} |")
    return "\n".join(rows)
