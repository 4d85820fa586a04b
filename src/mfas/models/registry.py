"""A decorator registry in the style of timm: ``create_model(name, **overrides)``."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable

from mfas.errors import ConfigError, MfasError, did_you_mean
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


def _check_name(name: object, what: str = "unknown model") -> None:
    if not isinstance(name, str) or name not in _BUILDERS:
        raise ConfigError(f"{what} {name!r}" + did_you_mean(str(name), sorted(_BUILDERS), n=3, listing="known"))


def _signature_defaults(fn: Callable) -> dict:
    """The keyword defaults of a builder's signature (``**kwargs`` excluded)."""
    return {k: p.default for k, p in inspect.signature(fn).parameters.items()
            if p.default is not inspect.Parameter.empty and p.kind is not inspect.Parameter.VAR_KEYWORD}


def full_defaults(name: str) -> dict:
    """Every option of ``name`` with its default: the builder's signature defaults under the registered ones."""
    _ensure_builtins()
    _check_name(name)
    return {**_signature_defaults(_BUILDERS[name]), **_DEFAULTS[name]}


_KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def _options(fn: Callable) -> tuple[dict[str, inspect.Parameter], bool]:
    """A builder's keyword options with their annotations evaluated, and whether it also takes any other keyword.

    A builder that takes only ``**kwargs`` and is annotated to return a class (``def f(**kw) -> ViTConcat``) is
    read through that class' constructor, so its options are checked by name and type too."""
    try:
        sig = inspect.signature(fn, eval_str=True)
    except Exception:  # an annotation that cannot be evaluated: names only, no types
        sig = inspect.signature(fn)
    params = {k: p for k, p in sig.parameters.items() if p.kind in _KEYWORD}
    open_ = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    ret = sig.return_annotation
    if not params and open_ and isinstance(ret, type) and issubclass(ret, PadModel):
        return _options(ret)
    return params, open_


_ADAPTERS: dict[object, object] = {}


def _check_type(annotation: object, value: object) -> tuple[bool, object]:
    """(fits, value to pass) for ``value`` against a parameter annotation; (True, value) when it cannot be checked."""
    if annotation is inspect.Parameter.empty or isinstance(annotation, str):
        return True, value
    if isinstance(value, bool) and annotation in (int, float):
        return False, value  # true/false for a number is a typo, not 1/0
    from pydantic import TypeAdapter, ValidationError

    try:
        adapter = _ADAPTERS.get(annotation)
        if adapter is None:
            adapter = _ADAPTERS[annotation] = TypeAdapter(annotation)
    except Exception:  # an annotation pydantic cannot express: left to the builder
        return True, value
    try:
        checked = adapter.validate_python(value)
    except ValidationError:
        return False, value
    scalar = (str, bool, int, float)
    if isinstance(value, scalar) and isinstance(checked, scalar) and type(checked) is not type(value) \
            and not (type(value) is int and type(checked) is float):
        return True, checked  # "yes" -> True, "3" -> 3: the builder gets what the annotation says
    return True, value


def _type_text(annotation: object) -> str:
    return annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")


def _modalities(value: object, label: str) -> object:
    """A ``modalities`` option: a string (``rgb``, ``rgb,depth``) becomes a list in canonical order; a list must name
    known modalities, each once (its order is kept)."""
    from mfas.conventions import KNOWN_MODALITIES, parse_modalities

    if isinstance(value, str):
        try:
            return list(parse_modalities(value))
        except ValueError as e:
            raise ConfigError(f"{label}: {e} (got {value!r})") from None
    if isinstance(value, list | tuple):
        bad = [m for m in value if m not in KNOWN_MODALITIES]
        if bad or not value or len(set(value)) != len(value):
            why = f"unknown modality {bad[0]!r}" if bad else "an empty list" if not value else "a repeated modality"
            raise ConfigError(f"{label}: {why}; give a non-empty list of {', '.join(KNOWN_MODALITIES)} (got {value!r})")
    return value


def check_options(name: str, options: dict, where: str | None = None) -> dict:
    """``options`` for model ``name`` checked against its builder's signature: every key must be an option, every
    value must fit the option's annotation. Returns the options to build with: a ``modalities`` string
    (``"rgb"``, ``"rgb,depth"``) becomes a list in canonical order; ``"3"`` for an integer option becomes 3.

    Errors are :class:`ConfigError`: ``where`` (a config file) names keys as ``model.<key>`` in it; without it they
    read ``model '<name>' option '<key>'``.
    """
    _ensure_builtins()
    if where is None:
        _check_name(name)
    else:
        try:
            _check_name(name, "model.name: unknown model")
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None

    def label(key: str) -> str:
        return f"{where}: model.{key}" if where is not None else f"model {name!r} option {key!r}"

    params, open_ = _options(_BUILDERS[name])
    defaults = {**{k: p.default for k, p in params.items()}, **_DEFAULTS[name]}
    out = dict(options)
    for key, value in options.items():
        p = params.get(key)
        if p is None:
            if open_:
                continue
            valid = sorted(params)
            if where is not None:
                raise ConfigError(f"{where}: unknown key 'model.{key}'"
                                  + did_you_mean(key, valid, listing=f"options of {name!r}", prefix="model."))
            raise ConfigError(f"model {name!r} has no option {key!r}" + did_you_mean(key, valid))
        if key == "modalities":
            value = out[key] = _modalities(value, label(key))
        ok, value = _check_type(p.annotation, value)
        if not ok:
            default = defaults.get(key, inspect.Parameter.empty)
            tail = "" if default is inspect.Parameter.empty else f"; default {default!r}"
            raise ConfigError(f"{label(key)}: expected {_type_text(p.annotation)}, got {value!r}{tail}")
        out[key] = value
    return out


def _builder_error(name: str, kwargs: dict, overrides: dict, e: BaseException) -> ConfigError:
    """A builder's complaint as a ConfigError naming the model and the options its message mentions (the ones the
    caller set first)."""
    text = str(e).strip() or type(e).__name__
    known = dict.fromkeys([*overrides, *kwargs, *_options(_BUILDERS[name])[0]])
    named = [k for k in known if re.search(rf"(?<![\w.]){re.escape(k)}(?![\w])", text)]
    if named:
        opts = ", ".join(repr(k) for k in named)
        return ConfigError(f"model {name!r} option{'s' if len(named) > 1 else ''} {opts}: {text}")
    given = ", ".join(f"{k}={v!r}" for k, v in overrides.items()) or "its defaults"
    return ConfigError(f"model {name!r} cannot be built with {given}: {text}")


def create_model(name: str, **overrides: object) -> PadModel:
    """Build a registered model; an unknown override is an error naming the nearest valid key, a value of the wrong
    type an error naming the option, and a builder's complaint (ValueError, TypeError, KeyError, IndexError,
    AssertionError, or a RuntimeError such as a negative size; not running out of memory) a :class:`ConfigError`
    naming the model and the option."""
    _ensure_builtins()
    _check_name(name)
    fn = _BUILDERS[name]
    overrides = check_options(name, overrides)
    kwargs = {**_DEFAULTS[name], **overrides}
    try:
        model = fn(**kwargs)
    except MfasError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AssertionError, RuntimeError) as e:
        if "OutOfMemoryError" in type(e).__name__:
            raise
        raise _builder_error(name, kwargs, overrides, e) from e
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
