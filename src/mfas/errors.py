"""Exception types. Every error a user can cause names the file or key at fault."""

from __future__ import annotations


class MfasError(Exception):
    """Base class of the errors mfas raises on purpose."""


class DataError(MfasError):
    """Bad input data: an unreadable image, a wrong shape, a missing file."""

    def __init__(self, path: object, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class StoreError(MfasError):
    """A store that cannot be opened or written: incomplete, truncated, inconsistent."""


class MetricError(MfasError, ValueError):
    """A metric that is undefined for the given input (e.g. only one class present)."""


class ConfigError(MfasError, ValueError):
    """A bad configuration key or value; the message names the key."""


def did_you_mean(word: str, choices: object, n: int = 1, listing: str = "valid", prefix: str = "",
                 otherwise: str | None = None) -> str:
    """The tail of an error message about an unknown ``word``: "; did you mean 'x'?" for the nearest of
    ``choices`` (written with ``prefix``, e.g. the key's parent path), or "; valid: a, b, c" when none is
    near (``listing`` names that list), or ``otherwise`` when given."""
    import difflib

    options = [str(c) for c in choices]  # type: ignore[attr-defined]
    near = difflib.get_close_matches(word, options, n=n)
    if near:
        return "; did you mean " + ", ".join(repr(prefix + x) for x in near) + "?"
    if otherwise is not None:
        return otherwise
    return f"; {listing}: {', '.join(options)}" if options else ""


def nested_fields(root: type, loc: list[str]) -> list[str]:
    """The field names of the pydantic model reached from ``root`` along ``loc`` (nested model fields); [] when
    ``loc`` leaves the models (a list, a dict, a plain value)."""
    cls = root
    for part in loc:
        f = cls.model_fields.get(part)  # type: ignore[attr-defined]
        if f is None or not (isinstance(f.annotation, type) and hasattr(f.annotation, "model_fields")):
            return []
        cls = f.annotation
    return list(cls.model_fields)  # type: ignore[attr-defined]


def config_error_from_pydantic(error: object, where: str, fields_at: object) -> ConfigError:
    """One :class:`ConfigError` for a pydantic ``ValidationError``: an unknown key first (it usually explains a
    "field required" beside it), with the nearest valid key; otherwise the first error with its key path.
    ``fields_at`` is the root pydantic model (see :func:`nested_fields`) or a function ``fields_at(loc)`` giving
    the valid keys of the mapping at ``loc`` (a list of path parts)."""
    if isinstance(fields_at, type):
        root = fields_at

        def fields_at(loc: list[str]) -> list[str]:
            return nested_fields(root, loc)

    errs = sorted(error.errors(), key=lambda x: x["type"] != "extra_forbidden")  # type: ignore[attr-defined]
    err = errs[0]
    loc = [str(p) for p in err["loc"]]
    key = ".".join(loc)
    if err["type"] == "extra_forbidden":
        valid = list(fields_at(loc[:-1]))  # type: ignore[operator]
        parent = "".join(f"{p}." for p in loc[:-1])
        return ConfigError(f"{where}: unknown key {key!r}"
                           + did_you_mean(loc[-1], valid, listing="valid keys here", prefix=parent))
    return ConfigError(f"{where}: {key}: {err['msg']}")


def require(module: str, extra: str, purpose: str) -> object:
    """Import an optional dependency, or a :class:`ConfigError` saying which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{purpose} needs the {module!r} package: pip install 'mfas[{extra}]'") from None


class RunError(ConfigError):
    """A run folder that cannot be used as asked: trained by another process, finished, or not a run's folder.
    The message names the folder (or its lock) and what to do."""
