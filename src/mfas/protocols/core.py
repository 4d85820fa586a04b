"""Protocol objects: which data trains, which selects thresholds and checkpoints, which is tested.

A data reference names a *store key* (resolved to a store folder through ``datasets.yaml`` or
``--store KEY=PATH``), a split, and optionally a domain inside that store:
``"W:test"``, ``"sim[C]:train"``.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from mfas.conventions import MODALITIES, SPLITS, order_modalities
from mfas.errors import ConfigError, config_error_from_pydantic

_REF = re.compile(r"^(?P<store>[A-Za-z0-9_.\-/]+)(\[(?P<domain>[^\]]+)\])?:(?P<split>[a-z]+)$")


class DataRef(BaseModel):
    """A split of a store, optionally restricted to one domain."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    store: str
    split: str
    domain: str | None = None

    @field_validator("split")
    @classmethod
    def _split(cls, v: str) -> str:
        if v not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {v!r}")
        return v

    @classmethod
    def parse(cls, text: str | DataRef | dict) -> DataRef:
        if isinstance(text, DataRef):
            return text
        if isinstance(text, dict):
            return cls(**text)
        m = _REF.match(str(text).strip())
        if not m:
            raise ConfigError(f"bad data reference {text!r}; write STORE:SPLIT or STORE[DOMAIN]:SPLIT, "
                              "e.g. 'W:test' or 'sim[C]:train'")
        return cls(store=m["store"], split=m["split"], domain=m["domain"])

    def __str__(self) -> str:
        return f"{self.store}[{self.domain}]:{self.split}" if self.domain else f"{self.store}:{self.split}"


def _refs(v: object) -> tuple[DataRef, ...]:
    if isinstance(v, str | dict | DataRef):
        v = [v]
    return tuple(DataRef.parse(x) for x in v)  # type: ignore[union-attr]


class TestSet(BaseModel):
    """One scored target: the union of its parts, seen through the given modalities."""

    __test__ = False  # not a pytest class

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    parts: tuple[DataRef, ...]
    modalities: tuple[str, ...] = MODALITIES

    @field_validator("parts", mode="before")
    @classmethod
    def _parts(cls, v: object) -> tuple[DataRef, ...]:
        return _refs(v)

    @field_validator("modalities", mode="before")
    @classmethod
    def _mods(cls, v: object) -> tuple[str, ...]:
        return order_modalities(v.replace("+", ",").split(",") if isinstance(v, str) else list(v))

    @property
    def missing(self) -> tuple[str, ...]:
        """Canonical modalities absent at test time."""
        return tuple(m for m in MODALITIES if m not in self.modalities)


class Protocol(BaseModel):
    """A named experiment protocol."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    description: str = ""
    family: str = "custom"
    reference: str = ""
    train: tuple[DataRef, ...]
    select: tuple[DataRef, ...] = ()
    tests: tuple[TestSet, ...]
    train_modalities: tuple[str, ...] = MODALITIES
    average: Literal["mean", "weighted", "none"] = "mean"
    average_over: tuple[str, ...] = ()  # test names to average; empty = all
    notes: str = ""

    @field_validator("train", "select", mode="before")
    @classmethod
    def _data(cls, v: object) -> tuple[DataRef, ...]:
        return _refs(v)

    @field_validator("train_modalities", mode="before")
    @classmethod
    def _mods(cls, v: object) -> tuple[str, ...]:
        return order_modalities(v.replace("+", ",").split(",") if isinstance(v, str) else list(v))

    @model_validator(mode="after")
    def _check(self) -> Protocol:
        if not self.train:
            raise ValueError("a protocol needs at least one training reference")
        if not self.tests:
            raise ValueError("a protocol needs at least one test set")
        names = [t.name for t in self.tests]
        if len(set(names)) != len(names):
            raise ValueError(f"test set names must be unique, got {names}")
        unknown = [n for n in self.average_over if n not in names]
        if unknown:
            raise ValueError(f"average_over names unknown test set {unknown[0]!r}; tests are {names}")
        return self

    @property
    def stores(self) -> tuple[str, ...]:
        """Every store key the protocol needs, sorted."""
        refs = list(self.train) + list(self.select) + [p for t in self.tests for p in t.parts]
        return tuple(sorted({r.store for r in refs}))

    @property
    def averaged_tests(self) -> tuple[TestSet, ...]:
        return tuple(t for t in self.tests if not self.average_over or t.name in self.average_over)


def protocol_from_dict(data: dict, where: str = "<dict>") -> Protocol:
    """Validate a protocol mapping; errors name the key and suggest the nearest valid one."""
    try:
        return Protocol(**data)
    except ValidationError as e:
        def fields_at(loc: list[str]) -> list[str]:
            return list(TestSet.model_fields if "tests" in loc else Protocol.model_fields)

        raise config_error_from_pydantic(e, where, fields_at) from None
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
