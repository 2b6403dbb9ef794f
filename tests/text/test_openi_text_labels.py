"""``cxrcl data prepare openi --opt labels=text``: label columns from the report labeller."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from PIL import Image

from cxrcl.cli import main

XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation><uId id="CXR{n}"/><MedlineCitation><Article><Abstract>
<AbstractText Label="INDICATION">Evaluate for pneumonia</AbstractText>
<AbstractText Label="FINDINGS">{findings}</AbstractText>
<AbstractText Label="IMPRESSION">{impression}</AbstractText>
</Abstract></Article></MedlineCitation>
<MeSH><major>{mesh}</major></MeSH>
<parentImage id="CXR{n}_1_IM-000{n}-1001"><caption>PA</caption></parentImage>
</eCitation>"""

CASES = [("Small left pleural effusion. No pneumothorax.", "Cannot exclude pneumonia.", "normal"),
         ("The lungs are clear.", "No acute cardiopulmonary abnormality.", "Cardiomegaly")]


def _layout(root):
    (root / "ecgen-radiology").mkdir(parents=True)
    (root / "NLMCXR_png").mkdir()
    for n, (f, i, m) in enumerate(CASES, start=1):
        (root / "ecgen-radiology" / f"{n}.xml").write_text(XML.format(n=n, findings=f, impression=i, mesh=m))
        Image.fromarray(np.full((40, 40), 60 * n, np.uint8)).save(root / "NLMCXR_png" / f"CXR{n}_1_IM-000{n}-1001.png")
    return root


def test_openi_labels_from_text(tmp_path):
    root = _layout(tmp_path / "openi")
    assert main(["data", "prepare", "openi", str(root), str(tmp_path / "text"), "--size", "16",
                 "--split", "patient:0.5,0,0.5", "--opt", "labels=text"]) == 0
    meta = pd.read_csv(tmp_path / "text" / "meta.csv").set_index("patient_id")
    assert meta.loc["CXR1", "label_effusion"] == 1 and meta.loc["CXR1", "label_pneumothorax"] == 0
    assert math.isnan(meta.loc["CXR1", "label_pneumonia"])  # uncertain -> empty; indication unread
    assert meta.loc["CXR2", "label_no_finding"] == 1 and math.isnan(meta.loc["CXR2", "label_cardiomegaly"])
    # a prepared data set is an input of `cxrcl text label` (its reports.csv)
    assert main(["text", "label", str(tmp_path / "text"), "--out", str(tmp_path / "l.csv")]) == 0
    lab = pd.read_csv(tmp_path / "l.csv").set_index("id")
    assert lab.loc["CXR1", "effusion"] == 1 and lab.loc["CXR1", "pneumonia"] == -1
    # the default still reads MeSH
    assert main(["data", "prepare", "openi", str(root), str(tmp_path / "mesh"), "--size", "16",
                 "--split", "patient:0.5,0,0.5"]) == 0
    mesh = pd.read_csv(tmp_path / "mesh" / "meta.csv").set_index("patient_id")
    assert mesh.loc["CXR2", "label_cardiomegaly"] == 1 and mesh.loc["CXR1", "label_no_finding"] == 1


def test_openi_bad_labels_option(tmp_path, capsys):
    root = _layout(tmp_path / "openi")
    assert main(["data", "prepare", "openi", str(root), str(tmp_path / "x"), "--opt", "labels=chexpert"]) == 2
    assert "labels=chexpert" in capsys.readouterr().err


