"""Train/val/test splits: patient-level assignment, ``--split`` parsing, a source's own split
column, and the manifest hash that identifies a split in results.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from cxrcl.data.prepared import SPLITS
from cxrcl.errors import CxrclError

log = logging.getLogger("cxrcl.data")


DEFAULT_SPLIT_FRACTIONS = (0.7, 0.1, 0.2)


SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validation": "val", "validate": "val", "dev": "val", "test": "test",
                 "testing": "test"}


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
    if (len(fractions) != 3 or not np.isfinite(fractions).all() or (fractions < 0).any()
            or abs(fractions.sum() - 1.0) > 1e-6):
        raise CxrclError(
            f"split fractions {list(fractions)} must be three non-negative numbers summing to 1, "
            "e.g. --split patient:0.7,0.1,0.2"
        )
    pids = pd.Series(patient_ids).astype(str)
    unique = pids.unique()
    keys = [hashlib.sha256(f"{seed}:{p}".encode("utf-8", "surrogateescape")).hexdigest() for p in unique]
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
    if not all(math.isfinite(f) and f >= 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise CxrclError(f"split spec {spec!r}: the fractions must be three finite numbers >= 0 that "
                         "sum to 1, e.g. patient:0.7,0.1,0.2")
    return "patient", fr  # type: ignore[return-value]


def manifest_hash(ids: Sequence[str], splits: Sequence[str]) -> str:
    """sha256 of the sorted ``id,split`` lines: the identity of a split, recorded in results."""
    lines = sorted(f"{i},{s}" for i, s in zip(map(str, ids), map(str, splits), strict=True))
    return hashlib.sha256("\n".join(lines).encode("utf-8", "surrogateescape")).hexdigest()[:16]


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
