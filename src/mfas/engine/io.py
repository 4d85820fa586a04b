"""Atomic writes, resume checkpoints and the inference bundle (safetensors + JSON, no pickle)."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from mfas.errors import MfasError
from mfas.models import create_model
from mfas.models.base import PadModel

BUNDLE_FORMAT = "mfas-bundle"
BUNDLE_VERSION = 1


def _replace_atomically(tmp: Path, dst: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, dst)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write via a temporary file and rename: readers see the old or the new file, never half."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    _replace_atomically(tmp, p)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written to a temporary file, fsynced, then renamed over the old one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
        torch.save(checkpoint, tmp)
        _replace_atomically(tmp, p)

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None) -> dict:
        # resume checkpoints hold tensors and plain Python values only: never unpickle code
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)


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


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(state dict, header metadata) of a safetensors file written by :func:`save_weights`; nothing is unpickled."""
    p = Path(path)
    if not p.exists():
        raise MfasError(f"{p}: missing")
    with safe_open(str(p), framework="pt") as f:
        metadata = dict(f.metadata() or {})
    return load_file(str(p)), metadata


def save_bundle(run_dir: str | Path, model: PadModel, extra: dict) -> Path:
    """Write ``model.safetensors`` and ``model.json`` (architecture, preprocessing, threshold, ...)."""
    d = Path(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    weights = save_weights(d / "model.safetensors", model.state_dict(), {"format": BUNDLE_FORMAT})
    from mfas import __version__

    meta = {"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "mfas_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "model": model.config, "preprocessing": model.preprocessing(),
            "supports_missing": bool(model.supports_missing),
            "label_convention": "label 1 = bona fide; score = P(bona fide); accept when score >= threshold",
            "weights_sha256": _sha256(weights), **extra}
    atomic_write_json(d / "model.json", meta)
    return d


def read_bundle_meta(path: str | Path) -> dict:
    d = Path(path)
    mj = d / "model.json" if d.is_dir() else d
    if not mj.exists():
        raise MfasError(f"{mj}: no model.json (is this a run folder or bundle?)")
    try:
        meta = json.loads(mj.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise MfasError(f"{mj}: not valid JSON ({e})") from None
    if meta.get("format") != BUNDLE_FORMAT or meta.get("version") != BUNDLE_VERSION:
        raise MfasError(f"{mj}: not an mfas bundle of version {BUNDLE_VERSION}")
    return meta


def load_bundle(path: str | Path, verify: bool = True) -> tuple[PadModel, dict]:
    """Rebuild the model from ``model.json`` and load ``model.safetensors`` (no pickle involved)."""
    d = Path(path)
    d = d if d.is_dir() else d.parent
    meta = read_bundle_meta(d)
    weights = d / "model.safetensors"
    if not weights.exists():
        raise MfasError(f"{weights}: missing")
    if verify and _sha256(weights) != meta.get("weights_sha256"):
        raise MfasError(f"{weights}: does not match the hash in model.json (corrupted or replaced)")
    cfg = dict(meta["model"])
    name = cfg.pop("name")
    if cfg.get("pretrained"):
        cfg["pretrained"] = None  # initial weights only: the bundle's own weights replace them
    model = create_model(name, **cfg)
    state = load_file(str(weights))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise MfasError(f"{weights}: weights do not fit {name!r} (missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.eval()
    return model, meta
