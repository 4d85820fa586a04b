"""What every dataset adapter shares: planned items, frame sampling, decoding in worker processes, and
the build into a store with a report of counts and of every skipped input.

An adapter only *plans*: it walks the raw tree or the list files and yields :class:`Item` objects
(metadata plus where each modality's pixels come from). :func:`build` decodes them, in order, in a
process pool, and writes the store through :class:`~mfas.data.store.StoreWriter`, so a killed build
never leaves a valid store behind and the output does not depend on the number of workers.
"""

from __future__ import annotations

import multiprocessing as mp
import re
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from mfas.conventions import MODALITIES
from mfas.data.faces import CropPolicy, detector_for, largest_face_crop
from mfas.data.images import conform, fit_size, read_image
from mfas.data.schema import Sample
from mfas.data.store import BuildReport, StoreWriter, check_free_space
from mfas.errors import ConfigError, DataError

#: A modality's source: an image file, or ``(loader name, args...)`` for a registered array loader.
Source = Path | tuple


@dataclass
class Item:
    """One planned sample: the store metadata and, per modality, where its pixels come from."""

    sample_id: str
    label: int
    pai: str
    dataset: str
    domain: str
    split: str
    sources: dict[str, Source]
    subject: str = ""
    video: str = ""
    frame: int = 0
    crop_border: bool = False  # CeFA: cut the black frame around the face before resizing
    same_size: bool = False  # the modalities must come at one size (pixel-aligned captures), or the item is refused

    def sample(self, images: dict[str, np.ndarray]) -> Sample:
        return Sample(sample_id=self.sample_id, label=self.label, pai=self.pai, dataset=self.dataset,
                      domain=self.domain, split=self.split, subject=self.subject, video=self.video,
                      frame=self.frame, images=dict(images))


@dataclass
class Skip:
    """An input an adapter found unusable while planning (no Item could be made for it)."""

    sample_id: str
    where: str
    reason: str


# ----------------------------------------------------------------------------------------- frames

@dataclass(frozen=True)
class FramePolicy:
    """Which frames of a video become samples.

    - ``all``: every frame;
    - ``even:N``: N frames spread evenly over the video (first and last included), all when fewer;
    - ``fixed:12,24,36``: these frame numbers, the ones the video lacks reported as skipped;
    - ``first``: the first frame.
    """

    kind: str
    n: int = 0
    indices: tuple[int, ...] = ()

    @classmethod
    def parse(cls, text: str) -> FramePolicy:
        t = text.strip().lower()
        if t in ("all", "first"):
            return cls(t)
        m = re.fullmatch(r"even:(\d+)", t)
        if m and int(m.group(1)) > 0:
            return cls("even", n=int(m.group(1)))
        m = re.fullmatch(r"fixed:(\d+(?:,\d+)*)", t)
        if m:
            return cls("fixed", indices=tuple(int(x) for x in m.group(1).split(",")))
        raise ConfigError(f"bad frame policy {text!r}; use all, first, even:N or fixed:I,J,...")

    def select(self, frames: Sequence[int]) -> tuple[list[int], list[int]]:
        """(chosen frame numbers, requested numbers the video does not have)."""
        fr = sorted(set(frames))
        if not fr:
            return [], list(self.indices)
        if self.kind == "all":
            return fr, []
        if self.kind == "first":
            return fr[:1], []
        if self.kind == "even":
            if len(fr) <= self.n:
                return fr, []
            pos = np.linspace(0, len(fr) - 1, self.n).round().astype(int)
            return [fr[i] for i in dict.fromkeys(pos.tolist())], []
        have = set(fr)
        return [i for i in self.indices if i in have], [i for i in self.indices if i not in have]

    def __str__(self) -> str:
        if self.kind == "even":
            return f"even:{self.n}"
        if self.kind == "fixed":
            return "fixed:" + ",".join(map(str, self.indices))
        return self.kind


def frame_number(path: Path) -> int | None:
    """``0026.jpg`` -> 26; None when the stem is not a number."""
    return int(path.stem) if path.stem.isdigit() else None


def frames_in(folder: Path, suffixes: Sequence[str] = (".jpg", ".jpeg", ".png", ".bmp")) -> dict[int, Path]:
    """Numbered image files of a frame folder by frame number (an absent folder gives {})."""
    if not folder.is_dir():
        return {}
    out = {}
    for p in folder.iterdir():
        n = frame_number(p)
        if n is not None and p.suffix.lower() in suffixes:
            out[n] = p
    return out


def choose_frames(frames: dict[str, Iterable[int]], policy: FramePolicy, video: str,
                  where: dict[str, str]) -> tuple[list[int], list[Skip]]:
    """The frames ``policy`` picks among those every source (modality folder, camera station) has, and a
    Skip for each frame some source lacks or the policy asks for in vain: nothing is dropped silently."""
    sets = {k: set(v) for k, v in frames.items()}
    common = set.intersection(*sets.values())
    skips = []
    for n in sorted(set().union(*sets.values()) - common):
        lacking = [k for k in sets if n not in sets[k]]
        skips.append(Skip(f"{video}#{n}", where[lacking[0]],
                          f"frame {n} missing in {', '.join(lacking)} (mismatched frame indices)"))
    chosen, absent = policy.select(sorted(common))
    skips += [Skip(f"{video}#{n}", video, f"frame {n} requested by the frame policy is not in the video")
              for n in absent]
    return chosen, skips


def plan_video(video_dir_by_mod: dict[str, Path], policy: FramePolicy, make: Callable[[int, dict], Item],
               video: str, required: Sequence[str] = MODALITIES) -> Iterator[Item | Skip]:
    """Items for one video stored as one folder of numbered frames per modality (see :func:`choose_frames`)."""
    frames = {m: frames_in(d) for m, d in video_dir_by_mod.items()}
    for m in required:
        if not frames.get(m):
            yield Skip(video, str(video_dir_by_mod.get(m, video)), f"no {m} frames (missing modality folder)")
            return
    chosen, skips = choose_frames({m: frames[m] for m in required}, policy, video,
                                  {m: str(video_dir_by_mod[m]) for m in required})
    yield from skips
    for n in chosen:
        yield make(n, {m: frames[m][n] for m in required})


# ---------------------------------------------------------------------------------------- decoding

#: Array loaders for non-image sources, by name: ``fn(*args) -> np.ndarray`` (uint8, H x W [x 3]).
LOADERS: dict[str, Callable[..., np.ndarray]] = {}


def loader(name: str) -> Callable:
    def deco(fn: Callable) -> Callable:
        LOADERS[name] = fn
        return fn
    return deco


def to_uint8(a: np.ndarray, where: object, scale: str = "auto") -> np.ndarray:
    """Float arrays in [0, 1] (``scale='unit'``) or [0, 255] to uint8; ``auto`` decides by the maximum.

    16-bit arrays (raw depth or NIR sensor counts, whose units differ by camera) are stretched from their
    own minimum to maximum, since no fixed scale fits every sensor.
    """
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.uint16:
        lo, hi = float(a.min(initial=0)), float(a.max(initial=0))
        return np.rint((a.astype(np.float64) - lo) * (255.0 / max(hi - lo, 1.0))).astype(np.uint8)
    a = np.asarray(a, dtype=np.float64)
    if not np.isfinite(a).all():
        raise DataError(where, "array holds NaN or infinite values")
    unit = scale == "unit" or (scale == "auto" and a.max(initial=0.0) <= 1.0 + 1e-6)
    return np.clip(np.rint(a * 255.0 if unit else a), 0, 255).astype(np.uint8)


def crop_black_border(img: np.ndarray, level: int = 8) -> np.ndarray:
    """The bounding box of the pixels brighter than ``level`` (JPEG noise makes pure zero too strict);
    an all-dark image is returned as is."""
    grey = img if img.ndim == 2 else img.max(axis=2)
    ys, xs = np.nonzero(grey > level)
    if ys.size == 0:
        return img
    return img[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def decode(item: Item, size: tuple[int, int], crop: CropPolicy | None = None) -> dict[str, np.ndarray]:
    """Every modality of ``item`` as uint8 at ``size``; raises DataError naming the file. With a ``crop`` policy,
    the face is found in RGB and the same crop is cut from every modality (which must then be pixel-aligned)."""
    out, shapes, wheres = {}, {}, {}
    for m, src in item.sources.items():
        if isinstance(src, tuple):
            name, *args = src
            where = f"{args[0]} ({m})" if args else m
            img = conform(LOADERS[name](*args), m, where)
        else:
            where = src
            img = read_image(src, m)
        shapes[m], wheres[m] = img.shape[:2], where
        if (item.same_size or crop is not None) and len(set(shapes.values())) > 1:  # checked as soon as one differs
            sizes = ", ".join(f"{k} {w}x{h}" for k, (h, w) in shapes.items())
            if crop is not None:
                raise DataError(where, f"modalities differ in size ({sizes}): the face box found in RGB cannot be "
                                       "cut from the others; --detect needs pixel-aligned captures")
            raise DataError(where, f"modalities differ in size ({sizes}): resizing each on its own would store "
                                   "them as if pixel-aligned; align them first, or pass --allow-unaligned "
                                   "(allow_unaligned=True) to resize each anyway")
        if item.crop_border:
            img = crop_black_border(img)
        # without a crop, one full-size image in memory at a time; with one, the capture's until the face is found
        out[m] = img if crop is not None else fit_size(img, size, True, where, m)
    if crop is not None:
        out, _ = largest_face_crop(out, crop, wheres.get("rgb", item.sample_id), detector_for(crop))
        out = {m: fit_size(a, size, True, wheres[m], m) for m, a in out.items()}
    return out


def _job(args: tuple[Item, tuple[int, int], CropPolicy | None]) -> tuple[dict | None, tuple[str, str] | None]:
    item, size, crop = args
    try:
        return decode(item, size, crop), None
    except DataError as e:
        return None, (str(e.path), e.reason)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:  # h5py / numpy on a broken container
        return None, (str(next(iter(item.sources.values()), item.sample_id)), f"cannot read: {e}")


def _decoded(items: Sequence[Item], size: tuple[int, int], workers: int, crop: CropPolicy | None = None) -> Iterator:
    jobs = [(it, size, crop) for it in items]
    if workers <= 1:
        yield from map(_job, jobs)
        return
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)  # before forking: shrinking OpenCV's pool inside a forked child can deadlock
    try:
        with ctx.Pool(workers) as pool:
            yield from pool.imap(_job, jobs, chunksize=16)
    finally:
        cv2.setNumThreads(before)


# ------------------------------------------------------------------------------------------- build

@dataclass
class PrepareReport:
    """What ``mfas data prepare`` did: the store written, its counts and every skipped input."""

    build: BuildReport
    counts: dict = field(default_factory=dict)  # split -> {"bonafide": n, "attack": n, pai: n}

    @property
    def skipped(self) -> list[tuple[str, str, str]]:
        return self.build.skipped


def count_rows(items: Iterable[Item]) -> dict:
    c: dict[str, Counter] = {}
    for it in items:
        k = c.setdefault(it.split, Counter())
        k["samples"] += 1
        k["bonafide" if it.label == 1 else "attack"] += 1
        k[f"pai:{it.pai}"] += 1
    return {s: dict(v) for s, v in sorted(c.items())}


def build(plan: Iterable[Item | Skip], out: str | Path, size: int | tuple[int, int] = 224,
          modalities: Sequence[str] = MODALITIES, workers: int = 1, strict: bool = False,
          overwrite: bool = False, provenance: dict | None = None,
          progress: Callable[[int, int], None] | None = None, crop: CropPolicy | None = None) -> PrepareReport:
    """Decode the planned items and write the store at ``out``.

    ``strict`` stops at the first bad input (a DataError naming the file); otherwise every bad input is
    recorded in the store's ``skipped.csv`` with its reason, and counted in ``store.json``.
    ``progress(done, total)`` is called as samples are written. ``crop``: find the face in RGB and store the
    crop this policy cuts (its ``size`` must be the store's); a capture without a face is skipped with that reason.
    """
    hw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if crop is not None and (crop.size, crop.size) != hw:
        raise ConfigError(f"the crop policy cuts {crop.size}x{crop.size} crops, but the store holds {hw[1]}x{hw[0]} "
                          "images: give the policy the store's size")
    items, skips = [], []
    for p in plan:
        (items if isinstance(p, Item) else skips).append(p)
    if strict and skips:
        s = skips[0]
        raise DataError(s.where, s.reason)
    seen = Counter(it.sample_id for it in items)
    dup = [k for k, n in seen.items() if n > 1]
    if dup:
        raise DataError(dup[0], f"{len(dup)} sample id(s) planned twice (the lists repeat a line?)")
    if not items:
        raise DataError(out, "no sample to write: check --root and the list files" +
                        (f" ({len(skips)} input(s) skipped, first: {skips[0].where}: {skips[0].reason})"
                         if skips else ""))
    check_free_space(out, len(items), hw, modalities)
    prov = dict(provenance or {})
    with StoreWriter(out, size=hw, modalities=modalities, provenance=prov, resize=False,
                     on_error="raise" if strict else "skip", overwrite=overwrite) as w:
        for s in skips:
            w.skip(s.sample_id, s.where, s.reason)
        kept: list[Item] = []
        for k, (it, (arrays, err)) in enumerate(zip(items, _decoded(items, hw, workers, crop), strict=True)):
            if err is not None:
                if strict:
                    raise DataError(*err)
                w.skip(it.sample_id, *err)
            elif w.add(it.sample(arrays)):
                kept.append(it)
            if progress:
                progress(k + 1, len(items))
        if not kept:  # raising here leaves only the .partial folder, never a valid empty store
            first = w.skipped[0] if w.skipped else ("", str(out), "nothing decoded")
            raise DataError(first[1], f"no sample could be read ({len(w.skipped)} skipped; first: {first[2]})")
    return PrepareReport(w.report, count_rows(kept))
