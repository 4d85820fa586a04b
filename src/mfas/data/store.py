"""The sample store: ``manifest.csv`` + one uint8 ``.npy`` per modality + ``store.json``.

A store is built in a sibling ``<name>.partial`` folder and renamed into place only after every
array, the manifest and finally ``store.json`` (with ``"complete": true``) are written and flushed.
A store without that file, with truncated arrays or with a manifest that disagrees with it is
refused on open, so a killed build is never read as valid.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mfas.conventions import MODALITIES, MODALITY_CHANNELS, PAI_SPECIES, SPLITS
from mfas.data.images import conform, fit_size, read_image
from mfas.data.schema import Sample
from mfas.errors import DataError, StoreError

FORMAT = "mfas-store"
VERSION = 1
META_COLUMNS = ("sample_id", "dataset", "domain", "split", "label", "pai", "subject", "video", "frame")
_HEADER_BYTES = 128  # fixed .npy header length so the row count can be patched in place


def _npy_header(shape: tuple[int, ...]) -> bytes:
    """A version 1.0 .npy header for a C-ordered uint8 array, padded to _HEADER_BYTES."""
    d = f"{{'descr': '|u1', 'fortran_order': False, 'shape': {tuple(shape)!r}, }}"
    body = d.encode("latin1")
    pad = _HEADER_BYTES - 10 - len(body) - 1
    if pad < 0:
        raise StoreError(f"array shape {shape} too large for the store header")
    return b"\x93NUMPY\x01\x00" + (_HEADER_BYTES - 10).to_bytes(2, "little") + body + b" " * pad + b"\n"


def _fsync_write(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


@dataclass
class BuildReport:
    """What a store build did: counts written and every skipped sample with its reason."""

    path: Path
    written: int
    skipped: list[tuple[str, str, str]]  # (sample_id, file or key, reason)

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    def skip_reasons(self) -> Counter:
        return Counter(r for _, _, r in self.skipped)


class StoreWriter:
    """Write samples into a new store.

    >>> with StoreWriter("stores/x", size=(112, 112)) as w:   # doctest: +SKIP
    ...     w.add(sample)
    >>> w.report.written                                       # doctest: +SKIP

    ``on_error="skip"`` records a sample whose data is bad (missing file, corrupt image, wrong
    channels or size) in ``skipped.csv`` and the report, and goes on; ``"raise"`` stops the build.
    Either way nothing is dropped silently. Exceptions other than DataError always stop the build,
    leaving only the ``.partial`` folder behind.
    """

    def __init__(self, path: str | Path, size: tuple[int, int], modalities: Sequence[str] = MODALITIES,
                 provenance: dict | None = None, resize: bool = False, on_error: str = "raise",
                 overwrite: bool = False):
        self.path = Path(path)
        self.size = (int(size[0]), int(size[1]))
        self.modalities = tuple(m for m in MODALITIES if m in modalities)
        if set(modalities) - set(self.modalities) or not self.modalities:
            raise StoreError(f"modalities must be a non-empty subset of {MODALITIES}, got {list(modalities)}")
        if on_error not in ("raise", "skip"):
            raise StoreError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if self.path.exists() and not overwrite:
            raise StoreError(f"{self.path}: already exists (pass overwrite=True to replace it)")
        self.provenance = dict(provenance or {})
        self.resize = resize
        self.on_error = on_error
        self.tmp = self.path.with_name(self.path.name + ".partial")
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)
        self._files = {}
        self._hash = {}
        for m in self.modalities:
            f = open(self.tmp / f"{m}.npy", "wb")
            f.write(_npy_header(self._shape(m, 0)))
            self._files[m] = f
            self._hash[m] = hashlib.sha256()
        self._rows: list[dict] = []
        self._ids: set[str] = set()
        self.skipped: list[tuple[str, str, str]] = []
        self.report: BuildReport | None = None

    def _shape(self, m: str, n: int) -> tuple[int, ...]:
        c = MODALITY_CHANNELS[m]
        return (n, *self.size) if c == 1 else (n, *self.size, c)

    def _load(self, s: Sample) -> dict[str, np.ndarray]:
        arrays = {}
        for m in self.modalities:
            src = s.images.get(m)
            if src is None:
                continue
            where = src if isinstance(src, str | Path) else f"sample {s.sample_id!r} ({m})"
            img = read_image(src, m) if isinstance(src, str | Path) else conform(src, m, where)
            arrays[m] = fit_size(img, self.size, self.resize, where, m)
        if not arrays:
            raise DataError(f"sample {s.sample_id!r}", f"no modality of {self.modalities} is present")
        return arrays

    def add(self, sample: Sample) -> bool:
        """Validate, decode and append one sample. Returns False when it was skipped."""
        try:
            sample.validate()
            if sample.sample_id in self._ids:
                raise DataError(f"sample {sample.sample_id!r}", "duplicate sample_id")
            arrays = self._load(sample)
        except DataError as e:
            if self.on_error == "raise":
                raise
            self.skipped.append((sample.sample_id, e.path, e.reason))
            return False
        for m in self.modalities:
            a = arrays.get(m)
            buf = (a if a is not None else np.zeros(self._shape(m, 1)[1:], np.uint8)).tobytes()
            self._files[m].write(buf)
            self._hash[m].update(buf)
        row = {k: getattr(sample, k) for k in META_COLUMNS}
        row.update({f"has_{m}": int(m in arrays) for m in self.modalities})
        self._rows.append(row)
        self._ids.add(sample.sample_id)
        return True

    def add_many(self, samples: Iterable[Sample]) -> None:
        for s in samples:
            self.add(s)

    def skip(self, sample_id: str, where: str, reason: str) -> None:
        """Record a sample an adapter could not even build (e.g. a list line with no files)."""
        self.skipped.append((sample_id, where, reason))

    def close(self) -> BuildReport:
        """Finish the build: patch headers, write manifest and store.json, move into place."""
        if self.report is not None:
            return self.report
        n = len(self._rows)
        arrays_meta = {}
        for m, f in self._files.items():
            f.seek(0)
            f.write(_npy_header(self._shape(m, n)))
            f.flush()
            os.fsync(f.fileno())
            f.close()
            arrays_meta[m] = {"file": f"{m}.npy", "shape": list(self._shape(m, n)), "dtype": "uint8",
                              "bytes": (self.tmp / f"{m}.npy").stat().st_size,
                              "sha256": self._hash[m].hexdigest()}
        columns = list(META_COLUMNS) + [f"has_{m}" for m in self.modalities]
        manifest = _rows_to_csv(columns, self._rows)
        _fsync_write(self.tmp / "manifest.csv", manifest)
        if self.skipped:
            _fsync_write(self.tmp / "skipped.csv",
                         _rows_to_csv(["sample_id", "where", "reason"],
                                      [dict(zip(("sample_id", "where", "reason"), r, strict=True))
                                       for r in self.skipped]))
        from mfas import __version__

        meta = {
            "format": FORMAT,
            "version": VERSION,
            "complete": True,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "mfas_version": __version__,
            "image_size": list(self.size),
            "modalities": list(self.modalities),
            "count": n,
            "skipped": len(self.skipped),
            "skip_reasons": dict(Counter(r for _, _, r in self.skipped)),
            "counts": _counts(self._rows, self.modalities),
            "arrays": arrays_meta,
            "manifest_sha256": hashlib.sha256(manifest.encode("utf-8")).hexdigest(),
            "provenance": self.provenance,
        }
        # store.json last: its presence with complete=true is what marks the store valid
        _fsync_write(self.tmp / "store.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
        if self.path.exists():
            old = self.path.with_name(self.path.name + ".old")
            if old.exists():
                shutil.rmtree(old)
            self.path.rename(old)
            self.tmp.rename(self.path)
            shutil.rmtree(old)
        else:
            self.tmp.rename(self.path)
        self.report = BuildReport(self.path, n, list(self.skipped))
        return self.report

    def abort(self) -> None:
        for f in self._files.values():
            f.close()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()  # the .partial folder stays, and is never valid


def _rows_to_csv(columns: list[str], rows: list[dict]) -> str:
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _counts(rows: list[dict], modalities: Sequence[str]) -> dict:
    out: dict = {}
    for key in ("dataset", "domain", "split", "label", "pai"):
        out[key] = dict(sorted(Counter(str(r[key]) for r in rows).items()))
    out["present"] = {m: sum(int(r[f"has_{m}"]) for r in rows) for m in modalities}
    return out


class Store:
    """A read-only, memory-mapped view of a complete store.

    Columns of the manifest are numpy arrays (``store.labels``, ``store.column("domain")``);
    images are memory-mapped arrays (``store.arrays["rgb"][i]``), so opening costs no decoding.
    """

    def __init__(self, path: Path, meta: dict, columns: dict[str, np.ndarray], arrays: dict[str, np.ndarray]):
        self.path = path
        self.meta = meta
        self._columns = columns
        self.arrays = arrays
        self.modalities: tuple[str, ...] = tuple(meta["modalities"])

    @classmethod
    def open(cls, path: str | Path, verify: bool = False) -> Store:
        """Open and check a store. ``verify=True`` also re-hashes every array (slow)."""
        p = Path(path)
        meta = _read_meta(p)
        columns = _read_manifest(p, meta)
        arrays = {m: _open_array(p, m, meta) for m in meta["modalities"]}
        if verify:
            for m in meta["modalities"]:
                _verify_hash(p, m, meta)
            text = (p / "manifest.csv").read_bytes()
            if hashlib.sha256(text).hexdigest() != meta["manifest_sha256"]:
                raise StoreError(f"{p / 'manifest.csv'}: content does not match the hash in store.json")
        return cls(p, meta, columns, arrays)

    def __len__(self) -> int:
        return int(self.meta["count"])

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, n={len(self)}, modalities={self.modalities})"

    @property
    def image_size(self) -> tuple[int, int]:
        h, w = self.meta["image_size"]
        return int(h), int(w)

    def column(self, name: str) -> np.ndarray:
        if name not in self._columns:
            raise StoreError(f"{self.path}: no manifest column {name!r}")
        return self._columns[name]

    @property
    def labels(self) -> np.ndarray:
        return self._columns["label"]

    def present(self, modalities: Sequence[str] = MODALITIES) -> np.ndarray:
        """(N, len(modalities)) bool: which modalities each sample has."""
        cols = [self._columns.get(f"has_{m}", np.zeros(len(self), bool)) for m in modalities]
        return np.stack(cols, axis=1) if cols else np.zeros((len(self), 0), bool)

    def select(self, split: str | Sequence[str] | None = None, domain: str | Sequence[str] | None = None,
               dataset: str | Sequence[str] | None = None) -> np.ndarray:
        """Indices of the samples matching every given filter (a value or a list of values)."""
        keep = np.ones(len(self), bool)
        for name, want in (("split", split), ("domain", domain), ("dataset", dataset)):
            if want is None:
                continue
            values = [want] if isinstance(want, str) else list(want)
            keep &= np.isin(self._columns[name], values)
        return np.flatnonzero(keep)

    def row(self, i: int) -> dict:
        """Manifest row ``i`` as a dict of Python values."""
        return {k: (v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in self._columns.items()}


def _read_meta(p: Path) -> dict:
    if not p.exists():
        raise StoreError(f"{p}: no such store")
    if not p.is_dir():
        raise StoreError(f"{p}: a store is a folder, this is a file")
    mf = p / "store.json"
    if not mf.exists():
        hint = " (a build was interrupted or is still running)" if (p / "manifest.csv").exists() \
            or p.name.endswith(".partial") or any(p.glob("*.npy")) else ""
        raise StoreError(f"{p}: incomplete or not a store: store.json is missing{hint}; rebuild it")
    try:
        meta = json.loads(mf.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StoreError(f"{mf}: not valid JSON ({e}); the store is damaged, rebuild it") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        fmt = meta.get("format") if isinstance(meta, dict) else None
        raise StoreError(f"{mf}: not an mfas store (format is {fmt!r})")
    if meta.get("version") != VERSION:
        raise StoreError(f"{mf}: store format version {meta.get('version')!r}, this mfas reads {VERSION}")
    if meta.get("complete") is not True:
        raise StoreError(f"{mf}: the store is marked incomplete; rebuild it")
    for key in ("image_size", "modalities", "count", "arrays", "manifest_sha256"):
        if key not in meta:
            raise StoreError(f"{mf}: missing key {key!r}")
    bad = [m for m in meta["modalities"] if m not in MODALITY_CHANNELS]
    if bad:
        raise StoreError(f"{mf}: unknown modality {bad[0]!r}")
    return meta


def _read_manifest(p: Path, meta: dict) -> dict[str, np.ndarray]:
    path = p / "manifest.csv"
    if not path.exists():
        raise StoreError(f"{path}: missing")
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise StoreError(f"{path}: empty file (no header)") from None
        rows = list(reader)
    need = list(META_COLUMNS) + [f"has_{m}" for m in meta["modalities"]]
    missing = [c for c in need if c not in header]
    if missing:
        raise StoreError(f"{path}: missing column(s) {', '.join(missing)}")
    if len(rows) != meta["count"]:
        raise StoreError(f"{path}: {len(rows)} rows but store.json says {meta['count']} "
                         "(truncated or edited manifest)")
    idx = {c: header.index(c) for c in header}
    for n, r in enumerate(rows, start=2):
        if len(r) != len(header):
            raise StoreError(f"{path}, line {n}: {len(r)} fields, expected {len(header)}")
    cols: dict[str, np.ndarray] = {}
    for c in header:
        cols[c] = np.array([r[idx[c]] for r in rows], dtype=object)
    try:
        labels = cols["label"].astype(np.int64) if rows else np.zeros(0, np.int64)
    except ValueError:
        bad = next(i for i, v in enumerate(cols["label"]) if not v.lstrip("-").isdigit())
        raise StoreError(f"{path}, line {bad + 2}: label {cols['label'][bad]!r} is not 0 or 1") from None
    for i, v in enumerate(labels):
        if v not in (0, 1):
            raise StoreError(f"{path}, line {i + 2}: unknown label {v} (1 = bona fide, 0 = attack)")
    for i, v in enumerate(cols["pai"]):
        if v not in PAI_SPECIES:
            raise StoreError(f"{path}, line {i + 2}: unknown PAI species {v!r}")
        if (v == "bonafide") != (labels[i] == 1):
            raise StoreError(f"{path}, line {i + 2}: label {labels[i]} contradicts PAI species {v!r}")
    for i, v in enumerate(cols["split"]):
        if v not in SPLITS:
            raise StoreError(f"{path}, line {i + 2}: unknown split {v!r}")
    cols["label"] = labels
    cols["frame"] = cols["frame"].astype(np.int64) if rows else np.zeros(0, np.int64)
    for m in meta["modalities"]:
        c = cols[f"has_{m}"]
        if rows and not np.isin(c, ("0", "1")).all():
            raise StoreError(f"{path}: column has_{m} must hold 0 or 1")
        cols[f"has_{m}"] = (c == "1") if rows else np.zeros(0, bool)
    for c in ("sample_id", "dataset", "domain", "split", "pai", "subject", "video"):
        cols[c] = cols[c].astype(str)
    return cols


def _open_array(p: Path, m: str, meta: dict) -> np.ndarray:
    path = p / f"{m}.npy"
    info = meta["arrays"].get(m)
    if info is None:
        raise StoreError(f"{p / 'store.json'}: no entry for array {m!r}")
    if not path.exists():
        raise StoreError(f"{path}: missing modality array")
    size = path.stat().st_size
    if size != info["bytes"]:
        raise StoreError(f"{path}: {size} bytes but store.json says {info['bytes']} (truncated or replaced)")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise StoreError(f"{path}: unreadable array ({e})") from None
    h, w = meta["image_size"]
    c = MODALITY_CHANNELS[m]
    want = (meta["count"], h, w) if c == 1 else (meta["count"], h, w, c)
    if arr.dtype != np.uint8 or tuple(arr.shape) != want:
        raise StoreError(f"{path}: array is {arr.dtype} {tuple(arr.shape)}, expected uint8 {want}")
    return arr


def _verify_hash(p: Path, m: str, meta: dict) -> None:
    path = p / f"{m}.npy"
    h = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(_HEADER_BYTES)
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    if h.hexdigest() != meta["arrays"][m]["sha256"]:
        raise StoreError(f"{path}: content does not match the hash in store.json (corrupted)")


def open_store(path: str | Path, verify: bool = False) -> Store:
    """Open a complete store; see :meth:`Store.open`."""
    return Store.open(path, verify=verify)
