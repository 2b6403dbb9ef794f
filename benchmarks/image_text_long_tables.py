"""Tables of the longer phantom image-report runs (benchmarks/image_text_phantom_long.sh).

Reads benchmarks/results/image_text/long_probe/*.json and writes, beside them, tables.json and
tables.md:
- every variant tried (name, steps, seeds that ran) with its val macro AUROC for the four
  zero-shot options (cosine / posneg scoring x default / report_style prompts);
- the option chosen on seed 0's val split (the highest val macro AUROC), and its test macro
  AUROC per seed, mean +/- std over seeds, per finding, and whether it reaches 0.65;
- retrieval on val (seed 0), where run, for both ways of embedding a report (`--report-embedding
  whole | sentences`), and the way chosen there: the higher mean own-report Recall@K over both
  directions and K = 1, 5, 10;
- retrieval on the test split per seed: own report (Recall@K, chance) and, where run, by label set
  (Precision@K and Recall@K, chance), for each report embedding that was scored on test.
Nothing here reads a test score to choose anything.

Usage: .venv/bin/python benchmarks/image_text_long_tables.py
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

DIR = Path(__file__).resolve().parent / "results" / "image_text" / "long_probe"
NAME = re.compile(r"^(?P<base>.+?)(?:_s(?P<seed>\d+))?_(?P<steps>\d+)_(?P<kind>val|test)_(?P<rest>.+)\.json$")
OPTIONS = [("cosine", "default"), ("posneg", "default"), ("cosine", "report_style"), ("posneg", "report_style")]
TARGET = 0.65
KS = ("1", "5", "10")
UNITS = ("whole", "sentences")
DIRS = ("image_to_report", "report_to_image")


def _val_file(sc: str, prompts: str) -> str:
    return f"val_{sc}" + ("" if prompts == "default" else "_report_style")


def collect() -> dict:
    runs: dict = defaultdict(lambda: defaultdict(dict))  # (base, steps) -> seed -> {rest: json}
    for f in sorted(DIR.glob("*.json")):
        m = NAME.match(f.name)
        if not m:
            continue
        key = (m["base"], int(m["steps"]))
        runs[key][int(m["seed"] or 0)][f"{m['kind']}_{m['rest']}"] = json.loads(f.read_text())
    return runs


def _mean_std(v: list[float]) -> list[float]:
    return [float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0]


def variant_table(base: str, steps: int, seeds: dict) -> dict:
    val = {}
    for seed, files in sorted(seeds.items()):
        val[seed] = {f"{sc}_{p}": files[_val_file(sc, p)]["results"][0]["auroc"]
                     for sc, p in OPTIONS if _val_file(sc, p) in files}
    out = {"variant": base, "steps": steps, "seeds_with_val": sorted(val), "val_macro_auroc": val}
    if 0 not in val or not val[0]:
        return out
    choice = max(val[0], key=val[0].get)
    sc, prompts = choice.split("_", 1)
    out["chosen_on_val_seed0"] = choice
    test = {s: f[f"test_{sc}_{prompts}"]["results"][0] for s, f in seeds.items() if f"test_{sc}_{prompts}" in f}
    if test:
        aucs = [r["auroc"] for r in test.values()]
        labels = list(next(iter(test.values()))["auroc_per_label"])
        out["test"] = {
            "seeds": sorted(test), "macro_auroc": {s: r["auroc"] for s, r in test.items()},
            "macro_auroc_ci95": {s: r.get("auroc_ci95") for s, r in test.items()},
            "macro_auroc_mean_std": _mean_std(aucs), "n_test": next(iter(test.values()))["n_test"],
            "per_label_mean": {n: float(np.mean([r["auroc_per_label"][n] for r in test.values()])) for n in labels},
            "target": TARGET, "target_met_by_mean": bool(np.mean(aucs) >= TARGET),
            "seeds_at_target": int(sum(a >= TARGET for a in aucs))}
    val_ret = {}
    for unit in UNITS:
        files = seeds.get(0, {})
        if f"val_retrieval_text_{unit}" not in files:
            continue
        r = files[f"val_retrieval_text_{unit}"]["results"][0]
        val_ret[unit] = {"recall_at_k": r["recall_at_k"], "chance_at_k": r["chance_at_k"],
                         "mean_recall": float(np.mean([r["recall_at_k"][d][k] for d in DIRS for k in KS]))}
        if f"val_retrieval_labels_{unit}" in files:
            val_ret[unit]["precision_at_k"] = files[f"val_retrieval_labels_{unit}"]["results"][0]["precision_at_k"]
    if val_ret:
        out["val_retrieval_seed0"] = val_ret
        out["report_embedding_chosen_on_val"] = max(val_ret, key=lambda u: val_ret[u]["mean_recall"])
    for kind in ("retrieval", "retrieval_labels", "retrieval_sentences", "retrieval_labels_sentences"):
        res = {s: f[f"test_{kind}"]["results"][0] for s, f in seeds.items() if f"test_{kind}" in f}
        if not res:
            continue
        t = {"seeds": sorted(res), "n_images": next(iter(res.values()))["n_images"],
             "n_reports": next(iter(res.values()))["n_reports"]}
        for metric, chance in (("recall_at_k", "chance_at_k"), ("precision_at_k", "precision_chance_at_k")):
            if metric not in next(iter(res.values())):
                continue
            t[metric] = {d: {k: _mean_std([r[metric][d][k] for r in res.values()]) for k in KS}
                         for d in ("image_to_report", "report_to_image")}
            t[chance] = {d: {k: float(np.mean([r[chance][d][k] for r in res.values()])) for k in KS}
                         for d in ("image_to_report", "report_to_image")}
        # how many times chance each seed's recall is: the mean over seeds and the lowest seed
        ratios = {d: {k: [r["recall_at_k"][d][k] / r["chance_at_k"][d][k] for r in res.values()] for k in KS}
                  for d in ("image_to_report", "report_to_image")}
        t["recall_over_chance"] = {d: {k: {"mean": float(np.mean(v)), "lowest_seed": float(min(v))}
                                       for k, v in by_k.items()} for d, by_k in ratios.items()}
        if "median_rank" in next(iter(res.values())):  # 1-based; chance is about half the gallery
            t["median_rank_per_seed"] = {d: [res[s]["median_rank"][d] for s in sorted(res)]
                                         for d in ("image_to_report", "report_to_image")}
        out[kind] = t
    return out


def markdown(tables: list[dict]) -> str:
    lines = ["# Longer phantom image-report runs (`benchmarks/image_text_phantom_long.sh`)", "",
             "Written by `benchmarks/image_text_long_tables.py` from the JSON in this folder. Variants whose "
             "name ends in `_4k` ran on the 4,096-image phantom (819 test images), the others on the "
             "1,024-image one (204).", "",
             "## Every variant tried: val macro AUROC, seed 0 (other seeds in tables.json)", "",
             "| variant | steps | seeds | " + " | ".join(f"{sc} {p}" for sc, p in OPTIONS) + " | chosen on val |",
             "|---|---|---|" + "---|" * len(OPTIONS) + "---|"]
    for t in tables:
        v0 = t["val_macro_auroc"].get(0, {})
        cells = " | ".join(f"{v0[f'{sc}_{p}']:.3f}" if f"{sc}_{p}" in v0 else "" for sc, p in OPTIONS)
        lines.append(f"| {t['variant']} | {t['steps']} | {len(t['seeds_with_val'])} | {cells} | "
                     f"{t.get('chosen_on_val_seed0', '').replace('_', ' ')} |")
    lines += ["", f"## Test: the option chosen on val, per pre-training seed (target >= {TARGET})", "",
              "| variant | steps | option | test images | macro AUROC per seed | mean ± std | per finding (mean) |",
              "|---|---|---|---|---|---|---|"]
    for t in tables:
        if "test" not in t:
            continue
        x = t["test"]
        per_seed = " / ".join(f"{x['macro_auroc'][s]:.3f}" for s in x["seeds"])
        m, sd = x["macro_auroc_mean_std"]
        per = ", ".join(f"{n} {v:.2f}" for n, v in x["per_label_mean"].items())
        lines.append(f"| {t['variant']} | {t['steps']} | {t['chosen_on_val_seed0'].replace('_', ' ')} | {x['n_test']} | "
                     f"{per_seed} | **{m:.3f} ± {sd:.3f}** | {per} |")
    lines += ["", "## Retrieval on val (seed 0): one pass per report (whole) or the mean of its sentence embeddings",
              "", "Own report R@K, both directions (image to report / report to image); label-set P@1 likewise. "
              "The way with the higher mean own-report R@K is chosen for test.", "",
              "| variant | steps | report embedding | " + " | ".join(f"R@{k}" for k in KS) + " | label-set P@1 | chosen |",
              "|---|---|---|---|---|---|---|---|"]
    for t in tables:
        for unit, r in t.get("val_retrieval_seed0", {}).items():
            rec = " | ".join(" / ".join(f"{r['recall_at_k'][d][k]:.3f}" for d in DIRS)
                             + f" ({r['chance_at_k']['image_to_report'][k]:.3f})" for k in KS)
            p1 = " / ".join(f"{r['precision_at_k'][d]['1']:.3f}" for d in DIRS) if "precision_at_k" in r else ""
            chosen = "yes" if t.get("report_embedding_chosen_on_val") == unit else ""
            lines.append(f"| {t['variant']} | {t['steps']} | {unit} | {rec} | {p1} | {chosen} |")
    lines += ["", "## Retrieval on the test split, mean ± std over seeds (chance in brackets)", "",
              "Own report: the hit is the image's own report (R@K). By label set (`--match labels`): any "
              "report of exactly the image's findings (P@K, R@K). Median rank: the 1-based rank of the own "
              "report (or image) in the gallery, ties counted against the model; chance is about half the "
              "gallery (817 test reports on the 4,096-image phantom).", "",
              "| variant | steps | report embedding | match | direction | " + " | ".join(f"R@{k}" for k in KS)
              + " | " + " | ".join(f"P@{k}" for k in KS) + " | own-report R@K / chance, mean (lowest seed) | "
              "median rank per seed | seeds |", "|---|---|---|---|---|" + "---|" * 9]
    for t in tables:
        for kind, unit, label in (("retrieval", "whole", "own report"), ("retrieval_labels", "whole", "label set"),
                                  ("retrieval_sentences", "sentences", "own report"),
                                  ("retrieval_labels_sentences", "sentences", "label set")):
            if kind not in t:
                continue
            r = t[kind]
            for d in ("image_to_report", "report_to_image"):
                rec = " | ".join(f"{r['recall_at_k'][d][k][0]:.3f} ({r['chance_at_k'][d][k]:.3f})" for k in KS)
                pre = " | ".join(f"{r['precision_at_k'][d][k][0]:.3f} ({r['precision_chance_at_k'][d][k]:.3f})"
                                 if "precision_at_k" in r else "" for k in KS)
                over = ", ".join(f"{r['recall_over_chance'][d][k]['mean']:.1f}x ({r['recall_over_chance'][d][k]['lowest_seed']:.1f}x)"
                                 for k in KS) if label == "own report" else ""
                ranks = " / ".join(f"{x:.0f}" for x in r.get("median_rank_per_seed", {}).get(d, []))
                lines.append(f"| {t['variant']} | {t['steps']} | {unit} | {label} | {d.replace('_', ' ')} | {rec} | {pre} | "
                             f"{over} | {ranks} | {len(r['seeds'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    runs = collect()
    tables = [variant_table(base, steps, seeds) for (base, steps), seeds in sorted(runs.items())]
    (DIR / "tables.json").write_text(json.dumps({"variants": tables}, indent=1, default=str) + "\n")
    (DIR / "tables.md").write_text(markdown(tables))
    print(f"wrote {DIR / 'tables.json'} and tables.md ({len(tables)} variants)")


if __name__ == "__main__":
    main()
