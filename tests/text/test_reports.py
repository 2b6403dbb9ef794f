"""Report cleaning, sentence splitting and reading (:mod:`cxrcl.text.reports`)."""

from __future__ import annotations

import pandas as pd
import pytest

from cxrcl.errors import CxrclError
from cxrcl.text.reports import clean_report, read_reports, split_sentences
from tests.conftest import shared_data


@pytest.mark.parametrize(("raw", "tokens"), [
    ("Stable left XXXX.", ["Stable", "left", "XXXX."]),
    ("A XXXX-year-old with cough.", ["A", "XXXX", "-", "year-old", "with", "cough."]),
    ("Dr. XXXXXXXX was called.", ["Dr.", "XXXX", "XXXX", "was", "called."]),
    ("ComparisXXXX: none", ["Comparis", "XXXX:", "none"]),
    ("x-XXXX of the chest", ["x", "-", "XXXX", "of", "the", "chest"]),
])
def test_placeholder_survives_cleaning_as_one_token(raw, tokens):
    cleaned = clean_report(raw)
    assert cleaned.split() == tokens
    assert cleaned.count("XXXX") == raw.count("XXXX")  # no placeholder lost or merged


def test_mimic_placeholder_kept():
    assert clean_report("___F with   cough") == "___F with cough"


def test_cleaning_fixes_spacing_and_punctuation():
    assert clean_report("apex.There is  scarring . .") == "apex. There is scarring."
    assert clean_report(None) == "" and clean_report(float("nan")) == ""


def test_sentence_split():
    text = ("1. No acute disease. 2. Stable 2.0 cm nodule; no effusion. Dr. XXXX was called. "
            "Is there a pneumothorax? No.")
    assert split_sentences(text) == ["No acute disease.", "Stable 2.0 cm nodule;", "no effusion.",
                                     "Dr. XXXX was called.", "Is there a pneumothorax?", "No."]


def test_read_csv_and_txt_folder(tmp_path):
    csv = tmp_path / "r.csv"
    pd.DataFrame({"id": ["a", "b"], "report": ["FINDINGS: Clear lungs. IMPRESSION: Normal.",
                                               "small effusion"]}).to_csv(csv, index=False)
    t = read_reports(csv)
    assert list(t["id"]) == ["a", "b"]
    assert t.loc[0, "findings"] == "Clear lungs." and t.loc[0, "impression"] == "Normal."
    assert t.loc[1, "findings"] == "small effusion"  # free text with no headers
    mimic = tmp_path / "files" / "p10" / "p10000032"
    mimic.mkdir(parents=True)
    (mimic / "s50414267.txt").write_text(
        "                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n\n"
        " INDICATION:  ___F with cough\n\n FINDINGS:\n\n No focal consolidation.\n\n"
        " IMPRESSION:\n\n No acute cardiopulmonary process.\n")
    m = read_reports(tmp_path / "files")
    assert m.loc[0, "id"] == "s50414267"
    assert m.loc[0, "impression"] == "No acute cardiopulmonary process."
    assert m.loc[0, "indication"] == "___F with cough"


def test_read_errors_are_one_sentence(tmp_path):
    with pytest.raises(CxrclError, match="does not exist"):
        read_reports(tmp_path / "missing")
    csv = tmp_path / "r.csv"
    pd.DataFrame({"x": [1]}).to_csv(csv, index=False)
    with pytest.raises(CxrclError, match="--column"):
        read_reports(csv)
    with pytest.raises(CxrclError, match="no column 'y'"):
        read_reports(csv, column="y")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CxrclError, match="holds no reports"):
        read_reports(tmp_path / "empty")


@pytest.mark.shared_data
def test_real_openi_sections():
    table = read_reports(shared_data("openi_reports"))
    assert len(table) == 3955 and table["id"].is_unique
    first = table.set_index("id").loc["CXR1"]
    assert first["findings"].startswith("The cardiac silhouette and mediastinum size are within normal")
    assert first["impression"] == "Normal chest x-XXXX."
    assert first["comparison"] == "None."
    # most reports have an impression; the placeholder is in the text as published
    assert (table["impression"].str.len() > 0).mean() > 0.95
    assert table["text"].str.contains("XXXX").mean() > 0.5
