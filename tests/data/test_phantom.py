"""The phantom data set: determinism, format, label/mask/box consistency, learnability, reports."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from cxrcl.data.phantom import FINDINGS, make_phantom, render_phantom
from cxrcl.data.prepared import PreparedDataset
from cxrcl.errors import CxrclError

LABELS = [f"label_{f}" for f in FINDINGS]


@pytest.fixture(scope="module")
def small():
    return render_phantom(48, 64, seed=3)


@pytest.fixture(scope="module")
def many():
    return render_phantom(600, 64, seed=0)


# ----------------------------------------------------------------------------- determinism
def test_same_seed_is_byte_identical_and_other_seed_differs(small):
    images, masks, meta = small
    images2, masks2, meta2 = render_phantom(48, 64, seed=3)
    assert images.tobytes() == images2.tobytes()
    assert masks.tobytes() == masks2.tobytes()
    assert meta.equals(meta2)
    other, _, meta_other = render_phantom(48, 64, seed=4)
    assert not np.array_equal(images, other)
    assert not meta["report"].equals(meta_other["report"])


def test_image_i_does_not_depend_on_n(small):
    images, masks, meta = small  # 48 images at 64 px span two render batches
    head, head_masks, head_meta = render_phantom(7, 64, seed=3)
    assert np.array_equal(head, images[:7])
    assert np.array_equal(head_masks, masks[:7])
    assert head_meta.equals(meta.iloc[:7].reset_index(drop=True))


# ----------------------------------------------------------------------------- format
@pytest.mark.parametrize("size", [16, 33, 64])
def test_shapes_dtypes_and_columns(size):
    images, masks, meta = render_phantom(20, size, seed=1)
    assert images.shape == masks.shape == (20, size, size)
    assert images.dtype == masks.dtype == np.uint8
    assert set(np.unique(masks)) <= {0, 1}
    for col in ["id", "patient_id", *LABELS, "report", "lesion_boxes", "has_mask", "ctr"]:
        assert col in meta.columns, col
    assert meta["id"].is_unique and (meta["has_mask"] == 1).all()
    assert meta["id"].iloc[0] == "phantom_000000"
    # images have contrast: dark air, bright mediastinum
    assert images.min() < 40 and images.max() > 160
    # patients hold 1-3 consecutive images
    counts = meta.groupby("patient_id", sort=False).size()
    assert counts.between(1, 3).all()


def test_rates_and_normals(many):
    _, _, meta = many
    rates = meta[LABELS].mean()
    assert rates.between(0.08, 0.32).all(), rates.to_dict()
    normal = (meta[LABELS].sum(axis=1) == 0).mean()
    assert 0.28 < normal < 0.55
    assert (meta[LABELS].sum(axis=1) >= 2).any()  # multi-label
    # cardiomegaly: cardiothoracic ratio above 0.5 exactly when labelled
    cardio = meta["label_cardiomegaly"] == 1
    assert (meta.loc[cardio, "ctr"] > 0.5).all() and (meta.loc[~cardio, "ctr"] < 0.5).all()
    assert meta.loc[~cardio, "ctr"].median() == pytest.approx(0.43, abs=0.03)


# ----------------------------------------------------------------------------- masks and boxes
def test_labels_masks_and_boxes_agree(many):
    _, masks, meta = many
    size = masks.shape[1]
    for i, row in meta.iterrows():
        boxes = json.loads(row["lesion_boxes"])
        positive = [f for f in FINDINGS if row[f"label_{f}"] == 1]
        assert sorted(b[0] for b in boxes) == sorted(positive)
        if not positive:
            assert masks[i].sum() == 0
            continue
        assert masks[i].sum() > 0
        covered = np.zeros((size, size), bool)
        for _, x0, y0, x1, y1 in boxes:
            assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
            assert masks[i, y0:y1, x0:x1].any()  # each box holds some lesion pixels
            covered[y0:y1, x0:x1] = True
        assert not (masks[i].astype(bool) & ~covered).any()  # no lesion pixel outside the boxes


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    out = mask.copy()
    padded = np.pad(mask, r)
    h, w = mask.shape
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out |= padded[r + dy:r + dy + h, r + dx:r + dx + w]
    return out


def test_nodules_and_consolidations_are_brighter_than_their_surroundings(many):
    images, masks, meta = many
    brighter, total = 0, 0
    for i, row in meta.iterrows():
        for finding, x0, y0, x1, y1 in json.loads(row["lesion_boxes"]):
            if finding not in ("nodule", "consolidation"):
                continue
            inside = np.zeros(masks[i].shape, bool)
            inside[y0:y1, x0:x1] = masks[i, y0:y1, x0:x1] > 0
            ring = _dilate(inside, 3) & ~_dilate(inside, 1) & (masks[i] == 0)
            if inside.sum() == 0 or ring.sum() == 0:
                continue
            total += 1
            brighter += images[i][inside].mean() > images[i][ring].mean()
    assert total > 50
    assert brighter / total > 0.8


def test_a_simple_model_learns_findings_from_downsampled_pixels(many):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    images, _, meta = many
    n, size = len(images), images.shape[1]
    x = images.astype(np.float32).reshape(n, 32, size // 32, 32, size // 32).mean(axis=(2, 4))
    x = x.reshape(n, -1) / 255.0
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    train, test = np.arange(n) < 400, np.arange(n) >= 400
    auc = {}
    for finding in ("effusion", "cardiomegaly"):
        y = meta[f"label_{finding}"].to_numpy()
        clf = LogisticRegression(C=0.05, max_iter=2000).fit(x[train], y[train])
        auc[finding] = roc_auc_score(y[test], clf.decision_function(x[test]))
    assert max(auc.values()) > 0.75, auc
    assert min(auc.values()) > 0.7, auc


# ----------------------------------------------------------------------------- reports
KEYWORDS = {
    "nodule": r"nodul",
    "consolidation": r"consolidat|airspace|pneumonia",
    "effusion": r"effusion",
    "cardiomegaly": r"cardiomegaly|\bheart\b|cardiac",
    "pneumothorax": r"pneumothorax|pleural line",
}
NEGATION = re.compile(r"\b(no|not|without|normal|negative|clear|unremarkable)\b", re.I)


def _sentences(report: str) -> list[str]:
    body = report.split("FINDINGS:", 1)[1]  # the indication may mention a suspicion
    body = body.replace("IMPRESSION:", ". ")
    return [s.strip() for s in re.split(r"(?<=\.)\s+", body) if s.strip()]


def test_reports_mention_present_findings_and_negate_absent_ones(many):
    _, _, meta = many
    negated_seen = {f: 0 for f in FINDINGS}
    for _, row in meta.iterrows():
        report = row["report"]
        assert "FINDINGS:" in report and "IMPRESSION:" in report
        sents = _sentences(report)
        for finding, pattern in KEYWORDS.items():
            hits = [s for s in sents if re.search(pattern, s, re.I)]
            if row[f"label_{finding}"] == 1:
                assert any(not NEGATION.search(s) for s in hits), (finding, report)
            else:
                assert all(NEGATION.search(s) for s in hits), (finding, report)
                negated_seen[finding] += bool(hits)
    # absent findings are explicitly negated often (not just omitted)
    for finding in ("effusion", "cardiomegaly", "pneumothorax", "consolidation"):
        assert negated_seen[finding] > 200, negated_seen
    normal = meta[LABELS].sum(axis=1) == 0
    impressions = meta.loc[normal, "report"].str.split("IMPRESSION:").str[1]
    assert impressions.str.contains(r"No acute|Normal chest|No active").all()
    assert meta["report"].str.contains("XXXX").mean() > 0.3
    assert meta["report"].nunique() > 0.9 * len(meta)
    where = r"(?:right|left) (?:upper|middle|lower|mid|lung|base|apex|perihilar)|lingula"
    for finding in ("nodule", "consolidation"):
        assert meta.loc[meta[f"label_{finding}"] == 1, "report"].str.contains(where).all()
    assert meta["report"].str.contains(r"(?:right|left) (?:upper|middle|lower) lobe").any()


# ----------------------------------------------------------------------------- prepared data set
def test_make_phantom_writes_an_openable_data_set_with_patient_splits(tmp_path):
    out = tmp_path / "phantom"
    ds = make_phantom(out, n=90, size=32, seed=5)
    again = PreparedDataset.open(out)
    assert len(again) == 90 and again.size == 32
    assert again.label_names == list(FINDINGS)
    assert again.info["source"] == "phantom" and again.info["has_masks"]
    assert again.info["split"]["seed"] == 5
    assert again.info["phantom"]["seed"] == 5
    assert again.masks is not None and again.masks.shape == (90, 32, 32)
    assert set(again.meta["split"]) <= {"train", "val", "test"}
    assert again.meta.groupby("patient_id")["split"].nunique().max() == 1
    assert again.meta["patient_id"].duplicated().any()  # some patients have several images
    images, masks, meta = render_phantom(90, 32, seed=5)
    assert np.array_equal(np.asarray(again.images), images)
    assert np.array_equal(np.asarray(again.masks), masks)
    assert again.texts("report") == meta["report"].tolist()
    assert again.labels(list(FINDINGS)).shape == (90, 5)
    for boxes in again.meta["lesion_boxes"]:
        json.loads(boxes)
    assert ds.split_hash == again.split_hash
    # same arguments -> same content hash
    assert make_phantom(tmp_path / "again", n=90, size=32, seed=5).info["content_hash"] == \
        again.info["content_hash"]


@pytest.mark.parametrize("kwargs", [dict(n=0), dict(n=-3), dict(size=8), dict(size=2048),
                                    dict(n=2.5), dict(seed=-1), dict(size="big")])
def test_bad_arguments_raise_cxrcl_error(tmp_path, kwargs):
    args = dict(n=4, size=32, seed=0) | kwargs
    with pytest.raises(CxrclError):
        render_phantom(**args)
    with pytest.raises(CxrclError):
        make_phantom(tmp_path / "bad", **args)
    assert not (tmp_path / "bad").exists()


def test_bad_split_fractions_raise_before_writing(tmp_path):
    with pytest.raises(CxrclError):
        make_phantom(tmp_path / "bad", n=4, size=32, split_fractions=(0.5, 0.5, 0.5))
    assert not (tmp_path / "bad").exists()
