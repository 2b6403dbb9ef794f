"""Saliency-guided token pruning: a compact predictor, a top-k gather and its schedule.

Used by SparseContrast (:mod:`cxrcl.methods.sparsecontrast`) and by S-PCL's
``partition=saliency``. The mechanics follow DynamicViT (arXiv 2106.02034) with one change the
speed claim needs: DynamicViT masks attention during training (so training costs as much as the
dense model); here the top-k tokens are GATHERED at training and at inference, so later blocks
really run on fewer tokens.

Our choices:

* predictor: LayerNorm -> Linear(D, D/4) -> GELU -> Linear(D/4, 1) on each token concatenated
  with the mean token (a local + global feature, as in DynamicViT); one logit per token, keep
  probability ``sigmoid(logit)``.
* selection: top-k of the logits; during training Gumbel noise (``noise`` x Gumbel(0, 1)) is
  added first (Gumbel top-k = sampling k tokens without replacement in proportion to
  ``softmax(logit)``), so tokens the predictor ranks low are still tried now and then.
* gradient to the predictor (straight-through score scaling): each kept token is multiplied by
  ``s / s.detach()`` (s = its keep probability). The factor is exactly 1 in the forward pass,
  so the network computes what it would without the predictor, and its gradient is
  ``dL/ds = <dL/dtoken, token> / s``: the predictor learns to raise the score of tokens whose
  amplification lowers the loss.
* sparsity term: ``(mean(s) - keep_ratio)^2`` over all tokens (DynamicViT's ratio loss on the
  soft keep probabilities; with a hard top-k the kept fraction is exact by construction, so the
  term calibrates the scores to the target and keeps the sigmoid out of saturation).
* schedule: dense (all tokens, predictor learning) for the first ``dense_fraction`` of
  training, then the kept fraction falls linearly to ``keep_ratio`` over ``ramp_fraction``.
* ``fuse`` (ViT, off by default): EViT's inattentive-token fusion (arXiv 2202.07800). The pruned
  tokens are not thrown away but averaged into ONE extra token (weights: softmax of their
  logits) that the later blocks run on beside the kept ones: K + 1 tokens instead of K.
  ``fuse="token"`` pools it as one more token; ``fuse="area"`` (our choice) gives it the pooling
  weight of the N - K tokens it stands for, so the pooled feature stays a mean over the whole
  image, as the dense counterpart's is. (A ViT with ``pool=token`` pools its class token in
  both modes.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cxrcl.models.backbones import CNNBackbone, Encoded, TokenBackbone, ViTBackbone, gather_tokens


def keep_count(n: int, ratio: float) -> int:
    """Number of tokens kept of ``n`` at ``ratio`` (at least one)."""
    return max(1, min(n, int(round(ratio * n))))


def scheduled_keep_ratio(progress: float, keep_ratio: float, dense_fraction: float,
                         ramp_fraction: float) -> float:
    """Kept fraction at ``progress`` (fraction of training done): 1 during the dense warm-up,
    then a linear ramp to ``keep_ratio`` over ``ramp_fraction``, then ``keep_ratio``."""
    if progress < dense_fraction:
        return 1.0
    if ramp_fraction <= 0:
        return keep_ratio
    t = min(1.0, (progress - dense_fraction) / ramp_fraction)
    return 1.0 + t * (keep_ratio - 1.0)


class SaliencyPredictor(nn.Module):
    """Tokens [B, N, D] -> keep logits [B, N] (a small MLP on local + global features)."""

    def __init__(self, dim: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or max(8, dim // 4)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(2 * dim, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.norm(tokens)
        ctx = x.mean(dim=1, keepdim=True).expand_as(x)
        return self.mlp(torch.cat([x, ctx], dim=-1)).squeeze(-1)


def gumbel(shape, generator: torch.Generator, device, dtype=torch.float32) -> torch.Tensor:
    u = torch.rand(shape, generator=generator, device=device, dtype=dtype).clamp(1e-6, 1 - 1e-6)
    return -torch.log(-torch.log(u))


def select_top_k(logits: torch.Tensor, k: int, generator: torch.Generator | None = None,
                 noise: float = 0.0) -> torch.Tensor:
    """Indices [B, k] of the k highest logits (perturbed by ``noise`` x Gumbel when a generator
    is given), in ascending token order (so the gathered tokens keep their raster order)."""
    score = logits.detach()
    if generator is not None and noise > 0:
        score = score + noise * gumbel(score.shape, generator, score.device, score.dtype)
    return score.topk(k, dim=1).indices.sort(dim=1).values


def straight_through_factor(logits: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """``s / s.detach()`` of the kept tokens ([B, K, 1], all ones in value); gradients reach
    the logits. ``keep=None`` means all tokens."""
    s = torch.sigmoid(logits)
    if keep is not None:
        s = torch.gather(s, 1, keep)
    return (s / s.detach()).unsqueeze(-1)


def sparsity_loss(logits: torch.Tensor, keep_ratio: float) -> torch.Tensor:
    """Per image ``(mean keep probability - keep_ratio)^2``, averaged (DynamicViT's ratio loss)."""
    return ((torch.sigmoid(logits.float()).mean(dim=1) - keep_ratio) ** 2).mean()


FUSE_MODES = ("none", "token", "area")


def fuse_dropped(patches: torch.Tensor, logits: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """EViT's fused token [B, 1, D]: the patches not in ``keep`` ([B, K] of N), averaged with
    weights softmax(their logits) (gradients reach the predictor through the weights)."""
    dropped = torch.ones_like(logits, dtype=torch.bool).scatter_(1, keep, False)
    w = torch.softmax(logits.float().masked_fill(~dropped, float("-inf")), dim=1).to(patches.dtype)
    return torch.einsum("bn,bnd->bd", w, patches).unsqueeze(1)


def default_window(backbone: TokenBackbone, prune_at: int) -> int:
    """CNN window side (cells) = the down-sampling of the stages after ``prune_at`` (ResNet and
    ConvNeXt halve the map in every stage but the first), so each window ends as one output
    cell and no later stage costs more than in the dense pass."""
    if isinstance(backbone, ViTBackbone):
        return 1
    return 2 ** sum(1 for i in range(prune_at, len(backbone.stages)) if i > 0)


@dataclass
class Pruned:
    """Result of a pruned pass: pooled ``features`` [B, D]; the predictor's ``logits`` over the
    scored units [B, U] (ViT: patch tokens; CNN: windows) on a ``grid`` of units, or None for
    a dense pass; ``keep`` [B, K] the kept units (None = all)."""

    features: torch.Tensor
    logits: torch.Tensor | None = None
    keep: torch.Tensor | None = None
    grid: tuple[int, int] | None = None
    cell_logits: torch.Tensor | None = None  # CNN: the per-cell logits [B, H*W] windows average


class SparseEncoder(TokenBackbone):
    """A backbone with a saliency predictor after block/stage ``prune_at``; later blocks run on
    the top-k units only.

    ViT: the units are the patch tokens after block ``prune_at`` (class/register tokens are
    always kept); the kept tokens are gathered and blocks ``prune_at:`` run on them.
    CNN: the units are ``window`` x ``window`` windows of the map after stage ``prune_at``
    (each scored by the mean logit of its cells); the kept windows are cut out and the later
    stages run on them as a batch of small maps (a dense map of K windows instead of all), so
    compute shrinks with K; the pooled feature is the mean over every output cell of every
    kept window. A window sees no context across its border (zero padding), the price of the
    speed-up; with all windows kept the full map runs as usual.

    ``fuse`` (ViT): ``"none"``, or EViT's fused token of the pruned ones (``"token"``: pooled as
    one token; ``"area"``: pooled with the weight of the tokens it replaces; see the module).

    ``forward(x)`` (the downstream encoder) keeps ``keep_ratio`` of the units, deterministically.
    """

    def __init__(self, backbone: TokenBackbone, predictor: SaliencyPredictor, prune_at: int,
                 keep_ratio: float, window: int | None = None, fuse: str = "none"):
        super().__init__()
        self.backbone, self.predictor = backbone, predictor
        self.prune_at, self.keep_ratio = prune_at, keep_ratio
        if fuse not in FUSE_MODES:
            raise ValueError(f"fuse must be one of {', '.join(FUSE_MODES)}, got {fuse!r}")
        if fuse != "none" and not isinstance(backbone, ViTBackbone):
            raise ValueError("fuse needs a ViT backbone (a CNN keeps whole windows): set fuse=none for a CNN")
        self.fuse = fuse
        self.window = window or default_window(backbone, prune_at)
        self.name, self.dim = backbone.name, backbone.dim
        self.is_vit = isinstance(backbone, ViTBackbone)
        self.reduces_compute = True
        self.grid = backbone.grid if self.is_vit else None
        self.num_tokens = backbone.num_tokens

    def forward(self, x: torch.Tensor, keep=None) -> torch.Tensor:
        if keep is not None:
            raise ValueError("a SparseEncoder chooses its own tokens")
        return self.run(x, self.keep_ratio).features

    def run(self, x: torch.Tensor, keep_ratio: float, generator: torch.Generator | None = None,
            noise: float = 0.0, straight_through: bool = False, score: bool = True) -> Pruned:
        """One pass at ``keep_ratio``. ``score=False`` skips the predictor (the dense model,
        only valid at keep_ratio 1); ``straight_through`` multiplies kept units by
        ``s / s.detach()`` so the loss's gradient reaches the predictor."""
        if not score and keep_ratio < 1:
            raise ValueError("pruning needs the predictor (score=True)")
        run = self._run_vit if self.is_vit else self._run_cnn
        return run(x, keep_ratio, generator, noise, straight_through, score)

    # ------------------------------------------------------------------ ViT
    def saliency_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The predictor's logits [B, N] for the patch tokens of ``x`` (ViT), without pruning:
        blocks ``[0, prune_at)`` and the predictor only."""
        if not self.is_vit:
            raise ValueError("saliency_logits scores ViT patch tokens; a CNN scores windows")
        return self.predictor(self._vit_front(x)[:, self.backbone.vit.num_prefix_tokens:])

    def _vit_front(self, x: torch.Tensor) -> torch.Tensor:
        """Blocks ``[0, prune_at)`` on every token (prefix tokens first)."""
        bb: ViTBackbone = self.backbone
        return bb.run_blocks(bb.add_prefix(bb.embed(x)), 0, self.prune_at)

    def _run_vit(self, x, keep_ratio, generator, noise, straight_through, score) -> Pruned:
        bb: ViTBackbone = self.backbone
        h = self._vit_front(x)
        logits = keep = fused = None
        npre = bb.vit.num_prefix_tokens
        if score:
            prefix, patches = h[:, :npre], h[:, npre:]
            n = patches.shape[1]
            logits = self.predictor(patches)
            k = keep_count(n, keep_ratio)
            if k < n:
                keep = select_top_k(logits, k, generator, noise)
                if self.fuse != "none":
                    fused = fuse_dropped(patches, logits, keep)
                patches = gather_tokens(patches, keep)
            if straight_through:
                patches = patches * straight_through_factor(logits, keep).to(patches.dtype)
            h = torch.cat([prefix, patches] + ([fused] if fused is not None else []), dim=1)
        h = bb.vit.norm(bb.run_blocks(h, self.prune_at, None))
        if fused is not None and self.fuse == "area" and bb.pool_type != "token":
            kept, f = h[:, npre:-1], h[:, -1]
            feats = (kept.sum(1) + (n - kept.shape[1]) * f) / n
        else:
            feats = bb.pool(Encoded(h, num_prefix=npre))
        return Pruned(feats, logits, keep, bb.grid)

    # ------------------------------------------------------------------ CNN
    def map_size(self) -> tuple[int, int]:
        """Side of the CNN map after stage ``prune_at`` (every stage but the first halves it)."""
        f = 2 ** sum(1 for i in range(self.prune_at) if i > 0)
        return self.backbone.grid[0] // f, self.backbone.grid[1] // f

    def window_grid(self, fmap_hw: tuple[int, int]) -> tuple[int, int]:
        h, w = fmap_hw
        if h % self.window or w % self.window:
            raise ValueError(f"the {h}x{w} map after stage {self.prune_at} is not divisible into "
                             f"{self.window}x{self.window} windows: change window or the image size")
        return h // self.window, w // self.window

    def _run_cnn(self, x, keep_ratio, generator, noise, straight_through, score) -> Pruned:
        bb: CNNBackbone = self.backbone
        fmap = bb.run_stages(bb.stem(x), 0, self.prune_at)
        b, c, h, w = fmap.shape
        if not score:
            out = bb.final_norm(bb.run_stages(fmap, self.prune_at, None))
            return Pruned(out.mean(dim=(2, 3)))
        gh, gw = self.window_grid((h, w))
        cell_logits = self.predictor(fmap.flatten(2).transpose(1, 2))            # [B, H*W]
        logits = F.avg_pool2d(cell_logits.view(b, 1, h, w), self.window).flatten(1)  # [B, U]
        k = keep_count(gh * gw, keep_ratio)
        if k == gh * gw:
            if straight_through:
                f = straight_through_factor(logits, None).view(b, 1, gh, gw)
                fmap = fmap * F.interpolate(f, scale_factor=self.window, mode="nearest").to(fmap.dtype)
            out = bb.final_norm(bb.run_stages(fmap, self.prune_at, None))
            return Pruned(out.mean(dim=(2, 3)), logits, None, (gh, gw), cell_logits)
        keep = select_top_k(logits, k, generator, noise)
        win = self.windows(fmap)                                                  # [B, U, C, w, w]
        kept = torch.gather(win, 1, keep.view(b, k, 1, 1, 1).expand(-1, -1, *win.shape[2:]))
        if straight_through:
            kept = kept * straight_through_factor(logits, keep).view(b, k, 1, 1, 1).to(kept.dtype)
        out = bb.final_norm(bb.run_stages(kept.flatten(0, 1), self.prune_at, None))
        feats = out.view(b, k, *out.shape[1:]).mean(dim=(1, 3, 4))
        return Pruned(feats, logits, keep, (gh, gw), cell_logits)

    def windows(self, fmap: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, U, C, window, window] in raster order of the window grid."""
        b, c, h, w = fmap.shape
        s = self.window
        t = fmap.view(b, c, h // s, s, w // s, s).permute(0, 2, 4, 1, 3, 5)
        return t.reshape(b, (h // s) * (w // s), c, s, s)


def patchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """Images [B, 1, S, S] -> per-image standardised pixel patches [B, N, patch * patch]
    (raster order, the ViT's token order)."""
    x = (x - x.mean(dim=(1, 2, 3), keepdim=True)) / x.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    b, _, s, _ = x.shape
    g = s // patch
    return x.view(b, g, patch, g, patch).permute(0, 1, 3, 2, 4).reshape(b, g * g, patch * patch)


def rarity_target(patches: torch.Tensor, mean: torch.Tensor, sq: torch.Tensor,
                  keep_ratio: float) -> torch.Tensor:
    """1 for the ``keep_ratio`` most atypical tokens of each image, else 0. Atypicality = mean
    squared z-score of the token's pixels against the running per-position statistics
    (``mean``, ``sq``: [N, P]), i.e. how unlike the same place in other images the token is."""
    return top_fraction(pixel_z2(patches, mean, sq).mean(-1), keep_ratio)


def pixel_z2(patches: torch.Tensor, mean: torch.Tensor, sq: torch.Tensor) -> torch.Tensor:
    """Squared z-score of each pixel against per-position statistics (``mean``, ``sq``: [N, P])."""
    return (patches - mean) ** 2 / (sq - mean ** 2).clamp_min(1e-4)


def top_fraction(score: torch.Tensor, keep_ratio: float) -> torch.Tensor:
    """0/1 mask [B, N] of the ``keep_count(N, keep_ratio)`` highest scores of each row."""
    target = torch.zeros_like(score)
    return target.scatter_(1, score.topk(keep_count(score.shape[1], keep_ratio), dim=1).indices, 1.0)
