"""Why label-set retrieval on the 4,096-image phantom sits near chance: hubness.

For the seed-0 run of each image-text method (benchmarks/image_text_phantom_long.sh, DATA=phantom64_4k)
and each of the val and test splits, image -> report retrieval as in `cxrcl eval retrieval --match
labels`, plus what the top-1 lists look like:
- how many distinct reports are anyone's top-1, and the share of images whose top-1 is the single
  most retrieved report (a "hub");
- the label set of the top-1 report against the image's (share of no-finding images that get a
  no-finding report; per finding, P(top-1 report has it | image has it) and | image has not);
- Precision@1 by label set with the raw cosine and with each side centred on the mean embedding of
  the TRAIN split (a standard hubness reduction; nothing from val or test enters the means).
It changes no model and no protocol of `cxrcl eval retrieval`; it explains its numbers.

Usage: .venv/bin/python benchmarks/image_text_hubness.py
       -> benchmarks/results/image_text/long_probe/hubness.json (~5 min on 2 CPU cores)
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from cxrcl.data.prepared import PreparedDataset
from cxrcl.evaluation.image_text_model import load_image_text_model
from cxrcl.evaluation.retrieval import group_texts, label_recall_at_k, label_relevance

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".bench-data/image_text/phantom64_4k"
RUNS = {"clip": "clip_sent1_4k_1000", "sista": "sista_sent1_4k_1000", "maco": "maco_sent1_lr3e-4_4k_2000"}
OUT = ROOT / "benchmarks/results/image_text/long_probe/hubness.json"


def embed(model, ds, split):
    rows = ds.indices(split)
    texts = model.report_texts(ds.texts(model.text_column, rows))
    uniq, t_idx = group_texts(texts)
    return model.images(ds.images[rows]), model.texts(uniq), t_idx, ds.labels(ds.label_names, rows)


def p_at_1(sim, labels, t_idx):
    rel = label_relevance(labels, t_idx, sim.shape[1])
    r = label_recall_at_k(sim, rel, [1])
    return r["precision_at_k"]["image_to_report"]["1"], r["precision_chance_at_k"]["image_to_report"]["1"]


def analyse(model, ds) -> dict:
    img_tr, txt_tr, _, _ = embed(model, ds, "train")
    out = {}
    for split in ("val", "test"):
        img, txt, t_idx, lab = embed(model, ds, split)
        lab = np.nan_to_num(lab).astype(int)
        rep_lab = np.zeros((txt.shape[0], lab.shape[1]), int)
        rep_lab[t_idx] = lab
        sim = img @ txt.T
        top = sim.argmax(axis=1)
        counts = Counter(top.tolist())
        normal = lab.sum(axis=1) == 0
        raw, chance = p_at_1(sim, lab, t_idx)
        centred, _ = p_at_1((img - img_tr.mean(0)) @ (txt - txt_tr.mean(0)).T, lab, t_idx)
        out[split] = {
            "n_images": int(len(img)), "n_reports": int(txt.shape[0]),
            "distinct_top1_reports": len(counts), "top_hub_share": counts.most_common(1)[0][1] / len(img),
            "no_finding_images": int(normal.sum()),
            "no_finding_image_gets_no_finding_report": float((rep_lab[top[normal]].sum(axis=1) == 0).mean()),
            "per_finding": {n: {"p_report_has_if_image_has": float(rep_lab[top, j][lab[:, j] == 1].mean()),
                                "p_report_has_if_image_has_not": float(rep_lab[top, j][lab[:, j] == 0].mean())}
                            for j, n in enumerate(ds.label_names)},
            "precision_at_1": {"raw_cosine": raw, "train_mean_centred": centred, "chance": chance},
        }
    return out


def main() -> None:
    missing = [p for p in (DATA, *(ROOT / ".bench-data/it_long" / n for n in RUNS.values())) if not p.exists()]
    if missing:
        raise SystemExit(f"{missing[0]} is missing: make it first with DATA=phantom64_4k "
                         "bash benchmarks/image_text_phantom_long.sh (see its header for each run's SPEC)")
    ds = PreparedDataset.open(DATA)
    result = {"data": str(DATA.relative_to(ROOT)), "split_hash": ds.split_hash, "runs": {}}
    for method, name in RUNS.items():
        run = ROOT / ".bench-data/it_long" / name
        result["runs"][method] = {"run": name, **analyse(load_image_text_model(run), ds)}
        t = result["runs"][method]["test"]
        print(f"{method}: {t['distinct_top1_reports']} distinct top-1 reports of {t['n_reports']}, hub "
              f"{t['top_hub_share']:.2f}; P@1 raw {t['precision_at_1']['raw_cosine']:.3f}, centred "
              f"{t['precision_at_1']['train_mean_centred']:.3f}, chance {t['precision_at_1']['chance']:.3f}")
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
