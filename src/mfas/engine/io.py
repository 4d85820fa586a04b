"""Atomic writes, resume checkpoints and the inference bundle (safetensors + JSON, no pickle).

Nothing a bundle or checkpoint says is trusted before it is checked; every refusal is a :class:`DataError` or
:class:`ConfigError` naming the file (and the key). What :func:`load_bundle` verifies, in this order:

1. the path: a run folder, a ``model.json`` or a ``model.safetensors`` (a missing path, a broken symbolic link or a
   link loop is named as such, with the path as given);
2. ``model.json``: a regular file of at most :data:`MAX_META_BYTES`, UTF-8 JSON, then a schema
   (:class:`BundleMeta`): format and version, the model's name, preprocessing, threshold, weights hash; every
   number in the model's options finite and at most :data:`MAX_OPTION_INT` in size;
3. ``model.safetensors``: a regular file whose header parses (the safetensors library checks that the header
   covers the file exactly), holding at most :data:`MAX_MODEL_ELEMENTS` values; then its SHA-256 against
   ``model.json``;
4. the model: built first on the ``meta`` device (no memory) under a guard that stops the build once it creates
   more parameters and buffers than the weights file holds plus :data:`NON_STATE_SLACK` (or more than
   :data:`MAX_MODEL_ELEMENTS`), or more modules than :func:`_module_cap` allows; its state's names and shapes
   must equal the header's, and its preprocessing (input size, modalities) and ``supports_missing`` those of
   ``model.json``. Only then is it built for real and the weights loaded.

Checkpoints (``last.ckpt``, third-party ``.pt``) are opened with ``torch.load(weights_only=True)`` only after the
file is seen to be a ``torch.save`` zip archive of stored (uncompressed) records no larger than the file
(:func:`check_checkpoint`); pickled code is refused, never run.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import math
import os
import pickle
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from mfas.conventions import MODALITIES, MODALITY_CHANNELS
from mfas.errors import ConfigError, DataError, MfasError, config_error_from_pydantic
from mfas.models import create_model
from mfas.models.base import PadModel

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


def _why_missing(p: Path) -> str:
    from mfas.data.images import describe_missing

    try:
        return describe_missing(p)
    except (OSError, ValueError) as e:  # an embedded NUL byte, a name too long
        return f"cannot be used as a path ({getattr(e, 'strerror', None) or e})"


def _regular_file(p: Path, what: str = "") -> None:
    """A :class:`DataError` unless ``p`` is a regular file (FIFOs and devices would block or never end)."""
    if not p.exists():
        raise DataError(p, f"{what}{_why_missing(p)}")
    if not p.is_file():
        kind = "a folder" if p.is_dir() else "not a regular file"
        raise DataError(p, f"{what}is {kind}")


def _replace_atomically(tmp: Path, dst: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, dst)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write via a temporary file and rename: readers see the old or the new file, never half."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        _replace_atomically(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def _refusal(e: BaseException) -> str:
    """What a weights-only unpickling failure says, without torch's advice to retry unsafely."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    detail = next((ln for ln in lines[1:] if not ln.startswith("Check the documentation")), "")
    detail = detail.removeprefix("WeightsUnpickler error:").strip()
    return ("holds objects other than tensors and plain values, which are not loaded (nothing was run)"
            + (f": {detail}" if detail else ""))


def check_torch_file(path: str | Path) -> Path:
    """Check that ``path`` is a ``torch.save`` zip archive that :func:`torch.load` can open without reading more
    than the file: a regular, non-empty file, a zip archive (the legacy format and bare pickles are refused: they
    allocate what they declare), every record stored uncompressed (``torch.save`` never compresses, so a
    compressed record can only be a decompression bomb) and the records' sizes within the file's."""
    p = Path(path)
    _regular_file(p)
    size = p.stat().st_size
    if size == 0:
        raise DataError(p, "is empty (an interrupted copy or save?)")
    try:
        with zipfile.ZipFile(p) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
        raise DataError(p, "not a PyTorch checkpoint: torch.save's zip format was expected (the file is truncated, "
                           f"of another kind, or of the legacy pre-1.6 format, which is refused) ({_first_line(e)})"
                        ) from None
    if not any(i.filename.endswith("data.pkl") for i in infos):
        raise DataError(p, "not a PyTorch checkpoint: a zip archive without data.pkl")
    packed = [i.filename for i in infos if i.compress_type != zipfile.ZIP_STORED]
    if packed:
        raise DataError(p, f"not written by torch.save: compressed records ({', '.join(packed[:3])})")
    total = sum(i.file_size for i in infos)
    if total > size:
        raise DataError(p, f"its records claim {total:,} bytes, more than the file's {size:,} (damaged or crafted)")
    return p


def _torch_load(p: Path, map_location: Any = "cpu", mmap: bool = False) -> Any:
    try:
        return torch.load(p, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        raise DataError(p, f"refused: the checkpoint {_refusal(e)}") from None
    except MemoryError:
        raise DataError(p, "cannot be loaded: out of memory") from None
    except Exception as e:  # truncated records, bad offsets, ... : torch raises many kinds
        raise DataError(p, f"cannot be read as a checkpoint ({_first_line(e)})") from None


def check_checkpoint(path: str | Path, model: torch.nn.Module | None = None, prefix: str = "model.") -> dict:
    """Open a checkpoint the cheap and safe way (:func:`check_torch_file`, then ``torch.load(weights_only=True,
    mmap=True)``: tensors stay on disk) and check it is a mapping; with ``model``, check it is a Lightning
    checkpoint (``state_dict``, optimizer and loop states) whose ``state_dict`` entries under ``prefix`` have the
    names and shapes of ``model``'s state. Returns the (memory-mapped) checkpoint. Every problem is a
    :class:`DataError` naming the file: call it before handing the file to Lightning (``trainer.fit(ckpt_path=)``)."""
    p = check_torch_file(path)
    ck = _torch_load(p, mmap=True)
    if not isinstance(ck, Mapping):
        raise DataError(p, f"not a checkpoint: it holds a {type(ck).__name__}, not a mapping")
    if model is None:
        return dict(ck)
    lacking = [k for k in ("state_dict", "optimizer_states", "lr_schedulers", "loops", "epoch", "global_step")
               if k not in ck]
    if lacking:
        raise DataError(p, f"not a resume checkpoint of an mfas run: no {', '.join(map(repr, lacking))}")
    sd = ck["state_dict"]
    if not isinstance(sd, Mapping) or not all(torch.is_tensor(v) for v in sd.values()):
        raise DataError(p, "'state_dict' is not a mapping of names to tensors")
    have = {str(k)[len(prefix):]: tuple(v.shape) for k, v in sd.items() if str(k).startswith(prefix)}
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problem = _state_mismatch(want, have)
    if problem:
        name = getattr(model, "config", {}).get("name", type(model).__name__)
        raise DataError(p, f"does not fit this run's model {name!r}: {problem}")
    return dict(ck)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written to a temporary file, fsynced, then renamed over the old one; read with
    ``weights_only=True`` after :func:`check_torch_file`, any failure a :class:`DataError` naming the file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
        torch.save(checkpoint, tmp)
        _replace_atomically(tmp, p)

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None) -> dict:
        # resume checkpoints hold tensors and plain Python values only: never unpickle code
        p = check_torch_file(path)
        ck = _torch_load(p, map_location=map_location or "cpu")
        if not isinstance(ck, dict):
            raise DataError(p, f"not a checkpoint: it holds a {type(ck).__name__}, not a mapping")
        return ck


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def save_weights(path: str | Path, state: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """A state dict as safetensors (CPU, contiguous), written atomically; ``metadata`` goes in the file's header."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp), metadata=metadata)
    _replace_atomically(tmp, p)
    return p


def weights_header(path: str | Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """({tensor name: shape}, header metadata) of a safetensors file, read from its header alone. The
    safetensors library checks that the header describes the file exactly (a truncated or padded file fails)."""
    p = Path(path)
    _regular_file(p)
    try:
        with safe_open(str(p), framework="pt") as f:
            shapes = {k: tuple(int(n) for n in f.get_slice(k).get_shape()) for k in f.keys()}
            metadata = dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise DataError(p, f"not a readable safetensors file ({_first_line(e)}); truncated, damaged or of another "
                           "kind") from None
    return shapes, metadata


def _elements(shapes: Mapping[str, tuple[int, ...]]) -> int:
    return sum(math.prod(s) for s in shapes.values())


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(state dict, header metadata) of a safetensors file written by :func:`save_weights`; nothing is unpickled."""
    p = Path(path)
    shapes, metadata = weights_header(p)
    if _elements(shapes) > MAX_MODEL_ELEMENTS:
        raise DataError(p, f"holds {_elements(shapes):,} values, above the limit of {MAX_MODEL_ELEMENTS:,}")
    try:
        return load_file(str(p)), metadata
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise DataError(p, f"cannot be read ({_first_line(e)})") from None


def save_bundle(run_dir: str | Path, model: PadModel, extra: dict, capture: dict | None = None) -> Path:
    """Write ``model.safetensors`` and ``model.json`` (architecture, preprocessing, threshold, ...).

    ``capture``: how the training images were made from captures (:func:`capture_preprocessing`), merged into
    ``preprocessing`` so that prediction prepares new captures the same way."""
    d = Path(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    weights = save_weights(d / "model.safetensors", model.state_dict(), {"format": BUNDLE_FORMAT})
    from mfas import __version__

    meta = {"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "mfas_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "model": model.config, "preprocessing": {**model.preprocessing(), **(capture or {})},
            "supports_missing": bool(model.supports_missing),
            "label_convention": "label 1 = bona fide; score = P(bona fide); accept when score >= threshold",
            "weights_sha256": _sha256(weights), **extra}
    atomic_write_json(d / "model.json", meta)
    return d


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


def _short(value: object, n: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


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


# ------------------------------------------------------------------------------------------ bounded building

class _TooLarge(Exception):
    pass


@contextmanager
def _size_guard(max_elements: int, max_modules: int) -> Iterator[dict]:
    """Count the parameters, buffers (values) and modules created inside the block; past a cap, stop the build."""
    from torch.nn.modules import module as nn_module

    seen: set[int] = set()
    count = {"elements": 0, "modules": 0}

    def tensor_hook(module: torch.nn.Module, name: str, t: torch.Tensor | None) -> None:
        if t is None or id(t) in seen:
            return
        seen.add(id(t))
        count["elements"] += t.numel()
        if count["elements"] > max_elements:
            raise _TooLarge("elements")

    def module_hook(module: torch.nn.Module, name: str, sub: torch.nn.Module | None) -> None:
        count["modules"] += 1
        if count["modules"] > max_modules:
            raise _TooLarge("modules")

    handles = [nn_module.register_module_parameter_registration_hook(tensor_hook),
               nn_module.register_module_buffer_registration_hook(tensor_hook),
               nn_module.register_module_module_registration_hook(module_hook)]
    try:
        yield count
    finally:
        for h in handles:
            h.remove()


def meta_model(name: str, options: Mapping, where: str, max_elements: int = MAX_MODEL_ELEMENTS,
               max_modules: int = MAX_MODULES, limit_text: str = "") -> PadModel:
    """Build model ``name`` with ``options`` on the ``meta`` device (shapes only, no memory), stopping as soon as
    it creates more than ``max_elements`` parameter and buffer values or ``max_modules`` modules. Any failure
    (an unknown name or option, a bad value, a size past a cap) is a :class:`ConfigError` starting with
    ``where`` (when not empty); ``limit_text`` says where a cap comes from."""
    at = f"{where}: " if where else ""
    try:
        with _size_guard(max_elements, max_modules), torch.device("meta"):
            return create_model(name, **options)
    except _TooLarge as e:
        what = (f"more than {max_elements:,} parameter and buffer values" if str(e) == "elements"
                else f"more than {max_modules:,} modules")
        raise ConfigError(f"{at}model {name!r} with these options would have {what}{limit_text}; refused before "
                          "allocating anything") from None
    except MfasError as e:
        raise ConfigError(f"{at}{e}") from None
    except RecursionError:
        raise ConfigError(f"{at}model {name!r} cannot be built from these options (recursion)") from None
    except Exception as e:  # a builder's own complaint about an option the checks above let through
        raise ConfigError(f"{at}model {name!r} cannot be built from these options ({type(e).__name__}: "
                          f"{_first_line(e)})") from None


def _state_mismatch(want: Mapping[str, tuple[int, ...]], have: Mapping[str, tuple[int, ...]]) -> str:
    """'' when ``have`` has exactly the names and shapes of ``want``, else a short description."""
    missing = sorted(set(want) - set(have))
    unexpected = sorted(set(have) - set(want))
    wrong = [f"{k} is {have[k]} in the file, {want[k]} in the model" for k in sorted(set(want) & set(have))
             if tuple(have[k]) != tuple(want[k])]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("of another shape", wrong)):
        if items:
            more = f" and {len(items) - 3} more" if len(items) > 3 else ""
            parts.append(f"{len(items)} {label} ({'; '.join(items[:3])}{more})")
    return ", ".join(parts)


def _module_cap(n_tensors: int) -> int:
    """Modules a model with ``n_tensors`` saved tensors may create: registered models have at most 2 per tensor."""
    return min(MAX_MODULES, 8 * n_tensors + 1000)


def load_bundle(path: str | Path, verify: bool = True) -> tuple[PadModel, dict]:
    """Rebuild the model from ``model.json`` and load ``model.safetensors`` (no pickle involved), checking
    everything first (see the module's docstring); ``verify=False`` skips only the SHA-256."""
    mj, weights = bundle_paths(path)
    meta = _checked_meta(mj)
    shapes, _ = weights_header(weights)
    n_values = _elements(shapes)
    if n_values > MAX_MODEL_ELEMENTS:
        raise DataError(weights, f"holds {n_values:,} values, above the limit of {MAX_MODEL_ELEMENTS:,}")
    if verify and _sha256(weights) != meta["weights_sha256"]:
        raise DataError(weights, f"does not match the hash in {mj.name} (corrupted or replaced)")
    cfg = dict(meta["model"])
    name = cfg.pop("name")
    if cfg.get("pretrained"):
        cfg["pretrained"] = None  # initial weights only: the bundle's own weights replace them
    cap = min(MAX_MODEL_ELEMENTS, n_values + NON_STATE_SLACK)
    limit = (f", but {weights.name} holds {n_values:,} (sizes in model.json that do not fit the weights)"
             if cap < MAX_MODEL_ELEMENTS else f" (the limit is {MAX_MODEL_ELEMENTS:,})")
    shell = meta_model(name, cfg, f"{mj}: model", cap, _module_cap(len(shapes)), limit)
    problem = _state_mismatch({k: tuple(v.shape) for k, v in shell.state_dict().items()}, shapes)
    if problem:
        raise DataError(mj, f"model ({name!r} with its options) does not fit {weights.name}: {problem}")
    pre = shell.preprocessing()
    for key in ("input_size", "modalities"):
        if list(pre[key]) != list(meta["preprocessing"][key]):
            raise DataError(mj, f"preprocessing.{key} is {meta['preprocessing'][key]}, but model {name!r} with its "
                                f"options takes {pre[key]}")
    if bool(shell.supports_missing) != meta["supports_missing"]:
        raise DataError(mj, f"supports_missing is {meta['supports_missing']}, but model {name!r} says "
                            f"{bool(shell.supports_missing)}")
    del shell
    try:
        model = create_model(name, **cfg)
    except MfasError as e:
        raise ConfigError(f"{mj}: model: {e}") from None
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise DataError(weights, f"cannot be read ({_first_line(e)})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise DataError(weights, f"weights do not fit {name!r} ({_first_line(e)})") from None
    model.eval()
    return model, meta


def _path_errors(fn):
    """Turn an OSError or ValueError from inspecting a path (a name too long, a NUL byte) into a DataError."""

    @functools.wraps(fn)
    def wrapper(path: str | Path, option: str, *args: Any, **kwargs: Any) -> Path:
        try:
            return fn(path, option, *args, **kwargs)
        except (OSError, ValueError) as e:
            raise DataError(_short(str(path), 80), f"{option}: cannot be used as a path "
                                                   f"({getattr(e, 'strerror', None) or e})") from None

    return wrapper


@_path_errors
def check_output_file(path: str | Path, option: str, overwrite: bool = False) -> Path:
    """Check, before any work, that ``path`` can be written as a file: not a folder, not an existing file unless
    ``overwrite``, under a folder that exists or can be made. A :class:`DataError` names the option and path."""
    p = Path(path)
    if p.is_dir():
        raise DataError(p, f"{option}: is a folder; give a file name")
    if os.path.lexists(p) and not p.exists():
        raise DataError(p, f"{option}: {_why_missing(p)}")
    if p.exists() and not overwrite:
        raise DataError(p, f"{option}: exists; pass --overwrite to replace it")
    if p.exists() and not p.is_file():
        raise DataError(p, f"{option}: exists and is not a regular file")
    _writable_parent(p, option)
    return p


def _writable_parent(p: Path, option: str) -> None:
    parent = p.parent
    while not parent.exists():
        if os.path.lexists(parent):
            raise DataError(p, f"{option}: cannot be written: {parent} {_why_missing(parent)}")
        if parent == parent.parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        raise DataError(p, f"{option}: cannot be written: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DataError(p, f"{option}: cannot be written: no permission to write in {parent}")


@_path_errors
def existing_folder(path: str | Path, what: str) -> Path:
    """``path`` if it is a folder, else a :class:`DataError` naming it as given: missing, a broken link or link
    loop, or a file."""
    p = Path(path)
    if not p.exists():
        raise DataError(p, f"{what}: {_why_missing(p)}")
    if not p.is_dir():
        raise DataError(p, f"{what}: not a folder")
    return p


@_path_errors
def check_output_folder(path: str | Path, option: str, allow_run: bool = False) -> Path:
    """Check, before any work, that results may be written into folder ``path``: not a file, not a run or bundle
    folder (whose own files would be replaced) unless ``allow_run``, under a folder that can be written."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise DataError(p, f"{option}: exists and is not a folder")
    if os.path.lexists(p) and not p.exists():
        raise DataError(p, f"{option}: {_why_missing(p)}")
    if p.is_dir():
        owned = [] if allow_run else \
            [f for f in ("model.json", "model.safetensors", "last.ckpt", "config.yaml") if (p / f).exists()]
        if owned:
            raise DataError(p, f"{option}: is a run or bundle folder ({', '.join(owned)}); writing there would "
                               "replace its metrics.json, scores and report; give another folder")
        if not os.access(p, os.W_OK | os.X_OK):
            raise DataError(p, f"{option}: cannot be written: no permission")
        return p
    _writable_parent(p, option)
    return p
