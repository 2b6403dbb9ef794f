"""The Open-i report parser on all 3,955 real ecgen-radiology XML files (../shared/data)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxrcl.data.sources.openi import images_from_reports, parse_openi_report_table
from cxrcl.text.sections import extract_sections

XML_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "openi_reports" / "ecgen-radiology"


@pytest.fixture(scope="module")
def reports():
    if not XML_DIR.is_dir():
        pytest.skip(f"{XML_DIR} not found: the real Open-i reports live in ../shared/data/openi_reports")
    errors: list[dict] = []
    table = parse_openi_report_table(XML_DIR, errors=errors)
    assert errors == []  # zero parse errors
    return table


@pytest.mark.shared_data
def test_all_real_reports_parse(reports):
    assert len(reports) == 3955 == len(list(XML_DIR.glob("*.xml")))
    assert reports["uid"].is_unique
    assert int(reports["n_images"].sum()) == 7470
    assert int((reports["n_images"] == 0).sum()) == 104
    assert int((reports["findings"] != "").sum()) == 3425
    assert int((reports["impression"] != "").sum()) == 3921
    assert int((reports["indication"] != "").sum()) == 3865
    assert int((reports["comparison"] != "").sum()) == 3333
    assert reports["report"].str.contains("XXXX").sum() > 1000  # de-identification kept as-is
    assert int((reports["mesh_major"] == "normal").sum()) == 1391


@pytest.mark.shared_data
def test_real_label_counts(reports):
    pos = {c[len("label_"):]: int((reports[c] == 1).sum()) for c in reports if c.startswith("label_")}
    assert pos == {
        "atelectasis": 332, "calcified_granuloma": 274, "cardiomegaly": 395, "consolidation": 30,
        "edema": 46, "effusion": 161, "emphysema": 102, "enlarged_cardiomediastinum": 6,
        "fibrosis": 20, "fracture": 84, "granuloma": 164, "hernia": 50, "infiltration": 65,
        "lung_opacity": 531, "mass": 17, "no_finding": 1391, "nodule": 111, "pleural_thickening": 47,
        "pneumonia": 42, "pneumothorax": 27, "support_devices": 291, "tuberculosis": 2}
    normal = reports["mesh_major"] == "normal"
    assert (reports.loc[normal, "label_cardiomegaly"] == 0).all()
    assert reports.loc[~normal, "label_cardiomegaly"].isin([1]).sum() == 395
    assert reports.loc[~normal, "label_cardiomegaly"].isna().sum() == 3955 - 1391 - 395
    assert int(reports["label_no_finding"].isna().sum()) == 101  # 'No Indexing' and the like


@pytest.mark.shared_data
def test_real_images_and_sections(reports):
    images = images_from_reports(reports)
    assert len(images) == 7470 and images["id"].is_unique
    assert images["patient_id"].nunique() == 3851
    row = reports.set_index("uid").loc["CXR1"]
    assert row["impression"] == "Normal chest x-XXXX."
    assert row["image_ids"] == "CXR1_1_IM-0001-3001|CXR1_1_IM-0001-4001"
    # the composed report splits back into the published sections, except where the publisher's
    # own text holds a header ("INDICATION: INDICATION: PAIN;", a second IMPRESSION:)
    keys = ("findings", "impression", "indication", "comparison")
    differ = {k: 0 for k in keys}
    for _, r in reports.iterrows():
        s = extract_sections(r["report"])
        for k in keys:
            differ[k] += s[k] != r[k]
    assert differ["findings"] <= 1 and differ["impression"] <= 1
    assert sum(differ.values()) <= 14
