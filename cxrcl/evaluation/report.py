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

This module assembles the document; each part has its own module: reading the inputs
(``report_inputs``), accuracy tables and ROC curves (``report_accuracy``), accuracy vs. cost
(``report_cost``), efficiency (``report_bench``), runs and saliency (``report_runs``), the shared
Markdown cells and tables (``report_format``) and the data joined across inputs
(``report_sections``).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from pathlib import Path

from cxrcl.errors import CxrclError
from cxrcl.evaluation.outputs import check_output, write_text
from cxrcl.evaluation.plots import (
    plot_auroc_vs_fraction,
    plot_bench,
    plot_cost_frontier,
    plot_loss_curves,
    plot_roc,
)
from cxrcl.evaluation.report_accuracy import Context, accuracy_sections, group_evals, roc_section
from cxrcl.evaluation.report_bench import bench_sections
from cxrcl.evaluation.report_cost import cost_section
from cxrcl.evaluation.report_inputs import collect_inputs
from cxrcl.evaluation.report_runs import runs_section, saliency_section


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
        panels = accuracy_sections(groups, ctx, lines)
        if panels:
            plot_auroc_vs_fraction(panels, png("auroc"))
            lines += [f"![AUROC vs. label fraction]({png('auroc').name})", ""]
    if found.benches:
        plot_data = bench_sections(found.benches, lines)
        plot_bench(plot_data, png("bench"))
        lines += [f"![Throughput]({png('bench').name})", ""]
    if groups:
        head = len(lines)
        cost = cost_section(groups, found, ctx, lines)
        if cost:
            lines[head:head] = ["## Accuracy vs. cost", ""]
            plot_cost_frontier(cost, png("cost"))
            lines += [f"![Accuracy vs. training cost]({png('cost').name})", ""]
        roc = roc_section(groups, lines)
        if roc:
            plot_roc(roc, png("roc"))
            lines += [f"![ROC curves]({png('roc').name})", ""]
    if found.runs:
        runs_section(found.runs, lines)
        curves = [(r.name, r.steps, r.loss) for r in found.runs if len(r.loss)]
        if curves:
            plot_loss_curves(curves, png("loss"), log_x=loss_log_x)
            lines += [f"![Training loss]({png('loss').name})", ""]
    if found.explains:
        saliency_section(found, out, stem, lines)
    if found.skipped:
        lines += [f"## Skipped ({len(found.skipped)})", ""]
        lines += [f"- `{p}`: {why}" for p, why in found.skipped] + [""]
    text = "\n".join(lines).rstrip() + "\n"
    write_text(out, text)
    return out
