"""PAD metrics against hand-computed cases and scikit-learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score, roc_curve

from mfas.errors import MetricError
from mfas.metrics import (
    Metric,
    accuracy_at_bpcer,
    bootstrap_ci,
    bootstrap_cis,
    bpcer_at_apcer,
    choose_threshold,
    confidence_intervals,
    definitions,
    eer,
    error_curve,
    evaluate_scores,
    fuse_videos,
    mean_std,
    rates_at,
    roc_auc,
    threshold_free,
    tpr_at_fpr,
    weighted_average,
)
from mfas.metrics.thresholds import ThresholdPolicy


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_sklearn_on_random_data_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 2000)
    s = np.round(rng.random(2000) + 0.3 * y, 2)  # rounding creates many ties
    assert abs(roc_auc(y, s) - roc_auc_score(y, s)) < 1e-9


def test_error_curve_matches_sklearn_roc_points():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.normal(size=500) + y, 1)
    c = error_curve(y, s)
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    # sklearn lists thresholds descending with an extra +inf point; ours are ascending plus one above max
    ours = {(round(a, 12), round(b, 12)) for a, b in zip(c.fpr, c.tpr, strict=True)}
    theirs = {(round(a, 12), round(b, 12)) for a, b in zip(fpr, tpr, strict=True)}
    assert ours == theirs


def test_hand_computed_rates():
    # bona fide scores 0.9 0.8 0.4 ; attacks 0.7 (print) 0.3 (print) 0.2 (replay) 0.1 (replay)
    y = [1, 1, 1, 0, 0, 0, 0]
    s = [0.9, 0.8, 0.4, 0.7, 0.3, 0.2, 0.1]
    pai = ["bonafide"] * 3 + ["print", "print", "replay", "replay"]
    r = rates_at(y, s, 0.5, pai)
    assert r["bpcer"] == pytest.approx(1 / 3)  # 0.4 rejected
    assert r["apcer_per_species"] == {"print": 0.5, "replay": 0.0}
    assert r["apcer"] == 0.5  # worst species
    assert r["apcer_pooled"] == 0.25
    assert r["hter"] == pytest.approx((0.25 + 1 / 3) / 2)
    assert r["acer"] == pytest.approx((0.5 + 1 / 3) / 2)
    assert r["accuracy"] == pytest.approx(5 / 7)


def test_threshold_is_inclusive():
    r = rates_at([1, 0], [0.5, 0.5], 0.5)
    assert r["bpcer"] == 0.0 and r["apcer"] == 1.0  # score >= threshold is accepted


def test_eer_hand_computed():
    # attacks 0.1 0.2 0.3 0.6 ; bona fide 0.4 0.7 0.8 0.9
    y = [0, 0, 0, 0, 1, 1, 1, 1]
    s = [0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9]
    e = eer(y, s)
    # at t = 0.6: APCER = 1/4 (0.6), BPCER = 1/4 (0.4) -> EER 0.25
    assert e.eer == pytest.approx(0.25)
    assert e.threshold == pytest.approx(0.6)
    assert e.apcer == e.bpcer == pytest.approx(0.25)


def test_eer_with_ties_everywhere():
    e = eer([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5])
    # thresholds: 0.5 accepts all (APCER 1, BPCER 0); above rejects all (APCER 0, BPCER 1)
    assert e.eer == pytest.approx(0.5)


def test_eer_perfect_separation_is_zero():
    e = eer([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert e.eer == 0.0
    assert 0.2 < e.threshold <= 0.8


def test_hter_at_test_eer_equals_eer():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    s = rng.random(300) + 0.5 * y
    out = evaluate_scores((y, s), policies=["test_eer"])
    assert out["policies"]["test_eer"]["hter"] == pytest.approx(out["threshold_free"]["eer"])
    assert out["policies"]["test_eer"]["threshold"]["paper_compatible"] is True


@pytest.mark.parametrize("fn", [roc_auc, lambda y, s: eer(y, s).eer, error_curve,
                                lambda y, s: tpr_at_fpr(y, s, 0.01), lambda y, s: bpcer_at_apcer(y, s, 0.05)])
def test_single_class_raises_clear_error(fn):
    with pytest.raises(MetricError, match="needs both classes.*no attack"):
        fn([1, 1, 1], [0.2, 0.5, 0.9])
    with pytest.raises(MetricError, match="no bona fide"):
        fn([0, 0], [0.2, 0.5])


def test_bad_inputs_raise():
    with pytest.raises(MetricError, match="differ in length"):
        roc_auc([0, 1], [0.1])
    with pytest.raises(MetricError, match="NaN"):
        roc_auc([0, 1], [0.1, float("nan")])
    with pytest.raises(MetricError, match="labels must be 1"):
        roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(MetricError, match="contradicts"):
        rates_at([1, 0], [0.1, 0.2], 0.5, pai=["print", "print"])


def test_bpcer_at_apcer_uses_worst_species():
    # print attacks score high, replay low; bona fide spread
    y = [1] * 4 + [0] * 4
    s = [0.5, 0.6, 0.7, 0.8, 0.75, 0.65, 0.1, 0.2]
    pai = ["bonafide"] * 4 + ["print", "print", "replay", "replay"]
    # APCER(worst) = 0 needs t > 0.75 -> BPCER = 3/4; pooled would be the same here
    assert bpcer_at_apcer(y, s, 0.0, pai) == pytest.approx(0.75)
    # APCER <= 0.5: print 0.5 at t in (0.65, 0.75] -> BPCER = 2/4 (0.5, 0.6 rejected at t = 0.7)
    assert bpcer_at_apcer(y, s, 0.5, pai) == pytest.approx(0.5)
    # pooled APCER <= 0.5 would allow t in (0.2, 0.65] -> BPCER 0; worst-species forbids it
    assert bpcer_at_apcer(y, s, 0.5) == pytest.approx(0.0)


def test_tpr_at_fpr_and_acc_at_bpcer():
    y = [1] * 10 + [0] * 10
    s = list(np.linspace(0.5, 1.0, 10)) + list(np.linspace(0.0, 0.55, 10))
    # the highest attack (0.55) is above the lowest bona fide (0.5) only
    assert tpr_at_fpr(y, s, 0.0) == pytest.approx(0.9)
    assert tpr_at_fpr(y, s, 0.1) == pytest.approx(1.0)
    # BPCER <= 1% -> threshold 0.5 accepts all bona fide and one attack -> 19/20
    assert accuracy_at_bpcer(y, s, 0.01) == pytest.approx(0.95)


def test_threshold_policies():
    val = ([1, 1, 1, 1, 0, 0, 0, 0], [0.6, 0.7, 0.8, 0.9, 0.1, 0.2, 0.3, 0.65])
    t = choose_threshold("val_eer", val=val)
    assert t.source == "val" and not t.paper_compatible
    assert choose_threshold("fixed:0.3").value == 0.3
    # bpcer:0.25 -> highest threshold with at most one of four bona fide rejected -> 0.7
    assert choose_threshold("bpcer:0.25", val=val).value == pytest.approx(0.7)
    # apcer:0 -> lowest threshold accepting no attack -> above 0.65 -> 0.7
    assert choose_threshold("apcer:0", val=val).value == pytest.approx(0.7)
    with pytest.raises(MetricError, match="needs validation"):
        choose_threshold("val_eer")
    for bad in ("eer", "fixed", "bpcer:2", "fixed:abc", "test_eer:1"):
        with pytest.raises(MetricError):
            ThresholdPolicy.parse(bad)
    assert str(ThresholdPolicy.parse("bpcer:0.05")) == "bpcer:0.05"


def test_evaluate_scores_reports_skipped_policies():
    out = evaluate_scores(([1, 0, 1, 0], [0.9, 0.1, 0.8, 0.3]), policies=["test_eer", "val_eer"])
    assert "val_eer" not in out["policies"]
    assert out["skipped"] == {"val_eer": "no validation scores"}


def test_video_fusion():
    video = ["b", "a", "a", "b", "c"]
    y = [0, 1, 1, 0, 1]
    s = [0.2, 0.9, 0.5, 0.4, 0.7]
    f = fuse_videos(video, y, s, method="mean")
    assert f.video.tolist() == ["a", "b", "c"]
    assert f.scores.tolist() == pytest.approx([0.7, 0.3, 0.7])
    assert f.labels.tolist() == [1, 0, 1]
    assert f.n_frames.tolist() == [2, 2, 1]
    assert fuse_videos(video, y, s, method="min").scores.tolist() == pytest.approx([0.5, 0.2, 0.7])
    assert fuse_videos(video, y, s, method="max").scores.tolist() == pytest.approx([0.9, 0.4, 0.7])
    assert fuse_videos(video, y, s, method="median").scores.tolist() == pytest.approx([0.7, 0.3, 0.7])
    with pytest.raises(MetricError, match="disagree on label"):
        fuse_videos(["a", "a"], [1, 0], [0.1, 0.2])
    with pytest.raises(MetricError, match="unknown fusion"):
        fuse_videos(video, y, s, method="vote")


def test_weighted_average_and_mean_std():
    rows = [{"hter": 0.1, "auc": 0.9}, {"hter": 0.3, "auc": 0.7}]
    assert weighted_average(rows, [1, 3])["hter"] == pytest.approx(0.25)
    assert weighted_average(rows, [1, 1], keys=["auc"]) == {"auc": pytest.approx(0.8)}
    with pytest.raises(MetricError):
        weighted_average(rows, [1])
    m, sd = mean_std([1.0, 2.0, 3.0])
    assert (m, sd) == (2.0, pytest.approx(1.0))


def test_bootstrap_interval_brackets_value_and_is_deterministic():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    s = rng.random(400) + 0.4 * y
    a = bootstrap_ci(roc_auc, y, s, n_boot=200, seed=1)
    b = bootstrap_ci(roc_auc, y, s, n_boot=200, seed=1)
    assert a == b
    assert a["low"] < a["value"] < a["high"]
    assert a["high"] - a["low"] < 0.2
    g = bootstrap_ci(roc_auc, y, s, groups=np.arange(400) // 4 * 2 + y, n_boot=100)
    assert g["low"] < g["value"] < g["high"]


def test_bootstrap_cis_share_the_resamples_of_single_intervals():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 300)
    s = rng.random(300) + 0.3 * y
    both = bootstrap_cis({"auc": roc_auc, "eer": lambda a, b: eer(a, b).eer}, y, s, n_boot=100, seed=4)
    assert both["auc"] == bootstrap_ci(roc_auc, y, s, n_boot=100, seed=4)
    assert both["eer"] == bootstrap_ci(lambda a, b: eer(a, b).eer, y, s, n_boot=100, seed=4)


# -- the metric definitions are the one list of reported numbers ------------------------------------------

THRESHOLD_FREE_KEYS = {"n_bonafide", "n_attack", "n_per_species", "auc", "eer", "eer_threshold",
                       "bpcer_at_apcer_1", "bpcer_at_apcer_5", "tpr_at_fpr_1", "acc_at_bpcer_1"}
POLICY_KEYS = {"threshold", "label", "apcer", "apcer_pooled", "apcer_per_species", "bpcer", "hter", "acer",
               "accuracy"}


def toy_metrics() -> tuple[Metric, Metric]:
    """A threshold-free and a per-policy metric that no code names: they must appear by being listed."""
    return (Metric("toy_free", "Toy free", "threshold_free", lambda y, s, p: float(s[y == 1].mean()),
                   "mean bona fide score", better="higher", cli=True, ci=True),
            Metric("toy_rate", "Toy rate", "policy", lambda y, s, p, t: float((s >= t).mean()),
                   "share accepted", cli=True, ci=True))


def test_metrics_json_keys_come_from_the_definitions():
    y = [1, 1, 1, 0, 0, 0, 0]
    s = [0.9, 0.8, 0.4, 0.7, 0.3, 0.2, 0.1]
    out = evaluate_scores((y, s), val=(y, s), policies=["test_eer", "val_eer"])
    assert set(out["threshold_free"]) == THRESHOLD_FREE_KEYS  # what metrics.json readers rely on
    assert set(out["policies"]["val_eer"]) == POLICY_KEYS
    defined = {m.key for m in definitions.select("threshold_free")}
    assert defined == THRESHOLD_FREE_KEYS - {"n_bonafide", "n_attack", "n_per_species"}
    assert {m.key for m in definitions.select("policy")} == POLICY_KEYS - {"threshold", "label", "apcer_per_species"}
    assert len({m.key for m in definitions.METRICS}) == len(definitions.METRICS)


def test_a_new_definition_is_computed_without_other_changes(monkeypatch):
    monkeypatch.setattr(definitions, "METRICS", definitions.METRICS + toy_metrics())
    y = [1, 1, 1, 0, 0, 0, 0]
    s = [0.9, 0.8, 0.4, 0.7, 0.3, 0.2, 0.1]
    out = evaluate_scores((y, s), policies=["fixed:0.5"])
    assert out["threshold_free"]["toy_free"] == pytest.approx(0.7)
    assert out["policies"]["fixed:0.5"]["toy_rate"] == pytest.approx(3 / 7)
    assert rates_at(y, s, 0.35)["toy_rate"] == pytest.approx(4 / 7)
    ci = confidence_intervals(y, s, thresholds={"fixed:0.5": 0.5}, n_boot=50)
    assert set(ci["threshold_free"]) == {"auc", "toy_free"} and set(ci["policies"]["fixed:0.5"]) == {"hter", "toy_rate"}
    with pytest.raises(MetricError, match="block"):
        Metric("bad", "Bad", "sometimes", lambda y, s, p: 0.0, "")


def test_confidence_intervals_bracket_the_point_estimates():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 600)
    s = np.round(rng.random(600) + 0.5 * y, 3)
    pai = np.where(y == 1, "bonafide", np.where(rng.random(600) < 0.5, "print", "replay"))
    val = (y[:200], s[:200] + 0.05, pai[:200])
    out = evaluate_scores((y, s, pai), val=val, policies=["test_eer", "val_eer"])
    thresholds = {p: b["threshold"]["value"] for p, b in out["policies"].items()}
    ci = confidence_intervals(y, s, pai, thresholds=thresholds, n_boot=300, seed=0)
    assert ci["threshold_free"]["auc"]["value"] == out["threshold_free"]["auc"]
    for pol in ("test_eer", "val_eer"):
        c = ci["policies"][pol]["hter"]
        assert c["value"] == pytest.approx(out["policies"][pol]["hter"])  # the interval is about the reported number
        assert c["low"] <= c["value"] <= c["high"] and c["high"] - c["low"] < 0.2
    c = ci["threshold_free"]["auc"]
    assert c["low"] <= c["value"] <= c["high"] and c["level"] == 0.95 and c["n_boot"] == 300
    # video groups: resampling whole videos of correlated frames widens the interval
    video = np.arange(600) // 6 * 2 + y
    s_corr = s[video // 2 * 2] + 0.001 * rng.random(600)  # frames of one video nearly share a score
    narrow = confidence_intervals(y, s_corr, pai, n_boot=300)["threshold_free"]["auc"]
    wide = confidence_intervals(y, s_corr, pai, groups=video, n_boot=300)["threshold_free"]["auc"]
    assert wide["high"] - wide["low"] > narrow["high"] - narrow["low"]


def test_docs_list_every_metric_definition():
    docs = (Path(__file__).resolve().parents[1] / "docs" / "metrics.md").read_text()
    assert definitions.markdown_table() in docs, "regenerate the table with mfas.metrics.definitions.markdown_table()"


def test_threshold_free_matches_direct_calls():
    rng = np.random.default_rng(11)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.random(500) + 0.4 * y, 2)
    tf = threshold_free(y, s)
    assert tf["auc"] == roc_auc(y, s) and tf["eer"] == eer(y, s).eer and tf["eer_threshold"] == eer(y, s).threshold
    assert tf["bpcer_at_apcer_5"] == bpcer_at_apcer(y, s, 0.05) and tf["tpr_at_fpr_1"] == tpr_at_fpr(y, s, 0.01)
    assert tf["acc_at_bpcer_1"] == accuracy_at_bpcer(y, s, 0.01)


scores_strategy = st.lists(st.tuples(st.integers(0, 1), st.floats(0, 1, allow_nan=False)), min_size=2, max_size=60)


@settings(max_examples=60, deadline=None)
@given(scores_strategy)
def test_property_monotone_transform_invariance(pairs):
    y = np.array([p[0] for p in pairs])
    s = np.array([p[1] for p in pairs])
    if len(set(y.tolist())) < 2:
        return
    # strictly increasing on the distinct values (ties stay ties), and far from linear
    t = np.searchsorted(np.unique(s), s).astype(float) ** 3 * 0.5 - 7
    assert roc_auc(y, s) == pytest.approx(roc_auc(y, t), abs=1e-12)
    assert eer(y, s).eer == pytest.approx(eer(y, t).eer, abs=1e-12)
    assert tpr_at_fpr(y, s, 0.05) == pytest.approx(tpr_at_fpr(y, t, 0.05), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(scores_strategy)
def test_property_label_flip_symmetry(pairs):
    y = np.array([p[0] for p in pairs])
    s = np.array([p[1] for p in pairs])
    if len(set(y.tolist())) < 2:
        return
    # flipping labels and negating scores swaps the roles of APCER and BPCER
    assert roc_auc(1 - y, -s) == pytest.approx(roc_auc(y, s), abs=1e-12)
    assert roc_auc(1 - y, s) == pytest.approx(1 - roc_auc(y, s), abs=1e-12)
    assert eer(1 - y, -s).eer == pytest.approx(eer(y, s).eer, abs=1e-12)


def test_scales_n_log_n():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 1_000_000)
    s = rng.random(1_000_000)
    # a quadratic implementation would not finish; this must be a fraction of a second per call
    assert abs(roc_auc(y, s) - 0.5) < 0.01
    assert 0.45 < eer(y, s).eer < 0.55


def test_a_threshold_policy_is_one_registration(monkeypatch: pytest.MonkeyPatch):
    """The extension point of docs/architecture.md: one PolicyKind, and parsing, the label, the scores it needs
    and choose_threshold follow."""
    from mfas.metrics import thresholds as th

    monkeypatch.setattr(th, "POLICY_KINDS", dict(th.POLICY_KINDS))
    th.register_policy(th.PolicyKind("median", "val", None, lambda v, y, s, p: float(np.median(s)), "median"))
    pol = ThresholdPolicy.parse("median")
    assert pol.needs_validation and not pol.paper_compatible and pol.label == "deployable"
    y, s = np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.7, 0.9])
    assert choose_threshold("median", val=(y, s)).value == pytest.approx(0.45)
    with pytest.raises(MetricError, match="already registered"):
        th.register_policy(th.PolicyKind("median", "val", None, lambda *a: 0.0, ""))


@pytest.mark.parametrize("bad", ["fixed:nan", "fixed:inf", "fixed:-inf"])
def test_non_finite_fixed_thresholds_are_refused(bad: str):
    with pytest.raises(MetricError, match="finite"):
        ThresholdPolicy.parse(bad)
