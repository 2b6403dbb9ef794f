"""Backbones with one token interface over timm (METHODS.md, "Common ground").

    tokens = backbone.embed(x)             # [B, N, D] patch tokens, positions already added
    enc = backbone.encode(tokens, keep)    # run the rest of the network on a SUBSET of tokens
    z = backbone.pool(enc)                 # [B, D]

``keep`` is a LongTensor [B, K] of token indices (or None for all tokens). For a ViT the kept
tokens are *gathered*, so the transformer blocks really run on K tokens and compute shrinks
(S-PCL, SparseContrast, MaCo, MAE rely on this). For a CNN the tokens are the cells of the
stem's feature map; dropped cells are zeroed and the later stages run densely (convolutions
cannot skip cells without sparse kernels), and pooling averages only the output cells that
kept cells support: the *representation* is partial, the compute is not reduced.

Our choices: one grey input channel, ``pretrained=False`` by default (no downloads here),
ViT pooling = mean of patch tokens after the final norm (``pool=token`` uses the class token).
``stem=conv`` gives a ViT a patch-local convolutional stem (:mod:`cxrcl.models.patch_stem`):
each token still depends on its own patch only, so masking methods stay exact.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import timm
import torch
import torch.nn.functional as F
from torch import nn

from cxrcl.errors import CxrclError
from cxrcl.models.patch_stem import PatchLocalConvStem
from cxrcl.specs import check_keys, parse_spec

DEFAULT_BACKBONE = "vit_tiny_patch16_224"
OUR_KEYS = {"pool", "stem"}


@dataclass
class Encoded:
    """Output of ``encode``: tokens [B, M, D], of which the first ``num_prefix`` are prefix
    (class) tokens, and an optional per-token pooling weight [B, M - num_prefix]."""

    tokens: torch.Tensor
    num_prefix: int = 0
    weight: torch.Tensor | None = None

    @property
    def patch_tokens(self) -> torch.Tensor:
        return self.tokens[:, self.num_prefix:]


def gather_tokens(tokens: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """tokens [B, N, D], keep [B, K] -> [B, K, D] (a real gather: K rows are copied)."""
    return torch.gather(tokens, 1, keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


class TokenBackbone(nn.Module):
    """Common interface; subclasses set ``num_tokens``, ``grid``, ``dim``, ``name``."""

    name: str
    num_tokens: int
    grid: tuple[int, int]
    dim: int
    reduces_compute: bool  # True when encoding K tokens costs ~K/N of a full pass

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode(self, tokens: torch.Tensor, keep: torch.Tensor | None = None) -> Encoded:
        raise NotImplementedError

    def pool(self, enc: Encoded) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled features [B, D] of images [B, 1, S, S] (optionally of a token subset)."""
        return self.pool(self.encode(self.embed(x), keep))


class ViTBackbone(TokenBackbone):
    """A timm VisionTransformer behind the token interface."""

    reduces_compute = True

    def __init__(self, vit: nn.Module, name: str, pool: str = "avg"):
        super().__init__()
        if pool not in ("avg", "token"):
            raise CxrclError(f"backbone {name}: pool must be 'avg' or 'token', got {pool!r}")
        if getattr(vit, "dynamic_img_size", False) or getattr(vit, "attn_pool", None) is not None:
            raise CxrclError(f"backbone {name}: dynamic image size and attention pooling are not supported")
        if pool == "token" and vit.cls_token is None:
            raise CxrclError(f"backbone {name} has no class token: use pool=avg")
        self.vit, self.name, self.pool_type = vit, name, pool
        self.grid = tuple(vit.patch_embed.grid_size)
        self.num_tokens = self.grid[0] * self.grid[1]
        self.dim = vit.embed_dim
        self.patch_size = vit.patch_embed.patch_size[0]

    def _prefix(self, batch: int) -> list[torch.Tensor]:
        """Class/register tokens (with their position embedding when the model has one)."""
        v = self.vit
        pre = [t.expand(batch, -1, -1) for t in (v.cls_token, getattr(v, "reg_token", None))
               if t is not None]
        if not pre:
            return []
        x = torch.cat(pre, dim=1)
        if v.pos_embed is not None and not v.no_embed_class:
            x = x + v.pos_embed[:, :v.num_prefix_tokens]
        return [x]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        v = self.vit
        t = v.patch_embed(x)
        if v.pos_embed is not None:
            pos = v.pos_embed if v.no_embed_class else v.pos_embed[:, v.num_prefix_tokens:]
            t = t + pos
        return t

    def run_blocks(self, x: torch.Tensor, start: int = 0, end: int | None = None) -> torch.Tensor:
        """Run blocks[start:end] on [B, M, D] (prefix included); SparseContrast splits here."""
        for blk in self.vit.blocks[start:end]:
            x = blk(x)
        return x

    def add_prefix(self, tokens: torch.Tensor) -> torch.Tensor:
        x = torch.cat(self._prefix(tokens.shape[0]) + [tokens], dim=1)
        return self.vit.norm_pre(self.vit.pos_drop(x))

    def encode(self, tokens: torch.Tensor, keep: torch.Tensor | None = None) -> Encoded:
        if keep is not None:
            tokens = gather_tokens(tokens, keep)
        x = self.run_blocks(self.add_prefix(tokens))
        return Encoded(self.vit.norm(x), num_prefix=self.vit.num_prefix_tokens)

    def pool(self, enc: Encoded) -> torch.Tensor:
        if self.pool_type == "token":
            return enc.tokens[:, 0]
        return enc.patch_tokens.mean(dim=1)


class CNNBackbone(TokenBackbone):
    """A timm ResNet or ConvNeXt; tokens are the cells of the stem's feature map."""

    reduces_compute = False

    def __init__(self, cnn: nn.Module, name: str, image_size: int, pool: str = "avg"):
        super().__init__()
        if pool != "avg":
            raise CxrclError(f"backbone {name}: CNNs pool by average only (pool=avg)")
        # only the parts are registered: registering the whole timm model as well would store
        # every tensor under two names and break the safetensors checkpoint round trip
        self.name, self.image_size = name, image_size
        if hasattr(cnn, "layer1"):  # ResNet family
            self.stem = nn.Sequential(cnn.conv1, cnn.bn1, cnn.act1, cnn.maxpool)
            self.stages = nn.Sequential(cnn.layer1, cnn.layer2, cnn.layer3, cnn.layer4)
            self.final_norm: nn.Module = nn.Identity()
        elif hasattr(cnn, "stem") and hasattr(cnn, "stages"):  # ConvNeXt family
            self.stem, self.stages = cnn.stem, cnn.stages
            self.final_norm = cnn.norm_pre
        else:
            raise CxrclError(f"backbone {name}: only ViT, ResNet and ConvNeXt families are supported")
        with torch.no_grad():
            probe = self.stem(torch.zeros(1, 1, image_size, image_size))
        self.grid = tuple(probe.shape[-2:])
        self.num_tokens = self.grid[0] * self.grid[1]
        self.token_dim = probe.shape[1]
        self.dim = cnn.num_features

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x).flatten(2).transpose(1, 2)  # [B, H*W, C]

    def run_stages(self, fmap: torch.Tensor, start: int = 0, end: int | None = None) -> torch.Tensor:
        """Run stages[start:end] on a map [B, C, H, W]; SparseContrast splits here (it runs the
        later stages on the salient windows only, see :mod:`cxrcl.models.saliency`)."""
        for stage in self.stages[start:end]:
            fmap = stage(fmap)
        return fmap

    def encode(self, tokens: torch.Tensor, keep: torch.Tensor | None = None) -> Encoded:
        b, n, c = tokens.shape
        h, w = self.grid
        weight = None
        if keep is not None:
            cell = torch.zeros(b, n, device=tokens.device, dtype=tokens.dtype)
            cell.scatter_(1, keep, 1.0)
            tokens = tokens * cell.unsqueeze(-1)
        fmap = self.final_norm(self.stages(tokens.transpose(1, 2).reshape(b, c, h, w)))
        out = fmap.flatten(2).transpose(1, 2)
        if keep is not None:
            support = F.adaptive_max_pool2d(cell.view(b, 1, h, w), fmap.shape[-2:])
            weight = support.flatten(1)
        return Encoded(out, num_prefix=0, weight=weight)

    def pool(self, enc: Encoded) -> torch.Tensor:
        if enc.weight is None:
            return enc.tokens.mean(dim=1)
        w = enc.weight.unsqueeze(-1)
        return (enc.tokens * w).sum(1) / w.sum(1).clamp_min(1e-6)  # weights may be fractional


def _timm_kwargs_valid(name: str) -> set[str]:
    """Constructor keywords the timm model class accepts (for the unknown-key error)."""
    entry = timm.models.model_entrypoint(name)
    cls = None
    model = entry.__module__
    for cand in vars(inspect.getmodule(entry)).values():
        if inspect.isclass(cand) and issubclass(cand, nn.Module) and cand.__module__ == model:
            sig = inspect.signature(cand.__init__).parameters
            if "in_chans" in sig or "num_classes" in sig:
                cls = cand
                break
    keys = set(inspect.signature(cls.__init__).parameters) - {"self", "args", "kwargs"} if cls else set()
    return keys | {"drop_rate", "drop_path_rate"}


def create_backbone(spec: str = DEFAULT_BACKBONE, image_size: int = 128,
                    pretrained: bool = False) -> TokenBackbone:
    """A backbone from a timm name plus overrides, e.g. ``vit_tiny_patch16_224:patch_size=8``.

    Overrides go to ``timm.create_model`` except ``pool`` (ours). ``pretrained=True`` uses
    timm's hub loading (needs network; never used by cxrcl's defaults or tests).
    """
    name, kwargs = parse_spec(spec)
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:8]
        raise CxrclError(f"unknown backbone {name!r}; timm names such as {', '.join(close) or 'vit_tiny_patch16_224, resnet18'}")
    pool = kwargs.pop("pool", "avg")
    stem = kwargs.pop("stem", "linear")
    is_vit = "vit" in name or "deit" in name
    if stem not in ("linear", "conv") or (stem == "conv" and not is_vit):
        raise CxrclError(f"backbone {spec!r}: stem must be 'linear' (default) or 'conv', and "
                         f"'conv' is for ViTs only (got stem={stem!r} on {name})")
    timm_kwargs = dict(pretrained=pretrained, in_chans=1, num_classes=0, **kwargs)
    if is_vit:
        timm_kwargs["img_size"] = image_size
    try:
        model = timm.create_model(name, **timm_kwargs)
    except TypeError as e:
        if "unexpected keyword" not in str(e):
            raise
        check_keys(f"backbone {name}", kwargs, (_timm_kwargs_valid(name) | OUR_KEYS) - {"img_size", "in_chans", "num_classes"})
        raise CxrclError(f"backbone {spec!r}: {e}") from None
    if is_vit:
        if image_size % model.patch_embed.patch_size[0]:
            raise CxrclError(f"image size {image_size} is not a multiple of the patch size "
                             f"{model.patch_embed.patch_size[0]} of {name}")
        if stem == "conv":  # refuses patches under 4 px itself
            model.patch_embed.proj = PatchLocalConvStem(model.patch_embed.proj)
        return ViTBackbone(model, name, pool=pool)
    return CNNBackbone(model, name, image_size, pool=pool)
