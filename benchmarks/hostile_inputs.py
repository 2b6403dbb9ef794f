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

Then the three large-declared files of issue 6 (item 7) are read, each in its own process, as a
preparation reads them (``large_declared``: outcome, seconds, peak RSS).

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


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss it starts afresh at exec, so
    a child does not report its parent's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


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
            "peak_rss_mb": peak_rss_mb(),
            "seconds": round(time.time() - t0, 1), "kinds": dict(sorted(kinds.items())),
            "failures": failures[:10]}


def make_large_declared(folder: Path) -> dict[str, Path]:
    """The three files of issue 6 item 7: a 16-bit PNG declaring 13000^2 pixels, a deflated DICOM
    declaring 12000^2, and a .tgz holding one 300 MB report XML (each a few hundred KB)."""
    import tarfile

    from tests.data import hostile_files as hf

    folder.mkdir(parents=True, exist_ok=True)
    png = folder / "declared_13000.png"
    png.write_bytes(hf.png_bomb(13000))
    dcm = folder / "declared_12000.dcm"
    dcm.write_bytes(hf._dicom(12000, 12000, bytes(2 * 12000 * 12000), deflate=True))
    xml = folder / "big.xml"
    with open(xml, "wb") as f:
        f.write(b'<eCitation><uId id="CXR1"/><AbstractText Label="FINDINGS">')
        for _ in range(300):
            f.write(b"x" * (1 << 20))
        f.write(b"</AbstractText></eCitation>")
    tgz = folder / "NLMCXR_reports.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(xml, arcname="ecgen-radiology/1.xml")
    xml.unlink()
    return {"png_16bit_13000x13000": png, "dicom_deflated_12000x12000": dcm, "tgz_300MB_xml": tgz}


def probe(kind: str, path: str) -> dict:
    """Read one large-declared file the way a preparation does; its outcome, time and peak RSS."""
    from cxrcl.data.decoding import decode_file

    t0 = time.time()
    if kind.startswith("tgz"):
        from cxrcl.data.sources.openi import parse_openi_report_table

        bad: list[dict] = []
        try:
            parse_openi_report_table(path, errors=bad)
            reason = None
        except Exception as e:  # noqa: BLE001 - no readable report is expected here
            reason = bad[0]["reason"] if bad else f"{type(e).__name__}: {e}"
    else:
        decoder = None
        if kind.startswith("dicom"):
            from cxrcl.data.sources.dicom_dir import DicomDecoder

            decoder = DicomDecoder("bench")
        reason = decode_file((0, path, 64, decoder))[2]
    return {"file": kind, "bytes_on_disk": Path(path).stat().st_size, "outcome": reason or "decoded",
            "seconds": round(time.time() - t0, 2),
            "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=40, help="cases per adapter")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=int, default=120, help="seconds per case before it counts as a hang")
    ap.add_argument("--adapters", default="", help="comma-separated subset (default: all)")
    ap.add_argument("--one", default="", help=argparse.SUPPRESS)  # child mode: one adapter, JSON on stdout
    ap.add_argument("--probe", nargs=2, help=argparse.SUPPRESS)  # child mode: one large file
    args = ap.parse_args()
    if args.probe:
        print(json.dumps(probe(*args.probe)))
        return
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
    large = []
    with tempfile.TemporaryDirectory(prefix="hostile-large-") as tmp:
        for kind, path in make_large_declared(Path(tmp)).items():
            proc = subprocess.run([sys.executable, __file__, "--probe", kind, str(path)],
                                  capture_output=True, text=True, cwd=REPO)
            large.append(json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else
                         {"file": kind, "outcome": f"process failed: {proc.stderr[-500:]}"})
            print(large[-1], flush=True)
    total = {k: sum(r.get(k, 0) for r in rows) for k in
             ("generated", "skipped_with_reason", "kept_valid", "clear_error", "crashes", "hangs",
              "outside_reads", "unaccounted")}
    result = {"what": "hostile inputs per source adapter (tests/data/hostile_files.py cases)",
              "command": " ".join(["python", "benchmarks/hostile_inputs.py", *sys.argv[1:]]),
              "cases_per_adapter": args.cases, "seed": args.seed, "timeout_s": args.timeout,
              "prepared_size": 16, "total": total, "adapters": rows,
              "large_declared": {"what": "one file each, read as a preparation does, default caps "
                                         "(CXRCL_MAX_PIXELS 40e6, CXRCL_MAX_REPORT_BYTES 1e6), own process",
                                 "files": large}}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(OUT)
    print(f"total: {total} -> {OUT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
