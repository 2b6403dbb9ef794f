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
``skipped``. Preparation is resumable like every file-based source: a killed run keeps
``.OUT.partial`` (the decoded rows, and the safe header fields of those rows in
``extras.jsonl``) and the same command decodes only the remaining files.

This module also holds the DICOM decoder used by the ``rsna`` and ``siim`` sources
(:class:`DicomDecoder`, :func:`write_dicoms`): it plugs DICOM decoding, header fields and masks
into :func:`cxrcl.data.streaming.write_decoded`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cxrcl.data.decoding import Decoded, DecodeFailure, failure_reason, pad_resize
from cxrcl.data.dicom import DEFAULT_SALT, HEADER_FIELDS, dicom_salt, read_dicom, read_header
from cxrcl.data.labels import canonical
from cxrcl.data.prepared import LABEL_PREFIX, PreparedDataset
from cxrcl.data.sources.inputs import require_dir
from cxrcl.data.splits import apply_split
from cxrcl.data.streaming import finish, keep_or_abort, write_decoded
from cxrcl.data.tables import check_label_values, order_columns
from cxrcl.data.writer import PreparedWriter
from cxrcl.errors import CxrclError

log = logging.getLogger("cxrcl.data")

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


# ----------------------------------------------------------------------------- decoding
@dataclass(frozen=True)
class DicomDecoder:
    """``decode`` for :func:`~cxrcl.data.streaming.write_decoded`: one DICOM -> a
    :class:`~cxrcl.data.decoding.Decoded` with the image, the mask (when ``mask_fn``) and
    the safe header fields as ``extra``.

    ``mask_fn(arg, (H, W))`` (module level, so that it pickles) returns the uint8 0/1 mask of a
    file on the image's own grid, from the file's ``args`` entry; it is padded and resized like
    the image (nearest neighbour). A file whose pixels or mask fail raises
    :class:`~cxrcl.data.decoding.DecodeFailure` with the header when it can still be
    read, so that its patient is known for the split.
    """

    salt: str
    mask_fn: MaskFn | None = None

    def __call__(self, path: str, size: int, arg=None) -> Decoded:
        header = None
        try:
            image, header = read_dicom(path, self.salt)
            mask = None
            if self.mask_fn is not None:
                mask = pad_resize(np.asarray(self.mask_fn(arg, image.shape), dtype=np.uint8), size, nearest=True)
            return Decoded(pad_resize(image, size), mask, header)
        except FileNotFoundError:
            raise
        except Exception as e:  # noqa: BLE001 - any decoder failure means: skip this file
            if header is None:
                try:
                    header = read_header(path, self.salt)  # the patient is still known for the split
                except Exception:  # noqa: BLE001
                    header = None
            raise DecodeFailure(failure_reason(e, path), header) from None


def salt_id(salt: str) -> str:
    """Which salt a resumable job used, for its fingerprint (a hash: never the salt itself)."""
    return hashlib.sha256(f"cxrcl-dicom-salt:{salt}".encode()).hexdigest()[:16]


def write_dicoms(out: Path, paths: Sequence[str | os.PathLike], size: int, workers: int, progress: bool,
                 names: Sequence[str] | None = None, salt: str | None = None,
                 mask_fn: MaskFn | None = None, mask_args: Sequence | None = None,
                 pre_skipped: Mapping[int, str] | None = None, root: Path | None = None,
                 ) -> tuple[PreparedWriter, list[int], list[dict], list[dict | None]]:
    """:func:`~cxrcl.data.streaming.write_decoded` with a :class:`DicomDecoder`: resumable,
    bounded memory, masks iff ``mask_fn`` (from ``mask_args[i]``).

    ``names``, ``pre_skipped``, ``root`` (INPUT: paths outside it are skipped): as in
    ``write_decoded``. Returns the writer (not finished), the
    decoded indices in order, the ``skipped`` list ``[{file, reason}]`` and the header of every
    path (None when it could not be read), those of a resumed run's earlier rows included.
    """
    salt = dicom_salt() if salt is None else salt
    fingerprint = {"salt": salt_id(salt), "mask_fn": None if mask_fn is None else
                   f"{mask_fn.__module__}.{mask_fn.__qualname__}"}
    writer, kept, skipped = write_decoded(
        Path(out), paths, size, workers, progress, decode=DicomDecoder(salt, mask_fn),
        fingerprint=fingerprint, with_masks=mask_fn is not None,
        args=None if mask_fn is None else mask_args, pre_skipped=pre_skipped,
        names=names, what="DICOM", root=root)
    headers = [writer.extras.get(i) for i in range(len(paths))]
    return writer, kept, skipped, headers


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
    require_dir(root, "the dicom source needs a folder of .dcm files")
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
    has_labels = labels_path.exists()
    if has_labels:
        labels, label_names = read_labels_csv(labels_path, rel.tolist())
        meta = pd.concat([meta, labels], axis=1)

    salt = dicom_salt()
    writer, kept, skipped, headers = write_dicoms(Path(out), files, size, workers, progress,
                                                  names=rel.tolist(), salt=salt, root=root)
    with keep_or_abort(writer):
        meta["patient_id"], _ = patient_keys(headers, meta["id"])
        missing = sum(not (headers[i] or {}).get("patient_key") for i in kept)
        if missing:
            log.warning("%s: %d files have no PatientID: each is its own patient", root, missing)
        meta = pd.concat([meta, header_frame(headers, meta.index)], axis=1)
        method = apply_split(meta, split, seed, str(labels_path if "split" in meta.columns else root))
    meta = order_columns(meta.iloc[kept].reset_index(drop=True))
    extra = {"input": str(root.resolve()), "labels_csv": has_labels,
             "patient_ids": "sha256(salt + DICOM PatientID)[:16]",
             "salt": salt_note(salt),
             "n_without_patient_id": missing, "skipped": skipped, "n_skipped": len(skipped)}
    return finish(writer, meta, source="dicom", label_names=label_names, text_columns=[],
                  split_seed=seed if method == "patient" else None, split_method=method, extra=extra)
