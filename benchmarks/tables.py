"""Print the README's results tables from the JSON in benchmarks/results (no recomputation).

    .venv/bin/python benchmarks/tables.py
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def auroc_table(folder: Path, prefix: str, rows: list[tuple[str, str]]) -> str:
    lines = ["| encoder | 1% labels | 10% labels | 100% labels |", "|---|---|---|---|"]
    for name, label in rows:
        path = folder / f"{prefix}{name}_linear.json"
        if not path.exists():
            continue
        summary = json.loads(path.read_text())["summary"]
        cells = [f"{summary[f]['auroc_mean']:.3f} ± {summary[f]['auroc_std']:.3f}"
                 for f in ("0.01", "0.1", "1.0") if f in summary]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


Column = tuple[str, Callable[[dict, dict], str]]  # (header, cell(method's JSON, its ratios))


def rss_cell(m: dict, r: dict) -> str:
    """Peak RSS with the training share in brackets, or n/a where it was not measured."""
    return f"{m['peak_rss_mb']:.0f} ({m['train_rss_mb']:.0f})" if m.get("peak_rss_mb") else "n/a"


def efficiency_table(bench: dict, columns: Sequence[Column]) -> str:
    """One row per method of a benchmark JSON (``methods``, ``ratios``, ``ratios_vs``); a header
    may name ``{ref}``, the method the ratios are relative to."""
    ref = bench["ratios_vs"]
    lines = ["| method | " + " | ".join(h.format(ref=ref) for h, _ in columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    for name, m in bench["methods"].items():
        r = bench["ratios"][name]
        lines.append(f"| {name} | " + " | ".join(cell(m, r) for _, cell in columns) + " |")
    return "\n".join(lines)


README_COLUMNS: list[Column] = [
    ("train images/s", lambda m, r: f"{m['train_images_per_s']:.1f}"),
    ("vs {ref}", lambda m, r: f"{r['train_images_per_s']:.2f}x"),
    ("forward GFLOPs/image", lambda m, r: f"{m['gflops_per_image']:.3f}"),
    ("vs {ref}", lambda m, r: f"{r['gflops_per_image']:.2f}x"),
    ("inference images/s", lambda m, r: f"{m['infer_images_per_s']:.1f}"),
    ("peak RSS MB (training part)", rss_cell),
]


def bench_table(path: Path) -> str:
    b = json.loads(path.read_text())
    mach = b["machine"]
    return (efficiency_table(b, README_COLUMNS)
            + f"\n\nMachine: {mach['cpu']}, {mach['cpu_count']} cores, torch {mach['torch']}, "
            f"measured fp32 matmul peak {mach['matmul_peak_gflops']} GFLOP/s.")


def main() -> None:
    bench = RESULTS / "bench_spcl_simclr_vit_tiny16_128.json"
    if bench.exists():
        print("### efficiency\n" + bench_table(bench) + "\n")
    real = RESULTS / "real"
    rows = [("spcl", "S-PCL"), ("simclr", "SimCLR"), ("random", "floor: untrained encoder"),
            ("pixels", "floor: pixel PCA")]
    for prefix, title in (("pmnist_", "PneumoniaMNIST, pneumonia"), ("covid64_", "covid_chestxray 64 px, covid19")):
        print(f"### {title}\n" + auroc_table(real, prefix, rows) + "\n")
    gap = RESULTS / "gap"
    if gap.exists():
        variants = [("covid64_spcl", "S-PCL ViT-Tiny p8, 50 ep (reference)"),
                    ("vit_p8_100ep", "S-PCL ViT-Tiny p8, 100 ep"),
                    ("vit_p16", "S-PCL ViT-Tiny p16 (16 tokens)"),
                    ("vit_p8_block", "S-PCL block partition"),
                    ("vit_p8_cls", "S-PCL class-token pooling"),
                    ("resnet18", "S-PCL ResNet-18 (masked cells)"),
                    ("covid64_simclr", "SimCLR ViT-Tiny p8, 50 ep"),
                    ("random_vit_p16", "floor: untrained ViT-Tiny p16"),
                    ("random_resnet18", "floor: untrained ResNet-18"),
                    ("covid64_random", "floor: untrained ViT-Tiny p8"),
                    ("covid64_pixels", "floor: pixel PCA")]
        print("### closing the pixel-floor gap (covid19)\n" + auroc_table(gap, "", variants) + "\n")


if __name__ == "__main__":
    main()
