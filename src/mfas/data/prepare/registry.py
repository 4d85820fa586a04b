"""The adapter interface and its registry: one class per dataset, in one file, registered by name.

An adapter declares its name (by :func:`register_adapter`), a one-line ``description``, its ``options``
(:class:`Option`: name, default, help, command-line type and spelling) and :meth:`Adapter.plan`. The
hooks :meth:`~Adapter.modalities`, :meth:`~Adapter.provenance` and :meth:`~Adapter.inputs` say what
differs per dataset in the store it builds. :func:`mfas.data.prepare.prepare` and ``mfas data prepare
<adapter>`` are built from these declarations alone, so a new adapter is one module in this package.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from mfas.conventions import MODALITIES
from mfas.data.prepare.core import Item, Skip
from mfas.errors import ConfigError, did_you_mean


class _Marker:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: ``Option.default``: the option has no default; ``prepare`` must be given it.
REQUIRED: Any = _Marker("REQUIRED")
#: ``Option.cli_default``: the command line passes nothing when the flag is absent (the adapter's default
#: applies, and ``store.json`` records no value for it).
OMIT: Any = _Marker("OMIT")
_AS_DEFAULT: Any = _Marker("AS_DEFAULT")

#: Keywords of ``prepare`` and flags of every ``mfas data prepare`` subcommand: no adapter option may take them.
RESERVED = frozenset({"dataset", "root", "out", "size", "workers", "strict", "overwrite", "progress"})


@dataclass(frozen=True)
class Option:
    """One adapter option: a keyword of ``prepare(dataset, root, out, **options)`` and a flag of
    ``mfas data prepare <adapter>``.

    - ``type``: the command-line type (``str``, ``int``, ``Path``, ``list[Path]`` for a repeatable flag);
    - ``flag``: the command-line spelling, ``--`` and the name with dashes unless given;
    - ``cli_default``: what the command line passes when the flag is absent: ``default`` unless given,
      :data:`OMIT` for nothing; a required option (``default`` :data:`REQUIRED`) must then be given;
    - ``parse``: turns the command-line value into the adapter's (``"rgb,depth"`` -> a tuple);
    - ``input_file``: the value names a file (or files) the build reads; its SHA-256 goes to
      ``store.json`` under ``provenance.inputs``.
    """

    name: str
    default: Any
    help: str
    type: Any = str
    flag: str = ""
    cli_default: Any = _AS_DEFAULT
    parse: Callable[[Any], Any] | None = None
    input_file: bool = False

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def cli_value(self) -> Any:
        """What the command line passes when the flag is absent (:data:`REQUIRED`, :data:`OMIT` or a value)."""
        return self.default if self.cli_default is _AS_DEFAULT else self.cli_default


def frames_option(default: str) -> Option:
    """The frame policy option of an adapter that reads videos (``--frames``, default ``default``)."""
    return Option("frames", default, f"Frame policy: all, first, even:N or fixed:I,J,... (default {default}).",
                  cli_default=OMIT)


class Adapter:
    """A dataset adapter: raw files -> planned :class:`Item` objects (and a :class:`Skip` per unusable input).

    Subclass it in one module of ``mfas.data.prepare``, decorate the class with
    ``@register_adapter("name")``, set ``description`` and ``options`` and write :meth:`plan`.
    """

    name: ClassVar[str] = ""
    #: One line: what the adapter reads (``mfas data prepare --help`` lists it).
    description: ClassVar[str] = ""
    options: ClassVar[tuple[Option, ...]] = ()

    def validate(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Every option's value: those given in ``options`` and the defaults of the rest.

        Raises ConfigError naming an unknown option and the nearest valid one, and TypeError when a
        required option is missing (as a Python call missing an argument does).
        """
        known = [o.name for o in self.options]
        for key in options:
            if key not in known:
                raise ConfigError(f"adapter {self.name!r} has no option {key!r}"
                                  + did_you_mean(key, known, otherwise=f" (options: {', '.join(known)})"))
        values = {}
        for o in self.options:
            values[o.name] = options.get(o.name, o.default)
            if values[o.name] is REQUIRED:
                raise TypeError(f"adapter {self.name!r} needs option {o.name!r}")
        return values

    def plan(self, root: Path, options: dict[str, Any]) -> Iterator[Item | Skip]:
        """Items for everything under ``root``; ``options`` holds every option (see :meth:`validate`)."""
        raise NotImplementedError

    def modalities(self, options: dict[str, Any]) -> tuple[str, ...]:
        """The modalities of the store: every item has all of them, or a rule that says it lacks one."""
        return MODALITIES

    def provenance(self, options: dict[str, Any]) -> dict[str, Any]:
        """Extra entries for ``store.json``'s ``provenance`` (what a reader of the store must know)."""
        return {}

    def inputs(self, options: dict[str, Any]) -> dict[str, str]:
        """SHA-256 of every list, protocol or metadata file the build reads: the ``input_file`` options'."""
        out = {}
        for o in self.options:
            v = options.get(o.name) if o.input_file else None
            for x in (v if isinstance(v, list | tuple) else [v]):
                if x and Path(x).is_file():
                    out[str(Path(x))] = hashlib.sha256(Path(x).read_bytes()).hexdigest()
        return out


#: Registered adapters by name.
ADAPTERS: dict[str, Adapter] = {}


def register_adapter(name: str) -> Callable[[type[Adapter]], type[Adapter]]:
    """Class decorator: register an :class:`Adapter` subclass under ``name`` (``mfas data prepare name``)."""

    def deco(cls: type[Adapter]) -> type[Adapter]:
        if name in ADAPTERS:
            raise ConfigError(f"dataset adapter {name!r} is already registered")
        names = [o.name for o in cls.options]
        flags = [o.cli_flag for o in cls.options]
        clash = ([n for n in names if n in RESERVED or names.count(n) > 1]
                 + [f for f in flags if f.removeprefix("--") in {*RESERVED, "help"} or flags.count(f) > 1])
        if clash:
            raise ConfigError(f"dataset adapter {name!r}: option {clash[0]!r} is reserved or declared twice")
        cls.name = name
        ADAPTERS[name] = cls()
        return cls

    return deco


def list_adapters() -> list[str]:
    """The names of the registered adapters, sorted."""
    return sorted(ADAPTERS)


def get_adapter(name: str) -> Adapter:
    """The adapter registered as ``name``; ConfigError listing the registered ones otherwise."""
    if name not in ADAPTERS:
        raise ConfigError(f"unknown dataset adapter {name!r}; choose from {', '.join(list_adapters())}")
    return ADAPTERS[name]
