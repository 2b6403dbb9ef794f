"""Shared base of the image-report methods (CLIP/ConVIRT, SISTA, MaCo).

Public interface (other modules rely on it; keep it stable):

* ``encode_image(images [B, 1, S, S]) -> [B, P]``: L2-normalised image embeddings (the full
  image, no masking: the evaluation path);
* ``encode_text(texts: list[str]) -> [B, P]``: L2-normalised report/prompt embeddings;
* ``logit_scale``: ``1 / temperature`` as a scalar tensor (already exponentiated; a learnable
  temperature is stored as ``log(1/t)`` and capped at 100 as in CLIP);
* ``encoder``: the image backbone.

Both ``encode_*`` run in whatever mode the module is in and keep gradients; for evaluation call
``.eval()`` and wrap them in ``torch.no_grad()``.

Reports: the loop passes the batch's data set rows (:meth:`Method.set_batch_rows`); the text is
the ``report`` column (``text_column``), reduced to FINDINGS + IMPRESSION when the report has
those sections and the whole text otherwise (:func:`report_text`). A data set without the column
is one :class:`CxrclError`. Rows whose report is empty (covid_chestxray has 111 of 575) are
*skipped with a count*: the batch keeps its size (DDP gathers need equal sizes) but those pairs
are masked out of the contrastive loss as queries and as keys; the step logs ``reports`` (the
fraction kept) and the first data set seen with empty reports is logged once with its count.

Text encoder (``text_encoder``, any name of :mod:`cxrcl.text.encoders`): default ``minilm``, the
all-MiniLM-L6-v2 sentence model shipped in a PyPI package, because it works offline with no prior
run and brings real English, so prompts the model never saw as training text still embed
sensibly. ``text_trainable_layers`` (default 3 of its 6) fine-tunes the top transformer layers
and freezes the embeddings and the lower layers, as ConVIRT does with the lower half of
ClinicalBERT; 0 freezes it entirely (LiT-style), -1 trains all of it. Its weights are part of
the method, so checkpoints hold them (about 90 MB for MiniLM) and a run's ``encode_text`` needs
nothing else. Both sides end in a projection head (the config's ``proj_*``) to ``proj_dim``.

Text per step (training only; ``encode_text`` reads whatever text it is given, and evaluation
feeds whole reports unless ``cxrcl eval retrieval --report-embedding sentences`` is asked for):
``text_sentences`` = 0 (default) uses the whole report; k > 0 draws k of its sentences afresh
each step (ConVIRT samples one sentence; our option, off by default), seeded by (step, row) so a
resumed run draws the same ones. ``text_sentences_min`` (our option; 0 = off) draws the count
itself per report and step, uniformly from ``text_sentences_min`` to ``text_sentences``: with a
count above the pool's size, some steps read one sentence (the unit of a zero-shot prompt) and
others the whole pool (the unit of a report in retrieval). ``text_sentence_pool`` (our option)
says which sentences are drawn: ``all`` (default, ConVIRT) any of them; ``findings`` only those
where the rule labeller (:mod:`cxrcl.text.labeller`) finds a finding mentioned, asserted or
denied, so boilerplate ("Visualized osseous structures are unremarkable.") is never the step's
only text; ``positive`` those asserting a finding when the report has one, else as ``findings``.
Each pool falls back to the next wider one when a report has no such sentence. It reads the
report text only, never an image label. ``dedupe_texts`` (default on, our choice): pairs whose
texts are identical (a report shared by several images, or the same sampled sentence) are
removed from each other's softmax instead of being pushed apart as negatives.

Loss: :func:`image_text_nce`, symmetric InfoNCE over the (DDP-gathered) batch with optional soft
targets, removed negatives, skipped pairs and a per-image logit weight (MaCo's correlation
weight). Temperature: CLIP's learnable one initialised at 0.07.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxrcl.errors import CxrclError
from cxrcl.losses.gather import gather_with_grad, rank
from cxrcl.losses.info_nce import InfoNCELoss, contrast_pairs, per_sample_nce
from cxrcl.methods.base import Method, MethodConfig
from cxrcl.models.backbones import Encoded
from cxrcl.models.heads import projection_head
from cxrcl.text.encoders import TextEncoding, build_text_encoder

log = logging.getLogger(__name__)


SENTENCE_POOLS = ("all", "findings", "positive")  # text_sentence_pool values (see the docstring)


@dataclass(frozen=True)
class ImageTextConfig(MethodConfig):
    temperature: float = 0.07
    learnable_temperature: bool = True
    text_encoder: str = "minilm"
    text_trainable_layers: int = 3
    text_max_length: int = 128
    text_column: str = "report"
    report_sections: bool = True  # FINDINGS + IMPRESSION when present (False: the whole text)
    text_sentences: int = 0  # > 0: train on that many sentences drawn from each report (ConVIRT: 1)
    text_sentence_pool: str = "all"  # which sentences are drawn: all | findings | positive
    text_sentences_min: int = 0  # > 0: draw the count per report and step from [min, text_sentences]
    dedupe_texts: bool = True  # identical texts in a batch are not each other's negatives

    def __post_init__(self):
        if self.text_sentences < 0:
            raise ValueError(f"text_sentences must be 0 (the whole report) or a sentence count, "
                             f"got {self.text_sentences}")
        if self.text_sentence_pool not in SENTENCE_POOLS:
            raise ValueError(f"text_sentence_pool must be one of {', '.join(SENTENCE_POOLS)}, "
                             f"got {self.text_sentence_pool!r}")
        if self.text_sentences_min and not 1 <= self.text_sentences_min <= self.text_sentences:
            raise ValueError(f"text_sentences_min={self.text_sentences_min} must lie in 1..text_sentences "
                             f"({self.text_sentences}); 0 keeps the count fixed")
        if self.text_sentence_pool != "all" and not self.text_sentences:
            raise ValueError(f"text_sentence_pool={self.text_sentence_pool} chooses which sentences are "
                             "drawn, but text_sentences=0 trains on the whole report: add text_sentences=1")


def report_text(raw: str, sections: bool = True) -> str:
    """The text a report contributes: findings + impression when it has either, else all of it."""
    raw = "" if raw is None else str(raw)
    if not sections:
        return " ".join(raw.split())
    from cxrcl.text.sections import extract_sections

    s = extract_sections(raw)
    body = " ".join(p.strip() for p in (s.get("findings") or "", s.get("impression") or "") if p.strip())
    return body or " ".join(raw.split())


@functools.lru_cache(maxsize=65536)
def _sentence_kind(sentence: str) -> int:
    """2: the labeller finds a finding asserted in it; 1: only denied or uncertain ones; 0: none."""
    from cxrcl.text.labeller import POSITIVE, find_mentions

    mentions = find_mentions(sentence)
    return 2 if any(m.status == POSITIVE for m in mentions) else int(bool(mentions))


def sentence_pool(sentences: list[str], pool: str) -> list[str]:
    """The sentences ``pool`` draws from (see the module docstring), widening to the next pool
    (positive -> findings -> all) when the report has none of the narrower kind."""
    if pool == "all":
        return sentences
    kinds = [_sentence_kind(s) for s in sentences]
    for least in ((2, 1) if pool == "positive" else (1,)):
        chosen = [s for s, kind in zip(sentences, kinds, strict=True) if kind >= least]
        if chosen:
            return chosen
    return sentences


def sample_sentences(text: str, k: int, seed: tuple[int, ...], pool: str = "all", k_min: int = 0) -> str:
    """``k`` sentences of ``text`` drawn without replacement (kept in report order) from its
    ``pool`` (:func:`sentence_pool`) by a generator seeded with ``seed``; the whole pool when it
    has at most ``k`` sentences. ``k_min`` > 0: the count is first drawn from [k_min, k]."""
    from cxrcl.text.reports import split_sentences

    rng = np.random.default_rng(list(seed))
    if k_min:
        k = int(rng.integers(k_min, k + 1))
    every = split_sentences(text)
    sentences = sentence_pool(every, pool)
    if len(sentences) <= k:
        return text if len(sentences) == len(every) else " ".join(sentences)
    pick = np.sort(rng.choice(len(sentences), size=k, replace=False))
    return " ".join(sentences[i] for i in pick)


def duplicate_keys(texts: list[str], device, gather: bool = True) -> torch.Tensor | None:
    """[n, N] bool: key j holds the same text as query i but is not i's own pair (N = the
    gathered batch); None when no text repeats. Texts travel across ranks as 52-bit hashes."""
    ids = torch.tensor([int(hashlib.blake2b(t.encode(), digest_size=8).hexdigest(), 16) % 2**52
                        for t in texts], dtype=torch.float64, device=device)
    ids_all = gather_with_grad(ids) if gather else ids
    same = ids[:, None] == ids_all[None, :]
    n = len(texts)
    offset = rank() * n if ids_all.shape[0] != n else 0  # as contrast_pairs places the positives
    same[torch.arange(n, device=device), offset + torch.arange(n, device=device)] = False
    return same if bool(same.any()) else None


def _text_layers(model: nn.Module) -> tuple[nn.Module | None, list[nn.Module]]:
    """(embeddings, transformer layers) of a BERT-like Hugging Face encoder."""
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    if layers is None:
        layers = getattr(model, "layers", None) or getattr(model, "h", None)
    return getattr(model, "embeddings", None), list(layers) if layers is not None else []


def freeze_text_layers(model: nn.Module, trainable: int) -> None:
    """Freeze all but the top ``trainable`` transformer layers (-1: train everything). A BERT
    pooler is always frozen: the pooling is ours, and a trainable parameter without a gradient
    stops DDP."""
    pooler = getattr(model, "pooler", None)
    if trainable < 0:
        if isinstance(pooler, nn.Module):
            pooler.requires_grad_(False)
        return
    for p in model.parameters():
        p.requires_grad_(False)
    if trainable == 0:
        return
    _, layers = _text_layers(model)
    if not layers:
        raise ValueError(f"text_trainable_layers={trainable} needs a BERT-like text model with "
                         "encoder.layer; use 0 (frozen) or -1 (all)")
    for layer in layers[-trainable:]:
        for p in layer.parameters():
            p.requires_grad_(True)


def image_text_nce(img: torch.Tensor, txt: torch.Tensor, temperature: float | torch.Tensor, *,
                   valid: torch.Tensor | None = None, targets: torch.Tensor | None = None,
                   exclude: torch.Tensor | None = None, image_weight: torch.Tensor | None = None,
                   gather: bool = True) -> torch.Tensor:
    """Symmetric image-report InfoNCE, float32, keys gathered across DDP ranks with gradient.

    Args:
        img, txt: [n, D] (normalised here); row i of each is a pair.
        valid: [n] bool; a False pair (empty report) is neither a query nor a key.
        targets: [n, N] soft targets over the gathered batch (rows sum to 1; SISTA).
        exclude: [n, N] bool; True keys are removed from the softmax (SISTA's removed false
            negatives; the pair itself must never be excluded).
        image_weight: [n] > 0; multiplies the logits of image i in both directions (row i of
            image->report, column i of report->image; MaCo's correlation weight).

    With none of them this is exactly :func:`cxrcl.losses.info_nce.info_nce` (symmetric). The
    loss of each rank is normalised so that DDP's gradient average equals one process on the
    concatenated batch, also when ranks hold different numbers of valid pairs.
    """
    with torch.autocast(device_type=img.device.type, enabled=False):
        temperature, img, txt, img_all, txt_all, pos = contrast_pairs(img, txt, temperature, gather)
        n = img.shape[0]
        world = img_all.shape[0] // n
        w_all = None
        if image_weight is not None:
            image_weight = image_weight.float()
            w_all = gather_with_grad(image_weight) if gather else image_weight
        keep_cols = None
        if valid is not None:
            valid = valid.to(device=img.device, dtype=torch.bool)
            valid_all = gather_with_grad(valid.float()).bool() if gather else valid
            if not bool(valid_all.all()):
                if not bool(valid_all.any()):  # nothing to contrast: a zero loss with a graph
                    return (img.sum() + txt.sum()) * 0.0
                keep_cols = valid_all.unsqueeze(0).expand(n, -1)
            else:
                valid = None
        if exclude is not None:
            drop = exclude.to(device=img.device, dtype=torch.bool)
            if bool(drop[torch.arange(n, device=img.device), pos].any()):
                raise ValueError("exclude must not remove a sample's own pair")
            keep_cols = ~drop if keep_cols is None else keep_cols & ~drop
        soft = targets.float() if targets is not None else None

        def one_direction(a, b_all, image_rows: bool):
            logits = a @ b_all.T / temperature
            if w_all is not None:
                logits = logits * (image_weight.unsqueeze(1) if image_rows else w_all.unsqueeze(0))
            if keep_cols is not None:
                logits = logits.masked_fill(~keep_cols, float("-inf"))
            per_sample = per_sample_nce(logits, pos, soft)
            if valid is None:
                return per_sample.mean()
            per_sample = torch.where(valid, per_sample, torch.zeros_like(per_sample))
            return per_sample.sum() / (valid_all.sum().float() / world)

        return 0.5 * (one_direction(img, txt_all, True) + one_direction(txt, img_all, False))


class ImageTextMethod(Method):
    """Base class: image backbone + projection, text encoder + projection, learnable scale.

    Subclasses implement ``training_step``; they get the batch's reports with
    :meth:`batch_reports` and the features with :meth:`image_features` / :meth:`text_features`.
    """

    config_class = ImageTextConfig

    def __init__(self, config: ImageTextConfig, backbone):
        super().__init__(config, backbone)
        if config.text_trainable_layers < -1:
            raise ValueError("text_trainable_layers must be -1 (all), 0 (frozen) or a layer count")
        self.text = build_text_encoder(config.text_encoder, max_length=config.text_max_length)
        freeze_text_layers(self.text.model, config.text_trainable_layers)
        self.image_proj = self.make_projection_head()
        self.text_proj = projection_head(self.text.dim, config.proj_hidden_dim, config.proj_dim,
                                         config.proj_layers, config.proj_batch_norm)
        self.criterion = InfoNCELoss(config.temperature, config.learnable_temperature)
        self._checked_datasets: set[str] = set()

    # ------------------------------------------------------------------ public interface
    @property
    def logit_scale(self) -> torch.Tensor:
        """``1 / temperature`` (already exponentiated), a scalar tensor."""
        return 1.0 / self.criterion.temperature

    @property
    def temperature(self) -> torch.Tensor:
        return self.criterion.temperature

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 1, S, S] -> L2-normalised [B, proj_dim] (all patches: the evaluation path)."""
        return self.image_features(images)[0]

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Texts -> L2-normalised [B, proj_dim] (texts are used as given: no section cut)."""
        return self.text_features(list(texts))[0]

    # ------------------------------------------------------------------ building blocks
    def image_features(self, images: torch.Tensor, keep: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, Encoded]:
        """(normalised projected embedding [B, P], the backbone's :class:`Encoded` tokens)."""
        enc = self.backbone.encode(self.backbone.embed(images), keep)
        return F.normalize(self.image_proj(self.backbone.pool(enc)), dim=-1), enc

    def text_features(self, texts: list[str]) -> tuple[torch.Tensor, TextEncoding]:
        """(normalised projected sentence embedding [B, P], the text encoder's tokens/mask)."""
        frozen = not any(p.requires_grad for p in self.text.model.parameters())
        self._place_text()
        if frozen:
            was = self.text.model.training
            self.text.model.eval()
            with torch.no_grad():
                out = self.text.encode_train(texts)
            self.text.model.train(was)
        else:
            out = self.text.encode_train(texts)
        return F.normalize(self.text_proj(out.sentence), dim=-1), out

    def _place_text(self) -> None:
        """Keep the text model on the projection's device (it is a registered sub-module, so
        ``.to()`` moves it anyway; this is a guard for a model moved piecewise)."""
        dev = next(self.text_proj.parameters()).device
        if next(self.text.model.parameters()).device != dev:
            self.text.model.to(dev)

    def batch_reports(self, n: int, device: torch.device | None = None) -> tuple[list[str], torch.Tensor]:
        """The reports of the current batch (set by the loop) and a [n] bool mask of non-empty ones."""
        c = self.config
        if self.dataset is None or self.batch_rows is None:
            raise CxrclError(f"{self.name} needs the reports of each batch: train it with `cxrcl pretrain` "
                             "(or call set_batch_rows(rows, dataset) before training_step)")
        self._check_dataset(self.dataset)
        raw = self.dataset.texts(c.text_column, self.batch_rows)
        if len(raw) != n:
            raise ValueError(f"{len(raw)} reports for a batch of {n} images")
        texts = [report_text(t, c.report_sections) for t in raw]
        if c.text_sentences and self.training:  # a function of (step, row): resumes exactly
            texts = [sample_sentences(t, c.text_sentences, (self.step, int(r)), c.text_sentence_pool,
                                      c.text_sentences_min)
                     for t, r in zip(texts, self.batch_rows, strict=True)]
        valid = torch.tensor([bool(t.strip()) for t in texts], device=device)
        return texts, valid

    def text_exclusions(self, texts: list[str], device) -> torch.Tensor | None:
        """Keys to remove from each query's softmax: other pairs with the same text (when
        ``dedupe_texts``), so a repeated report or sentence is never pushed away from itself."""
        return duplicate_keys(texts, device) if self.config.dedupe_texts else None

    def _check_dataset(self, dataset) -> None:
        key = str(dataset.root)
        if key in self._checked_datasets:
            return
        col = self.config.text_column
        if col not in dataset.meta.columns:
            have = ", ".join(dataset.info.get("text_columns", [])) or "none"
            raise CxrclError(f"{dataset.root} has no {col!r} text column (text columns: {have}): "
                             f"{self.name} pre-trains on image-report pairs; prepare a source with "
                             "reports (phantom, openi, mimic-cxr, covid notes) or use an image-only method")
        empty = int((dataset.meta[col].fillna("").astype(str).str.strip() == "").sum())
        if empty == len(dataset.meta):
            raise CxrclError(f"every {col!r} of {dataset.root} is empty: {self.name} needs reports; "
                             "prepare a source with reports or use an image-only method")
        if empty:
            log.warning("%s: %d of %d rows have an empty %r; %s skips those pairs in the loss "
                        "(logged per step as 'reports')", dataset.root, empty, len(dataset.meta), col,
                        self.name)
        self._checked_datasets.add(key)

    def global_loss(self, images: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """CLIP's symmetric InfoNCE on this batch (used by CLIP; a building block for others)."""
        texts, valid = self.batch_reports(images.shape[0], images.device)
        zi, _ = self.image_features(images)
        zt, _ = self.text_features(texts)
        loss = image_text_nce(zi, zt, self.criterion.temperature, valid=valid,
                              exclude=self.text_exclusions(texts, images.device))
        return loss, {"temperature": self.criterion.temperature.detach(),
                      "reports": valid.float().mean()}


__all__ = ["ImageTextConfig", "ImageTextMethod", "freeze_text_layers", "image_text_nce", "report_text"]
