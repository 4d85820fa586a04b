"""WMCA (Idiap): the preprocessed face-station HDF5 files and the grandtest / leave-one-attack-out CSVs.

Raw layout (as Idiap ships it)::

    ROOT/preprocessed-face-station_RGB/<date>/<video>.hdf5    colour, 3 x H x W per frame
    ROOT/preprocessed-face-station_CDIT/<date>/<video>.hdf5   grey/colour, depth, IR, thermal (4 x H x W)

Each file holds one group per frame, ``Frame_<n>``, with the pixels in its ``array`` dataset.
Protocol CSVs (``PROTOCOL-grandtest.csv``, ``PROTOCOL-LOO_<attack>.csv``, or CASIA-FAS's
``WMCA_Grandtest.txt``) have the columns ``client_id, filepath, group, label`` with ``filepath`` like
``face-station/17.01.18/002_01_003_2_81`` and groups train/dev/eval (-> train/val/test).

Video names are ``<client>_<session>_<presenter>_<type>_<pai>``; the PAI species comes from the last two
fields. The table below is read off the seven leave-one-attack-out lists (every ``type_pai`` code falls
in exactly one of them): fake head, flexible mask, glasses, paper mask, print, replay, rigid mask.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mfas.data.prepare.core import FramePolicy, Item, Skip, choose_frames, loader, to_uint8
from mfas.data.prepare.listfiles import read_csv
from mfas.data.prepare.registry import Adapter, Option, frames_option, register_adapter
from mfas.errors import ConfigError, DataError, require

DATASET, DOMAIN = "WMCA", "W"
GROUPS = {"train": "train", "dev": "val", "devel": "val", "validation": "val", "eval": "test", "test": "test"}
#: (type, pai) code ranges -> (WMCA attack category, mfas PAI species)
_CODES: list[tuple[str, list[int], str, str]] = [
    ("1", [1, 4, 5, 6, 7, 15, 16], "glasses", "partial"),
    ("1", [2, 13, 14], "rigid mask", "mask_rigid"),
    ("2", list(range(1, 8)), "fake head", "other"),
    ("2", list(range(8, 12)), "paper mask", "mask_paper"),
    ("2", list(range(12, 18)), "rigid mask", "mask_rigid"),
    ("2", [18, *range(75, 100)], "flexible mask", "mask_flexible"),
    ("3", [1, 2, 3, 4, 6, 7, 8, 9, 11, 12, 13, 14], "print", "print"),
    ("3", [5, 10, 15], "replay", "replay"),
    ("4", list(range(1, 19)), "replay", "replay"),
]
CODES = {(t, f"{p:02d}"): (cat, sp) for t, ps, cat, sp in _CODES for p in ps}


def decode(video: str) -> dict | None:
    """``002_01_003_2_81`` -> ``{"subject", "pai", "category"}``; None for an unknown code."""
    f = Path(video).name.split("_")
    if len(f) != 5 or not all(x.isdigit() for x in f):
        return None
    if f[3] == "0":
        return {"subject": f"W/{f[0]}", "pai": "bonafide", "category": "bona fide"}
    hit = CODES.get((f[3], f[4]))
    if hit is None:
        return None
    return {"subject": f"W/{f[0]}", "pai": hit[1], "category": hit[0]}


def frame_keys(path: Path) -> dict[int, str]:
    """``{frame number: HDF5 key}`` of a face-station file (``Frame_<n>`` groups)."""
    h5py = require("h5py", "hdf5", "reading WMCA HDF5 files")

    with h5py.File(path, "r") as f:
        return {int(k.split("_", 1)[1]): k for k in f if k.startswith("Frame_") and k.split("_", 1)[1].isdigit()}


@loader("h5frame")
def load_frame(path: str | Path, key: str, channels: tuple[int, ...]) -> np.ndarray:
    """Channels of one frame's ``array`` as uint8 H x W (one channel) or H x W x 3 (three)."""
    h5py = require("h5py", "hdf5", "reading WMCA HDF5 files")

    where = f"{path}[{key}]"
    with h5py.File(path, "r") as f:
        if key not in f:
            raise DataError(where, "frame not in file")
        node = f[key]
        a = np.asarray(node["array"] if isinstance(node, h5py.Group) else node)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise DataError(where, f"expected a C x H x W frame, got shape {a.shape}")
    if a.shape[0] > 8 and a.shape[2] <= 8:  # stored H x W x C
        a = a.transpose(2, 0, 1)
    if max(channels) >= a.shape[0]:
        raise DataError(where, f"needs channel {max(channels)}, the frame has {a.shape[0]}")
    a = a[list(channels)]
    img = to_uint8(a, where)
    return img[0] if img.shape[0] == 1 else np.ascontiguousarray(img.transpose(1, 2, 0))


def read_protocol(path: Path) -> list[dict]:
    """Rows of a WMCA protocol CSV with ``filepath``, ``group`` and ``label`` (bonafide/attack)."""
    return read_csv(path, {"filepath", "group", "label"}, "a WMCA protocol CSV (client_id optional)")


def default_protocol(root: Path) -> Path:
    for name in ("PROTOCOL-grandtest.csv", "WMCA_Grandtest.txt", "protocols/PROTOCOL-grandtest.csv"):
        if (root / name).is_file():
            return root / name
    raise ConfigError(f"{root}: no PROTOCOL-grandtest.csv; pass --protocol-csv (grandtest or LOO CSV)")


@register_adapter("wmca")
class WmcaAdapter(Adapter):
    description = "WMCA preprocessed face-station HDF5 + grandtest / leave-one-attack-out CSVs."
    options = (Option("protocol_csv", None, "The protocol CSV (grandtest or leave-one-attack-out; default "
                                            "PROTOCOL-grandtest.csv under --root).", type=Path, input_file=True),
               frames_option("even:3"),
               Option("rgb_source", "rgb-station", "rgb-station or cdit (the CDIT grey channel, for users without "
                                                   "the RGB tree)."))

    def plan(self, root: Path, options: dict) -> Iterator[Item | Skip]:
        """Items for every video of the protocol CSV.

        ``rgb_source``: ``rgb-station`` (the RGB camera's file, the default) or ``cdit`` (the CDIT station's
        first channel repeated to three, for users without the RGB tree).
        """
        protocol_csv, frames, rgb_source = options["protocol_csv"], options["frames"], options["rgb_source"]
        root = Path(root)
        if rgb_source not in ("rgb-station", "cdit"):
            raise ConfigError(f"rgb_source must be rgb-station or cdit, got {rgb_source!r}")
        policy = FramePolicy.parse(frames)
        rows = read_protocol(protocol_csv or default_protocol(root))
        for k, r in enumerate(rows, 2):
            fp = r["filepath"].strip()
            where = f"{protocol_csv or 'protocol'}:{k}"
            rel = Path(*Path(fp).parts[1:]) if Path(fp).parts[0] == "face-station" else Path(fp)
            video = f"W/{rel.name}"
            meta = decode(rel.name)
            group = GROUPS.get(r["group"].strip().lower())
            label = r["label"].strip().lower()
            if meta is None:
                yield Skip(video, where, f"unknown WMCA attack code in {rel.name!r}")
                continue
            if group is None:
                yield Skip(video, where, f"unknown group {r['group']!r} (expected train, dev or eval)")
                continue
            if (label == "bonafide") != (meta["pai"] == "bonafide"):
                yield Skip(video, where, f"label {label!r} contradicts the video code {rel.name}")
                continue
            cdit = root / "preprocessed-face-station_CDIT" / rel.with_suffix(".hdf5")
            rgbf = root / "preprocessed-face-station_RGB" / rel.with_suffix(".hdf5")
            files = {"cdit": cdit} if rgb_source == "cdit" else {"cdit": cdit, "rgb": rgbf}
            missing = [str(p) for p in files.values() if not p.is_file()]
            if missing:
                yield Skip(video, missing[0], "missing modality file (HDF5 not found)")
                continue
            try:
                keys = {n: frame_keys(p) for n, p in files.items()}
            except OSError as e:
                yield Skip(video, str(cdit), f"cannot read HDF5: {e}")
                continue
            chosen, skips = choose_frames({f"{n} station": v for n, v in keys.items()}, policy, video,
                                          {f"{n} station": str(p) for n, p in files.items()})
            yield from skips
            for n in chosen:
                src = {"depth": ("h5frame", str(cdit), keys["cdit"][n], (1,)),
                       "ir": ("h5frame", str(cdit), keys["cdit"][n], (2,)),
                       "rgb": ("h5frame", str(rgbf), keys["rgb"][n], (0, 1, 2)) if rgb_source == "rgb-station"
                       else ("h5frame", str(cdit), keys["cdit"][n], (0, 0, 0))}
                yield Item(sample_id=f"{video}/{n}", label=int(meta["pai"] == "bonafide"), pai=meta["pai"],
                           dataset=DATASET, domain=DOMAIN, split=group, sources=src, subject=meta["subject"],
                           video=video, frame=n)
