"""The accuracy-versus-cost section of ``cxrcl report``: per linear-probe table, each run's AUROC
at the largest fraction against its training GFLOPs and wall seconds, and the frontier."""

from __future__ import annotations

from cxrcl.evaluation.report_accuracy import Context, Group, cell_stats
from cxrcl.evaluation.report_format import DASH, fmt_num, fmt_pct, is_floor, md_table, row_name
from cxrcl.evaluation.report_inputs import Inputs
from cxrcl.evaluation.report_sections import (
    CostPoint,
    frontier,
    method_of,
    run_summary,
    training_gflops,
)


def cost_section(groups: list[Group], found: Inputs, ctx: Context, lines: list[str]) -> list:
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
            m = cell_stats(e, f, "auroc")[0]
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
        title = f"linear · {', '.join(g.labels)} · {fmt_pct(f)} labels · data {g.data.get('content_hash') or '?'}"
        on_g = {id(p) for p in frontier(points, "gflops")}
        on_w = {id(p) for p in frontier(points, "wall_s")}
        lines += [f"### Accuracy vs. cost: {title}", "",
                  "Made by: this report, from the eval JSON above, each run's summary.json "
                  "(images seen, wall seconds) and the bench JSON (training GFLOPs per image at the "
                  "run's backbone and image size).", ""]
        rows = [[p.name, f"{p.auroc:.3f}", fmt_num(p.gflops), fmt_num(p.wall_s),
                 "yes" if id(p) in on_g else "no", "yes" if id(p) in on_w else "no", p.note] for p in points]
        rows += [[row_name({"run": k}), f"{v:.3f}", "0", "0", DASH, DASH, "no training"] for k, v in floors.items()]
        lines += md_table(["method", "AUROC", "train GFLOPs", "train wall s", "frontier (GFLOPs)",
                         "frontier (wall s)", "cost source"], rows) + [""]
        lines += [f"- {n}" for n in notes] + ([""] if notes else [])
        panels.append((title, points, floors))
    return panels
