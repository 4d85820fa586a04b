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
from mfas.engine.module import gather_scores, score_batch
from mfas.engine.resolve import safe_name
from mfas.errors import DataError, MetricError
from mfas.metrics import definitions, evaluate_scores, fuse_videos, threshold_free, weighted_average
from mfas.protocols import Protocol

SCORE_COLUMNS = ("sample_id", "dataset", "domain", "label", "pai", "video", "score")


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
        self._local.extend(score_batch(self.model, batch))

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


def score_file(result_dir: Path, test_name: str) -> Path:
    """Where a test set's scores lie: ``scores/<safe name>.csv``, as the evaluation run writes them."""
    return result_dir / "scores" / f"{safe_name(test_name)}.csv"


def read_scores(path: Path) -> dict[str, np.ndarray]:
    """A scores CSV written by :func:`write_scores`; a :class:`DataError` naming the file (and row) when it is
    damaged: not UTF-8 CSV, a missing column, a label that is not 0/1 or a score that is not a finite number."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in SCORE_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(path, f"not a scores file: no column {', '.join(missing)}")
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(path, f"cannot be read as a scores CSV ({str(e).splitlines()[0]})") from None
    out = {c: np.array([r[c] for r in rows], dtype=object) for c in SCORE_COLUMNS}
    try:
        out["label"] = out["label"].astype(np.int64)
        out["score"] = out["score"].astype(np.float64)
    except (TypeError, ValueError) as e:
        raise DataError(path, f"a label or score is not a number ({str(e).splitlines()[0]})") from None
    bad = np.flatnonzero(~np.isin(out["label"], (0, 1)) | ~np.isfinite(out["score"]))
    if bad.size:
        raise DataError(path, f"row {int(bad[0]) + 2}: label must be 0 or 1 and score a finite number")
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
        out["average"] = average_row(rows, protocol.average, [t.name for t in protocol.averaged_tests], policies)
    return out


def average_row(rows: list[dict], kind: str, over: list[str], policies: list[str]) -> dict:
    """The average of test results ``rows`` (each with ``n``): image-weighted (``kind="weighted"``) or plain
    mean, of every metric the definitions mark ``averaged``; a policy enters only when every row has it."""
    w = [r["n"] for r in rows] if kind == "weighted" else [1] * len(rows)
    keys = {b: [m.key for m in definitions.select(b, averaged=True)] for b in definitions.BLOCKS}
    avg = {"kind": kind, "over": list(over),
           "threshold_free": weighted_average([r["threshold_free"] for r in rows], w, keys["threshold_free"]),
           "policies": {}}
    for pol in policies:
        blocks = [r["policies"][pol] for r in rows if pol in r["policies"]]
        if len(blocks) == len(rows):
            avg["policies"][pol] = weighted_average(blocks, w, keys["policy"])
    return avg


def has_videos(table: dict[str, np.ndarray]) -> bool:
    """True when some video id of a score table names more than one frame."""
    v = video_ids(table)
    return v.size > len(set(v.tolist()))


def fuse_table(table: dict[str, np.ndarray], method: str = "mean") -> dict[str, np.ndarray]:
    """One row per video (sorted by id): frame scores fused by ``method`` (:func:`mfas.metrics.fuse_videos`);
    a frame without a video id is its own video. ``sample_id`` becomes the video id; adds ``n_frames``."""
    ids = video_ids(table)
    f = fuse_videos(ids, table["label"], table["score"], table["pai"], method)
    _, first = np.unique(ids, return_index=True)  # the first frame of each video, in sorted-id order
    return {"sample_id": f.video.astype(object), "dataset": table["dataset"][first],
            "domain": table["domain"][first], "label": f.labels.astype(np.int64), "pai": f.pai,
            "video": f.video.astype(object), "score": f.scores, "n_frames": f.n_frames}


def video_ids(table: dict[str, np.ndarray]) -> np.ndarray:
    """The video id of each row of a score table; a row without one is its own video (its sample id)."""
    v = np.asarray(table["video"], dtype=object).astype(str)
    return np.where(v == "", np.asarray(table["sample_id"], dtype=object).astype(str), v)
