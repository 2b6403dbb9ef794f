"""``cxrcl data info PREPARED``: a summary of a prepared data set.

:func:`describe` returns a JSON-able dict (size, source, split counts, per-label
positives/negatives/unknown per split, text-column coverage, image mean/std on a deterministic,
evenly spaced sample of up to 2,000 images on the [0, 1] scale, masks, hashes, skipped files);
:func:`format_info` renders it as a readable text table. :func:`montage` draws a PNG of sample
images per label (``cxrcl data info --montage PNG``; ``describe(ds, montage_png=PNG)`` writes it
and adds a ``montage`` key).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from cxrcl.data.prepared import LABEL_PREFIX, SPLITS, PreparedDataset
from cxrcl.io import atomic_write, check_writable_file

SAMPLE = 2000
MONTAGE_PER_LABEL = 8


def _nonempty(series: pd.Series) -> pd.Series:
    return series.notna() & (series.astype(str).str.strip() != "")


def describe(ds: PreparedDataset, sample: int = SAMPLE, *, montage_png: str | os.PathLike | None = None,
             montage_per_label: int = MONTAGE_PER_LABEL, montage_seed: int = 0) -> dict:
    """Summary statistics of ``ds`` (see the module docstring); with ``montage_png``, also write
    :func:`montage` there and record it under the ``montage`` key."""
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
    d = {
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
    if montage_png is not None:
        d["montage"] = montage(ds, montage_png, per_label=montage_per_label, seed=montage_seed)
    return d


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
    if d.get("montage"):
        mt = d["montage"]
        lines.append(f"  montage: {mt['path']} ({len(mt['rows'])} rows of up to {mt['per_label']} images)")
    if d.get("n_skipped"):
        lines.append(f"  skipped at preparation: {d['n_skipped']} files (listed in skipped.csv and dataset.json)")
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


# ----------------------------------------------------------------------------- montage
def montage_rows(ds: PreparedDataset, per_label: int = MONTAGE_PER_LABEL, seed: int = 0) -> list[dict]:
    """The images a montage shows: per label up to ``per_label`` positives, then up to
    ``per_label`` images with no positive label (a data set without labels: one row of any
    images). Drawn without replacement by ``numpy.random.default_rng(seed)``, shown in row order.
    """
    rng = np.random.default_rng(seed)
    n = len(ds)
    rows = []
    if ds.label_names:
        lab = ds.labels(ds.label_names)
        for k, name in enumerate(ds.label_names):
            pos = np.flatnonzero(lab[:, k] == 1)
            rows.append({"label": name, "n_positive": int(len(pos)), "rows": _pick(pos, per_label, rng)})
        none = np.flatnonzero(~(lab == 1).any(axis=1))
        rows.append({"label": "no positive label", "n_positive": int(len(none)),
                     "rows": _pick(none, per_label, rng)})
    else:
        rows.append({"label": "all images", "n_positive": n, "rows": _pick(np.arange(n), per_label, rng)})
    return rows


def _pick(candidates: np.ndarray, k: int, rng: np.random.Generator) -> list[int]:
    if len(candidates) <= k:
        return [int(i) for i in candidates]
    return sorted(int(i) for i in rng.choice(candidates, size=k, replace=False))


def montage(ds: PreparedDataset, out_png: str | os.PathLike, per_label: int = MONTAGE_PER_LABEL,
            seed: int = 0) -> dict:
    """Write a PNG grid of sample images: one row per label (positives), one row of images with
    no positive label; each row is labelled with the label name and its positive count.
    Matplotlib's Agg canvas is used directly (no global backend change, no display needed).

    Returns ``{"path", "per_label", "seed", "rows": [{"label", "n_positive", "rows"}]}``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out_png = check_writable_file(out_png, "--montage")  # one sentence before any drawing
    per_label = max(1, int(per_label))
    rows = montage_rows(ds, per_label, seed)
    wanted = sorted({i for r in rows for i in r["rows"]})
    pixels = dict(zip(wanted, np.asarray(ds.images[wanted]), strict=True)) if wanted else {}
    cell = 1.1
    fig = Figure(figsize=(1.8 + cell * per_label, 0.5 + cell * len(rows)), dpi=100)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(len(rows), per_label, left=1.8 / (1.8 + cell * per_label), right=0.995,
                            top=1 - 0.45 / (0.5 + cell * len(rows)), bottom=0.01, wspace=0.04, hspace=0.06)
    for r, row in enumerate(rows):
        for c in range(per_label):
            ax = fig.add_subplot(grid[r, c])
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(row["rows"]):
                ax.imshow(pixels[row["rows"][c]], cmap="gray", vmin=0, vmax=255, interpolation="lanczos")
            if c == 0:
                count = f"{row['n_positive']} positive" if ds.label_names and r < len(rows) - 1 \
                    else f"{row['n_positive']} images"
                ax.set_ylabel(f"{row['label']}\n({count})", rotation=0, ha="right",
                              va="center", fontsize=9, labelpad=6)
    fig.suptitle(f"{ds.root.name}: {len(ds)} images, {ds.size} px, source {ds.info.get('source')}",
                 fontsize=10, y=1 - 0.12 / (0.5 + cell * len(rows)), va="top")
    atomic_write(out_png, lambda tmp: fig.savefig(tmp, format="png"))  # a kill leaves no half PNG
    return {"path": str(out_png), "per_label": per_label, "seed": int(seed), "rows": rows}
