"""Image-report retrieval (``cxrcl eval retrieval``): Recall@K both ways, with chance beside it.

Rows: the ``split`` (default test) images whose report text is non-empty, the text taken as the
model read it in pre-training (its ``text_column``; findings + impression when the report has
them). Similarity = cosine of the unit image and text embeddings.

Our choices (the usual definition assumes one report per image and distinct reports):

- Identical report texts (after stripping whitespace) are one gallery item: in the clinical
  notes of covid_chestxray several images of a patient share one note, and the templated phantom
  reports can repeat. Image -> report ranks the M distinct texts; the hit is the image's own text.
  Report -> image queries each distinct text against the N images; a hit is any image that
  carries it.
- Ties count against the model: the rank of the correct item is the number of wrong items scoring
  at least as high (a constant model gets Recall@K = 0, not chance).
- Chance: image -> report K / M; report -> image, for a text shared by m of N images,
  1 - C(N - m, K) / C(N, K) (at least one of its images among K drawn at random), averaged over
  queries. Both are capped at 1.

``match="labels"`` (``--match labels``) adds category-level retrieval, the protocol of
GLoRIA/MGCA's CheXpert 5x200 image-to-text retrieval: an item is relevant when its label set (the
data set's label columns, exactly equal; unknown = its own value) equals the query's; for a text
shared by several images, any of them. It reports Precision@K (mean share of relevant items in the
top K; chance = the share of relevant items in the gallery) and Recall@K as above (at least one
relevant item in the top K; chance by the same formula), ties against the model. It asks less than
instance retrieval: the templated phantom reports name zone and size that a 64 px encoder cannot
resolve, so an image's own report is one of many that describe its findings.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cxrcl.data.prepared import PreparedDataset
from cxrcl.errors import CxrclError
from cxrcl.evaluation.zeroshot import evaluation_rows

DIRECTIONS = ("image_to_report", "report_to_image")
REPORT_EMBEDDINGS = ("whole", "sentences")  # --report-embedding (ImageTextModel.report_embeddings)


def check_report_embedding(unit: str) -> None:
    """One ``CxrclError`` line for a ``--report-embedding`` that is not one of REPORT_EMBEDDINGS."""
    if unit not in REPORT_EMBEDDINGS:
        raise CxrclError(f"--report-embedding {unit!r}: use whole (one pass per report) or sentences "
                         "(the mean of its sentence embeddings)")


def parse_ks(text: str | Sequence[int]) -> list[int]:
    try:
        ks = [int(v) for v in (text.split(",") if isinstance(text, str) else text) if str(v).strip()]
    except ValueError:
        raise CxrclError(f"--k {text!r} is not a comma list of whole numbers, e.g. 1,5,10") from None
    if not ks or min(ks) < 1:
        raise CxrclError(f"--k {text!r}: give whole numbers >= 1, e.g. 1,5,10")
    return sorted(set(ks))


def group_texts(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(distinct texts in first-seen order, index of each row's text among them)."""
    uniq: dict[str, int] = {}
    idx = np.array([uniq.setdefault(t.strip(), len(uniq)) for t in texts], dtype=np.int64)
    return list(uniq), idx


def recall_at_k(sim: np.ndarray, text_of_image: np.ndarray, ks: Sequence[int]) -> dict:
    """Recall@K both ways from ``sim`` [N images, M distinct texts] and each image's text index.

    Returns ``{"recall_at_k": {dir: {K: r}}, "chance_at_k": {dir: {K: c}}, "median_rank": {dir: r}}``
    with 1-based median ranks (pessimistic about ties).
    """
    sim = np.asarray(sim, dtype=np.float64)
    n, m = sim.shape
    t = np.asarray(text_of_image, dtype=np.int64)
    if len(t) != n or (n and (t.min() < 0 or t.max() >= m)):
        raise ValueError("text_of_image must give every image a text index in [0, M)")
    # image -> report: wrong texts scoring >= the image's own text
    own = sim[np.arange(n), t]
    rank_i2r = (sim >= own[:, None]).sum(axis=1) - 1
    # report -> image: for text j, the best-scoring image carrying it vs the other images
    positives = np.zeros((n, m), bool)
    positives[np.arange(n), t] = True
    best_pos = np.where(positives, sim, -np.inf).max(axis=0)  # [M]
    rank_r2i = (np.where(positives, -np.inf, sim) >= best_pos[None, :]).sum(axis=0)
    m_per_text = positives.sum(axis=0)
    out = {"recall_at_k": {d: {} for d in DIRECTIONS}, "chance_at_k": {d: {} for d in DIRECTIONS},
           "median_rank": {"image_to_report": float(np.median(rank_i2r) + 1),
                           "report_to_image": float(np.median(rank_r2i) + 1)}}
    for k in ks:
        out["recall_at_k"]["image_to_report"][str(k)] = float((rank_i2r < k).mean())
        out["recall_at_k"]["report_to_image"][str(k)] = float((rank_r2i < k).mean())
        out["chance_at_k"]["image_to_report"][str(k)] = float(min(1.0, k / m))
        out["chance_at_k"]["report_to_image"][str(k)] = float(np.mean([chance_any(n, int(c), k)
                                                                       for c in m_per_text]))
    return out


def chance_any(n: int, m: int, k: int) -> float:
    """P(at least one of m marked items among k drawn without replacement from n)."""
    if k >= n or m >= n:
        return 1.0
    p_none = 1.0
    for i in range(k):
        p_none *= (n - m - i) / (n - i)
        if p_none <= 0:
            return 1.0
    return 1.0 - p_none


def label_relevance(labels: np.ndarray, text_of_image: np.ndarray, m: int) -> np.ndarray:
    """bool [N images, M texts]: text j is relevant to image i when an image carrying j has i's label set."""
    lab = np.nan_to_num(np.asarray(labels, dtype=np.float64), nan=-1.0)
    _, key = np.unique(lab, axis=0, return_inverse=True)
    key = key.reshape(-1)
    onehot = np.eye(int(key.max()) + 1, dtype=np.int64)[key]  # [N, U]
    carries = np.zeros((len(key), m), np.int64)
    carries[np.arange(len(key)), text_of_image] = 1
    text_keys = (carries.T @ onehot) > 0  # [M, U]
    return (onehot @ text_keys.T.astype(np.int64)) > 0


def _ranked_hits(sim: np.ndarray, relevant: np.ndarray, k_max: int) -> np.ndarray:
    """bool [Q, k_max]: is the item at each of the top k_max places relevant (ties: wrong items first)."""
    order = np.lexsort((relevant, -sim), axis=1)[:, :k_max]
    return np.take_along_axis(relevant, order, axis=1)


def label_recall_at_k(sim: np.ndarray, relevant: np.ndarray, ks: Sequence[int]) -> dict:
    """Category-level Precision@K and Recall@K both ways from ``sim`` and ``relevant`` [N, M]."""
    sim = np.asarray(sim, dtype=np.float64)
    relevant = np.asarray(relevant, bool)
    out = {d: {} for d in ("precision_at_k", "precision_chance_at_k", "recall_at_k", "chance_at_k")}
    for d, s, r in (("image_to_report", sim, relevant), ("report_to_image", sim.T, relevant.T)):
        hits = _ranked_hits(s, r, min(max(ks), s.shape[1]))
        n_rel, g = r.sum(axis=1), s.shape[1]
        for v in out.values():
            v[d] = {}
        for k in ks:
            top = hits[:, :k]
            out["precision_at_k"][d][str(k)] = float((top.sum(axis=1) / k).mean())
            out["precision_chance_at_k"][d][str(k)] = float((n_rel / g).mean())
            out["recall_at_k"][d][str(k)] = float(top.any(axis=1).mean())
            out["chance_at_k"][d][str(k)] = float(np.mean([chance_any(g, int(c), k) for c in n_rel]))
    return out


def retrieval(model, ds: PreparedDataset, text_column: str | None = None, split: str = "test",
              ks: Sequence[int] = (1, 5, 10), exclude_nonempty: str | None = None,
              match: str = "text", report_embedding: str = "whole") -> dict:
    """The ``results`` entry (and protocol details) of a retrieval evaluation.

    ``match``: ``text`` (an image's own report) or ``labels`` (any report of the same label set).
    ``report_embedding``: ``whole`` (one pass per report) or ``sentences`` (the mean of its
    sentence embeddings in the run's training pool; see ``ImageTextModel.report_embeddings``)."""
    if match not in ("text", "labels"):
        raise CxrclError(f"--match {match!r}: use text (an image's own report) or labels (same label set)")
    check_report_embedding(report_embedding)  # before any image is encoded
    if match == "labels" and not ds.label_names:
        raise CxrclError(f"{ds.root} has no label columns: --match labels needs them; use --match text")
    col = text_column or getattr(model, "text_column", "report")
    if col not in ds.meta.columns:
        cols = ds.info.get("text_columns") or []
        raise CxrclError(f"{ds.root} has no text column {col!r} (text columns: {', '.join(cols) or 'none'}): "
                         "retrieval needs image-report pairs; pass --text-column or a data set with reports")
    rows, n_excluded = evaluation_rows(ds, split, exclude_nonempty)
    texts = ds.texts(col, rows)
    if hasattr(model, "report_texts"):
        texts = model.report_texts(texts)
    keep = np.array([bool(t.strip()) for t in texts], bool)
    rows, texts = rows[keep], [t for t, k in zip(texts, keep, strict=True) if k]
    if len(rows) < 2:
        raise CxrclError(f"{ds.root} has {len(rows)} {split} images with a non-empty {col!r}: "
                         "retrieval needs at least 2")
    uniq, t_idx = group_texts(texts)
    img = model.images(ds.images[rows])
    if hasattr(model, "report_embeddings"):
        txt = model.report_embeddings(uniq, report_embedding)
    elif report_embedding == "whole":
        txt = model.texts(uniq)
    else:
        raise CxrclError("--report-embedding sentences needs a run loaded by cxrcl (ImageTextModel)")
    sim = img @ txt.T
    if match == "labels":
        res = label_recall_at_k(sim, label_relevance(ds.labels(ds.label_names, rows), t_idx, len(uniq)),
                                parse_ks(ks))
    else:
        res = recall_at_k(sim, t_idx, parse_ks(ks))
    result = {"fraction": 0.0, "seed": 0, "n_train": 0, "split": split, "n_images": int(len(rows)),
              "n_reports": len(uniq), "n_excluded": n_excluded,
              "n_without_text": int((~keep).sum()), "auroc": None, "auroc_per_label": {}, **res}
    protocol = {"text_column": col, "similarity": "cosine of unit embeddings",
                "duplicates": "identical texts are one report; report->image hits any image carrying it",
                "ties": "count against the model", "exclude_nonempty": exclude_nonempty, "match": match,
                "report_embedding": report_embedding}
    if report_embedding == "sentences":
        protocol["sentence_pool"] = getattr(model, "sentence_pool", "all")
    if match == "labels":
        protocol["match_labels"] = ds.label_names
    return {"result": result, "protocol": protocol, "feature_dim": int(img.shape[1])}
