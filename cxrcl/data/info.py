"""``cxrcl data info PREPARED``: a summary of a prepared data set.

:func:`describe` returns a JSON-able dict (size, source, split counts, per-label
positives/negatives/unknown per split, text-column coverage, image mean/std on a deterministic,
evenly spaced sample of up to 2,000 images on the [0, 1] scale, masks, hashes, skipped files);
:func:`format_info` renders it as a readable text table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cxrcl.data.prepared import LABEL_PREFIX, SPLITS, PreparedDataset

SAMPLE = 2000


def _nonempty(series: pd.Series) -> pd.Series:
    return series.notna() & (series.astype(str).str.strip() != "")


def describe(ds: PreparedDataset, sample: int = SAMPLE) -> dict:
    """Summary statistics of ``ds`` (see the module docstring)."""
    meta, info = ds.meta, ds.info
    n = len(ds)
    split = meta["split"].astype(str)
    counts = {s: int((split == s).sum()) for s in SPLITS}
    labels = {}
    for name in ds.label_names:
        vals = pd.to_numeric(meta[LABEL_PREFIX + name], errors="coerce")
        per = {}
        for s in (*SPLITS, "all"):
            v = vals if s == "all" else vals[split == s]
            per[s] = {"pos": int((v == 1).sum()), "neg": int((v == 0).sum()), "unknown": int(v.isna().sum())}
        labels[name] = per
    text = {}
    for col in info.get("text_columns", []):
        if col in meta.columns:
            filled = _nonempty(meta[col])
            words = meta[col][filled].astype(str).str.split().str.len()
            text[col] = {"non_empty": int(filled.sum()), "coverage": float(filled.mean()) if n else 0.0,
                         "mean_words": float(words.mean()) if len(words) else 0.0}
    idx = np.unique(np.linspace(0, n - 1, num=min(sample, n)).round().astype(int)) if n else np.array([], int)
    px = np.asarray(ds.images[idx], dtype=np.float64) / 255.0 if len(idx) else np.zeros(1)
    if ds.masks is None:
        n_masks = 0
    elif "has_mask" in meta.columns:
        n_masks = int(pd.to_numeric(meta["has_mask"], errors="coerce").fillna(0).astype(bool).sum())
    else:
        n_masks = n
    patients = meta["patient_id"].astype(str)
    per_split_patients = {s: set(patients[split == s]) for s in SPLITS}
    leaked = len((per_split_patients["train"] & per_split_patients["val"])
                 | (per_split_patients["train"] & per_split_patients["test"])
                 | (per_split_patients["val"] & per_split_patients["test"]))
    split_info = info.get("split", {})
    return {
        "path": str(ds.root),
        "source": info.get("source"),
        "n": n,
        "size": ds.size,
        "n_patients": int(patients.nunique()),
        "patients_in_several_splits": leaked,
        "split_method": split_info.get("method"),
        "split_seed": split_info.get("seed"),
        "split_counts": counts,
        "labels": labels,
        "text_columns": text,
        "image_mean": float(px.mean()),
        "image_std": float(px.std()),
        "image_sample": int(len(idx)),
        "has_masks": ds.masks is not None,
        "n_masks": n_masks,
        "manifest_hash": split_info.get("manifest_hash"),
        "content_hash": info.get("content_hash"),
        "n_skipped": int(info.get("n_skipped", len(info.get("skipped", [])))),
    }


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    fmt = lambda r: "  ".join(str(x).ljust(w) if i == 0 else str(x).rjust(w)  # noqa: E731
                              for i, (x, w) in enumerate(zip(r, widths, strict=True)))
    return [fmt(header), "  ".join("-" * w for w in widths), *(fmt(r) for r in rows)]


def format_info(d: dict) -> str:
    """Render :func:`describe`'s dict as a multi-line text report."""
    c = d["split_counts"]
    seed = f", seed {d['split_seed']}" if d.get("split_seed") is not None else ""
    lines = [
        f"{d['path']}",
        f"  source {d['source']}, {d['n']} images of {d['size']}x{d['size']} px, "
        f"{d['n_patients']} patients",
        f"  split ({d['split_method']}{seed}): train {c['train']}, val {c['val']}, test {c['test']}"
        f"; patients in several splits: {d['patients_in_several_splits']}",
        f"  images: mean {d['image_mean']:.3f}, std {d['image_std']:.3f} (0-1 scale, {d['image_sample']} sampled)",
        f"  masks: {d['n_masks']} of {d['n']}" if d["has_masks"] else "  masks: none",
        f"  split manifest {d['manifest_hash']}, content {d['content_hash']}",
    ]
    if d.get("n_skipped"):
        lines.append(f"  skipped at preparation: {d['n_skipped']} files (listed in dataset.json)")
    lines.append("")
    if d["labels"]:
        header = ["label", *(f"{s} +/-/?" for s in (*SPLITS, "all"))]
        rows = [[name, *(f"{p[s]['pos']}/{p[s]['neg']}/{p[s]['unknown']}" for s in (*SPLITS, "all"))]
                for name, p in d["labels"].items()]
        lines += _table(header, rows)
    else:
        lines.append("labels: none")
    lines.append("")
    if d["text_columns"]:
        rows = [[col, str(t["non_empty"]), f"{100 * t['coverage']:.1f}%", f"{t['mean_words']:.1f}"]
                for col, t in d["text_columns"].items()]
        lines += _table(["text column", "non-empty", "coverage", "mean words"], rows)
    else:
        lines.append("text columns: none")
    return "\n".join(lines)
