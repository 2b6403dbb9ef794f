"""``mimic-cxr`` source: MIMIC-CXR-JPG 2.0.0 (+ MIMIC-CXR reports), ``INPUT = the release folder``.

Layout as shipped on PhysioNet (``mimic-cxr-jpg/2.0.0/``; ``.csv.gz`` or unpacked ``.csv``)::

    mimic-cxr-2.0.0-metadata.csv   dicom_id, subject_id, study_id, ViewPosition, Rows, Columns,
                                   StudyDate, StudyTime, PerformedProcedureStepDescription, ...
    mimic-cxr-2.0.0-split.csv      dicom_id, study_id, subject_id, split (train/validate/test)
    mimic-cxr-2.0.0-chexpert.csv   subject_id, study_id, 14 CheXpert observations (1/0/-1/empty)
    mimic-cxr-2.0.0-negbio.csv     the same columns from the NegBio labeller
    files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg
    files/p10/p10000032/s50414267.txt   free-text report (mimic-cxr-reports.zip, from MIMIC-CXR);
                                        also looked up under INPUT/mimic-cxr-reports/files/

Licence: PhysioNet Credentialed Health Data License 1.5.0 (credentialed access, data use
agreement, CITI training; no redistribution).
Citation: Johnson AEW, Pollard TJ, Berkowitz SJ, et al. MIMIC-CXR, a de-identified publicly
available database of chest radiographs with free-text reports. Scientific Data 2019; and
Johnson AEW, et al. MIMIC-CXR-JPG, a large publicly available database of labeled chest
radiographs. arXiv:1901.07042 (PhysioNet 2019).

Our choices:

- Labels from ``labeler="chexpert"`` (default) or ``"negbio"`` (the CLI route: the environment
  variable ``CXRCL_MIMIC_LABELER``), per study, mapped onto the vocabulary like CheXpert's 14
  observations, with CheXpert's uncertainty policy (``uncertain``, default ``ignore`` -> -1 is
  unknown; the CLI route is ``CXRCL_CHEXPERT_UNCERTAIN``). A study without a label row, and an
  empty cell, is unknown (NaN).
- Image id = ``dicom_id``; patient id = ``subject_id``; ``study_id`` kept; ``view`` =
  ``ViewPosition``. All views are kept.
- Split: the official ``-split.csv`` (``validate`` -> ``val``), method ``source``; without it the
  patient-level ``--split``.
- Text: ``report`` = the whole report with whitespace collapsed to single spaces; ``findings``
  and ``impression`` = those sections (:func:`cxrcl.text.sections.extract_sections`; empty when
  the report has no such header). De-identification blanks ``___`` are kept. A missing report
  file gives empty texts; counts are in ``dataset.json`` (``n_reports_missing``, ``empty_text``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from cxrcl.data.limits import check_report_bytes
from cxrcl.data.prepared import PreparedDataset
from cxrcl.data.sources.chexpert import LABEL_NAMES, map_observations, uncertain_policy
from cxrcl.data.sources.inputs import env_choice, require_dir
from cxrcl.data.splits import SPLIT_ALIASES, apply_split
from cxrcl.data.streaming import finish, leaves_root, write_decoded
from cxrcl.data.tables import order_columns, read_table
from cxrcl.errors import CxrclError
from cxrcl.text.sections import extract_sections

log = logging.getLogger("cxrcl.data")

LABELERS = ("chexpert", "negbio")
LABELER_ENV = "CXRCL_MIMIC_LABELER"
PREFIX = "mimic-cxr-2.0.0"
TEXT_COLUMNS = ("report", "findings", "impression")


def labeler_choice(value: str | None) -> str:
    """The labeller from the argument, else ``$CXRCL_MIMIC_LABELER``, else ``"chexpert"``."""
    return env_choice(value, "labeler", LABELER_ENV, "chexpert", LABELERS,
                      "a MIMIC-CXR labeller: use chexpert or negbio")


def find_file(root: Path, kind: str, required: bool = True) -> Path | None:
    """``mimic-cxr-2.0.0-<kind>.csv`` or ``.csv.gz`` in ``root``."""
    for name in (f"{PREFIX}-{kind}.csv", f"{PREFIX}-{kind}.csv.gz"):
        if (root / name).is_file():
            return root / name
    if required:
        raise CxrclError(f"{root} has no {PREFIX}-{kind}.csv(.gz): the mimic-cxr source needs the "
                         "MIMIC-CXR-JPG folder (metadata, split and chexpert CSVs and files/)")
    return None


def image_path(subject: str, study: str, dicom: str) -> str:
    return f"files/p{subject[:2]}/p{subject}/s{study}/{dicom}.jpg"


def report_path(subject: str, study: str) -> str:
    return f"files/p{subject[:2]}/p{subject}/s{study}.txt"


def parse_mimic_cxr(root: str | Path, labeler: str | None = "chexpert",
                    uncertain: str | None = "ignore") -> pd.DataFrame:
    """The MIMIC-CXR-JPG CSVs -> metadata rows (no image or report access): id, patient_id,
    study_id, path, report_file, view, ..., official ``split`` (when the split CSV exists),
    14 ``label_*`` columns."""
    root = Path(root)
    labeler, policy = labeler_choice(labeler), uncertain_policy(uncertain)
    mpath = find_file(root, "metadata")
    ids = {"dicom_id": str, "subject_id": str, "study_id": str}
    table = read_table(mpath, tuple(ids), dtype=ids)
    if table.empty:
        raise CxrclError(f"{mpath} lists no images; use the publisher's unmodified file")
    empty = table[list(ids)].isna().any(axis=1)
    if empty.any():  # e.g. a truncated download: the ids name the image files
        raise CxrclError(f"{mpath}: {int(empty.sum())} rows lack a dicom_id, subject_id or study_id "
                         "(a truncated or edited file); use the publisher's unmodified file")
    subj, study = table["subject_id"].str.strip(), table["study_id"].str.strip()
    meta = pd.DataFrame({
        "id": table["dicom_id"].str.strip(),
        "patient_id": subj,
        "study_id": study,
        "path": [image_path(a, b, c) for a, b, c in zip(subj, study, table["dicom_id"].str.strip(), strict=True)],
        "report_file": [report_path(a, b) for a, b in zip(subj, study, strict=True)],
    })
    for src, dst in (("ViewPosition", "view"), ("StudyDate", "study_date"), ("StudyTime", "study_time"),
                     ("Rows", "rows"), ("Columns", "columns"),
                     ("PerformedProcedureStepDescription", "procedure"),
                     ("ViewCodeSequence_CodeMeaning", "view_code"),
                     ("PatientOrientationCodeSequence_CodeMeaning", "orientation")):
        if src in table.columns:
            meta[dst] = table[src].to_numpy()

    spath = find_file(root, "split", required=False)
    if spath is not None:
        splits = read_table(spath, ("dicom_id", "split"), dtype={"dicom_id": str, "split": str})
        values = splits["split"].str.strip().str.lower().replace(SPLIT_ALIASES)  # validate -> val
        by_dicom = dict(zip(splits["dicom_id"].str.strip(), values, strict=True))
        meta["split"] = meta["id"].map(by_dicom)
        missing = int(meta["split"].isna().sum())
        if missing:
            raise CxrclError(f"{spath} has no split for {missing} images of {mpath.name} (e.g. "
                             f"{meta['id'][meta['split'].isna()].iloc[0]}); use the files of one release")

    lpath = find_file(root, labeler)
    labels = read_table(lpath, ("study_id",), dtype={"subject_id": str, "study_id": str})
    labels["study_id"] = labels["study_id"].astype(str).str.strip()
    labels = labels.drop_duplicates("study_id").set_index("study_id")
    mapped = map_observations(labels, policy, str(lpath))
    mapped = mapped.reindex(meta["study_id"].to_numpy()).reset_index(drop=True)
    return pd.concat([meta, mapped], axis=1)


def read_reports(meta: pd.DataFrame, root: Path) -> tuple[pd.DataFrame, int]:
    """Add ``report``, ``findings``, ``impression`` (one read per study); returns the number of
    studies whose report file is missing."""
    bases = [root, root / "mimic-cxr-reports"]
    texts: dict[str, dict[str, str]] = {}
    missing = 0
    outside = 0
    for rel in meta["report_file"].unique():
        raw = None
        if leaves_root(root / rel, root):  # ids from the CSV name the file: never read outside INPUT
            outside += 1
            bases_to_try = []
        else:
            bases_to_try = bases
        for base in bases_to_try:
            try:
                check_report_bytes((base / rel).stat().st_size)  # never read a huge "report"
                raw = (base / rel).read_text(encoding="utf-8", errors="replace")
                break
            except (OSError, ValueError):  # missing, a folder, a NUL in an id, above the cap
                continue
        if raw is None:
            missing += 1
            raw = ""
        sec = extract_sections(raw)
        texts[rel] = {"report": " ".join(raw.split()), "findings": sec["findings"],
                      "impression": sec["impression"]}
    for col in TEXT_COLUMNS:
        meta[col] = meta["report_file"].map(lambda r, c=col: texts[r][c])
    if missing:
        log.warning("%s: %d of %d studies have no report file (texts left empty)%s", root, missing,
                    len(texts), f"; {outside} of them name a path outside INPUT (not read)" if outside else "")
    return meta, missing


def prepare_mimic_cxr(input: str | Path, out: str | Path, size: int = 128,
                      split: str = "patient:0.7,0.1,0.2", seed: int = 0, workers: int = 1,
                      progress: bool = True, labeler: str | None = None,
                      uncertain: str | None = None) -> PreparedDataset:
    """Prepare MIMIC-CXR-JPG (see the module docstring)."""
    root = Path(input)
    require_dir(root, f"the mimic-cxr source needs the MIMIC-CXR-JPG folder with {PREFIX}-metadata.csv(.gz) "
                "and files/")
    labeler, policy = labeler_choice(labeler), uncertain_policy(uncertain)
    meta = parse_mimic_cxr(root, labeler, policy)
    meta = meta.drop_duplicates("id", keep="first").reset_index(drop=True)
    method = apply_split(meta, split, seed, str(root))
    meta, n_missing = read_reports(meta, root)
    writer, kept, skipped = write_decoded(Path(out), [root / p for p in meta["path"]], size, workers,
                                          progress, root=root)
    meta = order_columns(meta.iloc[kept].reset_index(drop=True), TEXT_COLUMNS)
    extra = {"input": str(root.resolve()), "labeler": labeler, "uncertain_policy": policy,
             "n_reports_missing": n_missing,
             "empty_text": {c: int((meta[c].str.strip() == "").sum()) for c in TEXT_COLUMNS},
             "skipped": skipped, "n_skipped": len(skipped)}
    return finish(writer, meta, source="mimic-cxr", label_names=list(LABEL_NAMES),
                  text_columns=list(TEXT_COLUMNS), split_seed=seed if method == "patient" else None,
                  split_method=method, extra=extra)
