"""Evaluating a model into a run folder: score the selection data and every test set, write the score files,
``metrics.json``, the report and (after training) the inference bundle with its deployable threshold."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
from lightning.fabric.utilities.exceptions import MisconfigurationException

from mfas.engine.config import ExperimentConfig, load_config
from mfas.engine.data import PadDataModule
from mfas.engine.evaluation import protocol_metrics, score_file, score_loader, score_table, write_scores
from mfas.engine.io import atomic_write_json, bundle_paths, check_output_folder, load_bundle, save_bundle
from mfas.engine.resolve import resolve_protocol, resolve_stores, safe_name
from mfas.engine.trainer import make_trainer, quiet
from mfas.errors import ConfigError, DataError, MetricError
from mfas.metrics import choose_threshold
from mfas.models.base import PadModel
from mfas.protocols import Protocol, TestSet, get_protocol, load_protocol_file


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
        write_scores(score_file(out_dir, "select"), val)
    for name, tab in tests.items():
        write_scores(score_file(out_dir, name), tab)
    atomic_write_json(out_dir / "metrics.json", metrics)
    if write_bundle:
        threshold = bundle_threshold(cfg.eval.bundle_policy, val)
        save_bundle(out_dir, model, {"threshold": threshold, "selection": selection,
                                     "protocol": protocol.model_dump(mode="json"), "seed": cfg.seed,
                                     "metrics": summary(metrics), **(bundle_extra or {})},
                    capture=capture_preprocessing(protocol, dm.stores))
    from mfas.engine.report import write_report

    write_report([out_dir], out_dir)
    return metrics


def capture_preprocessing(protocol: Protocol, stores) -> dict:
    """How the training stores made their images from captures: ``store_size`` and ``resize`` (prediction resizes
    a new capture to the stored size first, as the store did, so a file scores as its stored sample does) and
    ``crop`` (the face-crop policy of stores prepared with ``--detect``). Empty when the training stores
    disagree: no single way of preparing a capture would then match them."""
    from mfas.data.images import RESIZE

    seen = set()
    for key in dict.fromkeys(ref.store for ref in protocol.train):
        store = stores.get(key)
        seen.add((tuple(store.image_size), json.dumps(store.crop, sort_keys=True)))
    if len(seen) != 1:
        return {}
    size, crop = next(iter(seen))
    return {"store_size": list(size), "resize": RESIZE, "crop": json.loads(crop)}


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
    """The bundle's short metric summary: AUC, EER and HTER under each policy, per test set."""
    out = {}
    for name, res in metrics["tests"].items():
        if "threshold_free" in res:
            out[name] = {"auc": res["threshold_free"]["auc"], "eer": res["threshold_free"]["eer"],
                         **{f"hter@{p}": b["hter"] for p, b in res["policies"].items()}}
    return out


def evaluate_run(run_dir: Path, protocol_name: str | None = None, modalities: tuple[str, ...] | None = None,
                 stores: dict[str, Path] | None = None, devices: int | str | None = None,
                 strategy: str | None = None, out_dir: Path | None = None,
                 protocol_file: Path | None = None) -> Path:
    """Score a trained run on a protocol (optionally with a test-time modality subset).

    The protocol: ``protocol_name`` (a built-in, one of ``protocol_file``, or one of the run's own
    ``protocol_file``), or the only protocol of ``protocol_file``, or the run's. Only the protocol's selection and
    test data are read: the stores need no train split.

    Checked before anything is scored or written: the run folder (named as given when it is missing, a link loop
    or not a folder), its config, ``out_dir`` (never a run or bundle folder, whose files would be replaced), the
    bundle (:func:`~mfas.engine.io.load_bundle`), the protocol and the devices."""
    quiet()
    run_dir = Path(run_dir)
    bundle_paths(run_dir)
    if not run_dir.is_dir():
        raise DataError(run_dir, "not a run folder (evaluate reads the folder's config.yaml and bundle)")
    cfg = load_config(run_dir / "config.yaml")
    cfg = cfg.model_copy(update={"trainer": cfg.trainer.model_copy(update={"progress": False})})
    if out_dir is not None:
        check_output_folder(out_dir, "--out")
    model, meta = load_bundle(run_dir)
    if cfg.protocol_file:  # the run's own protocols stay known by name
        load_protocol_file(cfg.protocol_file)
    mine = load_protocol_file(protocol_file) if protocol_file is not None else ()
    if protocol_name:
        protocol = get_protocol(protocol_name)
    elif mine:
        if len(mine) > 1:
            raise ConfigError(f"--protocol-file {protocol_file} defines {len(mine)} protocols "
                              f"({', '.join(p.name for p in mine)}); choose one with --protocol")
        protocol = mine[0]
    else:
        protocol = resolve_protocol(cfg)
    if modalities is not None:
        unused = [m for m in modalities if m not in model.modalities]
        if unused:
            raise ConfigError(f"--modalities: the model does not use {', '.join(unused)}; it takes "
                              f"{', '.join(model.modalities)}")
        protocol = protocol.model_copy(update={"tests": tuple(
            TestSet(name=t.name, parts=t.parts, modalities=modalities) for t in protocol.tests)})
    tag = safe_name(protocol.name) + ("" if modalities is None else "@" + "+".join(modalities))
    out = out_dir or run_dir / "eval" / tag
    try:
        trainer = make_trainer(cfg, None, devices=devices, strategy=strategy, log=False)
    except (MisconfigurationException, TypeError, ValueError) as e:
        given = [f"{k} {v!r}" for k, v in (("--devices", devices), ("--strategy", strategy)) if v is not None]
        where = ", ".join(given) or f"{run_dir / 'config.yaml'}: trainer"
        raise ConfigError(f"{where}: {str(e).splitlines()[0]}") from None
    dm = PadDataModule(protocol, resolve_stores(cfg, stores), cfg.data, model.modalities, model.input_size,
                       model.norm_stats, cfg.seed)
    dm.setup("evaluate")
    evaluate_into(trainer, model, dm, protocol, cfg, out, {"policy": "bundle", "from": str(run_dir)},
                  write_bundle=False)
    return out
