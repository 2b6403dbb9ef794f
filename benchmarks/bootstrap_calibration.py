"""Calibration of cxrcl's bootstrap: CI coverage of a known AUROC, and the paired test's
false-positive rate and power, in simulation (binormal scores).

    .venv/bin/python benchmarks/bootstrap_calibration.py   # -> benchmarks/results/bootstrap_calibration.json

Coverage: positives ~ N(d, 1), negatives ~ N(0, 1), true AUROC = Phi(d / sqrt 2); for each
test-set size, `draws` data sets, each with its 95 % CI from cxrcl.evaluation.bootstrap.auroc_ci
(1000 resamples). Paired test: two scorers share a per-image latent (what pairing removes) plus
their own noise; null = same separation d, real = d_a > d_b; the rate of `significant`.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np
from scipy.stats import norm

from cxrcl.evaluation.bootstrap import N_BOOT, auroc_ci, paired_bootstrap

OUT = Path(__file__).resolve().parent / "results" / "bootstrap_calibration.json"


def coverage(n: int, d: float, draws: int, seed: int) -> dict:
    truth = float(norm.cdf(d / np.sqrt(2)))
    rng = np.random.default_rng(seed)
    hits, widths = 0, []
    for i in range(draws):
        y = np.r_[np.ones(n // 2), np.zeros(n - n // 2)]
        s = rng.normal(size=n) + d * y
        lo, hi = auroc_ci(y, s, seed=i)
        hits += lo <= truth <= hi
        widths.append(hi - lo)
    return {"n_test": n, "d": d, "true_auroc": truth, "draws": draws, "coverage": hits / draws,
            "mean_width": float(np.mean(widths))}


def _result(y, s):
    return {"run": "sim", "labels": ["x"], "data": {}, "results": [{"fraction": 1.0, "seed": 0}],
            "test_scores": {"rows": list(range(len(y))), "labels": ["x"], "y": [[v] for v in y],
                            "scores": [[[v] for v in s]], "fraction": [1.0], "seed": [0]}}


def paired(n: int, d_a: float, d_b: float, draws: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    flagged, diffs = 0, []
    for _ in range(draws):
        y = (rng.random(n) < 0.5).astype(float)
        latent = rng.normal(size=n)
        sa = latent + d_a * y + 0.7 * rng.normal(size=n)
        sb = latent + d_b * y + 0.7 * rng.normal(size=n)
        r = paired_bootstrap(_result(y, sa), _result(y, sb))
        flagged += r["significant"]
        diffs.append(r["diff"])
    return {"n_test": n, "d_a": d_a, "d_b": d_b, "draws": draws, "rate_significant": flagged / draws,
            "mean_diff": float(np.mean(diffs))}


def main() -> None:
    t0 = time.perf_counter()
    res = {
        "script": "benchmarks/bootstrap_calibration.py", "n_boot": N_BOOT, "alpha": 0.05,
        "coverage": [coverage(n, d, 400, seed=k) for k, (n, d) in
                     enumerate([(60, 1.0), (120, 1.0), (400, 1.0), (400, 2.0), (2000, 1.0)])],
        "paired_null": [paired(n, 0.8, 0.8, 200, seed=10 + k) for k, n in enumerate((120, 300, 1000))],
        "paired_real": [paired(n, d_a, 0.8, 200, seed=20 + k)
                        for k, (n, d_a) in enumerate([(300, 1.0), (300, 1.4), (1000, 1.0)])],
        "machine": platform.platform(),
    }
    res["seconds"] = round(time.perf_counter() - t0, 1)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k != "machine"}, indent=1))


if __name__ == "__main__":
    main()
