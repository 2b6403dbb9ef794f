"""``cxrcl.data.dicom``: pixel pipeline (modality LUT, VOI, MONOCHROME1) and safe header fields.

Fixtures are DICOM files written with pydicom into tmp_path; :func:`write_dicom` is shared with
``test_sources_dicom.py``.
"""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pydicom = pytest.importorskip("pydicom", reason="pydicom is needed to write DICOM fixtures")

from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.encaps import encapsulate  # noqa: E402
from pydicom.pixels import set_pixel_data  # noqa: E402
from pydicom.sequence import Sequence  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid  # noqa: E402

from cxrcl.data.dicom import DEFAULT_SALT, SALT_ENV, parse_age, patient_key, read_dicom, read_header  # noqa: E402
from cxrcl.errors import CxrclError  # noqa: E402

DX_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation

#: identifying values every fixture carries by default; none may ever reach a prepared directory
IDENTIFYING = {
    "PatientName": "Doe^Janet^Q",
    "PatientID": "MRN-0042-SECRET",
    "PatientBirthDate": "19450317",
    "StudyDate": "20190402",
    "SeriesDate": "20190403",
    "AcquisitionDate": "20190404",
    "StudyTime": "101532",
    "AccessionNumber": "ACC998877",
    "InstitutionName": "St Elsewhere General Hospital",
    "InstitutionAddress": "12 Secret Lane Springfield",
    "ReferringPhysicianName": "House^Gregory",
    "OperatorsName": "Tech^Tina",
    "PatientAddress": "742 Evergreen Terrace",
    "OtherPatientIDs": "OTHER-777-ID",
    "StudyID": "STUDY31337",
    "DeviceSerialNumber": "SN-5551234",
    "StationName": "XRAYROOM9",
}


def identifying_values(ds: Dataset) -> list[str]:
    """Every identifying string of a fixture, UIDs included."""
    vals = [str(ds.get(k, "")) for k in IDENTIFYING if k in ds]
    vals += [str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)]
    return [v for v in vals if v]


def write_dicom(path: Path, pixels: np.ndarray, *, photometric: str = "MONOCHROME2", bits_stored: int | None = None,
                window: tuple[float, float] | None = None, rescale: tuple[float, float] | None = None,
                voi_lut: tuple[int, int, np.ndarray] | None = None, jpeg: bool = False,
                identity: dict | None = None, pixel_data: bool = True, **fields) -> Dataset:
    """Write a DICOM radiograph (2-D, or [frames, H, W] for multi-frame) and return its dataset.

    ``identity`` replaces the default identifying values (``IDENTIFYING``); ``fields`` sets more
    elements by keyword (``ViewPosition="PA"``, ``PatientAge="045Y"``, ...); ``voi_lut`` =
    ``(first_mapped, bits_per_entry, lut_values)``; ``jpeg`` encodes 8-bit data as JPEG baseline.
    """
    pixels = np.asarray(pixels)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = DX_CLASS
    ds.SOPClassUID = DX_CLASS
    ds.Modality = "DX"
    for k, v in (IDENTIFYING if identity is None else identity).items():
        setattr(ds, k, v)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    bits = bits_stored or pixels.dtype.itemsize * 8
    set_pixel_data(ds, pixels, photometric, bits)  # also sets a fresh SOPInstanceUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if jpeg:
        if pixels.dtype != np.uint8 or pixels.ndim != 2:
            raise ValueError("JPEG fixtures must be 2-D uint8")
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=95)
        ds.PixelData = encapsulate([buf.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.LossyImageCompression = "01"
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_lut is not None:
        first, depth, values = voi_lut
        item = Dataset()
        item.add_new(0x00283002, "US", [len(values) % 65536, first, depth])  # LUTDescriptor
        item.add_new(0x00283006, "US", [int(v) for v in values])  # LUTData
        ds.VOILUTSequence = Sequence([item])
    for k, v in fields.items():
        setattr(ds, k, v)
    if not pixel_data:
        del ds.PixelData
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return ds


def ramp(h: int, w: int, lo: int, hi: int, dtype) -> np.ndarray:
    """Left-to-right ramp from lo to hi (inclusive at the ends)."""
    row = np.round(np.linspace(lo, hi, w)).astype(np.int64)
    return np.tile(row, (h, 1)).astype(dtype)


# ----------------------------------------------------------------------------- pixels
def test_8bit_monochrome2_is_kept_as_is(tmp_path):
    px = np.random.default_rng(0).integers(10, 240, (20, 30)).astype(np.uint8)
    write_dicom(tmp_path / "a.dcm", px, ViewPosition="PA")
    img, hdr = read_dicom(tmp_path / "a.dcm")
    assert img.dtype == np.uint8 and img.shape == (20, 30)
    np.testing.assert_array_equal(img, px)
    assert hdr["voi"] == "none" and hdr["photometric"] == "MONOCHROME2" and hdr["bits_stored"] == 8
    assert (hdr["height"], hdr["width"], hdr["frames"]) == (20, 30, 1)


def test_monochrome1_is_inverted_so_bone_is_bright(tmp_path):
    px = np.random.default_rng(1).integers(0, 256, (16, 16)).astype(np.uint8)
    write_dicom(tmp_path / "m1.dcm", px, photometric="MONOCHROME1")
    img, hdr = read_dicom(tmp_path / "m1.dcm")
    np.testing.assert_array_equal(img, 255 - px)
    # 12-bit MONOCHROME1: the lowest stored value (bone in MONOCHROME1) becomes the brightest
    px12 = ramp(8, 64, 0, 4095, np.uint16)
    write_dicom(tmp_path / "m1_12.dcm", px12, photometric="MONOCHROME1", bits_stored=12)
    img12, hdr12 = read_dicom(tmp_path / "m1_12.dcm")
    assert img12[0, 0] == 255 and img12[0, -1] == 0 and (np.diff(img12[0].astype(int)) <= 0).all()
    assert hdr12["voi"] == "minmax" and hdr12["photometric"] == "MONOCHROME1"


@pytest.mark.parametrize("bits", [10, 12, 14, 16])
def test_deep_data_without_voi_is_min_max_scaled(tmp_path, bits):
    top = 2 ** bits - 1
    lo, hi = top // 10, top // 2  # a detector rarely fills its BitsStored range
    px = ramp(4, 256, lo, hi, np.uint16)
    write_dicom(tmp_path / f"b{bits}.dcm", px, bits_stored=bits)
    img, hdr = read_dicom(tmp_path / f"b{bits}.dcm")
    assert hdr["bits_stored"] == bits and hdr["voi"] == "minmax"
    expected = np.round((px.astype(float) - lo) * 255 / (hi - lo)).astype(np.uint8)
    np.testing.assert_array_equal(img, expected)


def test_signed_12bit_is_sign_extended_then_scaled(tmp_path):
    px = ramp(4, 64, -2048, 2047, np.int16)
    write_dicom(tmp_path / "s12.dcm", px, bits_stored=12)
    img, hdr = read_dicom(tmp_path / "s12.dcm")
    assert img[0, 0] == 0 and img[0, -1] == 255 and (np.diff(img[0].astype(int)) >= 0).all()
    assert abs(int(img[0, 32]) - 128) <= 3  # 0 sits in the middle, not at the top (sign handled)


def test_window_after_rescale_signed_16bit(tmp_path):
    # stored -1000..1000, rescale -> -2024..-24 (slope 1, intercept -1024); window 400 wide at -1024
    px = ramp(2, 2001, -1000, 1000, np.int16)
    write_dicom(tmp_path / "w.dcm", px, bits_stored=16, rescale=(1.0, -1024.0), window=(-1024.0, 400.0))
    img, hdr = read_dicom(tmp_path / "w.dcm")
    assert hdr["voi"] == "window"
    hu = px[0].astype(float) - 1024
    assert (img[0][hu <= -1224.5] == 0).all() and (img[0][hu > -824.5] == 255).all()
    mid = img[0][np.argmin(np.abs(hu + 1024))]
    assert abs(int(mid) - 128) <= 2
    inside = img[0][(hu > -1200) & (hu < -850)]
    assert (np.diff(inside.astype(int)) >= 0).all() and len(np.unique(inside)) > 200


def test_window_16bit_unsigned_and_monochrome1(tmp_path):
    px = ramp(2, 1000, 0, 60000, np.uint16)
    write_dicom(tmp_path / "w2.dcm", px, window=(30000, 20000))
    img, _ = read_dicom(tmp_path / "w2.dcm")
    assert img[0, 0] == 0 and img[0, -1] == 255 and abs(int(img[0, 500]) - 128) <= 2
    write_dicom(tmp_path / "w1.dcm", px, window=(30000, 20000), photometric="MONOCHROME1")
    inv, _ = read_dicom(tmp_path / "w1.dcm")
    np.testing.assert_array_equal(inv, 255 - img)


@pytest.mark.parametrize("func", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_window_agrees_with_pydicom_apply_windowing(tmp_path, func):
    from pydicom.pixels import apply_modality_lut, apply_windowing

    px = ramp(2, 3000, -1500, 1500, np.int16)
    ds = write_dicom(tmp_path / "w.dcm", px, bits_stored=12, rescale=(2.0, -100.0), window=(300.0, 900.0),
                     VOILUTFunction=func)
    img, hdr = read_dicom(tmp_path / "w.dcm")
    assert hdr["voi"] == "window"
    ds = pydicom.dcmread(tmp_path / "w.dcm")
    ref = apply_windowing(apply_modality_lut(ds.pixel_array, ds), ds)
    y_min, y_max = -2048 * 2.0 - 100, 2047 * 2.0 - 100  # pydicom's output range: BitsStored + rescale
    ref = np.rint((ref - y_min) * 255 / (y_max - y_min))
    assert np.abs(img.astype(int) - ref).max() <= 1 and img.min() == 0 and img.max() == 255


def test_unusable_window_falls_back_to_min_max(tmp_path, caplog):
    px = ramp(2, 100, 100, 3000, np.uint16)
    write_dicom(tmp_path / "w0.dcm", px, bits_stored=12, window=(1000.0, 0.0))
    with caplog.at_level(logging.WARNING, logger="cxrcl.data"):
        img, hdr = read_dicom(tmp_path / "w0.dcm")
    assert hdr["voi"] == "minmax" and img[0, 0] == 0 and img[0, -1] == 255
    assert any("unusable window" in r.getMessage() for r in caplog.records)


def test_voi_lut_sequence_is_applied_and_preferred_over_window(tmp_path):
    x = np.arange(4096)
    lut = np.round(4095 * (x / 4095) ** 0.5).astype(np.uint16)  # a gamma LUT, 12 bits per entry
    px = ramp(2, 4096, 0, 4095, np.uint16)
    write_dicom(tmp_path / "lut.dcm", px, bits_stored=12, voi_lut=(0, 12, lut), window=(100, 10))
    img, hdr = read_dicom(tmp_path / "lut.dcm")
    assert hdr["voi"] == "lut"
    expected = np.round(lut[px[0]].astype(float) * 255 / 4095).astype(np.uint8)
    np.testing.assert_array_equal(img[0], expected)
    assert img[0, 1024] > 100  # gamma brightens the low half: the LUT was used, not the window


def test_multiframe_takes_first_frame_and_says_so(tmp_path, caplog):
    frames = np.stack([np.full((8, 8), v, np.uint8) for v in (11, 99, 200)])
    frames[0, 0, 0] = 250
    write_dicom(tmp_path / "mf.dcm", frames)
    with caplog.at_level(logging.WARNING, logger="cxrcl.data"):
        img, hdr = read_dicom(tmp_path / "mf.dcm")
    np.testing.assert_array_equal(img, frames[0])
    assert hdr["frames"] == 3
    assert any("3 frames" in r.getMessage() and "first frame" in r.getMessage() for r in caplog.records)


def test_jpeg_baseline_is_decoded(tmp_path):
    yy, xx = np.mgrid[0:64, 0:64]
    px = (xx * 2 + yy).clip(0, 255).astype(np.uint8)
    write_dicom(tmp_path / "j.dcm", px, jpeg=True)
    img, hdr = read_dicom(tmp_path / "j.dcm")
    assert img.shape == (64, 64) and np.abs(img.astype(int) - px).max() <= 6


def test_missing_pixel_data_and_non_dicom_and_truncated(tmp_path):
    write_dicom(tmp_path / "nopix.dcm", np.zeros((4, 4), np.uint8), pixel_data=False)
    with pytest.raises(CxrclError, match=r"nopix\.dcm has no pixel data"):
        read_dicom(tmp_path / "nopix.dcm")
    (tmp_path / "text.dcm").write_text("this is not a DICOM file at all\n" * 20)
    with pytest.raises(CxrclError, match=r"text\.dcm is not a DICOM file"):
        read_dicom(tmp_path / "text.dcm")
    write_dicom(tmp_path / "full.dcm", np.zeros((64, 64), np.uint16), bits_stored=12)
    data = (tmp_path / "full.dcm").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) - 3000])
    with pytest.raises(ValueError, match="less than expected"):  # pydicom's error; sources skip the file
        read_dicom(tmp_path / "cut.dcm")
    (tmp_path / "head.dcm").write_bytes(data[:400])  # cut inside the header
    with pytest.raises(CxrclError, match=r"head\.dcm has no pixel data \(a truncated file"):
        read_dicom(tmp_path / "head.dcm")


# ----------------------------------------------------------------------------- header
def test_header_has_only_safe_fields(tmp_path, monkeypatch):
    monkeypatch.delenv(SALT_ENV, raising=False)
    ds = write_dicom(tmp_path / "h.dcm", np.zeros((6, 5), np.uint8), ViewPosition="AP", PatientSex="F",
                     PatientAge="045Y")
    _, hdr = read_dicom(tmp_path / "h.dcm")
    assert set(hdr) == {"patient_key", "view", "sex", "age", "modality", "photometric", "bits_stored",
                        "height", "width", "frames", "voi"}
    assert hdr["patient_key"] == hashlib.sha256(f"{DEFAULT_SALT}MRN-0042-SECRET".encode()).hexdigest()[:16]
    assert (hdr["view"], hdr["sex"], hdr["age"], hdr["modality"]) == ("AP", "F", 45.0, "DX")
    text = repr(hdr)
    for value in identifying_values(ds):
        assert value not in text
    assert read_header(tmp_path / "h.dcm") == {**hdr, "voi": ""}
    monkeypatch.setenv(SALT_ENV, "my-own-salt")
    _, salted = read_dicom(tmp_path / "h.dcm")
    assert salted["patient_key"] != hdr["patient_key"] and len(salted["patient_key"]) == 16
    assert patient_key("") == "" and patient_key("  ") == ""


@pytest.mark.parametrize("raw, years", [("045Y", 45.0), ("006M", 0.5), ("003W", 0.06), ("010D", 0.03),
                                        ("45", 45.0), ("155", None), ("", None), ("abc", None), (None, None)])
def test_parse_age(raw, years):
    assert parse_age(raw) == years
