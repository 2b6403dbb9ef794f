"""Hostile inputs per source adapter: how each generated bad input ended (issue 6, guarantee 3).

For every adapter, ``--cases`` seeded cases of :mod:`tests.data.hostile_files` are built and
prepared (each: 3 good images, 3-8 bad files of the adapter's kinds, paths that climb out of
INPUT towards a planted secret, and in half of them a hostile table or report; the array
sources get one hostile whole input per case). Each adapter runs in its own process, so its
peak RSS is its own. Counted per adapter:

- ``generated``: hostile inputs thrown (bad files + hostile tables/reports + escaping paths)
- ``skipped_with_reason``: of those, named in ``skipped.csv`` with a reason (the run succeeded)
- ``kept_valid``: strange but valid images (1x1, 16-bit constant, ...) that were prepared
- ``clear_error``: inputs of cases that ended in one CxrclError sentence (a bad table or whole input)
- ``crashes``: any other exception; ``unaccounted``: a bad file neither prepared nor listed
- ``hangs``: cases without a result within ``--timeout`` seconds
- ``outside_reads``: files opened under the secret's folder (a Python audit hook on ``open``)
- ``peak_rss_mb``: the adapter process's peak resident memory

Usage: ``python benchmarks/hostile_inputs.py [--cases 40] [--seed 0]`` ->
``benchmarks/results/hostile_inputs.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

OUT = REPO / "benchmarks" / "results" / "hostile_inputs.json"


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


def run_adapter(adapter: str, cases: int, seed: int, timeout: int) -> dict:
    """Run ``cases`` seeded cases of one adapter in this process; returns its counts."""
    import logging

    from tests.data import hostile_files as hf

    logging.getLogger("cxrcl.data").setLevel(logging.ERROR)
    rng = random.Random(f"{adapter}:{seed}")
    counts: Counter = Counter()
    kinds: Counter = Counter()
    failures: list[str] = []
    signal.signal(signal.SIGALRM, _alarm)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix=f"hostile-{adapter}-") as tmp:
        for c in range(cases):
            if adapter in hf.ARRAY_ADAPTERS:
                bad = []
            else:
                bad = [(rng.choice(hf.kinds_for(adapter)), rng.getrandbits(32))
                       for _ in range(rng.randint(3, 8))]
            tables = hf.table_kinds_for(adapter)
            table = rng.choice(tables) if adapter in hf.ARRAY_ADAPTERS or rng.random() < 0.5 else "none"
            kinds.update(k for k, _ in bad)
            if table != "none":
                kinds[f"table:{table}"] += 1
            base = Path(tmp) / f"case{c:04d}"
            case = hf.build_case(adapter, base, bad, table, rng.getrandbits(32))
            counts["generated"] += case.n_generated
            signal.alarm(timeout)
            try:
                res = hf.run_case(case, base / "out")
                counts["skipped_with_reason"] += res.skipped_named
                counts["kept_valid"] += res.kept
                counts["clear_error"] += res.clear_error
            except Hang:
                counts["hangs"] += 1
                failures.append(f"case {c}: hang ({table}, {[k for k, _ in bad]})")
            except AssertionError as e:
                key = "outside_reads" if "outside INPUT" in str(e) else "unaccounted"
                counts[key] += 1
                failures.append(f"case {c}: {e}")
            except Exception as e:  # noqa: BLE001 - a crash is what we count
                counts["crashes"] += 1
                failures.append(f"case {c}: crash {type(e).__name__}: {e} ({table}, {[k for k, _ in bad]})\n"
                                + traceback.format_exc(limit=-3))
            finally:
                signal.alarm(0)
    for key in ("crashes", "hangs", "outside_reads", "unaccounted"):
        counts.setdefault(key, 0)
    return {"adapter": adapter, "cases": cases, **dict(counts),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "seconds": round(time.time() - t0, 1), "kinds": dict(sorted(kinds.items())),
            "failures": failures[:10]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=40, help="cases per adapter")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=int, default=120, help="seconds per case before it counts as a hang")
    ap.add_argument("--adapters", default="", help="comma-separated subset (default: all)")
    ap.add_argument("--one", default="", help=argparse.SUPPRESS)  # child mode: one adapter, JSON on stdout
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_adapter(args.one, args.cases, args.seed, args.timeout)))
        return
    from tests.data.hostile_files import BUILDERS

    adapters = [a for a in args.adapters.split(",") if a] or list(BUILDERS)
    rows = []
    for adapter in adapters:
        cmd = [sys.executable, __file__, "--one", adapter, "--cases", str(args.cases),
               "--seed", str(args.seed), "--timeout", str(args.timeout)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        if proc.returncode != 0:  # the adapter's process itself died: every case counts as a crash
            rows.append({"adapter": adapter, "cases": args.cases, "crashes": args.cases,
                         "failures": [proc.stderr[-2000:]]})
        else:
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{adapter:11s} generated {r.get('generated', 0):5d}  skipped {r.get('skipped_with_reason', 0):5d}  "
              f"kept {r.get('kept_valid', 0):4d}  error {r.get('clear_error', 0):4d}  crashes {r.get('crashes', 0)}  "
              f"hangs {r.get('hangs', 0)}  outside {r.get('outside_reads', 0)}  unaccounted {r.get('unaccounted', 0)}  "
              f"rss {r.get('peak_rss_mb', 0)} MB  {r.get('seconds', 0)} s", flush=True)
    total = {k: sum(r.get(k, 0) for r in rows) for k in
             ("generated", "skipped_with_reason", "kept_valid", "clear_error", "crashes", "hangs",
              "outside_reads", "unaccounted")}
    result = {"what": "hostile inputs per source adapter (tests/data/hostile_files.py cases)",
              "command": " ".join(["python", "benchmarks/hostile_inputs.py", *sys.argv[1:]]),
              "cases_per_adapter": args.cases, "seed": args.seed, "timeout_s": args.timeout,
              "prepared_size": 16, "total": total, "adapters": rows}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(OUT)
    print(f"total: {total} -> {OUT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
