"""Image decoding and checking with errors that name the file and the reason."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from mfas.conventions import MODALITY_CHANNELS
from mfas.errors import DataError

#: Formats accepted from disk; anything else is refused before decoding.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: Largest image accepted per modality (a guard against decompression bombs).
MAX_PIXELS = 8192 * 8192


def read_image(path: str | Path, modality: str) -> np.ndarray:
    """Decode ``path`` as the given modality: H x W x 3 RGB for ``rgb``, H x W otherwise.

    8-bit only: 16-bit depth must be scaled by the dataset's adapter, which knows its units.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(p, "file does not exist")
    if not p.is_file():
        raise DataError(p, "is not a regular file")
    if p.suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(p, f"unsupported image format {p.suffix!r}; use one of {', '.join(IMAGE_SUFFIXES)}")
    raw = np.fromfile(p, dtype=np.uint8)
    if raw.size == 0:
        raise DataError(p, "file is empty")
    img = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DataError(p, "cannot decode image (corrupt or truncated file)")
    if img.dtype != np.uint8:
        raise DataError(p, f"expected an 8-bit image, got {img.dtype}; convert it in the adapter")
    if img.shape[0] * img.shape[1] > MAX_PIXELS:
        raise DataError(p, f"image of {img.shape[1]}x{img.shape[0]} exceeds the {MAX_PIXELS}-pixel limit")
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return conform(img, modality, p)


def conform(img: np.ndarray, modality: str, where: object = "<array>") -> np.ndarray:
    """Check dtype and channels of an array for ``modality``; grey 3-channel depth/IR is reduced.

    Returns H x W x 3 for ``rgb`` and H x W for single-channel modalities.
    """
    if not isinstance(img, np.ndarray):
        raise DataError(where, f"expected a numpy array or an image path, got {type(img).__name__}")
    if img.dtype != np.uint8:
        raise DataError(where, f"{modality}: expected uint8 pixels, got {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    want = MODALITY_CHANNELS[modality]
    have = 1 if img.ndim == 2 else (img.shape[2] if img.ndim == 3 else -1)
    if img.ndim not in (2, 3):
        raise DataError(where, f"{modality}: expected an H x W or H x W x C image, got shape {img.shape}")
    if want == 1 and have == 3:
        # depth and IR are often saved as 3-channel grey JPEGs; colour here is a mistake
        if np.abs(img.astype(np.int16) - img[..., :1]).max() > 8:
            raise DataError(where, f"{modality}: wrong channel count: expected a single-channel "
                                   "image, got a 3-channel image whose channels differ")
        return np.ascontiguousarray(img[..., 0])
    if want != have:
        raise DataError(where, f"{modality}: wrong channel count: expected {want}, got {have}")
    return np.ascontiguousarray(img)


def fit_size(img: np.ndarray, size: tuple[int, int], resize: bool, where: object, modality: str) -> np.ndarray:
    """Return ``img`` at ``size`` (H, W): resized when allowed, otherwise an error."""
    h, w = size
    if img.shape[:2] == (h, w):
        return img
    if not resize:
        raise DataError(where, f"{modality}: size {img.shape[1]}x{img.shape[0]} does not match the "
                               f"store's {w}x{h} (pass resize=True to resize)")
    interp = cv2.INTER_AREA if img.shape[0] > h else cv2.INTER_LINEAR
    return cv2.resize(img, (w, h), interpolation=interp)
