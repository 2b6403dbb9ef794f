"""``csv`` source: a CSV file listing images, ``INPUT = images.csv``.

Columns: ``path`` (required; relative to the CSV's folder, or absolute inside it: a path that
leaves the CSV's folder is not read and is listed in ``skipped.csv``), label columns, and
optional ``id``, ``patient_id``, ``split`` and text columns (``report`` etc.).

Our choices: labels are the ``label_*`` columns when there are any, otherwise every other column
whose non-empty values are all 0 or 1 (numbers; ``has_*`` flags excluded), renamed to
``label_<name>`` with the name lower-cased. Values 1/0/empty; -1 (uncertain) is read as empty.
``id`` is the ``id`` column, else the path without extension. Without ``patient_id`` every image
is its own patient (warning). A ``split`` column (train/val/test) is used as-is, otherwise the
patient-level ``--split``/``--seed`` split is computed over all listed rows before decoding, so a
missing file does not move other patients. Free-text columns (string, > 20 characters and > 4
words on average) are text columns; the one with most non-empty rows is copied to ``report`` when
there is no ``report`` column. Other columns are kept in meta.csv. Rows whose file is missing or
unreadable are skipped with a warning and listed in ``dataset.json`` under ``skipped``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from cxrcl.data.prepared import LABEL_PREFIX, PreparedDataset
from cxrcl.data.splits import apply_split, unique_ids
from cxrcl.data.streaming import finish, write_decoded
from cxrcl.data.tables import (
    RESERVED_COLUMNS,
    check_label_values,
    clean_name,
    find_text_columns,
    nonempty,
    order_columns,
    to_number,
)
from cxrcl.errors import CxrclError

log = logging.getLogger("cxrcl.data")


def _auto_label_columns(meta: pd.DataFrame, text_cols: list[str]) -> list[str]:
    cols = []
    for c in meta.columns:
        if c in RESERVED_COLUMNS or c in text_cols or str(c).startswith("has_"):
            continue
        filled = nonempty(meta[c])
        if not filled.any():
            continue
        vals = to_number(meta[c][filled])
        if vals.notna().all() and vals.isin([0, 1]).all():
            cols.append(c)
    return cols


def prepare_csv(input: str | Path, out: str | Path, size: int = 128, split: str = "patient:0.7,0.1,0.2",
                seed: int = 0, workers: int = 1, progress: bool = True) -> PreparedDataset:
    """Prepare the images listed in a CSV (see the module docstring)."""
    path = Path(input)
    if not path.is_file():
        raise CxrclError(f"{path} is not a file: the csv source needs a CSV with a 'path' column")
    try:
        meta = pd.read_csv(path, dtype={"path": str, "id": str, "patient_id": str, "split": str},
                           low_memory=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise CxrclError(f"{path} cannot be parsed as CSV ({e}); fix the file") from None
    if "path" not in meta.columns:
        raise CxrclError(f"{path} has no 'path' column (columns: {', '.join(map(str, meta.columns)) or 'none'}); "
                         "add a column 'path' with each image's path, relative to the CSV's folder or absolute")
    if meta.empty:
        raise CxrclError(f"{path} lists no images; add rows with a 'path'")
    where = str(path)
    base = path.resolve().parent
    paths = meta["path"].fillna("").astype(str).str.strip()
    files = [(Path(p) if Path(p).is_absolute() else base / p) if p else base / "<empty path>" for p in paths]

    if "id" in meta.columns:
        meta["id"] = meta["id"].fillna(paths.str.rsplit(".", n=1).str[0]).astype(str)
    else:
        meta.insert(0, "id", paths.str.rsplit(".", n=1).str[0])
    if "patient_id" not in meta.columns or meta["patient_id"].isna().all():
        log.warning("%s has no patient_id column: every image is treated as its own patient", path)
        meta["patient_id"] = meta["id"]
        pid_source = "per_image"
    else:
        meta["patient_id"] = meta["patient_id"].fillna(meta["id"]).astype(str)
        pid_source = "source"

    text_cols = find_text_columns(meta)
    prefixed = [c for c in meta.columns if str(c).startswith(LABEL_PREFIX)]
    if prefixed:
        label_names = [c[len(LABEL_PREFIX):] for c in prefixed]
    else:
        auto = _auto_label_columns(meta, text_cols)
        label_names = [clean_name(c) for c in auto]
        if len(set(label_names)) != len(label_names):
            raise CxrclError(f"{path}: label columns {auto} give duplicate names {label_names}; rename them")
        meta = meta.rename(columns={c: LABEL_PREFIX + n for c, n in zip(auto, label_names, strict=True)})
    if not label_names:
        log.warning("%s has no label columns (label_* or 0/1 columns): the prepared set has no labels", path)
    check_label_values(meta, label_names, where)
    groups = unique_ids(meta, where)
    method = apply_split(meta, split, seed, where, groups)

    writer, kept, skipped = write_decoded(Path(out), files, size, workers, progress, root=base)
    meta = order_columns(meta.iloc[kept].reset_index(drop=True), text_cols)
    extra = {"input": str(path.resolve()), "patient_ids": pid_source,
             "skipped": skipped, "n_skipped": len(skipped)}
    return finish(writer, meta, source="csv", label_names=label_names, text_columns=text_cols,
                  split_seed=seed if method == "patient" else None, split_method=method, extra=extra)
