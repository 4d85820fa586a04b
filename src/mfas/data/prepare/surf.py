"""CASIA-SURF (called MmFA in some papers): the cropped release and the challenge list files.

Cropped release layout::

    ROOT/[CASIA-SURF-CROP/]{real_part,fake_part}/{real,fake}_{train,val,test}_part/<ID>/<video>.rssdk/
        {color,depth,ir}/<n>.jpg

Bona fide videos are ``real.rssdk``; attack videos ``<k>_<cut>_<shape>.rssdk`` (``01_e_s``: eyes cut,
flat; ``06_enm_b``: eyes, nose and mouth cut, bent). Every CASIA-SURF attack is a printed photo with
regions cut out, so every attack is PAI species ``cut``.

Challenge list files (``train_list.txt``, ``val_private_list.txt``, ``test_private_list.txt``) hold one
frame per line: three image paths and a label, 1 = bona fide. Their column order is colour, IR, depth
(as Idiap's bob reads them); a column whose path names its modality folder (``/depth/``) is taken by
that name instead, so a list in the other order is read correctly too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from mfas.data.prepare.core import FramePolicy, Item, Skip, plan_video
from mfas.data.prepare.listfiles import read_lines, split_from_name
from mfas.data.prepare.registry import Adapter, Option, frames_option, register_adapter
from mfas.errors import ConfigError

DATASET, DOMAIN = "CASIA-SURF", "S"
_PART = re.compile(r"^(real|fake)_(train|val|test)_part$")
_ATTACK = re.compile(r"^\d{2}_[enm]+_[sb]$")
FOLDER_MODALITY = {"color": "rgb", "rgb": "rgb", "depth": "depth", "ir": "ir"}


def decode(parts: Sequence[str]) -> dict | None:
    """Metadata from the components of a path inside a cropped-release video (None if it is not one)."""
    for i, p in enumerate(parts):
        m = _PART.match(p)
        if m and i + 2 < len(parts):
            ident, video = parts[i + 1], parts[i + 2]
            name = video.removesuffix(".rssdk")
            real = m.group(1) == "real"
            if (real and name != "real") or (not real and not _ATTACK.match(name)):
                return None
            return {"split": m.group(2), "subject": f"S/{ident}", "video": f"S/{ident}/{name}",
                    "pai": "bonafide" if real else "cut"}
    return None


def modality_named(path: str) -> str | None:
    """The modality a path names by a folder (``.../depth/31.jpg``) or a stem suffix (``000000-ir.jpg``)."""
    p = Path(path)
    named = [FOLDER_MODALITY[x] for x in p.parent.parts if x in FOLDER_MODALITY]
    if named:
        return named[-1]
    suffix = re.split(r"[-_]", p.stem)[-1].lower()
    return FOLDER_MODALITY.get(suffix)


def _base(root: Path) -> Path:
    return root / "CASIA-SURF-CROP" if (root / "CASIA-SURF-CROP").is_dir() else root


@register_adapter("surf")
class SurfAdapter(Adapter):
    description = "CASIA-SURF cropped release, or its challenge list files."
    options = (frames_option("even:3"),
               Option("lists", (), "A challenge list file (repeatable) instead of the release tree; its split comes "
                                   "from its name unless --split is given.", type=list[Path], flag="--list",
                      input_file=True),
               Option("columns", "rgb,ir,depth", "Lists: the modality of each path column when the path does not "
                                                 "name it."),
               Option("split", None, "Lists: the split of every --list file (default: from the file's name)."))

    def plan(self, root: Path, options: dict) -> Iterator[Item | Skip]:
        """Items from the cropped release under ``root``, or from challenge ``lists`` resolved under ``root``."""
        root, split = Path(root), options["split"]
        if options["lists"]:
            yield from _plan_lists(root, options["lists"], options["columns"], split)
            return
        policy = FramePolicy.parse(options["frames"])
        base = _base(root)
        dirs = sorted(p for p in base.glob("*_part/*_part/*/*.rssdk") if p.is_dir())
        if not dirs:
            raise ConfigError(f"{root}: no CASIA-SURF videos (expected real_part/real_train_part/<ID>/real.rssdk/"
                              "color/)")
        for vd in dirs:
            meta = decode(vd.parts)
            if meta is None:
                yield Skip(vd.name, str(vd), "not a CASIA-SURF video folder name")
                continue

            def make(n: int, files: dict, meta=meta) -> Item:
                return Item(sample_id=f"{meta['video']}/{meta['split']}/{n}", label=int(meta["pai"] == "bonafide"),
                            pai=meta["pai"], dataset=DATASET, domain=DOMAIN, split=split or meta["split"],
                            sources=files, subject=meta["subject"], video=meta["video"], frame=n)

            yield from plan_video({"rgb": vd / "color", "depth": vd / "depth", "ir": vd / "ir"}, policy, make,
                                  meta["video"])


def _plan_lists(root: Path, lists: Sequence[Path], columns: str, split: str | None) -> Iterator[Item | Skip]:
    order = [c.strip() for c in columns.split(",")]
    if sorted(order) != ["depth", "ir", "rgb"]:
        raise ConfigError(f"--columns must order rgb, depth and ir, got {columns!r}")
    for lf in lists:
        s = split or split_from_name(lf)
        for ln, fields in read_lines(lf, min_fields=4):
            where = f"{lf}:{ln}"
            paths, label = fields[:3], fields[3]
            if label not in ("0", "1"):
                yield Skip(where, where, f"label must be 0 or 1, got {label!r}")
                continue
            by_mod: dict[str, str] = {}
            for k, p in enumerate(paths):
                by_mod[modality_named(p) or order[k]] = p
            if len(by_mod) != 3:
                yield Skip(where, where, "two columns name the same modality")
                continue
            meta = decode(Path(by_mod["rgb"]).parts) or {}
            pai = "bonafide" if label == "1" else "cut"
            if meta and meta["pai"] != pai:
                yield Skip(where, where, f"label {label} contradicts the video name {meta['video']}")
                continue
            rgb = Path(by_mod["rgb"])
            video = meta.get("video") or f"S/{rgb.parent.as_posix()}"
            frame = int(re.sub(r"\D", "", rgb.stem) or 0)
            yield Item(sample_id=f"S/{rgb.as_posix()}", label=int(label), pai=pai, dataset=DATASET, domain=DOMAIN,
                       split=s, sources={m: root / p for m, p in by_mod.items()}, subject=meta.get("subject", ""),
                       video=video, frame=frame)
