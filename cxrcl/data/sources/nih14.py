"""``nih14`` source: NIH ChestX-ray14 (ChestX-ray8), ``INPUT = the unpacked release folder``.

Layout as shipped (NIH Box / Kaggle ``nih-chest-xrays/data``)::

    Data_Entry_2017.csv (or Data_Entry_2017_v2020.csv, .csv.gz accepted)
        Image Index, Finding Labels ('|'-separated, 'No Finding'), Follow-up #, Patient ID,
        Patient Age, Patient Gender, View Position, OriginalImage[Width,Height],
        OriginalImagePixelSpacing[x,y]
    train_val_list.txt, test_list.txt    the official patient-disjoint split (one file name a line)
    BBox_List_2017.csv                   Image Index, Finding Label, Bbox [x,y,w,h] (984 boxes)
    images/00000001_000.png              or images_001/images/*.png ... images_012/images/*.png

Licence: public domain / no restrictions on use (NIH Clinical Center; "the usage of the data set
is unrestricted"); cite the paper and acknowledge the NIH Clinical Center.
Citation: Wang X, Peng Y, Lu L, Lu Z, Bagheri M, Summers RM. ChestX-ray8: hospital-scale chest
X-ray database and benchmarks on weakly-supervised classification and localization of common
thorax diseases. CVPR 2017.

Our choices:

- Labels: the 14 findings and ``No Finding`` -> 15 vocabulary columns (``Pleural_Thickening`` ->
  ``pleural_thickening``; all 15 names coincide). The labels were text-mined from the reports
  and are complete: a finding not listed is 0, never unknown. ``Infiltrate`` in the box file is
  ``infiltration``.
- Image id = ``Image Index`` without ``.png``; patient id = ``Patient ID``. ``Patient Age`` is
  read as a number (the 2017 file's ``058Y`` style too).
- Split: with ``test_list.txt`` its images are our ``test`` split and the rest (train_val) is
  divided into train/val by patient in the train:val ratio of ``--split`` (default 7:1) with
  ``--seed``; split method ``source``. Without the list files: patient-level split of
  ``--split``.
- Boxes: ``BBox_List_2017.csv`` (when present) is kept as the JSON column ``boxes``
  (``[{"label": ..., "x": ..., "y": ..., "w": ..., "h": ...}]``) in prepared-size pixel
  coordinates: the 1024x1024 PNG coordinates mapped through the same pad-to-square and resize as
  the image (the PNG's real size is read from its header). Empty for images without a box.
- No report text is published with ChestX-ray14: no text columns.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cxrcl.data.labels import canonical
from cxrcl.data.prepared import LABEL_PREFIX, PreparedDataset
from cxrcl.data.sources.inputs import index_files, require_dir
from cxrcl.data.splits import apply_split, split_with_official_test
from cxrcl.data.streaming import finish, write_decoded
from cxrcl.data.tables import order_columns, read_table
from cxrcl.errors import CxrclError

log = logging.getLogger("cxrcl.data")

FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening",
    "Hernia", "No Finding",
)
NIH_ALIASES = {"infiltrate": "infiltration"}
LABEL_NAMES = tuple(canonical(f) for f in FINDINGS)
REQUIRED = ("Image Index", "Finding Labels", "Patient ID")
ENTRY_FILES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
PNG_SIZE = 1024


def nih_label(name: str) -> str:
    key = canonical(name)
    return NIH_ALIASES.get(key, key)


def _column(table: pd.DataFrame, prefix: str) -> pd.Series | None:
    for c in table.columns:
        if str(c).replace(" ", "").lower().startswith(prefix):
            return table[c]
    return None


def parse_nih14_entries(path: str | Path) -> pd.DataFrame:
    """``Data_Entry_2017[_v2020].csv[.gz]`` -> metadata rows (no image access): id, patient_id,
    file, finding_labels, follow_up, age, sex, view, orig_width, orig_height, 15 ``label_*``."""
    path = Path(path)
    table = read_table(path, REQUIRED, dtype={"Image Index": str, "Patient ID": str,
                                              "Finding Labels": str})
    if table.empty:
        raise CxrclError(f"{path} lists no images; use the publisher's unmodified file")
    files = table["Image Index"].astype(str).str.strip()
    findings = table["Finding Labels"].fillna("").astype(str)
    dummies = findings.str.get_dummies("|")
    dummies.columns = [nih_label(c) for c in dummies.columns]
    dummies = dummies.T.groupby(level=0).max().T if dummies.columns.duplicated().any() else dummies
    unknown = sorted(set(dummies.columns) - set(LABEL_NAMES) - {""})
    if unknown:
        log.warning("%s: findings outside ChestX-ray14's 15 labels ignored: %s", path, unknown)
    age = table["Patient Age"].astype(str).str.extract(r"(\d+)", expand=False) \
        if "Patient Age" in table else pd.Series(np.nan, index=table.index)
    meta = pd.DataFrame({
        "id": files.str.replace(r"\.png$", "", regex=True),
        "patient_id": table["Patient ID"].astype(str).str.strip(),
        "file": files,
        "finding_labels": findings,
        "follow_up": pd.to_numeric(table.get("Follow-up #"), errors="coerce"),
        "age": pd.to_numeric(age, errors="coerce"),
        "sex": table.get("Patient Gender"),
        "view": table.get("View Position"),
        "orig_width": pd.to_numeric(_column(table, "originalimage[width"), errors="coerce"),
        "orig_height": pd.to_numeric(_column(table, "height]"), errors="coerce"),
    })
    for name in LABEL_NAMES:
        col = dummies[name] if name in dummies.columns else pd.Series(0, index=meta.index)
        meta[LABEL_PREFIX + name] = col.to_numpy().astype(np.int8)
    return meta


def parse_nih14_boxes(path: str | Path) -> pd.DataFrame:
    """``BBox_List_2017.csv[.gz]`` -> rows ``file, label, x, y, w, h`` (PNG pixel coordinates)."""
    path = Path(path)
    table = read_table(path, ("Image Index", "Finding Label"))
    start = list(table.columns).index("Finding Label") + 1
    coords = table.iloc[:, start:start + 4]
    if coords.shape[1] < 4:
        raise CxrclError(f"{path} lacks the column 'Bbox [x,y,w,h]' (4 numbers after 'Finding "
                         "Label'); use the publisher's unmodified file")
    coords = coords.apply(pd.to_numeric, errors="coerce")
    boxes = pd.DataFrame({"file": table["Image Index"].astype(str).str.strip(),
                          "label": table["Finding Label"].astype(str).map(nih_label)})
    boxes[["x", "y", "w", "h"]] = coords.to_numpy(dtype=float)
    return boxes.dropna(subset=["x", "y", "w", "h"]).reset_index(drop=True)


def boxes_to_size(boxes: pd.DataFrame, size: int, image_sizes: dict[str, tuple[int, int]] | None = None
                  ) -> dict[str, str]:
    """Box rows -> ``{file: JSON list}`` in the coordinates of a ``size`` x ``size`` prepared image.

    An image of width W, height H is padded to a centred square of side max(W, H) and resized
    (as :func:`cxrcl.data.decoding.pad_resize`); ``image_sizes`` gives (W, H) per file
    (default 1024 x 1024, the size of the published PNGs).
    """
    out: dict[str, list[dict]] = {}
    for r in boxes.itertuples(index=False):
        w, h = (image_sizes or {}).get(r.file, (PNG_SIZE, PNG_SIZE))
        side = max(w, h)
        s = size / side
        left, top = (side - w) // 2, (side - h) // 2
        out.setdefault(r.file, []).append({
            "label": r.label, "x": round((r.x + left) * s, 2), "y": round((r.y + top) * s, 2),
            "w": round(r.w * s, 2), "h": round(r.h * s, 2)})
    return {f: json.dumps(v) for f, v in out.items()}


def read_list(path: Path) -> set[str]:
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def find_entry_file(root: Path) -> Path:
    for name in ENTRY_FILES:
        for cand in (root / name, root / f"{name}.gz"):
            if cand.is_file():
                return cand
    raise CxrclError(f"{root} has no Data_Entry_2017.csv (or Data_Entry_2017_v2020.csv): the nih14 "
                     "source needs the ChestX-ray14 folder with that file and images/")


def index_images(root: Path) -> dict[str, Path]:
    """File name -> path for ``images/*.png`` and ``images_*/images/*.png`` (and ``images_*/*.png``)."""
    dirs = [root / "images"] + sorted(root.glob("images_*/images")) + sorted(root.glob("images_*"))
    return index_files(dirs, (".png",))


def _png_size(path: Path) -> tuple[int, int] | None:
    try:
        with Image.open(path) as im:
            return im.size
    except Exception:  # noqa: BLE001 - the decoder will report the file as skipped
        return None


def prepare_nih14(input: str | Path, out: str | Path, size: int = 128,
                  split: str = "patient:0.7,0.1,0.2", seed: int = 0, workers: int = 1,
                  progress: bool = True) -> PreparedDataset:
    """Prepare NIH ChestX-ray14 (see the module docstring)."""
    root = Path(input)
    if root.is_file():
        root = root.parent
    require_dir(root, "the nih14 source needs the ChestX-ray14 folder with Data_Entry_2017.csv and images/")
    entry = find_entry_file(root)
    meta = parse_nih14_entries(entry)
    meta = meta.drop_duplicates("id", keep="first").reset_index(drop=True)

    test_list = root / "test_list.txt"
    if test_list.is_file():
        split_with_official_test(meta, meta["file"].isin(read_list(test_list)), split, seed)
        leak = meta.groupby("patient_id")["split"].nunique()
        if (leak > 1).any():
            log.warning("%s: %d patients have images in test_list.txt and train_val_list.txt",
                        test_list, int((leak > 1).sum()))
        method = "source"
    else:
        method = apply_split(meta, split, seed, str(entry))

    images = index_images(root)
    files = [images.get(f, root / "images" / f) for f in meta["file"]]
    bbox = next((p for p in (root / "BBox_List_2017.csv", root / "BBox_List_2017.csv.gz") if p.is_file()), None)
    if bbox is not None:
        boxes = parse_nih14_boxes(bbox)
        sizes = {f: s for f in boxes["file"].unique()
                 if f in images and (s := _png_size(images[f])) is not None}
        boxed = boxes_to_size(boxes, size, sizes)
        meta["boxes"] = meta["file"].map(boxed).fillna("")

    writer, kept, skipped = write_decoded(Path(out), files, size, workers, progress, root=root)
    meta = order_columns(meta.iloc[kept].reset_index(drop=True))
    extra = {"input": str(root.resolve()), "entry_file": entry.name,
             "official_split": "test_list.txt -> test; train_val -> train/val by patient"
             if method == "source" else None,
             "n_boxes_images": int((meta.get("boxes", pd.Series(dtype=str)) != "").sum()),
             "skipped": skipped, "n_skipped": len(skipped)}
    return finish(writer, meta, source="nih14", label_names=list(LABEL_NAMES), text_columns=[],
                  split_seed=seed, split_method=method, extra=extra)
