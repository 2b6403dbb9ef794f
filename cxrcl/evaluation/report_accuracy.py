"""The eval JSON sections of ``cxrcl report``: results grouped by task, label set and test split,
one accuracy table each (with CIs, † against the baseline, per-label and robustness tables),
retrieval tables and ROC curves."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cxrcl.evaluation.plots import Curve
from cxrcl.evaluation.report_format import DASH, fmt_pct, is_floor, md_table, row_name
from cxrcl.evaluation.report_sections import method_of, paired_against, roc_curves

METRICS = {"segment": "dice"}  # every other task: macro AUROC


def metric_of(task: str) -> str:
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


def summary_by_fraction(ev: dict) -> dict[float, dict]:
    out = {}
    for k, v in ev.get("summary", {}).items():
        try:
            out[float(k)] = v
        except ValueError:
            continue
    return out


def cell_stats(ev: dict, f: float, metric: str):
    """(mean, std, n seeds, [lo, hi] or None) of one table cell."""
    s = summary_by_fraction(ev).get(f, {})
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
        fractions = sorted({f for e in rows for f in summary_by_fraction(e)})
        g = Group(task, labels, evs[0].get("data") or {}, rows, by_row, fractions)
        base = [e for e in rows if not int(e.get("degrade_test") or 0) and not is_floor(str(e.get("run")))
                and method_of(e, ctx.summaries) == ctx.baseline]
        if base and metric_of(task) == "auroc" and task != "retrieval":
            g.baseline = base[0]
            for e in rows:
                if e is g.baseline or int(e.get("degrade_test") or 0):
                    continue
                for f in fractions:
                    if f in summary_by_fraction(e) and f in summary_by_fraction(g.baseline):
                        g.pairs[(str(e.get("run")), f)] = paired_against(e["_path"], g.baseline["_path"], f)
        out.append(g)
    return out


def accuracy_sections(groups: list[Group], ctx: Context, lines: list[str]) -> list:
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
        metric = metric_of(g.task)
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
            vals = [cell_stats(e, f, metric)[0] for e in rows if not int(e.get("degrade_test") or 0)]
            vals = [v for v in vals if v is not None]
            best[f] = max(vals) if vals else None
        table_rows = []
        for e in rows:
            cells = [row_name(e) + (" (baseline)" if e is g.baseline else "")]
            for f in fractions:
                m, sd, n, ci = cell_stats(e, f, metric)
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
        lines += md_table(["run"] + [fmt_pct(f) for f in fractions], table_rows) + [""]
        _pairs_table(g, lines)

        if len(labels) > 1 and fractions and metric == "auroc":
            f = fractions[-1]
            per = []
            for e in rows:
                s = summary_by_fraction(e).get(f, {})
                pl = s.get("auroc_per_label_mean") or _per_label_mean(e, f)
                per.append([row_name(e)] + [DASH if pl.get(lbl) is None else f"{pl[lbl]:.3f}"
                                             for lbl in labels])
            lines += [f"Per-label AUROC at {fmt_pct(f)} labels (mean over seeds):", ""]
            lines += md_table(["run", *labels], per) + [""]

        degraded = [e for e in rows if int(e.get("degrade_test") or 0)]
        if degraded and fractions:
            f = fractions[-1]
            lines += [f"Robustness at {fmt_pct(f)} labels: {metric.upper() if metric == 'auroc' else 'Dice'} "
                      "on degraded test images and the drop from the clean test set.", ""]
            rob = []
            for e in degraded:
                run = str(e.get("run"))
                clean = g.by_row.get((run, 0))
                m = cell_stats(e, f, metric)[0]
                c = cell_stats(clean, f, metric)[0] if clean else None
                drop = (c - m) if (c is not None and m is not None) else None
                rob.append([run, str(int(e["degrade_test"]))]
                           + [DASH if v is None else f"{v:.3f}" for v in (c, m, drop)])
            lines += md_table(["run", "level", "clean", "degraded", "drop"], rob) + [""]

        if metric != "auroc":
            continue
        curves = []
        for e in rows:
            if int(e.get("degrade_test") or 0):
                continue
            s = summary_by_fraction(e)
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
        rows = [[run, fmt_pct(f), f"{p['diff']:+.3f}",
                 DASH if p["ci"][0] is None else f"[{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}]",
                 f"{p['p']:.3f}", "yes" if p["significant"] else "no †"]
                for (run, f), p in done.items()]
        lines += md_table(["run", "labels", "Δ AUROC", "95 % CI", "p", "significant"], rows) + [""]
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
        cells = [row_name(e)]
        for d, k in heads:
            v, c = (rk.get(d) or {}).get(k), (ch.get(d) or {}).get(k)
            cells.append(DASH if v is None else f"{v:.3f}" + (f" (chance {c:.3f})" if c is not None else ""))
        rows.append(cells)
    arrows = {"image_to_report": "image→report", "report_to_image": "report→image"}
    lines += md_table(["run"] + [f"{arrows.get(d, d)} R@{k}" for d, k in heads], rows) + [""]


def _fmt_n(n) -> str:
    if isinstance(n, dict):
        return "/".join(f"{v}" for v in n.values()) + " (" + "/".join(n) + ")"
    return DASH if n is None else str(n)


def _per_label_mean(ev: dict, f: float) -> dict:
    rs = [r for r in ev.get("results", []) if float(r.get("fraction", -1)) == f]
    names = {k for r in rs for k in (r.get("auroc_per_label") or {})}
    return {k: float(np.mean([r["auroc_per_label"][k] for r in rs if k in r.get("auroc_per_label", {})]))
            for k in names}


def roc_section(groups: list[Group], lines: list[str]) -> list:
    panels, missing = [], []
    for g in groups:
        if metric_of(g.task) != "auroc" or g.task == "retrieval":
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
            panels.append((f"{g.task} · {label} · {fmt_pct(meta[0])} labels, seed {meta[1]}", curves))
    if panels or missing:
        lines += ["## ROC curves", "",
                  "Made by: this report, from the per-test-image scores each eval wrote beside its JSON "
                  "(FILE.scores.npz), at the largest label fraction and the first seed.", ""]
    if missing:
        lines += ["No ROC curve for " + ", ".join(f"`{m}`" for m in missing)
                  + ": no score sidecar beside the JSON (written by evals before the bootstrap CIs).", ""]
    return panels
