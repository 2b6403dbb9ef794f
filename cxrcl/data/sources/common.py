"""Helpers shared by the source adapters: decoding, geometry, metadata, splits, streaming.

Geometry (the same as ``../shared/data``): every image becomes 8-bit grey, is padded to a square
with black borders (centred, never cropped) and resized with Lanczos; masks get the same padding
and nearest-neighbour resizing. Grey conversion: 16-bit and 32-bit images ('I;16*', 'I', 'F') are
min-max scaled to 0..255; alpha is composited on black; colour is converted with PIL's 'L'
weights. Decoding of file-based sources runs in a ``multiprocessing.Pool`` of ``workers``
processes and streams into :class:`~cxrcl.data.prepared.PreparedWriter` in order, with at most
``4 * workers`` small chunks in flight (:func:`ordered_map`), so decoded images are never all
held in memory; the writer flushes and re-maps its array every chunk, so the resident memory
stays flat whatever the number of images. Files that cannot be read are skipped, counted, logged
as one warning line each (the first 20) and listed in ``dataset.json`` under ``skipped``.

Decoding is resumable (:func:`write_decoded`): progress is recorded every
:data:`CHECKPOINT_EVERY` images in ``.OUT.partial/progress.json``; a killed or interrupted
preparation keeps its partial directory and the same command decodes only the missing images.
A decoder may also return a mask and a few per-file values (:class:`Decoded`, e.g. DICOM header
fields), which are kept across a resume too.

Warnings go to the ``cxrcl.data`` logger (printed to stderr as bare lines when logging is not
configured).
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import re
import zipfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from itertools import islice
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from PIL import Image

from cxrcl.data.prepared import (
    LABEL_PREFIX,
    PreparedWriter,
    assign_patient_splits,
    parse_split_spec,
)
from cxrcl.errors import CxrclError

log = logging.getLogger("cxrcl.data")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
RESERVED_COLUMNS = ("id", "patient_id", "split", "path", "index", "has_mask")
MAX_WARNING_LINES = 20
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validation": "val", "validate": "val", "dev": "val", "test": "test",
                 "testing": "test"}


# ----------------------------------------------------------------------------- images
def to_grey(img: Image.Image) -> np.ndarray:
    """A decoded PIL image -> uint8 [H, W] grey (16/32-bit min-max scaled, alpha on black)."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
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


def load_grey(path: str | os.PathLike, size: int) -> np.ndarray:
    """Decode an image file -> uint8 [size, size] grey, padded to square and resized."""
    with Image.open(path) as img:
        img.load()  # decode now, so truncated files fail here and not later
        return pad_resize(to_grey(img), size)


def index_files(dirs: Iterable[Path], extensions: Sequence[str] = IMAGE_EXTENSIONS,
                by_stem: bool = False) -> dict[str, Path]:
    """File name (or stem, ``by_stem``) -> path of the first file with one of ``extensions`` (any
    case) in ``dirs``, searched in order, not recursively; missing folders are passed over. One
    ``os.scandir`` per folder, so it stays fast on folders of 100,000 files."""
    found: dict[str, Path] = {}
    for d in dirs:
        if not d.is_dir():
            continue
        with os.scandir(d) as it:
            for e in it:
                stem, ext = os.path.splitext(e.name)
                key = stem if by_stem else e.name
                if ext.lower() in extensions and key not in found:
                    found[key] = Path(e.path)
    return found


def require_dir(root: Path, needs: str) -> None:
    """The ``INPUT is not a directory`` check of the adapters: CxrclError
    ``'<root> is not a directory: <needs>'`` unless ``root`` is a folder."""
    if not Path(root).is_dir():
        raise CxrclError(f"{root} is not a directory: {needs}")


def find_first(root: Path, names: Iterable[str]) -> Path | None:
    """``root / name`` for the first of ``names`` that exists (file or folder), else None."""
    return next((root / n for n in names if (root / n).exists()), None)


def env_choice(value: str | None, arg: str, env_var: str, default: str, choices: Sequence[str],
               error: str) -> str:
    """An option the CLI cannot pass: ``value`` when given, else ``$env_var``, else ``default``;
    stripped and lower-cased, it must be one of ``choices``, else CxrclError
    ``'<arg>=<value> is not <error>'`` (``$<env_var>=...`` when it came from the environment)."""
    source = f"{arg}="
    if value is None:
        value, source = os.environ.get(env_var) or default, f"${env_var}="
    choice = str(value).strip().lower()
    if choice not in choices:
        raise CxrclError(f"{source}{value!r} is not {error}")
    return choice


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


def _resize_job(args: tuple[np.ndarray, int, bool]) -> np.ndarray:
    images, size, nearest = args
    return resize_stack(images, size, nearest=nearest)


def resize_chunks(chunks: Iterable[np.ndarray], size: int, workers: int = 1,
                  nearest: bool = False) -> Iterator[np.ndarray]:
    """Resize a stream of uint8 [n, H, W] chunks, in order, with ``workers`` processes
    (``nearest``: nearest-neighbour, for masks)."""
    yield from ordered_map(_resize_job, ((c, size, nearest) for c in chunks), workers,
                           max_pending=2 * workers)


def write_chunks(out: Path, n: int, size: int, chunks: Iterable[np.ndarray], progress: bool, desc: str,
                 masks: Callable[[int, int], np.ndarray] | None = None) -> PreparedWriter:
    """Stream uint8 [k, size, size] ``chunks`` (rows 0..n-1, in order) into a new
    :class:`PreparedWriter` at ``out``, with a progress bar; returns it, not finished.

    ``masks(start, k)`` gives the uint8 [k, size, size] masks of rows ``start:start + k`` (the
    writer then has ``masks.npy``). On any failure the partial directory is removed (array
    sources are fast to redo and are not resumable).
    """
    writer = PreparedWriter(Path(out), n=n, size=size, with_masks=masks is not None)
    bar = _progress(n, progress, desc)
    try:
        start = 0
        for chunk in chunks:
            writer.put_many(start, chunk, None if masks is None else masks(start, len(chunk)))
            start += len(chunk)
            bar.update(len(chunk))
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
    return writer


# ----------------------------------------------------------------------------- npz streaming
def npz_keys(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as z:
            return [n[:-4] if n.endswith(".npy") else n for n in z.namelist()]
    except (zipfile.BadZipFile, OSError) as e:
        raise CxrclError(f"{path} is not a readable .npz file ({e}): re-create or re-download it") from None


def npz_header(path: Path, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one array of an .npz, without reading the data."""
    with zipfile.ZipFile(path) as z, z.open(f"{key}.npy") as f:
        shape, _, dtype = _read_header(f)
    return shape, dtype


def _read_header(f) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    return np.lib.format.read_array_header_2_0(f)


def iter_npz_rows(path: Path, key: str, chunk: int = 512) -> Iterator[np.ndarray]:
    """Stream an array of an .npz in chunks of rows (works for compressed files; memory: one chunk)."""
    with zipfile.ZipFile(path) as z, z.open(f"{key}.npy") as f:
        shape, fortran, dtype = _read_header(f)
        if fortran or dtype.hasobject or len(shape) == 0:
            arr = np.load(path, allow_pickle=False)[key]
            for s in range(0, len(arr), chunk):
                yield np.ascontiguousarray(arr[s:s + chunk])
            return
        row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        for s in range(0, shape[0], chunk):
            k = min(chunk, shape[0] - s)
            buf = f.read(k * row)
            if len(buf) != k * row:
                raise CxrclError(f"{path}: array {key!r} is truncated; re-create or re-download the file")
            yield np.frombuffer(buf, dtype=dtype).reshape((k, *shape[1:]))


# ----------------------------------------------------------------------------- metadata
def read_table(path: Path, required: tuple[str, ...] = (), **kwargs) -> pd.DataFrame:
    """Read a publisher CSV (.csv or .csv.gz); a parse error or missing column -> CxrclError."""
    try:
        df = pd.read_csv(path, low_memory=False, **kwargs)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError, OSError) as e:
        raise CxrclError(f"{path} cannot be read as CSV ({str(e).strip().splitlines()[0]}); "
                         "re-download it from the publisher") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise CxrclError(f"{path} lacks the column {missing[0]!r} (columns: "
                         f"{', '.join(map(str, df.columns)) or 'none'}); use the publisher's "
                         "unmodified file")
    return df


def clean_name(name: str) -> str:
    """A label/class name -> lower-case identifier: 'Pleural Effusion' -> 'pleural_effusion'."""
    s = re.sub(r"[^0-9a-zA-Z]+", "_", str(name)).strip("_").lower()
    return s or "unnamed"


def nonempty(series: pd.Series) -> pd.Series:
    """Boolean mask of non-empty (not NaN, not whitespace-only) values."""
    return series.notna() & (series.astype(str).str.strip() != "")


def is_text_column(series: pd.Series) -> bool:
    """Free text: a string column whose non-empty values average > 20 characters and > 4 words.

    The word rule is our addition to the length rule: it keeps notes and reports but leaves
    identifiers, URLs, DOIs, file names and place names as ordinary metadata.
    """
    if not (pd.api.types.is_string_dtype(series) or series.dtype == object):
        return False
    s = series[nonempty(series)].astype(str)
    if s.empty:
        return False
    return bool(s.str.len().mean() > 20 and s.str.split().str.len().mean() > 4)


def find_text_columns(meta: pd.DataFrame) -> list[str]:
    """Text columns of ``meta`` (``report`` first, added when missing).

    Rule: every non-label, non-reserved free-text column (see :func:`is_text_column`); if there is
    no ``report`` column, the text column with the most non-empty rows is copied to ``report``.
    Modifies ``meta`` in place when it adds ``report``.
    """
    cols = [c for c in meta.columns
            if c not in RESERVED_COLUMNS and not str(c).startswith(LABEL_PREFIX)
            and (c == "report" or is_text_column(meta[c]))]
    if not cols:
        return []
    if "report" not in cols:
        best = max(cols, key=lambda c: int(nonempty(meta[c]).sum()))
        meta["report"] = meta[best]
        cols = ["report", *cols]
    else:
        cols = ["report", *[c for c in cols if c != "report"]]
    return cols


def normalise_split_values(values: pd.Series, where: str) -> pd.Series:
    """Map train/training/val/valid/validation/dev/test/testing -> train/val/test, or fail clearly."""
    s = values.astype("string").str.strip().str.lower()
    missing = int((s.isna() | (s == "")).sum())
    if missing:
        raise CxrclError(f"{where}: the split column is empty for {missing} rows; fill it with "
                         "train/val/test or drop the column to split by patient with --split")
    mapped = s.map(SPLIT_ALIASES)
    bad = sorted(set(s[mapped.isna()].tolist()))
    if bad:
        raise CxrclError(f"{where}: unknown split values {bad[:5]}; use train/val/test")
    return mapped.astype(str)


def unique_ids(meta: pd.DataFrame, where: str) -> pd.Series:
    """Make ``meta['id']`` unique in place; returns the split group of every row.

    A repeated id (the same file listed twice, e.g. under two patient ids in covid_chestxray) is
    kept, renamed ``<id>__<row>`` for every repeat after the first, and all patients that share an
    id are put in one split group so that the copies can never land in different splits.
    """
    ids = meta["id"].astype(str)
    pids = meta["patient_id"].astype(str)
    dup = ids.duplicated(keep="first")
    if not ids.duplicated(keep=False).any():
        return pids
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for _, g in pids[ids.duplicated(keep=False)].groupby(ids[ids.duplicated(keep=False)]):
        roots = sorted({find(p) for p in g})
        for r in roots[1:]:
            parent[r] = roots[0]
    groups = pids.map(find)
    log.warning("%s: %d rows repeat the id of an earlier row: renamed <id>__<row> and kept in the same "
                "split as the rows they repeat", where, int(dup.sum()))
    meta["id"] = ids.where(~dup, ids + "__" + pd.Series(meta.index.astype(str), index=meta.index))
    return groups


def apply_split(meta: pd.DataFrame, split: str, seed: int, where: str,
                groups: pd.Series | None = None) -> str:
    """Fill ``meta['split']``; returns the split method recorded in dataset.json.

    A ``split`` column present in the source is kept as-is (method ``source``); otherwise the
    patient-level split of ``--split``/``--seed`` is computed from ``groups`` (default: the
    ``patient_id`` column).
    """
    kind, fractions = parse_split_spec(split)
    if "split" in meta.columns:
        meta["split"] = normalise_split_values(meta["split"], where).to_numpy()
        if kind == "patient":
            log.info("%s has its own split column: kept as-is (--split ignored)", where)
        return "source"
    if kind == "source":
        raise CxrclError(f"{where} has no split column, so --split source cannot be used; "
                         "use --split patient:0.7,0.1,0.2")
    keys = meta["patient_id"] if groups is None else groups
    meta["split"] = assign_patient_splits(keys.astype(str).tolist(), fractions, seed)
    return "patient"


def split_with_official_test(meta: pd.DataFrame, is_test: pd.Series, split: str, seed: int) -> None:
    """``meta['split']``: rows in ``is_test`` -> test; the rest train/val by patient, in the
    train:val ratio of ``split`` (``patient:0.7,0.1,0.2`` -> 7:1; ``source`` -> 7:1)."""
    _, fr = parse_split_spec(split)
    trval = fr[0] + fr[1]
    inner = (fr[0] / trval, fr[1] / trval, 0.0) if trval > 0 else (1.0, 0.0, 0.0)
    out = pd.Series("test", index=meta.index, dtype=object)
    rest = ~is_test.to_numpy()
    if rest.any():
        out[rest] = assign_patient_splits(meta.loc[rest, "patient_id"].astype(str).tolist(), inner, seed)
    meta["split"] = out.to_numpy()


def order_columns(meta: pd.DataFrame, text_cols: Sequence[str] = ()) -> pd.DataFrame:
    """id, patient_id, split, label_*, text columns, then everything else in source order."""
    first = [c for c in ("id", "patient_id", "split") if c in meta.columns]
    labels = [c for c in meta.columns if str(c).startswith(LABEL_PREFIX)]
    text = [c for c in text_cols if c in meta.columns and c not in first]
    rest = [c for c in meta.columns if c not in first and c not in labels and c not in text]
    return meta[first + labels + text + rest]


def check_label_values(meta: pd.DataFrame, names: Sequence[str], where: str) -> None:
    """Labels must be 1/0/empty; -1 (uncertain, CheXpert style) becomes empty with a warning."""
    for name in names:
        col = LABEL_PREFIX + name
        vals = pd.to_numeric(meta[col], errors="coerce")
        raw_bad = nonempty(meta[col]) & vals.isna()
        if raw_bad.any():
            v = meta[col][raw_bad].iloc[0]
            raise CxrclError(f"{where}: label column {col} holds {v!r}; labels must be 1, 0, -1 or empty")
        uncertain = int((vals == -1).sum())
        if uncertain:
            log.warning("%s: %d values of -1 in %s read as unknown (empty)", where, uncertain, col)
            vals = vals.where(vals != -1)
        bad = vals.dropna()[~vals.dropna().isin([0, 1])]
        if len(bad):
            raise CxrclError(f"{where}: label column {col} holds {bad.iloc[0]!r}; labels must be 1, 0, -1 or empty")
        meta[col] = vals.astype("Int8")


# ----------------------------------------------------------------------------- streaming decode
#: Identity of the decoder in the resume fingerprint: bump it when decoding changes its output.
DECODER_VERSION = 1
#: Images decoded between two flushes of the memory map + progress record of a resumable writer.
CHECKPOINT_EVERY = 256


def _ignore_sigint() -> None:
    """Pool initializer: Ctrl-C is handled by the main process, which stops the pool."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def ordered_map(fn: Callable, tasks: Iterable, workers: int, max_pending: int | None = None) -> Iterator:
    """``map(fn, tasks)`` over a Pool of ``workers`` processes, in order, with bounded memory.

    At most ``max_pending`` tasks (default ``4 * workers``) are submitted and not yet consumed,
    so neither the task list nor the results pile up when one side is faster than the other
    (``Pool.imap`` buffers every finished result). ``fn`` must be picklable (module level).
    """
    if workers <= 1:
        yield from map(fn, tasks)
        return
    limit = max(1, max_pending or 4 * workers)
    it = iter(tasks)
    with multiprocessing.Pool(workers, initializer=_ignore_sigint) as pool:
        window: deque = deque()
        for task in it:
            window.append(pool.apply_async(fn, (task,)))
            if len(window) >= limit:
                break
        while window:
            result = window.popleft().get()
            for task in it:
                window.append(pool.apply_async(fn, (task,)))
                break
            yield result


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


def _decode_job(job: tuple) -> DecodeResult:
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


def _decode_chunk(jobs: list[tuple]) -> list[DecodeResult]:
    return [_decode_job(job) for job in jobs]


def decode_stream(paths: Sequence[str | os.PathLike], size: int, workers: int = 1,
                  progress: bool = True, desc: str = "decoding", *,
                  indices: Sequence[int] | np.ndarray | None = None,
                  decode: Callable[..., np.ndarray | Decoded] | None = None,
                  args: Sequence | None = None) -> Iterator[DecodeResult]:
    """Yield ``(index, image, reason, mask, extra)`` in input order, decoding in a Pool.

    ``image`` is None for a file that failed (``reason`` says why); ``mask`` and ``extra`` are
    None unless the decoder returns them. ``indices``: decode only these rows of ``paths``
    (default all; the progress bar starts at the others). ``decode(path, size)`` returning a
    uint8 [size, size] image or a :class:`Decoded` replaces :func:`load_grey` (e.g. DICOM);
    with ``args`` (one picklable value per path) it is called as ``decode(path, size,
    args[i])``. It may raise :class:`DecodeFailure` to skip a file and still return ``extra``.
    It must pickle (a module-level function, or an instance of a module-level class) when
    ``workers > 1``. Memory: at most ``4 * workers`` chunks of a few images are in flight.
    """
    idx = np.arange(len(paths)) if indices is None else np.asarray(indices, dtype=np.int64)
    bar = _progress(len(paths), progress, desc, initial=len(paths) - len(idx))
    jobs = ((int(i), str(paths[i]), size, decode, *(() if args is None else (args[i],))) for i in idx)
    try:
        if workers <= 1 or len(idx) < 2:
            for job in jobs:
                yield _decode_job(job)
                bar.update(1)
        else:
            chunk = max(1, min(16, len(idx) // (workers * 8)))
            for results in ordered_map(_decode_chunk, _batched(jobs, chunk), workers):
                for result in results:
                    yield result
                    bar.update(1)
    finally:
        bar.close()


def _batched(items: Iterable, k: int) -> Iterator[list]:
    it = iter(items)
    while batch := list(islice(it, k)):
        yield batch


def _progress(total: int, enabled: bool, desc: str, initial: int = 0):
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit="img", disable=not enabled, leave=False)


def _sha256_lines(items: Iterable) -> str:
    h = hashlib.sha256()
    for item in items:
        h.update(str(item).encode())
        h.update(b"\0")
    return h.hexdigest()


def decode_fingerprint(paths: Sequence[str | os.PathLike], size: int, root: Path | None = None,
                       decode: Callable | None = None, extra: dict | None = None, *,
                       args: Sequence | None = None,
                       pre_skipped: Mapping[int, str] | None = None) -> dict:
    """What determines the decoded images: the ordered file list, the size and the decoder.

    The split (``--split``/``--seed``) and the metadata are recomputed on every run and do not
    change ``images.npy``, so they are not part of it; ``extra`` adds caller-specific fields.
    Per-file decoder ``args`` (e.g. mask annotations) and ``pre_skipped`` rows are hashed in
    when given.
    """
    if decode is None:
        name = f"{__name__}.load_grey"
    else:
        name = (f"{getattr(decode, '__module__', type(decode).__module__)}."
                f"{getattr(decode, '__qualname__', type(decode).__qualname__)}")
    fp = {"kind": "decoded_files", "decoder": name,
          "decoder_version": DECODER_VERSION, "n": len(paths), "size": int(size),
          "paths_sha256": _sha256_lines(paths), "root": None if root is None else str(Path(root).resolve())}
    if args is not None:
        fp["args_sha256"] = _sha256_lines(json.dumps(a, sort_keys=True, default=str) for a in args)
    if pre_skipped:
        fp["pre_skipped_sha256"] = _sha256_lines(f"{i}:{r}" for i, r in sorted(pre_skipped.items()))
    return {**fp, **(extra or {})}


def write_decoded(out: Path, paths: Sequence[str | os.PathLike], size: int, workers: int,
                  progress: bool, root: Path | None = None, *, resume: bool = True,
                  decode: Callable[..., np.ndarray | Decoded] | None = None,
                  fingerprint: dict | None = None, checkpoint_every: int | None = None,
                  on_image: Callable[[int, int], None] | None = None,
                  with_masks: bool = False, args: Sequence | None = None,
                  pre_skipped: Mapping[int, str] | None = None,
                  names: Sequence[str] | None = None, what: str = "image",
                  ) -> tuple[PreparedWriter, list[int], list[dict]]:
    """Decode ``paths`` straight into a :class:`PreparedWriter` at ``out``, resumably.

    Returns the writer (not finished), the indices of the files that were decoded, in order, and
    the ``skipped`` list ``[{file, reason}]``. Image ``i`` goes to row ``i``; if some files fail,
    the rows are compacted at the end (one streamed copy, only in that case). All failing ->
    :class:`CxrclError`.

    ``decode``/``args``: see :func:`decode_stream`. With ``with_masks`` the writer has
    ``masks.npy`` and the decoder's :class:`Decoded` masks go into it (none = an empty mask).
    The decoder's ``extra`` values (also those of files that failed with a
    :class:`DecodeFailure`) are in ``writer.extras`` by input row, resumed runs included.
    ``pre_skipped`` maps rows to a reason for files known to be unusable before decoding (e.g.
    a malformed annotation): they are not read and are listed like the others. ``names`` are
    the file names shown in the ``skipped`` list and the warnings (default: the paths,
    relative to ``root``); ``what`` names the files in messages (e.g. ``"DICOM"``).

    Resuming (``resume=True``, the default): progress is recorded in ``.OUT.partial/progress.json``
    every ``checkpoint_every`` images (default :data:`CHECKPOINT_EVERY`, fewer above 512 px),
    keyed by :func:`decode_fingerprint` (+ ``fingerprint``). When the run is interrupted (Ctrl-C, an error, a kill), the partial directory is kept and
    the same call decodes only the missing images; the result is byte-identical to an
    uninterrupted run. ``resume=False`` starts over and removes the partial on failure.
    ``decode`` replaces the PIL decoder (see :func:`decode_stream`); ``on_image(done, total)``
    is called after every image (benchmarks, progress displays).
    """
    out = Path(out)
    n = len(paths)
    if n == 0:
        raise CxrclError(f"no images to prepare for {out}")
    pre_skipped = dict(pre_skipped or {})
    fp = decode_fingerprint(paths, size, root, decode, fingerprint, args=args, pre_skipped=pre_skipped)
    if checkpoint_every is None:  # 256 images, fewer for big images (<= ~64 MiB between flushes)
        checkpoint_every = min(CHECKPOINT_EVERY, max(16, (64 << 20) // (size * size)))
    writer = PreparedWriter(out, n=n, size=size, with_masks=with_masks, resume=resume, fingerprint=fp,
                            checkpoint_every=checkpoint_every)

    def display(i: int) -> str:
        return str(names[i]) if names is not None else _display(paths[i], root)

    warned = 0

    def skip(i: int, reason: str, extra: dict | None = None) -> None:
        nonlocal warned
        writer.skip(i, reason, extra)
        warned += 1
        if warned <= MAX_WARNING_LINES:
            log.warning("skipped %s: %s", display(i), reason)

    try:
        if not writer.compacted:
            for i in sorted(pre_skipped):
                if not writer.done[i]:
                    skip(i, pre_skipped[i])
            todo = writer.pending()
            done = n - len(todo)
            stream = decode_stream(paths, size, workers, progress, indices=todo, decode=decode, args=args)
            with closing(stream):  # stops the pool at once if the loop is left by an exception
                for i, img, reason, mask, extra in stream:
                    if img is None:
                        skip(i, reason, extra)
                    else:
                        writer.put(i, img, mask, extra)
                    done += 1
                    if on_image is not None:
                        on_image(done, n)
            writer.checkpoint()
    except BaseException as e:
        if not resume or isinstance(e, CxrclError):
            writer.abort()
        else:
            _keep_partial(writer)
        raise
    if warned > MAX_WARNING_LINES:
        log.warning("skipped %d more files (all listed in dataset.json 'skipped')", warned - MAX_WARNING_LINES)
    failed = writer.failed
    skipped = [{"file": display(i), "reason": failed[i]} for i in sorted(failed)]
    kept = [i for i in range(n) if i not in failed] if failed else list(range(n))
    if not kept:
        writer.abort()
        reasons = sorted({s["reason"] for s in skipped})
        raise CxrclError(f"none of the {n} {what} files for {out} could be read "
                         f"(e.g. {skipped[0]['file']}: {reasons[0]}); check the input paths and files")
    if skipped:
        log.warning("%d of %d files skipped (unreadable or missing%s)", len(skipped), n,
                    ", or with a malformed annotation" if pre_skipped else "")
        if not writer.compacted:
            try:
                writer.compact(kept)
            except BaseException:
                (_keep_partial if resume else PreparedWriter.abort)(writer)
                raise
    return writer, kept, skipped


def _keep_partial(writer: PreparedWriter) -> None:
    """Interrupted: save what is decoded and say how to resume (never raises)."""
    try:
        writer.checkpoint()
        log.warning("interrupted: %d of %d images are decoded in %s; run the same command again to "
                    "resume", writer.n_done, writer.n_input, writer.tmp)
    except BaseException:  # noqa: BLE001 - the original exception matters more
        pass


def _display(path, root: Path | None) -> str:
    p = Path(path)
    if root is not None:
        try:
            return p.relative_to(root).as_posix()
        except ValueError:
            pass
    return str(p)


@contextmanager
def keep_or_abort(writer: PreparedWriter) -> Iterator[PreparedWriter]:
    """Around work between decoding and :func:`finish` (e.g. metadata from the decoded rows):
    a :class:`CxrclError` removes the partial directory; an interruption keeps it when the
    writer is resumable (its decoded rows are on disk), like :func:`finish`."""
    try:
        yield writer
    except CxrclError:
        writer.abort()
        raise
    except BaseException:
        if not writer.tracking:
            writer.abort()
        raise


def finish(writer: PreparedWriter, meta: pd.DataFrame, **kwargs):
    """``writer.finish`` that removes the partial directory if it fails.

    A resumable writer (one that records progress) keeps its partial directory when the failure
    is an interruption rather than a :class:`CxrclError` (e.g. Ctrl-C while hashing), so that a
    rerun does not decode again.
    """
    with keep_or_abort(writer):
        return writer.finish(meta, **kwargs)
