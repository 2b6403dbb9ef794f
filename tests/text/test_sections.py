"""The report section parser (:mod:`cxrcl.text.sections`)."""

from __future__ import annotations

from cxrcl.text.sections import STANDARD_SECTIONS, extract_sections

MIMIC = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with new onset ascites  // eval for infection

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  None.

 FINDINGS:

 There is no focal consolidation, pleural effusion or pneumothorax.  Bilateral
 nodular opacities that most likely represent nipple shadows.

 IMPRESSION:

 No acute cardiopulmonary process.
"""


def test_mimic_report():
    s = extract_sections(MIMIC)
    assert s["findings"] == ("There is no focal consolidation, pleural effusion or pneumothorax. "
                             "Bilateral nodular opacities that most likely represent nipple shadows.")
    assert s["impression"] == "No acute cardiopulmonary process."
    assert s["indication"] == "___F with new onset ascites // eval for infection"  # ___ kept
    assert s["technique"] == "Chest PA and lateral"
    assert s["comparison"] == "None."
    assert s["examination"] == "CHEST (PA AND LAT)"
    assert "preamble" not in s  # the FINAL REPORT banner is dropped


def test_any_case_headers_at_line_start():
    s = extract_sections("findings: Clear lungs.\nImpression: normal chest\nIndication: cough\n"
                         "Comparison: 2010\ntechnique: PA")
    assert s == {"findings": "Clear lungs.", "impression": "normal chest", "indication": "cough",
                 "comparison": "2010", "technique": "PA"}


def test_inline_upper_case_headers_and_openi_style():
    s = extract_sections("COMPARISON: None. INDICATION: Positive TB test FINDINGS: The heart is "
                         "normal. There are no XXXX of effusion. IMPRESSION: Normal chest x-XXXX.")
    assert s["comparison"] == "None."
    assert s["indication"] == "Positive TB test"
    assert s["findings"] == "The heart is normal. There are no XXXX of effusion."
    assert s["impression"] == "Normal chest x-XXXX."


def test_mixed_case_mid_line_is_not_a_header():
    s = extract_sections("FINDINGS: see impression: below")
    assert s["findings"] == "see impression: below" and s["impression"] == ""


def test_preamble_aliases_repeats_and_other_caps_headers():
    text = ("WET READ: ___ no ptx\n FINAL REPORT\n HISTORY: cough\n CLINICAL HISTORY: fever\n"
            " FINDINGS AND IMPRESSION: clear\n CONCLUSION: fine\n NOTIFICATION: called Dr. ___")
    s = extract_sections(text)
    assert s["wet_read"] == "___ no ptx"
    assert s["history"] == "cough fever"
    assert s["impression"] == "clear fine"
    assert s["notification"] == "called Dr. ___"
    assert extract_sections("Portable chest.\nFINDINGS: ok")["preamble"] == "Portable chest."


def test_empty_and_headerless():
    assert extract_sections("") == dict.fromkeys(STANDARD_SECTIONS, "")
    assert extract_sections(None) == dict.fromkeys(STANDARD_SECTIONS, "")
    s = extract_sections("No acute process.")
    assert s["preamble"] == "No acute process." and s["findings"] == ""
    assert extract_sections("FINDINGS:\nIMPRESSION: x")["findings"] == ""
