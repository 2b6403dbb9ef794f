"""Markdown tables for docs/methods/sparsecontrast.md from the JSON under
benchmarks/results/sparsecontrast/ (written by the sparsecontrast_*.sh/.py scripts).
Usage: .venv/bin/python benchmarks/sparsecontrast_tables.py
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

RES = Path(__file__).parent / "results" / "sparsecontrast"


def load(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def speed() -> None:
    print("| file | backbone | method | train img/s | infer img/s | train x | infer x | fwd GFLOPs/img | step IQR s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for f in sorted(RES.glob("speed_*.json")):
        d = load(f)
        for spec, r in d["methods"].items():
            q = d["ratios"][spec]
            print(f"| {f.name} | {d['setup']['backbone']} | `{spec}` | {r['train_images_per_s']:.1f} | "
                  f"{r['infer_images_per_s']:.1f} | {q['train_images_per_s']:.2f} | {q['infer_images_per_s']:.2f} | "
                  f"{r['gflops_per_image']:.3f} | {r['train_step_s_iqr']:.3f} |")


def cnn_stages() -> None:
    d = load(RES / "cnn_stages.json")
    if not d:
        return
    print("\n| part (ResNet-18, 128 px, batch 32, inference) | ms (median) | GFLOPs |")
    print("|---|---|---|")
    for k, v in d["seconds_median"].items():
        print(f"| {k} | {v * 1000:.1f} | {d['gflops'].get(k, float('nan')):.2f} |")


def lesions() -> None:
    print("\n| variant | split | saliency | token grid | lesion_area_kept | random_area_kept | masked images |")
    print("|---|---|---|---|---|---|---|")
    for f in sorted(RES.glob("phantom_explain_*.json")):
        d = load(f)
        name = f.stem.removeprefix("phantom_explain_").rsplit("_", 1)[0]
        print(f"| {name} | {d['split']} | {d['source']} | {d['unit_grid'][0]}x{d['unit_grid'][1]} | "
              f"{d['lesion_area_kept']:.3f} | {d['random_area_kept']:.3f} | {d['n_images_with_masks']} |")


def real() -> None:
    rows = sorted((RES / "real").glob("*_linear.json"))
    if not rows:
        return
    print("\n| data | encoder | 1% | 10% | 100% |")
    print("|---|---|---|---|---|")
    for f in rows:
        d = load(f)
        data, _, name = f.stem.removesuffix("_linear").partition("_")
        cells = [f"{s['auroc_mean']:.3f} ± {s['auroc_std']:.3f}" for _, s in sorted(d["summary"].items(), key=lambda kv: float(kv[0]))]
        print(f"| {data} | {name} | " + " | ".join(cells) + " |")
    pooled = pool_pretrain_seeds(rows)
    if pooled:
        print("\npooled over pre-training seeds (mean ± std over seeds of the label-seed mean AUROC)\n")
        print("| data | encoder | seeds | 1% | 10% | 100% |")
        print("|---|---|---|---|---|---|")
        for (data, name), per_frac in pooled.items():
            n = len(next(iter(per_frac.values())))
            cells = [f"{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}" for _, v in sorted(per_frac.items())]
            print(f"| {data} | {name} | {n} | " + " | ".join(cells) + " |")
        print("\nthe same pooling of the val AUROC each probe chose C with (labels at the same fraction)\n")
        print("| data | encoder | seeds | 1% | 10% | 100% |")
        print("|---|---|---|---|---|---|")
        for (data, name), per_frac in pool_pretrain_seeds(rows, split="val").items():
            n = len(next(iter(per_frac.values())))
            cells = [f"{statistics.mean(v):.3f}" for _, v in sorted(per_frac.items())]
            print(f"| {data} | {name} | {n} | " + " | ".join(cells) + " |")


def pool_pretrain_seeds(rows: list[Path], split: str = "test") -> dict:
    """Runs named ``{encoder}_s{N}`` are seed N of ``{encoder}`` (seed 0 has no suffix): per
    (data, encoder) with more than one seed, fraction -> the per-seed mean AUROCs on the test
    split, or (``split="val"``) the per-seed mean of the val AUROCs the probe chose C with."""
    groups: dict = {}
    for f in rows:
        data, _, name = f.stem.removesuffix("_linear").partition("_")
        base = re.sub(r"_s\d+$", "", name)
        d = load(f)
        if split == "test":
            per_frac = {float(frac): s["auroc_mean"] for frac, s in d["summary"].items()}
        else:
            vals: dict = {}
            for r in d["results"]:
                vals.setdefault(float(r["fraction"]), []).append(statistics.mean(r["val_auroc_per_label"].values()))
            per_frac = {frac: statistics.mean(v) for frac, v in vals.items()}
        for frac, value in per_frac.items():
            groups.setdefault((data, base), {}).setdefault(frac, []).append(value)
    return {k: v for k, v in groups.items() if len(next(iter(v.values()))) > 1}


if __name__ == "__main__":
    speed()
    cnn_stages()
    lesions()
    real()
