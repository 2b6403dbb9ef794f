"""Report text: cleaning, sentence splitting, and reading reports from the places they live.

Our choices:

- :func:`clean_report` normalises whitespace and punctuation only; it keeps case and keeps the
  de-identification placeholders as single tokens: Open-i's ``XXXX`` (any run of 4+ ``X``, glued
  runs such as ``XXXX-XXXX`` or ``XXXXs`` split into separate ``XXXX`` words) and MIMIC's ``___``.
- :func:`split_sentences` splits after ``.``, ``?``, ``!`` or ``;`` followed by a space, except
  after a known abbreviation (``Dr.``, ``approx.``, ``vs.``) or inside a number (``2.0 cm``);
  list numbers (``1.``, ``2)``) that start a sentence are dropped.
- :func:`read_reports` accepts an Open-i folder (``ecgen-radiology/`` XMLs or its archive), a CSV
  of reports, a prepared data set (its ``reports.csv`` or ``metadata.csv``), a folder of MIMIC-CXR
  ``*.txt`` reports, or one ``.txt`` file, and returns one row per report with ``id``, ``text``
  and the sections of :func:`cxrcl.text.sections.extract_sections`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from cxrcl.errors import CxrclError
from cxrcl.text.sections import extract_sections

PLACEHOLDER = "XXXX"
TEXT_COLUMN_GUESSES = ("report", "text", "findings_impression", "findings", "impression")

_X_RUN = re.compile(r"X{4,}")
_ABBREV = re.compile(r"(?:\b(?:dr|mr|mrs|ms|approx|vs|fig|e\.g|i\.e|st|sq)|\b[A-Z])\.$", re.I)
_LIST_NUMBER = re.compile(r"^\s*(?:\(?\d{1,2}[.)]|[-*\u2022])\s+")
_BOUNDARY = re.compile(r"(?<=[.?!;])\s+(?=\S)")


def clean_report(text: str | None) -> str:
    """Whitespace and punctuation normalised; ``XXXX`` and ``___`` kept as single tokens.

    >>> clean_report("Stable left XXXX-XXXX.The lungs  are clear . .")
    'Stable left XXXX - XXXX. The lungs are clear.'
    """
    if text is None or (isinstance(text, float) and text != text):
        return ""
    t = str(text).replace("\r", " ").replace("\u00a0", " ")
    # every run of 4+ X is one placeholder word: XXXXXXXX -> XXXX XXXX, XXXXs -> XXXX s
    t = _X_RUN.sub(lambda m: " ".join([PLACEHOLDER] * max(1, len(m.group()) // 4)), t)
    t = re.sub(rf"(?<=\w){PLACEHOLDER}|{PLACEHOLDER}(?=\w)",
               lambda m: f" {m.group()} ", t)
    t = re.sub(rf"{PLACEHOLDER}-(?=\S)|(?<=\S)-{PLACEHOLDER}",
               lambda m: m.group().replace("-", " - "), t)
    t = re.sub(r"_{3,}", "___", t)
    t = re.sub(r"\s+", " ", t)
    t = re.sub(r"\s+([.,;:?!])", r"\1", t)              # "clear ." -> "clear."
    t = re.sub(r"([.;])(?:\s*[.;])+", r"\1", t)          # ". ." / ".." -> "."
    t = re.sub(r"(?<=[a-zX])\.(?=[A-Z][a-z])", ". ", t)  # "apex.There" -> "apex. There"
    return t.strip()


def split_sentences(text: str | None) -> list[str]:
    """Cleaned text -> sentences (list numbers dropped, empty pieces skipped).

    >>> split_sentences("1. Heart is normal. 2. No effusion; small 2.0 cm nodule. Dr. XXXX called.")
    ['Heart is normal.', 'No effusion;', 'small 2.0 cm nodule.', 'Dr. XXXX called.']
    """
    text = clean_report(text)
    out: list[str] = []
    start = 0
    for m in _BOUNDARY.finditer(text):
        piece = text[start:m.start()]
        if _ABBREV.search(piece):
            continue
        out.append(piece)
        start = m.end()
    out.append(text[start:])
    cleaned = [_LIST_NUMBER.sub("", s + " ").strip() for s in out]
    return [s for s in cleaned if s and any(c.isalnum() for c in s)]


def report_body(row: dict) -> str:
    """The findings and impression of a report (the text a labeller or encoder should read);
    the whole text when it has neither."""
    parts = [str(row.get(k) or "").strip() for k in ("findings", "impression")]
    body = " ".join(p for p in parts if p)
    return body or str(row.get("text") or "")


# ----------------------------------------------------------------------------- reading
def _with_sections(ids, texts) -> pd.DataFrame:
    rows = []
    for rid, text in zip(ids, texts, strict=True):
        text = "" if text is None or (isinstance(text, float) and text != text) else str(text)
        s = extract_sections(text)
        if not (s["findings"] or s["impression"]):
            # no headers: a free-text report; the whole text plays the findings
            s["findings"] = " ".join(text.split())
        rows.append({"id": str(rid), "text": text, **{k: s[k] for k in
                     ("findings", "impression", "indication", "comparison")}})
    return pd.DataFrame(rows)


def _read_openi(folder: Path) -> pd.DataFrame:
    from cxrcl.data.sources.openi import parse_openi_report_table

    table = parse_openi_report_table(folder)
    out = pd.DataFrame({
        "id": table["uid"].astype(str), "text": table["report"].fillna(""),
        "findings": table["findings"].fillna(""), "impression": table["impression"].fillna(""),
        "indication": table["indication"].fillna(""), "comparison": table["comparison"].fillna(""),
        "mesh_major": table["mesh_major"].fillna(""),
    })
    return out


def _read_table(path: Path, column: str | None) -> pd.DataFrame:
    try:
        table = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise CxrclError(f"{path} is not a readable CSV ({e}); pass a CSV with one report per row") from None
    if column is None:
        column = next((c for c in TEXT_COLUMN_GUESSES if c in table.columns), None)
        if column is None:
            raise CxrclError(f"{path} has none of the text columns {', '.join(TEXT_COLUMN_GUESSES)}; "
                             "name the report column with --column")
    elif column not in table.columns:
        raise CxrclError(f"{path} has no column {column!r} (columns: {', '.join(map(str, table.columns))}); "
                         "pass an existing one with --column")
    ids = table["uid"] if "uid" in table.columns else table["id"] if "id" in table.columns \
        else pd.Series(range(len(table)))
    out = _with_sections(ids, table[column])
    for c in ("findings", "impression"):  # a prepared data set's own sections win
        if c in table.columns and c != column:
            out[c] = table[c].fillna("").astype(str).values
    return out


def read_reports(source: str | Path, column: str | None = None) -> pd.DataFrame:
    """Reports from a path (see the module docstring) -> DataFrame ``id, text, findings,
    impression, indication, comparison`` (plus ``mesh_major`` for Open-i)."""
    path = Path(source)
    if not path.exists():
        raise CxrclError(f"{path} does not exist: pass an Open-i folder, a CSV of reports, a "
                         "prepared data set or a folder of .txt reports")
    if path.is_file():
        low = path.name.lower()
        if low.endswith((".tgz", ".tar.gz", ".tar")):
            return _read_openi(path)
        if low.endswith(".csv"):
            return _read_table(path, column)
        return _with_sections([path.stem], [path.read_text(errors="replace")])
    if (path / "ecgen-radiology").is_dir() or next(path.glob("*.xml"), None) is not None:
        return _read_openi(path)
    for name in ("reports.csv", "metadata.csv"):
        if (path / name).is_file():
            return _read_table(path / name, column)
    txts = sorted(path.rglob("*.txt"))
    if txts:
        return _with_sections([p.stem for p in txts], [p.read_text(errors="replace") for p in txts])
    raise CxrclError(f"{path} holds no reports (no XML, reports.csv, metadata.csv or .txt files); "
                     "pass an Open-i folder, a CSV of reports or a prepared data set")


__all__ = ["PLACEHOLDER", "clean_report", "read_reports", "report_body", "split_sentences"]
