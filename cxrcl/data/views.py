"""View makers: CXR-safe augmentations and token partitions, batched on the model's device.

Augmentations (SimCLR and the other two-view baselines). Our choice, "CXR-safe": no horizontal
flips (the heart's side is anatomy, not noise), no colour ops beyond grey-level changes, mild
geometry only:

* random resized crop, area 0.5-1.0 of the image, aspect 3/4-4/3, rotation +-10 degrees,
  all in one affine warp per sample (``affine_grid`` + ``grid_sample``);
* brightness +-0.2, contrast x0.7-1.3, gamma 0.7-1.4 (exposure variation);
* Gaussian blur (p=0.5, sigma 0.1-1.5 px at the input size) and Gaussian noise (std 0-0.04).

lightly ships per-PIL-image transforms; we apply the same kind of operations to a whole batch
of tensors at once, on the GPU when there is one, seeded by a ``torch.Generator`` so a resumed
run draws the same views.

Partitions (S-PCL): the patch tokens of one image are split into disjoint index sets, either
uniformly at random or by spatial blocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cxrcl.data.normalize import MEAN, STD


def _uniform(b: int, lo: float, hi: float, g: torch.Generator, device) -> torch.Tensor:
    return torch.rand(b, generator=g, device=device) * (hi - lo) + lo


@dataclass(frozen=True)
class AugmentConfig:
    crop_area: tuple[float, float] = (0.5, 1.0)
    aspect: tuple[float, float] = (3 / 4, 4 / 3)
    rotation_deg: float = 10.0
    brightness: float = 0.2
    contrast: tuple[float, float] = (0.7, 1.3)
    gamma: tuple[float, float] = (0.7, 1.4)
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 1.5)
    noise_std: tuple[float, float] = (0.0, 0.04)


def warp(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Resample ``x`` [B, C, S, S] on a sampling ``grid`` from :func:`random_crop_grid`."""
    # padding_mode="border": a rotated corner repeats the edge instead of inventing black
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=False)


def random_crop_grid(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """The sampling grid [B, S, S, 2] of one random resized crop + rotation per sample."""
    b, dev = x.shape[0], x.device
    area = _uniform(b, *cfg.crop_area, g, dev)
    log_r = _uniform(b, math.log(cfg.aspect[0]), math.log(cfg.aspect[1]), g, dev)
    ratio = log_r.exp()
    sx = (area * ratio).sqrt().clamp(max=1.0)
    sy = (area / ratio).sqrt().clamp(max=1.0)
    tx = (torch.rand(b, generator=g, device=dev) * 2 - 1) * (1 - sx)
    ty = (torch.rand(b, generator=g, device=dev) * 2 - 1) * (1 - sy)
    th = _uniform(b, -cfg.rotation_deg, cfg.rotation_deg, g, dev) * math.pi / 180
    cos, sin = th.cos(), th.sin()
    theta = torch.stack([torch.stack([sx * cos, -sy * sin, tx], 1),
                         torch.stack([sx * sin, sy * cos, ty], 1)], 1)
    return F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-sample separable Gaussian blur; sigma [B] in pixels (0 = identity)."""
    b, c, h, w = x.shape
    radius = max(1, int(math.ceil(3 * float(sigma.max()))))
    offs = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (offs[None] / sigma.clamp_min(1e-3)[:, None].to(x.dtype)) ** 2)
    k = k / k.sum(1, keepdim=True)  # [B, K]
    xs = x.reshape(1, b * c, h, w)
    kc = k.repeat_interleave(c, 0)
    xs = F.conv2d(F.pad(xs, (radius, radius, 0, 0), mode="replicate"), kc[:, None, None, :], groups=b * c)
    xs = F.conv2d(F.pad(xs, (0, 0, radius, radius), mode="replicate"), kc[:, None, :, None], groups=b * c)
    return xs.view(b, c, h, w)


def intensity_jitter(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Brightness, contrast and gamma in the [0, 1] domain; returns normalised input again."""
    b, dev = x.shape[0], x.device
    u = (x * STD + MEAN).clamp(0, 1)
    gamma = _uniform(b, *cfg.gamma, g, dev).view(b, 1, 1, 1)
    u = u.clamp_min(1e-6) ** gamma
    mean = u.mean(dim=(1, 2, 3), keepdim=True)
    u = (u - mean) * _uniform(b, *cfg.contrast, g, dev).view(b, 1, 1, 1) + mean
    u = u + _uniform(b, -cfg.brightness, cfg.brightness, g, dev).view(b, 1, 1, 1)
    return (u.clamp(0, 1) - MEAN) / STD


def augment(x: torch.Tensor, g: torch.Generator, cfg: AugmentConfig = AugmentConfig()) -> torch.Tensor:
    """One CXR-safe random view of a normalised batch [B, 1, S, S]."""
    return augment_with_grid(x, g, cfg)[0]


def augment_with_grid(x: torch.Tensor, g: torch.Generator,
                      cfg: AugmentConfig = AugmentConfig()) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`augment`, and the view's sampling grid, so a map over the original image can be
    carried into the view with :func:`warp` (the same random draws as :func:`augment`)."""
    b, dev = x.shape[0], x.device
    grid = random_crop_grid(x, cfg, g)
    x = warp(x, grid)
    x = intensity_jitter(x, cfg, g)
    if cfg.blur_p > 0:
        on = torch.rand(b, generator=g, device=dev) < cfg.blur_p
        sigma = _uniform(b, *cfg.blur_sigma, g, dev) * on
        if bool(on.any()):
            x = gaussian_blur(x, sigma)
    noise = _uniform(b, *cfg.noise_std, g, dev).view(b, 1, 1, 1) / STD
    return x + noise * torch.randn(x.shape, generator=g, device=dev, dtype=x.dtype), grid


# ----------------------------------------------------------------------------- partitions
def partition_sizes(n: int, ratios: tuple[float, ...]) -> list[int]:
    """Token counts per view for ``n`` tokens; ratios sum to <= 1 (the rest is dropped).

    With ratios summing to 1 the views cover every token: the counts are the floors of
    ``r * n`` plus the remainder dealt by largest fractional part (49 tokens at 0.5/0.5 give
    25 + 24, never 24 + 24). Otherwise each count is ``round(r * n)`` (at least 1).
    """
    if any(r <= 0 for r in ratios) or sum(ratios) > 1 + 1e-9:
        raise ValueError(f"partition ratios {ratios} must be > 0 and sum to <= 1")
    if abs(sum(ratios) - 1) <= 1e-9:
        exact = [r * n for r in ratios]
        sizes = [int(x) for x in exact]
        by_remainder = sorted(range(len(ratios)), key=lambda i: (-(exact[i] - sizes[i]), i))
        for i in by_remainder[:n - sum(sizes)]:
            sizes[i] += 1
        if min(sizes) < 1:
            raise ValueError(f"partition ratios {ratios} leave a view without tokens out of {n}")
        return sizes
    sizes = [max(1, int(round(r * n))) for r in ratios]
    if sum(sizes) > n:
        raise ValueError(f"partition ratios {ratios} ask for {sum(sizes)} of {n} tokens")
    return sizes


def random_partition(b: int, n: int, ratios: tuple[float, ...], g: torch.Generator,
                     device=None) -> list[torch.Tensor]:
    """Per sample, a uniformly random split of ``range(n)`` into disjoint index sets [B, n_v]."""
    perm = torch.rand(b, n, generator=g, device=device).argsort(dim=1)
    out, start = [], 0
    for size in partition_sizes(n, ratios):
        out.append(perm[:, start:start + size])
        start += size
    return out


def block_partition(b: int, grid: tuple[int, int], block: int, ratios: tuple[float, ...],
                    g: torch.Generator, device=None) -> list[torch.Tensor]:
    """Spatially structured partition: ``block`` x ``block`` groups of cells go to one view.

    Blocks are shuffled per sample and dealt to the views by the ratios; with ratios summing to
    1 the views cover every token. Token indices are returned sorted by block order.
    """
    h, w = grid
    if h % block or w % block:
        raise ValueError(f"grid {grid} is not divisible by block size {block}")
    bh, bw = h // block, w // block
    nb = bh * bw
    rows = torch.arange(h, device=device).view(h, 1).expand(h, w)
    cols = torch.arange(w, device=device).view(1, w).expand(h, w)
    block_id = ((rows // block) * bw + cols // block).flatten()          # [N]
    members = block_id.argsort(stable=True).view(nb, block * block)     # cells of each block
    parts = random_partition(b, nb, ratios, g, device)
    return [members[p].flatten(1) for p in parts]
