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

Warnings go to the ``cxrcl.data`` logger (printed to stderr as bare lines when logging is not
configured).
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import re
import zipfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing
from itertools import islice
from pathlib import Path

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
                 "validation": "val", "dev": "val", "test": "test", "testing": "test"}


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


def _resize_job(args: tuple[np.ndarray, int]) -> np.ndarray:
    images, size = args
    return resize_stack(images, size)


def resize_chunks(chunks: Iterable[np.ndarray], size: int, workers: int = 1) -> Iterator[np.ndarray]:
    """Resize a stream of uint8 [n, H, W] chunks, in order, with ``workers`` processes."""
    yield from ordered_map(_resize_job, ((c, size) for c in chunks), workers, max_pending=2 * workers)


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


def _decode_job(job: tuple) -> tuple[int, np.ndarray | None, str | None]:
    """``(i, path, size[, decode])`` -> ``(i, image or None, reason or None)``."""
    i, path, size = job[:3]
    decode = job[3] if len(job) > 3 and job[3] is not None else load_grey
    try:
        return i, decode(path, size), None
    except FileNotFoundError:
        return i, None, "file not found"
    except Exception as e:  # noqa: BLE001 - any decoder failure means: skip this file
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return i, None, f"{type(e).__name__}: {msg}"[:200].rstrip(": ")


def _decode_chunk(jobs: list[tuple]) -> list[tuple[int, np.ndarray | None, str | None]]:
    return [_decode_job(job) for job in jobs]


def decode_stream(paths: Sequence[str | os.PathLike], size: int, workers: int = 1,
                  progress: bool = True, desc: str = "decoding", *,
                  indices: Sequence[int] | np.ndarray | None = None,
                  decode: Callable[[str, int], np.ndarray] | None = None
                  ) -> Iterator[tuple[int, np.ndarray | None, str | None]]:
    """Yield ``(index, image or None, reason or None)`` in input order, decoding in a Pool.

    ``indices``: decode only these rows of ``paths`` (default all; the progress bar starts at
    the others). ``decode(path, size) -> uint8 [size, size]`` replaces :func:`load_grey` (e.g.
    DICOM); it must be a module-level function when ``workers > 1``. Memory: at most
    ``4 * workers`` chunks of a few images are in flight.
    """
    idx = np.arange(len(paths)) if indices is None else np.asarray(indices, dtype=np.int64)
    bar = _progress(len(paths), progress, desc, initial=len(paths) - len(idx))
    jobs = ((int(i), str(paths[i]), size, decode) for i in idx)
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


def decode_fingerprint(paths: Sequence[str | os.PathLike], size: int, root: Path | None = None,
                       decode: Callable | None = None, extra: dict | None = None) -> dict:
    """What determines the decoded images: the ordered file list, the size and the decoder.

    The split (``--split``/``--seed``) and the metadata are recomputed on every run and do not
    change ``images.npy``, so they are not part of it; ``extra`` adds caller-specific fields.
    """
    h = hashlib.sha256()
    for p in paths:
        h.update(str(p).encode())
        h.update(b"\0")
    if decode is None:
        name = f"{__name__}.load_grey"
    else:
        name = (f"{getattr(decode, '__module__', type(decode).__module__)}."
                f"{getattr(decode, '__qualname__', type(decode).__qualname__)}")
    return {"kind": "decoded_files", "decoder": name,
            "decoder_version": DECODER_VERSION, "n": len(paths), "size": int(size),
            "paths_sha256": h.hexdigest(), "root": None if root is None else str(Path(root).resolve()),
            **(extra or {})}


def write_decoded(out: Path, paths: Sequence[str | os.PathLike], size: int, workers: int,
                  progress: bool, root: Path | None = None, *, resume: bool = True,
                  decode: Callable[[str, int], np.ndarray] | None = None,
                  fingerprint: dict | None = None, checkpoint_every: int | None = None,
                  on_image: Callable[[int, int], None] | None = None,
                  ) -> tuple[PreparedWriter, list[int], list[dict]]:
    """Decode ``paths`` straight into a :class:`PreparedWriter` at ``out``, resumably.

    Returns the writer (not finished), the indices of the files that were decoded, in order, and
    the ``skipped`` list ``[{file, reason}]``. Image ``i`` goes to row ``i``; if some files fail,
    the rows are compacted at the end (one streamed copy, only in that case). All failing ->
    :class:`CxrclError`.

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
    fp = decode_fingerprint(paths, size, root, decode, fingerprint)
    if checkpoint_every is None:  # 256 images, fewer for big images (<= ~64 MiB between flushes)
        checkpoint_every = min(CHECKPOINT_EVERY, max(16, (64 << 20) // (size * size)))
    writer = PreparedWriter(out, n=n, size=size, resume=resume, fingerprint=fp,
                            checkpoint_every=checkpoint_every)
    warned = 0
    try:
        if not writer.compacted:
            todo = writer.pending()
            done = n - len(todo)
            stream = decode_stream(paths, size, workers, progress, indices=todo, decode=decode)
            with closing(stream):  # stops the pool at once if the loop is left by an exception
                for i, img, reason in stream:
                    if img is None:
                        writer.skip(i, reason)
                        warned += 1
                        if warned <= MAX_WARNING_LINES:
                            log.warning("skipped %s: %s", _display(paths[i], root), reason)
                    else:
                        writer.put(i, img)
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
    skipped = [{"file": _display(paths[i], root), "reason": failed[i]} for i in sorted(failed)]
    kept = [i for i in range(n) if i not in failed] if failed else list(range(n))
    if not kept:
        writer.abort()
        reasons = sorted({s["reason"] for s in skipped})
        raise CxrclError(f"none of the {n} image files for {out} could be read "
                         f"(e.g. {skipped[0]['file']}: {reasons[0]}); check the input paths and files")
    if skipped:
        log.warning("%d of %d files skipped (unreadable or missing)", len(skipped), n)
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


def finish(writer: PreparedWriter, meta: pd.DataFrame, **kwargs):
    """``writer.finish`` that removes the partial directory if it fails.

    A resumable writer (one that records progress) keeps its partial directory when the failure
    is an interruption rather than a :class:`CxrclError` (e.g. Ctrl-C while hashing), so that a
    rerun does not decode again.
    """
    try:
        return writer.finish(meta, **kwargs)
    except CxrclError:
        writer.abort()
        raise
    except BaseException:
        if not getattr(writer, "tracking", False):
            writer.abort()
        raise
