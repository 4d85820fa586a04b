"""A decorator registry in the style of timm: ``create_model(name, **overrides)``."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from mfas.errors import ConfigError, did_you_mean
from mfas.models.base import PadModel

_BUILDERS: dict[str, Callable[..., PadModel]] = {}
_DEFAULTS: dict[str, dict] = {}


def register_model(name: str, **defaults: object) -> Callable:
    """Register ``fn(**kwargs) -> PadModel`` under ``name`` with default keyword arguments.

    The same builder can be registered several times with different sizes as data.
    """

    def deco(fn: Callable[..., PadModel]) -> Callable[..., PadModel]:
        if name in _BUILDERS:
            raise ConfigError(f"model {name!r} is already registered")
        _BUILDERS[name] = fn
        _DEFAULTS[name] = dict(defaults)
        return fn

    return deco


def list_models(pattern: str = "") -> list[str]:
    _ensure_builtins()
    return sorted(n for n in _BUILDERS if pattern in n)


def model_defaults(name: str) -> dict:
    _ensure_builtins()
    _check_name(name)
    return dict(_DEFAULTS[name])


def _check_name(name: str) -> None:
    if name not in _BUILDERS:
        raise ConfigError(f"unknown model {name!r}" + did_you_mean(name, sorted(_BUILDERS), n=3, listing="known"))


def _signature_defaults(fn: Callable) -> dict:
    """The keyword defaults of a builder's signature (``**kwargs`` excluded)."""
    return {k: p.default for k, p in inspect.signature(fn).parameters.items()
            if p.default is not inspect.Parameter.empty and p.kind is not inspect.Parameter.VAR_KEYWORD}


def full_defaults(name: str) -> dict:
    """Every option of ``name`` with its default: the builder's signature defaults under the registered ones."""
    _ensure_builtins()
    _check_name(name)
    return {**_signature_defaults(_BUILDERS[name]), **_DEFAULTS[name]}


def create_model(name: str, **overrides: object) -> PadModel:
    """Build a registered model; an unknown override is an error naming the nearest valid key."""
    _ensure_builtins()
    _check_name(name)
    fn = _BUILDERS[name]
    params = inspect.signature(fn).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    valid = [k for k in params if params[k].kind is not inspect.Parameter.VAR_KEYWORD]
    for key in overrides:
        if key not in valid and not accepts_any:
            raise ConfigError(f"model {name!r} has no option {key!r}" + did_you_mean(key, valid))
    kwargs = {**_DEFAULTS[name], **overrides}
    model = fn(**kwargs)
    # every option, defaults included, so a bundle rebuilds the same model even if a default changes later
    model.config = {"name": name, **_signature_defaults(fn), **kwargs}
    return model


_LOADED = False


def _ensure_builtins() -> None:
    """Import every subpackage of ``mfas.models`` once: each registers its models on import, so a new method
    is a new folder and nothing else."""
    global _LOADED
    if not _LOADED:
        _LOADED = True
        import importlib
        import pkgutil

        import mfas.models as pkg

        for info in pkgutil.iter_modules(pkg.__path__):
            if info.ispkg:
                importlib.import_module(f"{pkg.__name__}.{info.name}")
