"""``covid`` source: the ieee8023 COVID-19 image data collection, ``INPUT = the repository folder``.

Layout as published (github.com/ieee8023/covid-chestxray-dataset)::

    metadata.csv   patientid, offset, sex, age, finding, RT_PCR_positive, survival, intubated,
                   went_icu, needed_supplemental_O2, ..., view, modality, date, location, folder,
                   filename, doi, url, license, clinical_notes, other_notes
    images/<filename>       (folder column; CT volumes live in volumes/)

``finding`` is hierarchical in newer versions (``Pneumonia/Viral/COVID-19``,
``Pneumonia/Bacterial/Streptococcus``, ``No Finding``, ``Tuberculosis``) and flat in older ones
(``COVID-19``, ``SARS``, ``Streptococcus``, ``COVID-19, ARDS``).

Licence: per image, the ``license`` column (mostly CC BY / CC BY-NC-SA / Apache 2.0 / journal
permissions); the metadata and scripts are released by the authors for research use.
Citation: Cohen JP, Morrison P, Dao L, Roth K, Duong TQ, Ghassemi M. COVID-19 image data
collection: prospective predictions are the future. MELBA 2020 (arXiv:2006.11988).

Our choices:

- X-ray rows only (``modality`` ``X-ray``; CT rows are dropped and counted as ``n_non_xray``).
  Without a ``modality`` column every row is kept.
- Labels: every part of the finding hierarchy is a label named with the vocabulary's rule
  (``COVID-19`` -> ``covid19``, ``No Finding`` -> ``no_finding``, ``Viral`` -> ``viral``,
  ``Streptococcus`` -> ``streptococcus``, ``MERS-CoV`` -> ``mers_cov``); ``covid19``,
  ``pneumonia`` and ``no_finding`` always exist. Flat (older) findings are first placed in the
  hierarchy (:data:`LEGACY_FINDINGS`: ``COVID-19`` -> ``Pneumonia/Viral/COVID-19``), a comma
  separates several findings. A row's labels: 1 for the parts of its finding; empty (unknown) for
  the parts below where its finding stops (``Pneumonia/Viral`` says nothing about ``covid19``;
  a bare ``Pneumonia`` nothing about ``viral``); 0 otherwise. ``todo``/``Unknown``/empty findings
  leave every label empty.
- Image id = file name without extension (a file listed twice is kept, renamed ``<id>__<row>``,
  and held in one split group with the rows it repeats); patient id = ``patientid``.
- No official split: patient-level ``--split``.
- Text: ``report`` = ``clinical_notes`` (renamed); ``other_notes`` stays metadata. Empty notes stay
  empty text, counted in ``dataset.json`` (``empty_text``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from cxrcl.data.labels import canonical
from cxrcl.data.prepared import LABEL_PREFIX, PreparedDataset
from cxrcl.data.splits import apply_split, unique_ids
from cxrcl.data.streaming import finish, write_decoded
from cxrcl.data.tables import order_columns, read_table
from cxrcl.errors import CxrclError

log = logging.getLogger("cxrcl.data")

REQUIRED = ("patientid", "finding", "filename")
ALWAYS = ("covid19", "pneumonia", "no_finding")
UNKNOWN_FINDINGS = {"", "todo", "unknown", "nan"}
# flat finding of older metadata.csv versions -> its place in the newer hierarchy
LEGACY_FINDINGS: dict[str, str] = {
    "covid-19": "Pneumonia/Viral/COVID-19",
    "sars": "Pneumonia/Viral/SARS",
    "mers": "Pneumonia/Viral/MERS-CoV",
    "mers-cov": "Pneumonia/Viral/MERS-CoV",
    "influenza": "Pneumonia/Viral/Influenza",
    "varicella": "Pneumonia/Viral/Varicella",
    "herpes": "Pneumonia/Viral/Herpes",
    "viral": "Pneumonia/Viral",
    "streptococcus": "Pneumonia/Bacterial/Streptococcus",
    "klebsiella": "Pneumonia/Bacterial/Klebsiella",
    "legionella": "Pneumonia/Bacterial/Legionella",
    "e.coli": "Pneumonia/Bacterial/E.Coli",
    "staphylococcus": "Pneumonia/Bacterial/Staphylococcus",
    "mrsa": "Pneumonia/Bacterial/Staphylococcus/MRSA",
    "chlamydophila": "Pneumonia/Bacterial/Chlamydophila",
    "nocardia": "Pneumonia/Bacterial/Nocardia",
    "mycoplasma": "Pneumonia/Bacterial/Mycoplasma",
    "mycoplasma bacterial pneumonia": "Pneumonia/Bacterial/Mycoplasma",
    "bacterial": "Pneumonia/Bacterial",
    "pneumocystis": "Pneumonia/Fungal/Pneumocystis",
    "aspergillosis": "Pneumonia/Fungal/Aspergillosis",
    "fungal": "Pneumonia/Fungal",
    "lipoid": "Pneumonia/Lipoid",
    "aspiration": "Pneumonia/Aspiration",
}


def finding_paths(finding: object) -> list[list[str]] | None:
    """``'COVID-19, ARDS'`` -> ``[['pneumonia', 'viral', 'covid19'], ['ards']]`` (canonical
    names); None for an unknown finding (``todo``, ``Unknown``, empty)."""
    text = "" if finding is None or (isinstance(finding, float) and np.isnan(finding)) else str(finding)
    paths = []
    for item in text.split(","):
        item = item.strip()
        if item.lower() in UNKNOWN_FINDINGS:
            continue
        if "/" not in item:
            item = LEGACY_FINDINGS.get(item.lower(), item)
        parts = [canonical(p) for p in item.split("/") if p.strip()]
        if parts:
            paths.append(parts)
    return paths or None


def finding_labels(findings: pd.Series) -> pd.DataFrame:
    """The ``finding`` column -> ``label_*`` columns (1/0/NaN, see the module docstring)."""
    paths = findings.map(finding_paths)
    below: dict[str, set[str]] = {}  # label -> every label seen below it in some path
    names: list[str] = list(ALWAYS)
    for ps in paths.dropna():
        for p in ps:
            for i, part in enumerate(p):
                below.setdefault(part, set()).update(p[i + 1:])
                if part not in names:
                    names.append(part)
    names = list(ALWAYS) + sorted(n for n in names if n not in ALWAYS)
    rows = []
    for ps in paths:
        if ps is None:
            rows.append(dict.fromkeys(names, np.nan))
            continue
        row = dict.fromkeys(names, 0.0)
        for p in ps:
            for n in below.get(p[-1], set()):
                row[n] = np.nan
        for p in ps:
            for n in p:
                row[n] = 1.0
        rows.append(row)
    out = pd.DataFrame(rows, columns=names, index=findings.index)
    out.columns = [LABEL_PREFIX + n for n in names]
    return out


def parse_covid_metadata(path: str | Path, xray_only: bool = True) -> tuple[pd.DataFrame, int]:
    """``metadata.csv`` -> (metadata rows without image access, number of non-X-ray rows dropped):
    id, patient_id, path (folder/filename), report (= clinical_notes), label_*, other columns."""
    path = Path(path)
    table = read_table(path, REQUIRED, dtype={"patientid": str, "filename": str, "folder": str})
    table = table.loc[:, [not str(c).startswith("Unnamed") for c in table.columns]]
    n_other = 0
    if xray_only and "modality" in table.columns:
        keep = table["modality"].astype(str).str.strip().str.lower().isin(["x-ray", "xray", "cxr"])
        n_other = int((~keep).sum())
        table = table[keep].reset_index(drop=True)
    if table.empty:
        raise CxrclError(f"{path} lists no X-ray images; use the publisher's unmodified metadata.csv")
    filename = table["filename"].fillna("").astype(str).str.strip()
    folder = table["folder"].fillna("images").astype(str).str.strip() if "folder" in table else "images"
    meta = pd.DataFrame({
        "id": filename.str.replace(r"\.[A-Za-z0-9]+$", "", regex=True),
        "patient_id": table["patientid"].fillna("").astype(str).str.strip(),
        "path": (folder + "/" + filename) if isinstance(folder, pd.Series) else "images/" + filename,
    })
    meta = pd.concat([meta, finding_labels(table["finding"])], axis=1)
    meta["report"] = table["clinical_notes"].fillna("").astype(str).str.strip() \
        if "clinical_notes" in table else ""
    rest = table.drop(columns=[c for c in ("patientid", "clinical_notes") if c in table.columns])
    rest = rest.rename(columns={c: f"source_{c}" for c in rest.columns if c in meta.columns})
    return pd.concat([meta, rest], axis=1), n_other


def prepare_covid(input: str | Path, out: str | Path, size: int = 128,
                  split: str = "patient:0.7,0.1,0.2", seed: int = 0, workers: int = 1,
                  progress: bool = True) -> PreparedDataset:
    """Prepare the ieee8023 covid-chestxray-dataset (see the module docstring)."""
    root = Path(input)
    if root.is_file() and root.name.endswith(".csv"):
        root = root.parent
    csv = root / "metadata.csv"
    if not csv.is_file():
        raise CxrclError(f"{root} has no metadata.csv: the covid source needs the "
                         "covid-chestxray-dataset folder (metadata.csv and images/)")
    meta, n_other = parse_covid_metadata(csv)
    where = str(csv)
    groups = unique_ids(meta, where)
    method = apply_split(meta, split, seed, where, groups)
    writer, kept, skipped = write_decoded(Path(out), [root / p for p in meta["path"]], size, workers,
                                          progress, root=root)
    meta = order_columns(meta.iloc[kept].reset_index(drop=True), ["report"])
    label_names = [c[len(LABEL_PREFIX):] for c in meta.columns if c.startswith(LABEL_PREFIX)]
    if n_other:
        log.info("%s: %d non-X-ray rows (CT) left out", csv, n_other)
    extra = {"input": str(root.resolve()), "n_non_xray": n_other,
             "empty_text": {"report": int((meta["report"].str.strip() == "").sum())},
             "skipped": skipped, "n_skipped": len(skipped)}
    return finish(writer, meta, source="covid", label_names=label_names, text_columns=["report"],
                  split_seed=seed if method == "patient" else None, split_method=method, extra=extra)
