"""``openi`` source: Open-i / Indiana University chest X-ray collection (IU X-ray), ``INPUT = folder``.

Layout as distributed by the NLM Open-i service (``NLMCXR_reports.tgz`` + ``NLMCXR_png.tgz``)::

    ecgen-radiology/1.xml ... 3999.xml   one report (study) each: <uId id="CXR1">,
        <AbstractText Label="COMPARISON|INDICATION|FINDINGS|IMPRESSION">, <MeSH><major>,
        <automatic>, <parentImage id="CXR1_1_IM-0001-3001"> (one per image, usually PA + lateral)
    NLMCXR_png/CXR1_1_IM-0001-3001.png   the images, named <parentImage id>.png

INPUT holds ``ecgen-radiology/`` (or the ``NLMCXR_reports.tgz`` archive, read without
extracting) and the PNGs in ``NLMCXR_png/``, ``images/``, ``png/`` or INPUT itself.

Licence: CC BY-NC-ND 4.0 (stated in every XML's ``<licenseURL>``), open access.
Citation: Demner-Fushman D, Kohli MD, Rosenman MB, et al. Preparing a collection of radiology
examinations for distribution and retrieval. JAMIA 2016;23(2):304-310. doi:10.1093/jamia/ocv080

Our choices:

- One row per image; patient id = the report's ``uId`` (``CXR1``): the collection has no patient
  identifiers, so each study is treated as its own patient and the images of one study always share
  a split. No official split: patient-level ``--split``.
- Text: ``findings``, ``impression`` (and ``indication``, ``comparison`` as metadata) as published;
  ``report`` = the non-empty sections as ``LABEL: text`` in the publisher's order (COMPARISON,
  INDICATION, FINDINGS, IMPRESSION), so :func:`cxrcl.text.sections.extract_sections` recovers them.
  De-identification placeholders ``XXXX`` are kept as they are.
- Labels from the coder-assigned MeSH ``major`` terms (:data:`MESH_LABELS`; the descriptor before the
  first ``/``, case-insensitive; a few descriptor + qualifier rules such as ``Thickening/pleura`` ->
  ``pleural_thickening``, ``Cardiac Shadow/enlarged`` -> ``cardiomegaly``): 1 where a term says
  so; for ``normal`` studies every label is 0 and ``no_finding`` is 1; otherwise a label is empty
  (NaN, not mentioned), and ``no_finding`` is 0 when the study has any term other than ``No
  Indexing`` / ``Technical Quality of Image Unsatisfactory`` (those alone leave everything empty).
  Kept source-specific: ``calcified_granuloma`` and ``granuloma`` (incl. ``Granulomatous
  Disease``). The MeSH ``automatic`` terms (machine-extracted) are kept as text in
  ``mesh_automatic``, not used for labels. (torchxrayvision instead matches the automatic terms
  and uses 0 for everything not matched.)
- ``reports.csv`` in the prepared directory: one row per report, including the reports without
  images (text-only use); counts in ``dataset.json``. A broken XML file is skipped with a warning
  and listed under ``bad_reports``; a missing or unreadable PNG is listed under ``skipped``.
"""

from __future__ import annotations

import logging
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from defusedxml.ElementTree import fromstring as safe_fromstring

from cxrcl.data.limits import TooLarge, check_report_bytes
from cxrcl.data.prepared import LABEL_PREFIX, PreparedDataset
from cxrcl.data.sources.inputs import index_files, require_dir
from cxrcl.data.splits import apply_split
from cxrcl.data.streaming import finish, keep_or_abort, write_decoded
from cxrcl.data.tables import order_columns
from cxrcl.errors import CxrclError

log = logging.getLogger("cxrcl.data")

SECTIONS = ("COMPARISON", "INDICATION", "FINDINGS", "IMPRESSION")
TEXT_COLUMNS = ("report", "findings", "impression")
# MeSH major descriptor (lower case) -> label
MESH_LABELS: dict[str, str] = {
    "normal": "no_finding",
    "pulmonary atelectasis": "atelectasis",
    "atelectasis": "atelectasis",
    "cardiomegaly": "cardiomegaly",
    "consolidation": "consolidation",
    "pulmonary edema": "edema",
    "edema": "edema",
    "pleural effusion": "effusion",
    "emphysema": "emphysema",
    "pulmonary emphysema": "emphysema",
    "bullous emphysema": "emphysema",
    "pulmonary fibrosis": "fibrosis",
    "fibrosis": "fibrosis",
    "fractures, bone": "fracture",
    "hernia, hiatal": "hernia",
    "hernia, diaphragmatic": "hernia",
    "infiltrate": "infiltration",
    "opacity": "lung_opacity",
    "airspace disease": "lung_opacity",
    "mass": "mass",
    "nodule": "nodule",
    "pneumonia": "pneumonia",
    "pneumothorax": "pneumothorax",
    "hydropneumothorax": "pneumothorax",
    "hemopneumothorax": "pneumothorax",
    "catheters, indwelling": "support_devices",
    "tube, inserted": "support_devices",
    "implanted medical device": "support_devices",
    "medical device": "support_devices",
    "stents": "support_devices",
    "tuberculosis": "tuberculosis",
    "calcified granuloma": "calcified_granuloma",
    "granuloma": "granuloma",
    "granulomatous disease": "granuloma",
}
# (descriptor, qualifier) -> label, for descriptors that need a qualifier to mean a finding
MESH_QUALIFIED: dict[tuple[str, str], str] = {
    ("thickening", "pleura"): "pleural_thickening",
    ("cardiac shadow", "enlarged"): "cardiomegaly",
    ("mediastinum", "enlarged"): "enlarged_cardiomediastinum",
    ("mediastinum", "widened"): "enlarged_cardiomediastinum",
}
NOT_FINDINGS = {"no indexing", "technical quality of image unsatisfactory"}
LABEL_NAMES = tuple(sorted(set(MESH_LABELS.values()) | set(MESH_QUALIFIED.values())))


# ----------------------------------------------------------------------------- parsing
def iter_openi_xml(source: str | Path) -> Iterator[tuple[str, bytes | None]]:
    """``(file name, bytes)`` of every report XML in a directory (``ecgen-radiology/`` or its
    parent) or in a ``.tgz`` / ``.tar.gz`` / ``.tar`` archive (read without extracting); the
    bytes are None for a name that cannot be read as a file (e.g. a folder named ``117.xml``),
    and a :class:`~cxrcl.data.limits.TooLarge` for a file above ``$CXRCL_MAX_REPORT_BYTES``
    (its size is read first: it is never read or inflated)."""
    source = Path(source)
    if source.is_file():
        try:
            with tarfile.open(source, "r:*") as tar:
                members = sorted((m for m in tar if m.isfile() and m.name.lower().endswith(".xml")),
                                 key=lambda m: _order(Path(m.name).name))
                for m in members:
                    try:
                        check_report_bytes(m.size)  # before inflating: a .tgz may hold a bomb
                    except TooLarge as e:
                        yield m.name, e
                        continue
                    f = tar.extractfile(m)
                    if f is not None:
                        yield m.name, f.read()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise CxrclError(f"{source} is not a readable tar archive of report XMLs ({e}); "
                             "re-download NLMCXR_reports.tgz or pass the ecgen-radiology folder") from None
        return
    if not source.is_dir():
        raise CxrclError(f"{source} does not exist: pass the ecgen-radiology folder (or NLMCXR_reports.tgz)")
    folder = source / "ecgen-radiology" if (source / "ecgen-radiology").is_dir() else source
    for p in sorted(folder.glob("*.xml"), key=lambda p: _order(p.name)):
        try:
            if p.is_file():
                check_report_bytes(p.stat().st_size)
            data = p.read_bytes() if p.is_file() else None
        except TooLarge as e:
            data = e
        except OSError:
            data = None
        yield p.name, data


def _order(name: str) -> tuple[int, str]:
    stem = name.rsplit(".", 1)[0]
    return (int(stem), name) if stem.isdigit() else (1 << 60, name)


def _text(node: ET.Element | None) -> str:
    return " ".join("".join(node.itertext()).split()) if node is not None else ""


def parse_openi_xml(data: bytes, name: str = "<xml>") -> dict:
    """One report XML -> dict: uid, xml_file, the four sections, report, mesh_major,
    mesh_automatic ('|'-joined), image_ids, captions ('|'-joined), n_images. Raises ValueError."""
    root = safe_fromstring(data, forbid_dtd=True)  # no DTD, entity or external reference
    uid_node = root.find("uId")
    uid = uid_node.get("id") if uid_node is not None else None
    if not uid:
        raise ValueError("no <uId id=...>")
    sections = {s: "" for s in SECTIONS}
    for node in root.iter("AbstractText"):
        label = (node.get("Label") or "").strip().upper()
        if label in sections:
            body = _text(node)
            sections[label] = f"{sections[label]} {body}".strip() if sections[label] else body
    report = " ".join(f"{s}: {sections[s]}" for s in SECTIONS if sections[s])
    major = [_text(n) for n in root.findall("./MeSH/major")]
    auto = [_text(n) for n in root.findall("./MeSH/automatic")]
    images = root.findall("parentImage")
    return {
        "uid": uid, "xml_file": Path(name).name,
        **{s.lower(): sections[s] for s in SECTIONS}, "report": report,
        "mesh_major": "|".join(m for m in major if m),
        "mesh_automatic": "|".join(a for a in auto if a),
        "image_ids": "|".join(i.get("id", "") for i in images if i.get("id")),
        "captions": "|".join(_text(i.find("caption")) for i in images if i.get("id")),
        "n_images": sum(1 for i in images if i.get("id")),
    }


def mesh_to_labels(major: str) -> dict[str, float]:
    """'|'-joined MeSH major terms -> ``{label: 1/0/NaN}`` over :data:`LABEL_NAMES`."""
    terms = [t.strip() for t in str(major or "").split("|") if t.strip()]
    out = {n: np.nan for n in LABEL_NAMES}
    descriptors = [t.split("/")[0].strip().lower() for t in terms]
    if "normal" in descriptors:
        return {n: (1.0 if n == "no_finding" else 0.0) for n in LABEL_NAMES}
    for term, desc in zip(terms, descriptors, strict=True):
        desc = " ".join(desc.split())
        if desc in MESH_LABELS:
            out[MESH_LABELS[desc]] = 1.0
        qualifiers = {q.strip().lower() for q in term.split("/")[1:]}
        for (d, q), label in MESH_QUALIFIED.items():
            if desc == d and q in qualifiers:
                out[label] = 1.0
    if any(" ".join(d.split()) not in NOT_FINDINGS for d in descriptors):
        out["no_finding"] = 0.0
    return out


def parse_openi_report_table(source: str | Path, errors: list[dict] | None = None) -> pd.DataFrame:
    """All report XMLs -> one row per report (including reports without images) with the
    ``label_*`` columns of :func:`mesh_to_labels`. A broken XML raises :class:`CxrclError`, or is
    appended to ``errors`` as ``{file, reason}`` when a list is given."""
    rows = []
    for name, data in iter_openi_xml(source):
        try:
            if data is None:
                raise ValueError("not a readable file (a folder, or no permission to read it)")
            if isinstance(data, TooLarge):  # not read: above $CXRCL_MAX_REPORT_BYTES
                raise data
            rows.append(parse_openi_xml(data, name))
        except (ET.ParseError, ValueError) as e:
            if errors is None:
                raise CxrclError(f"{name} in {source} is not a valid Open-i report XML ({e}); "
                                 "re-download NLMCXR_reports.tgz") from None
            errors.append({"file": name, "reason": str(e)[:200]})
    if not rows:
        raise CxrclError(f"{source} holds no readable report XML files (ecgen-radiology/*.xml)")
    table = pd.DataFrame(rows)
    labels = pd.DataFrame([mesh_to_labels(m) for m in table["mesh_major"]], index=table.index)
    labels.columns = [LABEL_PREFIX + c for c in labels.columns]
    return pd.concat([table, labels], axis=1)


def images_from_reports(reports: pd.DataFrame) -> pd.DataFrame:
    """One row per ``parentImage`` (reports without images drop out): id (the image id),
    patient_id (= uid), caption, and every report column."""
    rep = reports[reports["n_images"] > 0].copy()
    rep["_ids"] = rep["image_ids"].str.split("|")
    rep["_caps"] = rep["captions"].str.split("|")
    rep = rep.explode(["_ids", "_caps"], ignore_index=True)
    meta = rep.rename(columns={"_ids": "id", "_caps": "caption"}).drop(columns=["image_ids", "captions"])
    meta.insert(1, "patient_id", meta["uid"])
    meta = meta[["id", *[c for c in meta.columns if c != "id"]]]
    return meta.reset_index(drop=True)


def parse_openi_reports(xml_dir: str | Path) -> pd.DataFrame:
    """Report XMLs -> one row per image (see :func:`images_from_reports`). The per-report table,
    including reports without images, is :func:`parse_openi_report_table`."""
    return images_from_reports(parse_openi_report_table(xml_dir))


# ----------------------------------------------------------------------------- preparing
def find_reports(root: Path) -> Path:
    for cand in (root / "ecgen-radiology", root / "NLMCXR_reports.tgz", root / "NLMCXR_reports.tar.gz"):
        if cand.exists():
            return cand
    if any(root.glob("*.xml")):
        return root
    raise CxrclError(f"{root} has no ecgen-radiology/ folder or NLMCXR_reports.tgz: the openi source "
                     "needs the report XMLs and the PNGs (NLMCXR_png/)")


def index_images(root: Path) -> dict[str, Path]:
    """Image id -> file for ``NLMCXR_png/``, ``images/``, ``png/`` and INPUT itself."""
    return index_files((root / "NLMCXR_png", root / "images", root / "png", root), by_stem=True)


def prepare_openi(input: str | Path, out: str | Path, size: int = 128,
                  split: str = "patient:0.7,0.1,0.2", seed: int = 0, workers: int = 1,
                  progress: bool = True, labels: str = "mesh") -> PreparedDataset:
    """Prepare Open-i / IU X-ray (see the module docstring). ``labels="text"`` (``--opt
    labels=text``) fills the label columns from findings + impression with the report labeller
    (:func:`cxrcl.text.labeller.label_columns`: uncertain or unmentioned -> NaN) instead of MeSH."""
    root = Path(input)
    require_dir(root, "the openi source needs a folder with ecgen-radiology/ (or NLMCXR_reports.tgz) "
                "and NLMCXR_png/")
    src = find_reports(root)
    bad: list[dict] = []
    reports = parse_openi_report_table(src, errors=bad)
    if labels == "text":
        from cxrcl.text.labeller import label_columns

        body = reports["findings"].fillna("") + " " + reports["impression"].fillna("")
        for col, vals in label_columns(body.str.strip(), LABEL_NAMES, LABEL_PREFIX).items():
            reports[col] = vals
    elif labels != "mesh":
        raise CxrclError(f"--opt labels={labels} is not one of mesh (the MeSH terms) or text (the labeller)")
    for b in bad[:20]:
        log.warning("skipped report %s: %s", b["file"], b["reason"])
    meta = images_from_reports(reports)
    if meta.empty:
        raise CxrclError(f"{src}: no report lists an image (<parentImage id=...>); nothing to prepare")
    meta = meta.drop_duplicates("id", keep="first").reset_index(drop=True)
    method = apply_split(meta, split, seed, str(src))
    images = index_images(root)
    folder = root / "NLMCXR_png"
    files = [images.get(i, folder / f"{i}.png") for i in meta["id"]]
    writer, kept, skipped = write_decoded(Path(out), files, size, workers, progress, root=root)
    meta = order_columns(meta.iloc[kept].reset_index(drop=True), TEXT_COLUMNS)
    with keep_or_abort(writer):
        reports.to_csv(writer.tmp / "reports.csv", index=False)
    label_names = list(LABEL_NAMES)
    extra = {
        "input": str(root.resolve()), "reports_file": "reports.csv",
        "n_reports": len(reports), "n_reports_with_images": int((reports["n_images"] > 0).sum()),
        "n_reports_without_images": int((reports["n_images"] == 0).sum()),
        "empty_text": {c: int((meta[c].fillna("").str.strip() == "").sum()) for c in TEXT_COLUMNS},
        "bad_reports": bad, "n_bad_reports": len(bad),
        "skipped": skipped, "n_skipped": len(skipped),
    }
    return finish(writer, meta, source="openi", label_names=label_names, text_columns=list(TEXT_COLUMNS),
                  split_seed=seed if method == "patient" else None, split_method=method, extra=extra)
