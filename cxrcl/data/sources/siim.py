"""``siim`` source: SIIM-ACR Pneumothorax Segmentation (Kaggle 2019), DICOM images + RLE masks.

Layout (INPUT = the folder the challenge archive unpacks to)::

    train-rle.csv                       ImageId, EncodedPixels  ('-1' = no pneumothorax; one
                                        row per region, so an image may have several rows)
    dicom-images-train/**/<ImageId>.dcm (any depth: <StudyUID>/<SeriesUID>/<ImageId>.dcm)

(``train-rle.csv.gz`` and torchxrayvision's ``siim-pneumothorax-train-rle.csv.gz`` are accepted;
without ``dicom-images-train/`` every DICOM under INPUT is searched. The test images have no
annotations and are not read.)

RLE format (the challenge's ``mask_functions.py``): whitespace-separated pairs ``(offset,
length)`` where each offset counts from the END of the previous run (the first from pixel 0),
over the pixels of the 1024 x 1024 image in column-major (Fortran) order, i.e. flat index
``k`` is row ``k % 1024``, column ``k // 1024``. This is the stage-1 ``train-rle.csv`` format,
the only one read here: later files (e.g. the stage-2 ``stage_2_train.csv``) may encode runs
differently, so check a few masks against the images before pointing this source at them.

Data set: SIIM-ACR Pneumothorax Segmentation challenge, Society for Imaging Informatics in
Medicine and American College of Radiology, 2019
(https://www.kaggle.com/c/siim-acr-pneumothorax-segmentation), under the challenge's terms; the
images are from NIH ChestX-ray14 (Wang et al., CVPR 2017), under the NIH Clinical Center's
terms. Cite both when publishing.

Our choices:

- label ``pneumothorax`` = 1 when any row of the image has an RLE, 0 when all rows are '-1'
  (an image with both is positive, with a warning);
- ``masks.npy``: the union of all regions, decoded on the 1024 grid (an image of another size,
  e.g. a down-sampled copy, gets the mask resized to it with nearest neighbour), then padded to
  square and resized with nearest neighbour exactly like the image. ``has_mask`` = 1 for EVERY
  image: every image was annotated, so a negative's empty mask is ground truth
  (``dataset.json`` ``mask_kind``: ``segmentation``);
- malformed RLE (empty value, non-integers, an odd number of values, a negative value, a run
  past the 1024 x 1024 image) -> the image is skipped before decoding, with the reason, and
  listed in ``dataset.json`` ``skipped`` like unreadable or missing files;
- ``id`` = the challenge's ``ImageId`` (the file name; a UID the organisers generated when
  de-identifying), ``patient_id`` = the salted sha256 key of the DICOM PatientID
  (:mod:`cxrcl.data.dicom`); the split is computed after decoding over every annotated image
  (patients come from the headers), so a file that fails does not move other patients. The
  ``skipped`` list names files ``<ImageId>.dcm`` (the study/series folders are UIDs and are left
  out). Header fields as in :mod:`cxrcl.data.dicom`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cxrcl.data.dicom import dicom_salt
from cxrcl.data.prepared import LABEL_PREFIX, PreparedDataset
from cxrcl.data.sources.dicom_dir import (
    find_dicoms,
    header_frame,
    patient_keys,
    salt_note,
    write_dicoms,
)
from cxrcl.data.sources.inputs import find_first, require_dir
from cxrcl.data.splits import apply_split
from cxrcl.data.streaming import finish, keep_or_abort
from cxrcl.data.tables import order_columns
from cxrcl.errors import CxrclError

log = logging.getLogger("cxrcl.data")

GRID = (1024, 1024)  # the RLE is defined on the 1024 x 1024 challenge images
RLE_FILES = ("train-rle.csv", "train-rle.csv.gz", "siim-pneumothorax-train-rle.csv.gz",
             "siim-pneumothorax-train-rle.csv")
IMAGE_DIR = "dicom-images-train"
RLE_COLUMNS = ("ImageId", "EncodedPixels")


# ----------------------------------------------------------------------------- RLE
def rle_runs(rle: str, n_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """SIIM relative RLE -> absolute half-open runs ``(starts, ends)`` in flat column-major order.

    Raises ValueError naming the problem: empty, non-integer, odd number of values, negative
    value, or a run that ends past ``n_pixels``.
    """
    parts = str(rle).split()
    if not parts:
        raise ValueError("empty RLE")
    try:
        nums = np.array(parts, dtype=np.int64)
    except (ValueError, OverflowError):
        raise ValueError("RLE holds a value that is not an integer") from None
    if len(nums) % 2:
        raise ValueError(f"RLE has an odd number of values ({len(nums)}); it must be offset/length pairs")
    offsets, lengths = nums[0::2], nums[1::2]
    if (offsets < 0).any() or (lengths < 0).any():
        raise ValueError("RLE holds a negative offset or length")
    ends = np.cumsum(offsets + lengths)
    if ends[-1] > n_pixels:
        raise ValueError(f"RLE run ends at pixel {int(ends[-1])}, past the {n_pixels}-pixel image")
    return ends - lengths, ends


def rle_decode(rle: str, shape: tuple[int, int] = GRID) -> np.ndarray:
    """SIIM relative RLE -> uint8 0/1 mask of ``shape`` (column-major pixel order)."""
    h, w = int(shape[0]), int(shape[1])
    starts, ends = rle_runs(rle, h * w)
    edges = np.zeros(h * w + 1, dtype=np.int32)
    np.add.at(edges, starts, 1)
    np.add.at(edges, ends, -1)
    flat = np.cumsum(edges[:-1]) > 0
    return flat.reshape((h, w), order="F").astype(np.uint8)


def rle_mask(rles, shape: tuple[int, int]) -> np.ndarray:
    """Union of the regions ``rles`` (1024 grid) as a uint8 0/1 mask on an image of ``shape``."""
    mask = np.zeros(GRID, dtype=np.uint8)
    for rle in rles or ():
        mask |= rle_decode(rle, GRID)
    h, w = int(shape[0]), int(shape[1])
    if (h, w) != GRID:
        mask = np.asarray(Image.fromarray(mask).resize((w, h), resample=Image.Resampling.NEAREST))
    return mask


# ----------------------------------------------------------------------------- the label CSV
def read_siim_rle(path: str | Path) -> pd.DataFrame:
    """Parse ``train-rle.csv`` -> one row per image, in first-seen order.

    Columns: ``ImageId``, ``label_pneumothorax`` (0/1), ``n_regions`` (RLE rows), ``rles`` (list
    of RLE strings) and ``problem`` (why the image's annotation is unusable, '' when it is fine;
    every RLE is validated against the 1024 x 1024 grid without building the mask).
    """
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError, OSError, ValueError) as e:
        raise CxrclError(f"{path} cannot be parsed as CSV ({e}); re-download train-rle.csv") from None
    df.columns = [str(c).strip() for c in df.columns]  # the challenge file has ' EncodedPixels'
    missing = [c for c in RLE_COLUMNS if c not in df.columns]
    if missing:
        raise CxrclError(f"{path} lacks the column{'s' if len(missing) > 1 else ''} "
                         f"{', '.join(repr(c) for c in missing)} (it has: {', '.join(df.columns) or 'none'}); "
                         "use the challenge's train-rle.csv with columns ImageId, EncodedPixels")
    ids = df["ImageId"].str.strip()
    if (ids == "").any():
        raise CxrclError(f"{path}: {int((ids == '').sum())} rows have an empty ImageId; fix or re-download the file")
    enc = df["EncodedPixels"].str.strip()
    negative = enc == "-1"
    n_pixels = GRID[0] * GRID[1]
    problems = []
    for e, neg in zip(enc, negative, strict=True):
        if neg:
            problems.append("")
            continue
        try:
            rle_runs(e, n_pixels)
            problems.append("")
        except ValueError as err:
            problems.append(f"malformed RLE: {err}")
    rows = pd.DataFrame({"ImageId": ids, "enc": enc, "neg": negative, "problem": problems})
    g = rows.groupby("ImageId", sort=False)
    out = pd.DataFrame({"ImageId": list(g.groups)})
    pos_any = (~g["neg"].all()).to_numpy()
    mixed = int((g["neg"].any() & ~g["neg"].all()).sum())
    if mixed:
        log.warning("%s: %d images have both '-1' and RLE rows: read as positive", path, mixed)
    out[LABEL_PREFIX + "pneumothorax"] = pos_any.astype(int)
    rles = rows[~rows["neg"]].groupby("ImageId", sort=False)["enc"].agg(list)
    out["rles"] = out["ImageId"].map(rles).map(lambda v: v if isinstance(v, list) else [])
    out["n_regions"] = out["rles"].map(len).astype(int)
    first_problem = rows[rows["problem"] != ""].groupby("ImageId", sort=False)["problem"].first()
    out["problem"] = [first_problem.get(i, "") for i in out["ImageId"]]
    bad = int((out["problem"] != "").sum())
    if bad:
        log.warning("%s: %d images have a malformed RLE and will be skipped", path, bad)
    return out


# ----------------------------------------------------------------------------- the source
def prepare_siim(input: str | Path, out: str | Path, size: int = 128, split: str = "patient:0.7,0.1,0.2",
                 seed: int = 0, workers: int = 1, progress: bool = True) -> PreparedDataset:
    """Prepare the SIIM-ACR Pneumothorax training set (see the module docstring)."""
    root = Path(input)
    require_dir(root, "the siim source needs the unpacked challenge folder with train-rle.csv and "
                "dicom-images-train/")
    rle_path = find_first(root, RLE_FILES)
    if rle_path is None:
        raise CxrclError(f"{root} has no train-rle.csv: point INPUT at the unpacked SIIM-ACR Pneumothorax "
                         "challenge folder")
    image_root = root / IMAGE_DIR if (root / IMAGE_DIR).is_dir() else root
    files: dict[str, Path] = {}
    dup = 0
    for p in find_dicoms(image_root):
        if p.stem in files:
            dup += 1
            continue
        files[p.stem] = p
    if dup:
        log.warning("%s: %d DICOM files repeat the name of an earlier one; the first is used", image_root, dup)
    table = read_siim_rle(rle_path)
    ids = table["ImageId"].tolist()
    if not any(i in files for i in ids):
        raise CxrclError(f"none of the {len(ids)} images of {rle_path.name} is under {image_root} as "
                         "<ImageId>.dcm: unpack dicom-images-train/ into the folder")
    extra_files = len(set(files) - set(ids))
    if extra_files:
        log.info("%s: %d DICOM files have no annotation (e.g. test images) and are not read", image_root, extra_files)

    pre_skipped = {i: "file not found" for i, x in enumerate(ids) if x not in files}
    pre_skipped.update({i: p for i, p in enumerate(table["problem"]) if p})
    paths = [files.get(x, image_root / f"{x}.dcm") for x in ids]
    salt = dicom_salt()
    writer, kept, skipped, headers = write_dicoms(Path(out), paths, size, workers, progress,
                                                  names=[f"{x}.dcm" for x in ids], salt=salt,
                                                  mask_fn=rle_mask, mask_args=table["rles"].tolist(),
                                                  pre_skipped=pre_skipped, root=root)
    with keep_or_abort(writer):
        meta = pd.DataFrame({"id": ids})
        meta["patient_id"], _ = patient_keys(headers, ids)
        meta[LABEL_PREFIX + "pneumothorax"] = table[LABEL_PREFIX + "pneumothorax"].to_numpy()
        meta["n_regions"] = table["n_regions"].to_numpy()
        meta["has_mask"] = 1
        meta = pd.concat([meta, header_frame(headers, meta.index)], axis=1)
        method = apply_split(meta, split, seed, str(rle_path))
        meta = order_columns(meta.iloc[kept].reset_index(drop=True))
    missing_kept = sum(not (headers[i] or {}).get("patient_key") for i in kept)
    if missing_kept:
        log.warning("%s: %d images have no PatientID: each is its own patient", root, missing_kept)
    extra = {"input": str(root.resolve()), "labels_file": rle_path.name, "mask_kind": "segmentation",
             "rle_grid": list(GRID), "patient_ids": "sha256(salt + DICOM PatientID)[:16]",
             "salt": salt_note(salt), "n_positive": int(meta[LABEL_PREFIX + "pneumothorax"].sum()),
             "citation": "SIIM-ACR Pneumothorax Segmentation (Kaggle, 2019); "
                         "images: NIH ChestX-ray14 (Wang et al., CVPR 2017)",
             "skipped": skipped, "n_skipped": len(skipped)}
    return finish(writer, meta, source="siim", label_names=["pneumothorax"], text_columns=[],
                  split_seed=seed if method == "patient" else None, split_method=method, extra=extra)
