"""Decoding one image file into the prepared geometry, and what a decoder may return.

Geometry (the same as ``../shared/data``): every image becomes 8-bit grey, is padded to a square
with black borders (centred, never cropped) and resized with Lanczos; masks get the same padding
and nearest-neighbour resizing. Grey conversion: 16-bit and 32-bit images ('I;16*', 'I', 'F') are
min-max scaled to 0..255; alpha is composited on black; colour is converted with PIL's 'L'
weights.

A decoder (:func:`load_grey` by default) turns ``(path, size[, arg])`` into a uint8
[size, size] image or a :class:`Decoded` (image, mask, small per-file values); it raises
:class:`DecodeFailure` to skip a file but keep what it could read. :func:`decode_file` runs one
decoder call and turns any failure into a reason for the ``skipped`` list.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from cxrcl.data.limits import check_pixels


def to_grey(img: Image.Image) -> np.ndarray:
    """A decoded PIL image -> uint8 [H, W] grey (16/32-bit min-max scaled, alpha on black)."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        if not np.isfinite(a).all():  # float TIFFs: NaN/Inf would become arbitrary grey values
            raise ValueError(f"{int((~np.isfinite(a)).sum())} pixels are NaN or infinite")
        lo, hi = float(a.min()), float(a.max())
        if hi <= lo:
            return np.zeros(a.shape, dtype=np.uint8)
        return np.round((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "RGBa", "La", "PA"):
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(black, rgba)
    if img.mode != "L":
        img = img.convert("L")
    return np.asarray(img, dtype=np.uint8)


def pad_resize(array: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    """uint8 [H, W] -> uint8 [size, size]: pad to a centred black square, then resize.

    Lanczos for images, nearest neighbour for masks (``nearest=True``). No cropping.
    """
    a = np.asarray(array)
    if a.ndim != 2:
        raise ValueError(f"expected a 2-D grey image, got shape {a.shape}")
    if a.dtype != np.uint8:
        a = a.astype(np.uint8)
    h, w = a.shape
    if h != w:
        side = max(h, w)
        sq = np.zeros((side, side), dtype=np.uint8)
        top, left = (side - h) // 2, (side - w) // 2
        sq[top:top + h, left:left + w] = a
        a = sq
    if a.shape[0] == size:
        return np.ascontiguousarray(a)
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.LANCZOS
    return np.asarray(Image.fromarray(a).resize((size, size), resample=resample), dtype=np.uint8)


#: The image formats :func:`load_grey` opens (PIL otherwise tries every plugin it has, EPS
#: included, which runs Ghostscript on the file).
IMAGE_FORMATS = ("PNG", "JPEG", "MPO", "TIFF", "BMP", "GIF", "WEBP", "PPM", "JPEG2000")


def load_grey(path: str | os.PathLike, size: int) -> np.ndarray:
    """Decode an image file -> uint8 [size, size] grey, padded to square and resized.

    The declared size is checked against ``$CXRCL_MAX_PIXELS`` before any pixel is decoded
    (:func:`cxrcl.data.limits.check_pixels`), so a small file claiming a huge image is skipped
    with its size, not decoded."""
    Image.init()  # register every plugin (open() with ``formats`` only pre-loads the common ones)
    with warnings.catch_warnings():  # PIL's bomb warning: the cap below decides, with the size
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = Image.open(path, formats=[f for f in IMAGE_FORMATS if f in Image.OPEN])
    with img:
        check_pixels(*img.size)
        img.load()  # decode now, so truncated files fail here and not later
        return pad_resize(to_grey(img), size)


def rgb_to_grey(images: np.ndarray) -> np.ndarray:
    """uint8 [..., 3] -> uint8 [...] with PIL's 'L' weights (ITU-R 601-2)."""
    a = images.astype(np.float32)
    g = a[..., 0] * 0.299 + a[..., 1] * 0.587 + a[..., 2] * 0.114
    return np.clip(np.round(g), 0, 255).astype(np.uint8)


def resize_stack(images: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    """uint8 [N, H, W] -> uint8 [N, size, size] (no-op when already square of that size)."""
    if images.shape[1] == images.shape[2] == size:
        return np.ascontiguousarray(images, dtype=np.uint8)
    return np.stack([pad_resize(im, size, nearest=nearest) for im in images]) if len(images) else \
        np.zeros((0, size, size), dtype=np.uint8)


class Decoded(NamedTuple):
    """What a ``decode`` function may return instead of a bare uint8 [size, size] image: the
    image, its mask (uint8 0/1 [size, size], or None for an empty mask) and ``extra``, a small
    JSON-able dict of per-file values (e.g. DICOM header fields) that :func:`write_decoded`
    keeps in ``writer.extras`` by input row."""

    image: np.ndarray
    mask: np.ndarray | None = None
    extra: dict | None = None


class DecodeFailure(Exception):  # noqa: N818 - a result of decoding more than an error
    """Raised by a ``decode`` function: skip the file with ``reason`` but keep ``extra`` (what
    could be read anyway, e.g. the patient of a DICOM whose pixels are broken)."""

    def __init__(self, reason: str, extra: dict | None = None):
        super().__init__(reason)
        self.reason, self.extra = str(reason), extra


def failure_reason(e: BaseException, path: str | os.PathLike | None = None) -> str:
    """``Type: first line of the message`` (<= 200 characters) for the ``skipped`` list; with
    ``path``, that path is shortened to its file name in the message (the list names the file)."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if path is not None:
        msg = msg.replace(str(path), Path(path).name)
    return f"{type(e).__name__}: {msg}"[:200].rstrip(": ")


#: ``(index, image or None, reason or None, mask or None, extra or None)``
DecodeResult = tuple[int, np.ndarray | None, str | None, np.ndarray | None, dict | None]


def decode_file(job: tuple) -> DecodeResult:
    """``(i, path, size, decode[, arg])`` -> ``(i, image, reason, mask, extra)``."""
    i, path, size, decode = job[:4]
    if decode is None:
        decode = load_grey  # looked up at call time (the tests wrap it)
    try:
        out = decode(path, size, *job[4:])
    except FileNotFoundError:
        return i, None, "file not found", None, None
    except DecodeFailure as e:
        return i, None, e.reason, None, e.extra
    except Exception as e:  # noqa: BLE001 - any decoder failure means: skip this file
        return i, None, failure_reason(e), None, None
    if isinstance(out, Decoded):
        return i, out.image, None, out.mask, out.extra
    return i, out, None, None, None
