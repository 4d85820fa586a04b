"""Custom data: a folder tree or a CSV, for practitioners who train on their own captures.

Folder tree::

    ROOT/<train|val|test>/<class>/<sample>/{rgb,depth,ir}.<png|jpg|...>
    ROOT/<train|val|test>/<class>/<image>.<png|jpg|...>     an RGB-only sample (--modalities rgb)
    ROOT/<class>/...                                        everything in one split (--split)

``<class>`` is ``live`` / ``bonafide`` / ``real`` (bona fide), ``attack`` / ``spoof`` / ``fake`` (an attack
of unknown species, stored as ``other``) or a PAI species name (``print``, ``replay``, ``mask_rigid``,
...). ``color.*`` is accepted for ``rgb`` and ``nir.*`` for ``ir``.

CSV (``--csv FILE``): a path column for each modality in ``modalities`` (``rgb``, ``depth``, ``ir``;
drop a modality you do not have from both), ``label`` (1 / live / bonafide, or 0 / attack), and
optionally ``pai``, ``split`` (default train), ``subject``, ``video``, ``frame``, ``sample_id``.
Relative paths are relative to the CSV's folder, or to ``--root`` when given.

Only the modalities in ``modalities`` are stored; a sample that lacks one of them is skipped with the
reason, never stored with a hole. The modalities of one sample must come at one size (pixel-aligned
captures): a sample whose RGB, depth or IR differ in width or height is skipped with the reason (an error
with ``--strict``), unless ``--allow-unaligned`` (``allow_unaligned=True``) asks to resize each on its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mfas.conventions import MODALITIES, PAI_SPECIES, SPLITS
from mfas.data.images import IMAGE_SUFFIXES
from mfas.data.prepare.core import Item, Skip
from mfas.data.prepare.listfiles import read_csv
from mfas.data.prepare.registry import OMIT, Adapter, Option, register_adapter
from mfas.errors import ConfigError

DATASET = "custom"  # the dataset and domain of every sample
_UNASSIGNED = "unassigned"  # the split of items that --split-ratios assigns after planning
LIVE, ATTACK = ("live", "bonafide", "bona_fide", "real", "1"), ("attack", "spoof", "fake", "0")
ALIASES = {"rgb": ("rgb", "color", "colour"), "depth": ("depth",), "ir": ("ir", "nir")}


def class_of(name: str) -> tuple[int, str] | None:
    n = name.strip().lower()
    if n in LIVE:
        return 1, "bonafide"
    if n in ATTACK:
        return 0, "other"
    if n in PAI_SPECIES:
        return int(n == "bonafide"), n
    return None


def _files(sample_dir: Path) -> dict[str, Path]:
    out = {}
    for p in sorted(sample_dir.iterdir()):
        if p.suffix.lower() in IMAGE_SUFFIXES:
            for m, names in ALIASES.items():
                if p.stem.lower() in names and m not in out:
                    out[m] = p
    return out


def _names(text: str) -> tuple[str, ...]:
    """``"rgb, depth"`` -> ``("rgb", "depth")``."""
    return tuple(m.strip() for m in text.split(","))


def _ratios(text: object) -> tuple[float, float, float] | None:
    """``"0.6,0.2,0.2"`` -> train, val and test fractions summing to 1; ConfigError otherwise."""
    if text is None or text == "":
        return None
    parts = text.split(",") if isinstance(text, str) else list(text)  # type: ignore[arg-type]
    try:
        vals = tuple(float(v) for v in parts)
    except (TypeError, ValueError):
        raise ConfigError(f"--split-ratios {text!r}: expected three numbers, train,val,test (e.g. 0.6,0.2,0.2)"
                          ) from None
    if len(vals) != 3 or min(vals) < 0 or abs(sum(vals) - 1) > 1e-6 or vals[0] == 0:
        raise ConfigError(f"--split-ratios {text!r}: expected three fractions train,val,test that sum to 1, with "
                          "some training data (e.g. 0.6,0.2,0.2)")
    return vals  # type: ignore[return-value]


SPLIT_BY = ("sample", "subject", "video")


def assign_splits(items: list[Item], ratios: tuple[float, float, float], by: str = "sample",
                  stratify: bool = True, seed: int = 0, pattern: str | None = None) -> None:
    """Give ``items`` a train/val/test split in ``ratios``, in place and deterministically (``seed``).

    ``by``: the unit that stays in one split: each sample, each subject or each video (frames of one video, or
    captures of one person, in two splits would leak the answer into the test). ``pattern``: a regular
    expression whose first group is the subject in a sample's name (default: the item's subject). With
    ``stratify``, each class (bona fide, attack) is split in the ratios on its own, so both keep their share
    in every split; a group's class is that of most of its samples.
    """
    if by not in SPLIT_BY:
        raise ConfigError(f"--split-by {by!r}: expected one of {', '.join(SPLIT_BY)}")
    rx = None
    if pattern:
        try:
            rx = re.compile(pattern)
        except re.error as e:
            raise ConfigError(f"--subject-pattern {pattern!r}: not a regular expression ({e})") from None
        if rx.groups < 1:
            raise ConfigError(f"--subject-pattern {pattern!r}: needs a group, e.g. '^(\\w+?)_' for 'anna_01.png'")

    def key(it: Item) -> str:
        if by == "sample":
            return it.sample_id
        if by == "video":
            return it.video or it.sample_id
        if rx is not None:
            name = Path(it.sample_id).name
            m = rx.search(name)
            if m is None or not m.group(1):
                raise ConfigError(f"--subject-pattern {pattern!r} does not match {name!r} ({it.sample_id}); every "
                                  "sample needs a subject")
            return m.group(1)
        return it.subject or it.sample_id

    groups: dict[str, list[Item]] = {}
    for it in items:
        g = key(it)
        if rx is not None:
            it.subject = g  # the store's subject column says what was grouped
        groups.setdefault(g, []).append(it)
    rng = np.random.default_rng(seed)
    strata: dict[int, list[str]] = {}
    for g, members in sorted(groups.items()):
        cls = int(round(np.mean([m.label for m in members]))) if stratify else 0
        strata.setdefault(cls, []).append(g)
    for names in strata.values():
        order = [names[i] for i in rng.permutation(len(names))]
        cut = np.round(np.cumsum(ratios) * len(order)).astype(int)
        for k, g in enumerate(order):
            split = SPLITS[int(np.searchsorted(cut, k, side="right"))] if k < cut[-1] else SPLITS[-1]
            for it in groups[g]:
                it.split = split


@register_adapter("folder")
class FolderAdapter(Adapter):
    description = "Your own captures: a <split>/<class>/<sample>/ tree or a CSV."
    options = (Option("csv_file", None, "A CSV of paths and labels instead of a tree.", type=Path, flag="--csv",
                      input_file=True),
               Option("modalities", MODALITIES, "The modalities every sample must have (comma separated).",
                      cli_default=",".join(MODALITIES), parse=_names),
               Option("split", "train", "The split of a tree without split folders."),
               Option("allow_unaligned", False, "Resize each modality of a sample on its own when their sizes "
                      "differ (they are then not pixel-aligned); by default such a sample is skipped with "
                      "the reason.", type=bool),
               Option("split_ratios", None, "Split a tree without split folders (or CSV rows without a split) into "
                      "train,val,test in these fractions, e.g. 0.6,0.2,0.2.", cli_default=OMIT, parse=_ratios),
               Option("split_by", "sample", "With --split-ratios: what stays in one split: sample, subject or video "
                      "(captures of one person or one video never in two splits)."),
               Option("subject_pattern", None, "With --split-by subject: a regular expression whose first group is "
                      "the subject in a file or folder name, e.g. '^(\\w+?)_' for anna_01.png.", cli_default=OMIT),
               Option("no_stratify", False, "With --split-ratios: do not split bona fide and attacks in the ratios "
                      "each (by default every split keeps both classes' shares).", type=bool),
               Option("split_seed", 0, "With --split-ratios: the seed of the assignment.", type=int))

    def plan(self, root: Path, options: dict) -> Iterator[Item | Skip]:
        """Items of a custom folder tree under ``root`` or of ``csv_file``.

        Without split folders, ``root``'s class folders all go to ``split``. In a class folder, a folder is
        a sample (one file per modality) and a lone image file is an RGB-only sample.
        """
        ratios = _ratios(options["split_ratios"])
        rest = [f"--{k.replace('_', '-')}" for k in ("split_by", "subject_pattern", "no_stratify", "split_seed")
                if options[k] != self.default_of(k)]
        if ratios is None:
            if rest:
                raise ConfigError(f"{', '.join(rest)}: apply with --split-ratios only")
            yield from self._plan(root, options)
            return
        planned = list(self._plan(root, options, ratios=True))
        items = [p for p in planned if isinstance(p, Item)]
        free = [it for it in items if it.split == _UNASSIGNED]
        assign_splits(free, ratios, options["split_by"], not options["no_stratify"], int(options["split_seed"]),
                      options["subject_pattern"])
        for it in free:  # a tree's sample ids start with their split
            if it.sample_id.startswith(_UNASSIGNED + "/"):
                it.sample_id = it.split + it.sample_id[len(_UNASSIGNED):]
        yield from planned

    def default_of(self, name: str) -> object:
        return next(o.default for o in self.options if o.name == name)

    def _plan(self, root: Path, options: dict, ratios: bool = False) -> Iterator[Item | Skip]:
        csv_file, dataset, split = options["csv_file"], DATASET, options["split"]
        mods = self.modalities(options)
        same_size = not options["allow_unaligned"]
        if csv_file is not None:
            for p in _plan_csv(Path(csv_file), root, mods, dataset, _UNASSIGNED if ratios else split):
                if isinstance(p, Item):
                    p.same_size = same_size
                yield p
            return
        root = Path(root)
        tops = {s: root / s for s in SPLITS if (root / s).is_dir()}
        if tops and ratios:
            raise ConfigError(f"{root}: has split folders ({', '.join(tops)}); --split-ratios splits a tree of class "
                              "folders only")
        if not tops:
            if not any(class_of(p.name) for p in root.iterdir() if p.is_dir()):
                raise ConfigError(f"{root}: expected train/, val/ or test/ folders, or class folders (live/, attack/, "
                                  "print/, ...) for --split; see docs/datasets.md")
            tops = {_UNASSIGNED if ratios else split: root}
        for split, top in tops.items():
            for cls_dir in sorted(p for p in top.iterdir() if p.is_dir()):
                cls = class_of(cls_dir.name)
                if cls is None:
                    yield Skip(cls_dir.name, str(cls_dir), "class folder must be live, attack or a PAI species name")
                    continue
                for entry in sorted(cls_dir.iterdir()):
                    sid = f"{split}/{cls_dir.name}/{entry.name}"
                    if entry.is_file():  # a lone image: an RGB-only sample
                        if entry.suffix.lower() not in IMAGE_SUFFIXES:
                            yield Skip(sid, str(entry), "not an image file")
                        elif mods != ("rgb",):
                            yield Skip(sid, str(entry), "a lone image is RGB only: pass --modalities rgb, or put the "
                                                        "modalities in a folder per sample")
                        else:
                            yield Item(sample_id=sid, label=cls[0], pai=cls[1], dataset=dataset, domain=dataset,
                                       split=split, sources={"rgb": entry}, subject=entry.stem, video=sid)
                        continue
                    files = _files(entry)
                    lacking = [m for m in mods if m not in files]
                    if lacking:
                        yield Skip(sid, str(entry), f"missing modality file: {', '.join(lacking)}")
                        continue
                    yield Item(sample_id=sid, label=cls[0], pai=cls[1], dataset=dataset, domain=dataset, split=split,
                               sources={m: files[m] for m in mods}, subject=entry.name, video=sid,
                               same_size=same_size)

    def modalities(self, options: dict) -> tuple[str, ...]:
        """The ``modalities`` option's, in the conventional order."""
        return tuple(m for m in MODALITIES if m in options["modalities"])


def _plan_csv(path: Path, root: Path | None, mods: tuple[str, ...], dataset: str,
              default_split: str) -> Iterator[Item | Skip]:
    rows = read_csv(path, {"label", *mods}, "columns rgb, depth, ir (those in --modalities) and label")
    base = Path(root) if root else path.parent
    for k, r in enumerate(rows, 2):
        where = f"{path}:{k}"
        sid = (r.get("sample_id") or "").strip() or f"row{k - 1:06d}"
        cls = class_of(r["label"])
        if cls is None:
            yield Skip(sid, where, f"label must be 1/live/bonafide or 0/attack, got {r['label']!r}")
            continue
        label, pai = cls
        if r.get("pai", "").strip():
            pai = r["pai"].strip()
        split = (r.get("split") or default_split).strip()
        lacking = [m for m in mods if not (r.get(m) or "").strip()]
        if lacking:
            yield Skip(sid, where, f"missing modality file: no {', '.join(lacking)} path")
            continue
        try:
            frame = int(r.get("frame") or 0)
        except ValueError:
            yield Skip(sid, where, f"frame must be an integer, got {r.get('frame')!r}")
            continue
        yield Item(sample_id=sid, label=label, pai=pai, dataset=dataset, domain=dataset, split=split,
                   sources={m: base / r[m].strip() for m in mods}, subject=(r.get("subject") or "").strip(),
                   video=(r.get("video") or "").strip() or sid, frame=frame)
