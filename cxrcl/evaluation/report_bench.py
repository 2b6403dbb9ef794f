"""The efficiency section of ``cxrcl report``: one table per bench JSON, absolute numbers and
ratios against the reference method, the share of the machine's matmul peak and the set-up."""

from __future__ import annotations

import shlex
from pathlib import Path

from cxrcl.evaluation.report_format import DASH, fmt_num, md_table

BENCH_METRICS = (
    ("train_images_per_s", "train img/s", True),
    ("train_step_s", "train step s", True),
    ("infer_images_per_s", "infer img/s", True),
    ("gflops_per_image", "GFLOPs/img", True),
    ("peak_rss_mb", "peak RSS MB", True),
)


def _reference(methods: dict) -> str:
    return "simclr" if "simclr" in methods else next(iter(methods))


def _matmul_peak_gflops(machine: dict) -> tuple[str, float] | None:
    for k, v in machine.items():
        lk = k.lower()
        if "matmul" in lk and isinstance(v, (int, float)) and v > 0:
            if "tflop" in lk:
                return k, float(v) * 1000.0
            if "gflop" in lk:
                return k, float(v)
    return None


def bench_sections(benches: list[tuple[Path, dict]], lines: list[str]) -> list:
    lines += ["## Efficiency", ""]
    plot_data = []
    for path, b in benches:
        methods = b["methods"]
        ref = b.get("ratios_vs") if b.get("ratios_vs") in methods else _reference(methods)
        machine = b.get("machine") or {}
        peak = _matmul_peak_gflops(machine)
        measured = any(isinstance(m.get("achieved_fraction_of_peak"), (int, float))
                       for m in methods.values())
        has_train_rss = any(m.get("train_rss_mb") is not None for m in methods.values())
        setup0 = b.get("setup") or {}
        cmd = b.get("command") or setup0.get("command") or _bench_command(path, b)
        lines += [f"### `{path}`", "", "Made by:", "", "```", cmd, "```", "",
                  f"Reference method: **{ref}** (× = method / reference). Machine: "
                  + (", ".join(f"{k}: {fmt_num(v)}" for k, v in machine.items()) or DASH) + ".", ""]
        header = ["method"]
        for _, label, ratio in BENCH_METRICS:
            header += [label] + (["×"] if ratio else [])
        if has_train_rss:
            header.append("train RSS MB")
        if measured:
            header += ["achieved GFLOP/s", "% of matmul peak"]
        elif peak:
            header.append("train % of matmul peak (est.)")
        rows = []
        for name, m in methods.items():
            row = [f"**{name}**" if name == ref else name]
            for key, _, ratio in BENCH_METRICS:
                v, r = m.get(key), methods[ref].get(key)
                row.append(fmt_num(v))
                if ratio:
                    ok = isinstance(v, (int, float)) and isinstance(r, (int, float)) and r
                    row.append(f"{v / r:.2f}" if ok else DASH)
            if has_train_rss:
                row.append(fmt_num(m.get("train_rss_mb")))
            if measured:
                frac = m.get("achieved_fraction_of_peak")
                row += [fmt_num(m.get("achieved_gflops_per_s")),
                        f"{100 * frac:.1f} %" if isinstance(frac, (int, float)) else DASH]
            elif peak:
                g, ips = m.get("gflops_per_image"), m.get("train_images_per_s")
                ok = isinstance(g, (int, float)) and isinstance(ips, (int, float))
                row.append(f"{100 * 3 * g * ips / peak[1]:.1f} %" if ok else DASH)
            rows.append(row)
        lines += md_table(header, rows) + [""]
        if measured:
            lines += ["Achieved GFLOP/s = training FLOPs per step (forward + backward) / step time, "
                      "against the machine's measured matmul peak.", ""]
        elif peak:
            lines += [f"Estimated training FLOP/s = 3 × forward GFLOPs/image × training images/s, "
                      f"against the measured `{peak[0]}` = {peak[1]:.1f} GFLOP/s.", ""]
        shown = {k for k, _, _ in BENCH_METRICS} | {"train_rss_mb", "achieved_fraction_of_peak",
                                                     "achieved_gflops_per_s"}
        extra = [k for k in dict.fromkeys(k for m in methods.values() for k in m)
                 if k not in shown and any(isinstance(m.get(k), (int, float)) and not isinstance(m.get(k), bool)
                                           for m in methods.values())]
        if extra:
            lines += ["Further measures (as recorded by the bench):", ""]
            lines += md_table(["method", *extra], [[n] + [fmt_num(m.get(k)) for k in extra]
                                                 for n, m in methods.items()]) + [""]
        setup = dict(b.get("setup") or {})
        setup.update({k: b[k] for k in ("command", "backbone", "image_size", "batch_size", "steps")
                      if k in b})
        if setup:
            lines += [f"- {k}: `{v}`" for k, v in setup.items()] + [""]
        plot_data.append((path.stem, methods))
    return plot_data


def _bench_command(path: Path, b: dict) -> str:
    setup = b.get("setup") or {}
    parts = ["cxrcl bench --methods " + ",".join(b["methods"])]
    for key, flag in (("data", "--data"), ("backbone", "--backbone"), ("image_size", "--image-size"),
                      ("batch_size", "--batch-size"), ("steps", "--steps")):
        if setup.get(key) is not None:
            parts.append(f"{flag} {shlex.quote(str(setup[key]))}")
    return " ".join(parts) + f" --out {shlex.quote(str(path))}"
