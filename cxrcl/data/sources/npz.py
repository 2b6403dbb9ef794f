"""``npz`` source: the layout of ``../shared/data/*`` (e.g. ``covid_chestxray``).

INPUT is a directory holding:

- ``images_*.npz`` with key ``images``: uint8 [N, H, W] grey. When several exist (e.g. 128 and
  224 px) we take the one whose size is the smallest >= ``--size``, else the largest, and pad and
  resize (Lanczos) only when its size differs.
- ``metadata.csv``: one row per image, in the npz row order.
- optional ``lung_masks_*.npz`` (or ``masks_*.npz``), keys ``masks`` uint8 [M, H, W] and ``index``
  [M] (the row each mask belongs to), picked by the same size rule and resized with nearest
  neighbour -> ``masks.npy`` plus a ``has_mask`` column.

Our choices for metadata.csv: ``label_*`` columns are the labels (1/0/empty; -1 read as empty);
``id`` is the ``id`` column, else ``index``, else the row number; ``patient_id`` groups the split
(if absent, every row is its own patient, with a warning); a ``split`` column
(train/val/test) is used as-is, otherwise the patient-level ``--split``/``--seed`` split is
computed. Free-text columns (string, > 20 characters and > 4 words on average, e.g.
``clinical_notes``, ``other_notes``) are text columns, and the one with most non-empty rows is
copied to ``report`` when there is no ``report`` column. All other columns (sex, age, view,
finding, ...) are kept in meta.csv.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from cxrcl.data.decoding import resize_stack
from cxrcl.data.limits import TooLarge, check_pixels
from cxrcl.data.npz_files import iter_npz_rows, npz_header, npz_keys
from cxrcl.data.prepared import LABEL_PREFIX, PreparedDataset
from cxrcl.data.sources.inputs import require_dir
from cxrcl.data.splits import apply_split, unique_ids
from cxrcl.data.streaming import finish, resize_chunks, write_chunks
from cxrcl.data.tables import check_label_values, find_text_columns, order_columns
from cxrcl.errors import CxrclError

log = logging.getLogger("cxrcl.data")

CHUNK = 512


def _check_images_file(path: Path) -> tuple[int, int]:
    """Validate an images_*.npz; returns (N, side)."""
    keys = npz_keys(path)
    if "images" not in keys:
        raise CxrclError(f"{path} has no array 'images' (it has: {', '.join(keys) or 'nothing'}); "
                         "save the images under the key 'images' as uint8 [N, H, W]")
    shape, dtype = npz_header(path, "images")
    if dtype != np.uint8 or len(shape) != 3:
        raise CxrclError(f"{path}: 'images' is {dtype} with shape {list(shape)}; expected uint8 [N, H, W] "
                         "grey images (convert to 8-bit grey and save again)")
    try:
        check_pixels(shape[2], shape[1])  # from the header: before any row is read
    except TooLarge as e:
        raise CxrclError(f"{path}: 'images' {e}") from None
    return int(shape[0]), int(max(shape[1], shape[2]))


def pick_by_size(candidates: dict[Path, int], size: int) -> Path:
    """The file whose size is the smallest >= ``size``, else the largest."""
    big_enough = [p for p, s in candidates.items() if s >= size]
    if big_enough:
        return min(big_enough, key=lambda p: (candidates[p], p.name))
    return max(candidates, key=lambda p: (candidates[p], p.name))


def _load_masks(root: Path, size: int, n_images: int) -> tuple[Path | None, np.ndarray | None, np.ndarray | None]:
    files = sorted(set(root.glob("lung_masks_*.npz")) | set(root.glob("masks_*.npz")))
    if not files:
        return None, None, None
    sizes = {}
    for f in files:
        keys = npz_keys(f)
        if "masks" not in keys or "index" not in keys:
            raise CxrclError(f"{f} needs the arrays 'masks' [M, H, W] and 'index' [M] (it has: "
                             f"{', '.join(keys)}); fix the file or move it out of {root}")
        shape, _ = npz_header(f, "masks")
        if len(shape) != 3:
            raise CxrclError(f"{f}: 'masks' has shape {list(shape)}; expected [M, H, W]")
        sizes[f] = int(max(shape[1], shape[2]))
    chosen = pick_by_size(sizes, size)
    with np.load(chosen) as z:
        masks, index = z["masks"], np.asarray(z["index"]).astype(np.int64).ravel()
    if len(index) != len(masks):
        raise CxrclError(f"{chosen}: 'index' has {len(index)} entries but 'masks' has {len(masks)}; "
                         "they must match one to one")
    if len(index) and (index.min() < 0 or index.max() >= n_images):
        raise CxrclError(f"{chosen}: 'index' holds row numbers outside 0..{n_images - 1}; "
                         "it must give the image row of each mask")
    if len(np.unique(index)) != len(index):
        raise CxrclError(f"{chosen}: 'index' names the same row twice; keep one mask per image")
    return chosen, (masks > 0).astype(np.uint8), index


def prepare_npz(input: str | Path, out: str | Path, size: int = 128, split: str = "patient:0.7,0.1,0.2",
                seed: int = 0, workers: int = 1, progress: bool = True) -> PreparedDataset:
    """Prepare an ``images_*.npz`` + ``metadata.csv`` directory (see the module docstring)."""
    root = Path(input)
    if not root.exists():
        raise CxrclError(f"{root} does not exist: pass the directory holding images_*.npz and metadata.csv")
    require_dir(root, "pass the directory holding images_*.npz and metadata.csv")
    files = sorted(root.glob("images_*.npz"))
    if not files:
        raise CxrclError(f"{root} holds no images_*.npz file: the npz source needs images_<size>.npz "
                         "(key 'images', uint8 [N, H, W]) and metadata.csv")
    checked = {f: _check_images_file(f) for f in files}
    chosen = pick_by_size({f: side for f, (_, side) in checked.items()}, size)
    n = checked[chosen][0]

    meta_path = root / "metadata.csv"
    if not meta_path.exists():
        raise CxrclError(f"{meta_path} is missing: the npz source needs metadata.csv with one row per "
                         f"image of {chosen.name}, in the same order")
    try:
        meta = pd.read_csv(meta_path, dtype={"id": str, "patient_id": str, "split": str},
                           low_memory=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise CxrclError(f"{meta_path} cannot be parsed as CSV ({e}); fix the file") from None
    if len(meta) != n:
        raise CxrclError(f"{meta_path.name} has {len(meta)} rows but {chosen.name} has {n} images "
                         f"(in {root}); they must match row for row")

    # ids, patients, split
    if "id" in meta.columns:
        meta["id"] = meta["id"].astype(str)
    elif "index" in meta.columns:
        meta.insert(0, "id", meta["index"].astype(str))
    else:
        meta.insert(0, "id", [str(i) for i in range(n)])
    patient_ids = "source"
    if "patient_id" not in meta.columns or meta["patient_id"].isna().all():
        log.warning("%s has no patient_id column: every image is treated as its own patient", meta_path)
        meta["patient_id"] = meta["id"]
        patient_ids = "per_image"
    else:
        missing = meta["patient_id"].isna()
        if missing.any():
            log.warning("%s: %d rows without patient_id are treated as their own patients",
                        meta_path, int(missing.sum()))
            meta.loc[missing, "patient_id"] = meta.loc[missing, "id"]
        meta["patient_id"] = meta["patient_id"].astype(str)
    groups = unique_ids(meta, str(meta_path))
    method = apply_split(meta, split, seed, str(meta_path), groups)

    label_names = [c[len(LABEL_PREFIX):] for c in meta.columns if str(c).startswith(LABEL_PREFIX)]
    check_label_values(meta, label_names, str(meta_path))
    if not label_names:
        log.warning("%s has no label_* columns: the prepared set has no labels", meta_path)
    text_cols = find_text_columns(meta)

    mask_file, masks, mask_index = _load_masks(root, size, n)
    mask_row = None
    if masks is not None:
        mask_row = np.full(n, -1, dtype=np.int64)
        mask_row[mask_index] = np.arange(len(mask_index))
        meta["has_mask"] = (mask_row >= 0).astype(int)
        masks = resize_stack(masks, size, nearest=True) if len(masks) else np.zeros((0, size, size), np.uint8)

    def chunk_masks(start: int, k: int) -> np.ndarray:
        rows = mask_row[start:start + k]
        block = np.zeros((k, size, size), dtype=np.uint8)
        block[rows >= 0] = masks[rows[rows >= 0]]
        return block

    writer = write_chunks(Path(out), n, size, resize_chunks(iter_npz_rows(chosen, "images", CHUNK), size, workers),
                          progress, f"npz {chosen.name}", masks=None if masks is None else chunk_masks)
    meta = order_columns(meta, text_cols)
    extra = {"input": str(root.resolve()), "image_file": chosen.name, "patient_ids": patient_ids}
    if mask_file is not None:
        extra["mask_file"] = mask_file.name
        extra["n_masks"] = int(len(mask_index))
    return finish(writer, meta, source="npz", label_names=label_names, text_columns=text_cols,
                  split_seed=seed if method == "patient" else None, split_method=method, extra=extra)
