"""Source adapters of ``cxrcl data prepare``: real shared data (when present) and tmp fixtures."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrcl.data.decoding import load_grey, pad_resize, to_grey
from cxrcl.data.info import describe, format_info
from cxrcl.data.prepared import PreparedDataset
from cxrcl.data.sources import SOURCES, prepare
from cxrcl.data.sources.npz import pick_by_size
from cxrcl.errors import CxrclError

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SKIP_REASON = "../shared/data not found: real-data tests need the shared CXR data beside the repo"


def _shared(name: str) -> Path:
    path = SHARED / name
    if not path.exists():
        pytest.skip(SKIP_REASON)
    return path


def _no_patient_leak(ds: PreparedDataset) -> None:
    per_patient = ds.meta.groupby("patient_id")["split"].nunique()
    assert (per_patient == 1).all()


# ----------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def covid64(tmp_path_factory) -> PreparedDataset:
    src = _shared("covid_chestxray")
    return prepare("npz", src, tmp_path_factory.mktemp("covid") / "prep", size=64, progress=False)


@pytest.mark.shared_data
def test_npz_covid_chestxray(covid64, tmp_path):
    ds = covid64
    assert len(ds) == 575 and ds.images.shape == (575, 64, 64) and ds.images.dtype == np.uint8
    assert ds.label_names == ["covid19", "no_finding"]
    assert int(ds.labels(["covid19"]).sum()) == 451
    assert (ds.meta["report"].str.strip() != "").sum() == 464
    assert "report" in ds.info["text_columns"] and "clinical_notes" in ds.info["text_columns"]
    assert "url" not in ds.info["text_columns"]  # identifiers are metadata, not text
    assert {"sex", "age", "view", "finding"} <= set(ds.meta.columns)
    assert ds.masks is not None and ds.masks.shape == (575, 64, 64)
    assert int(ds.meta["has_mask"].sum()) == 192
    assert set(np.unique(ds.masks)) <= {0, 1}
    assert ds.masks[ds.meta["has_mask"].to_numpy() == 0].max() == 0
    assert ds.meta["id"].is_unique
    _no_patient_leak(ds)
    assert ds.info["split"]["method"] == "patient" and ds.info["split"]["seed"] == 0
    again = prepare("npz", _shared("covid_chestxray"), tmp_path / "again", size=64, progress=False)
    assert again.info["content_hash"] == ds.info["content_hash"]
    assert again.split_hash == ds.split_hash


@pytest.mark.shared_data
def test_info_on_covid(covid64):
    d = describe(covid64)
    assert d["n"] == 575 and d["n_masks"] == 192 and d["patients_in_several_splits"] == 0
    assert sum(d["split_counts"].values()) == 575
    assert d["labels"]["covid19"]["all"]["pos"] == 451
    assert d["text_columns"]["report"]["non_empty"] == 464
    assert 0.0 < d["image_mean"] < 1.0 and d["image_std"] > 0
    json.dumps(d)
    text = format_info(d)
    assert "covid19" in text and "report" in text and d["content_hash"] in text


@pytest.mark.shared_data
def test_medmnist_pneumoniamnist(tmp_path):
    src = _shared("pneumoniamnist") / "pneumoniamnist.npz"
    ds = prepare("medmnist", src, tmp_path / "pn", size=28, progress=False)
    assert len(ds) == 3166
    assert ds.info["split"]["counts"] == {"train": 2428, "val": 270, "test": 468}
    assert ds.info["split"]["method"] == "source"
    assert ds.label_names == ["pneumonia"]
    y = ds.labels(["pneumonia"])[:, 0]
    assert y.sum() == 1583 and (y == 0).sum() == 1583
    assert ds.meta["id"].iloc[12] == "train_000012"
    assert (ds.meta["patient_id"] == ds.meta["id"]).all()
    with np.load(src) as z:  # 28 px stays 28 px: rows are copied unchanged
        np.testing.assert_array_equal(ds.images[:5], z["train_images"][:5])


# ----------------------------------------------------------------------------- fixtures
def _png(path: Path, img: Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def _gradient(h: int = 24, w: int = 32) -> np.ndarray:
    return np.tile(np.linspace(0, 1, w), (h, 1))


@pytest.fixture
def folder_tree(tmp_path) -> Path:
    root = tmp_path / "tree"
    g = _gradient()
    _png(root / "pneumonia" / "p8.png", Image.fromarray((g * 255).astype(np.uint8)))
    _png(root / "pneumonia" / "p16.png", Image.fromarray((1000 + g * 3000).astype(np.uint16)))
    rgb = np.stack([(g * 255).astype(np.uint8)] * 3, axis=-1)
    _png(root / "pneumonia" / "deep" / "prgb.png", Image.fromarray(rgb))
    rgba = np.dstack([np.full((24, 32, 3), 255, np.uint8), np.zeros((24, 32), np.uint8)])
    _png(root / "Normal" / "n_rgba.png", Image.fromarray(rgba))
    Image.fromarray(rgb).save(root / "Normal" / "n_jpeg.jpeg", quality=90)
    good = root / "pneumonia" / "p8.png"
    data = good.read_bytes()
    (root / "Normal" / "broken.png").write_bytes(data[: len(data) // 2])
    (root / "Normal" / "notes.txt").write_text("ignored")
    return root


def test_grey_conversion_and_geometry(tmp_path):
    a16 = Image.fromarray(np.array([[1000, 2000], [3000, 4000]], dtype=np.uint16))
    g = to_grey(a16)
    assert g.dtype == np.uint8 and g.min() == 0 and g.max() == 255
    rgba = Image.fromarray(np.dstack([np.full((4, 4, 3), 200, np.uint8), np.zeros((4, 4), np.uint8)]))
    assert to_grey(rgba).max() == 0  # transparent -> black
    wide = np.full((10, 20), 255, np.uint8)
    sq = pad_resize(wide, 20)
    assert sq.shape == (20, 20) and sq[:5].max() == 0 and sq[15:].max() == 0 and sq[5:15].min() == 255
    out = load_grey(_png(tmp_path / "x.png", Image.fromarray(wide)), 8)
    assert out.shape == (8, 8) and out.dtype == np.uint8


def test_folder_source(folder_tree, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="cxrcl.data"):
        ds = prepare("folder", folder_tree, tmp_path / "f1", size=32, progress=False)
    assert len(ds) == 5 and ds.images.shape == (5, 32, 32)
    assert ds.label_names == ["normal", "pneumonia"]
    assert ds.info["n_skipped"] == 1
    assert ds.info["skipped"][0]["file"] == "Normal/broken.png" and ds.info["skipped"][0]["reason"]
    assert any("broken.png" in r.getMessage() for r in caplog.records)
    meta = ds.meta.set_index("id")
    assert meta.loc["pneumonia/deep/prgb", "label_pneumonia"] == 1
    assert meta.loc["Normal/n_jpeg", "label_normal"] == 1 and meta.loc["Normal/n_jpeg", "label_pneumonia"] == 0
    assert meta.loc["pneumonia/p16", "patient_id"] == "p16"
    i16 = ds.meta.index[ds.meta["id"] == "pneumonia/p16"][0]
    assert ds.images[i16].max() >= 250  # 16-bit min-max scaled to the full 8-bit range
    i_rgba = ds.meta.index[ds.meta["id"] == "Normal/n_rgba"][0]
    assert ds.images[i_rgba].max() == 0  # fully transparent white -> black
    assert ds.images[i16][:4].max() == 0  # 24x32 padded to a square: black top rows
    _no_patient_leak(ds)
    # the Pool path gives the same bytes
    ds2 = prepare("folder", folder_tree, tmp_path / "f2", size=32, workers=2, progress=False)
    assert ds2.info["content_hash"] == ds.info["content_hash"]


def test_folder_split_layout_and_patients_csv(tmp_path):
    root = tmp_path / "kermany"
    img = Image.fromarray((_gradient() * 255).astype(np.uint8))
    for split, n in (("train", 3), ("val", 1), ("test", 2)):
        for cls in ("NORMAL", "PNEUMONIA"):
            for i in range(n):
                _png(root / split / cls / f"{cls.lower()}_{split}_{i}.png", img)
    pd.DataFrame({"file": ["normal_train_0.png", "normal_train_1.png"], "patient_id": ["P1", "P1"]}).to_csv(
        root / "patients.csv", index=False)
    ds = prepare("folder", root, tmp_path / "out", size=16, progress=False)
    assert ds.info["split"]["method"] == "source"
    assert ds.info["split"]["counts"] == {"train": 6, "val": 2, "test": 4}
    assert (ds.meta["patient_id"] == "P1").sum() == 2


def test_folder_all_corrupt(tmp_path):
    root = tmp_path / "bad"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.png").write_bytes(b"not a png")
    (root / "a" / "y.jpg").write_bytes(b"")
    with pytest.raises(CxrclError, match="none of the 2 image files"):
        prepare("folder", root, tmp_path / "out", size=16, progress=False)
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.partial").exists()


def test_csv_source_with_missing_file(tmp_path):
    img = Image.fromarray((_gradient() * 255).astype(np.uint8))
    for i in range(6):
        _png(tmp_path / "imgs" / f"im{i}.png", img)
    rows = [{"path": f"imgs/im{i}.png", "patient_id": f"P{i // 2}", "Effusion": [1, 0, ""][i % 3],
             "age": 30 + i, "report": f"Chest radiograph number {i} shows no acute disease today."}
            for i in range(6)]
    rows.append({"path": "imgs/missing.png", "patient_id": "P9", "Effusion": 1, "age": 50,
                 "report": "This row names a file that does not exist on disk."})
    rows.append({"path": str((tmp_path / "imgs" / "im0.png").resolve()), "patient_id": "P0",
                 "Effusion": 0, "age": 51, "report": "The same file again, given by its absolute path."})
    csv = tmp_path / "list.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    ds = prepare("csv", csv, tmp_path / "out", size=16, progress=False)
    assert len(ds) == 7
    assert ds.label_names == ["effusion"]  # auto-detected 0/1 column; age is not a label
    assert ds.info["n_skipped"] == 1 and ds.info["skipped"][0]["reason"] == "file not found"
    assert "report" in ds.info["text_columns"]
    assert ds.labels(["effusion"])[2, 0] != ds.labels(["effusion"])[2, 0]  # empty -> NaN
    _no_patient_leak(ds)


def test_csv_without_path_column(tmp_path):
    csv = tmp_path / "nopath.csv"
    pd.DataFrame({"file": ["a.png"], "label_x": [1]}).to_csv(csv, index=False)
    with pytest.raises(CxrclError, match=r"nopath\.csv has no 'path' column \(columns: file, label_x\)"):
        prepare("csv", csv, tmp_path / "out", size=16, progress=False)


def _npz_dir(tmp_path: Path, n_images: int, n_rows: int, **meta_cols) -> Path:
    root = tmp_path / "npzsrc"
    root.mkdir()
    rng = np.random.default_rng(0)
    np.savez_compressed(root / "images_32.npz", images=rng.integers(0, 255, (n_images, 32, 32), dtype=np.uint8))
    meta = pd.DataFrame({"index": range(n_rows), "label_a": [i % 2 for i in range(n_rows)], **meta_cols})
    meta.to_csv(root / "metadata.csv", index=False)
    return root


def test_npz_row_count_mismatch(tmp_path):
    root = _npz_dir(tmp_path, n_images=5, n_rows=4)
    with pytest.raises(CxrclError) as e:
        prepare("npz", root, tmp_path / "out", size=32, progress=False)
    msg = str(e.value)
    assert "metadata.csv has 4 rows" in msg and "images_32.npz has 5 images" in msg


def test_npz_bad_inputs(tmp_path):
    with pytest.raises(CxrclError, match="does not exist"):
        prepare("npz", tmp_path / "nowhere", tmp_path / "out", progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CxrclError, match="no images_"):
        prepare("npz", empty, tmp_path / "out", progress=False)
    np.savez(empty / "images_8.npz", pixels=np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(CxrclError, match="no array 'images'"):
        prepare("npz", empty, tmp_path / "out", progress=False)
    np.savez(empty / "images_8.npz", images=np.zeros((2, 8, 8), np.float32))
    with pytest.raises(CxrclError, match=r"expected uint8 \[N, H, W\]"):
        prepare("npz", empty, tmp_path / "out", progress=False)
    np.savez(empty / "images_8.npz", images=np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(CxrclError, match="metadata.csv is missing"):
        prepare("npz", empty, tmp_path / "out", progress=False)


def test_npz_synthetic_masks_and_own_split(tmp_path, caplog):
    root = _npz_dir(tmp_path, n_images=6, n_rows=6, split=["train", "train", "val", "test", "test", "train"])
    masks = np.zeros((2, 64, 64), np.uint8)
    masks[:, 16:48, 16:48] = 1
    np.savez(root / "lung_masks_64.npz", masks=masks, index=np.array([1, 4], np.int32))
    with caplog.at_level(logging.WARNING, logger="cxrcl.data"):
        ds = prepare("npz", root, tmp_path / "out", size=16, progress=False)
    assert any("no patient_id" in r.getMessage() for r in caplog.records)
    assert ds.info["split"]["method"] == "source"
    assert ds.meta["split"].tolist() == ["train", "train", "val", "test", "test", "train"]
    assert ds.meta["id"].tolist() == [str(i) for i in range(6)]
    assert ds.meta["has_mask"].tolist() == [0, 1, 0, 0, 1, 0]
    assert ds.masks[1, 8, 8] == 1 and ds.masks[1, 0, 0] == 0 and ds.masks[0].max() == 0
    assert ds.info["text_columns"] == []


def test_pick_by_size():
    files = {Path("images_128.npz"): 128, Path("images_224.npz"): 224}
    assert pick_by_size(files, 64).name == "images_128.npz"
    assert pick_by_size(files, 128).name == "images_128.npz"
    assert pick_by_size(files, 160).name == "images_224.npz"
    assert pick_by_size(files, 512).name == "images_224.npz"


def test_medmnist_multiclass_synthetic(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for s, n in (("train", 8), ("val", 3), ("test", 4)):
        arrays[f"{s}_images"] = rng.integers(0, 255, (n, 28, 28, 3), dtype=np.uint8)  # colour
        arrays[f"{s}_labels"] = (np.arange(n) % 4)[:, None].astype(np.uint8)
    np.savez(tmp_path / "octmnist.npz", **arrays)
    ds = prepare("medmnist", tmp_path / "octmnist.npz", tmp_path / "out", size=32, progress=False)
    assert len(ds) == 15 and ds.size == 32
    assert ds.label_names == ["choroidal_neovascularization", "diabetic_macular_edema", "drusen", "normal"]
    assert (ds.labels(ds.label_names).sum(axis=1) == 1).all()


def test_medmnist_chestmnist_labels_in_the_vocabulary(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {}
    for s, n in (("train", 6), ("val", 2), ("test", 3)):
        arrays[f"{s}_images"] = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        arrays[f"{s}_labels"] = rng.integers(0, 2, (n, 14)).astype(np.uint8)
    np.savez(tmp_path / "chestmnist.npz", **arrays)
    ds = prepare("medmnist", tmp_path / "chestmnist.npz", tmp_path / "out", size=28, progress=False)
    assert ds.label_names == ["atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule",
                              "pneumonia", "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis",
                              "pleural_thickening", "hernia"]
    np.testing.assert_array_equal(ds.labels(["pleural_thickening"])[:6, 0], arrays["train_labels"][:, 12])


def test_medmnist_download_failure(tmp_path, monkeypatch):
    import medmnist.dataset

    def fail(self):
        raise RuntimeError("network unreachable")

    monkeypatch.setattr(medmnist.dataset.MedMNIST, "download", fail)
    monkeypatch.setenv("CXRCL_CACHE", str(tmp_path / "cache"))
    with pytest.raises(CxrclError, match=r"could not download pneumoniamnist_64\.npz .*pass the \.npz path"):
        prepare("medmnist", "pneumoniamnist_64", tmp_path / "out", size=64, progress=False)
    assert not list((tmp_path / "cache" / "medmnist").glob("*.npz"))
    with pytest.raises(CxrclError, match="neither an existing .npz file nor a MedMNIST flag"):
        prepare("medmnist", "nosuchmnist", tmp_path / "out", progress=False)


def test_unknown_source_and_unsafe_out(tmp_path):
    with pytest.raises(CxrclError, match="unknown data source 'dicomm'.*csv, dicom, folder, medmnist, mimic-cxr, montgomery, nih14, npz"):
        prepare("dicomm", tmp_path, tmp_path / "out")
    assert {"npz", "medmnist", "folder", "csv"} <= set(SOURCES)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("do not delete")
    with pytest.raises(CxrclError, match=r"holds files that are not a prepared data set \(keep.txt\)"):
        prepare("folder", tmp_path, busy)
    assert (busy / "keep.txt").exists()
