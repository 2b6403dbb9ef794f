"""``cxrcl data info`` extras: the per-label montage PNG and its key in ``describe``."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from PIL import Image

from cxrcl.data.info import describe, format_info, montage, montage_rows
from cxrcl.data.phantom import make_phantom
from cxrcl.data.writer import write_prepared


def test_montage_rows_pick_positives_and_negatives(tmp_path):
    ds = make_phantom(tmp_path / "ph", n=60, size=32, seed=0)
    rows = montage_rows(ds, per_label=4, seed=0)
    assert [r["label"] for r in rows] == [*ds.label_names, "no positive label"]
    lab = ds.labels(ds.label_names)
    for k, r in enumerate(rows[:-1]):
        assert len(r["rows"]) == min(4, r["n_positive"]) and all(lab[i, k] == 1 for i in r["rows"])
    assert all(not (lab[i] == 1).any() for i in rows[-1]["rows"])
    assert montage_rows(ds, per_label=4, seed=0) == rows  # deterministic
    assert montage_rows(ds, per_label=4, seed=1) != rows


def test_montage_png_and_describe_key(tmp_path):
    ds = make_phantom(tmp_path / "ph", n=40, size=32, seed=1)
    png = tmp_path / "figs" / "montage.png"
    d = describe(ds, montage_png=png, montage_per_label=3)
    assert png.exists()
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 6 * 100
    assert d["montage"]["path"] == str(png) and len(d["montage"]["rows"]) == len(ds.label_names) + 1
    json.dumps(d)  # still JSON-able
    assert "montage: " in format_info(d)
    assert "montage" not in describe(ds)  # only when asked for


def test_montage_without_labels_and_with_few_images(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, (3, 16, 16), dtype=np.uint8)
    meta = pd.DataFrame({"id": ["a", "b", "c"], "patient_id": ["a", "b", "c"], "split": ["train"] * 3})
    ds = write_prepared(tmp_path / "nolab", imgs, meta, source="test")
    info = montage(ds, tmp_path / "m.png", per_label=8)
    assert [r["label"] for r in info["rows"]] == ["all images"] and info["rows"][0]["rows"] == [0, 1, 2]
    assert (tmp_path / "m.png").stat().st_size > 0


def test_montage_is_atomic_and_checked_first(tmp_path, capsys):
    """--montage naming a folder is one sentence; the PNG appears whole under its name."""
    from cxrcl.cli import main

    ds = make_phantom(tmp_path / "ph", n=24, size=16, seed=0)
    folder = tmp_path / "pics"
    folder.mkdir()
    assert main(["data", "info", str(ds.root), "--montage", str(folder)]) == 2
    assert "--montage" in capsys.readouterr().err and list(folder.iterdir()) == []
    png = folder / "m.png"
    assert main(["data", "info", str(ds.root), "--montage", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and sorted(p.name for p in folder.iterdir()) == ["m.png"]
