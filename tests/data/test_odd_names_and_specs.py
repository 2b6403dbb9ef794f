"""User inputs that used to end in a traceback (issue 6, item 7): non-UTF-8 file and folder
names (folder and dicom sources) and absurd ``--split`` fractions. Each must prepare, or stop with
one sentence and exit 2, through the real CLI entry point."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrcl.cli import main
from cxrcl.data.prepared import PreparedDataset
from cxrcl.data.splits import assign_patient_splits


def _bytes_path(*parts: bytes) -> str:
    """A path whose name holds bytes that are not UTF-8 (as a POSIX file system allows)."""
    return os.fsdecode(os.path.join(*parts))


def test_folder_source_with_non_utf8_names(tmp_path, capsys):
    root = tmp_path / "in"
    rng = np.random.default_rng(0)
    for cls in ("normal", "sick"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(root / cls / f"{i}.png")
    base = os.fsencode(root)
    Image.fromarray(np.full((20, 20), 7, np.uint8)).save(_bytes_path(base, b"normal", b"caf\xff.png"))
    os.mkdir(_bytes_path(base, b"\xffodd"))
    Image.fromarray(np.full((20, 20), 9, np.uint8)).save(_bytes_path(base, b"\xffodd", b"x\xfe.png"))
    out = tmp_path / "out"
    assert main(["data", "prepare", "folder", str(root), str(out), "--size", "16"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    ds = PreparedDataset.open(out)
    assert len(ds) == 8
    ids = set(ds.meta["id"])
    assert {"normal/caf\\xff", "\\xffodd/x\\xfe"} <= ids  # the undecodable bytes, written as text
    (out / "meta.csv").read_text(encoding="utf-8")  # a valid UTF-8 file
    assert main(["data", "info", str(out)]) == 0


def test_dicom_source_with_non_utf8_names(tmp_path):
    pytest.importorskip("pydicom")
    from tests.data.test_dicom import write_dicom

    root = tmp_path / "in"
    for k in range(4):
        write_dicom(root / f"p{k}.dcm", np.full((16, 16), 10 * k, np.uint8),
                    identity={"PatientID": f"PID{k}"})
    name = _bytes_path(os.fsencode(root), b"\xe9t\xe9\xff.dcm")
    write_dicom(type(root)(name), np.full((16, 16), 99, np.uint8), identity={"PatientID": "PID\xe9"})
    out = tmp_path / "out"
    assert main(["data", "prepare", "dicom", str(root), str(out), "--size", "16"]) == 0
    ds = PreparedDataset.open(out)
    assert len(ds) == 5 and "\\xe9t\\xe9\\xff" in set(ds.meta["id"])


def test_assign_patient_splits_hashes_any_name():
    odd = os.fsdecode(b"p\xff")
    assert len(assign_patient_splits([odd, "p1", "p2"], (0.7, 0.1, 0.2), 0)) == 3


@pytest.mark.parametrize("spec", ["patient:nan,0,0", "patient:-1,1,1", "patient:inf,0,0",
                                  "patient:0.5,0.5,0.5", "patient:0,0,0", "patient:nan,nan,nan"])
def test_absurd_split_fractions_are_one_sentence(tmp_path, capsys, spec):
    (tmp_path / "in" / "a").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "in" / "a" / "x.png")
    assert main(["data", "prepare", "folder", str(tmp_path / "in"), str(tmp_path / "out"),
                 "--split", spec]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"cxrcl: error: split spec {spec!r}: the fractions must be three finite numbers "
                   ">= 0 that sum to 1, e.g. patient:0.7,0.1,0.2")
    assert not (tmp_path / "out").exists()


def test_absurd_fractions_in_the_python_api():
    from cxrcl.errors import CxrclError

    with pytest.raises(CxrclError, match="three non-negative numbers summing to 1"):
        assign_patient_splits(["a", "b"], (float("nan"), 0.0, 0.0))
    assert pd.Series(assign_patient_splits(["a", "b"], (1.0, 0.0, 0.0))).eq("train").all()
