"""Hostile inputs (issue 6, guarantee 3): generated bad files thrown at every source adapter and
at the report parsers end in a named ``skipped.csv`` entry or one clear CxrclError; never a
crash, never a hang, never a read outside INPUT.

Each hypothesis example builds one input folder for one adapter (:mod:`tests.data.hostile_files`):
3 good images, 3-8 bad files drawn from the adapter's kinds (truncated or random bytes as
PNG/JPEG/DICOM, zero-size and 1x1 images, decompression bombs, huge declared sizes, NaN float
pixels, ...), paths in the metadata that climb out of INPUT towards a planted secret, and often
a hostile table or report (truncated, random, non-UTF-8, absurd labels, billion laughs, external
entities). Preparing it must either succeed with every bad file named in ``skipped.csv`` and
every valid one prepared, or raise one :class:`CxrclError`. A per-example alarm turns a hang
into a failure (``HANG_SECONDS``). The total number of generated hostile inputs is >= 1,000
(:func:`test_total_hostile_inputs`); ``benchmarks/hostile_inputs.py`` runs more of them.
"""

from __future__ import annotations

import signal
import xml.etree.ElementTree as ET
from collections import Counter
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cxrcl.data.sources.openi import parse_openi_xml
from cxrcl.text.sections import STANDARD_SECTIONS, extract_sections
from tests.data import hostile_files as hf

pytest.importorskip("pydicom")

HANG_SECONDS = 60
#: examples per adapter in the default run; the array sources get one hostile input per example
EXAMPLES = {**{a: 18 for a in hf.FILE_ADAPTERS}, "npz": 45, "medmnist": 45}
GENERATED: Counter = Counter()


@contextmanager
def no_hang(seconds: int = HANG_SECONDS):
    """Fail (TimeoutError) when the block runs longer than ``seconds`` (SIGALRM, main thread)."""
    def fire(signum, frame):
        raise TimeoutError(f"hang: no result within {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def bad_files(adapter: str):
    if adapter in hf.ARRAY_ADAPTERS:
        return st.just([])
    return st.lists(st.tuples(st.sampled_from(hf.kinds_for(adapter)), st.integers(0, 2 ** 32 - 1)),
                    min_size=3, max_size=8)


def table_kind(adapter: str):
    kinds = hf.table_kinds_for(adapter)
    if adapter in hf.ARRAY_ADAPTERS:
        return st.sampled_from(kinds)
    return st.one_of(st.just("none"), st.sampled_from(kinds))


def _check(adapter: str, tmp_path_factory, data) -> None:
    bad = data.draw(bad_files(adapter), label="bad files")
    kind = data.draw(table_kind(adapter), label="table")
    seed = data.draw(st.integers(0, 2 ** 32 - 1), label="seed")
    base = tmp_path_factory.mktemp(f"hostile-{adapter}")
    case = hf.build_case(adapter, base, bad, kind, seed)
    with no_hang():
        hf.run_case(case, base / "out")
    GENERATED[adapter] += case.n_generated


def _settings(adapter: str):
    return settings(max_examples=EXAMPLES[adapter], deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _make_test(adapter: str):
    @_settings(adapter)
    @given(data=st.data())
    def test(tmp_path_factory, data):
        _check(adapter, tmp_path_factory, data)

    test.__name__ = f"test_hostile_{adapter.replace('-', '_')}"
    test.__doc__ = f"Hostile inputs for the {adapter} source end in skipped.csv or one CxrclError."
    return test


for _adapter in hf.BUILDERS:
    globals()[f"test_hostile_{_adapter.replace('-', '_')}"] = _make_test(_adapter)


# ---------------------------------------------------------------------------- report parsers
@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(text=st.text(max_size=3000) | st.binary(max_size=3000).map(lambda b: b.decode("utf-8", "surrogateescape")))
def test_report_sections_any_text(text):
    """Any text (also undecodable bytes kept as surrogates) gives the standard sections, quickly."""
    with no_hang(10):
        out = extract_sections(text)
    assert set(STANDARD_SECTIONS) <= set(out) and all(isinstance(v, str) for v in out.values())
    GENERATED["report parser (sections)"] += 1


@settings(max_examples=200, deadline=None, database=None, derandomize=True)
@given(kind=st.sampled_from(hf.XML_KINDS[:-2]), seed=st.integers(0, 2 ** 32 - 1))
def test_openi_xml_parser_refuses_entities(tmp_path_factory, kind, seed):
    """Open-i report XML: billion laughs and external entities are refused (ValueError), broken
    XML is a ParseError/ValueError, and the secret outside INPUT is never read into a report."""
    import random

    base = tmp_path_factory.mktemp("xml")
    secret = hf.plant_secret(base)
    data = hf.hostile_xml(kind, random.Random(seed), secret, "CXR9")
    with no_hang(10):
        try:
            out = parse_openi_xml(data, "9.xml")
        except (ET.ParseError, ValueError):
            out = None
    if kind in ("billion_laughs", "external_entity", "external_dtd", "truncated", "no_uid", "deep_nesting"):
        assert out is None, f"{kind} was parsed: {out}"
    if out is not None:
        assert hf.SECRET_TEXT not in str(out) and "lollollol" not in str(out)
    GENERATED["report parser (Open-i XML)"] += 1


def test_total_hostile_inputs():
    """The default run throws >= 1,000 hostile inputs in total (when every test above ran)."""
    ran = [a for a in hf.BUILDERS if GENERATED[a]]
    if len(ran) < len(hf.BUILDERS) or not GENERATED["report parser (sections)"]:
        pytest.skip("only part of this file ran")
    assert sum(GENERATED.values()) >= 1000, dict(GENERATED)
    assert all(GENERATED[a] >= 30 for a in hf.BUILDERS), dict(GENERATED)


# ---------------------------------------------------------------------------- the caps
def test_pixel_cap_is_configurable_and_names_the_size(tmp_path, monkeypatch):
    """The 13000^2 16-bit PNG of issue 6 is skipped from its header with its size; the cap is
    $CXRCL_MAX_PIXELS (lowered here so that a 30x20 image is refused, then kept when raised);
    a bad value is one sentence before any work."""
    from cxrcl.data.decoding import decode_file
    from cxrcl.data.sources import prepare
    from cxrcl.errors import CxrclError

    big = tmp_path / "big.png"
    big.write_bytes(hf.png_bomb(13000))
    reason = decode_file((0, str(big), 16, None))[2]
    assert reason.startswith("TooLarge: declares 13000x13000 pixels (169.0 Mpx")
    src = tmp_path / "in" / "normal"
    src.mkdir(parents=True)
    for i in range(3):
        (src / f"im{i}.png").write_bytes(hf._png(hf.np.full((20, 30), 9 * i, hf.np.uint8)))
    monkeypatch.setenv("CXRCL_MAX_PIXELS", "899")  # 30x30 padded = 900 pixels
    with pytest.raises(CxrclError, match="none of the 3"):
        prepare("folder", tmp_path / "in", tmp_path / "out", size=16, progress=False)
    monkeypatch.setenv("CXRCL_MAX_PIXELS", "900")
    assert len(prepare("folder", tmp_path / "in", tmp_path / "out", size=16, progress=False)) == 3
    monkeypatch.setenv("CXRCL_MAX_PIXELS", "lots")
    with pytest.raises(CxrclError, match=r"\$CXRCL_MAX_PIXELS='lots' is not a positive whole number"):
        prepare("folder", tmp_path / "in", tmp_path / "out2", size=16, progress=False)
    assert not (tmp_path / "out2").exists()


def test_deflated_dicom_and_tgz_report_caps(tmp_path, monkeypatch):
    """A deflated DICOM is refused from its inflated length (counted, not kept); a report
    member of a .tgz above $CXRCL_MAX_REPORT_BYTES is listed as a bad report without being read."""
    import tarfile

    from cxrcl.data.decoding import decode_file
    from cxrcl.data.sources.dicom_dir import DicomDecoder
    from cxrcl.data.sources.openi import parse_openi_report_table

    dcm = tmp_path / "bomb.dcm"
    dcm.write_bytes(hf.dicom_deflate_bomb())
    reason = decode_file((0, str(dcm), 16, DicomDecoder("s")))[2]
    assert reason.startswith("TooLarge: inflates to more than 97 MB")
    small = tmp_path / "small.dcm"  # Rows x Columns checked against the same variable
    small.write_bytes(hf.good_dicom(__import__("random").Random(0), side=24))
    monkeypatch.setenv("CXRCL_MAX_PIXELS", "575")
    assert decode_file((0, str(small), 16, DicomDecoder("s")))[2].startswith("TooLarge: declares 24x24")
    monkeypatch.setenv("CXRCL_MAX_PIXELS", "576")
    assert decode_file((0, str(small), 16, DicomDecoder("s")))[2] is None
    monkeypatch.setenv("CXRCL_MAX_REPORT_BYTES", "2000")
    xml = tmp_path / "ecgen-radiology"
    xml.mkdir()
    (xml / "1.xml").write_text(hf.openi_xml("CXR1", [], findings="x" * 3000))
    (xml / "2.xml").write_text(hf.openi_xml("CXR2", []))
    with tarfile.open(tmp_path / "r.tgz", "w:gz") as tar:
        tar.add(xml, arcname="ecgen-radiology")
    bad: list[dict] = []
    table = parse_openi_report_table(tmp_path / "r.tgz", errors=bad)
    assert table["uid"].tolist() == ["CXR2"]
    assert bad[0]["file"].endswith("1.xml") and "above the report cap of 2,000 bytes" in bad[0]["reason"]
