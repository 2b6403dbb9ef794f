"""The three text encoders on the 3,955 Open-i reports: the scratch BPE encoder's pre-training,
nearest-report examples side by side, and how often a report's nearest neighbour has the same
MeSH findings.

1. ``cxrcl text pretrain`` on the Open-i reports into runs/text-bpe-openi (skipped when the run
   exists): byte-level BPE vocabulary + a 3-layer width-128 transformer, MLM, 300 steps.
2. Embeds every report (findings + impression) with ``bpe:runs/text-bpe-openi``, ``minilm`` and
   ``labels`` (labeller vectors), with the time each took.
3. Nearest reports (duplicate texts shown once) for a few queries, per method.
4. Nearest-neighbour agreement: for 600 reports drawn with seed 0 (distinct texts), the nearest
   *other* report with a different text; the share whose MeSH vector over the nine evaluated
   findings (cxrcl.text.label_eval.mesh_truth; normal unknown counted as 0) equals the query's,
   and the mean Jaccard of their MeSH descriptor sets. A random neighbour is the floor.

    flock /tmp/cxrcl-heavy.lock .venv/bin/python benchmarks/text_encoders.py
Writes benchmarks/results/text_encoders.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from cxrcl.text.encoders import build_text_encoder
from cxrcl.text.label_eval import EVAL_FINDINGS, mesh_truth
from cxrcl.text.pretrain import pretrain_text
from cxrcl.text.reports import read_reports, report_body
from cxrcl.text.similarity import cosine_matrix, embed_texts

ROOT = Path(__file__).resolve().parents[1]
OPENI = ROOT.parent / "shared" / "data" / "openi_reports"
RUN = ROOT / "runs" / "text-bpe-openi"
OUT = ROOT / "benchmarks" / "results" / "text_encoders.json"
QUERIES = [
    "No acute cardiopulmonary abnormality.",
    "Normal chest.",
    "Large right pleural effusion.",
    "Cardiomegaly with pulmonary edema.",
    "Right lower lobe pneumonia.",
    "Small left apical pneumothorax.",
    "Cannot exclude pneumonia.",
]
N_PROBE = 600


def descriptors(mesh: str) -> frozenset:
    return frozenset(t.split("/")[0].strip().lower() for t in str(mesh).split("|") if t.strip())


def main() -> None:
    if not (RUN / "text_pretrain.json").is_file():
        pretrain_text(OPENI, RUN, steps=300, progress=True)
    record = json.loads((RUN / "text_pretrain.json").read_text())
    reports = read_reports(OPENI).reset_index(drop=True)
    bodies = [report_body(r) for r in reports.to_dict("records")]
    truth = mesh_truth(reports["mesh_major"]).clip(lower=0).to_numpy()
    sets = [descriptors(m) for m in reports["mesh_major"]]

    tok = build_text_encoder(f"bpe:{RUN}").tokenizer
    vocab = tok.get_vocab()
    words = ["cardiomediastinal", "pneumothorax", "atelectasis", "XXXX", "effusion", "consolidation"]
    result = {
        "pretrain": record,
        "bpe_vocabulary": {
            "size": len(vocab),
            "single_token_words": {w: tok.tokenize(" " + w) for w in words},
            "example": tok.tokenize("No acute cardiopulmonary abnormality. Stable left XXXX."),
        },
        "methods": {}, "queries": QUERIES,
    }
    rng = np.random.default_rng(0)
    first_of = {}
    for i, b in enumerate(bodies):
        first_of.setdefault(b, i)
    distinct = sorted(first_of.values())
    probe = rng.choice(distinct, size=N_PROBE, replace=False)
    body_arr = np.array(bodies, dtype=object)

    def agreement(neigh: np.ndarray) -> dict:
        same = float(np.mean([(truth[q] == truth[n]).all() for q, n in zip(probe, neigh, strict=True)]))
        jac = float(np.mean([len(sets[q] & sets[n]) / max(1, len(sets[q] | sets[n]))
                             for q, n in zip(probe, neigh, strict=True)]))
        return {"same_mesh_findings": round(same, 4), "mesh_jaccard": round(jac, 4)}

    random_neigh = np.array([rng.choice(np.flatnonzero(body_arr != bodies[q])) for q in probe])
    result["random_neighbour"] = agreement(random_neigh)
    for method in (f"encoder:bpe:{RUN}", "encoder:minilm", "labels"):
        t0 = time.perf_counter()
        emb = embed_texts(bodies, method)
        seconds = time.perf_counter() - t0
        sims = cosine_matrix(emb[probe], emb)
        sims[:, :] = np.where(body_arr[None, :] == body_arr[probe][:, None], -np.inf, sims)
        neigh = sims.argmax(1)
        q_emb = embed_texts(QUERIES, method)
        examples = []
        for qi, query in enumerate(QUERIES):
            s = cosine_matrix(q_emb[qi:qi + 1], emb)[0]
            top, seen = [], set()
            for j in np.argsort(-s, kind="stable"):
                if bodies[j] in seen:
                    continue
                seen.add(bodies[j])
                top.append({"id": reports["id"][j], "similarity": round(float(s[j]), 4),
                            "text": bodies[j][:300]})
                if len(top) == 3:
                    break
            examples.append({"query": query, "nearest": top})
        key = method.replace(f"bpe:{RUN}", "bpe:runs/text-bpe-openi")
        result["methods"][key] = {"dim": int(emb.shape[1]), "seconds_embed_all": round(seconds, 1),
                                  "nn_agreement": agreement(neigh), "examples": examples}
        print(key, result["methods"][key]["nn_agreement"], f"{seconds:.0f} s", flush=True)
    result["evaluated_findings"] = list(EVAL_FINDINGS)
    OUT.write_text(json.dumps(result, indent=1))
    print("random", result["random_neighbour"], "->", OUT)


if __name__ == "__main__":
    main()
