"""Merging prepared sets (sizes, labels, ids, splits, masks, provenance) and relabelling."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

from cxrcl.data.decoding import pad_resize
from cxrcl.data.merge import merge_prepared, or_labels, parse_mapping, relabel_prepared
from cxrcl.data.prepared import PreparedDataset
from cxrcl.data.writer import PROGRESS_FILE, write_prepared
from cxrcl.errors import CxrclError


def _set(path, n, size, labels: dict, source="csv", masks=False, text=None, seed=0, split=None):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
    meta = pd.DataFrame({"id": [f"im{i}" for i in range(n)], "patient_id": [f"p{i // 2}" for i in range(n)],
                         "split": split or [("train", "val", "test")[i % 3] for i in range(n)]})
    for name, vals in labels.items():
        meta[f"label_{name}"] = vals
    text_columns = []
    if text is not None:
        meta["report"] = text
        text_columns = ["report"]
    m = None
    if masks:
        m = (rng.random((n, size, size)) > 0.7).astype(np.uint8)
        meta["has_mask"] = [1] * (n - 1) + [0]
        m[-1] = 0
    return write_prepared(path, images, meta, source=source, masks=m, text_columns=text_columns)


@pytest.fixture
def two_sets(tmp_path):
    a = _set(tmp_path / "a", 5, 32, {"effusion": [1, 0, None, 1, 0], "nodule": [0, 0, 1, None, 0]},
             source="nih14", masks=True, text=["a b c d e f"] * 5, seed=1)
    b = _set(tmp_path / "b", 4, 16, {"effusion": [0, 1, 1, None], "pneumonia": [1, 0, 0, 1]},
             source="rsna", seed=2)
    return a, b


def test_merge_sizes_labels_ids_splits_masks(two_sets, tmp_path, caplog):
    a, b = two_sets
    with caplog.at_level(logging.WARNING, logger="cxrcl.data"):
        m = merge_prepared([a.root, b.root], tmp_path / "m")
    assert any("resizing" in r.getMessage() for r in caplog.records)
    assert len(m) == 9 and m.size == 16  # default: the smallest size, nothing up-sampled
    assert m.label_names == ["effusion", "nodule", "pneumonia"]
    assert list(m.meta["id"][:2]) == ["nih14/im0", "nih14/im1"] and m.meta["id"].iloc[5] == "rsna/im0"
    assert m.meta["patient_id"].iloc[5] == "rsna/p0"
    assert list(m.meta["dataset"]) == ["nih14"] * 5 + ["rsna"] * 4
    assert list(m.meta["split"]) == list(a.meta["split"]) + list(b.meta["split"])
    lab = m.labels(["effusion", "nodule", "pneumonia"])
    assert np.isnan(lab[:5, 2]).all() and np.isnan(lab[5:, 1]).all()  # missing label = unknown, not 0
    assert lab[0, 0] == 1 and np.isnan(lab[2, 0]) and lab[6, 0] == 1
    # pixels: set a resized with the canonical resize, set b copied
    assert np.array_equal(m.images[0], pad_resize(np.asarray(a.images[0]), 16))
    assert np.array_equal(m.images[5:], b.images)
    # masks kept where present (nearest neighbour), empty + has_mask 0 elsewhere
    assert m.masks is not None and np.array_equal(m.masks[1], pad_resize(np.asarray(a.masks[1]), 16, nearest=True))
    assert list(m.meta["has_mask"]) == [1, 1, 1, 1, 0, 0, 0, 0, 0] and m.masks[5:].max() == 0
    assert m.texts("report")[0] == "a b c d e f" and m.texts("report")[6] == ""
    info = m.info
    assert info["source"] == "merge" and info["split"]["method"] == "merged"
    assert [r["content_hash"] for r in info["inputs"]] == [a.info["content_hash"], b.info["content_hash"]]
    assert [r["name"] for r in info["inputs"]] == ["nih14", "rsna"]
    assert not (m.root / PROGRESS_FILE).exists()


def test_merge_explicit_size_names_and_same_source(tmp_path):
    a = _set(tmp_path / "x1", 3, 16, {"a": [1, 0, 1]}, source="csv", seed=1)
    b = _set(tmp_path / "x2", 3, 16, {"a": [0, 0, 1]}, source="csv", seed=2)
    m = merge_prepared([a.root, b.root], tmp_path / "m", size=16)
    assert list(m.meta["dataset"].unique()) == ["x1", "x2"]  # same source -> directory names
    assert np.array_equal(m.images[:3], a.images) and np.array_equal(m.images[3:], b.images)
    m2 = merge_prepared([a.root, b.root], tmp_path / "m2", size=24, names=["one", "two"])
    assert m2.size == 24 and m2.meta["id"].iloc[3] == "two/im0"
    with pytest.raises(CxrclError, match="given twice"):
        merge_prepared([a.root, a.root], tmp_path / "m3")
    with pytest.raises(CxrclError, match="is one of the inputs"):
        merge_prepared([a.root, b.root], a.root)


def test_merge_is_resumable(two_sets, tmp_path, monkeypatch):
    import cxrcl.data.merge as merge_mod

    a, b = two_sets
    ref = merge_prepared([a.root, b.root], tmp_path / "ref")
    monkeypatch.setattr(merge_mod, "CHUNK", 2)
    calls = {"n": 0}
    real = merge_mod.PreparedWriter.put_many

    def flaky(self, start, images, masks=None):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        real(self, start, images, masks)
        self.checkpoint()

    monkeypatch.setattr(merge_mod.PreparedWriter, "put_many", flaky)
    with pytest.raises(KeyboardInterrupt):
        merge_prepared([a.root, b.root], tmp_path / "m")
    state = json.loads((tmp_path / ".m.partial" / PROGRESS_FILE).read_text())
    assert state["n_done"] == 4
    calls["n"] = 10
    m = merge_prepared([a.root, b.root], tmp_path / "m")
    assert calls["n"] == 10 + 3  # chunks [4:5] of set a, [0:2] and [2:4] of set b
    assert m.info["content_hash"] == ref.info["content_hash"]


def test_or_labels():
    df = pd.DataFrame({"a": [1, 0, 0, None, None, 0], "b": [None, 0, None, None, 1, 1]})
    got = or_labels(df)
    assert [None if pd.isna(v) else int(v) for v in got] == [1, 0, None, None, 1, 1]


def test_relabel_rename_merge_drop(two_sets, tmp_path):
    a, _ = two_sets
    r = relabel_prepared(a.root, tmp_path / "r", {"effusion": "fluid", "nodule": "fluid"}, drop=[])
    assert r.label_names == ["fluid"]
    assert [None if np.isnan(v) else int(v) for v in r.labels(["fluid"])[:, 0]] == [1, 0, 1, 1, 0]
    assert np.array_equal(r.images, a.images) and np.array_equal(r.masks, a.masks)
    assert r.info["relabel"]["merged"] == {"fluid": ["effusion", "nodule"]}
    assert r.info["split"]["manifest_hash"] == a.info["split"]["manifest_hash"]
    assert r.texts("report") == a.texts("report") and list(r.meta["has_mask"]) == list(a.meta["has_mask"])
    # rename one, drop the other; an unmapped label of the new name merges too
    r2 = relabel_prepared(a.root, tmp_path / "r2", {"effusion": "pleural_effusion"}, drop=["nodule"])
    assert r2.label_names == ["pleural_effusion"]
    r3 = relabel_prepared(a.root, tmp_path / "r3", {"nodule": "effusion"})
    assert r3.label_names == ["effusion"]
    assert [None if np.isnan(v) else int(v) for v in r3.labels(["effusion"])[:, 0]] == [1, 0, 1, 1, 0]
    # relabelling a copy does not change the original
    assert PreparedDataset.open(a.root).label_names == ["effusion", "nodule"]
    with pytest.raises(CxrclError, match="unknown label cardiomegaly"):
        relabel_prepared(a.root, tmp_path / "r4", {"cardiomegaly": "x"})
    with pytest.raises(CxrclError, match="both renamed and dropped"):
        relabel_prepared(a.root, tmp_path / "r5", {"nodule": "x"}, drop=["nodule"])
    assert not (tmp_path / "r4").exists() and not (tmp_path / ".r4.partial").exists()


def test_relabel_without_hard_links_copies(two_sets, tmp_path):
    a, _ = two_sets
    r = relabel_prepared(a.root, tmp_path / "r", {"nodule": "mass"}, link=False)
    assert (r.root / "images.npy").stat().st_ino != (a.root / "images.npy").stat().st_ino
    assert r.label_names == ["effusion", "mass"] and np.array_equal(r.images, a.images)


def test_parse_mapping():
    assert parse_mapping(["a=b", "c, d = e"]) == {"a": "b", "c": "e", "d": "e"}
    with pytest.raises(CxrclError, match="OLD=NEW"):
        parse_mapping(["nonsense"])
