"""CASIA-SURF CeFA: the race part (AF, CA, EA) and the mask part (3D and silicone masks).

Raw layout (either naming, both occur in the published lists)::

    ROOT/[CeFA/]{CeFA-Race|Ethnicity}/<race>/<race>-<id>[-<idcard>]/<video>/{profile|color,depth,ir}/NNNN.jpg
    ROOT/[CeFA/]{CeFA-Mask|Mask}/{3D-Mask|Silicone-Mask}/<id>/<video>/{profile|color,depth,ir}/NNNN.jpg

Video names (``../shared/data/lists/casia-fas/CASIA_CeFA/readme.md``): race videos are
``<race>_<id>_<device>_<session>_<PAI>`` with PAI 1 real, 2 cloth print, 3 photo print, 4 screen replay;
mask videos are ``<1 3D | 2 silicone>_<id>_<dresses>_<glasses>_<device>_<session>_<lighting>``.
The faces come cropped inside a black frame, which is cut away (``crop_border``) before resizing.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from mfas.data.prepare.core import FramePolicy, Item, Skip, plan_video
from mfas.data.prepare.registry import Adapter, Option, frames_option, register_adapter
from mfas.errors import ConfigError

DATASET, DOMAIN = "CASIA-CeFA", "C"
RACE_DIRS, MASK_DIRS, RGB_DIRS = ("CeFA-Race", "Ethnicity"), ("CeFA-Mask", "Mask"), ("profile", "color")
RACES = {"1": "AF", "2": "CA", "3": "EA"}
RACE_PAI = {"1": "bonafide", "2": "print", "3": "print", "4": "replay"}
MASK_PAI = {"3D-Mask": "mask_rigid", "Silicone-Mask": "mask_flexible"}
SUBJECT_LIST = "lists/mmfas_cefa_subjects.csv"  # the shipped mmFAS split, by subject
_SUBJECT = re.compile(r"^(AF|CA|EA)-(\d{3})(?:-\d+)?$")


def decode(parts: tuple[str, ...]) -> dict | None:
    """Metadata from the path components of a CeFA video folder (or of a file inside it).

    Returns ``{"group", "subject", "video", "pai"}`` or None when the path is not a CeFA video.
    """
    for i, p in enumerate(parts):
        if p in RACE_DIRS and i + 3 < len(parts):
            race, subj, video = parts[i + 1], parts[i + 2], parts[i + 3]
            m = _SUBJECT.match(subj)
            f = video.split("_")
            if not m or len(f) != 5 or f[4] not in RACE_PAI or RACES.get(f[0]) != race:
                return None
            return {"group": race, "subject": f"{race}-{m.group(2)}", "video": f"{race}-{m.group(2)}/{video}",
                    "pai": RACE_PAI[f[4]], "number": m.group(2)}
        if p in MASK_DIRS and i + 3 < len(parts) and parts[i + 1] in MASK_PAI:
            kind, ident, video = parts[i + 1], parts[i + 2], parts[i + 3]
            if not ident.isdigit() or len(video.split("_")) != 7:
                return None
            return {"group": kind, "subject": f"{kind}-{ident}", "video": f"{kind}-{ident}/{video}",
                    "pai": MASK_PAI[kind], "number": ident}
    return None


def mmfas_split() -> dict[tuple[str, str], str]:
    """The shipped mmFAS subject split: ``(group, subject number) -> split`` (tools/make_mmfas_lists.py)."""
    text = resources.files("mfas.data.prepare").joinpath(SUBJECT_LIST).read_text("utf-8")
    return {(r["group"], r["subject"]): r["split"] for r in csv.DictReader(text.splitlines())}


def _base(root: Path) -> Path:
    return root / "CeFA" if (root / "CeFA").is_dir() and not any((root / d).is_dir() for d in RACE_DIRS) else root


def video_dirs(root: Path) -> Iterator[Path]:
    """Every video folder under the race and mask parts, in sorted order."""
    base = _base(root)
    for part in (*RACE_DIRS, *MASK_DIRS):
        top = base / part
        if top.is_dir():
            yield from sorted(p for p in top.glob("*/*/*") if p.is_dir())


def rgb_dir(video: Path) -> Path:
    for name in RGB_DIRS:
        if (video / name).is_dir():
            return video / name
    return video / RGB_DIRS[0]


@register_adapter("cefa")
class CefaAdapter(Adapter):
    description = "CASIA-SURF CeFA folders (race and mask parts), black borders cropped."
    options = (Option("split", "mmfas", "mmfas (the shipped 6:1:13 subject split), train, val or test."),
               frames_option("even:3"))

    def plan(self, root: Path, options: dict) -> Iterator[Item | Skip]:
        """Items for every CeFA video under ``root``.

        ``split``: ``mmfas`` assigns train/val/test by subject with the shipped 6:1:13 list; ``train``,
        ``val`` or ``test`` put everything in that split.
        """
        split = options["split"]
        root = Path(root)
        policy = FramePolicy.parse(options["frames"])
        table = mmfas_split() if split == "mmfas" else None
        if table is None and split not in ("train", "val", "test"):
            raise ConfigError(f"CeFA split must be mmfas, train, val or test, got {split!r}")
        dirs = list(video_dirs(root))
        if not dirs:
            raise ConfigError(f"{root}: no CeFA video folders (expected {RACE_DIRS[0]}/<race>/<race>-<id>/<video>/ "
                              f"or {MASK_DIRS[0]}/3D-Mask/<id>/<video>/)")
        for vd in dirs:
            meta = decode(vd.parts)
            if meta is None:
                yield Skip(vd.name, str(vd), "folder name is not a CeFA video name")
                continue
            s = table.get((meta["group"], meta["number"])) if table is not None else split
            if s is None:
                yield Skip(meta["video"], str(vd), "subject is not in the mmFAS split list")
                continue

            def make(n: int, files: dict, meta=meta, s=s) -> Item:
                return Item(sample_id=f"C/{meta['video']}/{n:04d}", label=int(meta["pai"] == "bonafide"),
                            pai=meta["pai"], dataset=DATASET, domain=DOMAIN, split=s, sources=files,
                            subject=meta["subject"], video=f"C/{meta['video']}", frame=n, crop_border=True)

            yield from plan_video({"rgb": rgb_dir(vd), "depth": vd / "depth", "ir": vd / "ir"}, policy, make,
                                  f"C/{meta['video']}")

    def inputs(self, options: dict) -> dict[str, str]:
        """The list files' hashes and, with ``split mmfas``, the shipped subject list's."""
        out = super().inputs(options)
        if options["split"] == "mmfas":
            text = resources.files("mfas.data.prepare").joinpath(SUBJECT_LIST).read_bytes()
            out[f"mfas:{SUBJECT_LIST}"] = hashlib.sha256(text).hexdigest()
        return out
