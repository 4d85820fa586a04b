"""PADISI-Face (USC): one ``.npz`` per sample, plus the ground-truth and partition CSVs.

Each ``.npz`` holds a float array ``data`` whose first item is 5 x H x W in [0, 1]: channels 0-2 colour,
3 NIR, 4 depth. Files are read with ``allow_pickle=False``; an object array is refused.

Metadata (``../shared/data/lists/padisi/`` holds the public copies):
- ``padisi_USC_FACE_ground_truth.csv``: ``transaction_id, trial_id, ..., ground_truth, participant_id, ...``
  where ``ground_truth`` is ``m00000`` for bona fide and ``m5CCNN`` for an attack of category CC;
- ``padisi_USC_FACE_dataset_partition_3folds_part{0,1,2}.csv`` / ``..._all_test.csv``: ``trial_id`` ->
  ``partition_name`` (train / valid / test).

The category -> PAI species table below was read off the dataset's own free-text descriptions
(``padisi_USC_FACE_descriptions.csv``): 501 eyeglasses with printed or plastic eyes, 502 photo,
503 fake head, 504 hard mask, 505 plastic masks (50507 is a fabric mask), 506 make-up, 507 silicone
mask, 508 paper eyeglasses, 509 tattoos.

The sample files are looked up as ``<trial_id>.npz`` or ``<transaction_id>_<trial_id>.npz``, anywhere
under ``--root`` (also inside a ``<transaction_id>/`` folder). The MMDG benchmark's P lists name their
files by an opaque hash instead; read those with ``mfas data prepare lists``.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np

from mfas.data.prepare.core import Item, Skip, loader, to_uint8
from mfas.data.prepare.listfiles import read_csv
from mfas.data.prepare.registry import Adapter, Option, register_adapter
from mfas.errors import ConfigError, DataError

DATASET, DOMAIN = "PADISI-Face", "P"
CATEGORY_PAI = {"501": "partial", "502": "print", "503": "other", "504": "mask_rigid", "505": "mask_rigid",
                "506": "makeup", "507": "mask_flexible", "508": "partial", "509": "makeup"}
CODE_PAI = {"50507": "mask_flexible"}  # a fabric mask in the plastic-mask category
CHANNELS = {"rgb": (0, 1, 2), "ir": (3,), "depth": (4,)}
PARTITIONS = {"train": "train", "valid": "val", "val": "val", "test": "test"}


def pai_of(code: str) -> str | None:
    """``m00000`` -> bonafide, ``m50201`` -> print; None for a code outside the table."""
    c = code.strip().lower().removeprefix("m")
    if c == "00000":
        return "bonafide"
    return CODE_PAI.get(c) or CATEGORY_PAI.get(c[:3])


@lru_cache(maxsize=4)
def _sample(path: str) -> np.ndarray:
    """The 5 x H x W uint8 array of one PADISI file (cached: the three modalities read the same file)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            key = "data" if "data" in f.files else (f.files[0] if f.files else None)
            if key is None:
                raise DataError(path, "npz holds no array")
            a = np.asarray(f[key])
    except ValueError as e:  # object arrays need pickle, which is refused
        raise DataError(path, f"cannot read npz without unpickling: {e}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(path, f"cannot read npz (corrupt or truncated): {e}") from None
    if a.ndim == 4:
        a = a[0]
    if a.ndim == 3 and a.shape[0] != 5 and a.shape[-1] == 5:
        a = a.transpose(2, 0, 1)
    if a.ndim != 3 or a.shape[0] != 5:
        raise DataError(path, f"expected 5 x H x W (colour, NIR, depth), got shape {a.shape}")
    return to_uint8(a, path, scale="unit" if a.dtype.kind == "f" else "auto")


@loader("padisi")
def load_modality(path: str, modality: str) -> np.ndarray:
    a = _sample(path)[list(CHANNELS[modality])]
    return a[0] if a.shape[0] == 1 else np.ascontiguousarray(a.transpose(1, 2, 0))


def sources(path: Path) -> dict:
    return {m: ("padisi", str(path), m) for m in ("rgb", "depth", "ir")}


def _find(root: Path, name: str, default: str) -> Path:
    p = Path(name) if name else root / default
    if not p.is_file() and not name:
        hits = sorted(root.rglob(default))
        if hits:
            return hits[0]
    return p


@register_adapter("padisi")
class PadisiAdapter(Adapter):
    description = "PADISI-Face .npz samples + ground truth and partition CSVs."
    options = (Option("partition", "", "Partition CSV (default ..._3folds_part0.csv, found under --root).",
                      input_file=True),
               Option("ground_truth", "", "Ground-truth CSV (default padisi_USC_FACE_ground_truth.csv, found under "
                                          "--root).", input_file=True))

    def plan(self, root: Path, options: dict) -> Iterator[Item | Skip]:
        """Items for every trial of the partition file, with PAI and subject from the ground truth.

        ``partition`` / ``ground_truth``: file paths; by default the ``..._3folds_part0.csv`` (the partition
        of the MMDG P lists: 1,090 / 272 / 667) and ``..._ground_truth.csv`` found under ``root``.
        """
        partition, ground_truth = options["partition"], options["ground_truth"]
        root = Path(root)
        gt_path = _find(root, ground_truth, "padisi_USC_FACE_ground_truth.csv")
        part_path = _find(root, partition, "padisi_USC_FACE_dataset_partition_3folds_part0.csv")
        gt = {r["trial_id"]: r for r in read_csv(gt_path, {"transaction_id", "trial_id", "ground_truth"})}
        parts = read_csv(part_path, {"trial_id", "partition_name"})
        index: dict[str, Path] = {}
        for p in root.rglob("*.npz"):
            index.setdefault(p.stem, p)
            index.setdefault(f"{p.parent.name}_{p.stem}", p)
        if not index:
            raise ConfigError(f"{root}: no .npz files")
        for k, r in enumerate(parts, 2):
            tid = r["trial_id"].strip()
            where = f"{part_path}:{k}"
            split = PARTITIONS.get(r["partition_name"].strip().lower())
            g = gt.get(tid)
            if split is None:
                yield Skip(tid, where, f"unknown partition {r['partition_name']!r}")
                continue
            if g is None:
                yield Skip(tid, where, "trial not in the ground-truth file")
                continue
            pai = pai_of(g["ground_truth"])
            if pai is None:
                yield Skip(tid, where, f"unknown PADISI PAI code {g['ground_truth']!r}")
                continue
            f = index.get(tid) or index.get(f"{g['transaction_id']}_{tid}")
            if f is None:
                yield Skip(tid, str(root / f"{tid}.npz"), "missing sample file (no npz for this trial)")
                continue
            subj = g.get("participant_id") or g["transaction_id"]
            yield Item(sample_id=f"P/{tid}", label=int(pai == "bonafide"), pai=pai, dataset=DATASET, domain=DOMAIN,
                       split=split, sources=sources(f), subject=f"P/{subj}", video=f"P/{tid}", frame=0)
