"""The prepared data set: the only thing training and evaluation read.

A prepared data set is a directory::

    images.npy    uint8 [N, PX, PX], opened memory-mapped (never loaded whole)
    meta.csv      one row per image: id, patient_id, split, label_<name> (1/0/empty), text columns
    masks.npy     optional uint8 [N, PX, PX] (0/1); rows without a mask have has_mask == 0
    dataset.json  source, size, label names, text columns, split seed + manifest hash,
                  content hash, complete flag

Writing is streaming and atomic: :class:`PreparedWriter` fills a memory-mapped array in a
temporary sibling directory and renames it into place only when :meth:`PreparedWriter.finish`
succeeds, so a killed preparation never leaves a directory that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cxrcl.errors import CxrclError

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
class PreparedWriter:
    """Stream images into a new prepared data set; atomic on :meth:`finish`.

    >>> w = PreparedWriter("out", n=10, size=64, with_masks=False)
    >>> for i, img in enumerate(images): w.put(i, img)       # uint8 [64, 64]
    >>> ds = w.finish(meta_df, source="folder", label_names=["pneumonia"])
    """

    def __init__(self, out: str | os.PathLike, n: int, size: int, with_masks: bool = False,
                 overwrite: bool = True):
        self.out = Path(out)
        if self.out.exists() and not overwrite:
            raise CxrclError(f"{self.out} already exists: choose another output directory or remove it")
        if n <= 0:
            raise CxrclError(f"nothing to write to {self.out}: the source yielded no images")
        self.n, self.size = int(n), int(size)
        self.tmp = self.out.with_name(f".{self.out.name}.partial")
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)
        self.images = np.lib.format.open_memmap(
            self.tmp / "images.npy", mode="w+", dtype=np.uint8, shape=(self.n, self.size, self.size))
        self.masks = None
        if with_masks:
            self.masks = np.lib.format.open_memmap(
                self.tmp / "masks.npy", mode="w+", dtype=np.uint8, shape=(self.n, self.size, self.size))

    def put(self, i: int, image: np.ndarray, mask: np.ndarray | None = None) -> None:
        if image.shape != (self.size, self.size) or image.dtype != np.uint8:
            raise ValueError(f"image {i}: expected uint8 [{self.size}, {self.size}], got {image.dtype} {image.shape}")
        self.images[i] = image
        if mask is not None:
            if self.masks is None:
                raise ValueError("writer was created with with_masks=False")
            self.masks[i] = (mask > 0).astype(np.uint8)

    def put_many(self, start: int, images: np.ndarray, masks: np.ndarray | None = None) -> None:
        self.images[start:start + len(images)] = images
        if masks is not None and self.masks is not None:
            self.masks[start:start + len(masks)] = (masks > 0).astype(np.uint8)

    def finish(self, meta: pd.DataFrame, *, source: str, label_names: Sequence[str] | None = None,
               text_columns: Sequence[str] = (), split_seed: int | None = None,
               split_method: str = "patient", extra: dict | None = None) -> PreparedDataset:
        """Validate ``meta``, write meta.csv and dataset.json, and move the directory into place."""
        meta = meta.reset_index(drop=True).copy()
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
        self.images.flush()
        del self.images
        if self.masks is not None:
            self.masks.flush()
            self.masks = None
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
        if self.out.exists():
            shutil.rmtree(self.out)
        os.replace(self.tmp, self.out)
        return PreparedDataset.open(self.out)

    def abort(self) -> None:
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
