"""Hostile input files for the source adapters and the report parser (issue 6, guarantee 3).

Shared by ``tests/data/test_hostile_inputs.py`` (drawn by hypothesis) and
``benchmarks/hostile_inputs.py`` (drawn from a seeded ``random.Random``). A bad file is a
``(kind, seed)`` pair: :func:`image_bytes` / :func:`dicom_bytes` turn it into bytes
deterministically. Each kind says what a preparation must do with it: ``skip`` (listed in
``skipped.csv`` with a reason), ``keep`` (a strange but valid image: prepared) or ``either``.

A *case* is one input folder for one adapter: a few good images, the bad files listed where
the adapter finds them (its CSV, its folders), paths that escape INPUT towards a planted
secret, and optionally a hostile table (:data:`TABLE_KINDS`). :func:`run_case` prepares it and
checks the accounting: every listed file is prepared or named in ``skipped.csv``, the ``skip``
kinds are all there, the secret never reaches the output; a whole-input problem must be one
:class:`~cxrcl.errors.CxrclError`. Anything else (another exception, a hang) fails the caller.
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import os
import random
import struct
import sys
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cxrcl.data.sources import prepare
from cxrcl.errors import CxrclError

SECRET_VALUE = 213  # grey value of the planted image outside INPUT
SECRET_TEXT = "TOPSECRET-7f3a9c"  # text of the planted report outside INPUT
SIZE = 16  # prepared size: small, so that a case is fast


# ============================================================================ image bytes
def _png(a: np.ndarray | Image.Image, fmt: str = "PNG", **kw) -> bytes:
    img = a if isinstance(a, Image.Image) else Image.fromarray(a)
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _noise(rng: random.Random, lo: int = 8, hi: int = 40) -> np.ndarray:
    g = np.random.default_rng(rng.getrandbits(32))
    return g.integers(0, 256, (rng.randint(lo, hi), rng.randint(lo, hi)), dtype=np.uint8)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int, depth: int = 8, colour: int = 0, idat: bytes = b"") -> bytes:
    """A PNG whose IHDR declares ``width`` x ``height``, with ``idat`` as its only data."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat or zlib.compress(b"\0" * 64))
            + _chunk(b"IEND", b""))


@functools.cache
def png_bomb(side: int = 9000) -> bytes:
    """A real decompression bomb: a 16-bit grey ``side`` x ``side`` PNG of zeros (~0.3 MB)."""
    comp = zlib.compressobj(9)
    row = b"\0" * (1 + 2 * side)
    data = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    return png_header(side, side, depth=16, idat=data)


def _bmp_header(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54 + 64, 0, 0, 54) + info + b"\0" * 64


def _tiff_float(rng: random.Random) -> bytes:
    a = _noise(rng).astype(np.float32)
    bad = rng.choice([np.nan, np.inf, -np.inf])
    a[rng.randrange(a.shape[0]), :] = bad
    return _png(Image.fromarray(a, mode="F"), "TIFF")


def _truncate(data: bytes, rng: random.Random, lo: int) -> bytes:
    return data[: rng.randint(lo, max(lo, len(data) // 2))]


#: kind -> (bytes from a Random, expected fate: "skip" | "keep" | "either")
IMAGE_KINDS = {
    "empty": (lambda r: b"", "skip"),
    "random_bytes": (lambda r: r.randbytes(r.randint(1, 3000)), "skip"),
    "png_magic_then_garbage": (lambda r: b"\x89PNG\r\n\x1a\n" + r.randbytes(r.randint(0, 500)), "skip"),
    "jpeg_magic_then_garbage": (lambda r: b"\xff\xd8\xff\xe0" + r.randbytes(r.randint(0, 500)), "skip"),
    "truncated_png": (lambda r: _truncate(_png(_noise(r)), r, 8), "skip"),
    "truncated_jpeg": (lambda r: _truncate(_png(_noise(r, 16, 48), "JPEG"), r, 2), "skip"),
    "zero_width_png": (lambda r: png_header(0, r.randint(0, 50)), "skip"),
    "huge_declared_png": (lambda r: png_header(r.randint(6400, 65000), r.randint(1, 65000),
                                               depth=r.choice([8, 16])), "skip"),
    "huge_declared_bmp": (lambda r: _bmp_header(r.randint(6400, 60000), r.randint(6400, 60000)), "skip"),
    "long_thin_png": (lambda r: _png(np.zeros((1, r.randint(6400, 40000)), np.uint8)), "skip"),
    "decompression_bomb_png": (lambda r: png_bomb(), "skip"),
    "nan_float_tiff": (_tiff_float, "skip"),
    "eps_postscript": (lambda r: b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n", "skip"),
    "one_pixel": (lambda r: _png(np.full((1, 1), r.randrange(256), np.uint8), r.choice(["PNG", "JPEG"])), "keep"),
    "constant_16bit": (lambda r: _png(Image.fromarray(np.full((9, 5), r.randrange(65536), np.uint16))), "keep"),
    "palette_alpha": (lambda r: _png(Image.fromarray(_noise(r)).convert("P"), transparency=0), "keep"),
    "thin_valid": (lambda r: _png(_noise(r, 1, 3) if r.random() < 0.5 else _noise(r, 1, 3).T), "keep"),
}


def image_bytes(kind: str, seed: int) -> bytes:
    return IMAGE_KINDS[kind][0](random.Random(seed))


# ============================================================================ DICOM bytes
def _dicom(rows: int, cols: int, pixels: bytes | None = None, *, deflate: bool = False, bits: int = 16,
           stored: int = 12, **elements) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str((rows, cols, elements))])
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian if deflate else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.Modality = "HOSTILE-P1", "DX"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, stored, stored - 1, 0
    for k, v in elements.items():
        setattr(ds, k, v)
    if pixels is not None:
        ds.PixelData = pixels
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def good_dicom(rng: random.Random, side: int | None = None) -> bytes:
    g = np.random.default_rng(rng.getrandbits(32))
    h, w = (side, side) if side else (rng.randint(8, 32), rng.randint(8, 32))
    return _dicom(h, w, g.integers(0, 4096, (h, w), dtype=np.uint16).tobytes())


@functools.cache
def dicom_deflate_bomb(side: int = 8000) -> bytes:
    """A real deflated DICOM declaring ``side`` x ``side`` 16-bit zeros (~0.3 MB on disk)."""
    return _dicom(side, side, bytes(2 * side * side), deflate=True)


DICOM_KINDS = {
    "empty": (lambda r: b"", "skip"),
    "random_bytes": (lambda r: r.randbytes(r.randint(1, 3000)), "skip"),
    "preamble_then_garbage": (lambda r: b"\0" * 128 + b"DICM" + r.randbytes(r.randint(0, 800)), "skip"),
    "png_named_dcm": (lambda r: _png(_noise(r)), "skip"),
    "truncated_dicom": (lambda r: (lambda d: d[: r.randint(132, len(d) - 300)])(good_dicom(r, 24)), "skip"),
    "no_pixel_data": (lambda r: _dicom(16, 16, None), "skip"),
    "zero_rows": (lambda r: _dicom(0, r.randint(0, 16), b""), "skip"),
    "huge_declared_rows": (lambda r: _dicom(r.randint(6400, 65535), r.randint(6400, 65535),
                                            bytes(r.randint(0, 64) * 2)), "skip"),
    "deflate_bomb": (lambda r: dicom_deflate_bomb(), "skip"),
    "pixel_data_too_short": (lambda r: _dicom(32, 32, bytes(2 * r.randint(1, 500))), "skip"),
    "absurd_bits": (lambda r: _dicom(8, 8, bytes(128), bits=r.choice([0, 3, 13, 64]), stored=1), "skip"),
    "one_pixel": (lambda r: _dicom(1, 1, struct.pack("<H", r.randrange(4096))), "keep"),
    "bad_window": (lambda r: _dicom(8, 8, bytes(128), WindowCenter=r.choice(["0", "-1e308", "5"]),
                                    WindowWidth=r.choice(["0", "-3", "1e-300"])), "keep"),
    "absurd_frames": (lambda r: _dicom(8, 8, bytes(128), NumberOfFrames=str(r.randint(2, 10 ** 9))), "either"),
}


def dicom_bytes(kind: str, seed: int) -> bytes:
    return DICOM_KINDS[kind][0](random.Random(seed))


# ============================================================================ tables
ABSURD_LABELS = ["7", "-5", "1e308", "nan", "inf", "-inf", "yes", "0.5", "\u0663", "1" * 400, "0x1"]


def _non_utf8(rng: random.Random) -> bytes:
    return rng.choice([b"\xff\xfe\xfa", b"caf\xe9", b"\xc3\x28", b"\x80abc", b"\xed\xa0\x80"])


#: hostile changes of an adapter's main table; each must end in success or one CxrclError
TABLE_KINDS = ("none", "random_bytes", "truncated", "non_utf8_cell", "absurd_label", "empty_file",
               "header_only", "binary_nul", "gzip_garbage")


def hostile_table(text: str, kind: str, rng: random.Random, label_col: int | None) -> bytes:
    """The bytes of a CSV ``text`` changed by ``kind`` (see :data:`TABLE_KINDS`)."""
    data = text.encode()
    if kind == "random_bytes":
        return rng.randbytes(rng.randint(1, 2000))
    if kind == "truncated":
        return data[: rng.randint(1, max(1, len(data) - 1))]
    if kind == "empty_file":
        return b""
    if kind == "header_only":
        return data.split(b"\n", 1)[0] + b"\n"
    if kind == "binary_nul":
        cut = rng.randint(0, len(data))
        return data[:cut] + b"\0" * rng.randint(1, 40) + data[cut:]
    if kind == "gzip_garbage":
        return gzip.compress(rng.randbytes(200))
    lines = text.split("\n")
    body = [i for i in range(1, len(lines)) if lines[i]]
    if kind in ("non_utf8_cell", "absurd_label") and body:
        i = rng.choice(body)
        cells = lines[i].split(",")
        if kind == "absurd_label" and label_col is not None and label_col < len(cells):
            cells[label_col] = rng.choice(ABSURD_LABELS)
            lines[i] = ",".join(cells)
            return "\n".join(lines).encode()
        j = rng.randrange(len(cells))
        out = [c.encode() for c in cells]
        out[j] = out[j] + _non_utf8(rng)
        raw = [ln.encode() for ln in lines]
        raw[i] = b",".join(out)
        return b"\n".join(raw)
    return data


# ============================================================================ cases
@dataclass
class Case:
    """One input folder: where to prepare from, and what must happen to its files."""

    adapter: str
    input: Path
    secret_dir: Path
    listed: dict[str, str] = field(default_factory=dict)  # token in the file name -> fate
    escapes: list[str] = field(default_factory=list)  # tokens of paths that leave INPUT
    bad: set[str] = field(default_factory=set)  # tokens of the hostile files
    table_kind: str = "none"
    n_generated: int = 0  # hostile inputs in this case (bad files + a hostile table + escapes)
    options: dict = field(default_factory=dict)


def plant_secret(base: Path) -> Path:
    """A recognisable image and report outside INPUT (``base/secret/``)."""
    d = base / "secret"
    d.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((20, 20), SECRET_VALUE, np.uint8)).save(d / "secret.png")
    Image.fromarray(np.full((20, 20), SECRET_VALUE, np.uint8)).save(d / "secret.jpg", quality=100)
    (d / "secret.txt").write_text(f"FINDINGS: {SECRET_TEXT}\n")
    (d / "secret.xml").write_text(f"<x>{SECRET_TEXT}</x>")
    (d / "secret.dcm").write_bytes(_dicom(20, 20, np.full((20, 20), 4000, np.uint16).tobytes(),
                                          PatientName=SECRET_TEXT))
    return d


def _escape_names(secret: Path, suffix: str, depth: int) -> list[str]:
    """Ways a name from metadata can point at ``secret/secret<suffix>`` from ``depth`` folders
    below the base: ``..`` climbs and an absolute path."""
    up = "../" * (depth + 1)
    return [f"{up}secret/secret{suffix}", str((secret / f"secret{suffix}").resolve())]


def _good_png(rng: random.Random) -> bytes:
    return _png(_noise(rng, 12, 24))


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def build_case(adapter: str, base: Path, bad: list[tuple[str, int]], table_kind: str = "none",
               seed: int = 0, escapes: bool = True) -> Case:
    """Write the input folder of ``adapter`` under ``base/in`` with the ``bad`` files (kind, seed)
    among 3 good ones, optionally paths that escape INPUT, and its table changed by ``table_kind``."""
    rng = random.Random(seed)
    secret = plant_secret(base)
    root = base / "in"
    root.mkdir(parents=True)
    case = Case(adapter, root, secret, table_kind=table_kind)
    builder = BUILDERS[adapter]
    builder(case, root, bad, rng, escapes)
    case.n_generated = len(bad) + (table_kind != "none") + len(case.escapes)
    return case


def _files(case: Case, bad, good: int, rng, kinds=IMAGE_KINDS, make=image_bytes, gen=_good_png):
    """``[(token, bytes)]``: ``good`` good files then the bad ones; records each one's fate."""
    out = []
    for k in range(good):
        token = f"good{k:03d}"
        case.listed[token] = "keep"
        out.append((token, gen(rng)))
    for j, (kind, s) in enumerate(bad):
        token = f"bad{j:03d}"
        case.listed[token] = kinds[kind][1]
        case.bad.add(token)
        out.append((token, make(kind, s)))
    return out


def _table(path: Path, text: str, case: Case, rng, label_col: int | None) -> None:
    _write(path, hostile_table(text, case.table_kind, rng, label_col))


def _b_folder(case, root, bad, rng, escapes):
    for i, (token, data) in enumerate(_files(case, bad, 3, rng)):
        _write(root / ("pneumonia" if i % 2 else "normal") / f"{token}.png", data)


def _b_csv(case, root, bad, rng, escapes):
    rows = []
    for i, (token, data) in enumerate(_files(case, bad, 3, rng)):
        _write(root / "img" / f"{token}.png", data)
        rows.append(f"img/{token}.png,p{i},{i % 2},a note that is long enough to be free text here")
    case.input = root / "images.csv"
    _table(case.input, "path,patient_id,label_pneumonia,report\n" + "\n".join(rows) + "\n", case, rng, 2)


def _b_folder_tree_dicom(case, root, bad, rng, escapes):
    files = _files(case, bad, 3, rng, DICOM_KINDS, dicom_bytes, good_dicom)
    for i, (token, data) in enumerate(files):
        _write(root / f"site{i % 2}" / f"{token}.dcm", data)
    rows = [f"site{i % 2}/{t}.dcm,{i % 2}" for i, (t, _) in enumerate(files)]
    _table(root / "labels.csv", "file,Pneumonia\n" + "\n".join(rows) + "\n", case, rng, 1)


def _b_rsna(case, root, bad, rng, escapes):
    files = _files(case, bad, 3, rng, DICOM_KINDS, dicom_bytes, good_dicom)
    rows = []
    for i, (token, data) in enumerate(files):
        _write(root / "stage_2_train_images" / f"{token}.dcm", data)
        rows.append(f"{token},2,3,4,5,1" if i % 2 else f"{token},,,,,0")
    if escapes:  # patientId is a file name: a climbing id must not be read
        for name in _escape_names(case.secret_dir, "", 1)[:1]:
            case.escapes.append(name)
            rows.append(f"{name},,,,,0")
    _table(root / "stage_2_train_labels.csv", "patientId,x,y,width,height,Target\n" + "\n".join(rows) + "\n",
           case, rng, 5)


def _b_siim(case, root, bad, rng, escapes):
    files = _files(case, bad, 3, rng, DICOM_KINDS, dicom_bytes, good_dicom)
    rows = []
    for i, (token, data) in enumerate(files):
        _write(root / "dicom-images-train" / f"s{i}" / f"{token}.dcm", data)
        rows.append(f"{token}, -1" if i % 2 else f"{token}, 5 10 20 4")
    _table(root / "train-rle.csv", "ImageId, EncodedPixels\n" + "\n".join(rows) + "\n", case, rng, 1)


NIH_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
              "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],")


def _b_nih14(case, root, bad, rng, escapes):
    rows = []
    for i, (token, data) in enumerate(_files(case, bad, 3, rng)):
        _write(root / "images_001" / "images" / f"{token}.png", data)
        rows.append(f"{token}.png,{'Effusion' if i % 2 else 'No Finding'},0,{i + 1},0{40 + i}Y,M,PA,"
                    "2500,2048,0.14,0.14,")
    if escapes:
        for name in _escape_names(case.secret_dir, ".png", 2):
            case.escapes.append(name)
            rows.append(f"{name},No Finding,0,99,050Y,M,PA,2500,2048,0.14,0.14,")
    _table(root / "Data_Entry_2017.csv", NIH_HEADER + "\n" + "\n".join(rows) + "\n", case, rng, 4)


CHEX_COLS = ("Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,"
             "Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,"
             "Pleural Effusion,Pleural Other,Fracture,Support Devices")


def _b_chexpert(case, root, bad, rng, escapes):
    rows = []
    for i, (token, data) in enumerate(_files(case, bad, 3, rng)):
        rel = f"train/patient{i:05d}/study1/{token}.jpg"
        _write(root / rel, data)
        rows.append(f"CheXpert-v1.0-small/{rel},Male,{40 + i},Frontal,AP," + ("1.0," + "," * 12))
    if escapes:
        for name in _escape_names(case.secret_dir, ".jpg", 0):
            case.escapes.append(name)
            rows.append(f"train/patient99999/study1/../../../{name},Male,50,Frontal,AP,1.0" + "," * 13)
    _table(root / "train.csv", CHEX_COLS + "\n" + "\n".join(rows) + "\n", case, rng, 7)


MIMIC_OBS = ("Atelectasis,Cardiomegaly,Consolidation,Edema,Enlarged Cardiomediastinum,Fracture,"
             "Lung Lesion,Lung Opacity,No Finding,Pleural Effusion,Pleural Other,Pneumonia,"
             "Pneumothorax,Support Devices")


def _b_mimic(case, root, bad, rng, escapes):
    meta, split, labels = [], [], []
    for i, (token, data) in enumerate(_files(case, bad, 3, rng)):
        s, t = f"1{i:07d}", f"5{i:07d}"
        _write(root / "files" / f"p{s[:2]}" / f"p{s}" / f"s{t}" / f"{token}.jpg", data)
        _write(root / "files" / f"p{s[:2]}" / f"p{s}" / f"s{t}.txt",
               b"FINDINGS: clear.\nIMPRESSION: " + (_non_utf8(rng) if i % 2 else b"normal") + b"\n")
        meta.append(f"{token},{s},{t},PA,32,32")
        split.append(f"{token},{t},{s},train")
        labels.append(f"{s},{t}," + ("1.0" if i % 2 else "") + "," * 13)
    _write(root / "mimic-cxr-2.0.0-metadata.csv.gz", gzip.compress(
        hostile_table("dicom_id,subject_id,study_id,ViewPosition,Rows,Columns\n" + "\n".join(meta) + "\n",
                      case.table_kind, rng, 4)))
    (root / "mimic-cxr-2.0.0-split.csv").write_text("dicom_id,study_id,subject_id,split\n" + "\n".join(split) + "\n")
    (root / "mimic-cxr-2.0.0-chexpert.csv").write_text(f"subject_id,study_id,{MIMIC_OBS}\n" + "\n".join(labels) + "\n")


OPENI_XML = """<?xml version="1.0" encoding="utf-8"?>{doctype}
<eCitation>
   <uId id="{uid}"/>
   <MedlineCitation><Article><Abstract>
      <AbstractText Label="FINDINGS">{findings}</AbstractText>
      <AbstractText Label="IMPRESSION">No acute disease XXXX.</AbstractText>
   </Abstract></Article></MedlineCitation>
   <MeSH><major>{mesh}</major></MeSH>
{images}
</eCitation>"""
BILLION_LAUGHS = ("\n<!DOCTYPE lolz [<!ENTITY lol \"lol\">"
                  + "".join(f'<!ENTITY lol{k} "{("&lol%s;" % ("" if k == 1 else k - 1)) * 10}">'
                            for k in range(1, 10)) + "]>")
#: report XML kinds: doctype + findings text; the fate is of the report, not of an image
XML_KINDS = ("billion_laughs", "external_entity", "external_dtd", "truncated", "random_bytes",
             "non_utf8", "no_uid", "deep_nesting", "oversized", "directory_named_xml", "escape_image_id")


def openi_xml(uid: str, images: list[str], doctype: str = "", findings: str = "Clear.",
              mesh: str = "normal") -> str:
    imgs = "\n".join(f'   <parentImage id="{i}"><caption>PA</caption></parentImage>' for i in images)
    return OPENI_XML.format(doctype=doctype, uid=uid, findings=findings, mesh=mesh, images=imgs)


def hostile_xml(kind: str, rng: random.Random, secret: Path, uid: str) -> bytes | None:
    """The bytes of one hostile Open-i report (None: a folder is made instead)."""
    if kind == "billion_laughs":
        return openi_xml(uid, [], BILLION_LAUGHS, "&lol9;").encode()
    if kind == "external_entity":
        dt = f'\n<!DOCTYPE r [<!ENTITY xxe SYSTEM "file://{(secret / "secret.txt").resolve()}">]>'
        return openi_xml(uid, [], dt, "&xxe;").encode()
    if kind == "external_dtd":
        dt = f'\n<!DOCTYPE r SYSTEM "file://{(secret / "secret.xml").resolve()}">'
        return openi_xml(uid, [], dt).encode()
    if kind == "truncated":
        d = openi_xml(uid, [f"{uid}_IM"]).encode()
        return d[: rng.randint(1, len(d) - 20)]
    if kind == "random_bytes":
        return rng.randbytes(rng.randint(1, 1500))
    if kind == "non_utf8":
        return openi_xml(uid, []).encode().replace(b"Clear.", b"Cl\xe9ar \xff\xfe.")
    if kind == "no_uid":
        return openi_xml("", []).encode()
    if kind == "deep_nesting":
        n = rng.randint(1000, 20000)
        return b"<eCitation>" + b"<a>" * n + b"</a>" * n + b"</eCitation>"
    if kind == "oversized":
        return openi_xml(uid, [], findings="x" * 1_100_000).encode()
    return None


def _b_openi(case, root, bad, rng, escapes):
    xml_dir = root / "ecgen-radiology"
    xml_dir.mkdir()
    k = 0
    for i, (token, data) in enumerate(_files(case, bad, 3, rng)):
        _write(root / "NLMCXR_png" / f"{token}.png", data)
        (xml_dir / f"{i + 1}.xml").write_text(openi_xml(f"CXR{i + 1}", [token]))
        k = i + 1
    if escapes:
        for name in _escape_names(case.secret_dir, "", 1):
            case.escapes.append(name)
            k += 1
            (xml_dir / f"{k}.xml").write_text(openi_xml(f"CXR{k}", [name]))
    if case.table_kind != "none":  # here the "table" is one more hostile report
        k += 1
        data = hostile_xml(case.table_kind, rng, case.secret_dir, f"CXR{k}")
        if data is None and case.table_kind == "directory_named_xml":
            (xml_dir / f"{k}.xml").mkdir()
        elif data is not None:
            (xml_dir / f"{k}.xml").write_bytes(data)
        elif case.table_kind == "escape_image_id":
            name = "../../secret/secret"
            case.escapes.append(name)
            (xml_dir / f"{k}.xml").write_text(openi_xml(f"CXR{k}", [name]))
        if rng.random() < 0.3:  # the same reports as a .tgz, read without extracting
            _tar_reports(root, xml_dir)


def _tar_reports(root: Path, xml_dir: Path) -> None:
    with tarfile.open(root / "NLMCXR_reports.tgz", "w:gz") as tar:
        for p in sorted(xml_dir.iterdir()):
            if p.is_file():
                tar.add(p, arcname=f"ecgen-radiology/{p.name}")
    for p in sorted(xml_dir.iterdir()):
        (p.rmdir() if p.is_dir() else p.unlink())
    xml_dir.rmdir()


COVID_COLS = ("patientid,offset,sex,age,finding,RT_PCR_positive,survival,view,modality,date,location,"
              "folder,filename,doi,url,license,clinical_notes,other_notes")


def _b_covid(case, root, bad, rng, escapes):
    rows = []
    for i, (token, data) in enumerate(_files(case, bad, 3, rng)):
        _write(root / "images" / f"{token}.png", data)
        rows.append(f"{i},0,M,60,{'Pneumonia/Viral/COVID-19' if i % 2 else 'No Finding'},Y,Y,PA,X-ray,2020,"
                    f"x,images,{token}.png,doi,url,CC,a note long enough to be a clinical text note,")
    if escapes:
        for name in _escape_names(case.secret_dir, ".png", 1):
            case.escapes.append(name)
            rows.append(f"98,0,M,60,No Finding,Y,Y,PA,X-ray,2020,x,images,{name},doi,url,CC,note,")
    _table(root / "metadata.csv", COVID_COLS + "\n" + "\n".join(rows) + "\n", case, rng, 4)


def _b_tb(prefix: str):
    def build(case, root, bad, rng, escapes):
        for i, (token, data) in enumerate(_files(case, bad, 3, rng)):
            stem = f"{prefix}_{i:04d}_{i % 2}"
            case.listed[stem] = case.listed.pop(token)  # the adapter finds files by this name
            if token in case.bad:
                case.bad.remove(token)
                case.bad.add(stem)
            _write(root / "CXR_png" / f"{stem}.png", data)
            reading = (b"male 35yrs\nnormal\n" if i % 3 == 0 else
                       b"Patient's Sex: F\nPatient's Age: 9999Y\n" + _non_utf8(rng) if i % 3 == 1 else
                       rng.randbytes(rng.randint(0, 300)))
            _write(root / "ClinicalReadings" / f"{stem}.txt", reading)
            if prefix == "MCUCXR" and i % 2:  # a hostile mask: its fate is the image's
                mask_kind, mask_seed = rng.choice(list(IMAGE_KINDS)), rng.getrandbits(32)
                _write(root / "ManualMask" / "leftMask" / f"{stem}.png", image_bytes(mask_kind, mask_seed))
                if IMAGE_KINDS[mask_kind][1] != "keep" and case.listed[stem] == "keep":
                    case.listed[stem] = "either"
    return build


def _npz_bytes(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _npz_header_bomb(rng: random.Random, key: str) -> bytes:
    """An .npz whose ``key`` array header declares a huge uint8 shape over a few bytes of data."""
    shape = (rng.randint(1, 10 ** 6), rng.randint(6400, 10 ** 5), rng.randint(6400, 10 ** 5))
    header = {"descr": "|u1", "fortran_order": False, "shape": shape}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    import zipfile
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"{key}.npy", b"\x93NUMPY" + buf.getvalue()[6:] + bytes(64))
    return out.getvalue()


#: hostile whole inputs of the array sources (one per case): success or one CxrclError
NPZ_KINDS = ("random_bytes", "truncated_zip", "float_nan_images", "wrong_ndim", "header_bomb",
             "object_array", "labels_absurd", "metadata_non_utf8", "mask_index_out_of_range",
             "row_mismatch", "huge_side_valid")


def _b_npz(case, root, bad, rng, escapes):
    kind = case.table_kind
    n = 6
    g = np.random.default_rng(rng.getrandbits(32))
    images = g.integers(0, 256, (n, 12, 12), dtype=np.uint8)
    meta = "id,patient_id,label_pneumonia\n" + "".join(f"i{i},p{i},{i % 2}\n" for i in range(n))
    arrays = {"images": images}
    if kind == "random_bytes":
        _write(root / "images_12.npz", rng.randbytes(rng.randint(1, 2000)))
    elif kind == "truncated_zip":
        d = _npz_bytes(arrays)
        _write(root / "images_12.npz", d[: rng.randint(1, len(d) - 1)])
    elif kind == "float_nan_images":
        f = images.astype(np.float32)
        f[0, 0, 0] = np.nan
        _write(root / "images_12.npz", _npz_bytes({"images": f}))
    elif kind == "wrong_ndim":
        _write(root / "images_12.npz", _npz_bytes({"images": images.reshape(n, -1)}))
    elif kind == "header_bomb":
        _write(root / "images_12.npz", _npz_header_bomb(rng, "images"))
    elif kind == "object_array":
        _write(root / "images_12.npz", _npz_header_object(rng))
    elif kind == "huge_side_valid":  # a real array whose side exceeds the pixel cap
        _write(root / "images_12.npz", _npz_bytes({"images": np.zeros((1, 1, 7000), np.uint8)}))
        meta = "id,patient_id\ni0,p0\n"
    else:
        _write(root / "images_12.npz", _npz_bytes(arrays))
    if kind == "labels_absurd":
        meta = meta.replace(",1\n", f",{rng.choice(ABSURD_LABELS)}\n", 1)
    if kind == "metadata_non_utf8":
        meta = meta.encode().replace(b"p1", b"p\xff\xfe1").decode("latin-1")
        (root / "metadata.csv").write_bytes(meta.encode("latin-1"))
    elif kind == "row_mismatch":
        (root / "metadata.csv").write_text(meta + "i99,p99,0\n")
    else:
        (root / "metadata.csv").write_text(meta)
    if kind == "mask_index_out_of_range":
        _write(root / "lung_masks_12.npz", _npz_bytes({"masks": np.ones((2, 12, 12), np.uint8),
                                                      "index": np.array([0, rng.choice([-1, n, 10 ** 12])])}))


def _npz_header_object(rng: random.Random) -> bytes:
    import zipfile
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": (3,)})
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("images.npy", buf.getvalue() + rng.randbytes(64))
    return out.getvalue()


MEDMNIST_KINDS = ("random_bytes", "missing_split", "labels_absurd_class", "labels_negative",
                  "labels_nan", "rgba_images", "float_images", "header_bomb", "labels_rows_mismatch",
                  "huge_side_valid")


def _b_medmnist(case, root, bad, rng, escapes):
    kind = case.table_kind
    g = np.random.default_rng(rng.getrandbits(32))
    arrays = {}
    for s, n in (("train", 6), ("val", 2), ("test", 2)):
        arrays[f"{s}_images"] = g.integers(0, 256, (n, 12, 12), dtype=np.uint8)
        arrays[f"{s}_labels"] = g.integers(0, 2, (n, 1))
    if kind == "missing_split":
        del arrays["val_labels"]
    elif kind == "labels_absurd_class":
        arrays["train_labels"] = arrays["train_labels"].copy()
        arrays["train_labels"][0, 0] = rng.choice([7, 10 ** 6, 10 ** 9, 2 ** 62])
    elif kind == "labels_negative":
        arrays["train_labels"] = -arrays["train_labels"] - rng.randint(1, 10 ** 9)
    elif kind == "labels_nan":
        arrays["train_labels"] = arrays["train_labels"].astype(float)
        arrays["train_labels"][0, 0] = rng.choice([np.nan, np.inf])
    elif kind == "rgba_images":
        arrays["train_images"] = g.integers(0, 256, (6, 12, 12, 4), dtype=np.uint8)
    elif kind == "float_images":
        with np.errstate(divide="ignore", invalid="ignore"):  # NaN and inf pixels on purpose
            arrays["test_images"] = arrays["test_images"].astype(np.float64) / 0.0
    elif kind == "labels_rows_mismatch":
        arrays["val_labels"] = np.zeros((5, 1), int)
    elif kind == "huge_side_valid":
        arrays["test_images"] = np.zeros((1, 1, 7000), np.uint8)
        arrays["test_labels"] = np.zeros((1, 1), int)
    path = root / "hostilemnist.npz"
    if kind == "random_bytes":
        _write(path, rng.randbytes(rng.randint(1, 3000)))
    elif kind == "header_bomb":
        import zipfile
        good = _npz_bytes(arrays)
        out = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(good)) as zin, zipfile.ZipFile(out, "w") as zout:
            for name in zin.namelist():
                if name != "train_images.npy":
                    zout.writestr(name, zin.read(name))
            with zipfile.ZipFile(io.BytesIO(_npz_header_bomb(rng, "train_images"))) as zb:
                zout.writestr("train_images.npy", zb.read("train_images.npy"))
        _write(path, out.getvalue())
    else:
        _write(path, _npz_bytes(arrays))
    case.input = path


BUILDERS = {
    "folder": _b_folder, "csv": _b_csv, "dicom": _b_folder_tree_dicom, "rsna": _b_rsna,
    "siim": _b_siim, "nih14": _b_nih14, "chexpert": _b_chexpert, "mimic-cxr": _b_mimic,
    "openi": _b_openi, "covid": _b_covid, "shenzhen": _b_tb("CHNCXR"),
    "montgomery": _b_tb("MCUCXR"), "npz": _b_npz, "medmnist": _b_medmnist,
}
DICOM_ADAPTERS = ("dicom", "rsna", "siim")
ARRAY_ADAPTERS = ("npz", "medmnist")
FILE_ADAPTERS = tuple(a for a in BUILDERS if a not in ARRAY_ADAPTERS)


def kinds_for(adapter: str) -> tuple[str, ...]:
    """The bad-file kinds an adapter gets (DICOM kinds for the DICOM sources)."""
    return tuple(DICOM_KINDS) if adapter in DICOM_ADAPTERS else tuple(IMAGE_KINDS)


def table_kinds_for(adapter: str) -> tuple[str, ...]:
    if adapter == "npz":
        return NPZ_KINDS
    if adapter == "medmnist":
        return MEDMNIST_KINDS
    if adapter == "openi":
        return ("none", *XML_KINDS)
    if adapter in ("folder", "shenzhen", "montgomery"):
        return ("none",)  # no table: the files are found by their folders and names
    return TABLE_KINDS


# ============================================================================ running a case
@dataclass
class Outcome:
    adapter: str
    generated: int
    skipped_named: int = 0  # bad files (and escapes) named in skipped.csv
    kept: int = 0  # strange but valid files prepared
    clear_error: int = 0  # whole-input problems ended in one CxrclError
    outside_reads: int = 0  # files opened under the planted secret's folder
    message: str = ""


def _all_output_bytes(out: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file())


def check_no_secret(out: Path) -> None:
    """The planted secret image and text never reach the output."""
    if not out.exists():
        return
    blob = _all_output_bytes(out)
    assert SECRET_TEXT.encode() not in blob, f"the secret text outside INPUT reached {out}"
    images = out / "images.npy"
    if images.exists():
        a = np.load(images, mmap_mode="r")
        flat = np.asarray(a).reshape(len(a), -1)
        assert not (flat == SECRET_VALUE).all(axis=1).any(), f"the secret image outside INPUT reached {out}"


_WATCH: dict = {"dir": None, "reads": []}


def _audit(event: str, args: tuple) -> None:
    """Audit hook: record every file opened under the watched folder (the planted secret)."""
    if event != "open" or _WATCH["dir"] is None or not args or isinstance(args[0], int):
        return
    try:
        path = os.path.abspath(os.fsdecode(args[0]))
    except (TypeError, ValueError):
        return
    if path == _WATCH["dir"] or path.startswith(_WATCH["dir"] + os.sep):
        _WATCH["reads"].append(path)


@contextmanager
def watch_reads(folder: Path) -> Iterator[list[str]]:
    """The list of files opened under ``folder`` (in this process) while the block runs."""
    if not _WATCH.get("installed"):
        sys.addaudithook(_audit)
        _WATCH["installed"] = True
    _WATCH["dir"], _WATCH["reads"] = os.path.abspath(folder), []
    try:
        yield _WATCH["reads"]
    finally:
        _WATCH["dir"] = None


def run_case(case: Case, out: Path) -> Outcome:
    """Prepare ``case`` into ``out`` and check the accounting (AssertionError when it fails);
    any exception but :class:`CxrclError` propagates (a crash)."""
    res = Outcome(case.adapter, case.n_generated)
    try:
        with watch_reads(case.secret_dir) as reads:
            try:
                ds = prepare(case.adapter, case.input, out, size=SIZE, progress=False, **case.options)
            finally:
                res.outside_reads = len(reads)
                assert not reads, f"{case.adapter} opened files outside INPUT: {reads}"
    except CxrclError as e:
        msg = str(e)
        assert msg and "\n" not in msg.strip() and "Traceback" not in msg, f"not one sentence: {msg!r}"
        res.clear_error, res.message = case.n_generated, msg
        check_no_secret(out)
        return res
    check_no_secret(out)
    skipped_csv = out / "skipped.csv"
    skipped = pd.read_csv(skipped_csv, dtype=str, keep_default_na=False) if skipped_csv.exists() else \
        pd.DataFrame(columns=["file", "reason"])
    info = json.loads((out / "dataset.json").read_text())
    assert len(skipped) == len(info.get("skipped", [])) + len(info.get("bad_reports", [])), \
        "skipped.csv and dataset.json disagree"
    assert (skipped["reason"].str.strip() != "").all(), "a skipped file without a reason"
    files = " ".join(skipped["file"].tolist())
    ids = " ".join(ds.meta["id"].astype(str).tolist() + ds.meta.get("file", pd.Series(dtype=str))
                   .astype(str).tolist())
    # a hostile table may drop or spoil rows (a hostile Open-i report spoils only itself)
    strict = case.table_kind == "none" or (case.adapter == "openi" and case.table_kind in XML_KINDS)
    for token, fate in case.listed.items():
        in_skipped, prepared = token in files, token in ids
        assert not (in_skipped and prepared), f"{case.adapter}: {token} is both prepared and skipped"
        if fate == "skip":
            assert not prepared, f"{case.adapter}: bad file {token} was prepared"
            assert in_skipped or not strict, f"{case.adapter}: bad file {token} is not in skipped.csv"
        elif fate == "keep":
            assert prepared or not strict, f"{case.adapter}: valid file {token} was not prepared"
        else:
            assert in_skipped or prepared or not strict, f"{case.adapter}: {token} is lost"
        if token in case.bad:
            res.skipped_named += in_skipped
            res.kept += prepared
    for name in case.escapes:
        assert "secret" in files or not strict, \
            f"{case.adapter}: the escaping path {name} is not listed in skipped.csv"
        res.skipped_named += 1
    if case.table_kind != "none":
        res.skipped_named += 1  # a hostile table or report that the adapter survived
    return res
