"""Training a run: ``runs/<name>/`` as the design notes lay it out. Train, keep ``last.ckpt`` and the best
weights, select, then evaluate into the run folder (:mod:`mfas.engine.run_eval`)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

from mfas.engine.config import ExperimentConfig, dump_config
from mfas.engine.data import PadDataModule
from mfas.engine.io import atomic_write_text, load_weights, save_weights
from mfas.engine.module import PadModule
from mfas.engine.resolve import resolve_protocol, resolve_stores
from mfas.engine.run_eval import evaluate_into
from mfas.engine.trainer import make_trainer, quiet
from mfas.errors import ConfigError, MfasError
from mfas.models import create_model

SELECTION_LABEL = {"last": "last epoch", "best_source_val": "lowest EER on the sources' validation data",
                   "oracle_target": "lowest EER on the target test sets (paper-compatible oracle)"}
BEST_FORMAT = "mfas-best-weights"


def best_weights_path(run_dir: Path, epoch: int) -> Path:
    """Where a run keeps the weights of its best epoch so far (selection policies other than ``last``)."""
    return Path(run_dir) / f"best-epoch{epoch}.safetensors"


class RunCheckpoints(Callback):
    """The run's files for resuming and model selection, in the way of Lightning's ``ModelCheckpoint``:

    - ``last.ckpt`` at the end of every training epoch (after validation), written atomically;
    - ``best-epoch<N>.safetensors``, the weights of the best epoch so far under the selection policy, written
      atomically by rank 0 right after the validation that found it (nothing is written under ``last``).

    The best weights are kept out of ``last.ckpt`` (and out of memory); ``last.ckpt`` records which epoch is
    best. A superseded best file is deleted only after a ``last.ckpt`` naming the new one is on disk, so a run
    killed at any point resumes with the file its checkpoint names. All ranks read the file at the end of
    training: the run folder must be visible to every rank, as for resuming.
    """

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)

    def on_validation_end(self, trainer: L.Trainer, pl_module: PadModule) -> None:
        if trainer.sanity_checking or pl_module.best_epoch != trainer.current_epoch or not trainer.is_global_zero:
            return
        save_weights(best_weights_path(self.run_dir, pl_module.best_epoch), pl_module.model.state_dict(),
                     {"format": BEST_FORMAT, "epoch": str(pl_module.best_epoch),
                      "value": repr(pl_module.best_value), "selection": pl_module.selection})

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: PadModule) -> None:
        trainer.save_checkpoint(self.run_dir / "last.ckpt", weights_only=False)
        self.prune(trainer, pl_module)

    def on_fit_end(self, trainer: L.Trainer, pl_module: PadModule) -> None:
        self.prune(trainer, pl_module)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: PadModule, checkpoint: dict) -> None:
        # checkpoints of earlier versions carried the best state dict itself: move it to its file
        legacy = checkpoint.pop("mfas_best_state", None)
        epoch = int(checkpoint.get("mfas", {}).get("best_epoch", -1))
        if legacy is not None and epoch >= 0 and trainer.is_global_zero:
            save_weights(best_weights_path(self.run_dir, epoch), legacy, {"format": BEST_FORMAT, "epoch": str(epoch)})

    def prune(self, trainer: L.Trainer, pl_module: PadModule) -> None:
        """Delete best-weight files other than the current best's (rank 0)."""
        if not trainer.is_global_zero:
            return
        keep = best_weights_path(self.run_dir, pl_module.best_epoch) if pl_module.best_epoch >= 0 else None
        for p in self.run_dir.glob("best-epoch*.safetensors"):
            if p != keep:
                p.unlink(missing_ok=True)


def launching_process() -> bool:
    """False in the extra ranks of a distributed run (started by Lightning, torchrun or SLURM), which find the run
    folder that rank 0 has already begun."""
    return all(os.environ.get(k, "0") == "0" for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def steps_per_epoch(cfg: ExperimentConfig, n_train: int, world: int) -> int:
    batches = cfg.data.batches_per_epoch or math.ceil(n_train / cfg.data.batch_size)
    return max(1, math.ceil((batches // world) / cfg.trainer.accumulate_grad_batches))


def train(cfg: ExperimentConfig, resume: bool = False, stores: dict[str, Path] | None = None) -> Path:
    """Train, select, score every target, and write the run. Returns the run folder."""
    quiet()
    run_dir = cfg.run_dir
    last = run_dir / "last.ckpt"
    if resume and not last.exists():
        raise ConfigError(f"{run_dir}: nothing to resume (no last.ckpt)")
    if not resume and launching_process() and run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(f"{run_dir}: run folder exists; use --resume {run_dir} or another name")
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    protocol = resolve_protocol(cfg)
    store_set = resolve_stores(cfg, stores)
    model = create_model(cfg.model.name, **cfg.model.overrides)
    extra = protocol.tests if cfg.eval.selection == "oracle_target" else ()
    dm = PadDataModule(protocol, store_set, cfg.data, model.modalities, model.input_size,
                       model.norm_stats, cfg.seed, extra_eval=extra)
    dm.setup()
    trainer = make_trainer(cfg, run_dir, callbacks=[RunCheckpoints(run_dir)])
    world = trainer.world_size
    total = steps_per_epoch(cfg, len(dm.train.labels), world) * cfg.trainer.max_epochs
    if cfg.trainer.max_steps > 0:
        total = min(total, cfg.trainer.max_steps)
    val_names = (["select"] if dm.select is not None else []) + [t.name for t in extra]
    val_labels = ([dm.select.labels] if dm.select is not None else []) + [dm.eval_part(t).labels for t in extra]
    module = PadModule(model, cfg.optim, total, val_names, val_labels, cfg.eval.selection)
    if trainer.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
    trainer.fit(module, datamodule=dm, ckpt_path=str(last) if resume else None)

    selection = {"policy": cfg.eval.selection, "rule": SELECTION_LABEL[cfg.eval.selection],
                 "paper_compatible": cfg.eval.selection == "oracle_target", "epoch": int(trainer.current_epoch) - 1}
    if cfg.eval.selection != "last" and module.best_epoch >= 0:
        state, meta = load_weights(best_weights_path(run_dir, module.best_epoch))
        if meta.get("format") != BEST_FORMAT or meta.get("epoch") != str(module.best_epoch):
            raise MfasError(f"{best_weights_path(run_dir, module.best_epoch)}: not the best weights of epoch "
                            f"{module.best_epoch}")
        model.load_state_dict(state)
        selection["epoch"] = module.best_epoch
    elif cfg.eval.selection != "last":
        selection["note"] = "no validation result was available; the last epoch was kept"
    selection["history"] = module.history
    model.eval()
    evaluate_into(trainer, model, dm, protocol, cfg, run_dir, selection, write_bundle=True)
    return run_dir
