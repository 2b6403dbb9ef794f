"""The labeller's negation / uncertainty scope on sentences written from the Open-i reports' own
phrasing (1 positive, 0 negative, -1 uncertain, None not mentioned)."""

from __future__ import annotations

import math

import pytest

from cxrcl.text.labeller import label_text

# (sentence, finding, expected)
CASES = [
    ("No pleural effusion or pneumothorax.", "effusion", 0),
    ("No pleural effusion or pneumothorax.", "pneumothorax", 0),
    ("There is no focal airspace disease, pleural effusion, or pneumothorax.", "lung_opacity", 0),
    ("No focal consolidation, suspicious pulmonary opacity, large pleural effusion, or pneumothorax "
     "is identified.", "effusion", 0),
    ("No focal consolidation, suspicious pulmonary opacity, large pleural effusion, or pneumothorax "
     "is identified.", "lung_opacity", 0),
    ("There is no focal air space opacity to suggest a pneumonia.", "pneumonia", 0),
    ("No findings to suggest pleural effusion.", "effusion", 0),
    ("No suspicious pulmonary mass or nodule is seen.", "nodule", 0),
    ("Negative for pneumothorax or pleural effusion.", "pneumothorax", 0),
    ("Lungs are clear without evidence of infiltrate or effusion.", "effusion", 0),
    ("Cannot exclude pneumonia.", "pneumonia", -1),
    ("Left basilar pneumonia cannot be excluded.", "pneumonia", -1),
    ("Early pneumonia is not excluded.", "pneumonia", -1),
    ("Difficult to exclude a small left pleural effusion.", "effusion", -1),
    ("Right lower lobe opacity may represent atelectasis or pneumonia.", "atelectasis", -1),
    ("Right lower lobe opacity may represent atelectasis or pneumonia.", "pneumonia", -1),
    ("Right lower lobe opacity may represent atelectasis or pneumonia.", "lung_opacity", 1),
    ("Possible small right pleural effusion.", "effusion", -1),
    ("Questionable tiny left apical pneumothorax.", "pneumothorax", -1),
    ("Findings concerning for right middle lobe pneumonia.", "pneumonia", -1),
    ("Mild interstitial opacities which could represent edema.", "edema", -1),
    ("No change in the small left pleural effusion.", "effusion", 1),
    ("No interval change in moderate left pneumothorax.", "pneumothorax", 1),
    ("Stable cardiomegaly.", "cardiomegaly", 1),
    ("The heart is mildly enlarged.", "cardiomegaly", 1),
    ("Heart size is mildly enlarged.", "cardiomegaly", 1),
    ("The cardiac silhouette is enlarged.", "cardiomegaly", 1),
    ("The heart is not enlarged.", "cardiomegaly", 0),
    ("Heart size is normal.", "cardiomegaly", 0),
    ("Normal heart size and mediastinal contours.", "cardiomegaly", 0),
    ("The cardiomediastinal silhouette is within normal limits.", "cardiomegaly", 0),
    ("Heart size within normal limits.", "cardiomegaly", 0),
    ("The previously seen right pleural effusion has resolved.", "effusion", 0),
    ("Interval resolution of left lower lobe pneumonia.", "pneumonia", 0),
    ("Recommend followup to ensure resolution of the right middle lobe pneumonia.", "pneumonia", 1),
    ("Bibasilar subsegmental atelectasis.", "atelectasis", 1),
    ("Streaky opacities in the left base likely atelectasis.", "atelectasis", 1),
    ("Left lower lobe airspace disease most consistent with pneumonia.", "pneumonia", 1),
    ("Moderate right pleural effusion and small left pleural effusion.", "effusion", 1),
    ("No effusion, the heart is enlarged.", "cardiomegaly", 1),
    ("No effusion, the heart is enlarged.", "effusion", 0),
    ("No pneumothorax. Small left pleural effusion.", "effusion", 1),
    ("No evidence of pulmonary edema.", "edema", 0),
    ("Stable cardiomegaly without overt pulmonary edema.", "edema", 0),
    ("Stable cardiomegaly without overt pulmonary edema.", "cardiomegaly", 1),
    ("Mild pulmonary interstitial edema.", "edema", 1),
    ("There is an 8mm nodule in the left lower lobe.", "nodule", 1),
    ("Calcified granuloma in the right upper lobe.", "nodule", None),
    ("Nodular opacities consistent with chronic granulomatous disease.", "lung_opacity", 1),
    ("No pericardial effusion.", "effusion", None),
    ("Small right apical pneumothorax.", "pneumothorax", 1),
    ("No visible pneumothorax.", "pneumothorax", 0),
    ("Pneumothorax is not seen.", "pneumothorax", 0),
    ("Pleural effusions are no longer seen.", "effusion", 0),
    ("No acute cardiopulmonary abnormality.", "no_finding", 1),
    ("The lungs are clear. No acute disease.", "no_finding", 1),
    ("Mild degenerative changes of the thoracic spine.", "no_finding", 0),
    ("Calcified granuloma in the right upper lobe.", "no_finding", 0),
    ("The heart is normal in size. The lungs are clear.", "no_finding", 1),
    ("Lung volumes are low.", "no_finding", 0),
]


@pytest.mark.parametrize(("sentence", "finding", "expected"), CASES)
def test_negation_and_uncertainty(sentence, finding, expected):
    got = label_text(sentence)[finding]
    if expected is None:
        assert math.isnan(got), f"{sentence!r}: {finding} should be unmentioned, got {got}"
    else:
        assert got == expected, f"{sentence!r}: {finding} expected {expected}, got {got}"


def test_case_table_is_large_enough():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) >= 40


def test_indication_is_not_read():
    from cxrcl.text.labeller import label_report

    row = {"indication": "Evaluate for pneumonia.", "findings": "The lungs are clear.",
           "impression": "No acute disease."}
    assert math.isnan(label_report(row)["pneumonia"])
    assert label_report(row)["no_finding"] == 1


def test_positive_beats_negative_across_sentences():
    assert label_text("No effusion on the right. Small left pleural effusion.")["effusion"] == 1


def test_label_columns_for_a_prepared_set():
    import math

    from cxrcl.text.labeller import label_columns

    cols = label_columns(["Small left pleural effusion. Cannot exclude pneumonia.", None],
                         ["effusion", "pneumonia", "tuberculosis", "no_finding"])
    assert cols["label_effusion"][0] == 1 and math.isnan(cols["label_pneumonia"][0])
    assert math.isnan(cols["label_tuberculosis"][0])  # not in the labeller's lexicon
    assert cols["label_no_finding"] == [0, 1]  # an empty report asserts nothing abnormal
