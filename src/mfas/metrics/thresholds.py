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

A new policy is one :func:`register_policy` call (:class:`PolicyKind`); parsing, the paper-compatible label
and which scores it needs follow from it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mfas.errors import MetricError
from mfas.metrics.core import (
    _species_apcer_curves,
    check_scores,
    eer,
    error_curve,
    require_both_classes,
    species_array,
)


@dataclass(frozen=True)
class PolicyKind:
    """One kind of threshold policy: the only place a new policy is added (:func:`register_policy`).

    ``source``: which scores choose the threshold: ``test`` (paper-compatible: looks at the test labels),
    ``val`` (the sources' validation data) or ``fixed`` (none). ``arg``: ``None`` (no argument), ``rate``
    (a number in [0, 1]) or ``number`` (any finite number). ``choose(value, labels, scores, pai)`` returns
    the threshold (``labels``/``scores``/``pai`` are None for ``fixed``).
    """

    name: str
    source: str
    arg: str | None
    choose: Callable[..., float]
    help: str


POLICY_KINDS: dict[str, PolicyKind] = {}


def register_policy(kind: PolicyKind) -> PolicyKind:
    if kind.name in POLICY_KINDS:
        raise MetricError(f"threshold policy {kind.name!r} is already registered")
    if kind.source not in ("test", "val", "fixed") or kind.arg not in (None, "rate", "number"):
        raise MetricError(f"threshold policy {kind.name!r}: bad source {kind.source!r} or argument {kind.arg!r}")
    POLICY_KINDS[kind.name] = kind
    return kind


def _eer(value, y, s, p) -> float:
    return eer(y, s).threshold


def _bpcer(value, y, s, p) -> float:
    c = error_curve(y, s)
    return float(c.thresholds[int(np.flatnonzero(c.bpcer <= value + 1e-12)[-1])])


def _apcer(value, y, s, p) -> float:
    y2, s2 = check_scores(y, s)
    require_both_classes(y2, "an APCER-based threshold")
    thr, worst = _species_apcer_curves(y2, s2, species_array(p, y2))
    return float(thr[int(np.argmax(worst <= value + 1e-12))])


register_policy(PolicyKind("test_eer", "test", None, _eer, "EER point of the evaluated (test) set itself"))
register_policy(PolicyKind("val_eer", "val", None, _eer, "EER point of the source-domain validation scores"))
register_policy(PolicyKind("fixed", "fixed", "number", lambda value, *_: float(value), "the number t"))
register_policy(PolicyKind("bpcer", "val", "rate", _bpcer, "highest threshold with validation BPCER <= r"))
register_policy(PolicyKind("apcer", "val", "rate", _apcer, "lowest threshold with validation APCER (max) <= r"))


@dataclass(frozen=True)
class ThresholdPolicy:
    kind: str
    value: float | None = None

    @classmethod
    def parse(cls, text: str | ThresholdPolicy) -> ThresholdPolicy:
        """Parse ``test_eer``, ``val_eer``, ``fixed:0.5``, ``bpcer:0.05``, ``apcer:0.01`` or a registered kind."""
        if isinstance(text, ThresholdPolicy):
            return text
        name, _, arg = str(text).strip().partition(":")
        kind = POLICY_KINDS.get(name)
        if kind is None:
            forms = ", ".join(k.name if k.arg is None else f"{k.name}:<{'t' if k.arg == 'number' else 'rate'}>"
                              for k in POLICY_KINDS.values())
            raise MetricError(f"unknown threshold policy {text!r}; use one of {forms}")
        if kind.arg is None:
            if arg:
                raise MetricError(f"threshold policy {name!r} takes no argument (got {text!r})")
            return cls(name)
        if not arg:
            raise MetricError(f"threshold policy {name!r} needs a value, e.g. {name}:0.05")
        try:
            v = float(arg)
        except ValueError:
            raise MetricError(f"threshold policy {text!r}: {arg!r} is not a number") from None
        if not math.isfinite(v):
            raise MetricError(f"threshold policy {text!r}: the value must be a finite number")
        if kind.arg == "rate" and not 0.0 <= v <= 1.0:
            raise MetricError(f"threshold policy {text!r}: a rate must lie in [0, 1]")
        return cls(name, v)

    def __str__(self) -> str:
        return self.kind if self.value is None else f"{self.kind}:{self.value:g}"

    @property
    def source(self) -> str:
        return POLICY_KINDS[self.kind].source

    @property
    def needs_validation(self) -> bool:
        return self.source == "val"

    @property
    def paper_compatible(self) -> bool:
        """True for a policy that looks at the test labels (an oracle)."""
        return self.source == "test"

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
    kind = POLICY_KINDS[pol.kind]
    if kind.source == "fixed":
        return Threshold(float(kind.choose(pol.value)), str(pol), "fixed", False)
    y, s, p = _unpack(test if kind.source == "test" else val, "test" if kind.source == "test" else "validation")
    return Threshold(float(kind.choose(pol.value, y, s, p)), str(pol), kind.source, kind.source == "test")
