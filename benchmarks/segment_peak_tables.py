"""Markdown tables for docs/evaluation.md from benchmarks/results/segment/*.json and
benchmarks/results/efficiency/*.json (written by benchmarks/segment.sh and bench_peak.sh).

Usage: .venv/bin/python benchmarks/segment_peak_tables.py
"""

from __future__ import annotations

import json
import re
from pathlib import Path

RES = Path(__file__).parent / "results"


def segment_table() -> str:
    rows = ["| data | encoder | decoder steps | Dice 1% | Dice 10% | Dice 100% | n train masks (1/10/100%) |",
            "|---|---|---|---|---|---|---|"]
    for f in sorted((RES / "segment").glob("*_segment.json")):
        r = json.loads(f.read_text())
        s = r["summary"]
        cells = [f"{s[k]['dice_mean']:.3f} ± {s[k]['dice_std']:.3f}" for k in sorted(s, key=float)]
        n = "/".join(f"{s[k]['n_train_mean']:.0f}" for k in sorted(s, key=float))
        data, enc = f.stem.split("_")[0], f.stem.split("_")[1]
        steps = re.search(r"up to (\d+) steps", r["protocol"]["train"]).group(1)
        rows.append(f"| {data} | {enc} | {steps} | " + " | ".join(cells) + f" | {n} |")
    return "\n".join(rows)


def peak_table() -> str:
    out = []
    for f in sorted((RES / "efficiency").glob("vit_tiny16_128_*.json")):
        b = json.loads(f.read_text())
        pk = b["machine"]["matmul_peak"]
        prec = b["setup"]["precision"]
        out.append(f"`{f.name}` ({prec}; measured matmul peak fp32 {pk['32-true']['gflops']:.0f}, "
                   f"bf16 {pk['bf16-mixed']['gflops']:.0f} GFLOP/s; bf16 units: {pk['bf16_units']})\n")
        out.append("| method | train img/s | achieved GFLOP/s | fraction of the measured peak | "
                   "infer img/s b1 | infer img/s b64 |")
        out.append("|---|---|---|---|---|---|")
        for m, r in b["methods"].items():
            out.append(f"| {m} | {r['train_images_per_s']:.1f} | {r['achieved_gflops_per_s']:.1f} | "
                       f"{r['achieved_fraction_of_peak']:.2f} | {r['infer_images_per_s_b1']:.1f} | "
                       f"{r['infer_images_per_s_b64']:.1f} |")
        pc = b.get("precision_check")
        if pc:
            out.append(f"\nfp32 vs bf16 loss check ({pc['method']}, {pc['steps']} steps, same init and batches): "
                       f"largest relative loss difference {pc['max_loss_rel_diff']:.4f}\n")
        out.append("")
    acc = []
    for prec in ("32-true", "bf16-mixed"):
        lin, summ = (RES / "efficiency" / f"accuracy_spcl_{prec}_{k}.json" for k in ("linear", "summary"))
        if lin.exists():
            s = json.loads(lin.read_text())["summary"]
            w = json.loads(summ.read_text())
            acc.append(f"| {prec} | {w['wall_seconds']:.0f} | {w['images_per_s']:.1f} | {w['final_loss']:.4f} | "
                       + " | ".join(f"{s[k]['auroc_mean']:.3f} ± {s[k]['auroc_std']:.3f}" for k in sorted(s, key=float)) + " |")
    if acc:
        out += ["| S-PCL pre-training precision | wall s | img/s | final loss | AUROC 1% | AUROC 10% | AUROC 100% |",
                "|---|---|---|---|---|---|---|", *acc]
    return "\n".join(out)


if __name__ == "__main__":
    print(segment_table())
    print()
    print(peak_table())
