"""``cxrcl report INPUT... --out REPORT.md``: eval/bench JSON and run directories -> tables + plots.

Inputs (each may also be a directory holding several of them, walked one level deep):

- eval JSON (has ``task``): one table per (task, label set, data content + split hash); rows =
  runs (the ``run`` field; floors ``pixels`` and ``random:*`` are marked and listed last),
  columns = label fractions, cells ``mean ± std (n)`` of the macro AUROC over seeds; the best
  cell per column is bold. Runs evaluated on degraded test images get their own rows and a
  robustness table (AUROC drop from the clean test set at the largest fraction).
- bench JSON (has ``methods`` and ``machine``): absolute numbers and ratios vs. the reference
  method (the bench's ``ratios_vs``, else ``simclr`` when present, else the first listed), the
  set-up and the machine info. The share of the machine's matmul peak is the bench's own
  ``achieved_fraction_of_peak`` when present; otherwise, when the machine info holds a measured
  peak (a numeric key containing ``matmul`` and ``gflop``/``tflop``), it is estimated as
  3 x forward GFLOPs/image x training images/s (forward + backward ~ 3 forwards).
- run directory (``summary.json`` and/or ``metrics.jsonl``): a runs table and the loss curves.

Plots are written beside the report: ``<stem>_auroc.png``, ``<stem>_loss.png``,
``<stem>_bench.png``, and linked from the Markdown. A path given explicitly that is none of the
above is an error naming it; inside a walked directory, unrecognised JSON files and
sub-directories are skipped and listed in the report.
"""

from __future__ import annotations

import json
import math
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cxrcl.errors import CxrclError
from cxrcl.evaluation.outputs import check_output, write_text
from cxrcl.evaluation.plots import Curve, plot_auroc_vs_fraction, plot_bench, plot_loss_curves
from cxrcl.evaluation.results import summarize

DASH = "–"
BENCH_METRICS = (
    ("train_images_per_s", "train img/s", True),
    ("train_step_s", "train step s", True),
    ("infer_images_per_s", "infer img/s", True),
    ("gflops_per_image", "GFLOPs/img", True),
    ("peak_rss_mb", "peak RSS MB", True),
)


@dataclass
class Run:
    path: Path
    name: str
    summary: dict
    steps: np.ndarray
    loss: np.ndarray
    bad_lines: int = 0


@dataclass
class Inputs:
    evals: list[tuple[Path, dict]] = field(default_factory=list)
    benches: list[tuple[Path, dict]] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


# ----------------------------------------------------------------------------- reading inputs
def is_floor(run: str) -> bool:
    return run == "pixels" or run == "random" or run.startswith("random:")


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CxrclError(f"{path} cannot be read as JSON ({e.__class__.__name__}: {e})") from None


def _json_kind(obj) -> str | None:
    if not isinstance(obj, dict):
        return None
    if "task" in obj:
        return "eval"
    if "methods" in obj and "machine" in obj:
        return "bench"
    return None


def _is_run_dir(path: Path) -> bool:
    return path.is_dir() and ((path / "summary.json").is_file() or (path / "metrics.jsonl").is_file())


def _load_run(path: Path) -> Run:
    summary = {}
    if (path / "summary.json").is_file():
        summary = _read_json(path / "summary.json")
        if not isinstance(summary, dict):
            raise CxrclError(f"{path / 'summary.json'} is not a JSON object")
    steps, loss, bad = [], [], 0
    metrics = path / "metrics.jsonl"
    if metrics.is_file():
        with open(metrics, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    s, v = float(rec["step"]), float(rec["loss"])
                except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                    bad += 1  # e.g. a partial last line of a killed run, or a non-loss record
                    continue
                if math.isfinite(v):
                    steps.append(s)
                    loss.append(v)
    order = np.argsort(steps, kind="stable")
    return Run(path=path, name=path.name or str(path), summary=summary,
               steps=np.asarray(steps)[order], loss=np.asarray(loss)[order], bad_lines=bad)


def _check_eval(path: Path, obj: dict) -> dict:
    if not isinstance(obj.get("results"), list):
        raise CxrclError(f"{path} is an eval result without a 'results' list: re-run `cxrcl eval`")
    obj = dict(obj)
    summ = obj.get("summary")
    if isinstance(summ, dict) and not all(isinstance(v, dict) for v in summ.values()):
        raise CxrclError(f"{path} has a malformed 'summary' (expected {{fraction: {{auroc_mean, ...}}}}): "
                         "re-run `cxrcl eval`")
    if not isinstance(summ, dict) or not summ:
        obj["summary"] = summarize(obj["results"]) if obj["results"] else {}
    obj.setdefault("run", path.stem)
    obj.setdefault("labels", [])
    obj.setdefault("data", {})
    obj.setdefault("degrade_test", 0)
    return obj


def collect_inputs(inputs: Sequence[str | os.PathLike]) -> Inputs:
    """Classify every input (walking directories one level); errors name the offending path."""
    found = Inputs()
    seen: set[Path] = set()

    def add_file(p: Path, explicit: bool) -> None:
        if p.name == "summary.json" or p.name == "metrics.jsonl":
            add_run(p.parent)
            return
        if p.suffix.lower() != ".json":
            if explicit:
                raise CxrclError(f"{p} is not a report input: give eval or bench JSON files or run "
                                 "directories (with summary.json / metrics.jsonl)")
            return
        try:
            obj = _read_json(p)
        except CxrclError:
            if explicit:
                raise
            found.skipped.append((p, "not valid JSON"))
            return
        kind = _json_kind(obj)
        if kind is None:
            if explicit:
                raise CxrclError(f"{p} is neither an eval result (no 'task') nor a bench result "
                                 "(no 'methods' and 'machine'): give the JSON written by "
                                 "`cxrcl eval` or `cxrcl bench`")
            found.skipped.append((p, "unrecognised JSON"))
            return
        key = p.resolve()
        if key in seen:
            return
        seen.add(key)
        if kind == "eval":
            found.evals.append((p, _check_eval(p, obj)))
        else:
            methods = obj["methods"]
            if not isinstance(methods, dict) or not methods or \
                    not all(isinstance(m, dict) for m in methods.values()):
                raise CxrclError(f"{p} is a bench result without a methods object "
                                 "{NAME: {metric: value}}: re-run `cxrcl bench`")
            found.benches.append((p, obj))

    def add_run(d: Path) -> None:
        key = d.resolve()
        if key in seen:
            return
        seen.add(key)
        found.runs.append(_load_run(d))

    for item in inputs:
        p = Path(item)
        if not p.exists():
            raise CxrclError(f"{p} does not exist: give eval/bench JSON files or run directories")
        if p.is_file():
            add_file(p, explicit=True)
        elif _is_run_dir(p):
            add_run(p)
        else:
            before = (len(found.evals), len(found.benches), len(found.runs))
            for child in sorted(p.iterdir()):
                if child.name.startswith("."):
                    continue
                if child.is_file():
                    add_file(child, explicit=False)
                elif _is_run_dir(child):
                    add_run(child)
                elif child.is_dir():
                    found.skipped.append((child, "directory without summary.json or metrics.jsonl"))
            if (len(found.evals), len(found.benches), len(found.runs)) == before:
                raise CxrclError(f"{p} holds no eval or bench JSON and no run directory "
                                 "(summary.json / metrics.jsonl), neither directly nor one level down")
    return found


# ----------------------------------------------------------------------------- formatting
def _num(v) -> str:
    """Ints as ints; floats with 3 significant digits below 1, 2 decimals below 100."""
    if v is None or isinstance(v, bool):
        return DASH if v is None else str(v)
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if not isinstance(v, (float, np.floating)):
        return str(v)
    v = float(v)
    if not math.isfinite(v):
        return DASH
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.1f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def _pct(f: float) -> str:
    return f"{f * 100:g} %"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return out


def _summary_by_fraction(ev: dict) -> dict[float, dict]:
    out = {}
    for k, v in ev.get("summary", {}).items():
        try:
            out[float(k)] = v
        except ValueError:
            continue
    return out


def _row_name(ev: dict) -> str:
    name = str(ev.get("run", "?"))
    level = int(ev.get("degrade_test") or 0)
    if is_floor(name):
        name = f"_{name}_ (floor)"
    return f"{name} · degraded test L{level}" if level else name


# ----------------------------------------------------------------------------- sections
def _eval_sections(evals: list[tuple[Path, dict]], lines: list[str]) -> list:
    groups: dict[tuple, list[dict]] = {}
    for _, ev in evals:
        data = ev.get("data") or {}
        key = (str(ev.get("task")), tuple(ev.get("labels") or ()), data.get("content_hash"),
               data.get("split_hash"))
        groups.setdefault(key, []).append(ev)
    panels = []
    lines += ["## Evaluation", ""]
    for (task, labels, chash, shash), evs in groups.items():
        # one row per (run, degrade level); a later file replaces an earlier duplicate
        by_row: dict[tuple, dict] = {}
        for ev in evs:
            by_row[(str(ev.get("run")), int(ev.get("degrade_test") or 0))] = ev
        rows = sorted(by_row.values(), key=lambda e: (is_floor(str(e.get("run"))),
                                                      bool(e.get("degrade_test"))))
        fractions = sorted({f for e in rows for f in _summary_by_fraction(e)})
        data = evs[0].get("data") or {}
        label_text = ", ".join(labels) or "(none)"
        lines += [f"### {task} · labels: {label_text}", "",
                  f"Data `{data.get('path', '?')}` (source {data.get('source') or DASH}, content hash "
                  f"`{chash or DASH}`, split hash `{shash or DASH}`, n = {_fmt_n(data.get('n'))}). "
                  "Macro AUROC over labels, mean ± std over seeds (n seeds); floors in italics.", ""]
        best = {}
        for f in fractions:
            vals = [_summary_by_fraction(e)[f]["auroc_mean"] for e in rows
                    if f in _summary_by_fraction(e) and not int(e.get("degrade_test") or 0)]
            vals = [v for v in vals if v is not None]
            best[f] = max(vals) if vals else None
        table_rows = []
        for e in rows:
            s = _summary_by_fraction(e)
            cells = [_row_name(e)]
            for f in fractions:
                if f not in s:
                    cells.append(DASH)
                    continue
                m, sd, n = s[f].get("auroc_mean"), s[f].get("auroc_std"), s[f].get("n_seeds")
                txt = f"{m:.3f} ± {sd or 0:.3f} ({n})" if m is not None else DASH
                if m is not None and best[f] is not None and m == best[f] and \
                        not int(e.get("degrade_test") or 0):
                    txt = f"**{txt}**"
                cells.append(txt)
            table_rows.append(cells)
        lines += _table(["run"] + [_pct(f) for f in fractions], table_rows) + [""]

        if len(labels) > 1 and fractions:
            f = fractions[-1]
            per = []
            for e in rows:
                s = _summary_by_fraction(e).get(f, {})
                pl = s.get("auroc_per_label_mean") or _per_label_mean(e, f)
                per.append([_row_name(e)] + [DASH if pl.get(lbl) is None else f"{pl[lbl]:.3f}"
                                             for lbl in labels])
            lines += [f"Per-label AUROC at {_pct(f)} labels (mean over seeds):", ""]
            lines += _table(["run", *labels], per) + [""]

        degraded = [e for e in rows if int(e.get("degrade_test") or 0)]
        if degraded and fractions:
            f = fractions[-1]
            lines += [f"Robustness at {_pct(f)} labels: AUROC on degraded test images and the "
                      "drop from the clean test set.", ""]
            rob = []
            for e in degraded:
                run = str(e.get("run"))
                clean = by_row.get((run, 0))
                m = _summary_by_fraction(e).get(f, {}).get("auroc_mean")
                c = _summary_by_fraction(clean).get(f, {}).get("auroc_mean") if clean else None
                drop = (c - m) if (c is not None and m is not None) else None
                rob.append([run, str(int(e["degrade_test"]))]
                           + [DASH if v is None else f"{v:.3f}" for v in (c, m, drop)])
            lines += _table(["run", "level", "clean", "degraded", "drop"], rob) + [""]

        commands = list(dict.fromkeys(e["command"] for e in rows if isinstance(e.get("command"), str)))
        if commands:
            lines += ["Reproduce:", "", "```"] + commands + ["```", ""]
        curves = []
        for e in rows:
            if int(e.get("degrade_test") or 0):
                continue
            s = _summary_by_fraction(e)
            fs = [f for f in sorted(s) if s[f].get("auroc_mean") is not None]
            if fs:
                curves.append(Curve(str(e.get("run")), fs, [s[f]["auroc_mean"] for f in fs],
                                    [s[f].get("auroc_std") or 0.0 for f in fs],
                                    floor=is_floor(str(e.get("run")))))
        if curves:
            panels.append((f"{task} · {label_text} · data {chash or '?'}", curves))
    return panels


def _fmt_n(n) -> str:
    if isinstance(n, dict):
        return "/".join(f"{v}" for v in n.values()) + " (" + "/".join(n) + ")"
    return DASH if n is None else str(n)


def _per_label_mean(ev: dict, f: float) -> dict:
    rs = [r for r in ev.get("results", []) if float(r.get("fraction", -1)) == f]
    names = {k for r in rs for k in (r.get("auroc_per_label") or {})}
    return {k: float(np.mean([r["auroc_per_label"][k] for r in rs if k in r.get("auroc_per_label", {})]))
            for k in names}


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


def _bench_sections(benches: list[tuple[Path, dict]], lines: list[str]) -> list:
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
        lines += [f"### `{path}`", "",
                  f"Reference method: **{ref}** (× = method / reference). Machine: "
                  + (", ".join(f"{k}: {_num(v)}" for k, v in machine.items()) or DASH) + ".", ""]
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
                row.append(_num(v))
                if ratio:
                    ok = isinstance(v, (int, float)) and isinstance(r, (int, float)) and r
                    row.append(f"{v / r:.2f}" if ok else DASH)
            if has_train_rss:
                row.append(_num(m.get("train_rss_mb")))
            if measured:
                frac = m.get("achieved_fraction_of_peak")
                row += [_num(m.get("achieved_gflops_per_s")),
                        f"{100 * frac:.1f} %" if isinstance(frac, (int, float)) else DASH]
            elif peak:
                g, ips = m.get("gflops_per_image"), m.get("train_images_per_s")
                ok = isinstance(g, (int, float)) and isinstance(ips, (int, float))
                row.append(f"{100 * 3 * g * ips / peak[1]:.1f} %" if ok else DASH)
            rows.append(row)
        lines += _table(header, rows) + [""]
        if measured:
            lines += ["Achieved GFLOP/s = training FLOPs per step (forward + backward) / step time, "
                      "against the machine's measured matmul peak.", ""]
        elif peak:
            lines += [f"Estimated training FLOP/s = 3 × forward GFLOPs/image × training images/s, "
                      f"against the measured `{peak[0]}` = {peak[1]:.1f} GFLOP/s.", ""]
        setup = dict(b.get("setup") or {})
        setup.update({k: b[k] for k in ("command", "backbone", "image_size", "batch_size", "steps")
                      if k in b})
        if setup:
            lines += [f"- {k}: `{v}`" for k, v in setup.items()] + [""]
        plot_data.append((path.stem, methods))
    return plot_data


def _runs_section(runs: list[Run], lines: list[str]) -> None:
    lines += ["## Pre-training runs", ""]
    rows = []
    for r in runs:
        s = r.summary
        wall = s.get("wall_seconds", s.get("wall_s"))
        ips = s.get("images_per_s", s.get("images_per_second"))
        final = s.get("final_loss", r.loss[-1] if len(r.loss) else None)
        rows.append([f"`{r.path}`", str(s.get("method", DASH)), str(s.get("backbone", DASH)),
                     _num(s.get("steps", int(r.steps[-1]) if len(r.steps) else None)),
                     _num(wall), _num(ips), _num(final), str(len(r.loss))])
    lines += _table(["run", "method", "backbone", "steps", "wall s", "img/s", "final loss",
                     "logged points"], rows) + [""]
    bad = [(r.path, r.bad_lines) for r in runs if r.bad_lines]
    for p, n in bad:
        lines += [f"- `{p}/metrics.jsonl`: {n} line(s) without a numeric step and loss were skipped."]
    if bad:
        lines += [""]


# ----------------------------------------------------------------------------- entry point
def write_report(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, *,
                 loss_log_x: bool = False, title: str = "cxrcl report") -> Path:
    """Write the Markdown report to ``out`` and its PNG plots beside it; returns ``out``."""
    if not inputs:
        raise CxrclError("no report inputs: give eval/bench JSON files or run directories")
    out = check_output(out, "report")
    found = collect_inputs(inputs)
    stem = out.stem if out.suffix else out.name

    def png(kind: str) -> Path:
        return out.with_name(f"{stem}_{kind}.png")

    lines = [f"# {title}", "",
             f"{len(found.evals)} evaluation result(s), {len(found.benches)} benchmark(s), "
             f"{len(found.runs)} run(s).", "",
             "Reproduce: `cxrcl report " + " ".join(shlex.quote(str(p)) for p in inputs)
             + f" --out {shlex.quote(str(out))}`", ""]
    if found.evals:
        panels = _eval_sections(found.evals, lines)
        if panels:
            plot_auroc_vs_fraction(panels, png("auroc"))
            lines += [f"![AUROC vs. label fraction]({png('auroc').name})", ""]
    if found.benches:
        plot_data = _bench_sections(found.benches, lines)
        plot_bench(plot_data, png("bench"))
        lines += [f"![Throughput]({png('bench').name})", ""]
    if found.runs:
        _runs_section(found.runs, lines)
        curves = [(r.name, r.steps, r.loss) for r in found.runs if len(r.loss)]
        if curves:
            plot_loss_curves(curves, png("loss"), log_x=loss_log_x)
            lines += [f"![Training loss]({png('loss').name})", ""]
    if found.skipped:
        lines += [f"## Skipped ({len(found.skipped)})", ""]
        lines += [f"- `{p}`: {why}" for p, why in found.skipped] + [""]
    text = "\n".join(lines).rstrip() + "\n"
    write_text(out, text)
    return out
