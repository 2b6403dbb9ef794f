"""``chexpert`` source: CheXpert (Stanford), ``INPUT = CheXpert-v1.0[-small]/``.

Layout as shipped::

    CheXpert-v1.0-small/
        train.csv    Path, Sex, Age, Frontal/Lateral, AP/PA, 14 observations
        valid.csv    same columns (radiologist consensus labels)
        train/patient00001/study1/view1_frontal.jpg
        valid/patient64541/study1/view1_frontal.jpg

``Path`` starts with the release folder (``CheXpert-v1.0-small/train/...``); it is resolved
against INPUT after dropping that first component (a path that does not start with a
``CheXpert*`` folder is taken relative to INPUT). INPUT may also be the folder just above
``CheXpert-v1.0-small/``. Observations are 1 (positive), 0 (negative),
-1 (uncertain) or empty (not mentioned); all 14 coincide with the vocabulary (``Pleural Effusion``
-> ``effusion``).

Licence: Stanford University School of Medicine CheXpert Dataset Research Use Agreement
(non-commercial research; registration required, no redistribution).
Citation: Irvin J, Rajpurkar P, et al. CheXpert: a large chest radiograph dataset with
uncertainty labels and expert comparison. AAAI 2019.

Our choices:

- Uncertainty policy ``uncertain``: ``"ignore"`` (default: -1 -> empty/NaN, i.e. unknown),
  ``"ones"`` (-1 -> 1, U-Ones) or ``"zeros"`` (-1 -> 0, U-Zeros), as in the CheXpert paper.
  The CLI cannot pass it: set the environment variable ``CXRCL_CHEXPERT_UNCERTAIN`` instead
  (the argument wins when given). Empty ("not mentioned") stays empty, never 0.
- ``frontal_only=True`` keeps the frontal views only (default: all views; ``view`` column).
- Patient id = the ``patientNNNNN`` path component; ``study_id`` = ``patientNNNNN/studyN``.
  Image id = the path without the release folder and extension
  (``train/patient00001/study1/view1_frontal``).
- Split: the official ``valid.csv`` (200 studies, radiologist consensus) becomes our ``test``
  split; ``train.csv`` is divided into train/val by patient, in the train:val ratio of
  ``--split`` (default 0.7:0.1 -> 87.5 % / 12.5 %) with ``--seed``. Split method ``source``.
  Without ``valid.csv`` everything is split by patient (method ``patient``).
- No report text is published with CheXpert; the prepared set has no text columns.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from cxrcl.data.labels import canonical
from cxrcl.data.prepared import LABEL_PREFIX, PreparedDataset
from cxrcl.data.sources.inputs import env_choice, require_dir
from cxrcl.data.splits import apply_split, split_with_official_test
from cxrcl.data.streaming import finish, write_decoded
from cxrcl.data.tables import order_columns, read_table, to_number
from cxrcl.errors import CxrclError

# the 14 CheXpert observations, in the publisher's column order
OBSERVATIONS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
    "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
    "Pleural Other", "Fracture", "Support Devices",
)
LABEL_NAMES = tuple(canonical(o) for o in OBSERVATIONS)
UNCERTAIN_POLICIES = ("ignore", "ones", "zeros")
UNCERTAIN_ENV = "CXRCL_CHEXPERT_UNCERTAIN"
REQUIRED = ("Path",)
_PATIENT = re.compile(r"(patient\d+)")
_STUDY = re.compile(r"(patient\d+/study\d+)")
_RELEASE = re.compile(r"^(?:\./)?chexpert[^/]*/", re.I)


def uncertain_policy(value: str | None) -> str:
    """The policy from the argument, else ``$CXRCL_CHEXPERT_UNCERTAIN``, else ``"ignore"``."""
    return env_choice(value, "uncertain", UNCERTAIN_ENV, "ignore", UNCERTAIN_POLICIES,
                      f"an uncertainty policy: use one of {', '.join(UNCERTAIN_POLICIES)} "
                      "(ignore = uncertain labels become unknown)")


def apply_uncertain(values: pd.Series, policy: str) -> pd.Series:
    """1/0/-1/empty -> 1/0/empty under ``policy`` (see the module docstring)."""
    v = to_number(values)
    if policy == "ones":
        v = v.where(v != -1, 1.0)
    elif policy == "zeros":
        v = v.where(v != -1, 0.0)
    else:
        v = v.where(v != -1)
    return v.where(v.isin([0.0, 1.0])).astype("Float32")


def map_observations(table: pd.DataFrame, policy: str, where: str) -> pd.DataFrame:
    """The 14 observation columns of ``table`` -> ``label_<canonical>`` columns (Float32, NaN)."""
    missing = [o for o in OBSERVATIONS if o not in table.columns]
    if missing:
        raise CxrclError(f"{where} lacks the observation column {missing[0]!r}; use the "
                         "publisher's unmodified file (14 CheXpert observation columns)")
    return pd.DataFrame({LABEL_PREFIX + n: apply_uncertain(table[o], policy)
                         for o, n in zip(OBSERVATIONS, LABEL_NAMES, strict=True)}, index=table.index)


def parse_chexpert_csv(path: str | Path, uncertain: str = "ignore", frontal_only: bool = False,
                       official_split: str | None = None) -> pd.DataFrame:
    """One CheXpert CSV -> metadata rows (no image access): id, patient_id, study_id, path,
    sex, age, view, ap_pa, the 14 ``label_*`` columns, and ``official_split`` when given."""
    path = Path(path)
    policy = uncertain_policy(uncertain)
    table = read_table(path, REQUIRED, dtype={"Path": str})
    rel = table["Path"].fillna("").astype(str).str.strip().str.replace(_RELEASE, "", regex=True)
    pid = rel.str.extract(_PATIENT, expand=False)
    if pid.isna().any():
        bad = table["Path"][pid.isna()].iloc[0]
        raise CxrclError(f"{path}: Path {bad!r} has no 'patientNNNNN' folder; use the publisher's "
                         "unmodified file")
    meta = pd.DataFrame({
        "id": rel.str.replace(r"\.(jpe?g|png)$", "", regex=True, flags=re.I),
        "patient_id": pid,
        "study_id": rel.str.extract(_STUDY, expand=False).fillna(pid),
        "path": rel,
        "sex": table.get("Sex"),
        "age": pd.to_numeric(table.get("Age"), errors="coerce") if "Age" in table else np.nan,
        "view": table.get("Frontal/Lateral"),
        "ap_pa": table.get("AP/PA"),
    })
    meta = pd.concat([meta, map_observations(table, policy, str(path))], axis=1)
    if official_split is not None:
        meta["official_split"] = official_split
    if frontal_only and "Frontal/Lateral" in table.columns:
        meta = meta[table["Frontal/Lateral"].astype(str).str.lower() == "frontal"]
    return meta.reset_index(drop=True)


def find_chexpert_files(root: Path) -> tuple[Path, Path | None]:
    """(train.csv, valid.csv or None) in ``root``."""
    train = root / "train.csv"
    if not train.is_file():  # INPUT may be the folder above CheXpert-v1.0-small/
        inner = sorted(d for d in root.glob("[Cc]he[Xx]pert*") if (d / "train.csv").is_file())
        if len(inner) == 1:
            return find_chexpert_files(inner[0])
    if not train.is_file():
        raise CxrclError(f"{root} has no train.csv: the chexpert source needs the CheXpert folder "
                         "(CheXpert-v1.0-small/ with train.csv, valid.csv, train/, valid/)")
    valid = root / "valid.csv"
    return train, valid if valid.is_file() else None


def prepare_chexpert(input: str | Path, out: str | Path, size: int = 128,
                     split: str = "patient:0.7,0.1,0.2", seed: int = 0, workers: int = 1,
                     progress: bool = True, uncertain: str | None = None,
                     frontal_only: bool = False) -> PreparedDataset:
    """Prepare CheXpert (see the module docstring); ``uncertain`` None -> $CXRCL_CHEXPERT_UNCERTAIN."""
    root = Path(input)
    if root.is_file() and root.name in ("train.csv", "valid.csv"):
        root = root.parent
    require_dir(root, "the chexpert source needs the CheXpert folder with train.csv and valid.csv")
    policy = uncertain_policy(uncertain)
    train_csv, valid_csv = find_chexpert_files(root)
    root = train_csv.parent
    parts = [parse_chexpert_csv(train_csv, policy, frontal_only, "train")]
    if valid_csv is not None:
        parts.append(parse_chexpert_csv(valid_csv, policy, frontal_only, "valid"))
    meta = pd.concat(parts, ignore_index=True)
    if meta.empty:
        raise CxrclError(f"{train_csv} lists no images; use the publisher's unmodified file")
    meta = meta.drop_duplicates("id", keep="first").reset_index(drop=True)
    if valid_csv is not None:
        split_with_official_test(meta, meta["official_split"] == "valid", split, seed)
        method = "source"
    else:
        method = apply_split(meta, split, seed, str(root))
    files = [root / p for p in meta["path"]]
    writer, kept, skipped = write_decoded(Path(out), files, size, workers, progress, root=root)
    meta = order_columns(meta.iloc[kept].reset_index(drop=True))
    extra = {"input": str(root.resolve()), "uncertain_policy": policy, "frontal_only": bool(frontal_only),
             "official_split": "valid.csv -> test; train.csv -> train/val by patient"
             if valid_csv is not None else None,
             "skipped": skipped, "n_skipped": len(skipped)}
    return finish(writer, meta, source="chexpert", label_names=list(LABEL_NAMES), text_columns=[],
                  split_seed=seed, split_method=method, extra=extra)
