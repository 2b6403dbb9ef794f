"""Issue 7's accuracy gap on covid_radiography at 1 % (or 10 %) of the labels, over more label samples.

The protocol draws 3 label samples per fraction. At 1 % that is 96 labelled train images and 14
matched val images to choose C with, so one draw moves the AUROC by several points. This script
re-probes the SAME six pre-trained runs (SparseContrast keep 0.5 and keep 1.0, 8 px patches,
pre-training seeds 0-2, made by ``PATCH=8 SEED=s DATASETS=covrad64 STEPS=150 bash
benchmarks/sparsecontrast_real.sh``) at 1 % with ``--seeds N`` label samples (default 20; seeds
0-2 are the protocol's own draws) and writes the paired difference keep 0.5 - dense: label
sample s is the same set of images for both encoders, so each (pre-training seed, label seed)
gives one paired difference. Nothing is chosen here: no variant, no setting.

``--sparse PART`` compares another SparseContrast run set with the same dense runs: PART is the
name between ``covrad64_sparsecontrast_`` and ``_p8`` (default ``keep_ratio_0.5``; e.g.
``keep_ratio_0.5_fuse_area`` for a variant chosen on val by sparsecontrast_val_choice.py).
``--tag _300st --pretrain-seeds 1`` reads runs made with ``TAG=_300st`` (another schedule), of
the first N pre-training seeds only. ``--fraction 0.1`` probes at 10 % of the labels (955 train
images, 139 matched val images) instead of 1 %.

Usage: .venv/bin/python benchmarks/sparsecontrast_label_seeds.py [--seeds 20] [--sparse PART]
       [--tag TAG] [--pretrain-seeds K] [--fraction 0.01]
Writes benchmarks/results/sparsecontrast/real/covrad64_p8[_PART][TAG][_Kpretrainseeds]_<P>pct_<N>labelseeds.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks/results/sparsecontrast/real"
RUNS = Path(".bench-data/sc/real_runs")  # relative to ROOT, as in the other result files
DATA = Path(".bench-data/sc/covrad64")
DENSE = "keep_ratio_1.0"


def run_name(part: str, seed: int, tag: str = "") -> str:
    return f"covrad64_sparsecontrast_{part}_p8{tag}" + (f"_s{seed}" if seed else "")


def pct(fraction: float) -> str:
    return f"{fraction * 100:g}pct"


def probe(part: str, seed: int, n: int, tag: str, fraction: float) -> dict:
    name = run_name(part, seed, tag)
    out = OUT / f"{name}_linear_{pct(fraction)}_{n}labelseeds.json"
    if not out.exists():
        run = RUNS / name
        if not (ROOT / run / "summary.json").exists():
            sys.exit(f"missing run {run}: make it with PATCH=8 SEED={seed} TAG={tag} DATASETS=covrad64 "
                     f"STEPS=... METHODS=... bash benchmarks/sparsecontrast_real.sh (the method spec of {part})")
        subprocess.run([".venv/bin/cxrcl", "eval", "linear", "--run", str(run), "--data", str(DATA),
                        "--label", "covid19", "--fractions", str(fraction), "--seeds", str(n),
                        "--out", str(out.relative_to(ROOT))], check=True, cwd=ROOT)
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20, help="label samples per run (default 20)")
    ap.add_argument("--sparse", default="keep_ratio_0.5", help="the sparse runs' name part (see above)")
    ap.add_argument("--tag", default="", help="the runs' TAG suffix (sparsecontrast_real.sh)")
    ap.add_argument("--pretrain-seeds", type=int, default=3, help="pre-training seeds 0..N-1 (default 3)")
    ap.add_argument("--fraction", type=float, default=0.01, help="label fraction (default 0.01)")
    args = ap.parse_args()
    n, sparse, tag, seeds, fraction = args.seeds, args.sparse, args.tag, args.pretrain_seeds, args.fraction
    if not 0 < fraction < 1:
        sys.exit(f"--fraction must be in (0, 1), got {fraction}: at 1.0 there is one label sample only")
    auroc = {(k, s): {r["seed"]: r["auroc"] for r in probe(k, s, n, tag, fraction)["results"]}
             for k in (sparse, DENSE) for s in range(seeds)}
    rows, diffs = [], []
    for s in range(seeds):
        d = [auroc[(sparse, s)][ls] - auroc[(DENSE, s)][ls] for ls in range(n)]
        diffs += d
        rows.append({"pretrain_seed": s, "keep_0.5_mean": statistics.mean(auroc[(sparse, s)].values()),
                     "dense_mean": statistics.mean(auroc[(DENSE, s)].values()),
                     "paired_difference_mean": statistics.mean(d),
                     "label_seeds_keep_0.5_higher": sum(x > 0 for x in d)})
    steps = json.loads((ROOT / RUNS / run_name(sparse, 0, tag) / "summary.json").read_text())["steps"]
    rng = np.random.default_rng(0)
    arr = np.array(diffs).reshape(seeds, n)
    # bootstrap over label seeds within each pre-training seed, every pre-training seed kept
    boot = [arr[:, rng.integers(0, n, n)].mean() for _ in range(2000)]
    summary = {
        "what": f"linear probe, covid19, {fraction * 100:g} % of the train labels, test AUROC; SparseContrast "
                f"{sparse} vs keep 1.0 (dense), ViT-Tiny/8 at 64 px, {steps} pre-training steps",
        "sparse_runs": [run_name(sparse, s, tag) for s in range(seeds)],
        "dense_runs": [run_name(DENSE, s, tag) for s in range(seeds)],
        "label_seeds": n, "pretrain_seeds": seeds, "per_pretrain_seed": rows,
        "keep_0.5_mean": float(np.mean([r["keep_0.5_mean"] for r in rows])),
        "dense_mean": float(np.mean([r["dense_mean"] for r in rows])),
        "paired_difference_mean": float(arr.mean()),
        "paired_difference_ci95_over_label_seeds": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
        "bar": "keep 0.5 within 1 AUROC point of dense or above: paired difference >= -0.01",
        "command": f"python benchmarks/sparsecontrast_label_seeds.py --seeds {n}"
                   + ("" if sparse == "keep_ratio_0.5" else f" --sparse {sparse}")
                   + (f" --tag {tag}" if tag else "") + (f" --pretrain-seeds {seeds}" if seeds != 3 else "")
                   + (f" --fraction {fraction:g}" if fraction != 0.01 else ""),
    }
    name = ("" if sparse == "keep_ratio_0.5" else f"_{sparse}") + tag + ("" if seeds == 3 else f"_{seeds}pretrainseeds")
    path = OUT / f"covrad64_p8{name}_{pct(fraction)}_{n}labelseeds.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
