"""Phantom generation speed on one CPU core: images/s for rendering and for writing a data set.

    python benchmarks/bench_phantom.py                 # n=4096 at 128 px and 64 px
    python benchmarks/bench_phantom.py --n 1024 --sizes 256,128 --json out.json

The process is pinned to one core (where the OS allows it) and BLAS is limited to one thread
before numpy is imported, so the figure is a single-core one. Each measurement is the best of
``--repeats`` runs (the machine may be shared).
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from cxrcl.data.phantom import make_phantom, render_phantom  # noqa: E402


def _pin_one_core() -> str:
    try:
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"pinned to core {core}"
    except (AttributeError, OSError):
        return "not pinned (no sched_setaffinity)"


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--sizes", default="128,64")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args()
    pin = _pin_one_core()
    print(f"phantom benchmark: n={args.n}, {pin}, python {platform.python_version()}, "
          f"{platform.processor() or platform.machine()}")
    results = []
    for size in [int(s) for s in args.sizes.split(",")]:
        render_phantom(16, size, args.seed)  # warm the per-size tables
        t_render = _best(lambda s=size: render_phantom(args.n, s, args.seed), args.repeats)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "phantom"
            t_write = _best(lambda s=size, o=out: make_phantom(o, n=args.n, size=s, seed=args.seed,
                                                             overwrite=True),
                            args.repeats)
        row = {"size": size, "n": args.n, "render_images_per_s": round(args.n / t_render, 1),
               "make_phantom_images_per_s": round(args.n / t_write, 1)}
        results.append(row)
        print(f"{size:>5} px: render {row['render_images_per_s']:>8.0f} images/s   "
              f"make_phantom (render + write + hash) {row['make_phantom_images_per_s']:>8.0f} images/s")
    if args.json:
        Path(args.json).write_text(json.dumps({"benchmark": "phantom", "results": results}, indent=2))


if __name__ == "__main__":
    main()
