"""``rsna`` source: the RSNA Pneumonia Detection Challenge (Kaggle 2018), DICOM images + boxes.

Layout (INPUT = the folder the challenge archive unpacks to)::

    stage_2_train_labels.csv            patientId,x,y,width,height,Target  (one row per box;
                                        a negative image has one row with empty x,y,width,height)
    stage_2_detailed_class_info.csv     patientId,class  (optional: 'Lung Opacity', 'Normal',
                                        'No Lung Opacity / Not Normal')
    stage_2_train_images/<patientId>.dcm

(The ``stage_1_*`` names and ``.csv.zip`` copies are accepted too; ``stage_2_test_images`` has no
labels and is not read.)

Data set: Shih G, Wu CC, Halabi SS, et al. Augmenting the National Institutes of Health Chest
Radiograph Dataset with Expert Annotations of Possible Pneumonia. Radiology: Artificial
Intelligence 2019;1(1):e180041, and the RSNA Pneumonia Detection Challenge on Kaggle
(https://www.kaggle.com/c/rsna-pneumonia-detection-challenge); use under the challenge's terms.
The images are a subset of NIH ChestX-ray14 (Wang et al., CVPR 2017), under the NIH Clinical
Center's terms (cite the NIH data set, no attempt to re-identify). Cite both when publishing.

Our choices:

- labels: ``pneumonia`` = ``Target`` and ``lung_opacity`` = ``Target`` (in RSNA the annotated
  "Lung Opacity" *is* the pneumonia-suggestive finding; torchxrayvision does the same), and,
  when the class file exists, ``no_finding`` = 1 for class 'Normal', 0 for the two other classes
  ('No Lung Opacity / Not Normal' is abnormal without opacity), and the ``class`` text in meta;
- ``id`` = ``patient_id`` = the challenge's ``patientId``: RSNA issued one pseudonymous
  patientId per *image* (it is also the file name and the DICOM PatientID), so the patient-level
  split is per image; images of one NIH patient cannot be grouped from this data set;
- ``boxes``: a JSON list ``[["lung_opacity", x0, y0, x1, y1], ...]`` in pixels of the prepared
  image (half-open, like the phantom's ``lesion_boxes``), after the same pad-to-square and resize
  as the image. RSNA's boxes are given on the 1024 x 1024 grid of the challenge images; an image
  of another size (a down-sampled copy) has its boxes scaled by width/1024 and height/1024;
- ``masks.npy``: the union of the boxes as a 0/1 mask on the image grid, padded and resized with
  nearest neighbour like the image. ``has_mask`` = 1 for EVERY image: the challenge annotated
  every image, so a negative's empty mask is ground truth, not a missing mask. These are box
  masks, not segmentations (``dataset.json`` ``mask_kind``: ``boxes``); select positives with
  ``label_pneumonia`` for localisation metrics;
- the split is computed over all labelled images before decoding, so a missing or broken file
  does not move other images; such files are skipped and listed in ``dataset.json``
  ``skipped``. Header fields as in :mod:`cxrcl.data.dicom` (``view`` is AP or PA here).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from cxrcl.data.dicom import dicom_salt
from cxrcl.data.prepared import LABEL_PREFIX, PreparedDataset
from cxrcl.data.sources.dicom_dir import header_frame, salt_note, write_dicoms
from cxrcl.data.sources.inputs import find_first, require_dir
from cxrcl.data.splits import apply_split
from cxrcl.data.streaming import finish, keep_or_abort
from cxrcl.data.tables import order_columns
from cxrcl.errors import CxrclError

log = logging.getLogger("cxrcl.data")

GRID = 1024  # RSNA's boxes are given on the 1024 x 1024 grid of the challenge images
LABEL_FILES = ("stage_2_train_labels.csv", "stage_2_train_labels.csv.zip",
               "stage_1_train_labels.csv", "stage_1_train_labels.csv.zip")
CLASS_FILES = ("stage_2_detailed_class_info.csv", "stage_2_detailed_class_info.csv.zip",
               "stage_1_detailed_class_info.csv", "stage_1_detailed_class_info.csv.zip")
IMAGE_DIRS = ("stage_2_train_images", "stage_1_train_images")
LABEL_COLUMNS = ("patientId", "x", "y", "width", "height", "Target")
CLASS_COLUMNS = ("patientId", "class")
CLASSES = ("Lung Opacity", "Normal", "No Lung Opacity / Not Normal")
FINDING = "lung_opacity"


def _read(path: Path, columns: tuple[str, ...], what: str) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, dtype={"patientId": str, "class": str})
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError, OSError, ValueError) as e:
        raise CxrclError(f"{path} cannot be parsed as CSV ({e}); re-download {what}") from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise CxrclError(f"{path} lacks the column{'s' if len(missing) > 1 else ''} "
                         f"{', '.join(repr(c) for c in missing)} (it has: {', '.join(df.columns) or 'none'}); "
                         f"use the challenge's {what} with columns {', '.join(columns)}")
    pid = df["patientId"].fillna("").astype(str).str.strip()
    if (pid == "").any():
        raise CxrclError(f"{path}: {int((pid == '').sum())} rows have an empty patientId; fix or re-download the file")
    df["patientId"] = pid
    return df


def read_rsna_labels(labels_path: str | Path, class_path: str | Path | None = None) -> pd.DataFrame:
    """Parse the RSNA label CSV (+ the class CSV) -> one row per image, in first-seen order.

    Columns: ``patientId``, ``label_pneumonia``, ``label_lung_opacity``, (``label_no_finding``,
    ``class`` with a class file), ``n_boxes`` and ``boxes`` (list of ``[x, y, width, height]``
    on the 1024 grid). Inconsistent rows are reported with a warning: a negative row with a box
    (box ignored), a positive row without a box (label kept), a box with width or height <= 0
    (ignored), Target differing between the rows of one image (positive wins).
    """
    labels_path = Path(labels_path)
    df = _read(labels_path, LABEL_COLUMNS, "stage_2_train_labels.csv")
    target = pd.to_numeric(df["Target"], errors="coerce")
    bad = df["Target"][target.isna() | ~target.isin([0, 1])]
    if len(bad):
        raise CxrclError(f"{labels_path}: column 'Target' holds {bad.iloc[0]!r}; it must be 0 or 1")
    target = target.astype(int)
    xywh = df[["x", "y", "width", "height"]].apply(pd.to_numeric, errors="coerce")
    full, some = xywh.notna().all(axis=1), xywh.notna().any(axis=1)
    positive_size = full & (xywh["width"] > 0) & (xywh["height"] > 0)
    problems = {
        "rows with an incomplete box (ignored)": int((some & ~full).sum()),
        "boxes with width or height <= 0 (ignored)": int((full & ~positive_size).sum()),
        "Target=0 rows with a box (box ignored)": int((positive_size & (target == 0)).sum()),
        "Target=1 rows without a box (label kept)": int((~positive_size & (target == 1)).sum()),
    }
    has_box = positive_size & (target == 1)
    grouped = target.groupby(df["patientId"], sort=False)
    per_image = pd.DataFrame({"pneumonia": grouped.max(), "lo": grouped.min()})
    problems["images whose rows disagree on Target (positive kept)"] = int(
        (per_image["pneumonia"] != per_image["lo"]).sum())
    for what, count in problems.items():
        if count:
            log.warning("%s: %d %s", labels_path, count, what)

    boxes: dict[str, list] = {}
    for pid, x, y, w, h in zip(df["patientId"][has_box], *(xywh[c][has_box] for c in xywh.columns), strict=True):
        boxes.setdefault(pid, []).append([float(x), float(y), float(w), float(h)])
    out = pd.DataFrame({"patientId": per_image.index.astype(str)})
    out[LABEL_PREFIX + "pneumonia"] = per_image["pneumonia"].to_numpy()
    out[LABEL_PREFIX + "lung_opacity"] = per_image["pneumonia"].to_numpy()
    if class_path is not None:
        classes = read_rsna_classes(Path(class_path))
        cls = out["patientId"].map(classes)
        nf = cls.map({"Normal": 1, "Lung Opacity": 0, "No Lung Opacity / Not Normal": 0})
        out[LABEL_PREFIX + "no_finding"] = nf.astype("Int8")
        out["class"] = cls.fillna("")
        missing = int(cls.isna().sum())
        if missing:
            log.warning("%s: %d images have no class; label_no_finding is empty for them", class_path, missing)
        mismatch = int(((cls == "Lung Opacity") != (out[LABEL_PREFIX + "pneumonia"] == 1))[cls.notna()].sum())
        if mismatch:
            log.warning("%s: %d images whose class disagrees with Target in %s (Target kept)",
                        class_path, mismatch, labels_path.name)
    out["boxes"] = out["patientId"].map(lambda p: boxes.get(p, []))
    out["n_boxes"] = out["boxes"].map(len).astype(int)
    return out


def read_rsna_classes(path: Path) -> dict[str, str]:
    """``stage_2_detailed_class_info.csv`` -> {patientId: class} (first row of each image)."""
    df = _read(path, CLASS_COLUMNS, "stage_2_detailed_class_info.csv")
    cls = df["class"].fillna("").astype(str).str.strip()
    unknown = sorted(set(cls) - set(CLASSES))
    if unknown:
        raise CxrclError(f"{path}: column 'class' holds {unknown[0]!r}; expected one of {', '.join(CLASSES)}")
    conflicts = int(cls.groupby(df["patientId"]).nunique().gt(1).sum())
    if conflicts:
        log.warning("%s: %d images have several different classes; the first is used", path, conflicts)
    first = pd.Series(cls.to_numpy(), index=df["patientId"]).groupby(level=0, sort=False).first()
    return first.to_dict()


# ----------------------------------------------------------------------------- geometry
def _box_pixels(box, sx: float, sy: float, w: int, h: int) -> tuple[int, int, int, int]:
    x, y, bw, bh = box
    x0, x1 = round(x * sx), round((x + bw) * sx)
    y0, y1 = round(y * sy), round((y + bh) * sy)
    x0, y0 = min(max(x0, 0), w - 1), min(max(y0, 0), h - 1)
    return x0, y0, min(max(x1, x0 + 1), w), min(max(y1, y0 + 1), h)


def box_mask(boxes, shape: tuple[int, int]) -> np.ndarray:
    """uint8 0/1 mask of the union of ``[x, y, w, h]`` boxes (1024 grid) on an image of ``shape``."""
    h, w = int(shape[0]), int(shape[1])
    mask = np.zeros((h, w), dtype=np.uint8)
    for box in boxes or ():
        x0, y0, x1, y1 = _box_pixels(box, w / GRID, h / GRID, w, h)
        mask[y0:y1, x0:x1] = 1
    return mask


def scale_boxes(boxes, height: int, width: int, size: int) -> list:
    """``[x, y, w, h]`` boxes (1024 grid) -> ``[[finding, x0, y0, x1, y1]]`` in prepared pixels.

    Same geometry as :func:`cxrcl.data.decoding.pad_resize`: the image is centred in a
    black square of side max(H, W) (offsets (side-H)//2, (side-W)//2), then resized to ``size``.
    """
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    f = size / side
    sx, sy = width / GRID, height / GRID
    out = []
    for x, y, bw, bh in boxes or ():
        x0 = min(max(x * sx, 0.0), width) + left
        x1 = min(max((x + bw) * sx, 0.0), width) + left
        y0 = min(max(y * sy, 0.0), height) + top
        y1 = min(max((y + bh) * sy, 0.0), height) + top
        out.append([FINDING, round(x0 * f, 2), round(y0 * f, 2), round(x1 * f, 2), round(y1 * f, 2)])
    return out


# ----------------------------------------------------------------------------- the source
def prepare_rsna(input: str | Path, out: str | Path, size: int = 128, split: str = "patient:0.7,0.1,0.2",
                 seed: int = 0, workers: int = 1, progress: bool = True) -> PreparedDataset:
    """Prepare the RSNA Pneumonia Detection Challenge training set (see the module docstring)."""
    root = Path(input)
    require_dir(root, "the rsna source needs the unpacked challenge folder with stage_2_train_labels.csv "
                "and stage_2_train_images/")
    labels_path = find_first(root, LABEL_FILES)
    if labels_path is None:
        raise CxrclError(f"{root} has no stage_2_train_labels.csv: point INPUT at the unpacked RSNA "
                         "Pneumonia Detection Challenge folder")
    image_dir = find_first(root, IMAGE_DIRS)
    if image_dir is None or not image_dir.is_dir():
        raise CxrclError(f"{root} has no stage_2_train_images/ folder: unpack the challenge's training "
                         "images there (files <patientId>.dcm)")
    class_path = find_first(root, CLASS_FILES)
    table = read_rsna_labels(labels_path, class_path)
    label_names = ["pneumonia", "lung_opacity"] + (["no_finding"] if class_path is not None else [])

    pids = table["patientId"].tolist()
    meta = pd.DataFrame({"id": pids, "patient_id": pids})
    for name in label_names:
        meta[LABEL_PREFIX + name] = table[LABEL_PREFIX + name].to_numpy()
    if class_path is not None:
        meta["class"] = table["class"].to_numpy()
    meta["n_boxes"] = table["n_boxes"].to_numpy()
    method = apply_split(meta, split, seed, str(labels_path))  # before decoding: see the docstring

    salt = dicom_salt()
    paths = [image_dir / f"{p}.dcm" for p in pids]
    names = [f"{image_dir.name}/{p}.dcm" for p in pids]
    writer, kept, skipped, headers = write_dicoms(Path(out), paths, size, workers, progress, names=names,
                                                  salt=salt, mask_fn=box_mask,
                                                  mask_args=table["boxes"].tolist(), root=root)
    with keep_or_abort(writer):
        hdr = header_frame(headers, meta.index)
        meta = pd.concat([meta, hdr], axis=1)
        meta["boxes"] = [
            json.dumps(scale_boxes(b, int(h), int(w), size)) if not (pd.isna(h) or pd.isna(w)) else "[]"
            for b, h, w in zip(table["boxes"], hdr["height"], hdr["width"], strict=True)]
        meta["has_mask"] = 1
        meta = order_columns(meta.iloc[kept].reset_index(drop=True))
    n_pos = int(meta[LABEL_PREFIX + "pneumonia"].sum())
    extra = {"input": str(root.resolve()), "labels_file": labels_path.name,
             "class_file": class_path.name if class_path is not None else None,
             "mask_kind": "boxes", "box_grid": GRID, "patient_ids": "challenge patientId (one per image)",
             "salt": salt_note(salt), "n_positive": n_pos,
             "citation": "Shih et al., Radiology: AI 2019 (RSNA Pneumonia Detection Challenge); "
                         "images: NIH ChestX-ray14 (Wang et al., CVPR 2017)",
             "skipped": skipped, "n_skipped": len(skipped)}
    return finish(writer, meta, source="rsna", label_names=label_names, text_columns=[],
                  split_seed=seed if method == "patient" else None, split_method=method, extra=extra)
