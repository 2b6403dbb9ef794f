"""SISTA: semantic-aware instance and sparse token alignment (image + report).

Paper (arXiv 2601.08165, no public code): image-report contrast in which reports that say the
same thing are not pushed apart (instance level), plus a sparse alignment of report words with
image patches and a local word-patch contrast (token level). Closest public analogue, whose
code fixes the details we follow: FaNe (arXiv 2511.12215).

Instance level (ours after FaNe): ``S`` = cosine of the reports' embeddings from a FROZEN text
model (``similarity``: ``encoder:NAME`` with any :mod:`cxrcl.text.encoders` name, default
``encoder:minilm``; ``labels``, the rule labeller's finding vectors of the report; or ``columns``,
the data set's own label columns where it has them: 1 positive, 0.5 uncertain (-1), 0 negative or
unknown, plus a "no finding" entry so that two normal images match), normalised as
``S' = (S - o) / (1 - o)`` with ``o`` a running mean (EMA, ``similarity_momentum``, bias-corrected)
of the mean off-diagonal similarity of the (gathered) batch; FaNe keeps ``o`` per report, we keep
one scalar in a registered buffer, so it is checkpointed and a resume is exact. Pairs with
``S' >= similarity_threshold`` (0.95, FaNe's value) are false negatives, and
``false_negatives`` decides what happens to them: ``soft`` (default) makes them soft positives
(targets ``softmax(S' / similarity_temperature)`` over the pair itself and its false negatives),
``remove`` drops them from the softmax. With no pair above the threshold both are exactly CLIP's
loss (tested). Embeddings of the frozen model are computed one text at a time (so they depend on
the text alone) and kept in a bounded cache per report text (the most recently used 50,000), so
a report seen before costs nothing and the cache cannot change a result; neither that model nor
the cache is part of the checkpoint (the model is frozen and rebuilt by name).

Token level (ours; the paper names a learned gate, sigmoid or top-k, with an L1 penalty): word
tokens of the trainable text encoder (no padding or special tokens) attend over the image's patch
tokens from the backbone's token interface, ``a = softmax(q k^T / sqrt(d))``; a sigmoid gate
``g = sigmoid(MLP(q_word + k_patch))`` (FaNe's "MLP on query+key", additive) multiplies the
attention, so each word's aligned visual feature is ``v = (a * g) @ V(patches)``. The L1 penalty
``sparsity_weight * |mean(g) - gate_density|`` holds the gates' mean at the configured density
(``gate_density=0`` is the plain L1 penalty ``mean(g)``): the local loss compares directions only,
so a one-sided penalty lets the gates sink into the sigmoid's flat tail and stop learning (seen
with a hinge); ``gate_open`` (fraction of gates above 0.5) and ``gate_mean`` are logged. The local loss is a symmetric InfoNCE between each
word and the aligned features of the words of the same report (MGCA-style; other words are the
negatives), temperature ``local_temperature``. Loss = instance + ``local_weight`` * local +
sparsity penalty.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cxrcl.errors import CxrclError
from cxrcl.losses.gather import gather_with_grad, rank
from cxrcl.methods.image_text import ImageTextConfig, ImageTextMethod, image_text_nce
from cxrcl.text.reports import clean_report

FALSE_NEGATIVES = ("soft", "remove")


@dataclass(frozen=True)
class SISTAConfig(ImageTextConfig):
    similarity: str = "encoder:minilm"
    similarity_threshold: float = 0.95
    similarity_temperature: float = 0.05
    similarity_momentum: float = 0.99
    false_negatives: str = "soft"
    local_weight: float = 1.0
    local_dim: int = 128
    local_temperature: float = 0.1
    gate_hidden: int = 32
    gate_density: float = 0.25
    sparsity_weight: float = 1.0


class _FrozenSimilarity:
    """Report embeddings for ``S`` (not an nn.Module: frozen, rebuilt by name, never saved).

    Each text is embedded on its own (no padding, no batch companions), so its embedding is a
    function of the text alone: the cache, its bound and a resume cannot change any result.
    The cache keeps the ``max_entries`` most recently used texts (keyed by a 128-bit digest of
    the text; about 1.6 kB per text for a 384-d encoder) and is never checkpointed.
    """

    def __init__(self, spec: str, max_length: int, max_entries: int = 50_000):
        self.spec, self.max_length, self.max_entries = spec, max_length, max_entries
        self.cache: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self.encoder = None
        if spec != "labels":
            from cxrcl.text.encoders import build_text_encoder

            name = spec[len("encoder:"):] if spec.startswith("encoder:") else spec
            self.encoder = build_text_encoder(name, max_length=max_length)
            self.encoder.model.requires_grad_(False)

    def embed(self, text: str, device) -> torch.Tensor:
        """The normalised embedding [D] of one text (float32, on the CPU)."""
        if self.encoder is None:
            from cxrcl.text.similarity import label_vectors

            vec = torch.from_numpy(label_vectors([text]))
        else:
            if next(self.encoder.model.parameters()).device != torch.device(device):
                self.encoder.model.to(device)
            with torch.inference_mode():
                vec = self.encoder.encode([text]).sentence
        return F.normalize(vec.float(), dim=-1)[0].cpu().clone()

    def __call__(self, texts: list[str], device) -> torch.Tensor:
        rows = []
        for text in texts:
            key = hashlib.blake2b(text.encode(), digest_size=16).digest()
            vec = self.cache.get(key)
            if vec is None:
                vec = self.embed(text, device)
                if self.max_entries > 0:
                    self.cache[key] = vec
            else:
                self.cache.move_to_end(key)
            rows.append(vec)
        while len(self.cache) > self.max_entries:
            self.cache.popitem(last=False)
        return torch.stack(rows).to(device)


class SISTA(ImageTextMethod):
    name = "sista"
    config_class = SISTAConfig

    def __init__(self, config: SISTAConfig, backbone):
        super().__init__(config, backbone)
        c = config
        if c.false_negatives not in FALSE_NEGATIVES:
            raise ValueError(f"false_negatives must be one of {', '.join(FALSE_NEGATIVES)}, "
                             f"got {c.false_negatives!r}")
        if not 0 <= c.gate_density < 1:
            raise ValueError(f"gate_density must be in [0, 1), got {c.gate_density}")
        if not 0 <= c.similarity_momentum < 1:
            raise ValueError(f"similarity_momentum must be in [0, 1), got {c.similarity_momentum}")
        for key in ("similarity_temperature", "local_temperature"):
            if getattr(c, key) <= 0:
                raise ValueError(f"{key} must be > 0")
        if c.similarity not in ("labels", "columns") and not c.similarity.startswith("encoder:"):
            raise ValueError(f"similarity must be 'labels', 'columns' or 'encoder:NAME', got {c.similarity!r}")
        d, dv, dt = c.local_dim, backbone.dim, self.text.dim
        self.word_q = nn.Linear(dt, d)
        self.patch_k = nn.Linear(dv, d)
        self.patch_v = nn.Linear(dv, d)
        self.gate_q = nn.Linear(d, c.gate_hidden)
        self.gate_k = nn.Linear(d, c.gate_hidden, bias=False)
        self.gate_out = nn.Linear(c.gate_hidden, 1)
        self.register_buffer("sim_ema", torch.zeros(()))
        self.register_buffer("sim_updates", torch.zeros((), dtype=torch.long))
        self.similarity = None if c.similarity == "columns" else _FrozenSimilarity(c.similarity,
                                                                                   c.text_max_length)

    # ------------------------------------------------------------------ instance level
    def running_mean(self, s_all: torch.Tensor, valid_all: torch.Tensor) -> torch.Tensor:
        """Update the EMA with this batch's mean off-diagonal similarity; the bias-corrected ``o``."""
        m = self.config.similarity_momentum
        if self.training:
            pair = valid_all[:, None] & valid_all[None, :]
            pair.fill_diagonal_(False)
            if bool(pair.any()):
                batch_mean = s_all[pair].mean()
                self.sim_ema.mul_(m).add_((1 - m) * batch_mean)
                self.sim_updates.add_(1)
        k = int(self.sim_updates)
        return self.sim_ema / (1 - m ** k) if k else self.sim_ema

    def false_negative_mask(self, texts: list[str], valid: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(normalised similarity S' [n, N], positives [n, N] incl. the pair itself, own-pair mask)."""
        c = self.config
        n = len(texts)
        with torch.no_grad():
            e = self.column_vectors(n, valid.device) if self.similarity is None else \
                self.similarity(texts, valid.device)
            e_all = gather_with_grad(e)
            valid_all = gather_with_grad(valid.float()).bool()
            offset = rank() * n if e_all.shape[0] != n else 0
            o = self.running_mean(e_all @ e_all.T, valid_all)
            s = (e @ e_all.T - o) / (1 - o).clamp_min(1e-6)
            own = torch.zeros_like(s, dtype=torch.bool)
            own[torch.arange(n, device=s.device), torch.arange(n, device=s.device) + offset] = True
            positives = ((s >= c.similarity_threshold) & valid_all[None, :] & valid[:, None]) | own
        return s, positives, own

    def column_vectors(self, n: int, device) -> torch.Tensor:
        """Normalised label vectors [n, L + 1] of the batch rows from the data set's label columns."""
        ds = self.dataset
        if ds is None or self.batch_rows is None or not ds.label_names:
            where = ds.root if ds is not None else "the data set"
            raise CxrclError(f"sista similarity=columns needs label columns, and {where} has none: use "
                             "similarity=labels (from the reports) or encoder:minilm")
        lab = torch.from_numpy(ds.labels(ds.label_names, self.batch_rows)).float()
        vec = torch.where(lab == 1, 1.0, torch.where(lab == -1, 0.5, 0.0))
        vec = torch.cat([vec, (vec.amax(1, keepdim=True) < 1).float()], 1)
        if vec.shape[0] != n:
            raise ValueError(f"{vec.shape[0]} label rows for a batch of {n}")
        return F.normalize(vec, dim=-1).to(device)

    def instance_loss(self, zi, zt, texts, valid) -> tuple[torch.Tensor, dict]:
        c = self.config
        s, positives, own = self.false_negative_mask(texts, valid)
        extra = (positives & ~own).sum(1).float()
        if c.false_negatives == "soft":
            targets = torch.softmax((s / c.similarity_temperature).masked_fill(~positives, float("-inf")), 1)
            loss = image_text_nce(zi, zt, self.criterion.temperature, valid=valid, targets=targets)
        else:
            loss = image_text_nce(zi, zt, self.criterion.temperature, valid=valid,
                                  exclude=positives & ~own)
        return loss, {"false_negatives": extra.mean(), "sim_mean": self.running_mean_value()}

    def running_mean_value(self) -> torch.Tensor:
        k = int(self.sim_updates)
        m = self.config.similarity_momentum
        return (self.sim_ema / (1 - m ** k) if k else self.sim_ema).detach().clone()

    # ------------------------------------------------------------------ token level
    def word_mask(self, texts: list[str], mask: torch.Tensor) -> torch.Tensor:
        """[B, T] True on real word pieces (no padding, no [CLS]/[SEP]-like special tokens)."""
        tok = self.text.tokenizer([clean_report(t) for t in texts], padding=True, truncation=True,
                                  max_length=self.text.max_length, return_special_tokens_mask=True,
                                  return_tensors="pt")
        special = tok["special_tokens_mask"].to(mask.device).bool()
        if special.shape != mask.shape:
            raise CxrclError("the text encoder's tokenizer gave another length on a second pass")
        return mask & ~special

    def align(self, words: torch.Tensor, patches: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """words [B, T, Dt], patches [B, N, Dv] -> (word features q [B, T, d], aligned visual
        features v [B, T, d], gates g [B, T, N])."""
        q, k, v = self.word_q(words), self.patch_k(patches), self.patch_v(patches)
        attn = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), dim=-1)
        hidden = F.relu(self.gate_q(q).unsqueeze(2) + self.gate_k(k).unsqueeze(1))  # [B, T, N, h]
        gate = torch.sigmoid(self.gate_out(hidden).squeeze(-1))
        return q, (attn * gate) @ v, gate

    def local_loss(self, q, v, words) -> torch.Tensor:
        """Symmetric InfoNCE between each word and the aligned features of its report's words."""
        qn, vn = F.normalize(q.float(), dim=-1), F.normalize(v.float(), dim=-1)
        logits = qn @ vn.transpose(1, 2) / self.config.local_temperature  # [B, T, T]
        pair = words[:, :, None] & words[:, None, :]
        logits = logits.masked_fill(~pair, float("-inf"))
        diag = torch.eye(words.shape[1], dtype=torch.bool, device=words.device)

        def ce(lg):
            logp = torch.log_softmax(lg.masked_fill(~words[:, :, None], 0.0), dim=-1)
            return -(logp.masked_fill(~diag, 0.0).sum(-1))[words]

        terms = torch.cat([ce(logits), ce(logits.transpose(1, 2))])
        return terms.mean() if terms.numel() else logits.new_zeros(()) * 0.0

    def training_step(self, images, generator):
        c = self.config
        texts, valid = self.batch_reports(images.shape[0], images.device)
        zi, enc = self.image_features(images)
        zt, tenc = self.text_features(texts)
        instance, logs = self.instance_loss(zi, zt, texts, valid)
        words = self.word_mask(texts, tenc.mask) & valid[:, None]
        q, v, gate = self.align(tenc.tokens, enc.patch_tokens)
        local = self.local_loss(q, v, words)
        g = gate[words]  # [W, N] gates of real words
        gate_mean = g.mean() if g.numel() else gate.sum() * 0.0
        sparsity = c.sparsity_weight * (gate_mean - c.gate_density).abs()
        loss = instance + c.local_weight * local + sparsity
        return {"loss": loss, "instance_loss": instance.detach(), "local_loss": local.detach(),
                "gate_mean": gate_mean.detach(),
                "gate_open": (g > 0.5).float().mean() if g.numel() else gate_mean.detach(),
                "temperature": self.criterion.temperature.detach(),
                "reports": valid.float().mean(), **logs}
