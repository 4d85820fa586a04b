"""Where a run's inputs and outputs are: its protocol, its stores, its config, and safe file names in it."""

from __future__ import annotations

from pathlib import Path

from mfas.engine.config import ExperimentConfig, load_config
from mfas.errors import ConfigError, MfasError, RunError
from mfas.metrics.thresholds import ThresholdPolicy
from mfas.protocols import Protocol, StoreSet, get_protocol, load_datasets_yaml, load_protocol_file


def resolve_protocol(cfg: ExperimentConfig) -> Protocol:
    """The config's protocol, after registering its ``protocol_file`` when it names one."""
    if cfg.protocol_file:
        load_protocol_file(cfg.protocol_file)
    return get_protocol(cfg.protocol)


def check_protocol(cfg: ExperimentConfig, protocol: Protocol) -> None:
    """What a config asks of its protocol, checked before training: a bundle threshold chosen on validation data
    (``eval.bundle_policy`` val_eer, bpcer:r, apcer:r) needs the protocol's ``select`` part."""
    policy = ThresholdPolicy.parse(cfg.eval.bundle_policy)
    if policy.needs_validation and not protocol.select:
        raise ConfigError(f"eval.bundle_policy {policy}: chooses the bundle's threshold on validation data, and "
                          f"protocol {protocol.name!r} has no select part; give the protocol a 'select' list or set "
                          f"eval.bundle_policy=fixed:<t>")


def resume_config(run: Path) -> ExperimentConfig:
    """The config to resume ``run`` with: its ``config.yaml``, with ``output_dir`` and ``name`` pointing at ``run``
    itself (so a moved or renamed run folder resumes where it is, never into another folder)."""
    p = Path(run)
    if p.name in ("", ".", ".."):
        p = p.resolve()
    if not (p / "config.yaml").is_file():
        raise RunError(f"{run}: not a run folder (no config.yaml); nothing to resume")
    cfg = load_config(p / "config.yaml")
    return cfg.model_copy(update={"output_dir": str(p.parent), "name": p.name})


def resolve_stores(cfg: ExperimentConfig, extra: dict[str, Path] | None = None) -> StoreSet:
    """The stores of a config: its datasets file, then its ``data.stores``, then ``extra``, later ones winning."""
    paths = dict(load_datasets_yaml(cfg.data.datasets_file))
    paths.update({k: Path(v) for k, v in cfg.data.stores.items()})
    paths.update(extra or {})
    return StoreSet(paths)


def run_config(run: Path) -> ExperimentConfig:
    """The resolved config a run folder was trained with; a clear error when ``run`` is not a run folder."""
    path = Path(run) / "config.yaml"
    if not path.exists():
        raise MfasError(f"{run}: not a run folder (no config.yaml)")
    return load_config(path)


def run_stores(run: Path, extra: dict[str, Path] | None = None) -> StoreSet:
    """The stores a run was trained with (its config's ``data.stores`` and datasets file), plus ``extra``."""
    return resolve_stores(run_config(run), extra)


def safe_name(name: str) -> str:
    """``name`` as a file name: characters other than letters, digits and ``-_.`` become ``_``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
