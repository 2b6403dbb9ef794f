"""Paths taken from a source's metadata never read outside INPUT (issue 6, item 6), and a
folder named like an Open-i report is a counted bad report, not a traceback (item 7).

Every file-based adapter hands its paths and INPUT to ``write_decoded``, which skips a path
that leaves INPUT (:func:`cxrcl.data.streaming.leaves_root`) before any file is opened and lists
it in ``skipped.csv``. The tests plant a recognisable "secret" image outside INPUT, name it from
the metadata (``../``, absolute), and check that it is never opened and never in the data set.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from cxrcl.cli import main
from cxrcl.data import decoding
from cxrcl.data.prepared import PreparedDataset
from cxrcl.data.streaming import LEAVES_ROOT, leaves_root
from tests.data.test_sources_public import _covid_tree, _img, _openi_tree, _openi_xml

SECRET = 200  # the grey value of the planted images outside INPUT


@pytest.fixture
def opened(monkeypatch):
    """Every path the default decoder opens, in this process (workers=1)."""
    paths: list[str] = []
    real = decoding.load_grey

    def spy(path, size):
        paths.append(os.path.abspath(path))
        return real(path, size)

    monkeypatch.setattr(decoding, "load_grey", spy)
    return paths


def _secret(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    from PIL import Image
    Image.fromarray(np.full((32, 32), SECRET, np.uint8)).save(path)
    return path


def _check(out, opened, secrets, n_escapes):
    ds = PreparedDataset.open(out)
    skipped = pd.read_csv(out / "skipped.csv")
    assert (skipped["reason"] == LEAVES_ROOT).sum() == n_escapes
    assert not any(os.path.abspath(s) in opened for s in secrets)
    assert not (np.asarray(ds.images) == SECRET).all(axis=(1, 2)).any()
    return ds, skipped


def test_leaves_root(tmp_path):
    root = tmp_path / "in"
    (root / "a").mkdir(parents=True)
    assert not leaves_root(root / "a" / "x.png", root)
    assert not leaves_root(root / "a" / ".." / "x.png", root)  # climbs but stays inside
    assert leaves_root(root / ".." / "x.png", root)
    assert leaves_root(root / "a" / ".." / ".." / "x.png", root)
    assert leaves_root(root / "/etc/passwd", root)  # an absolute name replaces root
    assert not leaves_root(os.path.abspath(root / "a" / "x.png"), root)  # absolute but inside
    assert leaves_root(str(tmp_path / "a\0b.png"), root)  # outside, and not even a file name
    # a relative INPUT with '..' in it (README: ../shared/data/...) is fine
    rel = os.path.relpath(root, os.getcwd())
    assert not leaves_root(os.path.join(rel, "a", "x.png"), rel)
    # a symlink the user put inside INPUT is followed (our choice); '..' through it is not
    (root / "link").symlink_to(tmp_path, target_is_directory=True)
    assert not leaves_root(root / "link" / "x.png", root)
    assert leaves_root(root / "link" / ".." / "x.png", root)


def test_openi_image_ids_cannot_escape_input(tmp_path, opened, capsys, caplog):
    root = _openi_tree(tmp_path / "openi")
    secrets = [_secret(tmp_path / "x.png"), _secret(tmp_path / "abs" / "y.png")]
    absolute = str(tmp_path / "abs" / "y")  # the adapter appends .png
    (root / "ecgen-radiology" / "5.xml").write_text(_openi_xml(
        "CXR5", "Lungs clear.", "No acute disease.", [("major", "normal")], ["../../x", absolute]))
    (root / "ecgen-radiology" / "117.xml").mkdir()  # a folder named like a report
    out = tmp_path / "out"
    assert main(["data", "prepare", "openi", str(root), str(out), "--size", "16"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    ds, skipped = _check(out, opened, secrets, n_escapes=2)
    assert {"NLMCXR_png/../../x.png", absolute + ".png"} <= set(skipped["file"])
    assert "../../x" not in set(ds.meta["id"]) and absolute not in set(ds.meta["id"])
    bad = {b["file"]: b["reason"] for b in ds.info["bad_reports"]}
    assert "not a readable file" in bad["117.xml"] and ds.info["n_bad_reports"] == 2  # + 4.xml
    assert "skipped report 117.xml: not a readable file" in caplog.text


def test_csv_paths_are_confined_to_the_csv_folder(tmp_path, opened):
    base = tmp_path / "study"
    for i in range(4):
        _img(base / "imgs" / f"im{i}.png")
    secrets = [_secret(tmp_path / "private" / "s.png")]
    rows = [{"path": f"imgs/im{i}.png", "patient_id": f"P{i}", "effusion": i % 2} for i in range(4)]
    rows += [{"path": "../private/s.png", "patient_id": "P8", "effusion": 1},
             {"path": str(secrets[0]), "patient_id": "P9", "effusion": 0},
             {"path": str((base / "imgs" / "im0.png").resolve()), "patient_id": "P0", "effusion": 0}]
    pd.DataFrame(rows).to_csv(base / "list.csv", index=False)
    assert main(["data", "prepare", "csv", str(base / "list.csv"), str(tmp_path / "out"), "--size", "16"]) == 0
    ds, _ = _check(tmp_path / "out", opened, secrets, n_escapes=2)
    assert len(ds) == 5  # the absolute path inside the CSV's folder is still read


def test_covid_metadata_cannot_escape_input(tmp_path, opened):
    root = _covid_tree(tmp_path / "covid")
    secrets = [_secret(tmp_path / "s.png")]
    with open(root / "metadata.csv", "a") as f:
        f.write('9,0,M,60,No Finding,Y,Y,PA,X-ray,2020,"x",images,../../s.png,10.1/x,http://x,CC BY,"",,\n')
    assert main(["data", "prepare", "covid", str(root), str(tmp_path / "out"), "--size", "16"]) == 0
    _check(tmp_path / "out", opened, secrets, n_escapes=1)


def test_mimic_ids_cannot_read_reports_or_images_outside_input(tmp_path, opened, monkeypatch):
    import gzip

    from tests.data.test_sources_public import _mimic_tree

    monkeypatch.delenv("CXRCL_MIMIC_LABELER", raising=False)
    root = _mimic_tree(tmp_path / "mimic")
    study = "1/../../../../../leak"  # files/p10/p10000032/s<study> climbs out of INPUT
    (tmp_path / "leak.txt").write_text("FINDINGS: SECRETREPORTTEXT.")
    secrets = [_secret(tmp_path / "leak" / "dx.jpg")]
    meta = root / "mimic-cxr-2.0.0-metadata.csv.gz"
    text = gzip.decompress(meta.read_bytes()).decode()
    text += f"dx,10000032,{study},CHEST (PA AND LAT),PA,40,32,21800506,213014\n"
    meta.write_bytes(gzip.compress(text.encode()))
    with open(root / "mimic-cxr-2.0.0-split.csv", "a") as f:
        f.write(f"dx,{study},10000032,train\n")
    read = []
    real_read_text = type(root).read_text
    monkeypatch.setattr(type(root), "read_text",
                        lambda self, *a, **k: read.append(os.path.abspath(self)) or real_read_text(self, *a, **k))
    assert main(["data", "prepare", "mimic-cxr", str(root), str(tmp_path / "out"), "--size", "16"]) == 0
    _check(tmp_path / "out", opened, secrets, n_escapes=1)
    assert str(tmp_path / "leak.txt") not in read and any(r.endswith("s50414267.txt") for r in read)
