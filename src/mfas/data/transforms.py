"""Transforms on dataset items (dicts of C x H x W tensors plus a presence mask).

* :class:`JointGeometric` draws one set of parameters per sample and applies it to every
  modality, so RGB, depth and IR stay pixel-aligned.
* :class:`Photometric` draws parameters per modality (sensors differ): brightness, contrast,
  gamma, and for RGB a colour shift; noise for depth/IR.
* :class:`ToFloat` maps uint8 to [0, 1]; :class:`Normalize` uses per-modality mean/std that a
  model asks for.

Absent modalities are left as zeros by the photometric and normalising steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torchvision.transforms.v2.functional as TF

from mfas.conventions import MODALITIES


def _mods(item: dict) -> list[str]:
    return [m for m in MODALITIES if m in item]


def _present(item: dict, m: str) -> bool:
    mods = _mods(item)
    return bool(item["present"][mods.index(m)]) if "present" in item else True


class Compose:
    def __init__(self, steps: Sequence[Callable[[dict], dict]]):
        self.steps = list(steps)

    def __call__(self, item: dict, g: torch.Generator | None = None) -> dict:
        for s in self.steps:
            item = s(item, g) if isinstance(s, JointGeometric | Photometric) else s(item)
        return item

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(repr(s) for s in self.steps) + ")"


@dataclass
class JointGeometric:
    """Random resized crop, horizontal flip and rotation, identical across modalities."""

    size: tuple[int, int]
    scale: tuple[float, float] = (0.8, 1.0)
    ratio: tuple[float, float] = (0.9, 1.1)
    hflip: float = 0.5
    max_rotation: float = 10.0

    def params(self, h: int, w: int, g: torch.Generator | None = None) -> dict:
        def u(a: float, b: float) -> float:
            return a + (b - a) * float(torch.rand(1, generator=g))

        area = h * w
        for _ in range(10):
            target = area * u(*self.scale)
            r = math.exp(u(math.log(self.ratio[0]), math.log(self.ratio[1])))
            cw, ch = round(math.sqrt(target * r)), round(math.sqrt(target / r))
            if 0 < cw <= w and 0 < ch <= h:
                break
        else:
            cw, ch = w, h
        top = int(torch.randint(0, h - ch + 1, (1,), generator=g))
        left = int(torch.randint(0, w - cw + 1, (1,), generator=g))
        return {"top": top, "left": left, "h": ch, "w": cw, "flip": u(0, 1) < self.hflip,
                "angle": u(-self.max_rotation, self.max_rotation)}

    def __call__(self, item: dict, g: torch.Generator | None = None) -> dict:
        mods = _mods(item)
        h, w = item[mods[0]].shape[-2:]
        p = self.params(h, w, g)
        for m in mods:
            x = item[m]
            x = TF.resized_crop(x, p["top"], p["left"], p["h"], p["w"], list(self.size), antialias=True)
            if p["flip"]:
                x = TF.horizontal_flip(x)
            if p["angle"]:
                x = TF.rotate(x, p["angle"])
            item[m] = x
        return item


class Resize:
    """Resize every modality to ``size`` (H, W)."""

    def __init__(self, size: tuple[int, int]):
        self.size = list(size)

    def __call__(self, item: dict) -> dict:
        for m in _mods(item):
            if tuple(item[m].shape[-2:]) != tuple(self.size):
                item[m] = TF.resize(item[m], self.size, antialias=True)
        return item


class ToFloat:
    """uint8 [0, 255] -> float32 [0, 1]."""

    def __call__(self, item: dict) -> dict:
        for m in _mods(item):
            if item[m].dtype == torch.uint8:
                item[m] = item[m].float().div_(255.0)
        return item


@dataclass
class Photometric:
    """Per-modality photometric jitter on float images in [0, 1]."""

    brightness: float = 0.2
    contrast: float = 0.2
    gamma: float = 0.2
    color_shift: float = 0.05  # RGB only: per-channel additive shift
    noise: float = 0.02  # depth / IR only: Gaussian sensor noise std

    def __call__(self, item: dict, g: torch.Generator | None = None) -> dict:
        def u(a: float) -> float:
            return (2 * float(torch.rand(1, generator=g)) - 1) * a

        for m in _mods(item):
            if not _present(item, m):
                continue
            x = item[m]
            if x.dtype == torch.uint8:
                raise TypeError("Photometric expects float images; put ToFloat before it")
            x = x.clamp(0, 1) ** math.exp(u(self.gamma))
            mean = x.mean()
            x = (x - mean) * (1 + u(self.contrast)) + mean + u(self.brightness)
            if m == "rgb" and self.color_shift:
                x = x + (torch.rand(3, 1, 1, generator=g) * 2 - 1) * self.color_shift
            elif m != "rgb" and self.noise:
                x = x + torch.randn(x.shape, generator=g) * self.noise
            item[m] = x.clamp(0, 1)
        return item


class Normalize:
    """Per-modality ``(x - mean) / std`` on float images; absent modalities stay zero."""

    def __init__(self, stats: Mapping[str, tuple[Sequence[float], Sequence[float]]]):
        self.stats = {m: (torch.tensor(mu).view(-1, 1, 1), torch.tensor(sd).view(-1, 1, 1))
                      for m, (mu, sd) in stats.items()}

    def __call__(self, item: dict) -> dict:
        for m in _mods(item):
            if m in self.stats and _present(item, m):
                mu, sd = self.stats[m]
                item[m] = (item[m] - mu) / sd
        return item


def train_transform(size: tuple[int, int], stats: Mapping | None = None) -> Compose:
    """The default training pipeline: joint geometry, float, per-modality photometric, normalise."""
    steps: list = [JointGeometric(size), ToFloat(), Photometric()]
    if stats:
        steps.append(Normalize(stats))
    return Compose(steps)


def eval_transform(size: tuple[int, int], stats: Mapping | None = None) -> Compose:
    """Deterministic evaluation pipeline: float, resize, normalise. The resize works on float images (not on
    uint8, whose antialiased kernel rounds in fixed point) so that :mod:`mfas.inference.preprocess` reproduces
    it in numpy to 1e-6."""
    steps: list = [ToFloat(), Resize(size)]
    if stats:
        steps.append(Normalize(stats))
    return Compose(steps)
