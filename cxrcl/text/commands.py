"""The ``cxrcl text ...`` commands (called by :mod:`cxrcl.cli`): label, label-eval, pretrain,
similar. Each writes only new files: an existing output is refused, never replaced."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from cxrcl.errors import CxrclError


def new_file(path: str | Path) -> Path:
    """``path`` as a file cxrcl may create: refuses an existing file or a missing folder."""
    path = Path(path)
    if path.exists():
        raise CxrclError(f"{path} already exists: cxrcl never overwrites a file; remove it or pass "
                         "another --out")
    if not path.parent.is_dir():
        raise CxrclError(f"{path.parent} does not exist: create the folder for --out first")
    return path


def label(source: str, out: str, column: str | None = None) -> pd.DataFrame:
    """Label every report of ``source``; write ``id`` + one column per label (1/0/-1/empty)."""
    from cxrcl.text.labeller import LABELS, label_report
    from cxrcl.text.reports import read_reports

    out_path = new_file(out)
    reports = read_reports(source, column=column)
    rows = [label_report(r) for r in reports.to_dict("records")]
    table = pd.concat([reports[["id"]], pd.DataFrame(rows, columns=list(LABELS))], axis=1)
    table.to_csv(out_path, index=False)
    return table


def label_eval(source: str, out: str, uncertain: str = "negative", top: int = 20) -> dict:
    """Score the labeller against the MeSH terms of an Open-i folder; write the JSON."""
    from cxrcl.text.label_eval import evaluate_openi
    from cxrcl.text.reports import read_reports

    out_path = new_file(out)
    result = evaluate_openi(read_reports(source), uncertain=uncertain, top=top)
    out_path.write_text(json.dumps(result, indent=1))
    return result


def pretrain(reports: str, out: str, **settings) -> dict:
    """Train the BPE tokenizer and the scratch MLM encoder (:mod:`cxrcl.text.pretrain`)."""
    from cxrcl.text.pretrain import pretrain_text

    return pretrain_text(reports, out, progress=True, **settings)


def similar(reports: str, query: str, method: str = "minilm", k: int = 5,
            column: str | None = None) -> pd.DataFrame:
    """The ``k`` reports of ``reports`` nearest to ``query`` (:mod:`cxrcl.text.similarity`)."""
    from cxrcl.text.reports import read_reports
    from cxrcl.text.similarity import nearest

    if not query.strip():
        raise CxrclError("--query is empty: pass the report text to compare, e.g. --query \"no acute "
                         "cardiopulmonary abnormality\"")
    return nearest(query, read_reports(reports, column=column), method=method, k=k)


__all__ = ["label", "label_eval", "new_file", "pretrain", "similar"]
