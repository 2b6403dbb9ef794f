"""The labeller evaluation against MeSH (:mod:`cxrcl.text.label_eval`) and the ``cxrcl text label``
/ ``label-eval`` commands."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cxrcl.cli import main
from cxrcl.text.label_eval import EVAL_FINDINGS, mesh_truth, scores, split_of
from tests.conftest import shared_data


def test_split_is_fixed_and_about_half():
    ids = [f"CXR{i}" for i in range(1, 4000)]
    halves = [split_of(i) for i in ids]
    assert halves == [split_of(i) for i in ids]
    assert 0.45 < halves.count("dev") / len(ids) < 0.55


def test_mesh_truth_mapping():
    t = mesh_truth(pd.Series(["normal", "Pleural Effusion/left/small|Cardiac Shadow/enlarged",
                              "No Indexing", "Opacity/lung/base|Airspace Disease/lung"]))
    assert t.loc[0, "normal"] == 1 and t.loc[0, "effusion"] == 0
    assert t.loc[1, "effusion"] == 1 and t.loc[1, "cardiomegaly"] == 1 and t.loc[1, "normal"] == 0
    assert t.loc[2, "normal"] == -1  # unknown: not scored
    assert t.loc[3, "opacity"] == 1


def test_scores_by_hand():
    truth = pd.DataFrame({n: [1, 1, 0, 0] for n in EVAL_FINDINGS})
    pred = pd.DataFrame({n: [1, 0, 1, 0] for n in EVAL_FINDINGS})
    truth["normal"] = [1, 0, -1, 0]  # the unknown row is left out
    s = scores(truth, pred)
    assert s["findings"]["effusion"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2,
                                         "predicted": 2}
    assert s["findings"]["normal"]["support"] == 1 and s["findings"]["normal"]["f1"] == 1.0


def test_label_command_and_refusal(tmp_path, capsys):
    csv = tmp_path / "r.csv"
    pd.DataFrame({"id": ["a", "b"], "report": ["IMPRESSION: Cannot exclude pneumonia.",
                                               "FINDINGS: No pleural effusion."]}).to_csv(csv, index=False)
    out = tmp_path / "labels.csv"
    assert main(["text", "label", str(csv), "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert list(table["id"]) == ["a", "b"]
    assert table.loc[0, "pneumonia"] == -1 and table.loc[1, "effusion"] == 0
    assert main(["text", "label", str(csv), "--out", str(out)]) == 2  # never overwrites
    err = capsys.readouterr().err
    assert "already exists" in err and "Traceback" not in err


@pytest.mark.shared_data
def test_label_eval_on_real_reports(tmp_path):
    out = tmp_path / "labeller.json"
    assert main(["text", "label-eval", str(shared_data("openi_reports")), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert set(res["findings"]) == set(EVAL_FINDINGS)
    assert res["n_reports"] == 3955
    for part in (res, res["splits"]["heldout"]):
        assert part["macro_f1"] >= 0.80
        assert all(v["f1"] >= 0.70 for v in part["findings"].values()), part["findings"]
    assert len(res["disagreements"]) == 20
    assert res["splits"]["dev"]["n_reports"] + res["splits"]["heldout"]["n_reports"] == 3955


def test_labeller_on_phantom_reports(tmp_path):
    """The phantom's templated reports (another author's phrasing) against its own labels."""
    assert main(["data", "phantom", str(tmp_path / "ph"), "--n", "200", "--size", "32"]) == 0
    meta = pd.read_csv(tmp_path / "ph" / "meta.csv")
    from cxrcl.text.labeller import label_text

    labels = pd.DataFrame([label_text(r) for r in meta["report"]])
    for name in ("nodule", "effusion", "cardiomegaly", "pneumothorax", "consolidation"):
        truth = meta[f"label_{name}"].astype(int).to_numpy()
        pred = (labels[name] == 1).astype(int).to_numpy()
        assert (pred[truth == 0] == 0).all(), name  # no false positive
        assert pred[truth == 1].mean() >= (0.85 if name == "consolidation" else 1.0), name
