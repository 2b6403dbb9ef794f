"""Zero-shot classification (``cxrcl eval zeroshot``): score images against text prompts, no labels.

Prompts come from a YAML file (default ``configs/prompts/default.yaml``; see its header): per label
a list of phrases ``{c}`` and positive / negative templates. Two scorings:

- ``posneg`` (default; MaCo's scheme, SZUHvern/MaCo): positive prompts ("There is {c}.") and
  negative prompts ("the lung is clear.", "There is no {c}.", "no {c}.", "no evidence of {c}.")
  are embedded, averaged per class (prompt ensembling) and re-normalised; the probability is the
  softmax over (positive, negative) of ``logit_scale * cosine``. Our choice: AUROC is computed on
  the logit difference ``logit_scale * (cos_pos - cos_neg)``, which ranks images exactly as that
  softmax does but does not saturate to ties at 1.0 in float32.
- ``cosine``: the cosine between the image and the averaged positive prompts (CLIP's ensembling).

``ensemble="first"`` uses only the first phrase and the first template of each side (no
ensembling). AUROC per label on the rows of ``split`` whose label is known; the macro mean is
``auroc``; a percentile bootstrap over images (1,000 resamples, seed 0) gives ``auroc_ci95`` (our
addition: test sets here are small). The JSON also says which prompts occur verbatim as a sentence
of the run's *training* texts (``prompts_seen_in_training``), so a claim of "prompts never seen
as training text" can be checked.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from sklearn.metrics import roc_auc_score

from cxrcl.data.prepared import PreparedDataset
from cxrcl.errors import CxrclError

DEFAULT_PROMPTS = Path(__file__).resolve().parents[2] / "configs" / "prompts" / "default.yaml"
SCORINGS = ("posneg", "cosine")
ENSEMBLES = ("mean", "first")
N_BOOTSTRAP = 1000


@dataclass(frozen=True)
class LabelPrompts:
    phrases: tuple[str, ...]
    positive: tuple[str, ...]
    negative: tuple[str, ...]


@dataclass
class PromptSet:
    path: str
    labels: dict[str, LabelPrompts] = field(default_factory=dict)

    def for_label(self, name: str) -> LabelPrompts:
        if name not in self.labels:
            raise CxrclError(f"{self.path} has no prompts for label {name!r}: add `{name}: [phrase, ...]` "
                             f"under `labels:` (it has: {', '.join(self.labels) or 'none'})")
        return self.labels[name]


def _strings(value, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise CxrclError(f"{where} must be a non-empty list of non-empty strings")
    return tuple(v.strip() for v in value)


def _check_template(t: str, where: str) -> None:
    try:
        t.format(c="x")
    except (KeyError, IndexError, ValueError):
        raise CxrclError(f"{where}: template {t!r} may only hold the placeholder {{c}}") from None


def load_prompts(path: str | Path | None = None) -> PromptSet:
    """Read and check a prompt YAML (one-sentence errors name the file and the key)."""
    path = Path(path) if path else DEFAULT_PROMPTS
    if not path.is_file():
        hint = "pass --prompts FILE" if path == DEFAULT_PROMPTS else "check --prompts"
        raise CxrclError(f"prompt file {path} does not exist: {hint}")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise CxrclError(f"{path} is not valid YAML ({type(e).__name__}): fix the file") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("labels"), dict) or not doc["labels"]:
        raise CxrclError(f"{path} needs a mapping `labels:` of label -> phrases (see {DEFAULT_PROMPTS.name})")
    tmpl = doc.get("templates") or {}
    if not isinstance(tmpl, dict):
        raise CxrclError(f"{path}: `templates` must map positive/negative to lists of templates")
    pos = _strings(tmpl.get("positive", ["There is {c}."]), f"{path}: templates.positive")
    neg = _strings(tmpl.get("negative", ["There is no {c}."]), f"{path}: templates.negative")
    out = PromptSet(str(path))
    for name, entry in doc["labels"].items():
        where = f"{path}: labels.{name}"
        if isinstance(entry, dict):
            unknown = set(entry) - {"phrases", "positive", "negative"}
            if unknown:
                raise CxrclError(f"{where} has unknown keys {sorted(unknown)}; use phrases, positive, negative")
            lp = LabelPrompts(_strings(entry.get("phrases"), f"{where}.phrases"),
                              _strings(entry.get("positive", list(pos)), f"{where}.positive"),
                              _strings(entry.get("negative", list(neg)), f"{where}.negative"))
        else:
            lp = LabelPrompts(_strings(entry, where), pos, neg)
        for t in (*lp.positive, *lp.negative):
            _check_template(t, where)
        out.labels[str(name)] = lp
    return out


def expand(templates: Sequence[str], phrases: Sequence[str], ensemble: str = "mean") -> list[str]:
    """Every template x phrase (a template without ``{c}`` once), in order, without repeats."""
    if ensemble == "first":
        templates, phrases = templates[:1], phrases[:1]
    out: list[str] = []
    for t in templates:
        for p in (phrases if "{c}" in t else phrases[:1]):
            s = t.format(c=p)
            if s not in out:
                out.append(s)
    return out


def class_prompts(lp: LabelPrompts, scoring: str, ensemble: str = "mean") -> dict[str, list[str]]:
    pos = expand(lp.positive, lp.phrases, ensemble)
    return {"positive": pos, "negative": expand(lp.negative, lp.phrases, ensemble)} if scoring == "posneg" \
        else {"positive": pos}


def _mean_unit(e: np.ndarray) -> np.ndarray:
    m = e.mean(axis=0)
    return m / max(float(np.linalg.norm(m)), 1e-12)


def zeroshot_scores(model, image_emb: np.ndarray, prompts: dict[str, dict[str, list[str]]],
                    scoring: str = "posneg") -> tuple[np.ndarray, np.ndarray | None]:
    """(scores [N, L] to rank by, probabilities [N, L] for posneg else None), labels in
    ``prompts`` order. ``model`` is an :class:`~cxrcl.evaluation.image_text_model.ImageTextModel`."""
    if scoring not in SCORINGS:
        raise CxrclError(f"scoring {scoring!r} is not one of {', '.join(SCORINGS)}")
    scores, probs = [], []
    for sides in prompts.values():
        pos = _mean_unit(model.texts(sides["positive"]))
        cos_pos = image_emb @ pos
        if scoring == "cosine":
            scores.append(cos_pos)
            continue
        neg = _mean_unit(model.texts(sides["negative"]))
        logits = model.logit_scale * np.stack([cos_pos, image_emb @ neg], axis=1).astype(np.float64)
        diff = logits[:, 0] - logits[:, 1]
        scores.append(diff)
        probs.append(1.0 / (1.0 + np.exp(-diff)))  # softmax over (positive, negative), positive part
    s = np.stack(scores, axis=1) if scores else np.zeros((len(image_emb), 0))
    return s, (np.stack(probs, axis=1) if probs else None)


def _auroc_rows(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """AUROC of each row of 0/1 ``y`` [R, n] against scores ``s`` [R, n] (Mann-Whitney with
    average ranks for ties, as ``roc_auc_score``); NaN where a row holds one class only."""
    from scipy.stats import rankdata

    r = rankdata(s, axis=1)
    n_pos = y.sum(axis=1)
    n_neg = y.shape[1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((r * y).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def bootstrap_ci(y: np.ndarray, s: np.ndarray, n: int = N_BOOTSTRAP, seed: int = 0) -> list[float] | None:
    """Percentile 95 % interval of the macro AUROC over image resamples ([N, L] with NaN unknown);
    None when fewer than half the resamples hold both classes of every label."""
    rng = np.random.default_rng(seed)
    per = []
    for j in range(y.shape[1]):
        known = np.flatnonzero(~np.isnan(y[:, j]))
        idx = known[rng.integers(0, len(known), (n, len(known)))]
        per.append(_auroc_rows(y[idx, j], s[idx, j]))
    macro = np.mean(per, axis=0)
    macro = macro[np.isfinite(macro)]
    if len(macro) < n // 2:
        return None
    return [float(np.percentile(macro, 2.5)), float(np.percentile(macro, 97.5))]


def _norm_sentence(s: str) -> str:
    return re.sub(r"[^a-z0-9 ]+", "", re.sub(r"\s+", " ", s.lower())).strip()


def prompts_seen(prompts: dict[str, dict[str, list[str]]], train_texts: Sequence[str]) -> dict[str, int]:
    """Prompt -> number of training texts holding it as a whole sentence (case and punctuation
    ignored); only prompts seen at least once are listed."""
    from cxrcl.text.reports import split_sentences

    wanted = {_norm_sentence(p): p for sides in prompts.values() for ps in sides.values() for p in ps}
    counts: dict[str, int] = {}
    for t in train_texts:
        if not t:
            continue
        hit = {_norm_sentence(s) for s in split_sentences(t)} & wanted.keys()
        for h in hit:
            counts[wanted[h]] = counts.get(wanted[h], 0) + 1
    return dict(sorted(counts.items()))


def evaluation_rows(ds: PreparedDataset, split: str, exclude_nonempty: str | None) -> tuple[np.ndarray, int]:
    """Rows of ``split`` (minus rows whose ``exclude_nonempty`` column is non-empty), n excluded."""
    rows = ds.indices(split)
    if split not in ("train", "val", "test"):
        raise CxrclError(f"--split {split!r}: choose train, val or test")
    if len(rows) == 0:
        raise CxrclError(f"{ds.root} has no {split} images: choose another --split or re-split the data set")
    if not exclude_nonempty:
        return rows, 0
    if exclude_nonempty not in ds.meta.columns:
        raise CxrclError(f"{ds.root} has no column {exclude_nonempty!r} for --exclude-nonempty "
                         f"(columns: {', '.join(map(str, ds.meta.columns))})")
    col = ds.meta[exclude_nonempty].iloc[rows]
    drop = col.notna().to_numpy() & (col.astype(str).str.strip() != "").to_numpy()
    return rows[~drop], int(drop.sum())


def zeroshot(model, ds: PreparedDataset, labels: Sequence[str], prompt_set: PromptSet,
             scoring: str = "posneg", ensemble: str = "mean", split: str = "test",
             exclude_nonempty: str | None = None, text_column: str | None = None) -> dict:
    """The ``results`` entry (and protocol details) of a zero-shot evaluation."""
    if scoring not in SCORINGS:
        raise CxrclError(f"--scoring {scoring!r}: choose one of {', '.join(SCORINGS)}")
    if ensemble not in ENSEMBLES:
        raise CxrclError(f"--ensemble {ensemble!r}: choose one of {', '.join(ENSEMBLES)}")
    prompts = {name: class_prompts(prompt_set.for_label(name), scoring, ensemble) for name in labels}
    rows, n_excluded = evaluation_rows(ds, split, exclude_nonempty)
    y = ds.labels(labels, rows)
    for j, name in enumerate(labels):
        n_pos, n_neg = int((y[:, j] == 1).sum()), int((y[:, j] == 0).sum())
        if n_pos == 0 or n_neg == 0:
            raise CxrclError(f"label {name!r} has {n_pos} positive and {n_neg} negative known {split} images "
                             f"in {ds.root}: AUROC needs both; drop the label (--label) or use another --split")
    emb = model.images(ds.images[rows])
    scores, probs = zeroshot_scores(model, emb, prompts, scoring)
    per_label, n_per_label = {}, {}
    for j, name in enumerate(labels):
        k = ~np.isnan(y[:, j])
        per_label[name] = float(roc_auc_score(y[k, j].astype(int), scores[k, j]))
        n_per_label[name] = {"positive": int((y[k, j] == 1).sum()), "negative": int((y[k, j] == 0).sum())}
    col = text_column or getattr(model, "text_column", "report")
    train_texts = ds.texts(col, ds.indices(list(model.train_splits))) if col in ds.meta.columns else []
    if hasattr(model, "report_texts"):
        train_texts = model.report_texts(train_texts)
    result = {"fraction": 0.0, "seed": 0, "n_train": 0, "split": split, "n_test": int(len(rows)),
              "n_excluded": n_excluded, "n_test_per_label": n_per_label,
              "auroc": float(np.mean(list(per_label.values()))), "auroc_per_label": per_label,
              "auroc_ci95": bootstrap_ci(y, scores)}
    if probs is not None:
        result["mean_probability"] = {name: {c: float(probs[y[:, j] == v, j].mean())
                                             for c, v in (("positive", 1), ("negative", 0))}
                                      for j, name in enumerate(labels)}
    protocol = {"scoring": scoring, "ensemble": ensemble, "prompts_file": prompt_set.path, "prompts": prompts,
                "logit_scale": model.logit_scale, "exclude_nonempty": exclude_nonempty,
                "prompts_seen_in_training": prompts_seen(prompts, train_texts),
                "training_text": {"column": col, "splits": list(model.train_splits)},
                "auroc_ci95": f"percentile bootstrap over {split} images, {N_BOOTSTRAP} resamples, seed 0"}
    return {"result": result, "protocol": protocol, "feature_dim": int(emb.shape[1])}
