"""HQ-WMCA (Idiap): stream files, protocol CSVs, and depth completion as the mmFAS paper did it.

Stream files: one HDF5 file per video, ``ROOT/<filepath>.h5``, with one dataset per stream holding the
frames along the first axis (``T x C x H x W`` or ``T x H x W``). The stream names are configurable
(``streams``), since they depend on how the files were exported; the defaults are ``color`` for RGB
and ``nir`` for infrared. A stream spec ``name:K`` takes band K of a multi-band stream (``T x C x H x W``
with C bands), e.g. ``swir:1``: the mmFAS paper put SWIR in the third slot on HQ-WMCA
(``--ir-stream swir:K``); the store records which stream fills the ``ir`` slot.

Protocol CSV (``grand_test``, ``unseen-attack`` ..., one file each): columns ``filepath``, ``group``
(train / dev or validation / eval or test) and ``label`` (bonafide / attack), plus ``pai`` or
``attack_type`` naming the attack category (glasses, mannequin, print, replay, rigid mask, flexible
mask, paper mask, wig, tattoo, makeup).

Depth (the mmFAS paper): HQ-WMCA's depth sensor differs from the other datasets', so depth is
*generated from RGB by 3D face reconstruction* for bona fide and 3D attacks and *removed* for flat
attacks (print, replay, paper mask, cut photo), whose reconstruction would invent a face shape the
attack does not have. The reconstruction backend is behind :class:`DepthBackend`: ``none`` (the
default: no backend can run offline here, so depth is absent for every sample and the presence mask
says so) or ``module:function``, any importable ``function(rgb: H x W x 3 uint8) -> H x W`` depth map
(e.g. a wrapper around 3DDFA-V2 or DECA that renders the reconstructed mesh's z-buffer).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from mfas.data.prepare.core import FramePolicy, Item, Skip, loader, to_uint8
from mfas.data.prepare.listfiles import read_csv
from mfas.data.prepare.registry import REQUIRED, Adapter, Option, frames_option, register_adapter
from mfas.errors import ConfigError, DataError, require

DATASET, DOMAIN = "HQ-WMCA", "H"
GROUPS = {"train": "train", "dev": "val", "validation": "val", "val": "val", "eval": "test", "test": "test"}
CATEGORY_PAI = {"bonafide": "bonafide", "bona fide": "bonafide", "glasses": "partial", "mannequin": "other",
                "fake head": "other", "print": "print", "replay": "replay", "rigid mask": "mask_rigid",
                "flexible mask": "mask_flexible", "paper mask": "mask_paper", "wig": "partial",
                "tattoo": "makeup", "makeup": "makeup"}
#: Attacks without a face's relief: their depth is removed rather than reconstructed.
FLAT = frozenset({"print", "replay", "cut", "mask_paper"})


def depth_rule(pai: str) -> str:
    """``reconstruct`` for bona fide and 3D attacks, ``remove`` for flat ones."""
    return "remove" if pai in FLAT else "reconstruct"


class DepthBackend:
    """Depth from RGB by 3D face reconstruction. ``spec``: ``none`` or ``module:function``."""

    def __init__(self, spec: str = "none"):
        self.spec = spec
        self._fn: Callable[[np.ndarray], np.ndarray] | None = None
        if spec != "none":
            mod, sep, name = spec.partition(":")
            if not sep or not mod or not name:
                raise ConfigError(f"depth backend must be none or module:function, got {spec!r}")

    @property
    def available(self) -> bool:
        return self.spec != "none"

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        if self._fn is None:
            if not self.available:
                raise ConfigError("no depth backend configured (depth backend 'none')")
            mod, _, name = self.spec.partition(":")
            try:
                self._fn = getattr(importlib.import_module(mod), name)
            except (ImportError, AttributeError) as e:
                raise ConfigError(f"depth backend {self.spec!r} cannot be imported: {e}") from None
        d = np.asarray(self._fn(rgb))
        if d.shape[:2] != rgb.shape[:2] or d.ndim != 2:
            raise DataError(self.spec, f"depth backend returned shape {d.shape} for an RGB of {rgb.shape[:2]}")
        return to_uint8(d, self.spec)


def parse_stream(spec: str) -> tuple[str, int | None]:
    """``name`` or ``name:K`` (band K of a multi-band stream) -> (name, K or None)."""
    name, sep, band = spec.partition(":")
    if not name or (sep and not band.isdigit()):
        raise ConfigError(f"a stream is NAME or NAME:BAND (a band index), got {spec!r}")
    return name, int(band) if sep else None


def _frame(path: str, stream: str, t: int) -> np.ndarray:
    h5py = require("h5py", "hdf5", "reading HQ-WMCA HDF5 files")

    where = f"{path}[{stream}][{t}]"
    name, band = parse_stream(stream)
    with h5py.File(path, "r") as f:
        if name not in f:
            raise DataError(where, f"no stream {name!r} in the file (has: {', '.join(sorted(f))})")
        a = np.asarray(f[name][t])
    if band is not None:
        if a.ndim != 3 or band >= a.shape[0]:
            raise DataError(where, f"band {band} asked of a frame of shape {a.shape} (bands first)")
        a = a[band]
    if a.ndim == 3 and a.shape[0] in (1, 3):
        a = a.transpose(1, 2, 0)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    return to_uint8(a, where)


@loader("hqwmca")
def load_stream(path: str, stream: str, t: int) -> np.ndarray:
    return _frame(path, stream, t)


@loader("hqwmca_depth")
def load_depth(path: str, rgb_stream: str, t: int, backend: str) -> np.ndarray:
    return DepthBackend(backend)(_frame(path, rgb_stream, t))


def _n_frames(path: Path, stream: str) -> int:
    h5py = require("h5py", "hdf5", "reading HQ-WMCA HDF5 files")

    stream, _ = parse_stream(stream)
    with h5py.File(path, "r") as f:
        if stream not in f:
            raise DataError(path, f"no stream {stream!r} in the file (has: {', '.join(sorted(f))})")
        return int(f[stream].shape[0])


@register_adapter("hqwmca")
class HqwmcaAdapter(Adapter):
    description = "HQ-WMCA stream files + protocol CSV, depth completion by rule and backend."
    options = (Option("protocol_csv", REQUIRED, "The protocol CSV (grand_test, unseen-attack, ...). Required.",
                      type=Path, input_file=True),
               frames_option("even:10"),
               Option("rgb_stream", "color", "RGB stream name."),
               Option("ir_stream", "nir", "The stream in the ir slot: NAME or NAME:BAND (e.g. swir:1, SWIR as in the "
                                          "mmFAS paper)."),
               Option("depth_backend", "none", "none or module:function (RGB -> depth)."))

    def plan(self, root: Path, options: dict) -> Iterator[Item | Skip]:
        """Items for every video of the protocol CSV, with depth per :func:`depth_rule` and the backend."""
        protocol_csv, frames, rgb_stream = options["protocol_csv"], options["frames"], options["rgb_stream"]
        ir_stream, depth_backend = options["ir_stream"], options["depth_backend"]
        root, protocol_csv = Path(root), Path(protocol_csv)
        policy = FramePolicy.parse(frames)
        parse_stream(rgb_stream), parse_stream(ir_stream)
        backend = DepthBackend(depth_backend)
        rows = read_csv(protocol_csv, {"filepath", "group", "label"}, "with pai (or attack_type) for attacks")
        for k, r in enumerate(rows, 2):
            where = f"{protocol_csv}:{k}"
            rel = r["filepath"].strip()
            video = f"H/{Path(rel).name}"
            group = GROUPS.get(r["group"].strip().lower())
            bona = r["label"].strip().lower() in ("bonafide", "bona fide", "1", "live")
            cat = (r.get("pai") or r.get("attack_type") or ("bonafide" if bona else "")).strip().lower()
            pai = CATEGORY_PAI.get(cat)
            if group is None:
                yield Skip(video, where, f"unknown group {r['group']!r}")
                continue
            if pai is None or (pai == "bonafide") != bona:
                yield Skip(video, where, f"unknown or contradictory attack category {cat!r} for label {r['label']!r}")
                continue
            f = root / rel if rel.endswith((".h5", ".hdf5")) else root / f"{rel}.h5"
            if not f.is_file():
                yield Skip(video, str(f), "missing stream file")
                continue
            try:
                n = min(_n_frames(f, rgb_stream), _n_frames(f, ir_stream))
            except (DataError, OSError) as e:
                yield Skip(video, str(f), getattr(e, "reason", str(e)))
                continue
            chosen, _ = policy.select(range(n))
            for t in chosen:
                src = {"rgb": ("hqwmca", str(f), rgb_stream, t), "ir": ("hqwmca", str(f), ir_stream, t)}
                if depth_rule(pai) == "reconstruct" and backend.available:
                    src["depth"] = ("hqwmca_depth", str(f), rgb_stream, t, backend.spec)
                yield Item(sample_id=f"{video}/{t}", label=int(bona), pai=pai, dataset=DATASET, domain=DOMAIN,
                           split=group, sources=src, subject=f"H/{r.get('client_id', '').strip()}", video=video,
                           frame=t)

    def provenance(self, options: dict) -> dict:
        """Which stream fills the ``ir`` slot, and where depth comes from."""
        backend = options["depth_backend"]
        return {"ir_slot": f"HQ-WMCA stream {options['ir_stream']!r}",
                "depth": ("reconstructed from RGB by " + backend if backend != "none"
                          else "absent for every sample: no reconstruction backend (depth_backend none)")}
