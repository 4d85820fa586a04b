"""The protocol registry: built-ins, plus custom protocols from YAML files."""

from __future__ import annotations

from pathlib import Path

import yaml

from mfas.errors import ConfigError, did_you_mean
from mfas.protocols.core import Protocol, protocol_from_dict

_REGISTRY: dict[str, Protocol] = {}


def register_protocol(p: Protocol, replace: bool = False) -> Protocol:
    if p.name in _REGISTRY and not replace:
        raise ConfigError(f"protocol {p.name!r} is already registered")
    _REGISTRY[p.name] = p
    return p


def list_protocols(family: str | None = None) -> list[Protocol]:
    _ensure_builtins()
    return [p for n, p in sorted(_REGISTRY.items()) if family is None or p.family == family]


def get_protocol(name: str) -> Protocol:
    _ensure_builtins()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown protocol {name!r}"
                          + did_you_mean(name, _REGISTRY, n=3, otherwise="; see `mfas protocols list`"))
    return _REGISTRY[name]


def load_protocol_file(path: str | Path, register: bool = True) -> list[Protocol]:
    """Read custom protocols from YAML: a mapping with a ``protocols:`` list, or one protocol."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: no such protocol file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({e})") from None
    if isinstance(data, dict) and "protocols" in data:
        extra = set(data) - {"protocols"}
        if extra:
            raise ConfigError(f"{p}: unknown top-level key {sorted(extra)[0]!r} (expected 'protocols')")
        items = data["protocols"]
    else:
        items = [data]
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ConfigError(f"{p}: expected a protocol mapping or a 'protocols:' list of mappings")
    out = [protocol_from_dict(d, where=f"{p} (protocol {i + 1})") for i, d in enumerate(items)]
    if register:
        _ensure_builtins()
        for proto in out:
            register_protocol(proto, replace=proto.family == "custom" and proto.name in _REGISTRY
                              and _REGISTRY[proto.name].family == "custom")
    return out


_LOADED = False


def _ensure_builtins() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        from mfas.protocols.builtin import builtin_protocols

        for p in builtin_protocols():
            register_protocol(p)
