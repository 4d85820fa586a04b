"""Scoring protocol targets, score files and metrics.json."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from mfas.engine.data import Part
from mfas.engine.io import atomic_write_text
from mfas.engine.module import gather_scores
from mfas.errors import MetricError
from mfas.metrics import evaluate_scores, threshold_free, weighted_average
from mfas.protocols import Protocol

SCORE_COLUMNS = ("sample_id", "dataset", "domain", "label", "pai", "video", "score")
AVERAGED_KEYS = ("auc", "eer", "tpr_at_fpr_1", "acc_at_bpcer_1", "bpcer_at_apcer_1", "bpcer_at_apcer_5")
POLICY_KEYS = ("hter", "acer", "apcer", "apcer_pooled", "bpcer", "accuracy")


class Scorer(L.LightningModule):
    """Runs a model over a loader on every rank and gathers (position, score) pairs."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self._local: list[tuple[int, float]] = []
        self.result: tuple[np.ndarray, np.ndarray] | None = None

    def on_predict_epoch_start(self) -> None:
        self._local = []

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        s = self.model(batch).score.detach().float().cpu().tolist()
        self._local.extend(zip(batch["position"].tolist(), s, strict=True))

    def on_predict_epoch_end(self) -> None:
        self.result = gather_scores(self._local)


def score_loader(trainer: L.Trainer, model: torch.nn.Module, loader: DataLoader, n: int) -> np.ndarray:
    """Scores of all ``n`` samples of the loader's dataset, in dataset order, gathered from all ranks."""
    scorer = Scorer(model)
    trainer.predict(scorer, dataloaders=loader, return_predictions=False)
    pos, sc = scorer.result
    if pos.size != n or not np.array_equal(pos, np.arange(n)):
        raise RuntimeError(f"scored {pos.size} of {n} samples")
    return sc


def score_table(part: Part, scores: np.ndarray) -> dict[str, np.ndarray]:
    return {"sample_id": part.meta["sample_id"], "dataset": part.meta["dataset"], "domain": part.meta["domain"],
            "label": part.labels, "pai": part.meta["pai"], "video": part.meta["video"], "score": scores}


def write_scores(path: Path, table: dict[str, np.ndarray]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SCORE_COLUMNS)
    for row in zip(*(table[c] for c in SCORE_COLUMNS), strict=True):
        w.writerow([*row[:-1], f"{float(row[-1]):.8f}"])
    atomic_write_text(path, buf.getvalue())


def read_scores(path: Path) -> dict[str, np.ndarray]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    out = {c: np.array([r[c] for r in rows], dtype=object) for c in SCORE_COLUMNS}
    out["label"] = out["label"].astype(np.int64)
    out["score"] = out["score"].astype(np.float64)
    return out


def protocol_metrics(protocol: Protocol, tests: dict[str, dict], val: dict | None, policies: list[str]) -> dict:
    """Metrics of every test set under every policy, and the protocol's average row."""
    val_t = (val["label"], val["score"], val["pai"]) if val is not None else None
    out: dict = {"protocol": protocol.name, "policies": list(policies), "unit": "frame", "tests": {},
                 "average": None}
    if val is not None:
        try:
            out["select"] = threshold_free(val["label"], val["score"], val["pai"])
        except MetricError as e:
            out["select"] = {"error": str(e)}
            val_t = None
    for t in protocol.tests:
        tab = tests[t.name]
        try:
            res = evaluate_scores((tab["label"], tab["score"], tab["pai"]), val=val_t, policies=policies)
        except MetricError as e:
            res = {"error": str(e)}
        res["modalities"] = list(t.modalities)
        res["n"] = int(len(tab["label"]))
        out["tests"][t.name] = res
    rows = [out["tests"][t.name] for t in protocol.averaged_tests if "error" not in out["tests"][t.name]]
    if protocol.average != "none" and len(rows) > 1:
        w = [r["n"] for r in rows] if protocol.average == "weighted" else [1] * len(rows)
        avg = {"kind": protocol.average, "over": [t.name for t in protocol.averaged_tests],
               "threshold_free": weighted_average([r["threshold_free"] for r in rows], w, AVERAGED_KEYS),
               "policies": {}}
        for pol in policies:
            blocks = [r["policies"][pol] for r in rows if pol in r["policies"]]
            if len(blocks) == len(rows):
                avg["policies"][pol] = weighted_average(blocks, w, POLICY_KEYS)
        out["average"] = avg
    return out
