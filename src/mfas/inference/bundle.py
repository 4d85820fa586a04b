"""The inference bundle's description, ``model.json``, and its weights file's header: read and checked without
torch or Lightning, so that a deployment with the ONNX backend needs neither.

Nothing ``model.json`` says is trusted before it is checked; every refusal is a :class:`DataError` or
:class:`ConfigError` naming the file (and the key): a regular file of at most :data:`MAX_META_BYTES`, UTF-8 JSON,
then a schema (:class:`BundleMeta`): format and version, the model's name, preprocessing, threshold, weights hash,
the optional ONNX exports; every number in the model's options finite and at most :data:`MAX_OPTION_INT` in size.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from safetensors import SafetensorError, safe_open

from mfas.conventions import MODALITIES, MODALITY_CHANNELS
from mfas.errors import ConfigError, DataError, config_error_from_pydantic
from mfas.fs import first_line as _first_line
from mfas.fs import regular_file as _regular_file
from mfas.fs import short as _short
from mfas.fs import why_missing as _why_missing

BUNDLE_FORMAT = "mfas-bundle"
BUNDLE_VERSION = 1

#: the largest ``model.json`` read (bytes); a bundle's is a few kB, a converted one's some tens of kB
MAX_META_BYTES = 16 << 20
#: the most parameters plus buffers (values, any dtype) a bundle's model may have: 2.5e9 (10 GB in float32);
#: the largest registered model, ``mmda``, has 3.0e8
MAX_MODEL_ELEMENTS = 2_500_000_000
#: values a model may create beyond its saved state (non-persistent buffers: position tables, masks, tokens)
NON_STATE_SLACK = 1 << 24
#: the largest integer (in absolute value) accepted in a model's options; the largest registered default is
#: CLIP's vocabulary of 49,408
MAX_OPTION_INT = 1_000_000
#: the most modules a model may create while it is checked without a weights file (``mfas models show``)
MAX_MODULES = 200_000
#: the largest input side (pixels) a bundle's preprocessing may ask for
MAX_INPUT_SIDE = 4096
#: nesting, list length and string length allowed in a model's options
_MAX_DEPTH, _MAX_ITEMS, _MAX_STR = 8, 4096, 4096
def weights_header(path: str | Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """({tensor name: shape}, header metadata) of a safetensors file, read from its header alone. The
    safetensors library checks that the header describes the file exactly (a truncated or padded file fails)."""
    p = Path(path)
    _regular_file(p)
    try:
        with safe_open(str(p), framework="numpy") as f:
            shapes = {k: tuple(int(n) for n in f.get_slice(k).get_shape()) for k in f.keys()}
            metadata = dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise DataError(p, f"not a readable safetensors file ({_first_line(e)}); truncated, damaged or of another "
                           "kind") from None
    return shapes, metadata


def _elements(shapes: Mapping[str, tuple[int, ...]]) -> int:
    return sum(math.prod(s) for s in shapes.values())


# ------------------------------------------------------------------------------------------ model.json schema

_Finite = Annotated[float, Field(allow_inf_nan=False)]
_Side = Annotated[int, Field(ge=1, le=MAX_INPUT_SIDE)]


class _Part(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class _Norm(_Part):
    mean: Annotated[list[_Finite], Field(min_length=1, max_length=4)]
    std: Annotated[list[Annotated[float, Field(gt=0, allow_inf_nan=False)]], Field(min_length=1, max_length=4)]

    @model_validator(mode="after")
    def _same_length(self) -> _Norm:
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} values, std {len(self.std)}")
        return self


class _Preprocessing(_Part):
    input_size: Annotated[list[_Side], Field(min_length=2, max_length=2)]
    modalities: Annotated[list[str], Field(min_length=1, max_length=len(MODALITIES))]
    norm: dict[str, _Norm]
    # how training images were made from captures (absent in bundles written before they were recorded)
    store_size: Annotated[list[_Side], Field(min_length=2, max_length=2)] | None = None
    resize: Annotated[str, Field(max_length=200)] | None = None
    crop: dict[str, Any] | None = None

    @field_validator("crop")
    @classmethod
    def _crop_policy(cls, v: dict | None) -> dict | None:
        if v is not None:
            from mfas.data.faces import CropPolicy

            try:
                CropPolicy.from_dict(v, where="crop")
            except ConfigError as e:
                raise ValueError(str(e)) from None
        return v

    @field_validator("modalities")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        bad = [m for m in v if m not in MODALITIES]
        if bad:
            raise ValueError(f"unknown modality {bad[0]!r}; known: {', '.join(MODALITIES)}")
        if len(set(v)) != len(v):
            raise ValueError("a modality is listed twice")
        return v

    @model_validator(mode="after")
    def _norm_per_modality(self) -> _Preprocessing:
        for m in self.modalities:
            if m not in self.norm:
                raise ValueError(f"norm has no entry for {m!r}")
            if len(self.norm[m].mean) != MODALITY_CHANNELS[m]:
                raise ValueError(f"norm.{m} has {len(self.norm[m].mean)} values; {m} has {MODALITY_CHANNELS[m]} "
                                 "channel(s)")
        return self


class _Threshold(_Part):
    model_config = ConfigDict(strict=True, extra="allow")
    value: _Finite
    policy: Annotated[str, Field(min_length=1, max_length=200)]


class _ModelSection(_Part):
    model_config = ConfigDict(strict=True, extra="allow")
    name: Annotated[str, Field(min_length=1, max_length=200)]


class _OnnxFile(_Part):
    model_config = ConfigDict(strict=True, extra="allow")
    # a plain file name beside model.json: never a path that could point elsewhere
    file: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,100}\.onnx$")]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class _Onnx(_Part):
    model_config = ConfigDict(strict=True, extra="allow")
    weights_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    inputs: Annotated[list[Literal["rgb", "depth", "ir", "present"]], Field(min_length=1, max_length=4)]
    fp32: _OnnxFile
    int8: _OnnxFile | None = None


class BundleMeta(_Part):
    """The checked part of ``model.json``; other keys (selection, protocol, metrics, ...) are descriptive."""

    model_config = ConfigDict(strict=True, extra="allow")
    format: str
    version: int
    model: _ModelSection
    preprocessing: _Preprocessing
    supports_missing: bool
    threshold: _Threshold
    weights_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    onnx: _Onnx | None = None  # written by `mfas export`


def check_option_values(options: Mapping, where: str, prefix: str = "") -> None:
    """Bound the values of a model's options before anything is built from them: JSON-like types only, every
    number finite and every integer at most :data:`MAX_OPTION_INT` in absolute value, at most
    :data:`_MAX_DEPTH` levels, :data:`_MAX_ITEMS` items per list or mapping and :data:`_MAX_STR` characters per
    string. A :class:`ConfigError` names ``where`` and the key."""

    def walk(value: object, key: str, depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise ConfigError(f"{where}: {key}: nested more than {_MAX_DEPTH} levels deep")
        if value is None or isinstance(value, bool):
            return
        if isinstance(value, int):
            if abs(value) > MAX_OPTION_INT:
                raise ConfigError(f"{where}: {key}: {_short(value, 30)} is out of range (at most {MAX_OPTION_INT:,} "
                                  "in absolute value)")
            return
        if isinstance(value, float):
            if not math.isfinite(value):
                raise ConfigError(f"{where}: {key}: expected a finite number, got {value!r}")
            if abs(value) > MAX_OPTION_INT:
                raise ConfigError(f"{where}: {key}: {value!r} is out of range (at most {MAX_OPTION_INT:,} in "
                                  "absolute value)")
            return
        if isinstance(value, str):
            if len(value) > _MAX_STR:
                raise ConfigError(f"{where}: {key}: a string of {len(value):,} characters (at most {_MAX_STR:,})")
            return
        if isinstance(value, list | tuple):
            if len(value) > _MAX_ITEMS:
                raise ConfigError(f"{where}: {key}: a list of {len(value):,} items (at most {_MAX_ITEMS:,})")
            for i, v in enumerate(value):
                walk(v, f"{key}[{i}]", depth + 1)
            return
        if isinstance(value, Mapping):
            if len(value) > _MAX_ITEMS:
                raise ConfigError(f"{where}: {key}: a mapping of {len(value):,} keys (at most {_MAX_ITEMS:,})")
            for k, v in value.items():
                if not isinstance(k, str):
                    raise ConfigError(f"{where}: {key}: keys must be strings, got {_short(k)}")
                walk(v, f"{key}.{k}", depth + 1)
            return
        raise ConfigError(f"{where}: {key}: unsupported value of type {type(value).__name__}")

    for k, v in options.items():
        walk(v, f"{prefix}{k}", 1)


def bundle_paths(path: str | Path) -> tuple[Path, Path]:
    """(``model.json``, ``model.safetensors``) of a run folder or bundle given as its folder, its ``model.json``
    or its ``model.safetensors``. A path that cannot be used is a :class:`DataError` naming it as given."""
    p = Path(path)
    try:
        exists = p.exists()
    except (OSError, ValueError) as e:  # a name too long, an embedded NUL byte
        raise DataError(_short(str(p), 80), f"cannot be used as a path ({getattr(e, 'strerror', None) or e})") from None
    if not exists:
        raise DataError(p, f"{_why_missing(p)} (expected a run folder or a bundle's model.json)")
    if p.is_dir():
        mj = p / "model.json"
        if not mj.exists() and not mj.is_symlink():
            raise DataError(p, "not a run folder or bundle: it has no model.json")
        return mj, p / "model.safetensors"
    if not p.is_file():
        raise DataError(p, "not a run folder, model.json or model.safetensors (not a regular file)")
    if p.suffix == ".json":
        return p, p.with_name("model.safetensors")
    if p.suffix == ".safetensors":
        return p.with_name("model.json"), p
    raise DataError(p, "not a run folder, model.json or model.safetensors")


def _read_meta_json(mj: Path) -> object:
    _regular_file(mj)
    size = mj.stat().st_size
    if size > MAX_META_BYTES:
        raise DataError(mj, f"{size:,} bytes, more than a model.json can have ({MAX_META_BYTES:,})")
    try:
        with open(mj, "rb") as f:
            raw = f.read(MAX_META_BYTES + 1)
    except OSError as e:
        raise DataError(mj, f"cannot be read ({e.strerror or e})") from None
    if len(raw) > MAX_META_BYTES:
        raise DataError(mj, f"more than {MAX_META_BYTES:,} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(mj, f"not UTF-8 text (byte {e.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(mj, f"not valid JSON ({e})") from None
    except RecursionError:
        raise DataError(mj, "not valid JSON for a bundle: nested too deeply") from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise DataError(mj, f"not valid JSON for a bundle ({_first_line(e)})") from None


def read_bundle_meta(path: str | Path) -> dict:
    """The checked ``model.json`` of a run folder or bundle (see :class:`BundleMeta`): a :class:`DataError` or
    :class:`ConfigError` naming the file and the key when it is missing, unreadable or does not fit the schema."""
    mj, _ = bundle_paths(path)
    return _checked_meta(mj)


def _checked_meta(mj: Path) -> dict:
    meta = _read_meta_json(mj)
    if not isinstance(meta, dict):
        raise DataError(mj, f"not an mfas bundle: a JSON object was expected, got {type(meta).__name__}")
    if meta.get("format") != BUNDLE_FORMAT or meta.get("version") != BUNDLE_VERSION \
            or isinstance(meta.get("version"), bool):
        raise DataError(mj, f"not an mfas bundle of version {BUNDLE_VERSION} (format {_short(meta.get('format'))}, "
                            f"version {_short(meta.get('version'))}; expected {BUNDLE_FORMAT!r}, {BUNDLE_VERSION})")
    try:
        BundleMeta.model_validate(meta)
    except ValidationError as e:
        raise config_error_from_pydantic(e, str(mj), BundleMeta) from None
    options = {k: v for k, v in meta["model"].items() if k != "name"}
    check_option_values(options, str(mj), prefix="model.")
    return meta
