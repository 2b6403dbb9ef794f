"""Writing a prepared data set: :class:`PreparedWriter`, streaming, atomic and resumable.

The writer fills a memory-mapped array in a temporary sibling directory ``.OUT.partial`` and
renames it into place only when :meth:`PreparedWriter.finish` succeeds, so a killed preparation
never leaves a directory that looks complete. With a job fingerprint the writer is also
resumable: ``progress.json`` in the temporary directory records which rows are on disk (and
``extras.jsonl`` the small per-row values the caller attached, e.g. DICOM header fields), and a
rerun of the same job re-opens the array and writes only the rest. The format it writes is
described in :mod:`cxrcl.data.prepared`.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cxrcl.data.prepared import (
    FORMAT_VERSION,
    LABEL_PREFIX,
    SPLITS,
    PreparedDataset,
    content_hash,
    npy_layout,
)
from cxrcl.data.splits import manifest_hash
from cxrcl.data.tables import to_number
from cxrcl.errors import CxrclError

log = logging.getLogger("cxrcl.data")


#: The files of a finished prepared data set: everything cxrcl writes there (reports.csv: openi).
#: An existing output directory is replaced only when it holds nothing else.
WRITTEN_FILES = frozenset({"images.npy", "masks.npy", "meta.csv", "dataset.json", "skipped.csv",
                           "reports.csv"})
PROGRESS_FILE = "progress.json"


#: Per-row extras of a tracked writer (one JSON line ``[row, extra]`` each), beside progress.json.
EXTRAS_FILE = "extras.jsonl"


PROGRESS_VERSION = 1


#: Defaults for how often a tracked writer flushes its arrays and records its progress.
CHECKPOINT_EVERY = 256


CHECKPOINT_SECONDS = 10.0


def _runs(mask: np.ndarray) -> list[list[int]]:
    """Boolean mask -> half-open runs ``[[start, stop], ...]`` of True (compact progress record)."""
    m = np.concatenate([[0], np.asarray(mask, dtype=np.int8), [0]])
    edges = np.flatnonzero(np.diff(m))
    return edges.reshape(-1, 2).tolist()


def _from_runs(runs: Sequence[Sequence[int]], n: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    for start, stop in runs:
        mask[int(start):int(stop)] = True
    return mask


def _json_default(obj):
    """numpy scalars in per-row extras -> Python numbers."""
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _jsonable(obj):
    """A fingerprint as it reads back from JSON (tuples -> lists, paths -> str), for comparison."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def check_output(out: str | os.PathLike, *, overwrite: bool, inputs: Sequence[str | os.PathLike] = ()
                 ) -> None:
    """Refuse an output directory whose replacement would lose anything not written by cxrcl.

    ``out`` may be missing or an empty folder. An existing prepared data set (it has
    ``dataset.json``) is replaced only with ``overwrite`` (``--overwrite``) and only when it
    holds nothing but :data:`WRITTEN_FILES`; a folder of other files, a file, or one of
    ``inputs`` is refused. Every refusal is a :class:`CxrclError` naming the folder and the fix.
    """
    out = Path(out)
    for given in inputs:
        if Path(given).exists() and out.resolve() == Path(given).resolve():
            raise CxrclError(f"output {out} is the input itself: choose another output directory")
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise CxrclError(f"output {out} exists and is not a directory: choose a new output directory")
    names = sorted(e.name for e in os.scandir(out))
    if not names:
        return
    if "dataset.json" not in names:
        raise CxrclError(f"output {out} holds files that are not a prepared data set ({_some(names)}): "
                         "cxrcl never deletes them; choose a new or empty output directory")
    foreign = [n for n in names if n not in WRITTEN_FILES]
    if foreign:
        raise CxrclError(f"output {out} is a prepared data set that also holds files cxrcl did not "
                         f"write ({_some(foreign)}): move them elsewhere, or choose a new output directory")
    if not overwrite:
        raise CxrclError(f"output {out} is already a prepared data set: pass --overwrite to replace it, "
                         "or choose a new output directory")


def _some(names: Sequence[str], k: int = 3) -> str:
    return ", ".join(names[:k]) + (f" and {len(names) - k} more" if len(names) > k else "")


class NoSpaceLeft(CxrclError):
    """The disk of a preparation is full. Unlike other errors, the partial directory is kept, so
    that the same command resumes once space is freed."""


def _mount_point(path: Path) -> Path:
    p = Path(path).resolve()
    while not p.exists():
        p = p.parent
    dev = p.stat().st_dev
    while p != p.parent and p.parent.stat().st_dev == dev:
        p = p.parent
    return p


def no_space(where: Path, detail: str = "") -> NoSpaceLeft:
    """The one sentence for a full disk (the device is named by its mount point)."""
    return NoSpaceLeft(f"no space left on {_mount_point(where)}{detail}: free space and run the same "
                       "command to resume")


def check_space(directory: Path, need: int) -> None:
    """Refuse to start when the file system of ``directory`` has less than ``need`` bytes free."""
    existing = Path(directory).absolute()
    while not existing.exists() and existing != existing.parent:  # OUT's folders may be new
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if free < need:
        raise no_space(directory, f" (the data set needs {_amount(need)}, {_amount(free)} are free)")


def _amount(nbytes: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} bytes"


def reserve(path: Path) -> None:
    """Allocate every block of ``path`` now (``posix_fallocate``): a full disk is then an
    ``ENOSPC`` error here, instead of a ``Bus error`` when a page of the memory map is written."""
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is None:
        return
    with open(path, "r+b") as f:
        try:
            fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise


def _full_disk_is_one_sentence(method):
    """An ``ENOSPC``/``EDQUOT`` OSError of a writer method -> :class:`NoSpaceLeft`."""
    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise no_space(getattr(self, "tmp", Path(".")).parent) from None
            raise
    return wrapped


def text_safe(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with every text value UTF-8-writable: the undecodable bytes of a non-UTF-8 file
    name (Python's surrogate escapes, e.g. ``caf\\udcff``) become the text ``caf\\xff``. The
    table itself is returned (no copy) when everything already encodes."""
    def fix(v):
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return v.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        return v

    bad = [c for c in table.columns
           if not pd.api.types.is_numeric_dtype(table[c]) and table[c].map(lambda v: fix(v) is not v).any()]
    if not bad:
        return table
    table = table.copy()
    for c in bad:
        table[c] = table[c].map(fix)
    return table


def copy_rows(src: Path, dst: Path, keep: np.ndarray, block_bytes: int = 64 << 20) -> None:
    """Write rows ``keep`` (ascending) of the .npy ``src`` to a new .npy ``dst``, streamed with
    plain file reads in blocks of about ``block_bytes`` (no memory map, so the copy never shows
    up in the resident set)."""
    shape, dtype, offset = npy_layout(src)
    row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    block = max(1, block_bytes // max(1, row))
    out = np.lib.format.open_memmap(dst, mode="w+", dtype=dtype, shape=(len(keep), *shape[1:]))
    out_offset = out.offset
    del out
    with open(src, "rb") as fin, open(dst, "r+b") as fout:
        fout.seek(out_offset)
        for s in range(0, shape[0], block):
            stop = min(shape[0], s + block)
            lo, hi = np.searchsorted(keep, [s, stop])
            if lo == hi:
                continue
            fin.seek(offset + s * row)
            buf = np.frombuffer(fin.read((stop - s) * row), dtype=np.uint8).reshape(stop - s, row)
            fout.write(buf[keep[lo:hi] - s].tobytes())
        fout.flush()
        os.fsync(fout.fileno())


class PreparedWriter:
    """Stream images into a new prepared data set; atomic on :meth:`finish`, optionally resumable.

    >>> w = PreparedWriter("out", n=10, size=64, with_masks=False)
    >>> for i, img in enumerate(images): w.put(i, img)       # uint8 [64, 64]
    >>> ds = w.finish(meta_df, source="folder", label_names=["pneumonia"])

    Everything is written into the sibling directory ``.OUT.partial`` and renamed to ``OUT`` by
    :meth:`finish`. ``OUT`` must be new, empty or a prepared data set holding only what cxrcl
    writes (:func:`check_output`; ``overwrite=False`` refuses an existing set too). Rows written with :meth:`put`/:meth:`put_many` (or given up with
    :meth:`skip`) are marked in the ``done`` mask. Every ``checkpoint_every`` rows (or
    ``checkpoint_seconds``) the arrays are flushed to disk and their mapping is re-opened, so
    the resident memory of the writer stays at one chunk whatever ``n`` is.

    Resuming: with a ``fingerprint`` (a JSON-able dict identifying the job), each checkpoint
    also writes ``.OUT.partial/progress.json`` (the fingerprint, the done mask as runs, the
    skipped rows and their reasons) *after* the arrays are flushed, so it never claims rows
    that are not on disk. With ``resume=True`` a later writer with the same fingerprint, ``n``,
    ``size`` and ``with_masks`` re-opens the arrays (mode r+) and keeps the done mask; callers
    then write only :meth:`pending` rows. Any other partial directory is discarded, with a
    warning when it came from a different job.

    Per-row extras: :meth:`put` and :meth:`skip` take an optional small JSON-able dict
    (``extra``) kept in :attr:`extras` by input row (also for skipped rows, and across
    :meth:`compact`). A tracked writer appends the new ones to ``.OUT.partial/extras.jsonl``
    before each progress record, so a resumed writer has the extras of every row it reports
    done. They are never written to the finished directory: callers put what they need into
    ``meta.csv`` themselves.
    """

    @_full_disk_is_one_sentence
    def __init__(self, out: str | os.PathLike, n: int, size: int, with_masks: bool = False,
                 overwrite: bool = True, *, resume: bool = False, fingerprint: dict | None = None,
                 checkpoint_every: int = CHECKPOINT_EVERY,
                 checkpoint_seconds: float = CHECKPOINT_SECONDS):
        self.out = Path(out)
        if self.out.is_symlink() and self.out.is_dir():  # a link to a set: update the set itself
            self.out = self.out.resolve()
        check_output(self.out, overwrite=overwrite)
        if n <= 0:
            raise CxrclError(f"nothing to write to {self.out}: the source yielded no images")
        self.n_input = self.n = int(n)
        self.size = int(size)
        self.with_masks = bool(with_masks)
        self.tmp = self.out.with_name(f".{self.out.name}.partial")
        self.fingerprint = None if fingerprint is None else _jsonable(fingerprint)
        self.checkpoint_every = max(1, int(checkpoint_every))
        self.checkpoint_seconds = float(checkpoint_seconds)
        self.done = np.zeros(self.n_input, dtype=bool)
        self.failed: dict[int, str] = {}
        self.extras: dict[int, dict] = {}
        self._unsaved_extras: dict[int, dict] = {}
        self.compacted = False
        self.resumed = False
        self.resumed_done = 0
        self.images: np.ndarray | None = None
        self.masks: np.ndarray | None = None
        state, why = None, None
        if resume and self.fingerprint is not None and self.tmp.exists():
            state, why = self._resumable_state()
        if state is not None:
            self._reopen(state)
        else:
            self._start_fresh(discard_reason=why)
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()

    # ------------------------------------------------------------------ set-up and resume
    def _start_fresh(self, discard_reason: str | None) -> None:
        if self.tmp.exists():
            if discard_reason:
                log.warning("%s: %s; starting the preparation over", self.tmp, discard_reason)
            shutil.rmtree(self.tmp)
        shape = (self.n, self.size, self.size)
        check_space(self.tmp.parent, (2 if self.with_masks else 1) * self.n * self.size * self.size)
        self.tmp.mkdir(parents=True)
        try:
            self.images = np.lib.format.open_memmap(self.tmp / "images.npy", mode="w+", dtype=np.uint8,
                                                    shape=shape)
            reserve(self.tmp / "images.npy")
            if self.with_masks:
                self.masks = np.lib.format.open_memmap(self.tmp / "masks.npy", mode="w+", dtype=np.uint8,
                                                       shape=shape)
                reserve(self.tmp / "masks.npy")
        except OSError:
            self.abort()  # nothing is done yet: free what was taken
            raise
        if self.fingerprint is not None:
            self._write_progress()  # the job is recorded before any work is done

    def _resumable_state(self) -> tuple[dict | None, str | None]:
        """(progress record, None) for a matching partial directory, else (None, why not)."""
        try:
            state = json.loads((self.tmp / PROGRESS_FILE).read_text())
        except FileNotFoundError:
            return None, "an interrupted preparation without a progress record was found"
        except (OSError, ValueError):
            return None, "the progress record of the interrupted preparation is unreadable"
        old = state.get("fingerprint") if isinstance(state.get("fingerprint"), dict) else {}
        if old != self.fingerprint:
            diff = sorted(k for k in set(old) | set(self.fingerprint) if old.get(k) != self.fingerprint.get(k))
            return None, ("the interrupted preparation there was a different job (it differs in: "
                          f"{', '.join(diff)})")
        expected = {"version": PROGRESS_VERSION, "n": self.n_input, "size": self.size,
                    "with_masks": self.with_masks}
        if any(state.get(k) != v for k, v in expected.items()):
            return None, "the interrupted preparation there has another size, length or mask setting"
        why = self._check_files(state)
        return (None, why) if why else (state, None)

    def _check_files(self, state: dict) -> str | None:
        names = ["images.npy"] + (["masks.npy"] if self.with_masks else [])
        rows = int(state.get("rows", self.n_input))
        if state.get("state") == "compacted":
            for name in names:  # the rename after compaction may have been interrupted
                side = self.tmp / name.replace(".npy", ".compact.npy")
                if side.exists():
                    os.replace(side, self.tmp / name)
        else:
            rows = self.n_input
            for name in names:
                (self.tmp / name.replace(".npy", ".compact.npy")).unlink(missing_ok=True)
        for name in names:
            try:
                shape, dtype, _ = npy_layout(self.tmp / name)
            except (OSError, ValueError):
                return f"{name} of the interrupted preparation is missing or unreadable"
            if shape != (rows, self.size, self.size) or dtype != np.uint8:
                return f"{name} of the interrupted preparation has the wrong shape"
        return None

    def _reopen(self, state: dict) -> None:
        self.done = _from_runs(state.get("done", []), self.n_input)
        self.failed = {int(k): str(v) for k, v in state.get("failed", {}).items()}
        self.compacted = state.get("state") == "compacted"
        self.n = int(state.get("rows", self.n_input)) if self.compacted else self.n_input
        self.resumed, self.resumed_done = True, int(self.done.sum())
        self._load_extras()
        for name in ["images.npy"] + (["masks.npy"] if self.with_masks else []):
            reserve(self.tmp / name)  # the rest of a sparse array, before it is mapped
        self._map()
        log.warning("%s: resuming an interrupted preparation: %d of %d images already done",
                    self.tmp, self.resumed_done, self.n_input)

    def _map(self) -> None:
        """(Re-)open the arrays read-write; dropping the old mapping releases its resident pages."""
        self.images = np.lib.format.open_memmap(self.tmp / "images.npy", mode="r+")
        if self.with_masks:
            self.masks = np.lib.format.open_memmap(self.tmp / "masks.npy", mode="r+")

    def _flush(self) -> None:
        for arr in (self.images, self.masks):
            if arr is not None:
                arr.flush()

    def _load_extras(self) -> None:
        """Read ``extras.jsonl`` (later lines win), keep the rows marked done and rewrite the file
        cleanly (a kill during an append may have left a torn last line)."""
        path = self.tmp / EXTRAS_FILE
        if not path.exists():
            return
        extras: dict[int, dict] = {}
        with open(path) as f:
            for line in f:
                try:
                    row, extra = json.loads(line)
                except (ValueError, TypeError):
                    continue  # a torn line: its row is not marked done, so it is decoded again
                if 0 <= int(row) < self.n_input and self.done[int(row)]:
                    extras[int(row)] = extra
        self.extras = extras
        side = self.tmp / (EXTRAS_FILE + ".tmp")
        with open(side, "w") as f:
            for row in sorted(extras):
                f.write(json.dumps([row, extras[row]], default=_json_default) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(side, path)

    def _save_extras(self) -> None:
        """Append the extras added since the last progress record to ``extras.jsonl`` (fsync)."""
        if not self._unsaved_extras:
            return
        with open(self.tmp / EXTRAS_FILE, "a") as f:
            for row, extra in self._unsaved_extras.items():
                f.write(json.dumps([row, extra], default=_json_default) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._unsaved_extras = {}

    def _write_progress(self) -> None:
        self._save_extras()  # before the record that marks their rows done
        state = {"version": PROGRESS_VERSION, "fingerprint": self.fingerprint, "n": self.n_input,
                 "rows": self.n, "size": self.size, "with_masks": self.with_masks,
                 "state": "compacted" if self.compacted else "writing",
                 "n_done": int(self.done.sum()), "done": _runs(self.done),
                 "failed": {str(k): v for k, v in sorted(self.failed.items())}}
        side = self.tmp / (PROGRESS_FILE + ".tmp")
        with open(side, "w") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(side, self.tmp / PROGRESS_FILE)

    # ------------------------------------------------------------------ writing rows
    @property
    def tracking(self) -> bool:
        """True when progress is recorded (the writer has a fingerprint)."""
        return self.fingerprint is not None

    @property
    def n_done(self) -> int:
        return int(self.done.sum())

    def pending(self) -> np.ndarray:
        """Input rows not yet written or skipped, ascending."""
        return np.flatnonzero(~self.done)

    def mark_done(self, rows) -> None:
        """Mark rows as finished without writing them (e.g. written through ``self.images``)."""
        self.done[rows] = True
        self._tick(int(np.size(self.done[rows])))

    def put(self, i: int, image: np.ndarray, mask: np.ndarray | None = None,
            extra: dict | None = None) -> None:
        """Write row ``i`` (and its mask: 0/1, none = an empty mask); ``extra`` -> :attr:`extras`."""
        if image.shape != (self.size, self.size) or image.dtype != np.uint8:
            raise ValueError(f"image {i}: expected uint8 [{self.size}, {self.size}], got {image.dtype} {image.shape}")
        self.images[i] = image
        if mask is not None:
            if self.masks is None:
                raise ValueError("writer was created with with_masks=False")
            self.masks[i] = (mask > 0).astype(np.uint8)
        elif self.masks is not None:
            self.masks[i] = 0
        self._set_extra(i, extra)
        self.done[i] = True
        self._tick(1)

    def _set_extra(self, i: int, extra: dict | None) -> None:
        if extra is not None:
            self.extras[int(i)] = extra
            if self.tracking:
                self._unsaved_extras[int(i)] = extra

    def put_many(self, start: int, images: np.ndarray, masks: np.ndarray | None = None) -> None:
        self.images[start:start + len(images)] = images
        if masks is not None and self.masks is not None:
            self.masks[start:start + len(masks)] = (masks > 0).astype(np.uint8)
        self.done[start:start + len(images)] = True
        self._tick(len(images))

    def skip(self, i: int, reason: str, extra: dict | None = None) -> None:
        """Give up on input row ``i`` (e.g. an unreadable file): done, recorded in ``failed``;
        ``extra`` (what is known of the row anyway, e.g. its patient) -> :attr:`extras`."""
        self._set_extra(i, extra)
        self.done[i] = True
        self.failed[int(i)] = str(reason)
        self._tick(1)

    def _tick(self, k: int) -> None:
        self._since_checkpoint += k
        if (self._since_checkpoint >= self.checkpoint_every
                or time.monotonic() - self._last_checkpoint >= self.checkpoint_seconds):
            self.checkpoint()

    @_full_disk_is_one_sentence
    def checkpoint(self) -> None:
        """Flush the arrays, release their resident pages and (when tracking) record progress."""
        if self.images is None:
            return
        self._flush()
        self._map()
        if self.tracking:
            self._write_progress()
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()

    @_full_disk_is_one_sentence
    def compact(self, keep: Sequence[int] | np.ndarray) -> None:
        """Keep only input rows ``keep`` (ascending), e.g. after skipped files; streamed copy.

        Crash-safe when tracking: the compacted arrays are written beside the originals, the
        progress record then says ``compacted``, and only then are they renamed into place.
        """
        keep = np.asarray(keep, dtype=np.int64)
        if len(keep) == self.n and (not len(keep) or (keep == np.arange(self.n)).all()):
            return
        if self.compacted:
            raise ValueError("this writer has already been compacted")
        if len(keep) and ((np.diff(keep) <= 0).any() or keep[0] < 0 or keep[-1] >= self.n):
            raise ValueError("compact: keep must be ascending row numbers of the writer")
        self._flush()
        names = ["images.npy"] + (["masks.npy"] if self.with_masks else [])
        check_space(self.tmp, len(names) * len(keep) * self.size * self.size)
        self.images = self.masks = None
        for name in names:
            copy_rows(self.tmp / name, self.tmp / name.replace(".npy", ".compact.npy"), keep)
        self.compacted, self.n = True, len(keep)
        if self.tracking:
            self._write_progress()
        for name in names:
            os.replace(self.tmp / name.replace(".npy", ".compact.npy"), self.tmp / name)
        self._map()

    def adopt(self, kind: str, src: str | os.PathLike, link: bool = True) -> None:
        """Use the existing .npy ``src`` as ``images`` or ``masks`` (all rows done): a hard link
        when ``link`` and the file system allow it (prepared arrays are never written in place),
        else a streamed copy. Used by relabelling, which changes only the metadata; do not
        ``put`` into an adopted array."""
        if kind not in ("images", "masks") or (kind == "masks" and not self.with_masks):
            raise ValueError(f"cannot adopt {kind!r} into this writer")
        shape, dtype, _ = npy_layout(Path(src))
        if shape != (self.n, self.size, self.size) or dtype != np.uint8:
            raise CxrclError(f"{src} is {dtype} {list(shape)}; expected uint8 [{self.n}, {self.size}, {self.size}]")
        setattr(self, kind, None)
        dst = self.tmp / f"{kind}.npy"
        dst.unlink()
        try:
            if not link:
                raise OSError
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
        # no mapping is kept: a hard-linked file must never be opened for writing
        if kind == "images":
            self.done[:] = True
            if self.tracking:
                self._write_progress()

    @_full_disk_is_one_sentence
    def finish(self, meta: pd.DataFrame, *, source: str, label_names: Sequence[str] | None = None,
               text_columns: Sequence[str] = (), split_seed: int | None = None,
               split_method: str = "patient", extra: dict | None = None) -> PreparedDataset:
        """Validate ``meta``, write meta.csv and dataset.json, and move the directory into place."""
        meta = meta.reset_index(drop=True).copy()
        if self.tracking and not self.done.all():
            raise CxrclError(f"only {self.n_done} of {self.n_input} images were written to {self.out}; "
                             "run the preparation again to finish it")
        if len(meta) != self.n:
            raise CxrclError(f"metadata has {len(meta)} rows but {self.n} images were written to {self.out}")
        for col in ("id", "patient_id", "split"):
            if col not in meta.columns:
                raise CxrclError(f"metadata for {self.out} lacks the required column {col!r}")
        bad = set(meta["split"].astype(str)) - set(SPLITS)
        if bad:
            raise CxrclError(f"metadata for {self.out} has unknown split values {sorted(bad)}; use train/val/test")
        if meta["id"].astype(str).duplicated().any():
            dup = meta["id"][meta["id"].astype(str).duplicated()].iloc[0]
            raise CxrclError(f"metadata for {self.out} has duplicate image id {dup!r}; ids must be unique")
        if label_names is None:
            label_names = [c[len(LABEL_PREFIX):] for c in meta.columns if c.startswith(LABEL_PREFIX)]
        for name in label_names:
            col = LABEL_PREFIX + name
            vals = to_number(meta[col])
            if not vals.dropna().isin([0, 1]).all():
                raise CxrclError(f"label column {col} for {self.out} must hold 1, 0 or empty")
            meta[col] = vals.astype("Int8")
        if self.masks is not None and "has_mask" not in meta.columns:
            meta["has_mask"] = 1
        for col in text_columns:
            meta[col] = meta[col].fillna("").astype(str)
        meta = text_safe(meta)
        meta.to_csv(self.tmp / "meta.csv", index=False)
        self._flush()
        self.images = self.masks = None
        info = {
            "format_version": FORMAT_VERSION,
            "source": source,
            "n": self.n,
            "size": self.size,
            "label_names": list(label_names),
            "text_columns": list(text_columns),
            "has_masks": (self.tmp / "masks.npy").exists(),
            "split": {
                "method": split_method,
                "seed": split_seed,
                "counts": {s: int((meta["split"] == s).sum()) for s in SPLITS},
                "manifest_hash": manifest_hash(meta["id"], meta["split"]),
            },
            "content_hash": content_hash(self.tmp),
            "complete": True,
            **(extra or {}),
        }
        (self.tmp / "dataset.json").write_text(json.dumps(info, indent=2))
        # the preparation report a person opens: one row per skipped file (images, then reports)
        skipped_rows = [*info.get("skipped", []), *info.get("bad_reports", [])]
        if skipped_rows:
            text_safe(pd.DataFrame(skipped_rows)).to_csv(self.tmp / "skipped.csv", index=False)
        (self.tmp / PROGRESS_FILE).unlink(missing_ok=True)
        (self.tmp / EXTRAS_FILE).unlink(missing_ok=True)
        self._move_into_place()
        return PreparedDataset.open(self.out)

    def _move_into_place(self) -> None:
        """Rename the finished temporary directory to ``out``. An existing prepared data set there
        is checked again (nothing but :data:`WRITTEN_FILES`), renamed aside, and removed only
        after the new one is in place, so ``out`` is always either the old or the new set."""
        if not self.out.exists():
            os.replace(self.tmp, self.out)
            return
        check_output(self.out, overwrite=True)
        old = self.out.with_name(f".{self.out.name}.replaced")
        if old.exists():  # left by a kill during an earlier replacement: the set it replaced
            shutil.rmtree(old)
        os.replace(self.out, old)
        os.replace(self.tmp, self.out)
        shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        self.images = self.masks = None
        shutil.rmtree(self.tmp, ignore_errors=True)


def write_prepared(out: str | os.PathLike, images: np.ndarray, meta: pd.DataFrame, *,
                   source: str, masks: np.ndarray | None = None, **finish_kwargs) -> PreparedDataset:
    """Write an in-memory array (small data sets, tests) as a prepared data set."""
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1] != images.shape[2] or images.dtype != np.uint8:
        raise CxrclError(f"images for {out} must be uint8 [N, PX, PX]; got {images.dtype} {images.shape}")
    w = PreparedWriter(out, n=len(images), size=images.shape[1], with_masks=masks is not None)
    try:
        w.put_many(0, images, masks)
        return w.finish(meta, source=source, **finish_kwargs)
    except BaseException:
        w.abort()
        raise
