"""The run directory and ``cxrcl explain`` sections of ``cxrcl report``: the pre-training runs
table with each run's reconstructed command, and the saliency table with its overlays."""

from __future__ import annotations

import shlex
from pathlib import Path

from cxrcl.evaluation.report_format import DASH, fmt_num, md_table
from cxrcl.evaluation.report_inputs import Inputs, Run
from cxrcl.evaluation.report_sections import copy_overlay


def runs_section(runs: list[Run], lines: list[str]) -> None:
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
                     fmt_num(s.get("steps", int(r.steps[-1]) if len(r.steps) else None)),
                     fmt_num(wall), fmt_num(ips), fmt_num(final), str(len(r.loss))])
    lines += md_table(["run", "method", "backbone", "steps", "wall s", "img/s", "final loss",
                     "logged points"], rows) + [""]
    bad = [(r.path, r.bad_lines) for r in runs if r.bad_lines]
    for p, n in bad:
        lines += [f"- `{p}/metrics.jsonl`: {n} line(s) without a numeric step and loss were skipped."]
    if bad:
        lines += [""]


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


def _interval(ci) -> str:
    """[lo, hi] from explain.json as text; a dash when it is missing or malformed (older files)."""
    try:
        lo, hi = (float(v) for v in ci)
    except (TypeError, ValueError):
        return DASH
    return f"[{lo:.3f}, {hi:.3f}]"


def saliency_section(found: Inputs, out: Path, stem: str, lines: list[str]) -> None:
    lines += ["## Saliency", "", "Made by:", "", "```"]
    lines += [f"cxrcl explain --run {shlex.quote(str(x.get('run', '?')))} --data "
              f"{shlex.quote(str(x.get('data', '?')))} --out {shlex.quote(str(p))} "
              f"--split {x.get('split', 'test')}" + (f" --n {x['n_overlays']}" if x.get("n_overlays") else "")
              for p, x in found.explains] + ["```", ""]
    rows = []
    for p, x in found.explains:
        rows.append([f"`{p}`", str(x.get("method", DASH)), str(x.get("split", DASH)),
                     fmt_num(x.get("n_overlays")), fmt_num(x.get("lesion_area_kept")),
                     fmt_num(x.get("random_area_kept")), fmt_num(x.get("lesion_minus_random")),
                     _interval(x.get("lesion_minus_random_ci95"))])
    lines += ["Share of the lesion mask inside the tokens the method keeps, against random keep "
              "sets of the same size (95 % paired bootstrap interval over the images, as explain.json):", ""]
    lines += md_table(["explain output", "method", "split", "overlays", "lesion area kept",
                     "random area kept", "lesion − random", "95 % interval"], rows) + [""]
    for k, (p, x) in enumerate(found.explains):
        dest = copy_overlay(p, out.with_name(f"{stem}_saliency_{k}.png"))
        if dest is not None:
            lines += [f"![Saliency overlays: {x.get('method', p.name)}]({dest.name})", ""]
