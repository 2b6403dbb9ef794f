"""Read one DICOM radiograph -> uint8 grey image + a few safe, non-identifying header fields.

Pixel pipeline (DICOM PS3.3 C.11 / PS3.4 N.2, in this order, through pydicom):

1. decode the first frame (``pydicom.pixels.pixel_array(ds, index=0)``; multi-frame files are
   logged and only frame 0 is used; JPEG baseline needs Pillow, JPEG-LS/2000 need a pydicom
   plugin such as pylibjpeg); pydicom masks the values to *BitsStored* and sign-extends signed
   data (*PixelRepresentation* 1);
2. Modality LUT: *Modality LUT Sequence* or *RescaleSlope*/*RescaleIntercept*
   (``apply_modality_lut``);
3. VOI: the *VOI LUT Sequence* when present (preferred; ``apply_voi_lut``, first LUT), its
   output mapped linearly from the LUT's own minimum..maximum to 0..255 (vendors often declare
   16 bits per entry and use 12); else *WindowCenter*/*WindowWidth* (first window) with the
   *VOILUTFunction* LINEAR (default), LINEAR_EXACT or SIGMOID: the formulas of pydicom's
   ``apply_windowing`` mapped straight onto 0..255 (:func:`window`; same result, 4x faster);
   an unusable LUT or window (e.g. width 0) is ignored with a warning and the next rule applies;
4. without a VOI: data that is already 8-bit (BitsStored <= 8 and every value in 0..255 after
   the modality LUT) is kept as it is; deeper data is min-max scaled over its actual values,
   the same rule :func:`cxrcl.data.decoding.to_grey` applies to 16-bit PNGs, so a DICOM
   and its PNG export give the same prepared image (detectors rarely fill the BitsStored range,
   so scaling over 0..2**BitsStored-1 would give dark images); a constant image becomes 0;
5. MONOCHROME1 is inverted after the VOI (``255 - x``), so bone is always bright; colour data
   (RGB, YBR, PALETTE COLOR, rare in radiography) is converted to grey with PIL's 'L' weights
   and gets no VOI.

Header fields returned (the ONLY header values that may reach ``meta.csv``): ``patient_key``
(sha256 of salt + PatientID, first 16 hex characters; never the PatientID itself; empty when
there is no PatientID), ``view`` (ViewPosition), ``sex`` (PatientSex M/F/O), ``age`` (years,
from PatientAge ``045Y``/``006M``/``003W``/``010D`` or bare digits; empty outside 0..120 years),
``modality``, ``photometric`` (PhotometricInterpretation), ``bits_stored``, ``height`` (Rows)
and ``width`` (Columns), plus two decoding notes that are not header values: ``frames`` (number
of frames in the file) and ``voi`` (``lut``, ``window``, ``minmax``, ``none`` or ``colour``).
Names, birth dates, study dates, accession numbers, institutions, UIDs and every other element
are never read out.

The salt is ``CXRCL_DICOM_SALT`` from the environment, else a fixed default: with the default
the key is stable across machines (so a patient keeps one key across preparations) but anyone
holding a list of PatientIDs can recompute it; set your own salt for data that must stay
pseudonymous against that.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

import numpy as np

from cxrcl.data.limits import MAX_PIXELS_ENV, TooLarge, check_pixels, max_inflated_bytes
from cxrcl.errors import CxrclError

log = logging.getLogger("cxrcl.data")

DEFAULT_SALT = "cxrcl-dicom-v1"
SALT_ENV = "CXRCL_DICOM_SALT"
MAX_AGE_YEARS = 120
HEADER_FIELDS = ("patient_key", "view", "sex", "age", "modality", "photometric", "bits_stored",
                 "height", "width", "frames", "voi")
_AGE = re.compile(r"^\s*(\d{1,3})\s*([DWMY]?)\s*$", re.IGNORECASE)
_AGE_UNIT_YEARS = {"": 1.0, "Y": 1.0, "M": 1 / 12, "W": 7 / 365.25, "D": 1 / 365.25}


def dicom_salt() -> str:
    """The salt of the patient key: ``$CXRCL_DICOM_SALT`` or the fixed default."""
    return os.environ.get(SALT_ENV) or DEFAULT_SALT


def patient_key(patient_id: str, salt: str | None = None) -> str:
    """sha256(salt + PatientID), first 16 hex characters; '' for an empty PatientID."""
    pid = str(patient_id or "").strip()
    if not pid:
        return ""
    salt = dicom_salt() if salt is None else salt
    return hashlib.sha256(f"{salt}{pid}".encode()).hexdigest()[:16]


def parse_age(value) -> float | None:
    """DICOM AS (``045Y``, ``006M``, ``003W``, ``010D``; bare digits read as years) -> years."""
    if value is None:
        return None
    m = _AGE.match(str(value))
    if not m:
        return None
    years = int(m.group(1)) * _AGE_UNIT_YEARS[m.group(2).upper()]
    if not 0 <= years <= MAX_AGE_YEARS:
        return None
    return round(years, 2)


def _text(ds, keyword: str) -> str:
    value = ds.get(keyword, None)
    if value is None:
        return ""
    if not isinstance(value, str | bytes) and hasattr(value, "__iter__"):
        value = next(iter(value), "")
    return str(value).strip()


def safe_header(ds, salt: str | None = None) -> dict:
    """The safe header fields of a pydicom Dataset (see the module docstring)."""
    sex = _text(ds, "PatientSex").upper()[:1]
    bits = ds.get("BitsStored", None)
    rows, cols = ds.get("Rows", None), ds.get("Columns", None)
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        frames = 1
    return {
        "patient_key": patient_key(_text(ds, "PatientID"), salt),
        "view": _text(ds, "ViewPosition").upper(),
        "sex": sex if sex in ("M", "F", "O") else "",
        "age": parse_age(_text(ds, "PatientAge")),
        "modality": _text(ds, "Modality").upper(),
        "photometric": _text(ds, "PhotometricInterpretation").upper(),
        "bits_stored": int(bits) if bits is not None else None,
        "height": int(rows) if rows is not None else None,
        "width": int(cols) if cols is not None else None,
        "frames": frames,
        "voi": "",
    }


def _inflated_size_within_cap(path: Path) -> None:
    """A Deflated Explicit VR Little Endian file is inflated whole by pydicom before any element
    is read: count its inflated length in bounded chunks first and raise :class:`TooLarge`
    above :func:`cxrcl.data.limits.max_inflated_bytes` (a small file may inflate to gigabytes)."""
    import zlib

    import pydicom
    from pydicom.filereader import _read_file_meta_info, read_preamble

    with open(path, "rb") as f:
        try:
            read_preamble(f, force=False)
            meta = _read_file_meta_info(f)
        except Exception:  # noqa: BLE001 - not a file with a preamble: pydicom decides below
            return
        if meta.get("TransferSyntaxUID", None) != pydicom.uid.DeflatedExplicitVRLittleEndian:
            return
        cap, total = max_inflated_bytes(), 0
        inflate = zlib.decompressobj(-zlib.MAX_WBITS)
        while chunk := f.read(1 << 16):
            while chunk:
                try:
                    total += len(inflate.decompress(chunk, 1 << 20))
                except zlib.error:
                    return  # corrupt stream: pydicom reports it
                chunk = inflate.unconsumed_tail
                if total > cap:
                    raise TooLarge(f"inflates to more than {cap / 1e6:.0f} MB (deflated DICOM; the "
                                   f"cap is 2 bytes x ${MAX_PIXELS_ENV} + 16 MiB)")
            if inflate.eof:
                return


def _open(path: Path, stop_before_pixels: bool = False):
    import pydicom
    from pydicom.errors import InvalidDicomError

    _inflated_size_within_cap(path)
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        pass  # no 128-byte preamble + 'DICM': try as a bare data set (old ACR-NEMA style files)
    try:
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=stop_before_pixels)
    except Exception:  # noqa: BLE001 - garbage bytes fail in many ways
        ds = None
    if ds is None or "Rows" not in ds or "Columns" not in ds:
        raise CxrclError(f"{path} is not a DICOM file (no 'DICM' prefix and no image header); "
                         "remove it from the input or replace it with the original file")
    return ds


def read_header(path: str | os.PathLike, salt: str | None = None) -> dict:
    """Safe header fields only, without decoding the pixels (fast)."""
    return safe_header(_open(Path(path), stop_before_pixels=True), salt)


def _first(value) -> float:
    if not isinstance(value, str | bytes) and hasattr(value, "__iter__"):
        value = next(iter(value))
    return float(value)


def window(arr: np.ndarray, ds) -> np.ndarray:
    """WindowCenter/WindowWidth (first window) -> uint8 0..255, MONOCHROME2 sense.

    The formulas of PS3.3 C.11.2.1.2 for VOILUTFunction LINEAR (default), LINEAR_EXACT and
    SIGMOID, as in pydicom's ``apply_windowing`` but mapped straight onto 0..255 (in place, about
    4x faster on a 5-Mpixel image); the tests check that both agree.
    """
    func = str(ds.get("VOILUTFunction", "") or "LINEAR").strip().upper()
    center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
    x = np.array(arr, dtype=np.float64)
    if func == "LINEAR":
        if width < 1:
            raise ValueError(f"Window Width {width} must be >= 1 for a LINEAR window")
        if width == 1:
            return np.where(x > center - 0.5, 255, 0).astype(np.uint8)
        x -= center - 0.5
        x /= width - 1
        x += 0.5
    elif func == "LINEAR_EXACT":
        if width <= 0:
            raise ValueError(f"Window Width {width} must be > 0 for a LINEAR_EXACT window")
        x -= center
        x /= width
        x += 0.5
    elif func == "SIGMOID":
        if width <= 0:
            raise ValueError(f"Window Width {width} must be > 0 for a SIGMOID window")
        x -= center
        x *= -4.0 / width
        with np.errstate(over="ignore"):  # exp overflow -> inf -> 0 after the reciprocal: right
            np.exp(x, out=x)
        x += 1.0
        np.reciprocal(x, out=x)
    else:
        raise ValueError(f"unsupported VOILUTFunction {func!r}")
    np.clip(x, 0.0, 1.0, out=x)
    x *= 255.0
    np.rint(x, out=x)
    return x.astype(np.uint8)


def _lut_range(ds) -> tuple[float, float]:
    """Minimum and maximum of the first VOI LUT's output values."""
    from pydicom.pixels import apply_voi

    desc = ds.VOILUTSequence[0].LUTDescriptor
    n, first = int(desc[0]) or 2 ** 16, int(desc[1])
    out = apply_voi(np.arange(first, first + n, dtype=np.int64), ds, 0)
    return float(out.min()), float(out.max())


def _scale(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Linear map of lo..hi onto 0..255 (rounded, clipped); zeros when hi <= lo."""
    if hi <= lo:
        return np.zeros(np.shape(a), dtype=np.uint8)
    x = np.array(a, dtype=np.float64)
    x -= lo
    x *= 255.0 / (hi - lo)
    np.rint(x, out=x)
    np.clip(x, 0, 255, out=x)
    return x.astype(np.uint8)


def _has_voi_lut(ds) -> bool:
    seq = ds.get("VOILUTSequence", None)
    return bool(seq) and "LUTDescriptor" in seq[0] and "LUTData" in seq[0]


def _has_window(ds) -> bool:
    return ds.get("WindowCenter", None) is not None and ds.get("WindowWidth", None) is not None


def to_display(arr: np.ndarray, ds) -> tuple[np.ndarray, str]:
    """One decoded frame -> uint8 grey (modality LUT, VOI, MONOCHROME1 inversion); + VOI used."""
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
        arr = _scale(arr, 0, 2 ** 16 - 1) if arr.dtype != np.uint8 else arr
    if arr.ndim == 3:  # colour (pydicom already converted YBR to RGB)
        rgb = arr.astype(np.float64)
        if arr.dtype != np.uint8:
            rgb = _scale(rgb, float(rgb.min()), float(rgb.max())).astype(np.float64)
        grey = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
        return np.clip(np.round(grey), 0, 255).astype(np.uint8), "colour"
    if arr.ndim != 2:
        raise ValueError(f"unexpected pixel array shape {arr.shape}")

    arr = apply_modality_lut(arr, ds)
    out = None
    if _has_voi_lut(ds):
        try:
            ints = arr if np.issubdtype(arr.dtype, np.integer) else np.rint(arr).astype(np.int64)
            lo, hi = _lut_range(ds)
            out, voi = _scale(apply_voi_lut(ints, ds, index=0, prefer_lut=True), lo, hi), "lut"
        except (ValueError, NotImplementedError, AttributeError, IndexError) as e:
            log.warning("ignoring an unusable VOI LUT (%s)", e)
    if out is None and _has_window(ds):
        try:
            out, voi = window(arr, ds), "window"
        except (ValueError, TypeError) as e:
            log.warning("ignoring an unusable window (%s)", e)
    if out is None:
        bits = int(ds.get("BitsStored", 8) or 8)
        amin, amax = float(np.min(arr)), float(np.max(arr))
        if bits <= 8 and amin >= 0 and amax <= 255:
            out, voi = np.clip(np.round(arr), 0, 255).astype(np.uint8), "none"
        else:
            out, voi = _scale(arr, amin, amax), "minmax"
    if photometric == "MONOCHROME1":
        out = 255 - out
    return out, voi


def read_dicom(path: str | os.PathLike, salt: str | None = None) -> tuple[np.ndarray, dict]:
    """Decode a DICOM radiograph -> (uint8 [H, W] image, safe header fields).

    Raises :class:`CxrclError` for a file that is not DICOM or has no pixel data,
    :class:`~cxrcl.data.limits.TooLarge` for one whose declared Rows x Columns (or inflated
    length) exceeds the cap, read before any pixel is decoded, and the decoder's own error for corrupt or truncated pixel data (callers that stream many files
    catch everything and list the file as skipped).
    """
    from pydicom.pixels import pixel_array

    path = Path(path)
    ds = _open(path)
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise CxrclError(f"{path} has no pixel data (a truncated file, or a DICOM object without an "
                         "image such as a report); re-copy it or remove it from the input")
    header = safe_header(ds, salt)
    check_pixels(header["width"] or 0, header["height"] or 0)  # before any pixel is decoded
    if header["frames"] > 1:
        log.warning("%s has %d frames: only the first frame is used", path, header["frames"])
    arr = pixel_array(ds, index=0) if header["frames"] > 1 else ds.pixel_array
    image, header["voi"] = to_display(np.asarray(arr), ds)
    return image, header
