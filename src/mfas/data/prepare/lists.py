"""``mfas data prepare lists``: a store from published list files, paths resolved under ``--root``.

- MMDG benchmark lists (``C/P/S/W-{train,val,test}.txt``, the lists MMDA's protocols use): one frame
  per line, label 1 = bona fide; PADISI lines name an ``.npz``.
- CASIA-FAS protocol lists (``CASIA_CeFA@p1.1_video_train.txt``, ``IDIAP_WMCA/protocol/p1_video_*.txt``,
  ...): one video folder per line, **label 0 = bona fide**; frames are chosen by the frame policy.

The dataset, and with it the PAI decoding, comes from the path: ``CeFA``/``CASIA_CeFA`` (C),
``CASIA-SURF-CROP``/``CASIA_SURF`` (S), ``WMCA-Image``/``IDIAP_WMCA`` (W), ``.npz`` (P). A PADISI list
carries no PAI code; its attacks are species ``other`` unless ``ground_truth`` maps the file (a CSV with
``file`` and ``ground_truth`` columns).
A line repeated in two splits (the MMDG C lists put one CeFA frame in both val and test) is kept in
both, with the split in its sample id, and reported in the store's provenance.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from mfas.data.prepare import cefa, padisi, surf, wmca
from mfas.data.prepare.core import FramePolicy, Item, Skip, frames_in, plan_video
from mfas.data.prepare.listfiles import detect_format, read_csv, read_lines, split_from_name
from mfas.data.prepare.registry import REQUIRED, Adapter, Option, frames_option, register_adapter
from mfas.errors import ConfigError

DATASETS = {"C": cefa.DATASET, "P": padisi.DATASET, "S": surf.DATASET, "W": wmca.DATASET}
_PREFIX = {"CeFA": "C", "CASIA_CeFA": "C", "CASIA-SURF-CROP": "S", "CASIA_SURF": "S", "CASIA-SURF": "S",
           "WMCA-Image": "W", "IDIAP_WMCA": "W", "WMCA": "W"}


def dataset_of(path: str) -> str | None:
    if path.endswith(".npz"):
        return "P"
    return _PREFIX.get(Path(path).parts[0])


def describe(letter: str, path: str, bonafide: bool) -> dict | Skip:
    """PAI species, subject and video of a list entry, checked against its label."""
    parts = Path(path).parts
    if letter == "C":
        meta = cefa.decode(parts)
        if meta is None:
            return Skip(path, path, "not a CeFA video path")
        meta = {**meta, "video": f"C/{meta['video']}"}
    elif letter == "S":
        meta = surf.decode(parts)
        if meta is None:  # challenge / CASIA-FAS naming carries no attack code; every SURF attack is a cut print
            vid = next((p for p in parts if p.endswith(".rssdk")), Path(path).parent.name)
            ident = parts[parts.index(vid) - 1] if vid in parts and parts.index(vid) > 0 else ""
            meta = {"subject": f"S/{ident}", "video": f"S/{ident}/{vid.removesuffix('.rssdk')}",
                    "pai": "bonafide" if bonafide else "cut"}
    elif letter == "W":
        video = next((p for p in parts if wmca.decode(p) is not None), None)
        if video is None:
            return Skip(path, path, "no WMCA video name with a known attack code in the path")
        meta = {**wmca.decode(video), "video": f"W/{video}"}
    else:
        raise ConfigError(f"unknown dataset letter {letter!r}")
    if (meta["pai"] == "bonafide") != bonafide:
        return Skip(path, path, f"label says {'bona fide' if bonafide else 'attack'} but the name says {meta['pai']}")
    return meta


def _frame(path: str) -> int:
    digits = re.sub(r"\D", "", Path(path).stem)
    return int(digits) if digits else 0


def _padisi_gt(path: str | Path | None) -> dict[str, str]:
    if not path:
        return {}
    rows = read_csv(path, {"file", "ground_truth"}, "a PADISI mapping: npz file name -> PADISI code")
    return {Path(r["file"]).name: r["ground_truth"] for r in rows}


@register_adapter("lists")
class ListsAdapter(Adapter):
    description = "MMDG benchmark lists and CASIA-FAS protocol lists, paths under --root."
    options = (Option("lists", REQUIRED, "A list file (repeatable); its split comes from its name unless --split "
                                         "is given.", type=list[Path], flag="--list", cli_default=[], input_file=True),
               Option("fmt", "auto", "auto, mmdg or casia-fas.", flag="--format"),
               Option("split", None, "The split of every --list file (default: from the file's name)."),
               frames_option("even:3"),
               Option("ground_truth", None, "A CSV (columns file, ground_truth) mapping P list files to PADISI PAI "
                                            "codes.", input_file=True))

    def plan(self, root: Path, options: dict) -> Iterator[Item | Skip]:
        """Items for every line of ``lists`` (one split per file, from its name unless ``split`` is given)."""
        lists, fmt, split, frames = options["lists"], options["fmt"], options["split"], options["frames"]
        root = Path(root)
        if not lists:
            raise ConfigError("pass at least one --list file")
        policy = FramePolicy.parse(frames)
        gt = _padisi_gt(options["ground_truth"])
        seen: Counter = Counter()
        for lf in lists:
            s = split or split_from_name(lf)
            lines = list(read_lines(lf, min_fields=2))
            if not lines:
                continue
            f = detect_format([x for _, x in lines]) if fmt == "auto" else fmt
            if f not in ("mmdg", "casia-fas"):
                raise ConfigError(f"list format must be auto, mmdg or casia-fas, got {fmt!r}")
            for ln, fields in lines:
                where = f"{lf}:{ln}"
                if f == "mmdg":
                    yield from _mmdg_line(root, fields, s, where, seen, gt)
                else:
                    yield from _casia_line(root, fields, s, where, policy)


def _mmdg_line(root: Path, fields: list[str], split: str, where: str, seen: Counter,
               gt: dict[str, str]) -> Iterator[Item | Skip]:
    label = fields[-1]
    if label not in ("0", "1"):
        yield Skip(where, where, f"label must be 0 or 1 (1 = bona fide), got {label!r}")
        return
    bona = label == "1"
    first = fields[0]
    letter = dataset_of(first)
    if letter is None:
        yield Skip(where, where, f"cannot tell the dataset from {first!r}")
        return
    key = (split, first)
    seen[key] += 1
    if seen[key] > 1:
        yield Skip(where, where, "duplicate line in the same split")
        return
    if letter == "P":
        code = gt.get(Path(first).name)
        pai = "bonafide" if bona else (padisi.pai_of(code) if code else "other")
        if pai is None or (pai == "bonafide") != bona:
            yield Skip(where, where, f"ground-truth code {code!r} contradicts label {label}")
            return
        name = Path(first).stem
        yield Item(sample_id=f"{split}/P/{name}", label=int(bona), pai=pai, dataset=DATASETS["P"], domain="P",
                   split=split, sources=padisi.sources(root / first), subject="", video=f"P/{name}")
        return
    if len(fields) < 4:
        yield Skip(where, where, "expected rgb, depth and ir paths and a label")
        return
    meta = describe(letter, first, bona)
    if isinstance(meta, Skip):
        yield Skip(where, where, meta.reason)
        return
    if len({_frame(p) for p in fields[:3]}) > 1:
        yield Skip(where, where, "mismatched frame indices across modalities: "
                                 + ", ".join(Path(p).name for p in fields[:3]))
        return
    yield Item(sample_id=f"{split}/{first}", label=int(bona), pai=meta["pai"], dataset=DATASETS[letter],
               domain=letter, split=split,
               sources={"rgb": root / fields[0], "depth": root / fields[1], "ir": root / fields[2]},
               subject=meta["subject"], video=meta["video"], frame=_frame(first),
               crop_border=letter == "C")


def _casia_line(root: Path, fields: list[str], split: str, where: str,
                policy: FramePolicy) -> Iterator[Item | Skip]:
    folder, label = fields[0], fields[-1]
    if label not in ("0", "1"):
        yield Skip(where, where, f"label must be 0 (bona fide) or 1 (attack), got {label!r}")
        return
    bona = label == "0"
    letter = dataset_of(folder)
    if letter not in ("C", "S", "W"):
        yield Skip(where, where, f"cannot tell the dataset from {folder!r}")
        return
    meta = describe(letter, folder, bona)
    if isinstance(meta, Skip):
        yield Skip(where, where, meta.reason)
        return
    vd = root / folder
    if vd.name in ("color", "profile", "rgb"):
        dirs = {"rgb": vd, "depth": vd.parent / "depth", "ir": vd.parent / "ir"}
    else:  # a video folder (IDIAP_WMCA lists)
        dirs = {"rgb": next((vd / n for n in ("color", "profile", "rgb") if frames_in(vd / n)), vd / "color"),
                "depth": vd / "depth", "ir": vd / "ir"}

    def make(n: int, files: dict) -> Item:
        return Item(sample_id=f"{split}/{meta['video']}/{n}", label=int(bona), pai=meta["pai"],
                    dataset=DATASETS[letter], domain=letter, split=split, sources=files,
                    subject=meta["subject"], video=meta["video"], frame=n, crop_border=letter == "C")

    yield from plan_video(dirs, policy, make, f"{split}/{meta['video']}")
