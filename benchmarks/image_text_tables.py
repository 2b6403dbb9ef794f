"""Markdown tables of benchmarks/image_text_eval.sh's JSON (zero-shot and retrieval of CLIP, SISTA,
MaCo): phantom (3 seeds), covid_chestxray notes, and the label-matched Open-i pairing.

Every choice (scoring posneg vs cosine; prompt file for the pairing) is made on the val split
(mean val AUROC over seeds) and the test number of that choice is reported; the other choices'
test numbers are shown beside it, never used to choose.

    .venv/bin/python benchmarks/image_text_tables.py [RESULTS_DIR] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

METHODS = ["clip", "sista", "maco"]
DIRS = ("image_to_report", "report_to_image")
KS = ("1", "5", "10")


def load(d: Path, name: str) -> dict | None:
    p = d / name
    return json.loads(p.read_text()) if p.is_file() else None


def ms(vals: list[float]) -> str:
    vals = [v for v in vals if v is not None and not math.isnan(v)]
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{vals[0]:.3f}"
    return f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f}"


def auroc(r: dict | None) -> float | None:
    return None if r is None else r["results"][0]["auroc"]


def ci(r: dict | None) -> str:
    c = r and r["results"][0].get("auroc_ci95")
    return f"[{c[0]:.2f}, {c[1]:.2f}]" if c else "–"


def choose(d: Path, stem: str, seeds, variants: list[str]) -> tuple[str | None, dict]:
    """The variant with the highest mean val AUROC; {variant: (val mean, [test aurocs])}."""
    table = {}
    for v in variants:
        val = [auroc(load(d, f"{stem}_s{s}_val_zeroshot_{v}.json")) for s in seeds]
        test = [auroc(load(d, f"{stem}_s{s}_test_zeroshot_{v}.json")) for s in seeds]
        val = [x for x in val if x is not None]
        if val:
            table[v] = (statistics.mean(val), test)
    best = max(table, key=lambda v: table[v][0]) if table else None
    return best, table


def retrieval_rows(d: Path, stem: str, seeds) -> list[str]:
    rs = [load(d, f"{stem}_s{s}_test_retrieval.json") for s in seeds]
    rs = [r["results"][0] for r in rs if r]
    if not rs:
        return []
    out = []
    for dr in DIRS:
        cells = [ms([r["recall_at_k"][dr][k] for r in rs]) for k in KS]
        chance = [f"{statistics.mean(r['chance_at_k'][dr][k] for r in rs):.3f}" for k in KS]
        out.append(f"{dr.replace('_', ' ')} | " + " | ".join(f"{c} ({h})" for c, h in zip(cells, chance, strict=True))
                   + f" | {rs[0]['n_images']} / {rs[0]['n_reports']}")
    return out


def captioned_table(caption: str, columns: list[str]) -> list[str]:
    """A caption, a blank line and the header of a Markdown table with these columns."""
    return [caption, "", "| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]


def retrieval_section(d: Path, prefix: str, seeds, caption: str, items: str) -> list[str]:
    """The Recall@K table of every method's ``{prefix}_{method}`` runs, under ``caption``."""
    lines = ["", *captioned_table(caption, ["method", "direction", "R@1", "R@5", "R@10", f"images / distinct {items}"])]
    for m in METHODS:
        lines += [f"| {m} | {row} |" for row in retrieval_rows(d, f"{prefix}_{m}", seeds)]
    return lines


def phantom(d: Path) -> list[str]:
    seeds = (0, 1, 2)
    lines = ["### Phantom (templated reports with negations), pre-training seeds 0-2 (n = seeds that ran)", "",
             *captioned_table("Zero-shot macro AUROC over the 5 findings on the test split (mean ± std over seeds); "
                              "scoring chosen on val. Target >= 0.65.",
                              ["method", "scoring (val choice)", "val AUROC", "test AUROC", "other scoring, test",
                               "target met", "per-label test (chosen)"])]
    for m in METHODS:
        best, table = choose(d, f"phantom_{m}", seeds, ["posneg", "cosine"])
        if best is None:
            lines.append(f"| {m} | not run | | | | | |")
            continue
        other = [v for v in table if v != best]
        test = [t for t in table[best][1] if t is not None]
        per = {}
        for s in seeds:
            r = load(d, f"phantom_{m}_s{s}_test_zeroshot_{best}.json")
            for k, v in (r["results"][0]["auroc_per_label"].items() if r else ()):
                per.setdefault(k, []).append(v)
        met = "yes" if test and statistics.mean(test) >= 0.65 else "**no**"
        lines.append(f"| {m} | {best} | {table[best][0]:.3f} | {ms(test)} (n={len(test)}) | "
                     + (f"{other[0]}: {ms(table[other[0]][1])}" if other else "–") + f" | {met} | "
                     + ", ".join(f"{k} {statistics.mean(v):.2f}" for k, v in per.items()) + " |")
    return lines + retrieval_section(
        d, "phantom", seeds, "Retrieval on the test split, Recall@K mean ± std over seeds (chance in brackets); "
        "identical report texts are one gallery item.", "reports")


def covid(d: Path) -> list[str]:
    lines = ["### covid_chestxray clinical notes, pre-trained end to end (1 seed)", "",
             *captioned_table("Zero-shot COVID-19 vs other: AUROC with a 95 % bootstrap interval; scoring chosen on "
                              "each set's own val split. covid_radiography: its test split minus the rows marked as "
                              "copies of covid_chestxray images (covid_chestxray_match).",
                              ["method", "test set", "scoring (val choice)", "val AUROC", "test AUROC [95 % CI]",
                               "positives / negatives", "other scoring, test"])]
    for m in METHODS:
        for stem, name in ((f"covid_{m}", "covid_chestxray test"), (f"covidrad_{m}", "covid_radiography test − copies")):
            best, table = choose(d, stem, (0,), ["posneg", "cosine"])
            if best is None:
                lines.append(f"| {m} | {name} | not run | | | | |")
                continue
            r = load(d, f"{stem}_s0_test_zeroshot_{best}.json")
            n = r["results"][0]["n_test_per_label"]["covid19"]
            other = [v for v in table if v != best]
            lines.append(f"| {m} | {name} | {best} | {table[best][0]:.3f} | {auroc(r):.3f} {ci(r)} | "
                         f"{n['positive']} / {n['negative']}"
                         + (f" (excluded {r['results'][0]['n_excluded']})" if r['results'][0]['n_excluded'] else "")
                         + f" | {other[0]}: {ms(table[other[0]][1]) if other else '–'} |")
    return lines + retrieval_section(
        d, "covid", (0,), "Retrieval on covid_chestxray's test split (images with a note; shared notes are one item).",
        "notes")


def pairing(d: Path) -> list[str]:
    lines = ["### Real images + label-matched real Open-i reports (our experiment, 1 seed)", "",
             *captioned_table("covid_radiography images, each paired with a real Open-i report whose labeller "
                              "findings match its class; zero-shot COVID-19 vs normal on the held-out test images. "
                              "Prompt file and scoring chosen on val; `seen` = prompts that occur as a sentence of "
                              "the training reports.",
                              ["method", "prompts + scoring (val choice)", "val AUROC", "test AUROC [95 % CI]", "seen",
                               "all four on test (prompts/scoring)"])]
    variants = [f"{s}_{p}" for p in ("default", "openi_pairing") for s in ("posneg", "cosine")]
    for m in METHODS:
        best, table = choose(d, f"pairing_{m}", (0,), variants)
        if best is None:
            lines.append(f"| {m} | not run | | | | |")
            continue
        r = load(d, f"pairing_{m}_s0_test_zeroshot_{best}.json")
        seen = r["protocol"]["prompts_seen_in_training"]
        lines.append(f"| {m} | {best} | {table[best][0]:.3f} | {auroc(r):.3f} {ci(r)} | {len(seen)} | "
                     + ", ".join(f"{v}: {ms(t)}" for v, (_, t) in table.items()) + " |")
    return lines + retrieval_section(
        d, "pairing", (0,), "Retrieval on the paired test split (class-level only: a report belongs to another "
        "patient).", "reports")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="?", default="benchmarks/results/image_text/eval")
    ap.add_argument("--out", default="benchmarks/results/image_text/eval_tables.md")
    ap.add_argument("--method", help="only this method's rows (for its docs/methods page); prints only")
    a = ap.parse_args()
    d = Path(a.results)
    if a.method:
        METHODS[:] = [a.method]
    text = "\n".join(["# Image-report zero-shot and retrieval (benchmarks/image_text_eval.sh)", "",
                      *phantom(d), "", *covid(d), "", *pairing(d), ""])
    if not a.method:
        Path(a.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
