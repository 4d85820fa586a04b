"""Resolve a protocol's store keys to opened stores and sample indices."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import yaml

from mfas.data.store import Store
from mfas.errors import ConfigError
from mfas.protocols.core import DataRef, Protocol

DATASETS_ENV = "MFAS_DATASETS"


def load_datasets_yaml(path: str | Path | None = None) -> dict[str, Path]:
    """Read ``datasets.yaml`` (``stores: {KEY: PATH}``); relative paths are relative to the file.

    Without a path: ``$MFAS_DATASETS``, then ``./datasets.yaml``; neither existing gives ``{}``.
    """
    if path is None:
        path = os.environ.get(DATASETS_ENV) or ("datasets.yaml" if Path("datasets.yaml").exists() else None)
        if path is None:
            return {}
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: no such datasets file")
    data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict) or set(data) - {"stores"}:
        raise ConfigError(f"{p}: expected a mapping with one key 'stores: {{KEY: PATH}}'")
    stores = data.get("stores") or {}
    if not isinstance(stores, dict):
        raise ConfigError(f"{p}: 'stores' must map store keys to folders")
    return {str(k): (p.parent / str(v)).resolve() if not Path(str(v)).is_absolute() else Path(str(v))
            for k, v in stores.items()}


def parse_store_args(items: list[str] | None) -> dict[str, Path]:
    """``["sim=stores/simfas", ...]`` -> ``{"sim": Path(...)}``."""
    out = {}
    for it in items or []:
        key, sep, val = it.partition("=")
        if not sep or not key or not val:
            raise ConfigError(f"bad --store {it!r}; write KEY=PATH, e.g. sim=stores/simfas")
        out[key] = Path(val)
    return out


class StoreSet:
    """Opened stores by key, opened lazily and once."""

    def __init__(self, paths: Mapping[str, str | Path]):
        self.paths = {k: Path(v) for k, v in paths.items()}
        self._open: dict[str, Store] = {}

    def get(self, key: str) -> Store:
        if key not in self._open:
            if key not in self.paths:
                known = ", ".join(sorted(self.paths)) or "none"
                raise ConfigError(f"store key {key!r} is not configured (known: {known}); add it to "
                                  f"datasets.yaml or pass --store {key}=PATH")
            self._open[key] = Store.open(self.paths[key])
        return self._open[key]

    def check(self, protocol: Protocol) -> None:
        """Raise naming every store key the protocol needs and nobody configured."""
        missing = [k for k in protocol.stores if k not in self.paths]
        if missing:
            raise ConfigError(f"protocol {protocol.name!r} needs store key(s) {', '.join(missing)}; add them "
                              f"to datasets.yaml or pass --store KEY=PATH")


def resolve(ref: DataRef, stores: StoreSet) -> tuple[Store, np.ndarray]:
    """The store and row indices of ``ref``; an empty selection is an error naming the reference."""
    store = stores.get(ref.store)
    idx = store.select(split=ref.split, domain=ref.domain)
    if idx.size == 0:
        doms = sorted(set(store.column("domain").tolist()))
        raise ConfigError(f"{ref}: no samples in {store.path} (split {ref.split!r}"
                          + (f", domain {ref.domain!r}; the store's domains are {doms}" if ref.domain else "")
                          + ")")
    return store, idx
