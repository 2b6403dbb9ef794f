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
- ``cxrcl explain`` folder (``explain.json`` + ``overlays.png``): the saliency table and overlays.

Joined across inputs (:mod:`cxrcl.evaluation.report_sections`): each accuracy cell carries the
eval's 95 % bootstrap CI (``summary[f]["auroc_ci"]``) when recorded and a † when a paired
bootstrap against the baseline method (``--baseline``, default simclr) finds no significant
difference; the accuracy-versus-cost frontier (linear probe AUROC at the largest fraction
against training GFLOPs and wall seconds); ROC curves from the score sidecars. Every table is
headed by the command that made it (recorded in the JSON, else reconstructed and marked so).

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
from cxrcl.evaluation.plots import (
    Curve,
    plot_auroc_vs_fraction,
    plot_bench,
    plot_cost_frontier,
    plot_loss_curves,
    plot_roc,
)
from cxrcl.evaluation.report_sections import (
    CostPoint,
    copy_overlay,
    frontier,
    is_explain_dir,
    load_explain,
    method_of,
    paired_against,
    roc_curves,
    run_summary,
    training_gflops,
)
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
    explains: list[tuple[Path, dict]] = field(default_factory=list)
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
    obj["_path"] = path  # for the paired tests and ROC curves (the score sidecar lies beside it)
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

    def add_explain(d: Path) -> None:
        key = d.resolve()
        if key not in seen:
            seen.add(key)
            found.explains.append((d, load_explain(d)))

    for item in inputs:
        p = Path(item)
        if not p.exists():
            raise CxrclError(f"{p} does not exist: give eval/bench JSON files, run directories or "
                             "`cxrcl explain` folders")
        if p.is_file():
            add_file(p, explicit=True)
        elif _is_run_dir(p):
            add_run(p)
        elif is_explain_dir(p):
            add_explain(p)
        else:
            before = (len(found.evals), len(found.benches), len(found.runs), len(found.explains))
            for child in sorted(p.iterdir()):
                if child.name.startswith("."):
                    continue
                if child.is_file():
                    add_file(child, explicit=False)
                elif _is_run_dir(child):
                    add_run(child)
                elif is_explain_dir(child):
                    add_explain(child)
                elif child.is_dir():
                    found.skipped.append((child, "directory without summary.json or metrics.jsonl"))
            if (len(found.evals), len(found.benches), len(found.runs), len(found.explains)) == before:
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
METRICS = {"segment": "dice"}  # every other task: macro AUROC


def _metric(task: str) -> str:
    return METRICS.get(task, "auroc")


@dataclass
class Group:
    """The eval results that share a task, label set and test split: one accuracy table."""

    task: str
    labels: tuple
    data: dict
    rows: list[dict]
    by_row: dict
    fractions: list[float]
    baseline: dict | None = None
    pairs: dict = field(default_factory=dict)  # (run, fraction) -> paired bootstrap result


@dataclass
class Context:
    baseline: str
    summaries: dict  # resolved run path -> summary.json of the runs given as inputs


def _cell_stats(ev: dict, f: float, metric: str):
    """(mean, std, n seeds, [lo, hi] or None) of one table cell."""
    s = _summary_by_fraction(ev).get(f, {})
    m, sd, n = s.get(f"{metric}_mean"), s.get(f"{metric}_std"), s.get("n_seeds")
    ci = s.get(f"{metric}_ci") or s.get(f"{metric}_ci95")
    if ci is None:
        rs = [r for r in ev.get("results", []) if _as_float(r.get("fraction")) == f]
        if len(rs) == 1:
            ci = rs[0].get(f"{metric}_ci") or rs[0].get(f"{metric}_ci95")
    ok = isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci)
    return m, sd, n, (list(ci) if ok else None)


def _as_float(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def group_evals(evals: list[tuple[Path, dict]], ctx: Context) -> list[Group]:
    groups: dict[tuple, list[dict]] = {}
    for _, ev in evals:
        data = ev.get("data") or {}
        key = (str(ev.get("task")), tuple(ev.get("labels") or ()), data.get("content_hash"),
               data.get("split_hash"))
        groups.setdefault(key, []).append(ev)
    out = []
    for (task, labels, _, _), evs in groups.items():
        # one row per (run, degrade level); a later file replaces an earlier duplicate
        by_row: dict[tuple, dict] = {}
        for ev in evs:
            by_row[(str(ev.get("run")), int(ev.get("degrade_test") or 0))] = ev
        rows = sorted(by_row.values(), key=lambda e: (is_floor(str(e.get("run"))),
                                                      bool(e.get("degrade_test"))))
        fractions = sorted({f for e in rows for f in _summary_by_fraction(e)})
        g = Group(task, labels, evs[0].get("data") or {}, rows, by_row, fractions)
        base = [e for e in rows if not int(e.get("degrade_test") or 0) and not is_floor(str(e.get("run")))
                and method_of(e, ctx.summaries) == ctx.baseline]
        if base and _metric(task) == "auroc" and task != "retrieval":
            g.baseline = base[0]
            for e in rows:
                if e is g.baseline or int(e.get("degrade_test") or 0):
                    continue
                for f in fractions:
                    if f in _summary_by_fraction(e) and f in _summary_by_fraction(g.baseline):
                        g.pairs[(str(e.get("run")), f)] = paired_against(e["_path"], g.baseline["_path"], f)
        out.append(g)
    return out


def _eval_sections(groups: list[Group], ctx: Context, lines: list[str]) -> list:
    panels = []
    lines += ["## Accuracy", "",
              "Every cell: mean ± std over seeds (n seeds) [95 % bootstrap CI over test images and "
              f"seeds, when the eval recorded it]. Floors in italics. † = not significantly different "
              f"from the baseline **{ctx.baseline}** (paired bootstrap over the same test images, 95 %).",
              ""]
    for g in groups:
        if g.task == "retrieval":
            _retrieval_table(g, lines)
            continue
        metric = _metric(g.task)
        data, labels, fractions, rows = g.data, g.labels, g.fractions, g.rows
        label_text = ", ".join(labels) or "(none)"
        lines += [f"### {g.task} · labels: {label_text}", ""]
        commands = list(dict.fromkeys(e["command"] for e in rows if isinstance(e.get("command"), str)))
        lines += (["Made by:", "", "```"] + commands + ["```", ""]) if commands else \
            ["Made by: `cxrcl eval` (the JSON files do not record their command line: "
             + ", ".join(f"`{e['_path']}`" for e in rows) + ")", ""]
        lines += [f"Data `{data.get('path', '?')}` (source {data.get('source') or DASH}, content hash "
                  f"`{data.get('content_hash') or DASH}`, split hash `{data.get('split_hash') or DASH}`, "
                  f"n = {_fmt_n(data.get('n'))}). "
                  + ("Dice over test images with a mask" if metric == "dice" else "Macro AUROC over labels")
                  + ", mean ± std over seeds (n seeds); floors in italics.", ""]
        best = {}
        for f in fractions:
            vals = [_cell_stats(e, f, metric)[0] for e in rows if not int(e.get("degrade_test") or 0)]
            vals = [v for v in vals if v is not None]
            best[f] = max(vals) if vals else None
        table_rows = []
        for e in rows:
            cells = [_row_name(e) + (" (baseline)" if e is g.baseline else "")]
            for f in fractions:
                m, sd, n, ci = _cell_stats(e, f, metric)
                if m is None:
                    cells.append(DASH)
                    continue
                txt = f"{m:.3f} ± {sd or 0:.3f} ({n})"
                if ci:
                    txt += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
                pair = g.pairs.get((str(e.get("run")), f))
                if pair is not None and not pair["significant"]:
                    txt += " †"
                if best[f] is not None and m == best[f] and not int(e.get("degrade_test") or 0):
                    txt = f"**{txt}**"
                cells.append(txt)
            table_rows.append(cells)
        lines += _table(["run"] + [_pct(f) for f in fractions], table_rows) + [""]
        _pairs_table(g, lines)

        if len(labels) > 1 and fractions and metric == "auroc":
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
            lines += [f"Robustness at {_pct(f)} labels: {metric.upper() if metric == 'auroc' else 'Dice'} "
                      "on degraded test images and the drop from the clean test set.", ""]
            rob = []
            for e in degraded:
                run = str(e.get("run"))
                clean = g.by_row.get((run, 0))
                m = _cell_stats(e, f, metric)[0]
                c = _cell_stats(clean, f, metric)[0] if clean else None
                drop = (c - m) if (c is not None and m is not None) else None
                rob.append([run, str(int(e["degrade_test"]))]
                           + [DASH if v is None else f"{v:.3f}" for v in (c, m, drop)])
            lines += _table(["run", "level", "clean", "degraded", "drop"], rob) + [""]

        if metric != "auroc":
            continue
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
        if curves and len(g.fractions) > 1:
            panels.append((f"{g.task} · {label_text} · data {data.get('content_hash') or '?'}", curves))
    return panels


def _pairs_table(g: Group, lines: list[str]) -> None:
    if g.baseline is None:
        return
    done = {k: v for k, v in g.pairs.items() if v is not None}
    missing = sorted({run for (run, _), v in g.pairs.items() if v is None})
    if done:
        lines += [f"Paired bootstrap against the baseline `{g.baseline.get('run')}` "
                  "(difference of macro AUROC, seeds paired, same test images):", ""]
        rows = [[run, _pct(f), f"{p['diff']:+.3f}",
                 DASH if p["ci"][0] is None else f"[{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}]",
                 f"{p['p']:.3f}", "yes" if p["significant"] else "no †"]
                for (run, f), p in done.items()]
        lines += _table(["run", "labels", "Δ AUROC", "95 % CI", "p", "significant"], rows) + [""]
    if missing:
        lines += ["No significance marks for " + ", ".join(f"`{r}`" for r in missing)
                  + ": its eval JSON or the baseline's has no per-image score sidecar (.scores.npz), "
                    "or they were scored on different test images.", ""]


def _retrieval_table(g: Group, lines: list[str]) -> None:
    lines += [f"### retrieval · data `{g.data.get('path', '?')}`", ""]
    commands = list(dict.fromkeys(e["command"] for e in g.rows if isinstance(e.get("command"), str)))
    lines += (["Made by:", "", "```"] + commands + ["```", ""]) if commands else \
        ["Made by: `cxrcl eval retrieval` (command not recorded)", ""]
    heads, rows = [], []
    for e in g.rows:
        r = (e.get("results") or [{}])[0]
        rk = r.get("recall_at_k") or {}
        for d, ks in rk.items():
            for k in ks:
                if (d, k) not in heads:
                    heads.append((d, k))
    for e in g.rows:
        r = (e.get("results") or [{}])[0]
        rk, ch = r.get("recall_at_k") or {}, r.get("chance_at_k") or {}
        cells = [_row_name(e)]
        for d, k in heads:
            v, c = (rk.get(d) or {}).get(k), (ch.get(d) or {}).get(k)
            cells.append(DASH if v is None else f"{v:.3f}" + (f" (chance {c:.3f})" if c is not None else ""))
        rows.append(cells)
    arrows = {"image_to_report": "image→report", "report_to_image": "report→image"}
    lines += _table(["run"] + [f"{arrows.get(d, d)} R@{k}" for d, k in heads], rows) + [""]


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
        setup0 = b.get("setup") or {}
        cmd = b.get("command") or setup0.get("command") or _bench_command(path, b)
        lines += [f"### `{path}`", "", "Made by:", "", "```", cmd, "```", "",
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
        shown = {k for k, _, _ in BENCH_METRICS} | {"train_rss_mb", "achieved_fraction_of_peak",
                                                     "achieved_gflops_per_s"}
        extra = [k for k in dict.fromkeys(k for m in methods.values() for k in m)
                 if k not in shown and any(isinstance(m.get(k), (int, float)) and not isinstance(m.get(k), bool)
                                           for m in methods.values())]
        if extra:
            lines += ["Further measures (as recorded by the bench):", ""]
            lines += _table(["method", *extra], [[n] + [_num(m.get(k)) for k in extra]
                                                 for n, m in methods.items()]) + [""]
        setup = dict(b.get("setup") or {})
        setup.update({k: b[k] for k in ("command", "backbone", "image_size", "batch_size", "steps")
                      if k in b})
        if setup:
            lines += [f"- {k}: `{v}`" for k, v in setup.items()] + [""]
        plot_data.append((path.stem, methods))
    return plot_data


def _runs_section(runs: list[Run], lines: list[str]) -> None:
    lines += ["## Pre-training runs", "", "Made by (reconstructed from each run's summary.json; "
              "config.yaml in the run holds every setting):", "", "```"]
    lines += [_pretrain_command(r) for r in runs] + ["```", ""]
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


def _bench_command(path: Path, b: dict) -> str:
    setup = b.get("setup") or {}
    parts = ["cxrcl bench --methods " + ",".join(b["methods"])]
    for key, flag in (("data", "--data"), ("backbone", "--backbone"), ("image_size", "--image-size"),
                      ("batch_size", "--batch-size"), ("steps", "--steps")):
        if setup.get(key) is not None:
            parts.append(f"{flag} {shlex.quote(str(setup[key]))}")
    return " ".join(parts) + f" --out {shlex.quote(str(path))}"


def _pretrain_command(r: Run) -> str:
    s = r.summary
    parts = [f"cxrcl pretrain {s.get('method', '?')}"]
    data = (s.get("data") or {}).get("path") if isinstance(s.get("data"), dict) else None
    parts.append(f"--data {shlex.quote(str(data))}" if data else "--data ?")
    parts.append(f"--out {shlex.quote(str(r.path))}")
    if s.get("backbone"):
        parts.append(f"--backbone {shlex.quote(str(s['backbone']))}")
    if s.get("image_size"):
        parts.append(f"--image-size {s['image_size']}")
    if s.get("steps_total", s.get("steps")):
        parts.append(f"--steps {s.get('steps_total', s.get('steps'))}")
    return " ".join(parts)


def _cost_section(groups: list[Group], found: Inputs, ctx: Context, lines: list[str]) -> list:
    """Accuracy vs. cost per linear-probe table at its largest fraction: one point per run."""
    panels = []
    for g in groups:
        if g.task != "linear" or not g.fractions:
            continue
        f = g.fractions[-1]
        points, floors, notes = [], {}, []
        for e in g.rows:
            if int(e.get("degrade_test") or 0):
                continue
            m = _cell_stats(e, f, "auroc")[0]
            if m is None:
                continue
            run = str(e.get("run"))
            if is_floor(run):
                floors[run] = m
                continue
            summ = run_summary(run, ctx.summaries)
            if summ is None:
                notes.append(f"`{run}`: no summary.json found (give the run directory to the report)")
                continue
            gf, how = training_gflops(summ, found.benches)
            wall = summ.get("wall_seconds", summ.get("wall_s"))
            points.append(CostPoint(method_of(e, ctx.summaries), m, gf,
                                    float(wall) if isinstance(wall, (int, float)) else None, how))
        if not points:
            continue
        title = f"linear · {', '.join(g.labels)} · {_pct(f)} labels · data {g.data.get('content_hash') or '?'}"
        on_g = {id(p) for p in frontier(points, "gflops")}
        on_w = {id(p) for p in frontier(points, "wall_s")}
        lines += [f"### Accuracy vs. cost: {title}", "",
                  "Made by: this report, from the eval JSON above, each run's summary.json "
                  "(images seen, wall seconds) and the bench JSON (training GFLOPs per image at the "
                  "run's backbone and image size).", ""]
        rows = [[p.name, f"{p.auroc:.3f}", _num(p.gflops), _num(p.wall_s),
                 "yes" if id(p) in on_g else "no", "yes" if id(p) in on_w else "no", p.note] for p in points]
        rows += [[_row_name({"run": k}), f"{v:.3f}", "0", "0", DASH, DASH, "no training"] for k, v in floors.items()]
        lines += _table(["method", "AUROC", "train GFLOPs", "train wall s", "frontier (GFLOPs)",
                         "frontier (wall s)", "cost source"], rows) + [""]
        lines += [f"- {n}" for n in notes] + ([""] if notes else [])
        panels.append((title, points, floors))
    return panels


def _roc_section(groups: list[Group], lines: list[str]) -> list:
    panels, missing = [], []
    for g in groups:
        if _metric(g.task) != "auroc" or g.task == "retrieval":
            continue
        per_label: dict[str, list] = {}
        meta = None
        for e in g.rows:
            if int(e.get("degrade_test") or 0):
                continue
            got = roc_curves(e["_path"])
            if got is None:
                missing.append(str(e["_path"]))
                continue
            meta = got[:2]
            for label, (fpr, tpr, auc) in got[2].items():
                per_label.setdefault(label, []).append((str(e.get("run")), fpr, tpr, auc))
        for label, curves in per_label.items():
            panels.append((f"{g.task} · {label} · {_pct(meta[0])} labels, seed {meta[1]}", curves))
    if panels or missing:
        lines += ["## ROC curves", "",
                  "Made by: this report, from the per-test-image scores each eval wrote beside its JSON "
                  "(FILE.scores.npz), at the largest label fraction and the first seed.", ""]
    if missing:
        lines += ["No ROC curve for " + ", ".join(f"`{m}`" for m in missing)
                  + ": no score sidecar beside the JSON (written by evals before the bootstrap CIs).", ""]
    return panels


def _saliency_section(found: Inputs, out: Path, stem: str, lines: list[str]) -> None:
    lines += ["## Saliency", "", "Made by:", "", "```"]
    lines += [f"cxrcl explain --run {shlex.quote(str(x.get('run', '?')))} --data "
              f"{shlex.quote(str(x.get('data', '?')))} --out {shlex.quote(str(p))} "
              f"--split {x.get('split', 'test')}" for p, x in found.explains] + ["```", ""]
    rows = []
    for p, x in found.explains:
        rows.append([f"`{p}`", str(x.get("method", DASH)), str(x.get("split", DASH)),
                     _num(x.get("n_overlays")), _num(x.get("lesion_area_kept")),
                     _num(x.get("random_area_kept")), _num(x.get("lesion_minus_random"))])
    lines += ["Share of the lesion mask inside the tokens the method keeps, against random keep "
              "sets of the same size:", ""]
    lines += _table(["explain output", "method", "split", "overlays", "lesion area kept",
                     "random area kept", "lesion − random"], rows) + [""]
    for k, (p, x) in enumerate(found.explains):
        dest = copy_overlay(p, out.with_name(f"{stem}_saliency_{k}.png"))
        if dest is not None:
            lines += [f"![Saliency overlays: {x.get('method', p.name)}]({dest.name})", ""]


# ----------------------------------------------------------------------------- entry point
def write_report(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, *,
                 loss_log_x: bool = False, title: str = "cxrcl report", baseline: str = "simclr") -> Path:
    """Write the Markdown report to ``out`` and its PNG plots beside it; returns ``out``.

    ``baseline``: the method every other run is tested against (paired bootstrap) in each table.
    """
    if not inputs:
        raise CxrclError("no report inputs: give eval/bench JSON files, run directories or "
                         "`cxrcl explain` folders")
    out = check_output(out, "report")
    found = collect_inputs(inputs)
    stem = out.stem if out.suffix else out.name

    def png(kind: str) -> Path:
        return out.with_name(f"{stem}_{kind}.png")

    ctx = Context(baseline=baseline, summaries={r.path.resolve(): r.summary for r in found.runs})
    command = ("cxrcl report " + " ".join(shlex.quote(str(p)) for p in inputs)
               + f" --out {shlex.quote(str(out))}" + (f" --baseline {baseline}" if baseline != "simclr" else ""))
    lines = [f"# {title}", "",
             f"{len(found.evals)} evaluation result(s), {len(found.benches)} benchmark(s), "
             f"{len(found.runs)} run(s)" + (f", {len(found.explains)} saliency output(s)" if found.explains else "")
             + ".", "", f"Reproduce: `{command}`", ""]
    groups = group_evals(found.evals, ctx) if found.evals else []
    if groups:
        panels = _eval_sections(groups, ctx, lines)
        if panels:
            plot_auroc_vs_fraction(panels, png("auroc"))
            lines += [f"![AUROC vs. label fraction]({png('auroc').name})", ""]
    if found.benches:
        plot_data = _bench_sections(found.benches, lines)
        plot_bench(plot_data, png("bench"))
        lines += [f"![Throughput]({png('bench').name})", ""]
    if groups:
        head = len(lines)
        cost = _cost_section(groups, found, ctx, lines)
        if cost:
            lines[head:head] = ["## Accuracy vs. cost", ""]
            plot_cost_frontier(cost, png("cost"))
            lines += [f"![Accuracy vs. training cost]({png('cost').name})", ""]
        roc = _roc_section(groups, lines)
        if roc:
            plot_roc(roc, png("roc"))
            lines += [f"![ROC curves]({png('roc').name})", ""]
    if found.runs:
        _runs_section(found.runs, lines)
        curves = [(r.name, r.steps, r.loss) for r in found.runs if len(r.loss)]
        if curves:
            plot_loss_curves(curves, png("loss"), log_x=loss_log_x)
            lines += [f"![Training loss]({png('loss').name})", ""]
    if found.explains:
        _saliency_section(found, out, stem, lines)
    if found.skipped:
        lines += [f"## Skipped ({len(found.skipped)})", ""]
        lines += [f"- `{p}`: {why}" for p, why in found.skipped] + [""]
    text = "\n".join(lines).rstrip() + "\n"
    write_text(out, text)
    return out
