"""Label-matched image-report pairs (``cxrcl data pair-reports``): real images, real reports,
joined only through a label. An experiment of ours, not a data set of real pairs.

No public set here pairs real images with their own radiology reports at a usable size. What
exists: real images with a class (covid_radiography: COVID vs normal; pneumoniamnist) and real
reports without images (Open-i). This module gives every image a real report whose *labeller
findings* (:mod:`cxrcl.text.labeller`) match the image's class:

- a normal image (``positive`` label 0) gets a normal report: the labeller's ``no_finding`` = 1
  (nothing abnormal asserted, not even uncertain);
- an abnormal image (label 1) gets an opacity/pneumonia report: ``pneumonia``, ``consolidation``,
  ``lung_opacity`` or ``infiltration`` positive (not uncertain);
- other reports (effusion-only, cardiomegaly-only, hedged ...) and empty ones are not used.

The text stored is ``FINDINGS: ... IMPRESSION: ...`` (the indication and comparison are dropped:
"evaluate for pneumonia" is a question, not a finding). Splits: the images keep their own split;
the distinct report *texts* of each class (identical normal reports are common in Open-i) are split
train/val/test in the images' proportions by a seeded hash of the text, and an image of split s
only gets a text of split s. So no held-out image's report text, verbatim, was ever training
text. Within a split and class, texts are dealt out in seeded random order, cycling when there are
fewer texts than images (each text then pairs with several images; the counts are recorded).

What such pairs can show: whether a method learns to tie image content to real report *language*
(negations, hedges, radiologists' phrasing) well enough that zero-shot prompts written in that
language classify held-out real images. What they cannot show: any alignment finer than the class
(location, size, severity: the report was written about another patient), retrieval of an
image's own report (only the class is shared), or anything about COVID-19 wording (Open-i predates
it; an abnormal COVID image is paired with a non-COVID opacity/pneumonia report). Source shortcuts
of the image set (covid_radiography's classes come from different hospitals) carry over unchanged.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd

from cxrcl.data.prepared import LABEL_PREFIX, SPLITS, PreparedDataset
from cxrcl.errors import CxrclError

ABNORMAL_FINDINGS = ("pneumonia", "consolidation", "lung_opacity", "infiltration")
REPORT_CLASSES = ("normal", "abnormal")


def report_classes(reports: pd.DataFrame) -> pd.DataFrame:
    """Reports (``read_reports`` rows) -> ``id, text, report_class`` for the usable ones, the text
    being ``FINDINGS: ... IMPRESSION: ...``."""
    from cxrcl.text.labeller import label_report
    from cxrcl.text.reports import clean_report

    out = []
    for row in reports.to_dict("records"):
        findings, impression = (clean_report(row.get(k) or "") for k in ("findings", "impression"))
        if not (findings or impression):
            continue
        lab = label_report(row)
        if lab["no_finding"] == 1:
            cls = "normal"
        elif any(lab[f] == 1 for f in ABNORMAL_FINDINGS):
            cls = "abnormal"
        else:
            continue
        text = " ".join(p for p in (f"FINDINGS: {findings}" if findings else "",
                                    f"IMPRESSION: {impression}" if impression else "") if p)
        out.append({"report_id": str(row["id"]), "report": text, "report_class": cls})
    return pd.DataFrame(out, columns=["report_id", "report", "report_class"])


def _unit_hash(text: str, seed: int) -> float:
    return int(hashlib.sha256(f"{seed}:{' '.join(text.lower().split())}".encode()).hexdigest()[:12], 16) / 16**12


def split_texts(texts: pd.Series, proportions: dict[str, float], seed: int) -> pd.Series:
    """Each text -> a split, by a seeded hash of its normalised text (identical texts together)."""
    edges = np.cumsum([proportions[s] for s in SPLITS])
    edges = edges / edges[-1]
    u = texts.map(lambda t: _unit_hash(t, seed)).to_numpy()
    return pd.Series(np.asarray(SPLITS)[np.minimum(np.searchsorted(edges, u, side="right"), len(SPLITS) - 1)],
                     index=texts.index)


def pair_reports(images: str | os.PathLike, reports: str | os.PathLike, out: str | os.PathLike, *,
                 positive: str, seed: int = 0, overwrite: bool = False) -> PreparedDataset:
    """Write a prepared data set: the images of ``images`` whose ``positive`` label is known, each
    with a label-matched real report in column ``report`` (see the module docstring)."""
    from cxrcl.text.reports import read_reports

    ds = PreparedDataset.open(images)
    if positive not in ds.label_names:
        raise CxrclError(f"{ds.root} has no label {positive!r} for --positive; "
                         f"labels: {', '.join(ds.label_names) or 'none'}")
    y = ds.labels([positive])[:, 0]
    rows = np.flatnonzero(~np.isnan(y))
    if len(rows) == 0:
        raise CxrclError(f"{ds.root} has no image with a known {positive!r} label")
    table = report_classes(read_reports(reports))
    img_cls = np.where(y[rows] == 1, "abnormal", "normal")
    split = ds.meta["split"].to_numpy()[rows]
    for c in REPORT_CLASSES:
        if (img_cls == c).any() and not (table["report_class"] == c).any():
            raise CxrclError(f"{reports} has no usable {c} report (labeller findings): pairing needs both classes")
    # distinct texts per class, split in the images' proportions
    texts = table.drop_duplicates("report").reset_index(drop=True)
    n_duplicates = int(len(table) - len(texts))
    props = {s: max(float((split == s).mean()), 1e-9) for s in SPLITS}
    texts["split"] = split_texts(texts["report"], props, seed)
    rng = np.random.default_rng(seed)
    chosen = np.empty(len(rows), dtype=np.int64)
    uses: dict[str, dict[str, dict[str, int]]] = {}
    for s in SPLITS:
        for c in REPORT_CLASSES:
            want = np.flatnonzero((split == s) & (img_cls == c))
            if not len(want):
                continue
            pool = texts.index[(texts["split"] == s) & (texts["report_class"] == c)].to_numpy()
            if not len(pool):
                raise CxrclError(f"no {c} report text fell into the {s} split ({len(want)} images need one): "
                                 "too few reports; try another --seed or more reports")
            order = np.concatenate([rng.permutation(pool) for _ in range(-(-len(want) // len(pool)))])
            chosen[want] = order[:len(want)]
            uses.setdefault(s, {})[c] = {"images": int(len(want)), "texts": int(len(pool)),
                                         "max_images_per_text": int(-(-len(want) // len(pool)))}
    meta = ds.meta.iloc[rows].reset_index(drop=True).copy()
    picked = texts.loc[chosen].reset_index(drop=True)
    for col in ("report", "report_id", "report_class"):
        meta[col] = picked[col].to_numpy()
    meta = meta.drop(columns=[c for c in meta.columns if c == "has_mask"])
    label_names = [n for n in ds.label_names if LABEL_PREFIX + n in meta.columns]
    summary = (f"paired {len(rows)} images of {ds.root} with {texts['report'].isin(picked['report']).sum()} "
               f"distinct real reports from {reports} ({(texts['report_class'] == 'normal').sum()} normal / "
               f"{(texts['report_class'] == 'abnormal').sum()} opacity-pneumonia texts usable) -> {out}")
    info = {"pairing": {"images": str(ds.root), "images_content_hash": ds.info.get("content_hash"),
                        "reports": str(reports), "positive_label": positive, "seed": int(seed),
                        "report_rule": {"normal": "labeller no_finding == 1",
                                        "abnormal": f"labeller positive for any of {', '.join(ABNORMAL_FINDINGS)}"},
                        "usable_reports": int(len(table)), "identical_texts_merged": n_duplicates,
                        "uses": uses, "summary": summary,
                        "caveat": "label-matched pairs, not an image's own report (cxrcl/data/pairing.py)"}}
    return _write(out, ds, rows, meta, label_names, info, overwrite, inputs=(images,))


def _write(out, ds, rows, meta, label_names, info, overwrite, inputs=()) -> PreparedDataset:
    from cxrcl.data.writer import PreparedWriter, check_output

    check_output(out, overwrite=overwrite, inputs=inputs)
    w = PreparedWriter(Path(out), n=len(rows), size=ds.size, overwrite=overwrite)
    try:
        for a in range(0, len(rows), 1024):
            w.put_many(a, np.asarray(ds.images[rows[a:a + 1024]]))
        return w.finish(meta, source="paired-reports", label_names=label_names, text_columns=["report"],
                        split_seed=None, split_method="source", extra=info)
    except BaseException:
        w.abort()
        raise
