"""Size caps that protect a preparation from hostile or broken inputs (checked before decoding).

A small file may declare a huge image: a 350 KB 16-bit PNG claiming 13000 x 13000 pixels, a
deflated DICOM claiming 12000 x 12000, a .tgz member of 300 MB. Decoding those takes gigabytes.
Every decoder therefore reads the declared size first (the PIL header, the DICOM Rows/Columns,
the inflated length of a deflated DICOM, a tar member's size) and skips the file, naming its
size, when it is above the cap; the preparation goes on with the other files.

Our choices (no paper prescribes them):

- ``CXRCL_MAX_PIXELS`` (default 40,000,000): the most pixels of an image once padded to its
  square (``max(width, height) ** 2``, what the pipeline allocates), i.e. about 6300 x 6300.
  The largest public radiographs (MIMIC-CXR DICOMs, 4280 x 3520) are well inside. A deflated
  DICOM may inflate to at most ``2 * CXRCL_MAX_PIXELS`` bytes plus 16 MiB of header room.
- ``CXRCL_MAX_REPORT_BYTES`` (default 1,000,000): the largest report file (Open-i XML, MIMIC
  text) read; real reports are a few kilobytes.

Both are environment variables, so the worker processes see them and every source honours them
without a per-source option; :func:`check_limits` validates them before a preparation starts.
"""

from __future__ import annotations

import os

from cxrcl.errors import CxrclError

MAX_PIXELS_ENV = "CXRCL_MAX_PIXELS"
MAX_REPORT_BYTES_ENV = "CXRCL_MAX_REPORT_BYTES"
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_REPORT_BYTES = 1_000_000
#: header room of a deflated DICOM above its pixel bytes
DEFLATE_HEADER_BYTES = 16 << 20


class TooLarge(ValueError):  # noqa: N818 - reads as the skip reason's type: "TooLarge: ..."
    """A file declares more pixels or bytes than the cap allows (a skip reason, not a crash)."""


def _positive_int(env: str, default: int) -> int:
    raw = os.environ.get(env)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(float(raw.replace("_", "")))
    except ValueError:
        value = 0
    if value < 1:
        raise CxrclError(f"${env}={raw!r} is not a positive whole number; unset it (default "
                         f"{default:,}) or set e.g. {env}={default}")
    return value


def max_pixels() -> int:
    """``$CXRCL_MAX_PIXELS`` or the default (40,000,000)."""
    return _positive_int(MAX_PIXELS_ENV, DEFAULT_MAX_PIXELS)


def max_report_bytes() -> int:
    """``$CXRCL_MAX_REPORT_BYTES`` or the default (1,000,000)."""
    return _positive_int(MAX_REPORT_BYTES_ENV, DEFAULT_MAX_REPORT_BYTES)


def max_inflated_bytes() -> int:
    """The most bytes a deflated DICOM data set may inflate to (16-bit pixels + header room)."""
    return 2 * max_pixels() + DEFLATE_HEADER_BYTES


def check_limits() -> None:
    """Validate the environment variables once, before any work (CxrclError naming the bad one)."""
    max_pixels()
    max_report_bytes()


def check_pixels(width: int, height: int) -> None:
    """Raise :class:`TooLarge` when a ``width`` x ``height`` image, padded to its square, exceeds
    :func:`max_pixels`; the message names the declared size, its square and the cap."""
    cap = max_pixels()
    side = max(int(width), int(height))
    if side * side > cap:
        raise TooLarge(f"declares {int(width)}x{int(height)} pixels ({side * side / 1e6:.1f} Mpx "
                       f"padded to a square), above the cap of {cap / 1e6:.1f} Mpx "
                       f"(raise ${MAX_PIXELS_ENV} to keep it)")


def check_report_bytes(n_bytes: int) -> None:
    """Raise :class:`TooLarge` for a report file of more than :func:`max_report_bytes` bytes."""
    cap = max_report_bytes()
    if int(n_bytes) > cap:
        raise TooLarge(f"is {_size(n_bytes)}, above the report cap of {_size(cap)} "
                       f"(raise ${MAX_REPORT_BYTES_ENV} to keep it)")


def _size(n_bytes: int) -> str:
    return f"{int(n_bytes) / 1e6:.1f} MB" if n_bytes >= 100_000 else f"{int(n_bytes):,} bytes"
