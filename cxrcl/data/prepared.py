"""The prepared data set: the only thing training and evaluation read.

A prepared data set is a directory::

    images.npy    uint8 [N, PX, PX], opened memory-mapped (never loaded whole)
    meta.csv      one row per image: id, patient_id, split, label_<name> (1/0/empty), text columns
    masks.npy     optional uint8 [N, PX, PX] (0/1); rows without a mask have has_mask == 0
    dataset.json  source, size, label names, text columns, split seed + manifest hash,
                  content hash, complete flag

Writing is streaming and atomic: :class:`PreparedWriter` fills a memory-mapped array in a
temporary sibling directory and renames it into place only when :meth:`PreparedWriter.finish`
succeeds, so a killed preparation never leaves a directory that looks complete. With a job
fingerprint the writer is also resumable: ``progress.json`` in the temporary directory records
which rows are on disk (and ``extras.jsonl`` the small per-row values the caller attached, e.g.
DICOM header fields), and a rerun of the same job re-opens the array and writes only the rest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cxrcl.errors import CxrclError

log = logging.getLogger("cxrcl.data")

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
LABEL_PREFIX = "label_"
DEFAULT_SPLIT_FRACTIONS = (0.7, 0.1, 0.2)


# ----------------------------------------------------------------------------- splits
def assign_patient_splits(
    patient_ids: Sequence[str],
    fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
    seed: int = 0,
) -> np.ndarray:
    """Deterministic patient-level split: every image of a patient lands in the same split.

    Patients are ordered by sha256(seed, patient_id) and cut at the cumulative fractions, so the
    split is a pure function of (patient ids, fractions, seed), independent of row order and of
    the machine.
    """
    fractions = np.asarray(fractions, dtype=float)
    if len(fractions) != 3 or (fractions < 0).any() or abs(fractions.sum() - 1.0) > 1e-6:
        raise CxrclError(
            f"split fractions {list(fractions)} must be three non-negative numbers summing to 1, "
            "e.g. --split patient:0.7,0.1,0.2"
        )
    pids = pd.Series(patient_ids).astype(str)
    unique = pids.unique()
    keys = [hashlib.sha256(f"{seed}:{p}".encode()).hexdigest() for p in unique]
    order = unique[np.argsort(keys, kind="stable")]
    n = len(order)
    cuts = np.round(np.cumsum(fractions) * n).astype(int)
    split_of = {pid: SPLITS[int(np.searchsorted(cuts, rank, side="right"))]
                for rank, pid in enumerate(order)}
    return pids.map(split_of).to_numpy()


def parse_split_spec(spec: str) -> tuple[str, tuple[float, float, float]]:
    """Parse ``patient:0.7,0.1,0.2`` (or ``source`` to keep a publisher's official split)."""
    kind, _, rest = spec.partition(":")
    if kind == "source" and not rest:
        return "source", DEFAULT_SPLIT_FRACTIONS
    if kind != "patient":
        raise CxrclError(
            f"unknown split spec {spec!r}: use 'patient:TRAIN,VAL,TEST' (e.g. patient:0.7,0.1,0.2) "
            "or 'source' to keep the data set's own split"
        )
    try:
        fr = tuple(float(x) for x in rest.split(",")) if rest else DEFAULT_SPLIT_FRACTIONS
    except ValueError:
        raise CxrclError(f"split spec {spec!r}: fractions must be numbers, e.g. patient:0.7,0.1,0.2") from None
    if len(fr) != 3:
        raise CxrclError(f"split spec {spec!r}: give three fractions, e.g. patient:0.7,0.1,0.2")
    return "patient", fr  # type: ignore[return-value]


def manifest_hash(ids: Sequence[str], splits: Sequence[str]) -> str:
    """sha256 of the sorted ``id,split`` lines: the identity of a split, recorded in results."""
    lines = sorted(f"{i},{s}" for i, s in zip(map(str, ids), map(str, splits), strict=True))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- writing
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


def _npy_layout(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) of a .npy file, read from its header only."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        if fortran:
            raise ValueError(f"{path} is Fortran-ordered")
        return tuple(shape), dtype, f.tell()


def iter_npy_rows(path: str | os.PathLike, chunk: int = 512, start: int = 0,
                  stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Stream rows ``start:stop`` of a C-ordered .npy as ``(first row, array)`` chunks, with plain
    file reads: unlike slicing a memory map, the pages read never count as resident memory."""
    shape, dtype, offset = _npy_layout(Path(path))
    row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    stop = shape[0] if stop is None else min(int(stop), shape[0])
    with open(path, "rb") as f:
        for s in range(int(start), stop, chunk):
            k = min(chunk, stop - s)
            f.seek(offset + s * row)
            buf = f.read(k * row)
            if len(buf) != k * row:
                raise CxrclError(f"{path} is truncated: prepare the data set again")
            yield s, np.frombuffer(buf, dtype=dtype).reshape((k, *shape[1:]))


def _copy_rows(src: Path, dst: Path, keep: np.ndarray, block_bytes: int = 64 << 20) -> None:
    """Write rows ``keep`` (ascending) of the .npy ``src`` to a new .npy ``dst``, streamed with
    plain file reads in blocks of about ``block_bytes`` (no memory map, so the copy never shows
    up in the resident set)."""
    shape, dtype, offset = _npy_layout(src)
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
    :meth:`finish`. Rows written with :meth:`put`/:meth:`put_many` (or given up with
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

    def __init__(self, out: str | os.PathLike, n: int, size: int, with_masks: bool = False,
                 overwrite: bool = True, *, resume: bool = False, fingerprint: dict | None = None,
                 checkpoint_every: int = CHECKPOINT_EVERY,
                 checkpoint_seconds: float = CHECKPOINT_SECONDS):
        self.out = Path(out)
        if self.out.exists() and not overwrite:
            raise CxrclError(f"{self.out} already exists: choose another output directory or remove it")
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
        self.tmp.mkdir(parents=True)
        shape = (self.n, self.size, self.size)
        self.images = np.lib.format.open_memmap(self.tmp / "images.npy", mode="w+", dtype=np.uint8, shape=shape)
        if self.with_masks:
            self.masks = np.lib.format.open_memmap(self.tmp / "masks.npy", mode="w+", dtype=np.uint8, shape=shape)
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
                shape, dtype, _ = _npy_layout(self.tmp / name)
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
        self.images = self.masks = None
        names = ["images.npy"] + (["masks.npy"] if self.with_masks else [])
        for name in names:
            _copy_rows(self.tmp / name, self.tmp / name.replace(".npy", ".compact.npy"), keep)
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
        shape, dtype, _ = _npy_layout(Path(src))
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
            vals = pd.to_numeric(meta[col], errors="coerce")
            if not vals.dropna().isin([0, 1]).all():
                raise CxrclError(f"label column {col} for {self.out} must hold 1, 0 or empty")
            meta[col] = vals.astype("Int8")
        if self.masks is not None and "has_mask" not in meta.columns:
            meta["has_mask"] = 1
        for col in text_columns:
            meta[col] = meta[col].fillna("").astype(str)
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
        if info.get("skipped"):  # the preparation report a person opens: one row per skipped file
            pd.DataFrame(info["skipped"]).to_csv(self.tmp / "skipped.csv", index=False)
        (self.tmp / PROGRESS_FILE).unlink(missing_ok=True)
        (self.tmp / EXTRAS_FILE).unlink(missing_ok=True)
        if self.out.exists():
            shutil.rmtree(self.out)
        os.replace(self.tmp, self.out)
        return PreparedDataset.open(self.out)

    def abort(self) -> None:
        self.images = self.masks = None
        shutil.rmtree(self.tmp, ignore_errors=True)


def content_hash(directory: Path) -> str:
    """sha256 over images.npy, masks.npy (if any) and meta.csv, streamed in 8 MiB chunks."""
    h = hashlib.sha256()
    for name in ("images.npy", "masks.npy", "meta.csv"):
        p = Path(directory) / name
        if not p.exists():
            continue
        h.update(name.encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(8 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


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


# ----------------------------------------------------------------------------- reading
@dataclass
class PreparedDataset:
    """A prepared data set opened for reading; images and masks stay memory-mapped."""

    root: Path
    images: np.ndarray
    meta: pd.DataFrame
    info: dict
    masks: np.ndarray | None = None

    @classmethod
    def open(cls, path: str | os.PathLike) -> PreparedDataset:
        root = Path(path)
        if not root.exists():
            raise CxrclError(f"{root} does not exist: create it with `cxrcl data prepare` or `cxrcl data phantom`")
        info_path = root / "dataset.json"
        if not info_path.exists():
            raise CxrclError(f"{root} is not a prepared data set (no dataset.json): "
                             "create it with `cxrcl data prepare` or `cxrcl data phantom`")
        info = json.loads(info_path.read_text())
        if not info.get("complete"):
            raise CxrclError(f"{root} is an incomplete preparation: run `cxrcl data prepare` again")
        try:
            images = np.load(root / "images.npy", mmap_mode="r")
        except (OSError, ValueError) as e:
            raise CxrclError(f"{root / 'images.npy'} cannot be read ({e}): prepare the data set again") from None
        meta = pd.read_csv(root / "meta.csv", dtype={"id": str, "patient_id": str, "split": str},
                           keep_default_na=True)
        if len(meta) != len(images):
            raise CxrclError(f"{root / 'meta.csv'} has {len(meta)} rows but images.npy has {len(images)} "
                             "images: prepare the data set again")
        for col in info.get("text_columns", []):
            if col in meta.columns:
                meta[col] = meta[col].fillna("").astype(str)
        masks = np.load(root / "masks.npy", mmap_mode="r") if (root / "masks.npy").exists() else None
        return cls(root=root, images=images, meta=meta, info=info, masks=masks)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def size(self) -> int:
        return int(self.images.shape[1])

    @property
    def label_names(self) -> list[str]:
        return list(self.info.get("label_names", []))

    @property
    def split_hash(self) -> str:
        return self.info["split"]["manifest_hash"]

    def indices(self, split: str | Sequence[str] | None = None) -> np.ndarray:
        """Row indices of one split (or several), in row order; all rows for None."""
        if split is None:
            return np.arange(len(self))
        wanted = [split] if isinstance(split, str) else list(split)
        return np.flatnonzero(self.meta["split"].isin(wanted).to_numpy())

    def resolve_labels(self, spec: str | Sequence[str]) -> list[str]:
        """``"all"`` or a comma list -> label names, with a clear error for an unknown one."""
        names = spec.split(",") if isinstance(spec, str) else list(spec)
        names = [n.strip() for n in names if n.strip()]
        if names == ["all"]:
            if not self.label_names:
                raise CxrclError(f"{self.root} has no label columns to evaluate")
            return self.label_names
        unknown = [n for n in names if n not in self.label_names]
        if unknown or not names:
            raise CxrclError(f"unknown label {', '.join(unknown) or '(none given)'} for {self.root}; "
                             f"available: {', '.join(self.label_names) or '(none)'} or 'all'")
        return names

    def labels(self, names: Sequence[str], rows: np.ndarray | None = None) -> np.ndarray:
        """float32 [N, L] label matrix with NaN for unknown (torchxrayvision's convention)."""
        cols = [LABEL_PREFIX + n for n in names]
        m = self.meta[cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float32)
        return m if rows is None else m[rows]

    def texts(self, column: str = "report", rows: np.ndarray | None = None) -> list[str]:
        if column not in self.meta.columns:
            raise CxrclError(f"{self.root} has no text column {column!r}; "
                             f"text columns: {', '.join(self.info.get('text_columns', [])) or '(none)'}")
        col = self.meta[column].fillna("").astype(str)
        return col.tolist() if rows is None else col.iloc[rows].tolist()
