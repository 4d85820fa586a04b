"""Files and paths: atomic writes, hashes, and checks that name the path as given. Depends on nothing above it."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from mfas.errors import DataError


def why_missing(p: Path) -> str:
    from mfas.data.images import describe_missing

    try:
        return describe_missing(p)
    except (OSError, ValueError) as e:  # an embedded NUL byte, a name too long
        return f"cannot be used as a path ({getattr(e, 'strerror', None) or e})"


def regular_file(p: Path, what: str = "") -> None:
    """A :class:`DataError` unless ``p`` is a regular file (FIFOs and devices would block or never end)."""
    if not p.exists():
        raise DataError(p, f"{what}{why_missing(p)}")
    if not p.is_file():
        kind = "a folder" if p.is_dir() else "not a regular file"
        raise DataError(p, f"{what}is {kind}")


def replace_atomically(tmp: Path, dst: Path) -> None:
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
        replace_atomically(tmp, p)
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


def first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def short(value: object, n: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


def _path_errors(fn):
    """Turn an OSError or ValueError from inspecting a path (a name too long, a NUL byte) into a DataError."""

    @functools.wraps(fn)
    def wrapper(path: str | Path, option: str, *args: Any, **kwargs: Any) -> Path:
        try:
            return fn(path, option, *args, **kwargs)
        except (OSError, ValueError) as e:
            raise DataError(short(str(path), 80), f"{option}: cannot be used as a path "
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
        raise DataError(p, f"{option}: {why_missing(p)}")
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
            raise DataError(p, f"{option}: cannot be written: {parent} {why_missing(parent)}")
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
        raise DataError(p, f"{what}: {why_missing(p)}")
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
        raise DataError(p, f"{option}: {why_missing(p)}")
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
