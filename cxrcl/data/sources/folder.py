"""``folder`` source: one sub-directory per class, ``INPUT/<class>/**/*.png|jpg|jpeg``.

Our choices: every class folder becomes one 0/1 label column ``label_<class>`` (names lower-cased,
non-alphanumerics -> ``_``); a class named ``normal`` or ``no_finding`` is kept as a label like any
other. When the top-level folders are all split names (``train``/``val``/``test``, also
``valid``/``validation``/``validate``/``dev``/``training``/``testing``) as in the Kermany layout
``chest_xray/train/NORMAL``, the classes are read one level down and that split is kept as-is
(split method ``source``). Image ids are the path relative to INPUT without extension. Patient
id = file stem, unless ``INPUT/patients.csv`` with columns ``file`` (path relative to INPUT, or a
bare file name) and ``patient_id`` maps files to patients. Images are decoded with PIL, converted
to 8-bit grey, padded to square and resized (see :mod:`cxrcl.data.decoding`). Unreadable
files are skipped with a warning and listed in ``dataset.json`` under ``skipped``; if none can be
read the preparation fails.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from cxrcl.data.prepared import LABEL_PREFIX, PreparedDataset
from cxrcl.data.sources.inputs import IMAGE_EXTENSIONS, require_dir
from cxrcl.data.splits import SPLIT_ALIASES, apply_split
from cxrcl.data.streaming import finish, write_decoded
from cxrcl.data.tables import clean_name, order_columns
from cxrcl.errors import CxrclError

log = logging.getLogger("cxrcl.data")


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def scan(root: Path) -> pd.DataFrame:
    """Rows ``path, class, split`` (split None without split folders), sorted, stable."""
    top = _class_dirs(root)
    split_layout = bool(top) and all(d.name.lower() in SPLIT_ALIASES for d in top)
    rows = []
    for split_dir in top if split_layout else [root]:
        split = SPLIT_ALIASES[split_dir.name.lower()] if split_layout else None
        for cdir in _class_dirs(split_dir):
            for p in _images_under(cdir):
                rows.append((p, cdir.name, split))
    return pd.DataFrame(rows, columns=["path", "class", "split"])


def _patients(root: Path, rel: pd.Series) -> tuple[pd.Series, str]:
    stems = rel.map(lambda r: Path(r).stem)
    pfile = root / "patients.csv"
    if not pfile.exists():
        return stems, "file_stem"
    try:
        table = pd.read_csv(pfile, dtype=str)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise CxrclError(f"{pfile} cannot be parsed as CSV ({e}); fix it or remove it") from None
    if not {"file", "patient_id"} <= set(table.columns):
        raise CxrclError(f"{pfile} needs the columns 'file' and 'patient_id' (it has: "
                         f"{', '.join(table.columns)}); fix it or remove it")
    table = table.dropna(subset=["file", "patient_id"])
    by_rel = dict(zip(table["file"].map(lambda f: Path(f).as_posix()), table["patient_id"], strict=True))
    by_name = dict(zip(table["file"].map(lambda f: Path(f).name), table["patient_id"], strict=True))
    pids = [by_rel.get(r, by_name.get(Path(r).name)) for r in rel]
    missing = sum(p is None for p in pids)
    if missing:
        log.warning("%s: %d files are not listed; their file stem is used as patient id", pfile, missing)
    return pd.Series([p if p is not None else s for p, s in zip(pids, stems, strict=True)],
                     index=rel.index), "patients.csv"


def prepare_folder(input: str | Path, out: str | Path, size: int = 128, split: str = "patient:0.7,0.1,0.2",
                   seed: int = 0, workers: int = 1, progress: bool = True) -> PreparedDataset:
    """Prepare a class-per-folder image tree (see the module docstring)."""
    root = Path(input)
    require_dir(root, "the folder source needs INPUT/<class>/*.png|jpg|jpeg")
    found = scan(root)
    if found.empty:
        raise CxrclError(f"{root} has no class folders with .png/.jpg/.jpeg images: expected "
                         "INPUT/<class>/<image>, e.g. INPUT/pneumonia/0001.png")
    classes = sorted(found["class"].unique(), key=lambda c: clean_name(c))
    names = [clean_name(c) for c in classes]
    if len(set(names)) != len(names):
        raise CxrclError(f"{root}: class folders {classes} give duplicate label names {names}; rename them")
    rel = found["path"].map(lambda p: p.relative_to(root).as_posix())
    ids = rel.map(lambda r: r.rsplit(".", 1)[0])
    ids = ids.where(~ids.duplicated(keep=False), rel)  # a.png + a.jpg: keep the extension
    meta = pd.DataFrame({"id": ids, "file": rel, "class": found["class"]})
    meta["patient_id"], pid_source = _patients(root, rel)
    for c, name in zip(classes, names, strict=True):
        meta[LABEL_PREFIX + name] = (found["class"] == c).astype(int).to_numpy()
    if found["split"].notna().all():
        meta["split"] = found["split"].to_numpy()

    # split before decoding: a file that fails to decode does not move other patients
    method = apply_split(meta, split, seed, str(root))
    writer, kept, skipped = write_decoded(Path(out), found["path"].tolist(), size, workers, progress, root=root)
    meta = order_columns(meta.iloc[kept].reset_index(drop=True))
    extra = {"input": str(root.resolve()), "classes": classes, "patient_ids": pid_source,
             "skipped": skipped, "n_skipped": len(skipped)}
    return finish(writer, meta, source="folder", label_names=names, text_columns=[],
                  split_seed=seed if method == "patient" else None, split_method=method, extra=extra)
