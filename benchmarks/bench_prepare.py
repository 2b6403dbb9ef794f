"""Preparation throughput and memory: PNG and DICOM decoding speed per worker, and flat peak RSS.

    python benchmarks/bench_prepare.py                       # full: 300 files, 20,000 synthetic
    python benchmarks/bench_prepare.py --files 40 --synthetic 2000 --sample-every 250   # quick check

Three measurements, all through the code ``cxrcl data prepare`` runs
(:func:`cxrcl.data.streaming.write_decoded` -> :class:`~cxrcl.data.writer.PreparedWriter`):

(a) ``--files`` 1024x1024 8-bit PNGs (written once into a temp dir) prepared with the ``folder``
    source to ``--size`` px, with each worker count of ``--workers``;
(b) the same number of 16-bit MONOCHROME2 DICOMs (pydicom) decoded with
    :func:`cxrcl.data.dicom.read_dicom` (or, when that module is missing, with pydicom's
    ``pixel_array`` + min-max to uint8 -- the output says which) and resized to ``--size`` px;
(c) peak resident memory while preparing ``--synthetic`` synthetic 1024x1024 images that are
    generated on the fly in the worker processes (a random low-frequency pattern + noise from a
    per-index seed; never files, never a list of images): VmHWM/VmRSS of the main process and
    the largest VmHWM of the workers, sampled every ``--sample-every`` images, so a flat series
    shows that memory does not grow with the number of images.

Images/s per worker = images/s / workers; scaling = images/s with the most workers / with one.
The machine may be shared (its load average is recorded): scaling below the worker count can be
contention, not the code. Results go to ``--json`` (default
benchmarks/results/prepare_throughput.json) with the command line.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from cxrcl.data.decoding import pad_resize  # noqa: E402
from cxrcl.data.sources import prepare  # noqa: E402
from cxrcl.data.streaming import write_decoded  # noqa: E402

SEED = 20240601
SIDE = 1024


# ----------------------------------------------------------------------------- synthetic images
def synthetic_image(i: int, side: int = SIDE) -> np.ndarray:
    """uint8 [side, side]: a smooth random pattern (bicubic 9x9 -> side) + grain, seeded by ``i``."""
    rng = np.random.default_rng([SEED, int(i)])
    coarse = Image.fromarray(rng.random((9, 9), dtype=np.float32), mode="F")
    low = np.asarray(coarse.resize((side, side), Image.Resampling.BICUBIC), dtype=np.float32)
    img = np.clip(low * 170.0 + 40.0, 0, 240).astype(np.uint8)
    return img + rng.integers(0, 16, (side, side), dtype=np.uint8)


def synthetic_decode(path: str, size: int) -> np.ndarray:
    """The synthetic streaming source: ``"synthetic/<i>"`` -> image ``i`` at ``size`` px."""
    return pad_resize(synthetic_image(int(str(path).rsplit("/", 1)[1])), size)


def _dicom_reader():
    try:
        from cxrcl.data.dicom import read_dicom
    except ImportError:
        return None
    return read_dicom


def dicom_decode(path: str, size: int) -> np.ndarray:
    read_dicom = _dicom_reader()
    if read_dicom is not None:
        out = read_dicom(path)
        img = out[0] if isinstance(out, tuple) else out
        img = np.asarray(img)
        if img.dtype != np.uint8:
            img = _minmax(img)
        return pad_resize(img, size)
    import pydicom

    return pad_resize(_minmax(pydicom.dcmread(path).pixel_array), size)


def _minmax(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    lo, hi = float(a.min()), float(a.max())
    return np.zeros(a.shape, np.uint8) if hi <= lo else np.round((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)


# ----------------------------------------------------------------------------- inputs
def write_pngs(folder: Path, n: int) -> None:
    d = folder / "images"
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(synthetic_image(i)).save(d / f"{i:05d}.png", compress_level=6)


def write_dicoms(folder: Path, n: int) -> None:
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img16 = (synthetic_image(i).astype(np.uint16) << 4) + 100  # 12 significant bits in 16
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = "DX"
        ds.PatientID = f"BENCH{i:05d}"
        ds.Rows, ds.Columns = img16.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 0
        ds.PixelData = img16.tobytes()
        ds.save_as(folder / f"{i:05d}.dcm", enforce_file_format=True)


# ----------------------------------------------------------------------------- memory
def _status_kb(pid: int | str, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0: ``echo 5 > clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_sample() -> dict:
    workers = [p.pid for p in multiprocessing.active_children()]
    hwm = [v for v in (_status_kb(p, "VmHWM") for p in workers) if v is not None]
    rss = [v for v in (_status_kb(p, "VmRSS") for p in workers) if v is not None]
    mb = lambda kb: None if kb is None else round(kb / 1024, 1)  # noqa: E731
    return {"main_hwm_mb": mb(_status_kb("self", "VmHWM")), "main_rss_mb": mb(_status_kb("self", "VmRSS")),
            "workers": len(workers), "workers_max_hwm_mb": mb(max(hwm)) if hwm else None,
            "workers_max_rss_mb": mb(max(rss)) if rss else None}


# ----------------------------------------------------------------------------- measurements
def _rate(n: int, seconds: float, workers: int) -> dict:
    ips = n / seconds
    return {"workers": workers, "images": n, "seconds": round(seconds, 2), "images_per_s": round(ips, 2),
            "images_per_s_per_worker": round(ips / workers, 2)}


def _scaling(rows: list[dict]) -> float | None:
    one = next((r for r in rows if r["workers"] == 1), None)
    most = max(rows, key=lambda r: r["workers"])
    return round(most["images_per_s"] / one["images_per_s"], 2) if one and most is not one else None


def bench_png(tmp: Path, n: int, size: int, workers: list[int], repeats: int) -> dict:
    src = tmp / "png"
    t = time.perf_counter()
    write_pngs(src, n)
    written = time.perf_counter() - t
    mb = sum(p.stat().st_size for p in src.rglob("*.png")) / 2**20
    rows = []
    for w in workers:
        best = float("inf")
        for r in range(repeats):
            out = tmp / f"png_out_{w}_{r}"
            t = time.perf_counter()
            prepare("folder", src, out, size=size, workers=w, progress=False)
            best = min(best, time.perf_counter() - t)
            shutil.rmtree(out)
        rows.append(_rate(n, best, w))
        print(f"  (a) PNG {SIDE}px -> {size}px, {w} worker(s): {rows[-1]['images_per_s']:.1f} images/s "
              f"({rows[-1]['images_per_s_per_worker']:.1f} per worker)", flush=True)
    return {"files": n, "file_mb_total": round(mb, 1), "write_seconds": round(written, 1),
            "path": "prepare('folder') = scan + write_decoded + finish (meta, content hash)",
            "runs": rows, "scaling": _scaling(rows)}


def bench_dicom(tmp: Path, n: int, size: int, workers: list[int], repeats: int) -> dict:
    src = tmp / "dicom"
    t = time.perf_counter()
    write_dicoms(src, n)
    written = time.perf_counter() - t
    paths = sorted(str(p) for p in src.glob("*.dcm"))
    decoder = ("cxrcl.data.dicom.read_dicom" if _dicom_reader() is not None
               else "pydicom.dcmread(p).pixel_array + min-max to uint8 (cxrcl.data.dicom.read_dicom missing)")
    rows = []
    for w in workers:
        best = float("inf")
        for r in range(repeats):
            out = tmp / f"dcm_out_{w}_{r}"
            t = time.perf_counter()
            writer, kept, skipped = write_decoded(out, paths, size, w, False, decode=dicom_decode)
            best = min(best, time.perf_counter() - t)
            if skipped:
                raise RuntimeError(f"DICOM decoding failed: {skipped[:3]}")
            writer.abort()
        rows.append(_rate(n, best, w))
        print(f"  (b) DICOM 16-bit {SIDE}px -> {size}px, {w} worker(s): {rows[-1]['images_per_s']:.1f} images/s "
              f"({rows[-1]['images_per_s_per_worker']:.1f} per worker)", flush=True)
    return {"files": n, "decoder": decoder, "write_seconds": round(written, 1),
            "file_mb_total": round(sum(Path(p).stat().st_size for p in paths) / 2**20, 1),
            "path": "write_decoded(decode=read_dicom + pad_resize) into PreparedWriter",
            "runs": rows, "scaling": _scaling(rows)}


def bench_rss(tmp: Path, n: int, size: int, workers: int, every: int) -> dict:
    paths = [f"synthetic/{i}" for i in range(n)]
    series = []
    hwm_reset = reset_peak()  # (a) and (b) ran in this process: measure (c) alone
    before = memory_sample()

    def on_image(done: int, total: int) -> None:
        if done % every == 0 or done == total:
            s = {"images": done, **memory_sample()}
            series.append(s)
            print(f"  (c) {done:>7} images: main VmHWM {s['main_hwm_mb']} MB (RSS {s['main_rss_mb']}), "
                  f"workers max VmHWM {s['workers_max_hwm_mb']} MB", flush=True)

    out = tmp / "synthetic_out"
    t = time.perf_counter()
    writer, kept, _ = write_decoded(out, paths, size, workers, False, decode=synthetic_decode, on_image=on_image)
    seconds = time.perf_counter() - t
    after = memory_sample()
    output_mb = n * size * size / 2**20
    writer.abort()
    hwm = [s["main_hwm_mb"] for s in series]
    first = series[0] if series else before
    return {"images": n, "source_side": SIDE, "size": size, "workers": workers,
            "output_images_mb": round(output_mb, 1), "seconds": round(seconds, 1),
            "images_per_s": round(n / seconds, 2), "main_hwm_reset_before": hwm_reset,
            "before": before, "after": after, "series": series,
            "main_hwm_growth_mb_after_first_sample": round(hwm[-1] - first["main_hwm_mb"], 1) if hwm else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=300, help="PNG and DICOM files for (a) and (b)")
    ap.add_argument("--synthetic", type=int, default=20000, help="synthetic images for the memory run (c)")
    ap.add_argument("--sample-every", type=int, default=1000)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--workers", default="1,2", help="worker counts for (a) and (b)")
    ap.add_argument("--rss-workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="best of this many runs for (a) and (b)")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: png,dicom,rss")
    ap.add_argument("--tmp", help="scratch directory (default: a new temp dir, removed at the end)")
    ap.add_argument("--json", default=str(Path(__file__).resolve().parent / "results" / "prepare_throughput.json"))
    args = ap.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    command = " ".join(shlex.quote(a) for a in ["python", *sys.argv])
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"prepare benchmark: {command}\n  cpus {os.cpu_count()}, load average {load}, "
          f"python {platform.python_version()}", flush=True)
    result = {"benchmark": "prepare_throughput", "command": command,
              "machine": {"cpu_count": os.cpu_count(), "load_average_at_start": load,
                          "platform": platform.platform(), "python": platform.python_version(),
                          "start_method": multiprocessing.get_start_method()},
              "setup": {"source_side": SIDE, "size": args.size, "files": args.files,
                        "synthetic": args.synthetic, "workers": workers, "repeats": args.repeats}}
    own_tmp = args.tmp is None
    tmp = Path(tempfile.mkdtemp(prefix="bench_prepare_")) if own_tmp else Path(args.tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        if "png" not in skip:
            result["png"] = bench_png(tmp, args.files, args.size, workers, args.repeats)
        if "dicom" not in skip:
            result["dicom"] = bench_dicom(tmp, args.files, args.size, workers, args.repeats)
        if "rss" not in skip:
            result["rss"] = bench_rss(tmp, args.synthetic, args.size, args.rss_workers, args.sample_every)
    finally:
        if own_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    result["machine"]["load_average_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    for part in ("png", "dicom"):
        if part in result:
            print(f"{part}: scaling {result[part]['scaling']} with workers {workers}")
    if "rss" in result:
        r = result["rss"]
        print(f"rss: {r['images']} images ({r['output_images_mb']} MB of output) at {r['images_per_s']} images/s; "
              f"main VmHWM {[s['main_hwm_mb'] for s in r['series']]} MB; "
              f"workers max VmHWM {[s['workers_max_hwm_mb'] for s in r['series']]} MB")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
