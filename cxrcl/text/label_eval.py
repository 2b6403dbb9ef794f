"""Score the labeller against the Open-i reports' coder-assigned MeSH major terms.

Truth: :func:`cxrcl.data.sources.openi.mesh_to_labels` (the Open-i source's MeSH -> label
mapping, written before this labeller; a finding the MeSH terms do not name counts as absent).
Prediction: :func:`cxrcl.text.labeller.label_report` on findings + impression; by default an
uncertain mention counts as positive (``uncertain="positive"``; the coders index hedged findings
such as "likely atelectasis"), ``"negative"`` scores the other policy.

Honesty rule: the lexicon was tuned on the *dev* half of the reports and the *held-out* half was
scored once it was fixed. The halves are fixed by report id (:func:`split_of`: SHA-1 of the uid,
even first byte = dev), so anyone can recompute them.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter

import numpy as np
import pandas as pd

from cxrcl.text.labeller import NEGATIVE, POSITIVE, UNCERTAIN, find_mentions, label_report
from cxrcl.text.reports import report_body, split_sentences

# evaluated name -> label name (cxrcl.data.labels)
EVAL_FINDINGS: dict[str, str] = {
    "cardiomegaly": "cardiomegaly", "effusion": "effusion", "pneumothorax": "pneumothorax",
    "atelectasis": "atelectasis", "opacity": "lung_opacity", "nodule": "nodule", "edema": "edema",
    "pneumonia": "pneumonia", "normal": "no_finding",
}


def split_of(uid: str) -> str:
    """``"dev"`` or ``"heldout"``: a fixed half of the reports by id."""
    return "dev" if hashlib.sha1(str(uid).encode()).digest()[0] % 2 == 0 else "heldout"


def mesh_truth(mesh_major: pd.Series) -> pd.DataFrame:
    """'|'-joined MeSH major terms -> 0/1 table over :data:`EVAL_FINDINGS` (absent = 0; normal
    is -1 = unknown, left out of its score, where the terms say nothing either way)."""
    from cxrcl.data.sources.openi import mesh_to_labels

    rows = []
    for terms in mesh_major.fillna(""):
        lab = mesh_to_labels(terms)
        row = {name: int(lab.get(label, 0.0) == 1.0) for name, label in EVAL_FINDINGS.items()}
        # normal is unknown (-1, not scored) where the mapping leaves it empty: "No Indexing" or
        # "Technical Quality of Image Unsatisfactory" alone
        if lab.get("no_finding") != lab.get("no_finding"):
            row["normal"] = -1
        rows.append(row)
    return pd.DataFrame(rows, index=mesh_major.index)


def predictions(labels: pd.DataFrame, uncertain: str = "positive") -> pd.DataFrame:
    """Labeller output (1/0/-1/NaN per label) -> 0/1 table over :data:`EVAL_FINDINGS`."""
    hit = {POSITIVE} | ({UNCERTAIN} if uncertain == "positive" else set())
    return pd.DataFrame({name: labels[label].isin(hit).astype(int)
                         for name, label in EVAL_FINDINGS.items()}, index=labels.index)


def scores(truth: pd.DataFrame, pred: pd.DataFrame) -> dict:
    """``{"findings": {name: {precision, recall, f1, support, predicted}}, "macro_f1", "n_reports"}``."""
    out = {}
    for name in EVAL_FINDINGS:
        known = truth[name].to_numpy() >= 0
        t, p = truth[name].to_numpy()[known], pred[name].to_numpy()[known]
        tp, fp, fn = int((t & p).sum()), int((~t.astype(bool) & p.astype(bool)).sum()), int((t & (1 - p)).sum())
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        out[name] = {"precision": round(prec, 4), "recall": round(rec, 4), "f1": round(f1, 4),
                     "support": int(t.sum()), "predicted": int(p.sum())}
    return {"findings": out, "macro_f1": round(float(np.mean([v["f1"] for v in out.values()])), 4),
            "n_reports": int(len(truth))}


def _why(row: dict, label: str, want: float) -> str:
    """The mention (and trigger) behind a labeller's call on one report, or 'not mentioned'."""
    for sentence in split_sentences(report_body(row)):
        for m in find_mentions(sentence):
            if m.finding == label and (want is None or m.status == want):
                tag = {POSITIVE: "positive", NEGATIVE: "negated", UNCERTAIN: "uncertain"}[m.status]
                return f"{tag}: {m.text}" + (f" [{m.trigger}]" if m.trigger else "")
    return "not mentioned"


def disagreements(reports: pd.DataFrame, labels: pd.DataFrame, truth: pd.DataFrame,
                  pred: pd.DataFrame, top: int = 20, examples: int = 3) -> list[dict]:
    """The ``top`` most frequent disagreement kinds: (finding, direction, labeller's reason)."""
    groups: Counter = Counter()
    seen: dict[tuple, list[dict]] = {}
    for i in truth.index:
        row = reports.loc[i].to_dict()
        for name, label in EVAL_FINDINGS.items():
            t, p = truth.at[i, name], pred.at[i, name]
            if t == p or t < 0:
                continue
            direction = "labeller_only" if p else "mesh_only"
            if name == "normal":
                reason = "labeller says abnormal" if t else "labeller finds nothing abnormal"
            else:
                v = labels.at[i, label]
                want = None if (isinstance(v, float) and math.isnan(v)) else float(v)
                reason = _why(row, label, want)
                # group by the trigger/mention shape, not the exact words around it
                reason = reason.split(":")[0] + ":" + " ".join(reason.split(":")[1:]).strip()[:60]
            key = (name, direction, reason)
            groups[key] += 1
            if len(seen.setdefault(key, [])) < examples:
                seen[key].append({"id": row["id"], "mesh": row.get("mesh_major", ""),
                                  "text": report_body(row)[:400]})
    return [{"finding": k[0], "direction": k[1], "labeller": k[2], "count": n, "examples": seen[k]}
            for k, n in groups.most_common(top)]


def evaluate_openi(reports: pd.DataFrame, uncertain: str = "positive", top: int = 20) -> dict:
    """Full evaluation of the labeller on Open-i reports (needs the ``mesh_major`` column)."""
    if "mesh_major" not in reports.columns:
        from cxrcl.errors import CxrclError

        raise CxrclError("label-eval needs Open-i reports with MeSH terms: pass the openi_reports "
                         "folder (ecgen-radiology XMLs)")
    reports = reports.reset_index(drop=True)
    labels = pd.DataFrame([label_report(r) for r in reports.to_dict("records")])
    truth, pred = mesh_truth(reports["mesh_major"]), predictions(labels, uncertain)
    halves = reports["id"].map(split_of)
    result = scores(truth, pred)
    result["uncertain"] = uncertain
    result["splits"] = {h: scores(truth[halves == h], pred[halves == h]) for h in ("dev", "heldout")}
    result["disagreements"] = disagreements(reports, labels, truth, pred, top=top)
    result["disagreements_dev"] = disagreements(reports[halves == "dev"], labels[halves == "dev"],
                                                truth[halves == "dev"], pred[halves == "dev"], top=top)
    return result


__all__ = ["EVAL_FINDINGS", "disagreements", "evaluate_openi", "mesh_truth", "predictions", "scores",
           "split_of"]
