"""Public CXR layouts (nih14, chexpert, mimic-cxr, openi, covid, shenzhen, montgomery).

Real publisher metadata files shipped with torchxrayvision are parsed in full; every source is
prepared end to end from a tiny fixture tree in the publisher's exact layout (stand-in images).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrcl.data.sources import prepare
from cxrcl.data.sources.chexpert import UNCERTAIN_ENV, parse_chexpert_csv, prepare_chexpert
from cxrcl.data.sources.covid import finding_labels, parse_covid_metadata
from cxrcl.data.sources.mimic_cxr import LABELER_ENV, parse_mimic_cxr
from cxrcl.data.sources.nih14 import LABEL_NAMES as NIH_LABELS
from cxrcl.data.sources.nih14 import boxes_to_size, parse_nih14_boxes, parse_nih14_entries
from cxrcl.data.sources.openi import mesh_to_labels, parse_openi_report_table
from cxrcl.data.sources.tb import parse_reading
from cxrcl.data.splits import assign_patient_splits, split_with_official_test
from cxrcl.errors import CxrclError


@pytest.fixture(scope="module")
def xrv_data() -> Path:
    xrv = pytest.importorskip("torchxrayvision")
    return Path(xrv.__file__).parent / "data"


def _no_leak(meta: pd.DataFrame) -> None:
    assert (meta.groupby("patient_id")["split"].nunique() == 1).all()


def _img(path: Path, w: int = 32, h: int = 32, value: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.full((h, w), value, dtype=np.uint8)
    a[: h // 2, : w // 2] = 220
    Image.fromarray(a).save(path)
    return path


def _labels(ds, name: str) -> list:
    return [None if np.isnan(v) else int(v) for v in ds.labels([name])[:, 0]]


# ============================================================================ real publisher files
def test_nih14_real_data_entry(xrv_data):
    meta = parse_nih14_entries(xrv_data / "Data_Entry_2017_v2020.csv.gz")
    assert len(meta) == 112120 and meta["id"].is_unique
    assert meta["patient_id"].nunique() == 30805
    counts = {n: int(meta["label_" + n].sum()) for n in NIH_LABELS}
    assert counts == {
        "atelectasis": 11559, "cardiomegaly": 2776, "effusion": 13317, "infiltration": 19894,
        "mass": 5782, "nodule": 6331, "pneumonia": 1431, "pneumothorax": 5302,
        "consolidation": 4667, "edema": 2303, "emphysema": 2516, "fibrosis": 1686,
        "pleural_thickening": 3385, "hernia": 227, "no_finding": 60361}
    assert meta["view"].value_counts().to_dict() == {"PA": 67310, "AP": 44810}
    assert meta["age"].notna().all() and meta["orig_width"].notna().all()
    # patient-level split
    split = meta[["id", "patient_id"]].copy()
    split["split"] = assign_patient_splits(split["patient_id"], seed=0)
    _no_leak(split)
    # official-test style split: a patient-disjoint test list, train/val by patient inside the rest
    is_test = split["patient_id"].astype(int) % 5 == 0
    split_with_official_test(split, is_test, "patient:0.7,0.1,0.2", seed=0)
    _no_leak(split)
    assert (split["split"] == "test").equals(is_test)
    val_share = split.loc[~is_test].groupby("patient_id")["split"].first().eq("val").mean()
    assert abs(val_share - 0.125) < 0.01


def test_nih14_real_boxes(xrv_data):
    boxes = parse_nih14_boxes(xrv_data / "BBox_List_2017.csv.gz")
    assert len(boxes) == 984 and boxes["file"].nunique() == 880
    assert boxes["label"].value_counts().to_dict() == {
        "atelectasis": 180, "effusion": 153, "cardiomegaly": 146, "infiltration": 123,
        "pneumonia": 120, "pneumothorax": 98, "mass": 85, "nodule": 79}
    assert set(boxes["label"]) <= set(NIH_LABELS)
    js = boxes_to_size(boxes, 128)
    assert len(js) == 880
    flat = [b for v in js.values() for b in json.loads(v)]
    assert len(flat) == 984
    assert all(0 <= b["x"] <= 128 and 0 <= b["y"] <= 128 and b["w"] > 0 for b in flat)


def test_chexpert_real_policies(xrv_data):
    path = xrv_data / "chexpert_train.csv.gz"
    expected = {  # cardiomegaly: (positives, negatives, unknown) under each policy
        "ignore": (27000, 11116, 185298), "ones": (35087, 11116, 177211),
        "zeros": (27000, 19203, 177211)}
    for policy, (pos, neg, unk) in expected.items():
        meta = parse_chexpert_csv(path, uncertain=policy)
        assert len(meta) == 223414 and meta["patient_id"].nunique() == 64540
        col = meta["label_cardiomegaly"]
        assert (int((col == 1).sum()), int((col == 0).sum()), int(col.isna().sum())) == (pos, neg, unk)
        assert int((meta["label_no_finding"] == 1).sum()) == 22381
        assert int((meta["label_effusion"] == 1).sum()) == (97815 if policy == "ones" else 86187)
        vals = meta.filter(like="label_").to_numpy(dtype=float, na_value=np.nan)
        assert set(np.unique(vals[~np.isnan(vals)])) == {0, 1}  # no -1 survives any policy
    assert meta["id"].iloc[0] == "train/patient00001/study1/view1_frontal"
    assert meta["study_id"].iloc[0] == "patient00001/study1"
    assert int((meta["view"] == "Frontal").sum()) == 191027  # frontal_only keeps these


def test_openi_real_tgz(xrv_data):
    reports = parse_openi_report_table(xrv_data / "NLMCXR_reports.tgz")  # read inside the tar
    assert len(reports) == 3955 and reports["uid"].is_unique
    assert int(reports["n_images"].sum()) == 7470
    assert int((reports["n_images"] == 0).sum()) == 104
    assert int((reports["findings"] != "").sum()) == 3425
    assert int((reports["impression"] != "").sum()) == 3921
    assert int((reports["label_no_finding"] == 1).sum()) == 1391
    assert int((reports["label_cardiomegaly"] == 1).sum()) == 395
    assert int((reports["label_effusion"] == 1).sum()) == 161


# ============================================================================ nih14 fixture
NIH_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
              "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],\n")


def _nih_tree(root: Path) -> Path:
    rows = [("00000001_000.png", "Cardiomegaly", 1), ("00000001_001.png", "Cardiomegaly|Emphysema", 1),
            ("00000002_000.png", "No Finding", 2), ("00000003_000.png", "Infiltration|Effusion", 3),
            ("00000003_001.png", "No Finding", 3), ("00000004_000.png", "Hernia", 4),
            ("00000005_000.png", "Pleural_Thickening", 5), ("00000006_000.png", "No Finding", 6)]
    lines = [f"{f},{lab},0,{pid},0{50 + pid}Y,M,PA,2500,2048,0.143,0.143,\n" for f, lab, pid in rows]
    (root).mkdir(parents=True, exist_ok=True)
    (root / "Data_Entry_2017.csv").write_text(NIH_HEADER + "".join(lines))
    for i, (f, _, _) in enumerate(rows):
        if f == "00000006_000.png":
            continue  # listed, but the image is missing
        sub = "images_001" if i < 4 else "images_002"
        _img(root / sub / "images" / f, w=40 if f == "00000003_000.png" else 32, h=32)
    (root / "test_list.txt").write_text("00000004_000.png\n00000005_000.png\n")
    (root / "train_val_list.txt").write_text("\n".join(f for f, _, _ in rows[:5]) + "\n")
    (root / "BBox_List_2017.csv").write_text(
        "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
        "00000003_000.png,Infiltrate,10,10,8,4\n00000003_000.png,Effusion,0,0,40,32\n")
    return root


def test_nih14_prepare(tmp_path):
    root = _nih_tree(tmp_path / "nih")
    ds = prepare("nih14", root, tmp_path / "out", size=32, progress=False)
    assert len(ds) == 7 and ds.images.shape == (7, 32, 32)
    assert ds.info["n_skipped"] == 1 and ds.info["skipped"][0]["file"] == "images/00000006_000.png"
    assert ds.info["skipped"][0]["reason"] == "file not found"
    assert ds.label_names == list(NIH_LABELS)
    m = ds.meta.set_index("id")
    assert m.loc["00000001_001", "label_emphysema"] == 1 and m.loc["00000001_001", "label_no_finding"] == 0
    assert m.loc["00000005_000", "label_pleural_thickening"] == 1
    assert m.loc["00000001_000", "age"] == 51
    assert ds.info["split"]["method"] == "source"
    assert set(m.index[m["split"] == "test"]) == {"00000004_000", "00000005_000"}
    _no_leak(ds.meta)
    boxes = json.loads(m.loc["00000003_000", "boxes"])  # 40x32 PNG: padded to 40x40, scaled 0.8
    assert boxes[0] == {"label": "infiltration", "x": 8.0, "y": 11.2, "w": 6.4, "h": 3.2}
    assert boxes[1] == {"label": "effusion", "x": 0.0, "y": 3.2, "w": 32.0, "h": 25.6}
    assert pd.isna(m.loc["00000001_000", "boxes"]) or m.loc["00000001_000", "boxes"] == ""
    assert ds.info["n_boxes_images"] == 1


def test_nih14_without_lists_uses_patient_split(tmp_path):
    root = _nih_tree(tmp_path / "nih")
    (root / "test_list.txt").unlink()
    ds = prepare("nih14", root, tmp_path / "out", size=16, progress=False)
    assert ds.info["split"]["method"] == "patient" and ds.info["split"]["seed"] == 0
    _no_leak(ds.meta)
    with pytest.raises(CxrclError, match="no split column"):
        prepare("nih14", root, tmp_path / "out2", size=16, split="source", progress=False)


# ============================================================================ chexpert fixture
CHEX_COLS = ("Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,"
             "Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,"
             "Pleural Effusion,Pleural Other,Fracture,Support Devices\n")


def _chexpert_tree(root: Path) -> Path:
    rel = "CheXpert-v1.0-small"
    train = [
        (f"{rel}/train/patient00001/study1/view1_frontal.jpg", "Female,68,Frontal,AP", "1.0,,,,,,,,,0.0,,,,1.0"),
        (f"{rel}/train/patient00002/study2/view1_frontal.jpg", "Female,87,Frontal,AP", ",,-1.0,1.0,,-1.0,-1.0,,-1.0,,-1.0,,1.0,"),
        (f"{rel}/train/patient00002/study2/view2_lateral.jpg", "Female,87,Lateral,", ",,-1.0,1.0,,-1.0,-1.0,,-1.0,,-1.0,,1.0,"),
        (f"{rel}/train/patient00003/study1/view1_frontal.jpg", "Male,41,Frontal,AP", ",,1.0,,,,,,,0.0,,,,"),
        (f"{rel}/train/patient00004/study1/view1_frontal.jpg", "Male,20,Frontal,PA", "1.0,,0.0,,,,,,,,,,,"),
    ]
    valid = [
        (f"{rel}/valid/patient64541/study1/view1_frontal.jpg", "Male,73,Frontal,AP", "0.0,1.0,1.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0"),
        (f"{rel}/valid/patient64542/study1/view1_frontal.jpg", "Male,70,Frontal,PA", "0.0,0.0,0.0,1.0,0.0,0.0,0.0,0.0,1.0,0.0,1.0,0.0,0.0,0.0"),
    ]
    root.mkdir(parents=True)
    for name, rows in (("train.csv", train), ("valid.csv", valid)):
        (root / name).write_text(CHEX_COLS + "".join(f"{p},{d},{lab}\n" for p, d, lab in rows))
        for p, _, _ in rows:
            f = root / Path(p).relative_to(rel)
            f.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((40, 32), 120, np.uint8)).save(f, "JPEG")
    return root


def test_chexpert_prepare_policies(tmp_path, monkeypatch):
    root = _chexpert_tree(tmp_path / "CheXpert-v1.0-small")
    monkeypatch.delenv(UNCERTAIN_ENV, raising=False)
    ds = prepare("chexpert", root, tmp_path / "out", size=16, progress=False)
    assert len(ds) == 7 and ds.info["uncertain_policy"] == "ignore"
    assert ds.info["split"]["method"] == "source"
    m = ds.meta.set_index("id")
    assert set(m.index[m["split"] == "test"]) == {"valid/patient64541/study1/view1_frontal",
                                                   "valid/patient64542/study1/view1_frontal"}
    _no_leak(ds.meta)
    i = ds.meta.index[ds.meta["id"] == "train/patient00002/study2/view1_frontal"][0]
    assert _labels(ds, "cardiomegaly")[i] is None and _labels(ds, "lung_opacity")[i] == 1
    assert _labels(ds, "effusion")[i] is None and _labels(ds, "fracture")[i] == 1
    assert m.loc["train/patient00001/study1/view1_frontal", "sex"] == "Female"

    monkeypatch.setenv(UNCERTAIN_ENV, "ones")  # the CLI route
    ds = prepare("chexpert", root, tmp_path / "out", size=16, progress=False, overwrite=True)
    assert ds.info["uncertain_policy"] == "ones"
    assert _labels(ds, "cardiomegaly")[i] == 1 and _labels(ds, "effusion")[i] == 1
    ds = prepare_chexpert(root.parent, tmp_path / "out", size=16, progress=False, uncertain="zeros",
                          frontal_only=True)  # the argument wins over the variable
    assert len(ds) == 6 and ds.info["uncertain_policy"] == "zeros"
    assert _labels(ds, "cardiomegaly")[i] == 0
    monkeypatch.setenv(UNCERTAIN_ENV, "maybe")
    with pytest.raises(CxrclError, match=UNCERTAIN_ENV):
        prepare("chexpert", root, tmp_path / "out", size=16, progress=False, overwrite=True)


# ============================================================================ mimic-cxr fixture
MIMIC_OBS = ("Atelectasis,Cardiomegaly,Consolidation,Edema,Enlarged Cardiomediastinum,Fracture,"
             "Lung Lesion,Lung Opacity,No Finding,Pleural Effusion,Pleural Other,Pneumonia,"
             "Pneumothorax,Support Devices")
REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with cough

 FINDINGS:

 There is no focal consolidation.  Heart size is
 mildly enlarged.

 IMPRESSION:

 Mild cardiomegaly.
"""


def _gz(path: Path, text: str) -> None:
    with gzip.open(path, "wt") as f:
        f.write(text)


def _mimic_tree(root: Path) -> Path:
    images = [("d1", "10000032", "50414267", "PA"), ("d2", "10000032", "50414267", "LATERAL"),
              ("d3", "10000032", "53189527", "AP"), ("d4", "10000764", "57375967", "PA"),
              ("d5", "11000011", "52000001", "AP"), ("d6", "11000011", "52000001", "AP")]
    root.mkdir(parents=True)
    _gz(root / "mimic-cxr-2.0.0-metadata.csv.gz",
        "dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns,"
        "StudyDate,StudyTime\n" + "".join(f"{d},{s},{t},CHEST (PA AND LAT),{v},40,32,21800506,213014\n"
                                          for d, s, t, v in images))
    split = {"10000032": "train", "10000764": "validate", "11000011": "test"}
    (root / "mimic-cxr-2.0.0-split.csv").write_text(
        "dicom_id,study_id,subject_id,split\n" + "".join(f"{d},{t},{s},{split[s]}\n" for d, s, t, _ in images))
    empty = "," * 13
    (root / "mimic-cxr-2.0.0-chexpert.csv").write_text(
        f"subject_id,study_id,{MIMIC_OBS}\n"
        f"10000032,50414267,,1.0,,,,,,,,,,,,\n"
        f"10000032,53189527,,-1.0,,,,,,,,,,,,\n"
        f"10000764,57375967,,,,,,,,,,1.0,,,,\n")  # study 52000001 has no label row
    (root / "mimic-cxr-2.0.0-negbio.csv").write_text(
        f"subject_id,study_id,{MIMIC_OBS}\n10000032,50414267,{empty}\n10000032,53189527,,0.0,{empty[2:]}\n")
    for d, s, t, _ in images:
        _img(root / "files" / f"p{s[:2]}" / f"p{s}" / f"s{t}" / f"{d}.jpg", 32, 40)
    (root / "files/p10/p10000032/s50414267.txt").write_text(REPORT)
    (root / "files/p10/p10000032/s53189527.txt").write_text("Portable chest: lungs clear, no effusion.")
    reports = root / "mimic-cxr-reports" / "files" / "p10" / "p10000764"
    reports.mkdir(parents=True)
    (reports / "s57375967.txt").write_text("FINDINGS: Normal.\nIMPRESSION: No acute process.")
    return root  # study 52000001 has no report file


def test_mimic_cxr_prepare(tmp_path, monkeypatch):
    monkeypatch.delenv(UNCERTAIN_ENV, raising=False)
    monkeypatch.delenv(LABELER_ENV, raising=False)
    root = _mimic_tree(tmp_path / "mimic")
    ds = prepare("mimic-cxr", root, tmp_path / "out", size=16, progress=False)
    assert len(ds) == 6 and ds.info["split"]["method"] == "source"
    assert ds.meta.set_index("id")["split"].to_dict() == {
        "d1": "train", "d2": "train", "d3": "train", "d4": "val", "d5": "test", "d6": "test"}
    assert ds.info["text_columns"] == ["report", "findings", "impression"]
    m = ds.meta.set_index("id")
    assert m.loc["d1", "findings"] == "There is no focal consolidation. Heart size is mildly enlarged."
    assert m.loc["d1", "impression"] == "Mild cardiomegaly."
    assert m.loc["d1", "report"].startswith("FINAL REPORT EXAMINATION: CHEST (PA AND LAT) INDICATION:")
    assert m.loc["d3", "report"] == "Portable chest: lungs clear, no effusion." and m.loc["d3", "findings"] == ""
    assert m.loc["d4", "impression"] == "No acute process."  # from mimic-cxr-reports/files
    assert m.loc["d5", "report"] == "" and ds.info["n_reports_missing"] == 1
    assert ds.info["empty_text"] == {"report": 2, "findings": 3, "impression": 3}
    assert _labels(ds, "cardiomegaly") == [1, 1, None, None, None, None]  # -1 ignored, d5/d6 unlabelled
    assert _labels(ds, "effusion")[3] == 1 and m.loc["d1", "view"] == "PA" and m.loc["d1", "study_id"] == 50414267
    monkeypatch.setenv(LABELER_ENV, "negbio")
    ds = prepare("mimic-cxr", root, tmp_path / "out", size=16, progress=False, overwrite=True)
    assert ds.info["labeler"] == "negbio" and _labels(ds, "cardiomegaly")[:4] == [None, None, 0, None]
    table = parse_mimic_cxr(root, labeler="chexpert", uncertain="ones")
    assert table["label_cardiomegaly"].tolist()[:3] == [1, 1, 1]


# ============================================================================ openi fixture
OPENI_XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation>
   <meta type="rr"/>
   <uId id="{uid}"/>
   <licenseURL>http://creativecommons.org/licenses/by-nc-nd/4.0/</licenseURL>
   <MedlineCitation Owner="Indiana University" Status="supplied by publisher">
      <Article PubModel="Electronic">
         <Abstract>
            <AbstractText Label="COMPARISON">None.</AbstractText>
            <AbstractText Label="INDICATION">{indication}</AbstractText>
            <AbstractText Label="FINDINGS">{findings}</AbstractText>
            <AbstractText Label="IMPRESSION">{impression}</AbstractText>
         </Abstract>
      </Article>
   </MedlineCitation>
   <MeSH>
{mesh}
   </MeSH>
{images}
</eCitation>"""


def _openi_xml(uid, findings, impression, mesh, images, indication="XXXX-year-old with cough"):
    mesh_xml = "\n".join(f"      <{kind}>{t}</{kind}>" for kind, t in mesh)
    img_xml = "\n".join(f'   <parentImage id="{i}">\n      <figureId>F1</figureId>\n'
                        f"      <caption>Xray Chest PA and Lateral</caption>\n   </parentImage>" for i in images)
    return OPENI_XML.format(uid=uid, indication=indication, findings=findings, impression=impression,
                            mesh=mesh_xml, images=img_xml)


def _openi_tree(root: Path) -> Path:
    xml = root / "ecgen-radiology"
    xml.mkdir(parents=True)
    (xml / "1.xml").write_text(_openi_xml("CXR1", "The heart is normal. No XXXX effusion.", "Normal chest x-XXXX.",
                                          [("major", "normal")], ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"]))
    (xml / "2.xml").write_text(_openi_xml("CXR2", "", "Cardiomegaly with small left effusion.",
                                          [("major", "Cardiomegaly/mild"), ("major", "Pleural Effusion/left/small"),
                                           ("major", "Thickening/pleura/apex/right"), ("automatic", "cardiomegaly")],
                                          ["CXR2_IM-0652-1001", "CXR2_IM-0652-2001"]))
    (xml / "3.xml").write_text(_openi_xml("CXR3", "Lungs clear.", "No acute disease.", [("major", "No Indexing")], []))
    (xml / "4.xml").write_text("<eCitation><uId id='CXR4'/>")  # truncated file
    png = root / "NLMCXR_png"
    for name in ("CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001", "CXR2_IM-0652-1001"):
        _img(png / f"{name}.png", 40, 32)
    return root  # CXR2_IM-0652-2001.png is missing


def test_openi_prepare(tmp_path):
    root = _openi_tree(tmp_path / "openi")
    ds = prepare("openi", root, tmp_path / "out", size=16, progress=False)
    assert ds.meta["id"].tolist() == ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001", "CXR2_IM-0652-1001"]
    assert ds.info["n_skipped"] == 1 and "CXR2_IM-0652-2001" in ds.info["skipped"][0]["file"]
    assert ds.info["n_bad_reports"] == 1 and ds.info["bad_reports"][0]["file"] == "4.xml"
    assert ds.info["n_reports"] == 3 and ds.info["n_reports_without_images"] == 1
    reports = pd.read_csv(ds.root / "reports.csv", keep_default_na=False)
    assert reports["uid"].tolist() == ["CXR1", "CXR2", "CXR3"]
    assert reports.loc[2, "impression"] == "No acute disease."  # text-only report kept
    m = ds.meta.set_index("id")
    assert m.loc["CXR2_IM-0652-1001", "findings"] == ""  # empty section kept as empty text
    assert ds.info["empty_text"] == {"report": 0, "findings": 1, "impression": 0}
    assert m.loc["CXR1_1_IM-0001-3001", "report"] == (
        "COMPARISON: None. INDICATION: XXXX-year-old with cough FINDINGS: The heart is normal. "
        "No XXXX effusion. IMPRESSION: Normal chest x-XXXX.")
    assert m.loc["CXR2_IM-0652-1001", "mesh_automatic"] == "cardiomegaly"
    assert _labels(ds, "cardiomegaly") == [0, 0, 1]
    assert _labels(ds, "no_finding") == [1, 1, 0]
    assert _labels(ds, "pleural_thickening") == [0, 0, 1] and _labels(ds, "effusion") == [0, 0, 1]
    assert _labels(ds, "pneumonia") == [0, 0, None]
    assert set(ds.meta["patient_id"]) == {"CXR1", "CXR2"}
    _no_leak(ds.meta)


def test_openi_mesh_mapping():
    lab = mesh_to_labels("Opacity/lung/base/left|Fractures, Bone/ribs|Hernia, Hiatal|Nodule")
    assert lab["lung_opacity"] == lab["fracture"] == lab["hernia"] == lab["nodule"] == 1
    assert lab["no_finding"] == 0 and np.isnan(lab["mass"])
    assert all(np.isnan(v) for v in mesh_to_labels("No Indexing").values())
    assert mesh_to_labels("normal")["no_finding"] == 1 and mesh_to_labels("normal")["mass"] == 0


# ============================================================================ covid fixture
COVID_COLS = ("patientid,offset,sex,age,finding,RT_PCR_positive,survival,view,modality,date,location,"
              "folder,filename,doi,url,license,clinical_notes,other_notes,Unnamed: 29\n")


def _covid_tree(root: Path) -> Path:
    rows = [
        ("1", "Pneumonia/Viral/COVID-19", "X-ray", "a.jpg", "A 65-year-old man with fever and cough for five days."),
        ("1", "Pneumonia/Viral/COVID-19", "CT", "a_ct.jpg", "CT slice."),
        ("2", "No Finding", "X-ray", "b.png", ""),
        ("3", "Pneumonia/Bacterial/Streptococcus", "X-ray", "c.jpg", "Lobar pneumonia in a young adult patient."),
        ("4", "Pneumonia/Viral", "X-ray", "d.jpg", "Viral pneumonia, agent not identified by the lab."),
        ("5", "SARS", "X-ray", "e.jpg", "Older version flat finding for this image."),
        ("6", "todo", "X-ray", "f.jpg", "Finding not yet entered by the curators."),
        ("7", "Pneumonia/Viral/COVID-19", "X-ray", "a.jpg", "Same image published for a second patient id."),
        ("8", "Tuberculosis", "X-ray", "missing.jpg", "Image file is missing from images."),
    ]
    root.mkdir(parents=True)
    (root / "metadata.csv").write_text(COVID_COLS + "".join(
        f'{p},0,M,60,{f},Y,Y,PA,{mod},2020,"Wuhan, China",{"volumes" if mod == "CT" else "images"},{fn},'
        f'10.1/x,http://x,CC BY,"{notes}",,\n' for p, f, mod, fn, notes in rows))
    for fn in ("a.jpg", "b.png", "c.jpg", "d.jpg", "e.jpg", "f.jpg"):
        _img(root / "images" / fn)
    return root


def test_covid_prepare(tmp_path):
    root = _covid_tree(tmp_path / "covid")
    ds = prepare("covid", root, tmp_path / "out", size=16, progress=False)
    assert len(ds) == 7 and ds.info["n_non_xray"] == 1 and ds.info["n_skipped"] == 1
    assert ds.label_names[:3] == ["covid19", "pneumonia", "no_finding"]
    assert {"viral", "bacterial", "streptococcus", "sars", "tuberculosis"} <= set(ds.label_names)
    ids = ds.meta["id"].tolist()
    assert ids == ["a", "b", "c", "d", "e", "f", "a__6"]  # <id>__<row of the X-ray table>
    assert _labels(ds, "covid19") == [1, 0, 0, None, 0, None, 1]
    assert _labels(ds, "pneumonia") == [1, 0, 1, 1, 1, None, 1]
    assert _labels(ds, "viral") == [1, 0, 0, 1, 1, None, 1]
    assert _labels(ds, "streptococcus") == [0, 0, 1, 0, 0, None, 0]
    assert _labels(ds, "no_finding") == [0, 1, 0, 0, 0, None, 0]
    assert ds.info["text_columns"] == ["report"] and ds.meta["report"].iloc[1] == ""
    assert ds.info["empty_text"] == {"report": 1}
    assert ds.meta.loc[0, "report"].startswith("A 65-year-old man")
    assert not any(c.startswith("Unnamed") for c in ds.meta.columns)
    split = ds.meta.set_index("id")["split"]
    assert split["a"] == split["a__6"]  # the repeated file stays in one split


def test_covid_legacy_findings():
    lab = finding_labels(pd.Series(["COVID-19", "COVID-19, ARDS", "Streptococcus", "Pneumonia", "No Finding"]))
    assert lab["label_covid19"].tolist()[:3] == [1, 1, 0]
    assert lab["label_ards"].tolist()[:2] == [0, 1]
    assert lab["label_bacterial"].tolist()[2] == 1 and np.isnan(lab["label_viral"].tolist()[3])
    assert lab["label_no_finding"].tolist() == [0, 0, 0, 0, 1]


# ============================================================================ tb fixtures
def test_tb_readings():
    assert parse_reading("male 35yrs\nnormal\n") == {"sex": "M", "age": 35.0, "report": "normal"}
    assert parse_reading("femal 32yrs\nSTB,ATB in the right upper field\n") == {
        "sex": "F", "age": 32.0, "report": "STB,ATB in the right upper field"}
    assert parse_reading("Female, 28yrs PTB in the left lower field") == {
        "sex": "F", "age": 28.0, "report": "PTB in the left lower field"}
    assert parse_reading("male 16month\n")["age"] == 1.33
    assert parse_reading("female 64days\nnormal")["age"] == 0.18
    assert parse_reading("Patient's Sex: F\nPatient's Age: 040Y\n\nnormal\n") == {
        "sex": "F", "age": 40.0, "report": "normal"}
    assert parse_reading("Patient's Sex: O \nPatient's Age: 005Y\nnormal")["sex"] == "O"
    assert parse_reading("") == {"sex": None, "age": pytest.approx(np.nan, nan_ok=True), "report": ""}


def test_shenzhen_prepare(tmp_path):
    root = tmp_path / "ChinaSet_AllFiles"
    readings = {"CHNCXR_0001_0": "male 35yrs\nnormal\n", "CHNCXR_0002_0": "Female 40yrs\ncalcification left\n",
                "CHNCXR_0327_1": "femal 32yrs\nSTB,ATB in the right upper field\n",
                "CHNCXR_0328_1": "male 28yrs\n\n"}
    for stem, text in readings.items():
        _img(root / "CXR_png" / f"{stem}.png", 36, 32)
        (root / "ClinicalReadings").mkdir(parents=True, exist_ok=True)
        (root / "ClinicalReadings" / f"{stem}.txt").write_text(text)
    _img(root / "CXR_png" / "CHNCXR_0329_1.png")  # no reading file
    (root / "CXR_png" / "CHNCXR_0330_1.png").write_bytes(b"not a png")  # broken image
    (root / "CXR_png" / "Thumbs.db").write_bytes(b"x")
    ds = prepare("shenzhen", tmp_path, tmp_path / "out", size=16, progress=False)
    assert ds.meta["id"].tolist() == ["CHNCXR_0001_0", "CHNCXR_0002_0", "CHNCXR_0327_1",
                                      "CHNCXR_0328_1", "CHNCXR_0329_1"]
    assert ds.info["n_skipped"] == 1 and "CHNCXR_0330_1" in ds.info["skipped"][0]["file"]
    assert _labels(ds, "tuberculosis") == [0, 0, 1, 1, 1]
    assert _labels(ds, "no_finding") == [1, None, 0, 0, 0]
    assert ds.meta["report"].tolist() == ["normal", "calcification left", "STB,ATB in the right upper field", "", ""]
    assert ds.info["empty_text"] == {"report": 2} and ds.info["n_readings_missing"] == 1
    assert ds.meta["sex"].tolist()[:3] == ["M", "F", "F"] and ds.masks is None
    assert (ds.meta["patient_id"] == ds.meta["id"]).all() and ds.info["split"]["method"] == "patient"


def test_montgomery_prepare_with_masks(tmp_path):
    root = tmp_path / "MontgomerySet"
    for stem in ("MCUCXR_0001_0", "MCUCXR_0002_1", "MCUCXR_0003_0"):
        _img(root / "CXR_png" / f"{stem}.png", 40, 32)
        (root / "ClinicalReadings").mkdir(parents=True, exist_ok=True)
        (root / "ClinicalReadings" / f"{stem}.txt").write_text(
            "Patient's Sex: F\nPatient's Age: 040Y\n\n" + ("normal\n" if stem[-1] == "0" else "left upper lobe cavity\n"))
    for stem in ("MCUCXR_0001_0", "MCUCXR_0002_1"):  # MCUCXR_0003_0 has no mask
        left = np.zeros((32, 40), np.uint8)
        left[8:24, 24:36] = 255
        right = np.zeros((32, 40), np.uint8)
        right[8:24, 4:16] = 1
        for side, a in (("leftMask", left), ("rightMask", right)):
            (root / "ManualMask" / side).mkdir(parents=True, exist_ok=True)
            Image.fromarray(a).save(root / "ManualMask" / side / f"{stem}.png")
    ds = prepare("montgomery", root, tmp_path / "out", size=20, progress=False)
    assert len(ds) == 3 and ds.meta["has_mask"].tolist() == [1, 1, 0]
    assert ds.info["has_masks"] and ds.info["n_masks"] == 2
    assert ds.masks.shape == (3, 20, 20) and set(np.unique(ds.masks)) == {0, 1}
    assert ds.masks[2].max() == 0
    # 40x32 padded to 40x40 (4 rows on top), scaled by 0.5: rows 8..24 -> 6..14, both lungs
    mask = np.asarray(ds.masks[0])
    assert mask[6:14, 2:8].all() and mask[6:14, 12:18].all() and mask[:5].max() == 0
    assert mask[:, 9:11].max() == 0
    assert _labels(ds, "tuberculosis") == [0, 1, 0] and ds.meta["age"].tolist() == [40.0] * 3
    assert ds.meta["report"].tolist()[1] == "left upper lobe cavity"


# ============================================================================ malformed inputs
@pytest.mark.parametrize("source,build,file,column", [
    ("nih14", "nih", "Data_Entry_2017.csv", "Patient ID"),
    ("chexpert", "chexpert", "train.csv", "Path"),
    ("mimic-cxr", "mimic", "mimic-cxr-2.0.0-metadata.csv.gz", "study_id"),
    ("covid", "covid", "metadata.csv", "filename"),
])
def test_missing_column_names_file_and_column(tmp_path, source, build, file, column):
    root = {"nih": _nih_tree, "chexpert": _chexpert_tree, "mimic": _mimic_tree, "covid": _covid_tree}[build](
        tmp_path / "in")
    path = root / file
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table = table.drop(columns=[column])
    if path.suffix == ".gz":
        _gz(path, table.to_csv(index=False))
    else:
        table.to_csv(path, index=False)
    with pytest.raises(CxrclError) as e:
        prepare(source, root, tmp_path / "out", size=16, progress=False)
    assert file in str(e.value) and repr(column) in str(e.value)
    assert not (tmp_path / "out").exists()


def test_openi_parse_error_without_error_list(tmp_path):
    root = _openi_tree(tmp_path / "openi")
    with pytest.raises(CxrclError, match="4.xml"):
        parse_openi_report_table(root / "ecgen-radiology")


def test_covid_metadata_parse_only(tmp_path):
    root = _covid_tree(tmp_path / "covid")
    meta, n_ct = parse_covid_metadata(root / "metadata.csv")
    assert len(meta) == 8 and n_ct == 1 and meta["path"].iloc[0] == "images/a.jpg"
