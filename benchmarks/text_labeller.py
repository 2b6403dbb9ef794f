"""The labeller on the 3,955 real Open-i reports against their MeSH major terms.

Writes benchmarks/results/text_labeller.json:

- ``ours``: ``cxrcl text label-eval`` output (uncertain mention -> negative, the policy chosen on
  the dev half): per-finding precision / recall / F1 / support on all reports, on the dev half
  (lexicon tuned there) and on the held-out half, and the 20 most frequent disagreements.
- ``ours_uncertain_positive``: the same labeller with uncertain -> positive (the policy not chosen).
- ``medspacy_context`` / ``negspacy_negex``: medspaCy's ConText / negspacy's NegEx scope on our
  lexicon (see benchmarks/text_medspacy_context.py, which must have written
  benchmarks/results/text_medspacy_labels.json / text_negspacy_labels.json first; skipped with a
  note otherwise).

    .venv/bin/python benchmarks/text_labeller.py [--dump-sentences PATH]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from cxrcl.text.label_eval import (
    EVAL_FINDINGS,
    evaluate_openi,
    mesh_truth,
    predictions,
    scores,
    split_of,
)
from cxrcl.text.labeller import LABELS
from cxrcl.text.reports import read_reports, report_body, split_sentences

ROOT = Path(__file__).resolve().parents[1]
OPENI = ROOT.parent / "shared" / "data" / "openi_reports"
RESULTS = ROOT / "benchmarks" / "results"


def summary(truth, pred, halves) -> dict:
    out = {"all": scores(truth, pred)}
    for h in ("dev", "heldout"):
        out[h] = scores(truth[halves == h], pred[halves == h])
    return out


def phantom_check(n: int = 2048) -> dict:
    """The labeller on the phantom's templated reports (``cxrcl data phantom``, seed 0) against
    the phantom's own labels: precision / recall / F1 per finding (positive = labeller 1)."""
    import tempfile

    from cxrcl.cli import main as cli
    from cxrcl.text.labeller import label_text

    with tempfile.TemporaryDirectory() as tmp:
        assert cli(["data", "phantom", f"{tmp}/ph", "--n", str(n), "--size", "32"]) == 0
        meta = pd.read_csv(f"{tmp}/ph/meta.csv")
    labels = pd.DataFrame([label_text(r) for r in meta["report"]])
    names = [c[len("label_"):] for c in meta.columns if c.startswith("label_")]
    truth = pd.DataFrame({f: meta[f"label_{f}"].astype(int) for f in names})
    pred = pd.DataFrame({f: (labels[f] == 1).astype(int) for f in names})
    out = {}
    for f in names:
        t, p = truth[f].to_numpy(), pred[f].to_numpy()
        tp, fp, fn = int((t & p).sum()), int(((1 - t) & p).sum()), int((t & (1 - p)).sum())
        prec, rec = tp / max(1, tp + fp), tp / max(1, tp + fn)
        out[f] = {"precision": round(prec, 4), "recall": round(rec, 4), "support": int(t.sum()),
                  "f1": round(2 * prec * rec / (prec + rec), 4) if prec + rec else 0.0}
    return {"n_reports": n, "findings": out}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dump-sentences", help="write {id: [sentences]} for the medspaCy script and stop")
    args = ap.parse_args()
    reports = read_reports(OPENI).reset_index(drop=True)
    if args.dump_sentences:
        Path(args.dump_sentences).write_text(json.dumps(
            {r["id"]: split_sentences(report_body(r)) for r in reports.to_dict("records")}))
        print(f"wrote the sentences of {len(reports)} reports to {args.dump_sentences}")
        return
    t0 = time.perf_counter()
    ours = evaluate_openi(reports, uncertain="negative")
    seconds = time.perf_counter() - t0
    other = evaluate_openi(reports, uncertain="positive", top=0)
    result = {
        "what": "labeller vs Open-i MeSH major terms (cxrcl.data.sources.openi.mesh_to_labels); "
                "F1 per finding; dev = lexicon tuned there, heldout = scored once after",
        "n_reports": len(reports), "seconds_ours_incl_disagreements": round(seconds, 2),
        "ours": ours,
        "ours_uncertain_positive": {k: other[k] for k in ("findings", "macro_f1", "splits")},
    }
    truth, halves = mesh_truth(reports["mesh_major"]), reports["id"].map(split_of)
    for key, name in (("medspacy_context", "text_medspacy_labels.json"),
                      ("negspacy_negex", "text_negspacy_labels.json")):
        path = RESULTS / name
        if not path.is_file():
            result[key] = f"not run: {path} missing (see benchmarks/text_medspacy_context.py)"
            continue
        data = json.loads(path.read_text())
        labels = pd.DataFrame([data["labels"][i] for i in reports["id"]]).astype(float)
        labels = labels.reindex(columns=[*LABELS], fill_value=float("nan"))
        result[key] = {
            "versions": {k: v for k, v in data.items() if k not in ("labels", "seconds")},
            "seconds": data["seconds"],
            **{f"uncertain_{p}": summary(truth, predictions(labels, p), halves)
               for p in ("negative", "positive")},
        }
    result["phantom"] = phantom_check()
    out = RESULTS / "text_labeller.json"
    out.write_text(json.dumps(result, indent=1))
    for name in EVAL_FINDINGS:
        v = ours["findings"][name]
        print(f"{name:14s} F1 all {v['f1']:.3f}  dev {ours['splits']['dev']['findings'][name]['f1']:.3f}"
              f"  held-out {ours['splits']['heldout']['findings'][name]['f1']:.3f}  n={v['support']}")
    print(f"macro F1 all {ours['macro_f1']:.3f} dev {ours['splits']['dev']['macro_f1']:.3f} "
          f"held-out {ours['splits']['heldout']['macro_f1']:.3f} -> {out}")


if __name__ == "__main__":
    main()
