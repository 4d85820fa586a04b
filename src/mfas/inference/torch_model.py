"""The bundle's model in torch: built under size guards from ``model.json``, then its safetensors weights loaded.

What :func:`load_bundle` verifies, after :func:`mfas.inference.bundle.read_bundle_meta`'s checks of ``model.json``:
``model.safetensors`` is a regular file whose header parses (the safetensors library checks that the header
covers the file exactly), holding at most :data:`MAX_MODEL_ELEMENTS` values, and its SHA-256 is the one in
``model.json``; the model is built first on the ``meta`` device (no memory) under a guard that stops the build once
it creates more parameters and buffers than the weights file holds plus :data:`NON_STATE_SLACK` (or more than
:data:`MAX_MODEL_ELEMENTS`), or more modules than :func:`_module_cap` allows; its state's names and shapes must
equal the header's, and its preprocessing (input size, modalities) and ``supports_missing`` those of
``model.json``. Only then is it built for real and the weights loaded. Nothing is unpickled.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from mfas.errors import ConfigError, DataError, MfasError
from mfas.fs import first_line as _first_line
from mfas.fs import sha256_file as _sha256
from mfas.inference.bundle import (
    MAX_MODEL_ELEMENTS,
    MAX_MODULES,
    NON_STATE_SLACK,
    _checked_meta,
    _elements,
    bundle_paths,
    weights_header,
)
from mfas.models import create_model
from mfas.models.base import PadModel


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
