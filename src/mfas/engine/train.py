"""Training and evaluation runs: ``runs/<name>/`` as the design notes lay it out."""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, RichProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from mfas.engine.config import ExperimentConfig, dump_config
from mfas.engine.data import PadDataModule
from mfas.engine.evaluation import protocol_metrics, score_loader, score_table, write_scores
from mfas.engine.io import AtomicCheckpointIO, atomic_write_json, atomic_write_text, load_bundle, save_bundle
from mfas.engine.module import PadModule
from mfas.errors import ConfigError, MetricError
from mfas.metrics import choose_threshold
from mfas.models import create_model
from mfas.models.base import PadModel
from mfas.protocols import Protocol, StoreSet, TestSet, get_protocol, load_datasets_yaml, load_protocol_file

SELECTION_LABEL = {"last": "last epoch", "best_source_val": "lowest EER on the sources' validation data",
                   "oracle_target": "lowest EER on the target test sets (paper-compatible oracle)"}


class SaveLast(Callback):
    """``last.ckpt`` at the end of every training epoch (after validation), written atomically."""

    def __init__(self, path: Path):
        self.path = path

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)


def _quiet() -> None:
    for pat in (".*does not have many workers.*", ".*The number of training batches.*",
                ".*Consider setting `persistent_workers.*", ".*`isinstance\\(treespec, LeafSpec\\)`.*",
                ".*GPU available but not used.*", ".*predict_dataloader.*does not have many workers.*",
                ".*predict returned None.*"):
        warnings.filterwarnings("ignore", message=pat)


def resolve_protocol(cfg: ExperimentConfig) -> Protocol:
    if cfg.protocol_file:
        load_protocol_file(cfg.protocol_file)
    return get_protocol(cfg.protocol)


def resolve_stores(cfg: ExperimentConfig, extra: dict[str, Path] | None = None) -> StoreSet:
    paths = dict(load_datasets_yaml(cfg.data.datasets_file))
    paths.update({k: Path(v) for k, v in cfg.data.stores.items()})
    paths.update(extra or {})
    return StoreSet(paths)


def make_trainer(cfg: ExperimentConfig, run_dir: Path | None, callbacks: list | None = None,
                 devices: int | str | None = None, strategy: str | None = None, log: bool = True) -> L.Trainer:
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


def launching_process() -> bool:
    """False in the extra ranks of a distributed run (started by Lightning, torchrun or SLURM), which find the run
    folder that rank 0 has already begun."""
    return all(os.environ.get(k, "0") == "0" for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def steps_per_epoch(cfg: ExperimentConfig, n_train: int, world: int) -> int:
    batches = cfg.data.batches_per_epoch or math.ceil(n_train / cfg.data.batch_size)
    return max(1, math.ceil((batches // world) / cfg.trainer.accumulate_grad_batches))


def train(cfg: ExperimentConfig, resume: bool = False, stores: dict[str, Path] | None = None) -> Path:
    """Train, select, score every target, and write the run. Returns the run folder."""
    _quiet()
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
    trainer = make_trainer(cfg, run_dir, callbacks=[SaveLast(last)])
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
    if cfg.eval.selection != "last" and module.best_state is not None:
        model.load_state_dict(module.best_state)
        selection["epoch"] = module.best_epoch
    elif cfg.eval.selection != "last":
        selection["note"] = "no validation result was available; the last epoch was kept"
    selection["history"] = module.history
    model.eval()
    evaluate_into(trainer, model, dm, protocol, cfg, run_dir, selection, write_bundle=True)
    return run_dir


def evaluate_into(trainer: L.Trainer, model: PadModel, dm: PadDataModule, protocol: Protocol,
                  cfg: ExperimentConfig, out_dir: Path, selection: dict | None, write_bundle: bool,
                  bundle_extra: dict | None = None) -> dict:
    """Score the selection data and every test set, gathered over ranks; rank 0 writes the files."""
    val = None
    if dm.select is not None:
        val = score_table(dm.select, score_loader(trainer, model, dm.loader(dm.select), len(dm.select.labels)))
    tests = {}
    for t in protocol.tests:
        part = dm.eval_part(t)
        tests[t.name] = score_table(part, score_loader(trainer, model, dm.loader(part), len(part.labels)))
    metrics = protocol_metrics(protocol, tests, val, cfg.eval.policies)
    metrics["selection"] = {k: v for k, v in (selection or {}).items() if k != "history"} or None
    if not trainer.is_global_zero:
        return metrics
    (out_dir / "scores").mkdir(parents=True, exist_ok=True)
    if val is not None:
        write_scores(out_dir / "scores" / "select.csv", val)
    for name, tab in tests.items():
        write_scores(out_dir / "scores" / f"{safe_name(name)}.csv", tab)
    atomic_write_json(out_dir / "metrics.json", metrics)
    if write_bundle:
        threshold = bundle_threshold(cfg.eval.bundle_policy, val)
        save_bundle(out_dir, model, {"threshold": threshold, "selection": selection,
                                     "protocol": protocol.model_dump(mode="json"), "seed": cfg.seed,
                                     "metrics": summary(metrics), **(bundle_extra or {})})
    from mfas.engine.report import write_report

    write_report([out_dir], out_dir)
    return metrics


def bundle_threshold(policy: str, val: dict | None) -> dict:
    """The deployable operating point stored in the bundle; never chosen on test data."""
    if policy == "test_eer":
        raise ConfigError("eval.bundle_policy cannot be test_eer: a deployed threshold must not see test labels")
    if val is None:
        t = choose_threshold("fixed:0.5")
        return {**t.as_dict(), "note": "no validation data in the protocol: fixed 0.5"}
    try:
        t = choose_threshold(policy, val=(val["label"], val["score"], val["pai"]))
    except MetricError as e:
        t = choose_threshold("fixed:0.5")
        return {**t.as_dict(), "note": f"{policy} impossible ({e}): fixed 0.5"}
    return t.as_dict()


def summary(metrics: dict) -> dict:
    out = {}
    for name, res in metrics["tests"].items():
        if "threshold_free" in res:
            out[name] = {"auc": res["threshold_free"]["auc"], "eer": res["threshold_free"]["eer"],
                         **{f"hter@{p}": b["hter"] for p, b in res["policies"].items()}}
    return out


def safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def evaluate_run(run_dir: Path, protocol_name: str | None = None, modalities: tuple[str, ...] | None = None,
                 stores: dict[str, Path] | None = None, devices: int | str | None = None,
                 strategy: str | None = None, out_dir: Path | None = None) -> Path:
    """Score a trained run on a protocol (optionally with a test-time modality subset)."""
    _quiet()
    from mfas.engine.config import load_config

    cfg = load_config(run_dir / "config.yaml")
    cfg = cfg.model_copy(update={"trainer": cfg.trainer.model_copy(update={"progress": False})})
    model, meta = load_bundle(run_dir)
    protocol = get_protocol(protocol_name) if protocol_name else resolve_protocol(cfg)
    if modalities is not None:
        protocol = protocol.model_copy(update={"tests": tuple(
            TestSet(name=t.name, parts=t.parts, modalities=modalities) for t in protocol.tests)})
    tag = safe_name(protocol.name) + ("" if modalities is None else "@" + "+".join(modalities))
    out = out_dir or run_dir / "eval" / tag
    dm = PadDataModule(protocol, resolve_stores(cfg, stores), cfg.data, model.modalities, model.input_size,
                       model.norm_stats, cfg.seed)
    dm.setup()
    trainer = make_trainer(cfg, None, devices=devices, strategy=strategy, log=False)
    evaluate_into(trainer, model, dm, protocol, cfg, out, {"policy": "bundle", "from": str(run_dir)},
                  write_bundle=False)
    return out

