"""Label-matched image-report pairing: classes match, held-out texts never appear in training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxrcl.cli import main
from cxrcl.data.pairing import pair_reports, report_classes, split_texts
from cxrcl.data.writer import write_prepared
from cxrcl.errors import CxrclError
from cxrcl.text.reports import read_reports

NORMAL = ["FINDINGS: The lungs are clear. Heart size is normal. IMPRESSION: No acute disease.",
          "FINDINGS: No focal consolidation, effusion or pneumothorax. IMPRESSION: Normal chest.",
          "FINDINGS: Lungs are clear bilaterally. IMPRESSION: No acute cardiopulmonary abnormality."]
ABNORMAL = ["FINDINGS: Right lower lobe consolidation. IMPRESSION: Pneumonia.",
            "FINDINGS: Patchy airspace opacity in the left base. IMPRESSION: Left basilar pneumonia.",
            "FINDINGS: Bilateral interstitial infiltrates. IMPRESSION: Infiltrates."]
OTHER = ["FINDINGS: Small left pleural effusion. IMPRESSION: Effusion.",  # neither class
         "FINDINGS: Heart is enlarged. IMPRESSION: Cardiomegaly."]


def _reports_csv(path, n_copies: int = 8):
    texts = []
    for k in range(n_copies):  # distinct texts (numbered) plus exact repeats of the first ones
        texts += [t.replace("IMPRESSION:", f"Study {k}. IMPRESSION:") for t in NORMAL + ABNORMAL]
    texts += NORMAL + NORMAL + OTHER + [""]
    pd.DataFrame({"id": [f"r{i}" for i in range(len(texts))], "report": texts}).to_csv(path, index=False)
    return path


def _images(path, n: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 255, (n, 8, 8), dtype=np.uint8)
    lab = (rng.random(n) < 0.4).astype(float)
    lab[:5] = np.nan
    split = np.array(["train"] * 7 + ["val"] + ["test"] * 2)[np.arange(n) % 10]
    meta = pd.DataFrame({"id": [f"i{i}" for i in range(n)], "patient_id": [f"p{i}" for i in range(n)],
                         "split": split, "label_covid19": lab})
    return write_prepared(path, imgs, meta, source="test", label_names=["covid19"])


def test_report_classes_follow_the_labeller(tmp_path):
    t = report_classes(read_reports(_reports_csv(tmp_path / "r.csv")))
    got = dict(zip(t["report"], t["report_class"], strict=True))
    assert all(got[t.replace("IMPRESSION:", "Study 0. IMPRESSION:")] == "normal" for t in NORMAL)
    assert all(got[t.replace("IMPRESSION:", "Study 0. IMPRESSION:")] == "abnormal" for t in ABNORMAL)
    assert not any("Effusion." in r or "Cardiomegaly" in r for r in t["report"])  # other findings unused
    assert all(r.startswith("FINDINGS: ") for r in t["report"])


def test_split_texts_keeps_identical_texts_together():
    s = split_texts(pd.Series(["a b", "A  b", "c", "d"]), {"train": 0.5, "val": 0.25, "test": 0.25}, 0)
    assert s.iloc[0] == s.iloc[1]
    assert set(s) <= {"train", "val", "test"}


def test_pairing_matches_labels_and_keeps_held_out_texts_unseen(tmp_path):
    ds = _images(tmp_path / "img")
    out = pair_reports(ds.root, _reports_csv(tmp_path / "r.csv"), tmp_path / "paired", positive="covid19", seed=3)
    m = out.meta
    assert len(out) == 195  # unknown labels dropped
    assert (m["report_class"] == np.where(m["label_covid19"] == 1, "abnormal", "normal")).all()
    norm = m["report"].str.lower().str.split().str.join(" ")
    train = set(norm[m["split"] == "train"])
    assert train.isdisjoint(norm[m["split"] == "test"]) and train.isdisjoint(norm[m["split"] == "val"])
    # images keep their split, pixels and labels
    src = ds.meta.set_index("id")
    assert (src.loc[m["id"], "split"].to_numpy() == m["split"].to_numpy()).all()
    row = int(np.flatnonzero(ds.meta["id"] == m["id"].iloc[0])[0])
    assert (np.asarray(out.images[0]) == np.asarray(ds.images[row])).all()
    info = out.info["pairing"]
    assert info["positive_label"] == "covid19" and "not an image's own report" in info["caveat"]
    assert info["identical_texts_merged"] >= len(NORMAL)
    # deterministic
    again = pair_reports(ds.root, tmp_path / "r.csv", tmp_path / "paired2", positive="covid19", seed=3)
    assert again.meta["report"].tolist() == m["report"].tolist()


def test_pairing_errors(tmp_path, capsys):
    ds = _images(tmp_path / "img")
    csv = _reports_csv(tmp_path / "r.csv")
    with pytest.raises(CxrclError, match="no label 'pneumonia'"):
        pair_reports(ds.root, csv, tmp_path / "o", positive="pneumonia")
    only_normal = tmp_path / "n.csv"
    pd.DataFrame({"id": ["a", "b"], "report": NORMAL[:2]}).to_csv(only_normal, index=False)
    with pytest.raises(CxrclError, match="no usable abnormal report"):
        pair_reports(ds.root, only_normal, tmp_path / "o", positive="covid19")
    code = main(["data", "pair-reports", str(ds.root), str(csv), str(tmp_path / "cli"), "--positive", "covid19"])
    assert code == 0 and "paired 195 images" in capsys.readouterr().out
    code = main(["data", "pair-reports", str(ds.root), str(csv), str(tmp_path / "cli"), "--positive", "covid19"])
    err = capsys.readouterr().err
    assert code == 2 and "--overwrite" in err and "Traceback" not in err
    code = main(["data", "pair-reports", str(ds.root), str(csv), str(ds.root), "--positive", "covid19",
                 "--overwrite"])
    assert code == 2 and "input itself" in capsys.readouterr().err
