"""The sample store: ``manifest.csv`` + one uint8 ``.npy`` per modality + ``store.json``.

A store is built in a sibling ``<name>.partial`` folder and renamed into place only after every
array, the manifest and finally ``store.json`` (with ``"complete": true``) are written and flushed.
A store without that file, with truncated arrays or with a manifest that disagrees with it is
refused on open, so a killed build is never read as valid.

Guarantees of a build (:class:`StoreWriter`, used by every builder: SimFAS, ``prepare``, your code):

* **one build per store at a time**: the builder holds ``<name>.lock`` (an exclusive ``flock`` on a
  file that names its pid, host and start time); a second build of the same store is refused with
  a :class:`StoreError` naming the lock and the holder; a lock left by a process that died (the
  kernel releases its ``flock``) is taken over with a note in the report;
* **nothing foreign is deleted**: ``overwrite`` replaces a store (a folder holding only store files),
  never another folder or a file; the ``.partial`` and ``.old`` siblings are removed only when they
  hold only store files;
* **atomic replacement**: the previous store stays valid until the new one is complete; a rebuild
  killed between the two renames leaves the previous store in ``<name>.old``, which the next build
  of that store puts back.

Checks when a store is opened (every time, cheap): ``store.json`` is valid JSON of this format with
the expected fields and types, its essential fields (:data:`ESSENTIAL_FIELDS`) match
``essential_sha256`` (stores built before that field existed are accepted without it, silently), the
manifest parses with known labels, PAI species and splits, and its SHA-256 matches ``manifest_sha256``
(an edited manifest is refused; every store of format 1 has that hash, so no store escapes the check),
every array has the byte size, dtype and shape ``store.json`` records (a truncated array is refused).
``verify=True`` also re-hashes every array (SHA-256 of all pixels).
"""

from __future__ import annotations

import csv
import datetime as _dt
import errno
import hashlib
import io
import json
import os
import shutil
import socket
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mfas.conventions import MODALITIES, MODALITY_CHANNELS, PAI_SPECIES, SPLITS
from mfas.data.images import MIN_SIDE, conform, describe_missing, fit_size, read_image
from mfas.data.schema import Sample
from mfas.errors import DataError, StoreError

try:
    import fcntl
except ImportError:  # not POSIX: the lock falls back to O_EXCL and the holder's pid
    fcntl = None  # type: ignore[assignment]

FORMAT = "mfas-store"
VERSION = 1
META_COLUMNS = ("sample_id", "dataset", "domain", "split", "label", "pai", "subject", "video", "frame")
_HEADER_BYTES = 128  # fixed .npy header length so the row count can be patched in place
#: Largest side of a stored image (pixels); the smallest is images.MIN_SIDE.
MAX_STORE_SIDE = 2048
#: The fields of store.json that ``essential_sha256`` covers (what reading and counting rely on).
ESSENTIAL_FIELDS = ("format", "version", "complete", "image_size", "modalities", "count", "arrays",
                    "manifest_sha256", "counts", "skipped", "skip_reasons")
#: The files a store folder may hold: a folder with anything else is never replaced or deleted.
STORE_FILES = frozenset({"store.json", "manifest.csv", "skipped.csv", ".DS_Store",
                         *(f"{m}.npy" for m in MODALITY_CHANNELS)})
_MAX_META_BYTES = 64 << 20  # store.json is a few kB; a larger one is not ours

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
    """What a store build did: counts written, every skipped sample with its reason, and notes (a stale
    lock taken over, a previous store put back)."""

    path: Path
    written: int
    skipped: list[tuple[str, str, str]]  # (sample_id, file or key, reason)
    notes: list[str] = field(default_factory=list)

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    def skip_reasons(self) -> Counter:
        return Counter(r for _, _, r in self.skipped)


# ------------------------------------------------------------------------------------------- paths

def _looks_like_store(folder: Path) -> str | None:
    """None when ``folder`` holds only store files (so it may be replaced), else the first foreign entry."""
    try:
        entries = sorted(folder.iterdir())
    except OSError as e:
        return f"<unreadable: {e.strerror or e}>"
    for entry in entries:
        if entry.name not in STORE_FILES or entry.is_symlink() or not entry.is_file():
            return entry.name
    return None


def _existing_ancestor(p: Path) -> Path:
    a = p
    while not os.path.lexists(a) and a != a.parent:
        a = a.parent
    return a


def _output_path(path: Path) -> Path:
    """The folder a build writes: ``path``, or the folder a symbolic link at ``path`` points to."""
    if not os.path.islink(path):
        return path
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise StoreError(f"{path}: {describe_missing(path)}; remove it or give another output folder") from None
    if not target.is_dir():
        raise StoreError(f"{path}: is a symbolic link to {target}, which is not a folder")
    return target


def _check_replaceable(path: Path, overwrite: bool, shown: Path) -> None:
    """Refuse to build over anything but a store (and over a store without ``overwrite``)."""
    if not os.path.lexists(path):
        return
    if not overwrite:
        raise StoreError(f"{shown}: already exists (pass overwrite=True, or --overwrite, to replace it)")
    if not path.is_dir():
        raise StoreError(f"{shown}: is a file, not a store; refusing to replace it")
    foreign = _looks_like_store(path)
    if foreign is not None:
        raise StoreError(f"{shown}: is not an mfas store (it holds {foreign!r}); refusing to replace a folder "
                         "that holds anything but store files: give another output folder")


def _make_parent(path: Path, shown: Path) -> None:
    """Create the folder the store goes in, or a StoreError that says why it cannot be."""
    parent = path.parent
    anc = _existing_ancestor(parent)
    if os.path.islink(anc) and not anc.exists():
        raise StoreError(f"{shown}: cannot create it: {anc} {describe_missing(anc)}")
    if not anc.is_dir():
        raise StoreError(f"{shown}: cannot create it: {anc} is a file, not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise StoreError(f"{shown}: cannot create it: the folder {anc} is not writable (permission denied)")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(f"{shown}: cannot create its folder {parent}: {e.strerror or e}") from None


def _remove_ours(folder: Path, what: str) -> None:
    """Delete a ``.partial`` or ``.old`` sibling, but only when it holds nothing but store files."""
    if not os.path.lexists(folder):
        return
    if folder.is_symlink() or not folder.is_dir():
        raise StoreError(f"{folder}: the {what} of this store should be a folder, but is a file or a link; move it "
                         "away, then build again")
    foreign = _looks_like_store(folder)
    if foreign is not None:
        raise StoreError(f"{folder}: the {what} of this store holds {foreign!r}, which no build writes; "
                         "move it away, then build again")
    shutil.rmtree(folder)


def check_free_space(path: str | Path, n: int, size: tuple[int, int], modalities: Sequence[str]) -> int:
    """Refuse (StoreError) a build of ``n`` samples that cannot fit on the disk of ``path``; returns the bytes
    it needs (the previous store, if any, stays until the new one is complete, so it is not counted as free)."""
    h, w = size
    need = int(n) * h * w * sum(MODALITY_CHANNELS[m] for m in modalities) + (1 << 20)
    anc = _existing_ancestor(Path(path).parent)
    try:
        free = shutil.disk_usage(anc).free
    except OSError:
        return need
    if need > free:
        raise StoreError(f"{path}: the store needs about {need / 2**30:.2f} GiB ({n:,} samples of {w}x{h}) but "
                         f"only {free / 2**30:.2f} GiB are free on {anc}")
    return need


# -------------------------------------------------------------------------------------------- lock

_HOST = socket.gethostname()
_HELD: set[int] = set()  # lock descriptors of this process, closed in forked children


def _close_held_in_child() -> None:
    for fd in list(_HELD):  # a forked worker must not keep the build lock alive after its parent died
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_held_in_child)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _holder_text(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 4096)
        info = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


class BuildLock:
    """The exclusive lock on building one store: ``<store>.lock``, which names its holder.

    The lock is an ``flock`` on that file (released by the kernel when the holder dies, however it dies),
    so a lock file left behind by a killed build is taken over with a note. Where ``flock`` is missing the
    file is created with ``O_EXCL`` and a lock whose pid no longer runs on this host is taken over.
    A lock held by another host is never taken over: the message says how to remove it.
    """

    def __init__(self, store: Path):
        self.store = Path(store)
        self.path = self.store.with_name(self.store.name + ".lock")
        self.fd: int | None = None
        self.owner = 0
        self.note: str | None = None

    def _busy(self, holder: dict) -> StoreError:
        pid, host, since = holder.get("pid", "?"), holder.get("host", "?"), holder.get("started", "?")
        if holder and host != _HOST:
            return StoreError(f"{self.path}: the store {self.store} is locked by a build on host {host} (pid {pid}, "
                              f"since {since}); this machine cannot tell whether it still runs: wait for it, or "
                              f"delete {self.path} if it has stopped")
        if holder:
            who = f"pid {pid}" + (" (this process)" if pid == os.getpid() else "") + f" on {host}, since {since}"
        else:
            who = "its holder has not written its pid yet"
        return StoreError(f"{self.path}: another build of {self.store} is running ({who}); wait for it to "
                          f"finish, or, if no such process exists any more, delete {self.path}")

    def _open(self, flags: int) -> int:
        try:
            return os.open(self.path, flags | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except FileExistsError:
            raise
        except OSError as e:
            why = "it is a symbolic link" if e.errno == errno.ELOOP else (e.strerror or str(e))
            raise StoreError(f"{self.path}: cannot create the build lock of {self.store}: {why}") from None

    def acquire(self) -> None:
        fd = self._acquire_flock() if fcntl is not None else None
        if fd is None:
            fd = self._acquire_excl()
        info = {"pid": os.getpid(), "host": _HOST, "store": str(self.store),
                "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        try:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, (json.dumps(info) + "\n").encode())
            os.fsync(fd)
        except OSError as e:
            os.close(fd)
            raise StoreError(f"{self.path}: cannot write the build lock: {e.strerror or e}") from None
        self.fd, self.owner = fd, os.getpid()
        _HELD.add(fd)

    def _acquire_flock(self) -> int | None:
        for _ in range(20):
            fd = self._open(os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder_text(fd)
                os.close(fd)
                raise self._busy(holder) from None
            except OSError:  # no flock on this file system
                os.close(fd)
                return None
            try:
                same = os.stat(self.path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the holder released (and unlinked) it between our open and flock: try again
                os.close(fd)
                continue
            prev = _holder_text(fd)
            if prev:
                if prev.get("host") != _HOST:
                    os.close(fd)
                    raise self._busy(prev)
                self.note = (f"took over the stale build lock {self.path} left by pid {prev.get('pid', '?')} "
                             f"(started {prev.get('started', '?')}), whose build no longer runs")
            return fd
        raise StoreError(f"{self.path}: could not take the build lock (it keeps being replaced)")

    def _acquire_excl(self) -> int:
        for _ in range(20):
            try:
                return self._open(os.O_RDWR | os.O_CREAT | os.O_EXCL)
            except FileExistsError:
                pass
            try:
                fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            except FileNotFoundError:
                continue
            except OSError as e:
                raise StoreError(f"{self.path}: cannot read the build lock: {e.strerror or e}") from None
            holder = _holder_text(fd)
            os.close(fd)
            pid = holder.get("pid")
            if not holder or holder.get("host") != _HOST or not isinstance(pid, int) or _alive(pid):
                raise self._busy(holder)
            self.note = (f"took over the stale build lock {self.path} left by pid {pid} "
                         f"(started {holder.get('started', '?')}), which no longer runs")
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        raise StoreError(f"{self.path}: could not take the build lock (it keeps being replaced)")

    def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is None or os.getpid() != self.owner:
            return
        try:
            if os.stat(self.path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                os.unlink(self.path)
        except OSError:
            pass
        _HELD.discard(fd)
        os.close(fd)


# ------------------------------------------------------------------------------------------ writer

class StoreWriter:
    """Write samples into a new store.

    >>> with StoreWriter("stores/x", size=(112, 112)) as w:   # doctest: +SKIP
    ...     w.add(sample)
    >>> w.report.written                                       # doctest: +SKIP

    ``on_error="skip"`` records a sample whose data is bad (missing file, corrupt image, wrong
    channels or size) in ``skipped.csv`` and the report, and goes on; ``"raise"`` stops the build.
    Either way nothing is dropped silently. Exceptions other than DataError always stop the build,
    leaving only the ``.partial`` folder behind.

    The writer holds the store's build lock (:class:`BuildLock`) from construction until :meth:`close`
    or :meth:`abort`: a second writer of the same store, in this process or another, gets a StoreError.
    ``size`` is (height, width), each side between images.MIN_SIDE (8) and :data:`MAX_STORE_SIDE` (2048).
    """

    def __init__(self, path: str | Path, size: tuple[int, int], modalities: Sequence[str] = MODALITIES,
                 provenance: dict | None = None, resize: bool = False, on_error: str = "raise",
                 overwrite: bool = False):
        shown = Path(path)
        try:
            hw = tuple(int(x) for x in size)
        except (TypeError, ValueError):
            hw = ()
        if len(hw) != 2 or not all(MIN_SIDE <= x <= MAX_STORE_SIDE for x in hw):
            raise StoreError(f"{shown}: image size {size!r}: expected (height, width), each side between "
                             f"{MIN_SIDE} and {MAX_STORE_SIDE} pixels")
        self.size = (hw[0], hw[1])
        if isinstance(modalities, str):
            modalities = (modalities,)
        self.modalities = tuple(m for m in MODALITIES if m in modalities)
        if set(modalities) - set(self.modalities) or not self.modalities:
            raise StoreError(f"modalities must be a non-empty subset of {MODALITIES}, got {list(modalities)}")
        if on_error not in ("raise", "skip"):
            raise StoreError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.path = _output_path(shown)
        self.overwrite = overwrite
        _check_replaceable(self.path, overwrite, shown)
        _make_parent(self.path, shown)
        self.provenance = dict(provenance or {})
        self.resize = resize
        self.on_error = on_error
        self.tmp = self.path.with_name(self.path.name + ".partial")
        self.old = self.path.with_name(self.path.name + ".old")
        self.notes: list[str] = []
        self._files: dict = {}
        self._inodes: dict[str, int] = {}
        self._hash: dict = {}
        self._rows: list[dict] = []
        self._ids: set[str] = set()
        self.skipped: list[tuple[str, str, str]] = []
        self.report: BuildReport | None = None
        self._lock = BuildLock(self.path)
        self._lock.acquire()  # from here on, this build alone touches the store and its siblings
        try:
            if self._lock.note:
                self.notes.append(self._lock.note)
            self._recover_old()
            _check_replaceable(self.path, overwrite, shown)
            _remove_ours(self.tmp, "unfinished build folder (.partial)")
            self.tmp.mkdir()
            for m in self.modalities:
                f = open(self.tmp / f"{m}.npy", "wb")
                self._files[m] = f
                self._inodes[m] = os.fstat(f.fileno()).st_ino
                f.write(_npy_header(self._shape(m, 0)))
                self._hash[m] = hashlib.sha256()
        except OSError as e:
            self.abort()
            raise StoreError(f"{self.tmp}: cannot start the build: {e.strerror or e}") from None
        except BaseException:
            self.abort()
            raise

    def _recover_old(self) -> None:
        """A rebuild killed between its two renames left the previous store in ``.old``: put it back."""
        if os.path.lexists(self.path) or not self.old.is_dir() or not (self.old / "store.json").is_file():
            return
        if _looks_like_store(self.old) is not None:
            return
        self.old.rename(self.path)
        self.notes.append(f"put back the previous store from {self.old} (an earlier rebuild was interrupted "
                          "between its two renames)")

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
        if self.report is not None or not self._files or any(f.closed for f in self._files.values()):
            raise StoreError(f"{self.path}: the writer is closed; no sample can be added")
        try:
            if not isinstance(sample, Sample):
                raise DataError("sample", f"expected a mfas.data.Sample, got {type(sample).__name__}")
            sample.validate()
            if sample.sample_id in self._ids:
                raise DataError(f"sample {sample.sample_id!r}", "duplicate sample_id")
            arrays = self._load(sample)
        except DataError as e:
            if self.on_error == "raise" or not isinstance(sample, Sample):
                raise
            self.skipped.append((sample.sample_id, e.path, e.reason))
            return False
        try:
            for m in self.modalities:
                a = arrays.get(m)
                buf = (a if a is not None else np.zeros(self._shape(m, 1)[1:], np.uint8)).tobytes()
                self._files[m].write(buf)
                self._hash[m].update(buf)
        except OSError as e:
            raise StoreError(f"{self.tmp}: cannot write the store: {e.strerror or e}") from None
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

    def _check_ours(self) -> None:
        """The .partial folder is still the one this writer fills (not removed or replaced meanwhile)."""
        for m, ino in self._inodes.items():
            try:
                same = os.stat(self.tmp / f"{m}.npy").st_ino == ino
            except OSError:
                same = False
            if not same:
                raise StoreError(f"{self.tmp}: the unfinished build was removed or replaced while this build "
                                 "was writing it (by hand, or by a program that ignores the build lock); "
                                 "nothing was stored: build again")

    def close(self) -> BuildReport:
        """Finish the build: patch headers, write manifest and store.json, move into place."""
        if self.report is not None:
            return self.report
        try:
            self._finish()
        except OSError as e:
            self.abort()
            raise StoreError(f"{self.tmp}: cannot finish the store: {e.strerror or e}") from None
        except BaseException:
            self.abort()
            raise
        self._lock.release()
        return self.report

    def _finish(self) -> None:
        self._check_ours()
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
        meta["essential_sha256"] = _essential_hash(meta)
        # store.json last: its presence with complete=true is what marks the store valid
        _fsync_write(self.tmp / "store.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
        self._check_ours()
        if os.path.lexists(self.path):
            if not self.overwrite:
                raise StoreError(f"{self.path}: appeared while this build ran (made by a program that ignores "
                                 f"the build lock?); the new store is left in {self.tmp}")
            _check_replaceable(self.path, True, self.path)
            _remove_ours(self.old, "previous store folder (.old)")
            self.path.rename(self.old)
            self.tmp.rename(self.path)
            shutil.rmtree(self.old)
        else:
            self.tmp.rename(self.path)
        _fsync_dir(self.path.parent)
        self.report = BuildReport(self.path, n, list(self.skipped), list(self.notes))

    def abort(self) -> None:
        """Stop the build: close the files and release the lock; the .partial folder stays, never valid."""
        for f in self._files.values():
            try:
                f.close()
            except OSError:
                pass
        self._lock.release()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()  # the .partial folder stays, and is never valid


def _fsync_dir(path: Path) -> None:
    """Make a rename durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _essential_hash(meta: dict) -> str:
    part = {k: meta[k] for k in ESSENTIAL_FIELDS if k in meta}
    return hashlib.sha256(json.dumps(part, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


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
        """Open and check a store (see the module's docstring for what is checked on every open).
        ``verify=True`` also re-hashes every array (slow: it reads every byte)."""
        p = Path(path)
        meta = _read_meta(p)
        columns, digest = _read_manifest(p, meta)
        if digest != meta["manifest_sha256"]:
            raise StoreError(f"{p / 'manifest.csv'}: changed since the store was built (its SHA-256 does not "
                             "match manifest_sha256 in store.json: a label, split or sample edited by hand?); "
                             "restore the original manifest or rebuild the store")
        arrays = {m: _open_array(p, m, meta) for m in meta["modalities"]}
        if verify:
            for m in meta["modalities"]:
                _verify_hash(p, m, meta)
        return cls(p, meta, columns, arrays)

    def __len__(self) -> int:
        return int(self.meta["count"])

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, n={len(self)}, modalities={self.modalities})"

    @property
    def image_size(self) -> tuple[int, int]:
        h, w = self.meta["image_size"]
        return int(h), int(w)

    @property
    def crop(self) -> dict | None:
        """The face-crop policy the store was prepared with (``prepare --detect``), as recorded; None without."""
        pre = (self.meta.get("provenance") or {}).get("preprocessing") or {}
        crop = pre.get("crop") if isinstance(pre, dict) else None
        return crop if isinstance(crop, dict) else None

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
        if os.path.islink(p):
            raise StoreError(f"{p}: {describe_missing(p)}; it is not a store")
        old = p.with_name(p.name + ".old")
        hint = (f"; an interrupted rebuild left the previous store in {old}: rename it back to {p.name}, or build "
                "this store again, which puts it back") if (old / "store.json").is_file() else ""
        why = describe_missing(p)
        raise StoreError(f"{p}: no such store" + ("" if why == "does not exist" else f" (it {why})") + hint)
    if not p.is_dir():
        raise StoreError(f"{p}: a store is a folder, this is a file")
    mf = p / "store.json"
    if not mf.exists():
        hint = " (a build was interrupted or is still running)" if (p / "manifest.csv").exists() \
            or p.name.endswith(".partial") or any(p.glob("*.npy")) else ""
        raise StoreError(f"{p}: incomplete or not a store: store.json is missing{hint}; rebuild it")
    if not mf.is_file():
        raise StoreError(f"{mf}: is not a regular file; the store is damaged, rebuild it")
    if mf.stat().st_size > _MAX_META_BYTES:
        raise StoreError(f"{mf}: {mf.stat().st_size:,} bytes, far larger than any store.json; not an mfas store")
    try:
        meta = json.loads(mf.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StoreError(f"{mf}: not valid JSON ({e}); the store is damaged, rebuild it") from None
    except OSError as e:
        raise StoreError(f"{mf}: cannot be read: {e.strerror or e}") from None
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
    _check_meta_types(mf, meta)
    want = meta.get("essential_sha256")
    if want is not None and want != _essential_hash(meta):
        raise StoreError(f"{mf}: changed since the store was built: its fields ({', '.join(ESSENTIAL_FIELDS)}) "
                         "no longer match essential_sha256; restore the original store.json or rebuild the store")
    return meta


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_meta_types(mf: Path, meta: dict) -> None:
    """store.json's fields have the types and ranges the reader relies on; StoreError naming the key otherwise."""
    size = meta["image_size"]
    if not (isinstance(size, list) and len(size) == 2 and all(_is_int(x) and x > 0 for x in size)):
        raise StoreError(f"{mf}: image_size must be [height, width] in pixels, got {size!r}")
    mods = meta["modalities"]
    if not (isinstance(mods, list) and mods and all(isinstance(m, str) for m in mods)):
        raise StoreError(f"{mf}: modalities must be a non-empty list of names, got {mods!r}")
    bad = [m for m in mods if m not in MODALITY_CHANNELS]
    if bad:
        raise StoreError(f"{mf}: unknown modality {bad[0]!r}")
    if len(set(mods)) != len(mods):
        raise StoreError(f"{mf}: modalities {mods!r} name one twice")
    if not (_is_int(meta["count"]) and meta["count"] >= 0):
        raise StoreError(f"{mf}: count must be a whole number of samples, got {meta['count']!r}")
    if not isinstance(meta["arrays"], dict):
        raise StoreError(f"{mf}: arrays must be a mapping of modality to array facts, got {meta['arrays']!r}")
    for m in mods:
        info = meta["arrays"].get(m)
        if info is None:
            raise StoreError(f"{mf}: no entry for array {m!r}")
        if not (isinstance(info, dict) and _is_int(info.get("bytes")) and isinstance(info.get("sha256"), str)):
            raise StoreError(f"{mf}: arrays.{m} must give the array's bytes and sha256, got {info!r}")
    if not isinstance(meta["manifest_sha256"], str):
        raise StoreError(f"{mf}: manifest_sha256 must be a hex string, got {meta['manifest_sha256']!r}")


def _read_manifest(p: Path, meta: dict) -> tuple[dict[str, np.ndarray], str]:
    """The manifest's columns, checked against store.json, and the SHA-256 of its bytes."""
    path = p / "manifest.csv"
    if not path.is_file():
        raise StoreError(f"{path}: missing" + ("" if not os.path.lexists(path) else " (not a regular file)"))
    try:
        data = path.read_bytes()
    except OSError as e:
        raise StoreError(f"{path}: cannot be read: {e.strerror or e}") from None
    digest = hashlib.sha256(data).hexdigest()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise StoreError(f"{path}: not UTF-8 text (byte {e.start}); the manifest is damaged, rebuild the store") \
            from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        try:
            header = next(reader)
        except StopIteration:
            raise StoreError(f"{path}: empty file (no header)") from None
        rows = list(reader)
    except csv.Error as e:
        raise StoreError(f"{path}, line {reader.line_num}: not valid CSV ({e})") from None
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
    try:
        cols["frame"] = cols["frame"].astype(np.int64) if rows else np.zeros(0, np.int64)
    except (ValueError, OverflowError):
        bad = next(i for i, v in enumerate(cols["frame"]) if not v.lstrip("-").isdigit())
        raise StoreError(f"{path}, line {bad + 2}: frame {cols['frame'][bad]!r} is not a whole number") from None
    for m in meta["modalities"]:
        c = cols[f"has_{m}"]
        if rows and not np.isin(c, ("0", "1")).all():
            raise StoreError(f"{path}: column has_{m} must hold 0 or 1")
        cols[f"has_{m}"] = (c == "1") if rows else np.zeros(0, bool)
    for c in ("sample_id", "dataset", "domain", "split", "pai", "subject", "video"):
        cols[c] = cols[c].astype(str)
    return cols, digest


def _open_array(p: Path, m: str, meta: dict) -> np.ndarray:
    path = p / f"{m}.npy"
    info = meta["arrays"][m]
    if not path.is_file():
        why = "missing modality array" if not os.path.lexists(path) else \
            f"missing modality array: it {describe_missing(path)}" if not path.exists() else "not a regular file"
        raise StoreError(f"{path}: {why}")
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
