"""The bad-input corpus: metrics and threshold policies (the Python API).

The other parts of the corpus are test_bad_input_data.py (stores, images, SimFAS, dataset adapters),
test_bad_input_engine.py (configs, training runs, resume, locks) and test_bad_input_bundle.py (bundles,
checkpoints, predict, evaluate, report, models). Every case asserts the typed error, that the message names
the culprit, and (for the CLI) exit status 2 without a traceback; see tests/bad_input.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from bad_input import api_error
from mfas.errors import MetricError
from mfas.metrics import (
    apcer_per_species,
    bpcer_at_apcer,
    choose_threshold,
    eer,
    evaluate_scores,
    roc_auc,
)
from mfas.metrics.thresholds import ThresholdPolicy

Y = np.array([0, 1, 0, 1, 0, 1])
S = np.array([0.1, 0.9, 0.3, 0.8, 0.4, 0.7])
ONLY_BF = (np.array([1, 1, 1]), np.array([0.2, 0.5, 0.9]))


@pytest.mark.parametrize("text,culprit", [
    ("fixed:nan", "finite"), ("fixed:inf", "finite"), ("fixed:-inf", "finite"), ("fixed:", "needs a value"),
    ("fixed:abc", "'abc' is not a number"), ("bpcer:1.5", "a rate must lie in [0, 1]"),
    ("apcer:-0.1", "a rate must lie in [0, 1]"), ("test_eer:0.1", "takes no argument"),
    ("val-eer", "unknown threshold policy 'val-eer'"), ("", "unknown threshold policy ''"),
])
def test_bad_threshold_policies(text: str, culprit: str):
    api_error(lambda: ThresholdPolicy.parse(text), culprit, error=MetricError)


@pytest.mark.parametrize("policy", ["apcer:0.1", "bpcer:0.1", "val_eer"])
def test_single_class_validation_is_refused_by_every_policy(policy: str):
    """apcer:r used to return a threshold (with a warning) where bpcer:r raised; now all say why."""
    api_error(lambda: choose_threshold(policy, val=ONLY_BF), "needs both classes", error=MetricError)


def test_a_policy_without_its_scores_names_what_is_missing():
    api_error(lambda: choose_threshold("val_eer", test=(Y, S)), "needs validation scores", error=MetricError)
    api_error(lambda: choose_threshold("test_eer", val=(Y, S)), "needs test scores", error=MetricError)


@pytest.mark.parametrize("pai,culprit", [
    ([None, "bonafide", "print", "bonafide", "print", "bonafide"], "sample 0: PAI species must be a non-empty string"),
    (["print", "bonafide", "", "bonafide", "print", "bonafide"], "sample 2: PAI species must be a non-empty string"),
    (["print", "bonafide", 3, "bonafide", "print", "bonafide"], "sample 2"),
    (["print", "print", "print", "bonafide", "print", "bonafide"], "sample 1: label 1 contradicts PAI species"),
    (["print", "bonafide"], "pai (2) and labels (6) differ in length"),
])
def test_bad_pai_species(pai: list, culprit: str):
    api_error(lambda: evaluate_scores((Y, S, np.array(pai, dtype=object)), policies=["test_eer"]), culprit,
              error=MetricError)
    api_error(lambda: apcer_per_species(Y, S, 0.5, np.array(pai, dtype=object)), culprit, error=MetricError)


@pytest.mark.parametrize("scores,culprit", [
    (["a", "b", "c", "d", "e", "f"], "scores must be numbers"),
    ([0.1, "x", 0.3, 0.4, 0.5, 0.6], "scores must be numbers"),
    ([0.1, np.nan, 0.3, 0.4, 0.5, 0.6], "1 score(s) are NaN or infinite"),
    ([0.1, np.inf, 0.3, 0.4, 0.5, 0.6], "1 score(s) are NaN or infinite"),
    ([0.1, 0.2], "labels (6) and scores (2) differ in length"),
    ([[0.1, 0.2]] * 6, "must be 1-D"),
])
def test_bad_scores(scores: list, culprit: str):
    for fn in (roc_auc, lambda y, s: eer(y, s).eer):
        api_error(lambda fn=fn: fn(Y, np.array(scores, dtype=object)), culprit, error=MetricError)


@pytest.mark.parametrize("labels,culprit", [
    ([0, 1, 2, 1, 0, 1], "labels must be 1 (bona fide) or 0 (attack), found 2"),
    ([0, 1, -1, 1, 0, 1], "found -1"),
    ([1, 1, 1, 1, 1, 1], "no attack (label 0) samples"),
    ([0, 0, 0, 0, 0, 0], "no bona fide (label 1) samples"),
])
def test_bad_labels(labels: list, culprit: str):
    api_error(lambda: roc_auc(np.array(labels), S), culprit, error=MetricError)


def test_bpcer_at_apcer_needs_both_classes():
    api_error(lambda: bpcer_at_apcer(*ONLY_BF, 0.05), "needs both classes", error=MetricError)


# ---- damaged results: mfas report ------------------------------------------------------------------------------

def _fake_run(tmp_path, metrics: str | None = None, scores: str | None = None):
    import json

    run = tmp_path / "run"
    (run / "scores").mkdir(parents=True)
    good = {"protocol": "sim/in/W", "policies": ["test_eer"], "unit": "frame", "average": None,
            "tests": {"W": {"threshold_free": {"auc": 0.9}, "policies": {}}}}
    (run / "metrics.json").write_text(metrics if metrics is not None else json.dumps(good))
    if scores is not None:
        (run / "scores" / "W.csv").write_text(scores)
    return run


@pytest.mark.parametrize("metrics,culprit", [
    ("{not json", "metrics.json: cannot be read as JSON"),
    ("[1, 2]", "metrics.json: not the metrics of an evaluation"),
    ('{"tests": 3, "policies": []}', "metrics.json: not the metrics of an evaluation"),
])
def test_report_names_a_damaged_metrics_file(tmp_path, metrics: str, culprit: str):
    from bad_input import cli_error

    run = _fake_run(tmp_path, metrics=metrics)
    cli_error(["report", run, "--out", tmp_path / "rep"], culprit, untouched=[run])


@pytest.mark.parametrize("row,culprit", [
    (None, "W.csv: not a scores file: no column"),
    ({"label": "1", "score": "abc"}, "a label or score is not a number"),
    ({"label": "7", "score": "0.5"}, "row 2: label must be 0 or 1"),
    ({"label": "1", "score": "nan"}, "row 2: label must be 0 or 1 and score a finite number"),
])
def test_damaged_scores_files_are_named(tmp_path, row: dict | None, culprit: str):
    from mfas.engine.evaluation import SCORE_COLUMNS, read_scores

    path = tmp_path / "W.csv"
    if row is None:
        path.write_text("a,b\n1,2\n")
    else:
        full = {"sample_id": "s1", "dataset": "x", "domain": "W", "pai": "bonafide", "video": "v", **row}
        path.write_text(",".join(SCORE_COLUMNS) + "\n" + ",".join(full[c] for c in SCORE_COLUMNS) + "\n")
    api_error(lambda: read_scores(path), culprit)
