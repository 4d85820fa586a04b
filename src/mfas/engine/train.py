"""Training a run: ``runs/<name>/`` as the design notes lay it out. Train, keep ``last.ckpt`` and the best
weights, select, then evaluate into the run folder (:mod:`mfas.engine.run_eval`).

A run folder is used by one training at a time (:class:`RunLock`), and what a training does with an existing folder
follows from the folder's state (:func:`run_state`, :func:`plan_run`): nothing finished is ever deleted.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import shutil
import socket
from fnmatch import fnmatch
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback

from mfas.engine.allocator import apply_allocator
from mfas.engine.config import ExperimentConfig, dump_config
from mfas.engine.data import PadDataModule
from mfas.engine.io import atomic_write_text, check_checkpoint, load_weights, save_weights
from mfas.engine.module import PadModule
from mfas.engine.resolve import check_protocol, resolve_protocol, resolve_stores
from mfas.engine.run_eval import evaluate_into
from mfas.engine.trainer import ResumePoint, make_trainer, quiet
from mfas.errors import ConfigError, DataError, MfasError, RunError
from mfas.models import create_model

log = logging.getLogger(__name__)

SELECTION_LABEL = {"last": "last epoch", "best_source_val": "lowest EER on the sources' validation data",
                   "oracle_target": "lowest EER on the target test sets (paper-compatible oracle)"}
BEST_FORMAT = "mfas-best-weights"
#: the file whose presence marks a finished run (the inference bundle, written after training and evaluation)
FINISHED_MARKER = "model.json"
#: the run lock, inside the run folder
LOCK_NAME = ".lock"
#: what a run writes before its first ``last.ckpt``: a folder holding only these is a run that stopped in its first
#: epoch (``logs/`` and ``tb/`` with only their own files)
_REMNANT_FILES = ("config.yaml", "best-epoch*.safetensors", ".*.tmp-*")
_REMNANT_DIRS = {"logs": ("metrics.csv", "hparams.yaml", ".*.tmp-*"), "tb": ("events.out.tfevents.*", "hparams.yaml")}


# -- the run lock ----------------------------------------------------------------------------------------------------

def _proc_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, Linux), to tell a reused pid from a lock's holder."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _process_alive(holder: dict) -> bool:
    """Whether the process a lock file names may still run (True when it cannot be told: another host, Windows)."""
    if holder.get("host") != socket.gethostname() or os.name == "nt":
        return True
    pid = holder.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass  # e.g. another user's process: it exists
    start = holder.get("proc_start")
    return start is None or _proc_start(pid) in (None, start)


def _flock(fd: int) -> bool | None:
    """Lock ``fd`` exclusively without waiting: True when locked, False when another process holds it, None when the
    system or file system has no ``flock``."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as e:
        import errno

        return False if e.errno in (errno.EAGAIN, errno.EACCES) else None


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _read_holder(fd: int) -> dict | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 1 << 16).decode("utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


class RunLock:
    """``<run>/.lock``: one training per run folder at a time.

    The lock file is created when missing and locked with ``flock``, which the system drops when its process ends,
    however it ends; the file records the holder (pid, host, start time) for the message a second training gets.
    A lock file left behind by a process that has ended is therefore taken over (with a warning naming that pid).
    Where the file system has no ``flock``, the recorded pid decides: the lock of a live process of this host, or of
    any process of another host, is respected; that of an ended process of this host is taken over. The holder
    removes the file when it is done. Extra ranks of a distributed run do not take it: their launcher holds it.
    """

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None
        self._made: list[Path] = []

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> RunLock:
        """Take the lock (creating the run folder when missing), or a :class:`RunError` naming the lock and its
        holder's pid."""
        self._made = []
        try:
            for _ in range(10):
                self._made = _make_dirs(self.run_dir) + self._made  # again: a failing starter may have removed it
                try:
                    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                except OSError as e:
                    raise RunError(f"{self.path}: cannot create the run lock ({e.strerror or e})") from None
                try:
                    taken = self._take(fd)
                except BaseException:
                    os.close(fd)
                    raise
                if taken:
                    self._fd = fd
                    return self
                os.close(fd)  # released and removed while we locked it: open the new one
            raise RunError(f"{self.path}: the run lock keeps changing hands; is another training of this run starting?")
        except BaseException:
            self._remove_made()
            raise

    def _take(self, fd: int) -> bool:
        locked = _flock(fd)
        holder = _read_holder(fd)
        if locked is False or (locked is None and holder is not None and _process_alive(holder)):
            raise RunError(self._held_message(holder, locked))
        if not _same_file(fd, self.path):
            return False
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "proc_start": _proc_start(os.getpid()), "command": "mfas train"}
        if holder is not None and (holder.get("pid"), holder.get("host")) != (me["pid"], me["host"]):
            log.warning("%s: taking over the lock of pid %s on %s, which has ended", self.path, holder.get("pid"),
                        holder.get("host"))
        data = json.dumps(me).encode()
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, data)
        os.fsync(fd)
        return True

    def _held_message(self, holder: dict | None, locked: bool | None) -> str:
        if holder is None:
            who = "another process (it has not written its pid yet)"
        else:
            who = f"pid {holder.get('pid')} on {holder.get('host')}"
            if holder.get("started"):
                who += f" (since {holder['started']})"
        gone = "" if locked is False else f"; if that training is gone, delete {self.path}"
        return (f"{self.path}: run {self.run_dir} is being trained by {who}; two trainings of one run would corrupt "
                f"it. Wait for that training to end or stop it (a lock left by an ended process is taken over "
                f"automatically){gone}")

    def release(self, remove_created: bool = False) -> None:
        """Remove and unlock the lock file; with ``remove_created`` also the folders :meth:`acquire` created, when
        they are empty (a training that stopped before writing anything leaves nothing behind)."""
        if self._fd is not None:
            try:
                if _same_file(self._fd, self.path):
                    self.path.unlink()
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None
        if remove_created:
            self._remove_made()

    def _remove_made(self) -> None:
        for d in self._made:  # deepest first
            try:
                d.rmdir()
            except OSError:
                break
        self._made = []


def _make_dirs(path: Path) -> list[Path]:
    """Create ``path`` and its missing parents; the folders created, deepest first."""
    made, p = [], path
    while not p.exists() and p != p.parent:
        made.append(p)
        p = p.parent
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"{path}: cannot create the run folder ({e.strerror or e})") from None
    return made


# -- the state of a run folder ---------------------------------------------------------------------------------------

def _is_remnant(p: Path) -> bool:
    """Whether ``p`` (an entry of a run folder) is something a run writes before its first ``last.ckpt``."""
    if p.is_symlink():
        return False
    if p.is_dir():
        allowed = _REMNANT_DIRS.get(p.name)
        return allowed is not None and all(
            c.is_file() and not c.is_symlink() and any(fnmatch(c.name, a) for a in allowed) for c in p.iterdir())
    return p.is_file() and any(fnmatch(p.name, pat) for pat in _REMNANT_FILES)


def run_state(run_dir: Path) -> tuple[str, list[str]]:
    """The state of a run folder, and for ``foreign`` the entries no run writes:

    - ``absent``: no such folder; ``empty``: a folder with nothing but perhaps a lock file;
    - ``finished``: holds ``model.json`` (written once training and evaluation are done);
    - ``interrupted``: holds ``last.ckpt`` but no ``model.json`` (stopped after a completed epoch);
    - ``crashed``: holds only what a run writes before its first ``last.ckpt`` (``config.yaml``, ``logs/``, ``tb/``,
      a best-weights file, temporary files): it stopped during its first epoch;
    - ``foreign``: holds other files; ``not-a-folder``: the path is a file.
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        return ("not-a-folder" if run_dir.is_symlink() else "absent"), []
    if not run_dir.is_dir():
        return "not-a-folder", []
    entries = [p for p in run_dir.iterdir() if p.name != LOCK_NAME]
    names = {p.name for p in entries}
    if not entries:
        return "empty", []
    if FINISHED_MARKER in names:
        return "finished", []
    if "last.ckpt" in names:
        return "interrupted", []
    foreign = sorted(p.name for p in entries if not _is_remnant(p))
    return ("foreign", foreign) if foreign else ("crashed", [])


def plan_run(run_dir: Path, resume: bool) -> str:
    """What training does with ``run_dir``: ``fresh`` (absent or empty folder), ``resume`` (from ``last.ckpt``),
    ``restart`` (``--resume`` of a run that stopped in its first epoch: it starts again from epoch 0) or ``replace``
    (a new training over such a run's remnants). Anything else is a :class:`RunError` that changes nothing: a
    finished run is never resumed, replaced or deleted; an interrupted one is only resumed."""
    state, foreign = run_state(run_dir)
    if state == "not-a-folder":
        raise RunError(f"{run_dir}: exists and is not a folder; choose another run name")
    if resume:
        if state == "interrupted":
            return "resume"
        if state == "crashed":
            return "restart"
        if state == "finished":
            raise RunError(f"{run_dir}: already finished ({FINISHED_MARKER} is there); nothing to resume and nothing "
                           f"was changed. `mfas evaluate {run_dir}` scores it again; train under another name to "
                           f"start over")
        extra = f"; it holds files no run writes: {', '.join(foreign[:5])}" if foreign else ""
        raise RunError(f"{run_dir}: nothing to resume (no last.ckpt){extra}")
    if state in ("absent", "empty"):
        return "fresh"
    if state == "crashed":
        return "replace"
    if state == "interrupted":
        raise RunError(f"{run_dir}: run folder exists with an interrupted run (last.ckpt, no {FINISHED_MARKER}); "
                       f"continue it with --resume {run_dir}, or choose another name")
    if state == "finished":
        raise RunError(f"{run_dir}: run folder exists with a finished run ({FINISHED_MARKER}); choose another name "
                       f"(nothing was changed)")
    raise RunError(f"{run_dir}: run folder exists and holds files no run writes ({', '.join(foreign[:5])}); choose "
                   f"another name or move them; use --resume {run_dir} only for an interrupted run")


def clear_remnants(run_dir: Path) -> list[str]:
    """Delete what a run that stopped in its first epoch left (only such entries: see :func:`run_state`)."""
    gone = []
    for p in sorted(Path(run_dir).iterdir()):
        if p.name == LOCK_NAME or not _is_remnant(p):
            continue
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()
        gone.append(p.name)
    return gone


def read_resume_point(last: Path, model: torch.nn.Module | None = None) -> ResumePoint:
    """The epoch ``last.ckpt`` completed and the logging step after it. The file is opened by
    :func:`~mfas.engine.io.check_checkpoint` (a torch zip archive, memory-mapped, ``weights_only``; with ``model``,
    its weights must have this model's names and shapes); a :class:`DataError` naming the file otherwise."""
    hint = "the run cannot be resumed from it. Restore the file, or train again under another name"
    try:
        ck = check_checkpoint(last, model=model)
    except DataError as e:
        raise DataError(last, f"{e.reason}; {hint}") from None
    try:
        step = ck.get("loops", {}).get("fit_loop", {}).get("epoch_loop.state_dict", {}).get(
            "_batches_that_stepped", ck["global_step"])
        return ResumePoint(epoch=int(ck["epoch"]), step=int(step))
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise DataError(last, f"not a readable resume checkpoint ({first}); {hint}") from None


# -- training --------------------------------------------------------------------------------------------------------

def best_weights_path(run_dir: Path, epoch: int) -> Path:
    """Where a run keeps the weights of its best epoch so far (selection policies other than ``last``)."""
    return Path(run_dir) / f"best-epoch{epoch}.safetensors"


class RunCheckpoints(Callback):
    """The run's files for resuming and model selection, in the way of Lightning's ``ModelCheckpoint``:

    - ``last.ckpt`` at the end of every training epoch (after validation), written atomically, after the epoch's
      log rows have been written out (so the logs on disk always cover the checkpoint);
    - ``best-epoch<N>.safetensors``, the weights of the best epoch so far under the selection policy, written
      atomically by rank 0 right after the validation that found it (nothing is written under ``last``).

    The best weights are kept out of ``last.ckpt`` (and out of memory); ``last.ckpt`` records which epoch is
    best. A superseded best file is deleted only after a ``last.ckpt`` naming the new one is on disk, so a run
    killed at any point resumes with the file its checkpoint names. All ranks read the file at the end of
    training: the run folder must be visible to every rank, as for resuming.
    """

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)

    def on_validation_end(self, trainer: L.Trainer, pl_module: PadModule) -> None:
        if trainer.sanity_checking or pl_module.best_epoch != trainer.current_epoch or not trainer.is_global_zero:
            return
        save_weights(best_weights_path(self.run_dir, pl_module.best_epoch), pl_module.model.state_dict(),
                     {"format": BEST_FORMAT, "epoch": str(pl_module.best_epoch),
                      "value": repr(pl_module.best_value), "selection": pl_module.selection})

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: PadModule) -> None:
        for logger in trainer.loggers:
            logger.save()
        trainer.save_checkpoint(self.run_dir / "last.ckpt", weights_only=False)
        self.prune(trainer, pl_module)

    def on_fit_end(self, trainer: L.Trainer, pl_module: PadModule) -> None:
        self.prune(trainer, pl_module)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: PadModule, checkpoint: dict) -> None:
        # checkpoints of earlier versions carried the best state dict itself: move it to its file
        legacy = checkpoint.pop("mfas_best_state", None)
        epoch = int(checkpoint.get("mfas", {}).get("best_epoch", -1))
        if legacy is not None and epoch >= 0 and trainer.is_global_zero:
            save_weights(best_weights_path(self.run_dir, epoch), legacy, {"format": BEST_FORMAT, "epoch": str(epoch)})

    def prune(self, trainer: L.Trainer, pl_module: PadModule) -> None:
        """Delete best-weight files other than the current best's (rank 0)."""
        if not trainer.is_global_zero:
            return
        keep = best_weights_path(self.run_dir, pl_module.best_epoch) if pl_module.best_epoch >= 0 else None
        for p in self.run_dir.glob("best-epoch*.safetensors"):
            if p != keep:
                p.unlink(missing_ok=True)


def launching_process() -> bool:
    """False in the extra ranks of a distributed run (started by Lightning, torchrun or SLURM), which find the run
    folder that rank 0 has already begun."""
    return all(os.environ.get(k, "0") == "0" for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def steps_per_epoch(cfg: ExperimentConfig, n_train: int, world: int) -> int:
    batches = cfg.data.batches_per_epoch or math.ceil(n_train / cfg.data.batch_size)
    return max(1, math.ceil((batches // world) / cfg.trainer.accumulate_grad_batches))


def train(cfg: ExperimentConfig, resume: bool = False, stores: dict[str, Path] | None = None) -> Path:
    """Train, select, score every target, and write the run. Returns the run folder.

    The run folder is locked for the whole training (:class:`RunLock`); what happens to an existing folder is
    :func:`plan_run`'s rule. ``resume`` continues an interrupted run from ``last.ckpt`` (its logs continue too), and
    starts again a run that stopped in its first epoch. Every check that can fail on the config, the protocol, the
    checkpoint, the stores or the model runs before anything in the folder changes; a training that fails that early
    leaves no folder behind that it created.
    """
    quiet()
    run_dir = cfg.run_dir
    last = run_dir / "last.ckpt"
    launcher = launching_process()
    protocol = resolve_protocol(cfg)
    check_protocol(cfg, protocol)
    if launcher:
        plan_run(run_dir, resume)  # fail fast, before building anything; decided again under the lock
    lock = RunLock(run_dir).acquire() if launcher else None
    started = False
    try:
        plan = plan_run(run_dir, resume) if launcher else ("resume" if resume and last.exists() else "fresh")
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        apply_allocator(cfg.trainer.cpu_allocator)
        store_set = resolve_stores(cfg, stores)
        model = create_model(cfg.model.name, **cfg.model.overrides)
        size = cfg.data.image_size
        if size is not None and tuple(model.input_size) != (size, size):
            raise ConfigError(f"data.image_size {size}: model {cfg.model.name!r} takes "
                              f"{model.input_size[1]}x{model.input_size[0]} inputs and has no img_size option; "
                              "remove data.image_size")
        start = read_resume_point(last, model) if plan == "resume" else None
        extra = protocol.tests if cfg.eval.selection == "oracle_target" else ()
        dm = PadDataModule(protocol, store_set, cfg.data, model.modalities, model.input_size,
                           model.norm_stats, cfg.seed, extra_eval=extra)
        dm.setup()
        try:
            trainer = make_trainer(cfg, run_dir, callbacks=[RunCheckpoints(run_dir)], resume=start)
        except (MisconfigurationException, ValueError, TypeError) as e:  # e.g. an accelerator this machine lacks
            t = cfg.trainer
            raise ConfigError(f"trainer (accelerator {t.accelerator}, devices {t.devices}, strategy {t.strategy}, "
                              f"precision {t.precision}): {(str(e).strip().splitlines() or [''])[0]}") from None
        world = trainer.world_size
        batches = cfg.data.batches_per_epoch or math.ceil(len(dm.train.labels) / cfg.data.batch_size)
        if batches < world:
            raise ConfigError(f"data.batches_per_epoch: {batches} batches per epoch shared by {world} processes leave "
                              f"some with none, and an epoch would train nothing; give at least {world}")
        per_epoch = steps_per_epoch(cfg, len(dm.train.labels), world)
        total = per_epoch * cfg.trainer.max_epochs
        if cfg.trainer.max_steps > 0:
            total = min(total, cfg.trainer.max_steps)
        val_names = (["select"] if dm.select is not None else []) + [t.name for t in extra]
        val_labels = ([dm.select.labels] if dm.select is not None else []) + [dm.eval_part(t).labels for t in extra]
        module = PadModule(model, cfg.optim, total, val_names, val_labels, cfg.eval.selection, per_epoch)
        started = True
        if trainer.is_global_zero:
            if plan in ("restart", "replace"):
                gone = clear_remnants(run_dir)
                log.warning("%s: the run stopped during its first epoch (no last.ckpt); %s it from epoch 0 (removed: "
                            "%s)", run_dir, "restarting" if plan == "restart" else "training it again",
                            ", ".join(gone) or "nothing")
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
        trainer.fit(module, datamodule=dm, ckpt_path=str(last) if start is not None else None)

        selection = {"policy": cfg.eval.selection, "rule": SELECTION_LABEL[cfg.eval.selection],
                     "paper_compatible": cfg.eval.selection == "oracle_target",
                     "epoch": int(trainer.current_epoch) - 1}
        if cfg.eval.selection != "last" and module.best_epoch >= 0:
            state, meta = load_weights(best_weights_path(run_dir, module.best_epoch))
            if meta.get("format") != BEST_FORMAT or meta.get("epoch") != str(module.best_epoch):
                raise MfasError(f"{best_weights_path(run_dir, module.best_epoch)}: not the best weights of epoch "
                                f"{module.best_epoch}")
            model.load_state_dict(state)
            selection["epoch"] = module.best_epoch
        elif cfg.eval.selection != "last":
            selection["note"] = "no validation result was available; the last epoch was kept"
        selection["history"] = module.history
        model.eval()
        evaluate_into(trainer, model, dm, protocol, cfg, run_dir, selection, write_bundle=True)
        return run_dir
    finally:
        if lock is not None:
            lock.release(remove_created=not started)
