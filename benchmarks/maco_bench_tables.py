"""Markdown tables for docs/methods/maco.md from the image-report benchmark JSON.

    python benchmarks/maco_bench_tables.py [benchmarks/results/image_text]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tables import Column, efficiency_table, rss_cell  # benchmarks/tables.py

BENCH_COLUMNS: list[Column] = [
    ("train images/s", lambda m, r: f"{m['train_images_per_s']:.2f}"),
    ("x {ref}", lambda m, r: f"{r['train_images_per_s']:.2f}"),
    ("forward GFLOPs/image", lambda m, r: f"{m['gflops_per_image']:.3f}"),
    ("x {ref}", lambda m, r: f"{r['gflops_per_image']:.2f}"),
    ("train GFLOPs/step", lambda m, r: f"{m['train_gflops_per_step']:.1f}"),
    ("infer images/s", lambda m, r: f"{m['infer_images_per_s']:.1f}"),
    ("peak RSS MB (training share)", rss_cell),
]


def bench_table(bench: dict) -> str:
    return efficiency_table(bench, BENCH_COLUMNS)


def components_table(comp: dict) -> str:
    lines = ["| method | patch tokens to the encoder (of N) | image encoder GFLOPs/image | x all tokens | "
             "MAE decoder | text encoder | other | total |", "|---|---|---|---|---|---|---|---|"]
    for name, m in comp["methods"].items():
        enc = m.get("image_encoder_gflops_per_image", 0.0)
        full = m["all_tokens_image_encoder_gflops_per_image"]
        toks = ", ".join(str(t) for t in m["patch_tokens_per_pass"])
        lines.append(f"| {name} | {toks} (of {m['patch_tokens_of_image']}) | {enc:.3f} | {enc / full:.2f} | "
                     f"{m.get('mae_decoder_gflops_per_image', 0.0):.3f} | "
                     f"{m.get('text_encoder_gflops_per_image', 0.0):.3f} | "
                     f"{m.get('other_gflops_per_image', 0.0):.3f} | {m['total_gflops_per_image']:.3f} |")
    return "\n".join(lines)


def lr_table(lr: dict) -> str:
    lines = ["| method | lr | contrastive loss every 5 steps | final - ln 16 |", "|---|---|---|---|"]
    for r in lr["runs"]:
        curve = " ".join(f"{v:.3f}" for v in r["contrastive_every_5_steps"])
        lines.append(f"| {r['method']} | {r['lr']:g} | {curve} | {r['final_minus_ln_batch']:+.3f} |")
    return "\n".join(lines)


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/image_text")
    for name, fn in (("bench.json", bench_table), ("components.json", components_table),
                     ("lr_check.json", lr_table)):
        path = root / name
        if path.exists():
            print(f"### {path}\n\n{fn(json.loads(path.read_text()))}\n")


if __name__ == "__main__":
    main()
