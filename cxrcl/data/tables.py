"""Metadata tables of the source adapters: reading publisher CSVs, column names, text
columns, label values and the column order of ``meta.csv``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from cxrcl.data.prepared import LABEL_PREFIX
from cxrcl.errors import CxrclError

log = logging.getLogger("cxrcl.data")

RESERVED_COLUMNS = ("id", "patient_id", "split", "path", "index", "has_mask")


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


def to_number(values: pd.Series) -> pd.Series:
    """``pd.to_numeric(values, errors="coerce")`` that also takes an integer too large for a float
    (pandas reads a 400-digit cell as a Python int and then raises OverflowError): such values
    are read as text, so they become +-inf or NaN like any other absurd value."""
    try:
        return pd.to_numeric(values, errors="coerce")
    except (OverflowError, TypeError):
        return pd.to_numeric(pd.Series(values).astype(str), errors="coerce")


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
        vals = to_number(meta[col])
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
