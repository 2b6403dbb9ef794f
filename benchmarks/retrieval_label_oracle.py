"""How high can own-report retrieval go on the phantom for an encoder that reads only the findings?

The templated phantom reports differ in wording (examination, indication, phrasing) that no image
shows, so an image's own report is one of the many that state its findings. This script scores a
"label-set oracle": image and report embeddings that encode exactly the label set (the five
findings, present or absent) and nothing else. Its own-report Recall@K (both directions,
`cxrcl.evaluation.retrieval.recall_at_k`, chance beside) is the ceiling of any encoder that sees
the findings perfectly but not the zones and sizes the reports name. A second oracle encodes only
effusion and cardiomegaly, the two findings the 64 px encoders of the long runs learn (zero-shot
AUROC 0.7-1.0 there; nodule, consolidation and pneumothorax stay near 0.5). Ties between reports of the
same label set are broken at random (mean over DRAWS draws), i.e. the expected Recall@K of such a
model; the protocol of `cxrcl eval retrieval` counts ties against the model instead.

Usage: .venv/bin/python benchmarks/retrieval_label_oracle.py [PREPARED]
(default .bench-data/image_text/phantom64_4k, made by benchmarks/image_text_phantom_long.sh)
-> benchmarks/results/image_text/long_probe/label_oracle_retrieval.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from cxrcl.data.prepared import PreparedDataset
from cxrcl.evaluation.retrieval import group_texts, recall_at_k
from cxrcl.evaluation.zeroshot import evaluation_rows

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "image_text" / "long_probe" / "label_oracle_retrieval.json"
DRAWS = 50
KS = (1, 5, 10)
SEEN = ["effusion", "cardiomegaly"]  # the findings the long runs' 64 px ViT encoders learn


def oracle(ds: PreparedDataset, split: str, names: list[str]) -> dict:
    rows, _ = evaluation_rows(ds, split, None)
    texts = ds.texts("report", rows)
    uniq, text_of_image = group_texts(texts)
    labels = np.nan_to_num(ds.labels(names, rows), nan=-1.0)
    _, key = np.unique(labels, axis=0, return_inverse=True)
    key = key.reshape(-1)
    text_key = np.zeros(len(uniq), np.int64)
    text_key[text_of_image] = key
    same = (key[:, None] == text_key[None, :]).astype(np.float64)
    rng = np.random.default_rng(0)
    draws = [recall_at_k(same + 1e-6 * rng.random(same.shape), text_of_image, KS) for _ in range(DRAWS)]
    mean = {d: {str(k): float(np.mean([r["recall_at_k"][d][str(k)] for r in draws])) for k in KS}
            for d in draws[0]["recall_at_k"]}
    return {"split": split, "labels_seen": names, "n_images": int(len(rows)), "n_reports": len(uniq),
            "n_label_sets": int(len(np.unique(key))), "largest_label_set": int(np.bincount(key).max()),
            "recall_at_k": mean, "chance_at_k": draws[0]["chance_at_k"]}


def main() -> None:
    data = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / ".bench-data" / "image_text" / "phantom64_4k")
    ds = PreparedDataset.open(data)
    out = {"what": "own-report Recall@K of embeddings that encode exactly the label set (ties at random)",
           "data": {"path": data, "content_hash": ds.info.get("content_hash"), "labels": ds.label_names},
           "draws": DRAWS,
           "splits": [oracle(ds, s, names) for names in (ds.label_names, SEEN) for s in ("val", "test")],
           "command": "python benchmarks/retrieval_label_oracle.py " + " ".join(sys.argv[1:])}
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    for s in out["splits"]:
        print(s["split"], s["labels_seen"], s["n_images"], {d: s["recall_at_k"][d] for d in s["recall_at_k"]})
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
