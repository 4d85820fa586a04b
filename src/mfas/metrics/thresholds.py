"""Threshold policies: every reported fixed-threshold number names the policy that chose it.

=============  =====================================================  ===================
policy         threshold                                              label
=============  =====================================================  ===================
``test_eer``   EER point of the evaluated (test) set itself           paper-compatible
``val_eer``    EER point of the source-domain validation scores       deployable
``fixed:t``    the number ``t``                                       deployable
``bpcer:r``    highest threshold with validation BPCER <= r           deployable
``apcer:r``    lowest threshold with validation APCER (max) <= r      deployable
=============  =====================================================  ===================
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mfas.errors import MetricError
from mfas.metrics.core import _species_apcer_curves, check_scores, eer, error_curve, species_array

KINDS = ("test_eer", "val_eer", "fixed", "bpcer", "apcer")


@dataclass(frozen=True)
class ThresholdPolicy:
    kind: str
    value: float | None = None

    @classmethod
    def parse(cls, text: str | ThresholdPolicy) -> ThresholdPolicy:
        """Parse ``test_eer``, ``val_eer``, ``fixed:0.5``, ``bpcer:0.05`` or ``apcer:0.01``."""
        if isinstance(text, ThresholdPolicy):
            return text
        name, _, arg = str(text).strip().partition(":")
        if name not in KINDS:
            raise MetricError(f"unknown threshold policy {text!r}; use one of "
                              "test_eer, val_eer, fixed:<t>, bpcer:<rate>, apcer:<rate>")
        if name in ("test_eer", "val_eer"):
            if arg:
                raise MetricError(f"threshold policy {name!r} takes no argument (got {text!r})")
            return cls(name)
        if not arg:
            raise MetricError(f"threshold policy {name!r} needs a value, e.g. {name}:0.05")
        try:
            v = float(arg)
        except ValueError:
            raise MetricError(f"threshold policy {text!r}: {arg!r} is not a number") from None
        if name in ("bpcer", "apcer") and not 0.0 <= v <= 1.0:
            raise MetricError(f"threshold policy {text!r}: a rate must lie in [0, 1]")
        return cls(name, v)

    def __str__(self) -> str:
        return self.kind if self.value is None else f"{self.kind}:{self.value:g}"

    @property
    def needs_validation(self) -> bool:
        return self.kind in ("val_eer", "bpcer", "apcer")

    @property
    def paper_compatible(self) -> bool:
        """True for the oracle policy that looks at the test labels."""
        return self.kind == "test_eer"

    @property
    def label(self) -> str:
        return "paper-compatible (oracle: threshold from test labels)" if self.paper_compatible \
            else "deployable"


@dataclass(frozen=True)
class Threshold:
    """A chosen operating point and where it came from."""

    value: float
    policy: str
    source: str  # "test", "val" or "fixed"
    paper_compatible: bool

    def as_dict(self) -> dict:
        return {"value": self.value, "policy": self.policy, "source": self.source,
                "paper_compatible": self.paper_compatible}


Scores = tuple  # (labels, scores) or (labels, scores, pai)


def _unpack(sc: Scores | None, what: str) -> tuple[np.ndarray, np.ndarray, object | None]:
    if sc is None:
        raise MetricError(f"this threshold policy needs {what} scores, and none were given")
    labels, scores, *rest = sc
    return labels, scores, (rest[0] if rest else None)


def choose_threshold(policy: str | ThresholdPolicy, *, test: Scores | None = None,
                     val: Scores | None = None) -> Threshold:
    """Pick the operating point for ``policy`` from test or validation scores."""
    pol = ThresholdPolicy.parse(policy)
    if pol.kind == "fixed":
        return Threshold(float(pol.value), str(pol), "fixed", False)
    if pol.kind == "test_eer":
        y, s, _ = _unpack(test, "test")
        return Threshold(eer(y, s).threshold, str(pol), "test", True)
    y, s, p = _unpack(val, "validation")
    if pol.kind == "val_eer":
        return Threshold(eer(y, s).threshold, str(pol), "val", False)
    if pol.kind == "bpcer":
        c = error_curve(y, s)
        k = int(np.flatnonzero(c.bpcer <= pol.value + 1e-12)[-1])
        return Threshold(float(c.thresholds[k]), str(pol), "val", False)
    y2, s2 = check_scores(y, s)
    thr, worst = _species_apcer_curves(y2, s2, species_array(p, y2))
    k = int(np.argmax(worst <= pol.value + 1e-12))
    return Threshold(float(thr[k]), str(pol), "val", False)
