"""Report-report similarity (the input of SISTA's report-similarity weighting).

Two kinds, our choices:

- ``encoder:NAME``: cosine similarity of sentence embeddings from a text encoder
  (:func:`cxrcl.text.encoders.build_text_encoder`; ``bpe:RUN``, ``minilm`` or ``hf:...``).
- ``labels``: cosine similarity of label vectors from the labeller
  (:func:`cxrcl.text.labeller.label_text`): one entry per finding of the lexicon plus
  ``no_finding``, 1 for positive, 0.5 for uncertain, 0 for negative or not mentioned. Two reports
  with no positive finding at all are both "no finding", so they still match each other.

The report text used is findings + impression (:func:`cxrcl.text.reports.report_body`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from cxrcl.errors import CxrclError


def label_vectors(texts: list[str]) -> np.ndarray:
    """Label vectors ``[N, L]`` (see the module docstring)."""
    from cxrcl.text.labeller import LABELS, UNCERTAIN, label_text

    out = np.zeros((len(texts), len(LABELS)), dtype=np.float32)
    for i, text in enumerate(texts):
        lab = label_text(text)
        for j, name in enumerate(LABELS):
            v = lab[name]
            out[i, j] = 1.0 if v == 1.0 else 0.5 if v == UNCERTAIN else 0.0
    return out


def embed_texts(texts: list[str], method: str, batch_size: int = 64) -> np.ndarray:
    """L2-normalised embeddings ``[N, D]`` of ``texts`` for ``method`` (``labels`` or
    ``encoder:NAME``; a bare encoder name also works)."""
    if method == "labels":
        vecs = torch.from_numpy(label_vectors(texts))
    else:
        from cxrcl.text.encoders import build_text_encoder

        name = method[len("encoder:"):] if method.startswith("encoder:") else method
        vecs = build_text_encoder(name).embed(list(texts), batch_size=batch_size)
    return torch.nn.functional.normalize(vecs.float(), dim=-1).numpy()


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity ``[len(a), len(b)]`` of two sets of L2-normalised rows."""
    return a @ b.T


def nearest(query: str, reports: pd.DataFrame, method: str = "minilm", k: int = 5,
            embeddings: np.ndarray | None = None) -> pd.DataFrame:
    """The ``k`` reports nearest to ``query``: ``rank, similarity, id, text`` (duplicate report
    texts are shown once). ``embeddings`` (of ``reports``, from :func:`embed_texts`) are reused
    when given."""
    from cxrcl.text.reports import report_body

    if k < 1:
        raise CxrclError("--k must be at least 1")
    bodies = [report_body(r) for r in reports.to_dict("records")]
    if embeddings is None:
        embeddings = embed_texts(bodies, method)
    q = embed_texts([query], method)
    sims = cosine_matrix(q, embeddings)[0]
    rows, seen = [], set()
    for i in np.argsort(-sims, kind="stable"):
        if bodies[i] in seen:
            continue
        seen.add(bodies[i])
        rows.append({"rank": len(rows) + 1, "similarity": round(float(sims[i]), 4),
                     "id": str(reports["id"].iloc[i]), "text": bodies[i]})
        if len(rows) == k:
            break
    return pd.DataFrame(rows)


__all__ = ["cosine_matrix", "embed_texts", "label_vectors", "nearest"]
