"""Resume checkpoints and writing the inference bundle (safetensors + JSON, no pickle).

Reading bundles lives in :mod:`mfas.inference` (the engine writes bundles, inference reads them); the names are
re-exported here for the engine's own use. Checkpoints (``last.ckpt``, third-party ``.pt``) are opened with
``torch.load(weights_only=True)`` only after the file is seen to be a ``torch.save`` zip archive of stored
(uncompressed) records no larger than the file (:func:`check_checkpoint`); pickled code is refused, never run.
"""

from __future__ import annotations

import datetime as _dt
import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from safetensors.torch import save_file

from mfas.errors import DataError
from mfas.fs import (  # noqa: F401  (re-exported)
    atomic_write_json,
    atomic_write_text,
    check_output_file,
    check_output_folder,
    existing_folder,
    replace_atomically,
    sha256_file,
)
from mfas.fs import first_line as _first_line
from mfas.fs import regular_file as _regular_file
from mfas.inference.bundle import (  # noqa: F401  (re-exported)
    BUNDLE_FORMAT,
    BUNDLE_VERSION,
    MAX_META_BYTES,
    BundleMeta,
    bundle_paths,
    check_option_values,
    read_bundle_meta,
    weights_header,
)
from mfas.inference.torch_model import _state_mismatch, load_bundle, load_weights, meta_model  # noqa: F401
from mfas.models.base import PadModel


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
        replace_atomically(tmp, p)

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None) -> dict:
        # resume checkpoints hold tensors and plain Python values only: never unpickle code
        p = check_torch_file(path)
        ck = _torch_load(p, map_location=map_location or "cpu")
        if not isinstance(ck, dict):
            raise DataError(p, f"not a checkpoint: it holds a {type(ck).__name__}, not a mapping")
        return ck


def save_weights(path: str | Path, state: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """A state dict as safetensors (CPU, contiguous), written atomically; ``metadata`` goes in the file's header."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp), metadata=metadata)
    replace_atomically(tmp, p)
    return p


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
            "weights_sha256": sha256_file(weights), **extra}
    atomic_write_json(d / "model.json", meta)
    return d
