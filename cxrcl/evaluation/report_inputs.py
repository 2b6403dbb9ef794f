"""Reading the inputs of ``cxrcl report``: eval and bench JSON, run directories and ``cxrcl
explain`` folders, classified (walking directories one level) with errors naming the path."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cxrcl.errors import CxrclError
from cxrcl.evaluation.report_sections import is_explain_dir, load_explain
from cxrcl.evaluation.results import summarize


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

    def add_any(p: Path, explicit: bool) -> bool:
        """Add a JSON file, a run or an explain folder; False for anything else."""
        if p.is_file():
            add_file(p, explicit=explicit)
        elif _is_run_dir(p):
            add_run(p)
        elif is_explain_dir(p):
            add_explain(p)
        else:
            return False
        return True

    for item in inputs:
        p = Path(item)
        if not p.exists():
            raise CxrclError(f"{p} does not exist: give eval/bench JSON files, run directories or "
                             "`cxrcl explain` folders")
        if not add_any(p, explicit=True):
            before = (len(found.evals), len(found.benches), len(found.runs), len(found.explains))
            for child in sorted(p.iterdir()):
                if child.name.startswith("."):
                    continue
                if not add_any(child, explicit=False) and child.is_dir():
                    found.skipped.append((child, "directory without summary.json or metrics.jsonl"))
            if (len(found.evals), len(found.benches), len(found.runs), len(found.explains)) == before:
                raise CxrclError(f"{p} holds no eval or bench JSON and no run directory "
                                 "(summary.json / metrics.jsonl), neither directly nor one level down")
    return found
