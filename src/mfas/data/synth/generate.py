"""SimFAS generation: sample specifications, rendering of one sample, and the store build."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mfas.data.images import MIN_SIDE
from mfas.data.schema import Sample
from mfas.data.store import BuildReport, StoreWriter, check_free_space
from mfas.data.synth.attacks import build_scene
from mfas.data.synth.domains import PROFILES, DomainProfile, get_profile
from mfas.data.synth.face import Identity
from mfas.data.synth.sensors import Lighting, camera, sense_depth, shade_nir, shade_rgb
from mfas.errors import ConfigError

SPLIT_FRACTIONS = {"train": 0.55, "val": 0.15, "test": 0.30}
SAMPLES_PER_SUBJECT = 6
#: Limits of a SimFAS build: image side (pixels), samples per domain, frames per video, worker processes.
SIZE_RANGE = (MIN_SIDE, 1024)
PER_DOMAIN_RANGE = (1, 1_000_000)
FRAMES_RANGE = (1, 1000)
WORKERS_RANGE = (0, 64)


@dataclass(frozen=True)
class Spec:
    """Everything that determines one rendered sample."""

    seed: int
    domain: str
    index: int  # within the domain
    subject: int
    split: str
    pai: str
    video: int
    frame: int


def plan(seed: int, domains: Sequence[str], per_domain: int, frames_per_video: int = 1,
         profiles: Mapping[str, DomainProfile] | None = None) -> list[Spec]:
    """Sample specifications: subjects split train/val/test, PAI species drawn from each domain's mix
    (``profiles`` adds to or replaces the built-in domain profiles)."""
    specs = []
    for d_i, d in enumerate(domains):
        prof = get_profile(d, profiles)
        rng = np.random.default_rng([seed, d_i, 0])
        n_videos = -(-per_domain // frames_per_video)
        n_subjects = max(3, -(-n_videos // SAMPLES_PER_SUBJECT))
        cut = np.cumsum([SPLIT_FRACTIONS[s] for s in ("train", "val")]) * n_subjects
        subj_split = np.where(np.arange(n_subjects) < max(1, round(cut[0])), "train",
                              np.where(np.arange(n_subjects) < max(2, round(cut[1])), "val", "test"))
        species = list(prof.pai_mix)
        w = np.array([prof.pai_mix[s] for s in species], float)
        pais = rng.choice(species, size=n_videos, p=w / w.sum())
        k = 0
        for v in range(n_videos):
            subj = v % n_subjects
            for f in range(frames_per_video):
                if k == per_domain:
                    break
                specs.append(Spec(seed, d, k, subj, str(subj_split[subj]), str(pais[v]), v, f))
                k += 1
    return specs


def _domain_key(name: str) -> int:
    """A seed word for a domain: its character code for one-letter names (the built-in stores stay the same),
    a stable hash for longer names."""
    if len(name) == 1:
        return ord(name)
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")


def render(spec: Spec, size: int, profile: DomainProfile | None = None) -> dict[str, np.ndarray]:
    """Render one sample: {"rgb": (size, size, 3), "depth": (size, size), "ir": (size, size)} uint8.
    ``profile``: the domain's profile (default: the built-in one named ``spec.domain``)."""
    prof = (profile or get_profile(spec.domain)).for_species(spec.pai)
    ident = Identity.sample(np.random.default_rng([spec.seed, _domain_key(spec.domain), 1, spec.subject]))
    # frames of one video share the scene and differ by sensor noise only
    rng = np.random.default_rng([spec.seed, _domain_key(spec.domain), 2, spec.video])
    res = prof.native_res
    dist = float(rng.uniform(*prof.distance))
    scene, _ = build_scene(spec.pai, ident, rng, prof, res, dist)
    scene = scene.with_normals(res)
    light = Lighting.sample(rng, prof.light_strength, prof.ambient, prof.temperature)
    noise_rng = np.random.default_rng([spec.seed, _domain_key(spec.domain), 3, spec.video, spec.frame])
    images = capture(scene, light, prof, size, dist, rng, noise_rng)
    if prof.face_mask:
        keep = face_ellipse(size, rng)
        for m in images:
            images[m] = images[m] * (keep[..., None] if images[m].ndim == 3 else keep)
    return images


def face_ellipse(size: int, rng: np.random.Generator) -> np.ndarray:
    """The face region a landmark fit would give on a centred crop, as a uint8 0/1 mask."""
    c = (np.arange(size) + 0.5) / size * 2 - 1
    x, y = np.meshgrid(c, c)
    cx, cy = rng.normal(0, 0.03), 0.05 + rng.normal(0, 0.03)
    a, b = 0.6 * rng.uniform(0.92, 1.08), 0.86 * rng.uniform(0.92, 1.08)
    return (((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 <= 1).astype(np.uint8)


def capture(scene, light, prof: DomainProfile, size: int, dist: float, rng, noise_rng) -> dict[str, np.ndarray]:
    """Run the three sensors of a domain on a scene."""
    rgb = shade_rgb(scene, light)
    wb = np.asarray(prof.white_balance, np.float32) * rng.normal(1, prof.wb_jitter, 3).astype(np.float32)
    rgb = rgb * wb * rng.uniform(*prof.exposure)
    rgb8 = camera(rgb, size, noise_rng, prof.blur, prof.rgb_noise, prof.jpeg)
    nir = shade_nir(scene, light, z_ref=dist) * rng.uniform(*prof.ir_gain) * 0.8
    if prof.ir_agc:  # automatic gain: the centre of the frame is brought to a target level
        c = nir.shape[0] // 4
        level = float(np.percentile(nir[c:-c, c:-c], 75))
        nir = nir * rng.uniform(0.55, 0.75) / max(level, 0.02)
    ir8 = camera(nir, size, noise_rng, prof.blur, prof.ir_noise, prof.jpeg, gamma=prof.ir_gamma)
    d = sense_depth(scene, noise_rng, prof.depth_near, prof.depth_far, prof.depth_mode, prof.depth_noise,
                    prof.depth_holes, prof.depth_slope, prof.depth_quant, prof.depth_window, prof.depth_blur)
    d = cv2.resize(d, (size, size), interpolation=cv2.INTER_NEAREST) if d.shape[0] != size else d
    depth8 = np.clip(d * 255 + 0.5, 0, 255).astype(np.uint8)
    return {"rgb": rgb8, "depth": depth8, "ir": ir8}


def _render_job(args: tuple[Spec, int, DomainProfile]) -> tuple[Spec, dict[str, np.ndarray]]:
    spec, size, prof = args
    return spec, render(spec, size, prof)


def iter_rendered(specs: Sequence[Spec], size: int, workers: int,
                  profiles: Mapping[str, DomainProfile] | None = None) -> Iterator[tuple[Spec, dict]]:
    """Rendered samples in spec order; with ``workers > 1`` in a process pool (same output)."""
    jobs = [(s, size, get_profile(s.domain, profiles)) for s in specs]
    if workers <= 1:
        for j in jobs:
            yield _render_job(j)
        return
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    # OpenCV's thread pool must be shrunk before forking (doing it in a forked child can
    # deadlock); the parent's setting is restored afterwards and no environment variable changes
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with ctx.Pool(workers) as pool:
            yield from pool.imap(_render_job, jobs, chunksize=8)
    finally:
        cv2.setNumThreads(before)


def to_sample(spec: Spec, images: dict[str, np.ndarray]) -> Sample:
    sid = f"sim{spec.domain}-{spec.index:06d}"
    video = f"sim{spec.domain}-v{spec.video:05d}"
    return Sample(sample_id=sid, label=int(spec.pai == "bonafide"), pai=spec.pai, dataset="simfas",
                  domain=spec.domain, split=spec.split, subject=f"sim{spec.domain}-s{spec.subject:04d}",
                  video=video, frame=spec.frame, images=images)


def generate_store(out: str | Path, per_domain: int = 1500, domains: Sequence[str] = ("C", "P", "S", "W"),
                   size: int = 112, seed: int = 0, frames_per_video: int = 1, workers: int | None = None,
                   overwrite: bool = False, progress: Callable[[int], None] | None = None,
                   profiles: Mapping[str, DomainProfile] | None = None) -> BuildReport:
    """Generate a SimFAS store: ``per_domain`` samples for each domain profile, deterministic in ``seed``.
    ``profiles`` (e.g. from :func:`~mfas.data.synth.domains.load_profiles`) adds domains or replaces built-in ones.

    The output does not depend on ``workers``. Bad arguments raise ConfigError naming them (see the
    ``*_RANGE`` limits); a store that cannot fit on the disk is refused before anything is written.
    """
    domains = _check_args(per_domain, domains, size, seed, frames_per_video, workers, profiles)
    workers = workers or max(1, min(os.cpu_count() or 1, 8))
    check_free_space(out, per_domain * len(domains), (size, size), ("rgb", "depth", "ir"))
    specs = plan(seed, domains, per_domain, frames_per_video, profiles)
    provenance = {"source": "SimFAS", "seed": seed, "domains": list(domains), "per_domain": per_domain,
                  "frames_per_video": frames_per_video,
                  "profiles": {d: get_profile(d, profiles).as_dict() for d in domains}}
    with StoreWriter(out, size=(size, size), provenance=provenance, overwrite=overwrite) as w:
        for spec, images in iter_rendered(specs, size, workers, profiles):
            w.add(to_sample(spec, images))
            if progress:
                progress(1)
    return w.report


def _check_args(per_domain: object, domains: object, size: object, seed: object, frames: object,
                workers: object, profiles: Mapping[str, DomainProfile] | None = None) -> list[str]:
    """The arguments of :func:`generate_store`, checked: ConfigError naming the first bad one."""

    def whole(name: str, v: object, lo: int, hi: int | None) -> None:
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < lo or (hi is not None and v > hi):
            span = f"between {lo:,} and {hi:,}" if hi is not None else f"at least {lo}"
            raise ConfigError(f"{name} must be a whole number {span}, got {v!r}")

    whole("per_domain (-n/--per-domain)", per_domain, *PER_DOMAIN_RANGE)
    whole("size (--size)", size, *SIZE_RANGE)
    whole("seed (--seed)", seed, 0, 2**63 - 1)
    whole("frames_per_video (--frames)", frames, *FRAMES_RANGE)
    if workers is not None:
        whole("workers (--workers)", workers, *WORKERS_RANGE)
    if isinstance(domains, str):
        domains = [d.strip() for d in domains.split(",") if d.strip()]
    domains = list(domains)
    if not domains:
        raise ConfigError("domains (--domains): no domain given; known: " + ", ".join({**PROFILES, **(profiles or {})}))
    twice = [d for d in dict.fromkeys(domains) if domains.count(d) > 1]
    if twice:
        raise ConfigError(f"domains (--domains): {twice[0]!r} is given twice")
    for d in domains:
        get_profile(d, profiles)
    return domains
