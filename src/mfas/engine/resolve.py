"""Where a run's inputs and outputs are: its protocol, its stores, its config, and safe file names in it."""

from __future__ import annotations

from pathlib import Path

from mfas.engine.config import ExperimentConfig, load_config
from mfas.errors import MfasError
from mfas.protocols import Protocol, StoreSet, get_protocol, load_datasets_yaml, load_protocol_file


def resolve_protocol(cfg: ExperimentConfig) -> Protocol:
    """The config's protocol, after registering its ``protocol_file`` when it names one."""
    if cfg.protocol_file:
        load_protocol_file(cfg.protocol_file)
    return get_protocol(cfg.protocol)


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
