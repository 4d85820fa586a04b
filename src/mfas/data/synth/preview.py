"""Picture grids of SimFAS samples (for docs/simfas.md and quick looks)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from mfas.data.images import describe_missing
from mfas.data.synth.domains import get_profile
from mfas.data.synth.generate import SIZE_RANGE, Spec, render
from mfas.errors import ConfigError, DataError

RENDERED_SPECIES = ("bonafide", "print", "replay", "cut", "mask_rigid", "mask_flexible", "mask_paper", "partial")


def preview_grid(domain: str, species: Sequence[str] = RENDERED_SPECIES, size: int = 112,
                 seed: int = 0) -> np.ndarray:
    """(3 * size + header, len(species) * size, 3) uint8 RGB: columns species, rows RGB/depth/NIR."""
    if isinstance(size, bool) or not isinstance(size, int) or not SIZE_RANGE[0] <= size <= SIZE_RANGE[1]:
        raise ConfigError(f"size (--size) must be a whole number between {SIZE_RANGE[0]} and {SIZE_RANGE[1]}, "
                          f"got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed (--seed) must be a whole number of at least 0, got {seed!r}")
    get_profile(domain)
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
    """Write ``rgb`` as a PNG at ``path``, atomically (a temporary file renamed into place); DataError naming
    the path when it cannot be written."""
    p = Path(path)
    if p.suffix.lower() != ".png":
        raise DataError(p, f"the preview is a PNG image: give a file name ending in .png, not {p.suffix!r}")
    if os.path.lexists(p) and (p.is_dir() or not p.exists()):
        raise DataError(p, "is a folder; give a file name ending in .png" if p.is_dir()
                        else f"cannot be written: it {describe_missing(p)}")
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise DataError(p, "could not encode the PNG")
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(buf.tobytes())
        os.replace(tmp, p)
    except OSError as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        why = "a part of its path is a file, not a folder" if isinstance(e, FileExistsError | NotADirectoryError) \
            else (e.strerror or str(e))
        raise DataError(p, f"cannot be written: {why}") from None
