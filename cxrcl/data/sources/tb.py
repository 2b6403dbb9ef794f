"""``shenzhen`` and ``montgomery`` sources: the NLM tuberculosis chest X-ray sets, ``INPUT = folder``.

Layouts as published by the U.S. National Library of Medicine::

    ChinaSet_AllFiles/                      (Shenzhen No.3 People's Hospital, 662 images)
        CXR_png/CHNCXR_0001_0.png           _0 = normal, _1 = tuberculosis
        ClinicalReadings/CHNCXR_0001_0.txt  "male 35yrs" line, then the reading ("normal",
                                            "STB,ATB in the right upper field", ...)
    MontgomerySet/                          (Montgomery County, Maryland, 138 images)
        CXR_png/MCUCXR_0001_0.png
        ClinicalReadings/MCUCXR_0001_0.txt  "Patient's Sex: F" / "Patient's Age: 040Y" lines,
                                            then the reading
        ManualMask/leftMask/MCUCXR_0001_0.png, ManualMask/rightMask/MCUCXR_0001_0.png

INPUT is the set's folder (or a folder above it); images are found by name anywhere below it
(outside mask folders), readings by stem in any ``ClinicalReadings`` folder.

Licence: public domain, no restrictions (NLM; please cite the papers below).
Citations: Jaeger S, Candemir S, Antani S, Wang YX, Lu PX, Thoma G. Two public chest X-ray
datasets for computer-aided screening of pulmonary diseases. Quant Imaging Med Surg
2014;4(6):475-477. Candemir S, et al. Lung segmentation in chest radiographs using anatomical
atlases with nonrigid registration. IEEE TMI 2014. Jaeger S, et al. Automatic tuberculosis
screening using chest radiographs. IEEE TMI 2014.

Our choices:

- Label ``tuberculosis`` = the file name's last digit (1 TB, 0 normal); ``no_finding`` = 1 when
  the reading is exactly ``normal``, 0 for TB images, empty (unknown) for normal-labelled
  images whose reading mentions something else (e.g. a calcification).
- ``report`` = the reading text without the sex/age lines, whitespace collapsed; a missing or
  empty reading gives an empty report (counted in ``dataset.json``: ``empty_text``,
  ``n_readings_missing``). ``sex`` (M/F/O as written) and ``age`` in years (``16month`` ->
  1.33, ``64days`` -> 0.18; misspellings like ``femal`` accepted) are parsed from the reading.
- Each image is its own patient (one image per patient in both sets); image id = file stem.
  No official split: patient-level ``--split``.
- Montgomery masks: ``masks.npy`` = union of the left and right lung masks, padded and resized
  like the image (nearest neighbour); ``has_mask`` = 1 when at least one of them exists and is
  readable. They are read with the image by the same resumable decoder.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cxrcl.data import decoding
from cxrcl.data.decoding import Decoded, pad_resize
from cxrcl.data.limits import check_pixels
from cxrcl.data.prepared import LABEL_PREFIX, PreparedDataset
from cxrcl.data.sources.inputs import require_dir
from cxrcl.data.splits import apply_split
from cxrcl.data.streaming import finish, write_decoded
from cxrcl.data.tables import order_columns
from cxrcl.errors import CxrclError

log = logging.getLogger("cxrcl.data")

SETS = {"shenzhen": "CHNCXR", "montgomery": "MCUCXR"}
LABEL_NAMES = ("tuberculosis", "no_finding")
_SHENZHEN_DEMO = re.compile(
    r"^\s*(?P<sex>fem(?:ale?|al)|male|man|woman|[mf])\b[\s,;:]*"
    r"(?:(?P<age>\d+(?:\.\d+)?)\s*(?P<unit>yrs?|years?|yr|y|months?|mons?|mo|days?|d)?\b\.?)?",
    re.I)
_MC_SEX = re.compile(r"patient'?s\s+sex\s*:\s*(?P<sex>\w*)", re.I)
_MC_AGE = re.compile(r"patient'?s\s+age\s*:\s*(?P<age>\d+(?:\.\d+)?)\s*(?P<unit>[ymwd])?", re.I)


def _age_years(value: str | None, unit: str | None) -> float:
    if not value:
        return np.nan
    v = float(value)
    u = (unit or "y").lower()
    if u.startswith("mo") or u == "m":
        return round(v / 12.0, 2)
    if u.startswith("w"):
        return round(v / 52.18, 2)
    if u.startswith("d"):
        return round(v / 365.25, 2)
    return v


def _sex(value: str | None) -> str | None:
    if not value:
        return None
    v = value.strip().lower()
    if v.startswith("f") or v == "woman":
        return "F"
    if v.startswith("m"):
        return "M"
    return value.strip().upper() or None


def parse_reading(text: str) -> dict:
    """A ClinicalReadings text (Shenzhen or Montgomery style) -> ``{sex, age, report}``."""
    text = (text or "").replace("\r\n", "\n").replace("\r", "\n")
    sex = age = None
    body_lines = []
    mc_sex, mc_age = _MC_SEX.search(text), _MC_AGE.search(text)
    if mc_sex or mc_age:  # Montgomery
        sex = _sex(mc_sex.group("sex")) if mc_sex else None
        age = _age_years(mc_age.group("age"), mc_age.group("unit")) if mc_age else np.nan
        body_lines = [ln for ln in text.split("\n")
                      if not re.match(r"\s*patient'?s\s+(sex|age)\s*:", ln, re.I)]
    else:  # Shenzhen: first non-empty line "male 35yrs" (the reading may follow on that line)
        lines = text.split("\n")
        first = next((i for i, ln in enumerate(lines) if ln.strip()), None)
        body_lines = lines
        if first is not None:
            m = _SHENZHEN_DEMO.match(lines[first])
            if m and (m.group("age") or m.group("sex")):
                sex = _sex(m.group("sex"))
                age = _age_years(m.group("age"), m.group("unit"))
                body_lines = [lines[first][m.end():], *lines[first + 1:]]
    return {"sex": sex, "age": np.nan if age is None else age,
            "report": " ".join(" ".join(body_lines).split())}


def _find_images(root: Path, prefix: str) -> list[Path]:
    rx = re.compile(rf"^{prefix}_(\d+)_([01])\.png$", re.I)
    return sorted((p for p in root.rglob(f"{prefix}_*") if rx.match(p.name)
                   and not any("mask" in part.lower() for part in p.relative_to(root).parts[:-1])),
                  key=lambda p: p.name)


def _by_stem(paths) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted(paths):
        out.setdefault(p.stem, p)
    return out


def parse_tb_set(root: str | Path, which: str) -> tuple[pd.DataFrame, int]:
    """The image names and ClinicalReadings of a TB set -> (metadata rows, readings missing):
    id, patient_id, path, label_tuberculosis, label_no_finding, report, sex, age, reading_file."""
    root = Path(root)
    prefix = SETS[which]
    images = _find_images(root, prefix)
    if not images:
        raise CxrclError(f"{root} has no {prefix}_NNNN_L.png images: the {which} source needs the "
                         f"{'ChinaSet_AllFiles' if which == 'shenzhen' else 'MontgomerySet'} folder "
                         "(CXR_png/ and ClinicalReadings/)")
    readings = _by_stem(p for d in root.rglob("ClinicalReadings") if d.is_dir() for p in d.glob("*.txt"))
    rows, missing = [], 0
    for p in images:
        tb = int(p.stem[-1])
        rfile = readings.get(p.stem)
        if rfile is None:
            missing += 1
            info = {"sex": None, "age": np.nan, "report": ""}
        else:
            info = parse_reading(rfile.read_text(encoding="utf-8", errors="replace"))
        reading = info["report"].strip().lower().rstrip(".")
        no_finding = 0.0 if tb else (1.0 if reading == "normal" else np.nan)
        rows.append({"id": p.stem, "patient_id": p.stem, "path": p.relative_to(root).as_posix(),
                     LABEL_PREFIX + "tuberculosis": tb, LABEL_PREFIX + "no_finding": no_finding,
                     "report": info["report"], "sex": info["sex"], "age": info["age"],
                     "reading_file": rfile.relative_to(root).as_posix() if rfile else ""})
    return pd.DataFrame(rows), missing


def _union_mask(files: list[Path], size: int) -> np.ndarray | None:
    acc = None
    for f in files:
        try:
            with Image.open(f, formats=decoding.IMAGE_FORMATS) as im:
                check_pixels(*im.size)  # a mask is an image: the same cap, before decoding
                a = np.asarray(im.convert("L")) > 0
        except Exception as e:  # noqa: BLE001 - a broken mask leaves the row without mask
            log.warning("mask %s unreadable (%s): ignored", f, e)
            continue
        if acc is not None and acc.shape != a.shape:
            log.warning("mask %s has shape %s, the other %s: ignored", f, a.shape, acc.shape)
            continue
        acc = a if acc is None else (acc | a)
    if acc is None:
        return None
    return pad_resize(acc.astype(np.uint8) * 255, size, nearest=True)


def decode_with_mask(path: str, size: int, mask_files: list[str]) -> Decoded:
    """``decode`` for :func:`write_decoded`: the image and the union of its mask files (an empty
    mask and ``has_mask`` 0 when there is none or none is readable)."""
    image = decoding.load_grey(path, size)
    mask = _union_mask([Path(f) for f in mask_files], size)
    return Decoded(image, mask, {"has_mask": int(mask is not None)})


def _prepare_tb(which: str, input: str | Path, out: str | Path, size: int, split: str, seed: int,
                workers: int, progress: bool) -> PreparedDataset:
    root = Path(input)
    require_dir(root, f"the {which} source needs the set's folder (CXR_png/ and ClinicalReadings/)")
    meta, _ = parse_tb_set(root, which)
    method = apply_split(meta, split, seed, str(root))
    masks: dict[str, dict[str, Path]] = {}
    if which == "montgomery":
        for side in ("leftMask", "rightMask"):
            masks[side] = _by_stem(p for d in root.rglob(side) if d.is_dir() for p in d.glob("*.png"))
    paths = [root / p for p in meta["path"]]
    if any(masks.values()):
        mask_files = [[str(m[stem]) for m in masks.values() if stem in m] for stem in meta["id"]]
        writer, kept, skipped = write_decoded(Path(out), paths, size, workers, progress, root=root,
                                              decode=decode_with_mask, args=mask_files, with_masks=True)
        meta["has_mask"] = [(writer.extras.get(i) or {}).get("has_mask", 0) for i in range(len(meta))]
        meta["has_mask"] = meta["has_mask"].astype(np.int8)
    else:
        writer, kept, skipped = write_decoded(Path(out), paths, size, workers, progress, root=root)
    meta = meta.iloc[kept].reset_index(drop=True)
    n_missing = int((meta["reading_file"] == "").sum())
    meta = order_columns(meta, ["report"])
    extra = {"input": str(root.resolve()), "n_readings_missing": n_missing,
             "empty_text": {"report": int((meta["report"].str.strip() == "").sum())},
             "n_masks": int(meta["has_mask"].sum()) if "has_mask" in meta else 0,
             "skipped": skipped, "n_skipped": len(skipped)}
    return finish(writer, meta, source=which, label_names=list(LABEL_NAMES), text_columns=["report"],
                  split_seed=seed if method == "patient" else None, split_method=method, extra=extra)


def prepare_shenzhen(input: str | Path, out: str | Path, size: int = 128,
                     split: str = "patient:0.7,0.1,0.2", seed: int = 0, workers: int = 1,
                     progress: bool = True) -> PreparedDataset:
    """Prepare the Shenzhen TB set (see the module docstring)."""
    return _prepare_tb("shenzhen", input, out, size, split, seed, workers, progress)


def prepare_montgomery(input: str | Path, out: str | Path, size: int = 128,
                       split: str = "patient:0.7,0.1,0.2", seed: int = 0, workers: int = 1,
                       progress: bool = True) -> PreparedDataset:
    """Prepare the Montgomery TB set with its lung masks (see the module docstring)."""
    return _prepare_tb("montgomery", input, out, size, split, seed, workers, progress)
