"""Image decoding and checking with errors that name the file and the reason.

Reading a file is done in this order, so a hostile or broken file costs almost nothing:

1. the path: it must exist (a broken or looping symbolic link is named as such), be a regular file, have
   an accepted suffix (:data:`IMAGE_SUFFIXES`), be non-empty and at most :func:`max_file_bytes` long;
2. the header (:func:`read_header`): the format is recognised from the content (PNG, JPEG, BMP, TIFF or
   WebP; anything else is refused), and width, height, channels and bit depth are read without decoding;
3. the limits, before any pixel is decoded: at most :func:`max_pixels` pixels
   (:data:`MAX_PIXELS` = 8192 x 8192 unless ``MFAS_MAX_IMAGE_PIXELS`` says otherwise), each side at
   least :data:`MIN_SIDE` pixels, 8 bits per channel;
4. decoding with OpenCV; an OpenCV error (its own pixel limit included) becomes a :class:`DataError`.
"""

from __future__ import annotations

import errno
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mfas.conventions import MODALITY_CHANNELS
from mfas.errors import ConfigError, DataError

#: Formats accepted from disk; anything else is refused before decoding.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: Largest image accepted per modality, in pixels (a guard against decompression bombs): 8192 x 8192, far
#: above any face capture and phone photo (48 MP). It is checked from the header, before decoding, so a
#: refused file costs nothing; an accepted one at the limit decodes to at most 268 MB (4 channels), and
#: ``prepare`` decodes in up to 8 processes at once. ``MFAS_MAX_IMAGE_PIXELS`` overrides it.
MAX_PIXELS = 8192 * 8192
#: Smallest side accepted (pixels): a 1 x 1 or 4 x 4 "image" is a placeholder or a broken capture.
MIN_SIDE = 8
#: Bytes a file may have beyond the raw pixels of an image at the pixel limit (headers, metadata).
_FILE_SLACK = 16 << 20
_ENV_LIMIT = "MFAS_MAX_IMAGE_PIXELS"


def max_pixels() -> int:
    """The pixel limit in force: ``MFAS_MAX_IMAGE_PIXELS`` when set, :data:`MAX_PIXELS` otherwise."""
    text = os.environ.get(_ENV_LIMIT, "").strip()
    if not text:
        return MAX_PIXELS
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = 0
    if value < MIN_SIDE * MIN_SIDE:
        raise ConfigError(f"{_ENV_LIMIT}={text!r}: expected a whole number of pixels of at least "
                          f"{MIN_SIDE * MIN_SIDE}")
    return value


def max_file_bytes() -> int:
    """The largest image file read: 4 bytes per pixel at the pixel limit, plus 16 MiB of headers."""
    return 4 * max_pixels() + _FILE_SLACK


def describe_missing(p: Path) -> str:
    """Why ``p`` cannot be used although it was named: absent, a broken symbolic link or a link loop."""
    if "\x00" in str(p):
        return "cannot be used as a path (it contains a NUL character)"
    if os.path.islink(p):
        try:
            os.stat(p)
        except OSError as e:
            if e.errno == errno.ELOOP:
                return "is a symbolic link loop (it points, directly or not, at itself)"
            try:
                target = os.readlink(p)
            except OSError:
                target = "?"
            return f"is a broken symbolic link (to {target}, which does not exist)"
    try:
        os.stat(p)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "cannot be reached: a folder on its path is a symbolic link loop"
        if e.errno == errno.ENOTDIR:
            return "does not exist (a part of its path is a file, not a folder)"
        if e.errno == errno.EACCES:
            return "cannot be reached: permission denied"
    return "does not exist"


# ------------------------------------------------------------------------------------------- headers

@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says, read without decoding any pixel."""

    format: str  # PNG, JPEG, BMP, TIFF or WebP
    width: int
    height: int
    channels: int | None  # None when only decoding can tell (palette BMP)
    bits: int  # bits per channel (sample precision)
    orientation: int = 1  # EXIF orientation of a JPEG (1: as stored; 6: rotate 90 clockwise to view, ...)


class _Short(Exception):
    """The data ends before the header does."""


def _u(fmt: str, data: memoryview, at: int) -> tuple:
    size = struct.calcsize(fmt)
    if at < 0 or at + size > len(data):
        raise _Short
    return struct.unpack_from(fmt, data, at)


_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _png(d: memoryview) -> ImageHeader:
    length, kind = _u(">I4s", d, 8)
    if kind != b"IHDR" or length != 13:
        raise ValueError("the first chunk is not a valid IHDR")
    w, h, bits, colour = _u(">IIBB", d, 16)
    if colour not in _PNG_CHANNELS or bits not in (1, 2, 4, 8, 16):
        raise ValueError(f"invalid colour type {colour} or bit depth {bits}")
    return ImageHeader("PNG", w, h, _PNG_CHANNELS[colour], max(bits, 8) if colour != 3 else 8)


def _exif_orientation(d: memoryview, start: int, end: int) -> int:
    """The orientation tag (0x0112) of IFD0 in an APP1 ``Exif`` segment's bytes ``d[start:end]``; 1 when absent
    or unreadable (a broken EXIF block is not a broken image)."""
    try:
        if bytes(d[start:start + 6]) != b"Exif\x00\x00":
            return 1
        t = start + 6
        order = bytes(d[t:t + 2])
        if order not in (b"II", b"MM"):
            return 1
        e = "<" if order == b"II" else ">"
        (ifd,) = _u(e + "I", d, t + 4)
        (n,) = _u(e + "H", d, t + ifd)
        for k in range(min(n, 512)):
            at = t + ifd + 2 + 12 * k
            if at + 12 > end:
                return 1
            tag, kind, _count = _u(e + "HHI", d, at)
            if tag == 0x0112 and kind == 3:
                (v,) = _u(e + "H", d, at + 8)
                return v if 1 <= v <= 8 else 1
    except _Short:
        return 1
    return 1


def _jpeg(d: memoryview) -> ImageHeader:
    i = 2
    orientation = 1
    while True:
        if _u("B", d, i)[0] != 0xFF:
            raise ValueError(f"expected a marker at byte {i}")
        while _u("B", d, i)[0] == 0xFF:  # fill bytes
            i += 1
        marker = _u("B", d, i)[0]
        i += 1
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a segment
            continue
        if marker in (0xD9, 0xDA):
            raise ValueError("no frame header (SOF) before the image data")
        (length,) = _u(">H", d, i)
        if length < 2:
            raise ValueError(f"segment of length {length} at byte {i}")
        if marker == 0xE1 and orientation == 1:
            orientation = _exif_orientation(d, i + 2, min(i + length, len(d)))
        if marker in _JPEG_SOF:
            bits, h, w, comps = _u(">BHHB", d, i + 2)
            if h == 0:
                raise ValueError("the height is given after the image data (DNL), which is not supported")
            return ImageHeader("JPEG", w, h, comps, bits, orientation)
        i += length


def _bmp(d: memoryview) -> ImageHeader:
    (dib,) = _u("<I", d, 14)
    if dib == 12:
        w, h, _, bpp = _u("<HHHH", d, 18)
    elif dib >= 16:
        w, h, _, bpp = _u("<iiHH", d, 18)
    else:
        raise ValueError(f"unknown BMP header size {dib}")
    if bpp not in (1, 2, 4, 8, 16, 24, 32):
        raise ValueError(f"invalid bit count {bpp}")
    channels = {16: 3, 24: 3, 32: 4}.get(bpp)
    return ImageHeader("BMP", w, abs(h), channels, 8)


def _webp(d: memoryview) -> ImageHeader:
    (kind,) = _u("4s", d, 12)
    if kind == b"VP8 ":
        if _u("3s", d, 23)[0] != b"\x9d\x01\x2a":
            raise ValueError("missing VP8 start code")
        w, h = _u("<HH", d, 26)
        return ImageHeader("WebP", w & 0x3FFF, h & 0x3FFF, 3, 8)
    if kind == b"VP8L":
        if _u("B", d, 20)[0] != 0x2F:
            raise ValueError("missing VP8L signature")
        (bits,) = _u("<I", d, 21)
        return ImageHeader("WebP", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, 4 if bits >> 28 & 1 else 3, 8)
    if kind == b"VP8X":
        flags = _u("B", d, 20)[0]
        w = int.from_bytes(_u("3s", d, 24)[0], "little") + 1
        h = int.from_bytes(_u("3s", d, 27)[0], "little") + 1
        return ImageHeader("WebP", w, h, 4 if flags & 0x10 else 3, 8)
    raise ValueError(f"unknown WebP chunk {kind!r}")


def _tiff(d: memoryview) -> ImageHeader:
    e = "<" if bytes(d[:2]) == b"II" else ">"
    (ifd,) = _u(e + "I", d, 4)
    (n,) = _u(e + "H", d, ifd)
    if n == 0 or ifd + 2 + 12 * n > len(d):
        raise _Short if n else ValueError("empty directory")
    tags: dict[int, list[int]] = {}
    for k in range(n):
        tag, typ, count = _u(e + "HHI", d, ifd + 2 + 12 * k)
        if tag not in (256, 257, 258, 277):
            continue
        if tag in tags or typ not in (3, 4) or count == 0 or count > 64 or (tag in (256, 257) and count != 1):
            raise ValueError(f"unusual or repeated size tag {tag} (type {typ}, count {count})")
        size = 2 if typ == 3 else 4
        at = ifd + 2 + 12 * k + 8
        if size * count > 4:
            (at,) = _u(e + "I", d, at)
        tags[tag] = list(_u(e + ("H" if typ == 3 else "I") * count, d, at))
    if 256 not in tags or 257 not in tags:
        raise ValueError("no image width or height tag")
    bits = max(tags.get(258, [1]))
    return ImageHeader("TIFF", tags[256][0], tags[257][0], tags.get(277, [1])[0], max(bits, 8))


def read_header(data: bytes | memoryview | np.ndarray, where: object = "<bytes>") -> ImageHeader:
    """Format, size, channels and bit depth from the first bytes of an image file, without decoding.

    Raises :class:`DataError` naming ``where`` when the content is no PNG, JPEG, BMP, TIFF or WebP file, or
    its header is corrupt or truncated.
    """
    view = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
    d = bytes(view[:16])
    if d.startswith(b"\x89PNG\r\n\x1a\n"):
        parse = _png
    elif d.startswith(b"\xff\xd8"):
        parse = _jpeg
    elif d.startswith(b"BM"):
        parse = _bmp
    elif d[:4] == b"RIFF" and d[8:12] == b"WEBP":
        parse = _webp
    elif d[:4] in (b"II*\x00", b"MM\x00*"):
        parse = _tiff
    elif d[:4] in (b"II+\x00", b"MM\x00+"):
        raise DataError(where, "unsupported image format: BigTIFF; save it as a plain TIFF or a PNG")
    else:
        raise DataError(where, f"cannot decode image (corrupt or truncated file): the content is not a PNG, "
                               f"JPEG, BMP, TIFF or WebP image (it starts with {d[:8]!r})")
    try:
        return parse(view)
    except _Short:
        raise DataError(where, "cannot decode image (corrupt or truncated file): the file ends inside "
                               "its header") from None
    except (ValueError, struct.error) as e:
        raise DataError(where, f"cannot decode image (corrupt or truncated file): bad header ({e})") from None


def check_size(width: int, height: int, where: object, before: str = "") -> None:
    """Refuse an image above the pixel limit or with a side below :data:`MIN_SIDE` (``before``: when)."""
    limit = max_pixels()
    if width <= 0 or height <= 0:
        raise DataError(where, f"cannot decode image (corrupt or truncated file): empty image size "
                               f"{width}x{height}")
    if width * height > limit:
        raise DataError(where, f"image of {width}x{height} ({width * height:,} pixels) exceeds the limit of "
                               f"{limit:,} pixels per image{before} (set {_ENV_LIMIT} to change it)")
    if min(width, height) < MIN_SIDE:
        raise DataError(where, f"image of {width}x{height} is too small: each side must be at least "
                               f"{MIN_SIDE} pixels")


def _decode_bytes(raw: np.ndarray) -> np.ndarray | None:
    """The one call that decodes pixels (tests watch it)."""
    return cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)


def decode_image(raw: bytes | np.ndarray, where: object = "<bytes>") -> np.ndarray:
    """Check the header of an encoded image against the limits, then decode it (OpenCV's channel order)."""
    buf = np.frombuffer(raw, np.uint8) if isinstance(raw, bytes | bytearray | memoryview) \
        else np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1)
    if buf.size == 0:
        raise DataError(where, "file is empty")
    head = read_header(buf, where)
    check_size(head.width, head.height, where, before=" (refused before decoding)")
    if head.bits > 8:
        raise DataError(where, f"expected an 8-bit image, got {head.bits}-bit {head.format}; convert it in "
                               "the adapter")
    try:
        img = _decode_bytes(buf)
    except cv2.error as e:
        text = str(e)
        why = "it is larger than OpenCV's own pixel limit (CV_IO_MAX_IMAGE_PIXELS)" \
            if "MAX_IMAGE_PIXELS" in text or "validateInputImageSize" in text \
            else text.strip().splitlines()[-1][:200]
        raise DataError(where, f"cannot decode image: OpenCV refused it: {why}") from None
    if img is None or img.size == 0:
        raise DataError(where, "cannot decode image (corrupt or truncated file)")
    if img.dtype != np.uint8:
        raise DataError(where, f"expected an 8-bit image, got {img.dtype}; convert it in the adapter")
    check_size(img.shape[1], img.shape[0], where)
    return upright(img, head.orientation)


#: EXIF orientation -> the steps that show the stored pixels upright: transpose first, then flips
_UPRIGHT = {1: (False, None), 2: (False, 1), 3: (False, -1), 4: (False, 0), 5: (True, None), 6: (True, 1),
            7: (True, -1), 8: (True, 0)}


def upright(img: np.ndarray, orientation: int) -> np.ndarray:
    """``img`` as a viewer shows it: phone cameras store portraits sideways with an EXIF orientation tag, and a
    face detector (or a model) given the stored pixels would see the face on its side."""
    transpose, flip = _UPRIGHT.get(orientation, (False, None))
    if transpose:
        img = np.ascontiguousarray(np.swapaxes(img, 0, 1))
    return img if flip is None else cv2.flip(img, flip)


def read_image(path: str | Path, modality: str) -> np.ndarray:
    """Decode ``path`` as the given modality: H x W x 3 RGB for ``rgb``, H x W otherwise.

    8-bit only: 16-bit depth must be scaled by the dataset's adapter, which knows its units. The size
    limits are checked on the header, before decoding (see the module's docstring).
    """
    p = Path(path)
    if not p.exists():
        raise DataError(p, "file " + describe_missing(p))
    if not p.is_file():
        raise DataError(p, "is not a regular file")
    if p.suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(p, f"unsupported image format {p.suffix!r}; use one of {', '.join(IMAGE_SUFFIXES)}")
    size = p.stat().st_size
    if size == 0:
        raise DataError(p, "file is empty")
    if size > max_file_bytes():
        raise DataError(p, f"file of {size:,} bytes is larger than any image within the limit of "
                           f"{max_pixels():,} pixels can be ({max_file_bytes():,} bytes)")
    try:
        raw = np.fromfile(p, dtype=np.uint8)
    except OSError as e:
        raise DataError(p, f"cannot read the file: {e.strerror or e}") from None
    return decode_modality(raw, modality, p)


def decode_modality(raw: bytes | np.ndarray, modality: str, where: object = "<bytes>") -> np.ndarray:
    """An encoded image (the bytes of a file or an upload) as ``modality``, exactly as :func:`read_image` reads
    the same bytes from disk: H x W x 3 RGB for ``rgb``, H x W otherwise; the limits checked on the header."""
    img = decode_image(raw, where)
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return conform(img, modality, where)


def conform(img: np.ndarray, modality: str, where: object = "<array>") -> np.ndarray:
    """Check dtype, size and channels of an array for ``modality``; grey 3-channel depth/IR is reduced.

    Returns H x W x 3 for ``rgb`` and H x W for single-channel modalities.
    """
    if not isinstance(img, np.ndarray):
        raise DataError(where, f"expected a numpy array or an image path, got {type(img).__name__}")
    if modality not in MODALITY_CHANNELS:
        raise DataError(where, f"unknown modality {modality!r}; known: {', '.join(MODALITY_CHANNELS)}")
    if img.dtype != np.uint8:
        raise DataError(where, f"{modality}: expected uint8 pixels, got {img.dtype}")
    if img.ndim not in (2, 3):
        raise DataError(where, f"{modality}: expected an H x W or H x W x C image, got shape {img.shape}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise DataError(where, f"{modality}: empty image (shape {img.shape})")
    check_size(img.shape[1], img.shape[0], where)
    want = MODALITY_CHANNELS[modality]
    have = 1 if img.ndim == 2 else img.shape[2]
    if want == 1 and have == 3:
        # depth and IR are often saved as 3-channel grey JPEGs; colour here is a mistake
        if np.abs(img.astype(np.int16) - img[..., :1]).max() > 8:
            raise DataError(where, f"{modality}: wrong channel count: expected a single-channel "
                                   "image, got a 3-channel image whose channels differ")
        return np.ascontiguousarray(img[..., 0])
    if want != have:
        raise DataError(where, f"{modality}: wrong channel count: expected {want}, got {have}")
    return np.ascontiguousarray(img)


#: how stores resize (``fit_size``), as recorded in their provenance and in bundles
RESIZE = "cv2 INTER_AREA when shrinking, INTER_LINEAR otherwise"


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
