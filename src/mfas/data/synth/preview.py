"""Picture grids of SimFAS samples (for docs/simfas.md and quick looks)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from mfas.data.synth.generate import Spec, render

RENDERED_SPECIES = ("bonafide", "print", "replay", "cut", "mask_rigid", "mask_flexible", "partial")


def preview_grid(domain: str, species: Sequence[str] = RENDERED_SPECIES, size: int = 112,
                 seed: int = 0) -> np.ndarray:
    """(3 * size + header, len(species) * size, 3) uint8 RGB: columns species, rows RGB/depth/NIR."""
    head = 18
    cols = []
    for j, pai in enumerate(species):
        im = render(Spec(seed, domain, j, 11 + j, "test", pai, 101 + j, 0), size)
        tile = np.concatenate([im["rgb"]] + [np.repeat(im[m][..., None], 3, -1) for m in ("depth", "ir")], 0)
        label = np.full((head, size, 3), 255, np.uint8)
        cv2.putText(label, pai, (3, head - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
        cols.append(np.concatenate([label, tile], 0))
    grid = np.concatenate(cols, 1)
    side = np.full((grid.shape[0], 44, 3), 255, np.uint8)
    for k, name in enumerate(("RGB", "depth", "NIR")):
        cv2.putText(side, name, (2, head + k * size + size // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return np.concatenate([side, grid], 1)


def save_png(path: str | Path, rgb: np.ndarray) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(p), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"{p}: could not write PNG")
