"""The Lightning ``Trainer`` that training runs and evaluations share, and the warnings it keeps quiet."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from mfas.engine.config import ExperimentConfig
from mfas.engine.io import AtomicCheckpointIO


def quiet() -> None:
    """Silence Lightning's advice that does not apply to the engine's loaders and scoring passes."""
    for pat in (".*does not have many workers.*", ".*The number of training batches.*",
                ".*Consider setting `persistent_workers.*", ".*`isinstance\\(treespec, LeafSpec\\)`.*",
                ".*GPU available but not used.*", ".*predict_dataloader.*does not have many workers.*",
                ".*predict returned None.*"):
        warnings.filterwarnings("ignore", message=pat)


def make_trainer(cfg: ExperimentConfig, run_dir: Path | None, callbacks: list | None = None,
                 devices: int | str | None = None, strategy: str | None = None, log: bool = True) -> L.Trainer:
    """A Trainer from ``cfg.trainer``: CSV and TensorBoard logs under ``run_dir`` (when ``log``), atomic checkpoint
    writes, Lightning's own checkpointing off (runs save ``last.ckpt`` and best weights through callbacks)."""
    t = cfg.trainer
    cbs = list(callbacks or [])
    if t.progress:
        cbs.append(RichProgressBar())
    loggers = [CSVLogger(run_dir, name="logs", version=""), TensorBoardLogger(run_dir, name="tb", version="")] \
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
