"""DICOM sources: ``dicom`` (a tree of .dcm), ``rsna`` and ``siim``.

RSNA and SIIM run on their REAL label files as shipped by torchxrayvision (parsed in full, with
the counts asserted) and on a subset of them with stand-in 64 x 64 DICOM images written by
pydicom (real header values from torchxrayvision's RSNA header table where it has them).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

pytest.importorskip("pydicom", reason="pydicom is needed to write DICOM fixtures")

from cxrcl.data.decoding import pad_resize
from cxrcl.data.sources import prepare  # noqa: E402
from cxrcl.data.sources.rsna import read_rsna_labels  # noqa: E402
from cxrcl.data.sources.siim import read_siim_rle, rle_decode, rle_runs  # noqa: E402
from cxrcl.errors import CxrclError  # noqa: E402
from tests.data.test_dicom import IDENTIFYING, identifying_values, write_dicom  # noqa: E402


def xrv_data(name: str) -> Path:
    """A file of torchxrayvision's data folder (found without importing torch), or skip."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("torchxrayvision is not installed: the RSNA/SIIM tests read its real label files")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / name
    if not path.exists():
        pytest.skip(f"{path} is missing from this torchxrayvision version")
    return path


def assert_no_leak(out: Path, values) -> None:
    """No identifying value appears anywhere in meta.csv or dataset.json."""
    text = (out / "meta.csv").read_text() + (out / "dataset.json").read_text()
    leaked = sorted({v for v in values if v and v in text})
    assert not leaked, f"identifying values leaked into {out}: {leaked}"


def image(seed: int, shape=(64, 64), dtype=np.uint8, hi: int = 255) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, hi + 1, shape).astype(dtype)


# ----------------------------------------------------------------------------- dicom (a tree)
@pytest.fixture(scope="module")
def dicom_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("dicomtree") / "in"
    written = []
    # patient A: two images in different folders (must share a split); MONOCHROME1 12-bit + 8-bit
    a = dict(IDENTIFYING)
    written.append(write_dicom(root / "siteA/img1.dcm", image(1, (40, 30), np.uint16, 4095), bits_stored=12,
                               photometric="MONOCHROME1", ViewPosition="PA", PatientSex="F", PatientAge="045Y",
                               identity=a))
    written.append(write_dicom(root / "siteA/deeper/img2.dcm", image(2, (30, 40)), ViewPosition="AP",
                               PatientSex="F", PatientAge="046Y", identity=a))
    # patient B: signed 16-bit with a window; extensionless file with the DICM magic
    b = {**IDENTIFYING, "PatientID": "MRN-0099-OTHER", "PatientName": "Roe^Richard",
         "PatientBirthDate": "19600101", "AccessionNumber": "ACC111222"}
    written.append(write_dicom(root / "siteB/IM0001", image(3, (32, 32), np.int16, 3000) - 1500,
                               window=(0.0, 2000.0), identity=b, PatientAge="060Y"))
    # patient C: VOI LUT sequence, no PatientAge; many more patients for a real split
    lut = np.round(4095 * (np.arange(4096) / 4095) ** 0.5).astype(np.uint16)
    c = {**IDENTIFYING, "PatientID": "MRN-C", "PatientName": "Coe^Carla"}
    written.append(write_dicom(root / "siteB/lut.dcm", image(4, (32, 32), np.uint16, 4095), bits_stored=12,
                               voi_lut=(0, 12, lut), identity=c))
    for k in range(12):
        ident = {**IDENTIFYING, "PatientID": f"MRN-EXTRA-{k:03d}", "PatientName": f"Extra^Person{k}"}
        written.append(write_dicom(root / f"more/p{k:02d}.dcm", image(10 + k, (24, 24)), identity=ident))
    # broken files: truncated pixel data, not DICOM at all, no pixel data; DICOMDIR is ignored
    full = write_dicom(root / "broken/cut.dcm", image(5, (64, 64), np.uint16, 4095), bits_stored=12)
    data = (root / "broken/cut.dcm").read_bytes()
    (root / "broken/cut.dcm").write_bytes(data[: len(data) - 2000])
    (root / "broken/text.dcm").write_text("not a dicom file\n" * 40)
    nopix = write_dicom(root / "broken/nopix.dcm", image(6, (8, 8)), pixel_data=False)
    (root / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM")
    (root / "labels.csv").write_text("file,Pneumonia,Normal\n"
                                     "siteA/img1.dcm,1,0\n"
                                     "siteA/deeper/img2,0,-1\n"
                                     "IM0001,0,1\n"
                                     "gone/missing.dcm,1,0\n")
    values = [v for ds in [*written, full, nopix] for v in identifying_values(ds)]
    return root, values


def test_dicom_tree(dicom_tree, tmp_path):
    root, values = dicom_tree
    out = tmp_path / "prep"
    ds = prepare("dicom", root, out, size=16, progress=False, workers=2)
    assert len(ds) == 16 and ds.images.shape == (16, 16, 16) and ds.masks is None
    assert ds.info["n_skipped"] == 3
    reasons = {s["file"]: s["reason"] for s in ds.info["skipped"]}
    assert set(reasons) == {"broken/cut.dcm", "broken/text.dcm", "broken/nopix.dcm"}
    assert "less than expected" in reasons["broken/cut.dcm"]
    assert "not a DICOM file" in reasons["broken/text.dcm"] and "no pixel data" in reasons["broken/nopix.dcm"]
    m = ds.meta.set_index("id")
    assert "siteB/IM0001" in m.index and "DICOMDIR" not in m.index
    assert ds.label_names == ["pneumonia", "no_finding"]
    assert m.loc["siteA/img1", "label_pneumonia"] == 1 and m.loc["siteA/img1", "label_no_finding"] == 0
    assert pd.isna(m.loc["siteA/deeper/img2", "label_no_finding"])  # -1 -> unknown
    assert m.loc["siteB/IM0001", "label_no_finding"] == 1  # matched by bare file name
    assert pd.isna(m.loc["more/p00", "label_pneumonia"])  # not listed -> empty
    # patients: the salted key, the same for both images of patient A, so the same split
    assert m.loc["siteA/img1", "patient_id"] == m.loc["siteA/deeper/img2", "patient_id"]
    assert m.loc["siteA/img1", "split"] == m.loc["siteA/deeper/img2", "split"]
    assert m["patient_id"].nunique() == 15 and set(m["split"]) == {"train", "val", "test"}
    # header fields and decoding notes
    assert (m.loc["siteA/img1", "view"], m.loc["siteA/img1", "sex"], m.loc["siteA/img1", "age"]) == ("PA", "F", 45)
    assert m.loc["siteA/img1", "photometric"] == "MONOCHROME1" and m.loc["siteA/img1", "bits_stored"] == 12
    assert (m.loc["siteA/img1", "height"], m.loc["siteA/img1", "width"]) == (40, 30)
    assert m.loc["siteB/IM0001", "voi"] == "window" and m.loc["siteB/lut", "voi"] == "lut"
    assert pd.isna(m.loc["siteB/lut", "age"])
    # nothing identifying anywhere, not even the PatientID hashed without the salt
    unsalted = [hashlib.sha256(v.encode()).hexdigest()[:16] for v in ("MRN-0042-SECRET", "MRN-0099-OTHER")]
    assert_no_leak(out, values + unsalted)
    assert ds.info["salt"] == "default" and ds.info["n_without_patient_id"] == 0
    # a DICOM and the image it holds: 8-bit MONOCHROME2 goes through like a PNG would
    row = int(np.flatnonzero(ds.meta["id"] == "siteA/deeper/img2")[0])
    np.testing.assert_array_equal(ds.images[row], pad_resize(image(2, (30, 40)), 16))
    # deterministic, and the same with one worker
    again = prepare("dicom", root, tmp_path / "again", size=16, progress=False, workers=1)
    assert again.info["content_hash"] == ds.info["content_hash"] and again.split_hash == ds.split_hash


def test_dicom_labels_csv_without_file_column(tmp_path):
    root = tmp_path / "in"
    write_dicom(root / "a.dcm", image(0, (8, 8)))
    (root / "labels.csv").write_text("path,pneumonia\na.dcm,1\n")
    with pytest.raises(CxrclError, match=r"labels\.csv lacks the column 'file' \(it has: path, pneumonia\)"):
        prepare("dicom", root, tmp_path / "out", size=8, progress=False)
    (root / "labels.csv").write_text("file,pneumonia\na.dcm,maybe\n")
    with pytest.raises(CxrclError, match=r"labels\.csv: label column label_pneumonia holds 'maybe'"):
        prepare("dicom", root, tmp_path / "out", size=8, progress=False)


def test_dicom_empty_or_all_broken(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CxrclError, match="has no DICOM files"):
        prepare("dicom", tmp_path / "empty", tmp_path / "out", size=8, progress=False)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.dcm").write_text("nope")
    with pytest.raises(CxrclError, match="none of the 1 DICOM files"):
        prepare("dicom", tmp_path / "bad", tmp_path / "out", size=8, progress=False)
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.partial").exists()


class _CountingReader:
    """Wraps ``read_dicom``: counts the files decoded and raises KeyboardInterrupt at ``stop_at``."""

    def __init__(self, real, stop_at: int | None = None):
        self.real, self.stop_at, self.calls = real, stop_at, 0

    def __call__(self, path, salt=None):
        self.calls += 1
        if self.stop_at is not None and self.calls == self.stop_at:
            raise KeyboardInterrupt
        return self.real(path, salt)


def test_dicom_interrupted_prepare_resumes_byte_identical(dicom_tree, tmp_path, monkeypatch, caplog):
    from cxrcl.data import streaming
    from cxrcl.data.sources import dicom_dir
    from cxrcl.data.writer import EXTRAS_FILE, PROGRESS_FILE

    root, values = dicom_tree
    n_files = len(dicom_dir.find_dicoms(root))
    ref = prepare("dicom", root, tmp_path / "ref", size=16, progress=False)
    monkeypatch.setattr(streaming, "CHECKPOINT_EVERY", 4)

    # run 1: Ctrl-C while decoding file K + 1 (the first K include the 3 broken files)
    k = 10
    reader = _CountingReader(dicom_dir.read_dicom, stop_at=k + 1)
    monkeypatch.setattr(dicom_dir, "read_dicom", reader)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        prepare("dicom", root, out, size=16, progress=False)
    partial = tmp_path / ".out.partial"
    state = json.loads((partial / PROGRESS_FILE).read_text())
    assert not out.exists() and state["n_done"] == k and state["done"] == [[0, k]]
    assert len(state["failed"]) == 3
    # the header fields of the decoded rows (broken ones too) are kept for the rerun ...
    extras = [json.loads(line) for line in (partial / EXTRAS_FILE).read_text().splitlines()]
    assert sorted(row for row, _ in extras) == [i for i in range(k) if i != 2]  # broken/text.dcm: no header
    # ... and nothing identifying is in the partial directory's records
    unsalted = [hashlib.sha256(v.encode()).hexdigest()[:16] for v in ("MRN-0042-SECRET", "MRN-0099-OTHER")]
    records = (partial / PROGRESS_FILE).read_text() + (partial / EXTRAS_FILE).read_text()
    assert not sorted({v for v in values + unsalted if v and v in records})

    # run 2: the same command decodes only the remaining files and gives the same bytes
    reader = _CountingReader(reader.real)
    monkeypatch.setattr(dicom_dir, "read_dicom", reader)
    with caplog.at_level(logging.WARNING, logger="cxrcl.data"):
        ds = prepare("dicom", root, out, size=16, progress=False)
    assert reader.calls == n_files - k
    assert any("resuming" in r.getMessage() and f"{k} of {n_files}" in r.getMessage() for r in caplog.records)
    assert not partial.exists() and not (out / PROGRESS_FILE).exists() and not (out / EXTRAS_FILE).exists()
    for name in ("images.npy", "meta.csv", "dataset.json"):
        assert (out / name).read_bytes() == (ref.root / name).read_bytes(), name
    assert len(ds) == len(ref) == 16
    assert_no_leak(out, values + unsalted)


# ----------------------------------------------------------------------------- RSNA
def test_rsna_real_label_file_parses_fully():
    t = read_rsna_labels(xrv_data("kaggle_stage_2_train_labels.csv.zip"))
    assert len(t) == 26684 and t["patientId"].is_unique
    assert int(t["label_pneumonia"].sum()) == 6012 and int((t["label_pneumonia"] == 0).sum()) == 20672
    assert (t["label_lung_opacity"] == t["label_pneumonia"]).all()
    assert int(t["n_boxes"].sum()) == 9555
    assert int(t["n_boxes"].sum() + (t["n_boxes"] == 0).sum()) == 30227  # every row of the file
    assert t["n_boxes"].value_counts().sort_index().to_dict() == {0: 20672, 1: 2614, 2: 3266, 3: 119, 4: 13}
    assert ((t["n_boxes"] > 0) == (t["label_pneumonia"] == 1)).all()


@pytest.fixture(scope="module")
def rsna_layout(tmp_path_factory):
    labels = pd.read_csv(xrv_data("kaggle_stage_2_train_labels.csv.zip"))
    headers = pd.read_csv(xrv_data("kaggle_stage_2_train_images_dicom_headers.csv.gz")).set_index("PatientID")
    nb = labels.groupby("patientId")["x"].count()
    pids = sorted(labels["patientId"].unique())
    pick = ([p for p in pids if nb[p] >= 2][:12] + [p for p in pids if nb[p] == 1][:10]
            + [p for p in pids if nb[p] == 0][:17])
    old = [p for p in pids if headers.loc[p, "PatientAge"] > 120 and p not in pick][:1]
    pick = pick + old
    assert len(pick) == 40
    root = tmp_path_factory.mktemp("rsna") / "in"
    root.mkdir()
    sub = labels[labels["patientId"].isin(pick)]
    sub.to_csv(root / "stage_2_train_labels.csv", index=False)  # the real rows, unchanged
    # torchxrayvision does not ship the class file: a stand-in consistent with Target
    first = sub.groupby("patientId", sort=False)["Target"].first()
    cls = {p: "Lung Opacity" if t else ("Normal" if k % 2 else "No Lung Opacity / Not Normal")
           for k, (p, t) in enumerate(first.items())}
    sub.assign(**{"class": sub["patientId"].map(cls)})[["patientId", "class"]].to_csv(
        root / "stage_2_detailed_class_info.csv", index=False)
    missing, corrupt = pick[1], pick[30]
    values = []
    for k, pid in enumerate(pick):
        if pid == missing:
            continue
        h = headers.loc[pid]
        ident = {**IDENTIFYING, "PatientID": pid}  # as in RSNA: PatientID == patientId == file name
        ds = write_dicom(root / "stage_2_train_images" / f"{pid}.dcm", image(100 + k), jpeg=k % 2 == 0,
                         identity=ident, ViewPosition=h["ViewPosition"], PatientSex=h["PatientSex"],
                         PatientAge=f"{int(h['PatientAge']):03d}Y", Modality=h["Modality"],
                         BodyPartExamined=h["BodyPartExamined"])
        values += [v for v in identifying_values(ds) if v != pid]
    path = root / "stage_2_train_images" / f"{corrupt}.dcm"
    path.write_bytes(path.read_bytes()[:300])
    return root, sub, headers, cls, pick, missing, corrupt, values


def test_rsna_source(rsna_layout, tmp_path):
    root, sub, headers, cls, pick, missing, corrupt, values = rsna_layout
    out = tmp_path / "prep"
    ds = prepare("rsna", root, out, size=32, progress=False)
    assert len(ds) == 38 and ds.masks is not None and ds.masks.shape == (38, 32, 32)
    reasons = {s["file"]: s["reason"] for s in ds.info["skipped"]}
    assert set(reasons) == {f"stage_2_train_images/{missing}.dcm", f"stage_2_train_images/{corrupt}.dcm"}
    assert reasons[f"stage_2_train_images/{missing}.dcm"] == "file not found"
    assert "no pixel data (a truncated file" in reasons[f"stage_2_train_images/{corrupt}.dcm"]
    assert ds.label_names == ["pneumonia", "lung_opacity", "no_finding"]
    m = ds.meta.set_index("id")
    assert (m["patient_id"] == m.index).all() and set(m.index) == set(pick) - {missing, corrupt}
    target = sub.groupby("patientId")["Target"].max()
    assert (m["label_pneumonia"] == target[m.index]).all() and (m["label_lung_opacity"] == m["label_pneumonia"]).all()
    assert (m["label_no_finding"] == (m.index.map(cls) == "Normal").astype(int)).all()
    assert (m["class"] == m.index.map(cls)).all()
    # header fields from the real header table; the age of 155 is implausible -> empty
    assert (m["view"] == headers.loc[m.index, "ViewPosition"]).all()
    assert (m["sex"] == headers.loc[m.index, "PatientSex"]).all() and (m["modality"] == "CR").all()
    ages = headers.loc[m.index, "PatientAge"]
    assert (m["age"][ages <= 120] == ages[ages <= 120]).all() and m["age"][ages > 120].isna().all()
    assert (ages > 120).sum() == 1
    # boxes: the real boxes scaled from the 1024 grid to the 64 px stand-ins, then to 32 px: / 32
    assert (m["has_mask"] == 1).all() and ds.info["mask_kind"] == "boxes"
    for pid, row in m.iterrows():
        boxes = json.loads(row["boxes"])
        rows = sub[(sub["patientId"] == pid) & sub["x"].notna()]
        assert len(boxes) == row["n_boxes"] == len(rows)
        for b, (_, r) in zip(boxes, rows.iterrows(), strict=True):
            assert b[0] == "lung_opacity"
            np.testing.assert_allclose(b[1:], [r.x / 32, r.y / 32, (r.x + r.width) / 32, (r.y + r.height) / 32],
                                       atol=0.006)
        mask = ds.masks[ds.meta.index[ds.meta["id"] == pid][0]]
        if not boxes:
            assert mask.max() == 0
            continue
        inside = np.zeros_like(mask, dtype=bool)
        for _, x0, y0, x1, y1 in boxes:
            inside[max(0, int(y0) - 1):int(np.ceil(y1)) + 1, max(0, int(x0) - 1):int(np.ceil(x1)) + 1] = True
            assert mask[int((y0 + y1) / 2), int((x0 + x1) / 2)] == 1
        assert not (mask.astype(bool) & ~inside).any()
    assert_no_leak(out, values)
    assert ds.info["split"]["method"] == "patient"


def test_rsna_missing_columns_and_bad_values(tmp_path):
    root = tmp_path / "in"
    (root / "stage_2_train_images").mkdir(parents=True)
    (root / "stage_2_train_labels.csv").write_text("patientId,x,y,width,height\nabc,,,,\n")
    with pytest.raises(CxrclError, match=r"stage_2_train_labels\.csv lacks the column 'Target'"):
        prepare("rsna", root, tmp_path / "out", size=8, progress=False)
    (root / "stage_2_train_labels.csv").write_text("patientId,x,y,width,height,Target\nabc,,,,,yes\n")
    with pytest.raises(CxrclError, match=r"column 'Target' holds 'yes'"):
        prepare("rsna", root, tmp_path / "out", size=8, progress=False)
    (root / "stage_2_train_labels.csv").write_text("patientId,x,y,width,height,Target\nabc,,,,,0\n")
    (root / "stage_2_detailed_class_info.csv").write_text("patientId,class\nabc,Sick\n")
    with pytest.raises(CxrclError, match=r"detailed_class_info\.csv: column 'class' holds 'Sick'"):
        prepare("rsna", root, tmp_path / "out", size=8, progress=False)
    (root / "stage_2_detailed_class_info.csv").write_text("patientId,label\nabc,Normal\n")
    with pytest.raises(CxrclError, match=r"detailed_class_info\.csv lacks the column 'class'"):
        prepare("rsna", root, tmp_path / "out", size=8, progress=False)
    with pytest.raises(CxrclError, match="no stage_2_train_labels.csv"):
        prepare("rsna", tmp_path, tmp_path / "out", size=8, progress=False)


# ----------------------------------------------------------------------------- SIIM
def encode_rle(mask: np.ndarray) -> str:
    """Test-only SIIM encoder: column-major runs as (offset from the previous run's end, length)."""
    flat = np.concatenate([[0], mask.flatten(order="F").astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(flat))
    starts, ends = edges[0::2], edges[1::2]
    prev_end = np.concatenate([[0], ends[:-1]])
    return " ".join(f"{s - p} {e - s}" for s, e, p in zip(starts, ends, prev_end, strict=True))


def reference_decode(rle: str, side: int = 1024) -> np.ndarray:
    """The challenge's mask_functions.rle2mask (as torchxrayvision copies it), transposed."""
    mask = np.zeros(side * side, dtype=np.uint8)
    array = np.asarray([int(x) for x in rle.split()])
    pos = 0
    for start, length in zip(array[0::2], array[1::2], strict=True):
        pos += start
        mask[pos:pos + length] = 1
        pos += length
    return mask.reshape(side, side).T


def test_rle_round_trip_and_orientation():
    rng = np.random.default_rng(0)
    for shape in [(1024, 1024), (7, 5), (5, 9)]:
        mask = (rng.random(shape) < 0.3).astype(np.uint8)
        mask[2:4, 1:3] = 1
        np.testing.assert_array_equal(rle_decode(encode_rle(mask), shape), mask)
    one = np.zeros((1024, 1024), np.uint8)
    one[0, 1] = 1  # row 0, column 1 = flat index 1024 in column-major order
    assert encode_rle(one) == "1024 1" and rle_decode("1024 1")[0, 1] == 1 and rle_decode("1024 1").sum() == 1
    assert rle_decode("0 3 2 1", (3, 3)).flatten(order="F").tolist() == [1, 1, 1, 0, 0, 1, 0, 0, 0]


@pytest.mark.parametrize("rle, message", [("5 10 3", "odd number of values"),
                                          ("1048570 10", "past the 1048576-pixel image"),
                                          ("10 -2", "negative"), ("1 2.5", "not an integer"), ("", "empty")])
def test_rle_malformed(rle, message):
    with pytest.raises(ValueError, match=message):
        rle_runs(rle, 1024 * 1024)


def test_siim_real_rle_file_parses_fully():
    path = xrv_data("siim-pneumothorax-train-rle.csv.gz")
    t = read_siim_rle(path)
    assert len(t) == 12047 and t["ImageId"].is_unique
    assert int(t["label_pneumothorax"].sum()) == 2669 and int((t["label_pneumothorax"] == 0).sum()) == 9378
    assert int(t["n_regions"].sum()) == 3576 and int((t["n_regions"] > 1).sum()) == 624
    assert int(t["n_regions"].sum() + (t["n_regions"] == 0).sum()) == 12954  # every row of the file
    assert (t["problem"] == "").all()  # every real RLE is well-formed on the 1024 grid
    rles = [r for rs in t["rles"] for r in rs][::180]  # 20 real regions against the reference decoder
    for rle in rles:
        mask = rle_decode(rle)
        np.testing.assert_array_equal(mask, reference_decode(rle))
        assert mask.sum() > 0
        np.testing.assert_array_equal(rle_decode(encode_rle(mask)), mask)


@pytest.fixture(scope="module")
def siim_layout(tmp_path_factory):
    rle = pd.read_csv(xrv_data("siim-pneumothorax-train-rle.csv.gz"), dtype=str)
    rle.columns = ["ImageId", " EncodedPixels"]  # the challenge's header, with its leading space
    n = rle.groupby("ImageId", sort=False).size()
    pos = set(rle["ImageId"][rle[" EncodedPixels"].str.strip() != "-1"])
    ids = list(n.index)
    pick = ([i for i in ids if n[i] >= 2][:8] + [i for i in ids if n[i] == 1 and i in pos][:8]
            + [i for i in ids if i not in pos][:14])
    sub = rle[rle["ImageId"].isin(pick)]
    bad = pd.DataFrame({"ImageId": ["1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2"],
                        " EncodedPixels": [" 5 10 3", " 1048570 10"]})
    root = tmp_path_factory.mktemp("siim") / "in"
    root.mkdir()
    pd.concat([sub, bad]).to_csv(root / "train-rle.csv", index=False)
    missing = pick[3]
    shared_patient = str(uuid.UUID(int=7))
    values = []
    for k, image_id in enumerate(pick + bad["ImageId"].tolist()):
        if image_id == missing:
            continue
        study, series = f"1.2.826.0.1.3680043.8.498.{1000 + k}", f"1.2.826.0.1.3680043.8.498.{2000 + k}"
        pid = shared_patient if k in (0, 20) else str(uuid.UUID(int=1000 + k))
        ds = write_dicom(root / "dicom-images-train" / study / series / f"{image_id}.dcm", image(200 + k),
                         identity={**IDENTIFYING, "PatientID": pid}, SOPInstanceUID=image_id,
                         StudyInstanceUID=study, SeriesInstanceUID=series, ViewPosition="PA" if k % 2 else "AP",
                         PatientSex="M" if k % 3 else "F", PatientAge=f"{20 + k:03d}Y", Modality="CR")
        values += [v for v in identifying_values(ds) if v != image_id]
    return root, sub, pick, missing, bad, values


def test_siim_source(siim_layout, tmp_path):
    root, sub, pick, missing, bad, values = siim_layout
    out = tmp_path / "prep"
    ds = prepare("siim", root, out, size=32, progress=False, workers=2)
    assert len(ds) == 29 and ds.masks.shape == (29, 32, 32) and ds.info["mask_kind"] == "segmentation"
    reasons = {s["file"]: s["reason"] for s in ds.info["skipped"]}
    assert reasons[f"{missing}.dcm"] == "file not found"
    assert "odd number of values" in reasons[f"{bad['ImageId'][0]}.dcm"]
    assert "past the 1048576-pixel image" in reasons[f"{bad['ImageId'][1]}.dcm"]
    assert ds.info["n_skipped"] == 3
    m = ds.meta
    assert set(m["id"]) == set(pick) - {missing} and (m["has_mask"] == 1).all()
    enc = sub.assign(e=sub[" EncodedPixels"].str.strip())
    for row, (image_id, label) in enumerate(zip(m["id"], m["label_pneumothorax"], strict=True)):
        regions = enc["e"][(enc["ImageId"] == image_id) & (enc["e"] != "-1")].tolist()
        assert label == int(bool(regions)) and m["n_regions"][row] == len(regions)
        full = np.zeros((1024, 1024), np.uint8)
        for r in regions:
            full |= reference_decode(r)
        at64 = np.asarray(Image.fromarray(full).resize((64, 64), Image.Resampling.NEAREST))
        np.testing.assert_array_equal(ds.masks[row], pad_resize(at64, 32, nearest=True))
        assert (ds.masks[row].max() == 1) == bool(regions and at64.any())
    n_pos = len(set(enc["ImageId"][enc["e"] != "-1"]) - {missing})
    assert n_pos == 15 and int(m["label_pneumothorax"].sum()) == n_pos == ds.info["n_positive"]
    # patients come from the headers: the two images of one patient share key and split
    two = m[m["id"].isin([pick[0], pick[20]])]
    assert two["patient_id"].nunique() == 1 and two["split"].nunique() == 1
    assert m["patient_id"].nunique() == 28 and (m["patient_id"].str.len() == 16).all()
    assert set(m["view"]) == {"AP", "PA"} and (m["modality"] == "CR").all()
    assert_no_leak(out, values)  # names, dates, study/series UIDs, PatientIDs


def test_siim_missing_column(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    (root / "train-rle.csv").write_text("ImageId,Pixels\n1.2.3,-1\n")
    with pytest.raises(CxrclError, match=r"train-rle\.csv lacks the column 'EncodedPixels' \(it has: ImageId, Pixels\)"):
        prepare("siim", root, tmp_path / "out", size=8, progress=False)
    (root / "train-rle.csv").write_text("ImageId, EncodedPixels\n1.2.3, -1\n")
    with pytest.raises(CxrclError, match=r"none of the 1 images of train-rle\.csv"):
        prepare("siim", root, tmp_path / "out", size=8, progress=False)
