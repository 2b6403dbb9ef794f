"""The prepared data set: the only thing training and evaluation read.

A prepared data set is a directory::

    images.npy    uint8 [N, PX, PX], opened memory-mapped (never loaded whole)
    meta.csv      one row per image: id, patient_id, split, label_<name> (1/0/empty), text columns
    masks.npy     optional uint8 [N, PX, PX] (0/1); rows without a mask have has_mask == 0
    dataset.json  source, size, label names, text columns, split seed + manifest hash,
                  content hash, complete flag

This module is the format and its reader (:class:`PreparedDataset`); the writer is
:class:`cxrcl.data.writer.PreparedWriter` (streaming, atomic, resumable), and splits are in
:mod:`cxrcl.data.splits`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cxrcl.errors import CxrclError

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
LABEL_PREFIX = "label_"


def npy_layout(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
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
    shape, dtype, offset = npy_layout(Path(path))
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
