"""``dicom`` source: a directory tree of DICOM radiographs, ``INPUT/**/*.dcm`` (+ ``labels.csv``).

Layout: every ``.dcm``/``.dicom``/``.dic`` file under INPUT (recursive; hidden folders and
``DICOMDIR`` ignored), plus files without an extension that carry the ``DICM`` magic. Optional
``INPUT/labels.csv`` with a column ``file`` (path relative to INPUT, with or without the
extension, or a bare file name when it is unique), an optional ``split`` column (train/val/test,
kept as-is) and label columns: values 1/0/empty, -1 read as empty (unknown); names go through
:func:`cxrcl.data.labels.canonical` (a ``label_`` prefix is dropped), e.g. ``Pneumonia`` ->
``pneumonia``. Files not listed get empty labels. No licence applies to the layout itself: the
data's own licence travels with it.

Our choices: each file is decoded by :func:`cxrcl.data.dicom.read_dicom` (modality LUT, VOI,
MONOCHROME1 inversion, first frame only), padded to square and resized like every other source.
Image id = the path relative to INPUT without extension; patient id = the salted sha256 key of
the DICOM PatientID (never the PatientID; files without one are their own patient). Only the
safe header fields reach ``meta.csv`` (``view``, ``sex``, ``age``, ``modality``,
``photometric``, ``bits_stored``, ``height``, ``width``, ``frames``, ``voi``); file names are
kept (``id``, ``file``), so do not name files after patients. Decoding runs in ``workers``
processes and streams into the writer; the split is computed after decoding over every listed
file (patients come from the headers), so a file whose pixels fail to decode does not move other
patients. Broken files are skipped, logged (first 20) and listed in ``dataset.json`` under
``skipped``.

This module also holds the DICOM streaming path used by the ``rsna`` and ``siim`` sources
(:func:`write_dicoms`): the DICOM counterpart of
:func:`cxrcl.data.sources.common.write_decoded`, with per-file header fields and masks.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cxrcl.data.dicom import DEFAULT_SALT, HEADER_FIELDS, dicom_salt, read_dicom, read_header
from cxrcl.data.labels import canonical
from cxrcl.data.prepared import LABEL_PREFIX, PreparedDataset, PreparedWriter
from cxrcl.data.sources.common import (
    MAX_WARNING_LINES,
    apply_split,
    check_label_values,
    finish,
    log,
    order_columns,
    pad_resize,
)
from cxrcl.errors import CxrclError

DICOM_EXTENSIONS = (".dcm", ".dicom", ".dic")
MaskFn = Callable[[object, tuple[int, int]], np.ndarray]
#: meta.csv columns taken from the header (patient_key becomes patient_id, never a column)
META_HEADER_COLUMNS = tuple(f for f in HEADER_FIELDS if f != "patient_key")


# ----------------------------------------------------------------------------- discovery
def _is_dicom_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def find_dicoms(root: Path) -> list[Path]:
    """DICOM files under ``root``, sorted (see the module docstring for the rule)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith(".") or name.upper() == "DICOMDIR":
                continue
            p = Path(dirpath) / name
            suffix = p.suffix.lower()
            if suffix in DICOM_EXTENSIONS or (suffix == "" and _is_dicom_magic(p)):
                found.append(p)
    return sorted(found)


# ----------------------------------------------------------------------------- streaming decode
def _reason(e: BaseException, path: str) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    msg = msg.replace(path, Path(path).name)  # the skipped list already names the file
    return f"{type(e).__name__}: {msg}"[:200].rstrip(": ")


def _dicom_job(job: tuple) -> tuple[int, np.ndarray | None, np.ndarray | None, dict | None, str | None]:
    """Worker: decode one DICOM (+ its mask) -> (index, image, mask, header, reason)."""
    i, path, size, salt, mask_fn, mask_arg = job
    header = None
    try:
        image, header = read_dicom(path, salt)
        mask = None
        if mask_fn is not None:
            mask = pad_resize(np.asarray(mask_fn(mask_arg, image.shape), dtype=np.uint8), size, nearest=True)
        return i, pad_resize(image, size), mask, header, None
    except FileNotFoundError:
        return i, None, None, None, "file not found"
    except Exception as e:  # noqa: BLE001 - any decoder failure means: skip this file
        if header is None:
            try:
                header = read_header(path, salt)  # the patient is still known for the split
            except Exception:  # noqa: BLE001
                header = None
        return i, None, None, header, _reason(e, path)


def stream_dicoms(paths: Sequence[str | os.PathLike], size: int, workers: int = 1, progress: bool = True,
                  salt: str | None = None, mask_fn: MaskFn | None = None,
                  mask_args: Sequence | None = None, desc: str = "decoding DICOM") -> Iterator[tuple]:
    """Yield ``(index, image, mask, header, reason)`` in input order, decoding in a Pool.

    ``mask_fn(mask_args[i], (H, W))`` (a module-level function, so that it pickles) returns the
    uint8 0/1 mask of file ``i`` on the image's own grid; it is padded and resized like the image.
    """
    from tqdm.auto import tqdm

    salt = dicom_salt() if salt is None else salt
    jobs = [(i, str(p), size, salt, mask_fn, None if mask_args is None else mask_args[i])
            for i, p in enumerate(paths)]
    bar = tqdm(total=len(jobs), desc=desc, unit="img", disable=not progress, leave=False)
    try:
        if workers <= 1 or len(jobs) < 2:
            for job in jobs:
                yield _dicom_job(job)
                bar.update(1)
        else:
            chunk = max(1, min(16, len(jobs) // (workers * 8)))
            with multiprocessing.Pool(workers) as pool:
                for result in pool.imap(_dicom_job, jobs, chunksize=chunk):
                    yield result
                    bar.update(1)
    finally:
        bar.close()


def write_dicoms(out: Path, paths: Sequence[str | os.PathLike], size: int, workers: int, progress: bool,
                 names: Sequence[str] | None = None, salt: str | None = None,
                 mask_fn: MaskFn | None = None, mask_args: Sequence | None = None,
                 pre_skipped: dict[int, str] | None = None,
                 ) -> tuple[PreparedWriter, list[int], list[dict], list[dict | None]]:
    """Decode DICOM ``paths`` straight into a new :class:`PreparedWriter` at ``out``.

    ``names`` are the file names shown in the ``skipped`` list (default: the paths);
    ``pre_skipped`` maps indices to a reason for files known to be unusable before decoding
    (e.g. a malformed mask annotation): they are not read and are listed like the others.
    Returns the writer (not finished; with masks iff ``mask_fn``), the decoded indices in order,
    the ``skipped`` list ``[{file, reason}]`` and the header of every path (None when the header
    could not be read). If some files fail, the written rows are compacted into a writer of the
    right length. All failing -> :class:`CxrclError`.
    """
    out = Path(out)
    n = len(paths)
    if n == 0:
        raise CxrclError(f"no DICOM files to prepare for {out}")
    names = [str(p) for p in paths] if names is None else list(names)
    pre_skipped = dict(pre_skipped or {})
    todo = [i for i in range(n) if i not in pre_skipped]
    writer = PreparedWriter(out, n=n, size=size, with_masks=mask_fn is not None)
    kept: list[int] = []
    failed: dict[int, str] = dict(pre_skipped)
    headers: list[dict | None] = [None] * n
    try:
        stream = stream_dicoms([paths[i] for i in todo], size, workers, progress, salt, mask_fn,
                               None if mask_args is None else [mask_args[i] for i in todo])
        for j, img, mask, header, reason in stream:
            i = todo[j]
            headers[i] = header
            if img is None:
                failed[i] = reason or "unreadable"
                continue
            writer.put(len(kept), img, mask)
            kept.append(i)
    except BaseException:
        writer.abort()
        raise
    skipped = [{"file": names[i], "reason": failed[i]} for i in sorted(failed)]
    for s in skipped[:MAX_WARNING_LINES]:
        log.warning("skipped %s: %s", s["file"], s["reason"])
    if len(skipped) > MAX_WARNING_LINES:
        log.warning("skipped %d more files (all listed in dataset.json 'skipped')",
                    len(skipped) - MAX_WARNING_LINES)
    if not kept:
        writer.abort()
        raise CxrclError(f"none of the {n} DICOM files for {out} could be used (e.g. {skipped[0]['file']}: "
                         f"{skipped[0]['reason']}); check the input paths and files")
    if skipped:
        log.warning("%d of %d files skipped (unreadable, missing or with a malformed annotation)",
                    len(skipped), n)
        writer = _compact(writer, out, len(kept), size)
    return writer, kept, skipped, headers


def _compact(writer: PreparedWriter, out: Path, n: int, size: int) -> PreparedWriter:
    """Copy the first ``n`` rows (images and masks) of ``writer`` into a new writer of length ``n``."""
    sides = {}
    writer.images.flush()
    writer.images = None  # close the mappings before moving the files
    with_masks = writer.masks is not None
    if with_masks:
        writer.masks.flush()
        writer.masks = None
    for name in ("images", "masks") if with_masks else ("images",):
        sides[name] = out.with_name(f".{out.name}.decoded-{name}.npy")
        os.replace(writer.tmp / f"{name}.npy", sides[name])
    writer.abort()
    try:
        imgs = np.load(sides["images"], mmap_mode="r")
        masks = np.load(sides["masks"], mmap_mode="r") if with_masks else None
        new = PreparedWriter(out, n=n, size=size, with_masks=with_masks)
        for s in range(0, n, 1024):
            e = min(n, s + 1024)
            new.put_many(s, np.asarray(imgs[s:e]), None if masks is None else np.asarray(masks[s:e]))
        del imgs, masks
    finally:
        for p in sides.values():
            p.unlink(missing_ok=True)
    return new


def header_frame(headers: Sequence[dict | None], index: pd.Index | None = None) -> pd.DataFrame:
    """The meta.csv header columns for every row (empty where the header was unreadable)."""
    rows = [{k: (h or {}).get(k) for k in META_HEADER_COLUMNS} for h in headers]
    df = pd.DataFrame(rows, columns=list(META_HEADER_COLUMNS), index=index)
    for col in ("bits_stored", "height", "width", "frames"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
    df["age"] = pd.to_numeric(df["age"], errors="coerce")
    return df


def patient_keys(headers: Sequence[dict | None], fallback: Sequence[str]) -> tuple[pd.Series, int]:
    """Patient key per row from the headers; rows without one get ``fallback`` (their own id)."""
    keys = [(h or {}).get("patient_key") or "" for h in headers]
    missing = sum(not k for k in keys)
    return pd.Series([k or f"image:{f}" for k, f in zip(keys, fallback, strict=True)]), missing


def salt_note(salt: str) -> str:
    """What dataset.json records about the salt (never the salt itself)."""
    return "default" if salt == DEFAULT_SALT else "CXRCL_DICOM_SALT"


# ----------------------------------------------------------------------------- labels.csv
def read_labels_csv(path: Path, rel_files: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    """``labels.csv`` -> a frame aligned with ``rel_files`` (label_* columns, optional split)."""
    try:
        table = pd.read_csv(path, dtype={"file": str, "split": str})
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise CxrclError(f"{path} cannot be parsed as CSV ({e}); fix it or remove it") from None
    if "file" not in table.columns:
        raise CxrclError(f"{path} lacks the column 'file' (it has: {', '.join(map(str, table.columns)) or 'none'}); "
                         "add 'file' with each DICOM's path relative to the folder")
    label_cols = [c for c in table.columns if c not in ("file", "split")]
    names = [canonical(str(c)[len(LABEL_PREFIX):] if str(c).startswith(LABEL_PREFIX) else str(c))
             for c in label_cols]
    if len(set(names)) != len(names):
        raise CxrclError(f"{path}: label columns {label_cols} give duplicate names {names}; rename them")
    table = table.rename(columns={c: LABEL_PREFIX + n for c, n in zip(label_cols, names, strict=True)})
    table["file"] = table["file"].fillna("").astype(str).str.strip().map(lambda f: Path(f).as_posix())
    if table["file"].eq("").any() or table["file"].eq(".").any():
        raise CxrclError(f"{path}: {int(table['file'].isin(['', '.']).sum())} rows have an empty 'file'; fill them in")
    if table["file"].duplicated().any():
        dup = table["file"][table["file"].duplicated()].iloc[0]
        raise CxrclError(f"{path} lists {dup!r} more than once; keep one row per file")
    check_label_values(table, names, str(path))

    lookup: dict[str, int] = {}
    by_name: dict[str, list[int]] = {}
    for j, f in enumerate(table["file"]):
        lookup[f] = j
        by_name.setdefault(Path(f).name, []).append(j)
    rows: list[int | None] = []
    for rel in rel_files:
        stem_rel = rel.rsplit(".", 1)[0] if "." in Path(rel).name else rel
        j = lookup.get(rel, lookup.get(stem_rel))
        if j is None:
            for key in (Path(rel).name, Path(stem_rel).name):
                cand = by_name.get(key, [])
                if len(cand) == 1:
                    j = cand[0]
                    break
        rows.append(j)
    used = {j for j in rows if j is not None}
    if len(used) < len(table):
        log.warning("%s: %d rows name no DICOM file under the folder; they are ignored",
                    path, len(table) - len(used))
    if any(j is None for j in rows):
        log.warning("%s: %d DICOM files are not listed; their labels are empty",
                    path, sum(j is None for j in rows))
    cols = [LABEL_PREFIX + n for n in names] + (["split"] if "split" in table.columns else [])
    picked = table[cols].reindex([j if j is not None else -1 for j in rows]).reset_index(drop=True)
    for n in names:
        picked[LABEL_PREFIX + n] = picked[LABEL_PREFIX + n].astype("Int8")
    return picked, names


# ----------------------------------------------------------------------------- the source
def prepare_dicom(input: str | Path, out: str | Path, size: int = 128, split: str = "patient:0.7,0.1,0.2",
                  seed: int = 0, workers: int = 1, progress: bool = True) -> PreparedDataset:
    """Prepare a tree of DICOM files (see the module docstring)."""
    root = Path(input)
    if not root.is_dir():
        raise CxrclError(f"{root} is not a directory: the dicom source needs a folder of .dcm files")
    files = find_dicoms(root)
    if not files:
        raise CxrclError(f"{root} has no DICOM files (.dcm, .dicom, .dic or files with the DICM magic); "
                         "check the path")
    rel = pd.Series([p.relative_to(root).as_posix() for p in files])
    ids = rel.map(lambda r: r.rsplit(".", 1)[0] if "." in Path(r).name else r)
    ids = ids.where(~ids.duplicated(keep=False), rel)  # a.dcm + a.dicom: keep the extension
    meta = pd.DataFrame({"id": ids, "file": rel})
    label_names: list[str] = []
    labels_path = root / "labels.csv"
    if labels_path.exists():
        labels, label_names = read_labels_csv(labels_path, rel.tolist())
        meta = pd.concat([meta, labels], axis=1)

    salt = dicom_salt()
    writer, kept, skipped, headers = write_dicoms(Path(out), files, size, workers, progress,
                                                  names=rel.tolist(), salt=salt)
    try:
        meta["patient_id"], _ = patient_keys(headers, meta["id"])
        missing = sum(not (headers[i] or {}).get("patient_key") for i in kept)
        if missing:
            log.warning("%s: %d files have no PatientID: each is its own patient", root, missing)
        meta = pd.concat([meta, header_frame(headers, meta.index)], axis=1)
        method = apply_split(meta, split, seed, str(labels_path if "split" in meta.columns else root))
    except BaseException:
        writer.abort()
        raise
    meta = order_columns(meta.iloc[kept].reset_index(drop=True))
    extra = {"input": str(root.resolve()), "labels_csv": labels_path.exists(),
             "patient_ids": "sha256(salt + DICOM PatientID)[:16]",
             "salt": salt_note(salt),
             "n_without_patient_id": missing, "skipped": skipped, "n_skipped": len(skipped)}
    return finish(writer, meta, source="dicom", label_names=label_names, text_columns=[],
                  split_seed=seed if method == "patient" else None, split_method=method, extra=extra)
