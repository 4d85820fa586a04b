"""The Lightning ``Trainer`` that training runs and evaluations share, its loggers, and the warnings it keeps quiet."""

from __future__ import annotations

import csv
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from mfas.engine.config import ExperimentConfig
from mfas.engine.io import AtomicCheckpointIO


def quiet() -> None:
    """Silence Lightning's advice that does not apply to the engine's loaders and scoring passes."""
    for pat in (".*does not have many workers.*", ".*The number of training batches.*",
                ".*Consider setting `persistent_workers.*", ".*`isinstance\\(treespec, LeafSpec\\)`.*",
                ".*GPU available but not used.*", ".*predict_dataloader.*does not have many workers.*",
                ".*predict returned None.*"):
        warnings.filterwarnings("ignore", message=pat)


@dataclass(frozen=True)
class ResumePoint:
    """Where a resumed run picks up: the last epoch its ``last.ckpt`` completed and the logging step after it."""

    epoch: int
    step: int


def _row_epoch(row: dict) -> float | None:
    try:
        return float(row["epoch"])
    except (KeyError, TypeError, ValueError):
        return None


class _KeptMetricsWriter(ExperimentWriter):
    """Lightning's CSV writer, except that ``metrics.csv`` is never deleted: a resumed run keeps the rows of the epochs
    its checkpoint completed (rows of a later, unfinished epoch are dropped: that epoch runs again) and appends;
    a change of columns rewrites the file atomically."""

    def __init__(self, log_dir: str, keep_upto: int | None):
        self._keep_upto = keep_upto
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:  # Lightning deletes metrics.csv here; we keep it
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = list(reader.fieldnames or [])
        self.metrics_keys = header
        if self._keep_upto is None:
            return
        kept = [r for r in rows if (e := _row_epoch(r)) is None or e <= self._keep_upto]
        if len(kept) != len(rows):
            self._write_all(header, kept)

    def _write_all(self, header: list[str], rows: list[dict]) -> None:
        path = Path(self.metrics_file_path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=header, restval="")
            w.writeheader()
            w.writerows(rows)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        with open(self.metrics_file_path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        self._write_all(fieldnames, rows)


def _after_existing_events(folder: Path) -> None:
    """Wait, if needed, until a new TensorBoard event file will sort after the existing ones. Readers apply the
    resumed file's purge only to files read before it, in name order, and names start with the creation second:
    a run killed and resumed within one second could otherwise show its purged steps twice."""
    stamps = []
    for p in folder.glob("events.out.tfevents.*"):
        part = p.name.split(".")[3] if len(p.name.split(".")) > 3 else ""
        if part.isdigit():
            stamps.append(int(part))
    newest = max(stamps, default=0)
    deadline = time.monotonic() + 2.0
    while int(time.time()) <= newest and time.monotonic() < deadline:
        time.sleep(0.05)


class RunCSVLogger(CSVLogger):
    """``<run>/logs/metrics.csv`` that survives resumes (see :class:`_KeptMetricsWriter`)."""

    def __init__(self, run_dir: Path, resume: ResumePoint | None = None):
        super().__init__(run_dir, name="logs", version="")
        self._keep_upto = resume.epoch if resume is not None else None

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeptMetricsWriter(self.log_dir, self._keep_upto)
        return self._experiment


def make_trainer(cfg: ExperimentConfig, run_dir: Path | None, callbacks: list | None = None,
                 devices: int | str | None = None, strategy: str | None = None, log: bool = True,
                 resume: ResumePoint | None = None) -> L.Trainer:
    """A Trainer from ``cfg.trainer``: CSV and TensorBoard logs under ``run_dir`` (when ``log``), atomic checkpoint
    writes, Lightning's own checkpointing off (runs save ``last.ckpt`` and best weights through callbacks).

    With ``resume`` the logs continue the interrupted run's: ``logs/metrics.csv`` keeps its rows up to the resumed
    epoch and appends, and TensorBoard hides the events the interrupted run wrote after its checkpoint (its new event
    file starts with a purge at ``resume.step``)."""
    t = cfg.trainer
    cbs = list(callbacks or [])
    if t.progress:
        cbs.append(RichProgressBar())
    tb_args = {"purge_step": resume.step} if resume is not None else {}
    if resume is not None and log and run_dir is not None:
        _after_existing_events(Path(run_dir) / "tb")
    loggers = [RunCSVLogger(run_dir, resume), TensorBoardLogger(run_dir, name="tb", version="", **tb_args)] \
        if (log and run_dir is not None) else False
    return L.Trainer(
        max_epochs=t.max_epochs, max_steps=t.max_steps, precision=t.precision, accelerator=t.accelerator,
        devices=devices if devices is not None else t.devices, num_nodes=t.num_nodes,
        strategy=strategy if strategy is not None else t.strategy,
        accumulate_grad_batches=t.accumulate_grad_batches, gradient_clip_val=t.gradient_clip_val,
        deterministic=t.deterministic, log_every_n_steps=t.log_every_n_steps, enable_progress_bar=t.progress,
        callbacks=cbs, logger=loggers, plugins=[AtomicCheckpointIO()], use_distributed_sampler=False,
        reload_dataloaders_every_n_epochs=1, check_val_every_n_epoch=cfg.eval.every_n_epochs,
        num_sanity_val_steps=0, enable_checkpointing=False, enable_model_summary=False,
        default_root_dir=run_dir)
