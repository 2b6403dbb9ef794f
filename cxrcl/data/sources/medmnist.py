"""``medmnist`` source: a MedMNIST .npz (2-D sets) with its official train/val/test split.

INPUT is either a local .npz with the keys ``train_images``, ``train_labels``, ``val_images``,
``val_labels``, ``test_images``, ``test_labels`` (e.g. ``../shared/data/pneumoniamnist``), or a
MedMNIST flag such as ``pneumoniamnist`` / ``pneumoniamnist_64``. A flag is fetched with the
medmnist package's own download into ``$CXRCL_CACHE/medmnist`` (default
``~/.cache/cxrcl/medmnist``) unless already there; a bare flag takes the smallest MedMNIST size
>= ``--size`` (else 224).

Our choices: the official split is kept (split method ``source``; ``--split``/``--seed`` are
ignored). Label columns: when the file name matches a known flag, names come from medmnist's
``INFO``: binary tasks give one column for the positive class (pneumoniamnist: ``pneumonia``),
multi-class and ordinal tasks one 0/1 column per class, multi-label tasks one column per label.
The chest X-ray sets (ChestMNIST, PneumoniaMNIST) name their labels in the shared vocabulary
(:func:`cxrcl.data.labels.canonical`; ChestMNIST's ``pleural`` is NIH ChestX-ray14's
``Pleural_Thickening`` -> ``pleural_thickening``); the other sets are not chest radiographs and
keep their own class names in lower snake case (OCTMNIST's ``normal`` stays ``normal``).
Unknown files get ``class_<k>`` names by the same rules (two classes -> one column ``class_1``).
Ids are ``<split>_<row:06d>`` (e.g. ``train_000012``). MedMNIST has no patient ids, so
``patient_id`` = ``id`` (the publisher's split is assumed patient-disjoint). Colour sets are
converted to grey with PIL's 'L' weights; 3-D sets are refused.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from cxrcl.data.decoding import rgb_to_grey
from cxrcl.data.labels import canonical
from cxrcl.data.limits import TooLarge, check_pixels
from cxrcl.data.npz_files import iter_npz_rows, npz_header, npz_keys
from cxrcl.data.prepared import LABEL_PREFIX, SPLITS, PreparedDataset
from cxrcl.data.streaming import finish, resize_chunks, write_chunks
from cxrcl.data.tables import clean_name
from cxrcl.errors import CxrclError

FLAG_RE = re.compile(r"^([a-z]+mnist(?:3d)?)(?:_(\d+))?$")
SIZES = (28, 64, 128, 224)
CHUNK = 1024
#: the chest X-ray sets, whose labels map onto the shared vocabulary, with MedMNIST's own
#: spellings that :func:`canonical` does not know (ChestMNIST comes from NIH ChestX-ray14)
CXR_ALIASES: dict[str, dict[str, str]] = {
    "chestmnist": {"pleural": "pleural_thickening"},
    "pneumoniamnist": {},
}


def cache_dir() -> Path:
    """``$CXRCL_CACHE/medmnist``, default ``~/.cache/cxrcl/medmnist``."""
    base = os.environ.get("CXRCL_CACHE")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "cxrcl"
    return root / "medmnist"


def _info() -> dict:
    try:
        from medmnist import INFO
    except ImportError:
        return {}
    return INFO


def flag_of(path: Path) -> str | None:
    """'pneumoniamnist_64.npz' -> 'pneumoniamnist' when that is a known MedMNIST flag."""
    m = FLAG_RE.match(path.stem.lower())
    if m and m.group(1) in _info():
        return m.group(1)
    return None


def download_medmnist(flag: str, size: int) -> Path:
    """Fetch ``<flag>[_<size>].npz`` with medmnist's downloader into :func:`cache_dir` (atomic)."""
    info = _info()
    if not info:
        raise CxrclError(f"cannot fetch {flag}: the medmnist package is not installed; install "
                         "cxrcl[data] or pass the path of a downloaded .npz")
    suffix = "" if size == 28 else f"_{size}"
    name = f"{flag}{suffix}.npz"
    cache = cache_dir()
    target = cache / name
    if target.exists():
        return target
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=cache))
    except OSError as e:
        raise CxrclError(f"cannot create the cache directory {cache} ({e}); set CXRCL_CACHE to a "
                         "writable directory") from None
    try:
        import medmnist
        from medmnist.dataset import MedMNIST

        cls = getattr(medmnist, info[flag]["python_class"], MedMNIST)
        ds = cls.__new__(cls)  # download only: the constructor would also load the arrays
        ds.flag, ds.info, ds.size, ds.size_flag, ds.root = flag, info[flag], size, suffix, str(tmp)
        ds.download()
        got = tmp / name
        if not got.exists():
            raise RuntimeError(f"{name} not found after download")
        os.replace(got, target)
    except Exception as e:  # noqa: BLE001 - network, checksum, disk: all mean "could not download"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CxrclError(f"could not download {name} from MedMNIST ({first}); download it on a machine "
                         "with network and pass the .npz path") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_input(input: str | Path, size: int) -> Path:
    """A path to an .npz, or a MedMNIST flag (downloaded or taken from the cache)."""
    p = Path(input)
    if p.exists():
        if p.is_dir():
            found = sorted(p.glob("*.npz"))
            if len(found) != 1:
                raise CxrclError(f"{p} is a directory with {len(found)} .npz files: pass the .npz file itself")
            return found[0]
        return p
    m = FLAG_RE.match(str(input).lower())
    info = _info()
    if m and m.group(1) in info:
        flag, explicit = m.group(1), m.group(2)
        if flag.endswith("3d"):
            raise CxrclError(f"{flag} is a 3-D MedMNIST set; cxrcl prepares 2-D images only")
        if explicit:
            s = int(explicit)
            if s not in SIZES:
                raise CxrclError(f"MedMNIST has no size {s} for {flag}: use one of {', '.join(map(str, SIZES))}")
        else:
            bigger = [s for s in SIZES if s >= size]
            s = bigger[0] if bigger else SIZES[-1]
        return download_medmnist(flag, s)
    known = ", ".join(k for k in info if not k.endswith("3d")) or "(medmnist not installed)"
    raise CxrclError(f"{input} is neither an existing .npz file nor a MedMNIST flag; pass the path of "
                     f"a MedMNIST .npz or one of: {known}")


def label_name(name: str, flag: str | None) -> str:
    """A MedMNIST class name -> the label name (see the module docstring)."""
    if flag in CXR_ALIASES:
        key = str(name).strip().lower()
        return canonical(CXR_ALIASES[flag].get(key, key))
    return clean_name(name)


#: the most classes or labels an unknown MedMNIST-style file may have (MedMNIST's largest: 14)
MAX_CLASSES = 1000


def check_labels(labels: np.ndarray, n_classes: int, where: str) -> None:
    """Labels must be a [N, L] array of whole numbers in 0..n_classes-1 (at most
    :data:`MAX_CLASSES` columns); anything else (NaN, negative, 10**9) is a CxrclError."""
    if labels.ndim != 2 or labels.shape[1] > MAX_CLASSES:
        raise CxrclError(f"{where}: labels have shape {list(labels.shape)}; expected [N, 1] or [N, L] "
                         f"with at most {MAX_CLASSES} labels")
    if not labels.size:
        return
    if labels.dtype.kind not in "biuf":
        raise CxrclError(f"{where}: labels are {labels.dtype}; expected whole numbers")
    bad = ~np.isfinite(labels) if labels.dtype.kind == "f" else np.zeros(labels.shape, bool)
    if labels.dtype.kind == "f":
        bad |= np.where(bad, False, np.mod(np.nan_to_num(labels), 1) != 0)
    bad |= np.where(bad, False, (np.nan_to_num(labels) < 0) | (np.nan_to_num(labels) >= n_classes))
    if bad.any():
        v = labels[bad].ravel()[0]
        raise CxrclError(f"{where}: a label is {v!r}; labels must be whole numbers from 0 to "
                         f"{n_classes - 1} (the file is damaged or not a MedMNIST file)")


def _label_columns(labels: np.ndarray, flag: str | None, where: str) -> pd.DataFrame:
    """[N, L] integer labels -> DataFrame of label_<name> 0/1 columns (see module docstring)."""
    info = _info().get(flag, {}) if flag else {}
    names = {int(k): v for k, v in info.get("label", {}).items()}
    task = info.get("task")
    labels = np.asarray(labels)
    if labels.ndim == 1:
        labels = labels[:, None]
    check_labels(labels, len(names) or MAX_CLASSES, where)
    if task is None:
        if labels.shape[1] > 1:
            task = "multi-label, binary-class"
        else:
            task = "binary-class" if set(np.unique(labels).tolist()) <= {0, 1} else "multi-class"
    if task == "multi-label, binary-class":
        cols = {label_name(names.get(j, f"class_{j}"), flag): labels[:, j] for j in range(labels.shape[1])}
    elif labels.shape[1] != 1:
        raise CxrclError(f"{where}: labels have shape {list(labels.shape)}; expected [N, 1] for a {task} task")
    elif task == "binary-class":
        cols = {label_name(names.get(1, "class_1"), flag): (labels[:, 0] == 1)}
    else:
        k = max(len(names), int(labels.max()) + 1 if labels.size else 0)
        cols = {label_name(names.get(c, f"class_{c}"), flag): (labels[:, 0] == c) for c in range(k)}
    return pd.DataFrame({LABEL_PREFIX + n: np.asarray(v).astype(np.int8) for n, v in cols.items()})


def prepare_medmnist(input: str | Path, out: str | Path, size: int = 128, split: str = "patient:0.7,0.1,0.2",
                     seed: int = 0, workers: int = 1, progress: bool = True) -> PreparedDataset:
    """Prepare a MedMNIST .npz or flag (see the module docstring). ``split``/``seed`` are ignored."""
    path = resolve_input(input, size)
    keys = set(npz_keys(path))
    need = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels")]
    missing = [k for k in need if k not in keys]
    if missing:
        raise CxrclError(f"{path} lacks the MedMNIST arrays {', '.join(missing)}; pass a MedMNIST .npz "
                         "(train/val/test _images and _labels)")
    flag = flag_of(path)
    shapes = {}
    for s in SPLITS:
        shape, dtype = npz_header(path, f"{s}_images")
        if dtype != np.uint8 or len(shape) not in (3, 4) or (len(shape) == 4 and shape[3] not in (1, 3)):
            raise CxrclError(f"{path}: {s}_images is {dtype} {list(shape)}; expected uint8 [N, H, W] or "
                             "[N, H, W, 3] (3-D MedMNIST volumes are not supported)")
        try:
            check_pixels(shape[2], shape[1])
        except TooLarge as e:
            raise CxrclError(f"{path}: {s}_images {e}") from None
        shapes[s] = shape
    metas = []
    for s in SPLITS:
        with np.load(path) as z:
            labels = np.asarray(z[f"{s}_labels"])
        if len(labels) != shapes[s][0]:
            raise CxrclError(f"{path}: {s}_labels has {len(labels)} rows but {s}_images has "
                             f"{shapes[s][0]}; the file is damaged")
        ids = [f"{s}_{i:06d}" for i in range(len(labels))]
        m = pd.DataFrame({"id": ids, "patient_id": ids, "split": s})
        metas.append(pd.concat([m, _label_columns(labels, flag, str(path))], axis=1))
    meta = pd.concat(metas, ignore_index=True).fillna(0)
    label_names = [c[len(LABEL_PREFIX):] for c in meta.columns if c.startswith(LABEL_PREFIX)]
    n = len(meta)

    def grey_chunks(key: str):
        for chunk in iter_npz_rows(path, key, CHUNK):
            yield rgb_to_grey(chunk) if chunk.ndim == 4 and chunk.shape[3] == 3 else chunk.reshape(chunk.shape[:3])

    chunks = (c for s in SPLITS for c in resize_chunks(grey_chunks(f"{s}_images"), size, workers))
    writer = write_chunks(Path(out), n, size, chunks, progress, f"medmnist {path.name}")
    extra = {"input": str(path.resolve()), "medmnist_flag": flag, "patient_ids": "per_image",
             "native_size": int(shapes["train"][1])}
    return finish(writer, meta, source="medmnist", label_names=label_names, text_columns=[],
                  split_seed=None, split_method="source", extra=extra)
