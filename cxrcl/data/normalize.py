"""The one canonical CXR transform: uint8 grey image -> float tensor, used everywhere.

Our choice: intensities are mapped to [0, 1] and standardised with a fixed mean 0.5 and std 0.25
(no per-data-set statistics, so an encoder means the same thing on every data set); images are
resized (bilinear, antialiased) to the model's input size when the prepared size differs.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

MEAN = 0.5
STD = 0.25


def to_model_input(images: np.ndarray | torch.Tensor, image_size: int | None = None,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 [B, H, W] (numpy or tensor) -> float32 [B, 1, S, S], normalised, on ``device``."""
    if isinstance(images, np.ndarray):  # a read-only memmap slice is copied (torch needs writable memory)
        images = np.ascontiguousarray(images) if images.flags.writeable else np.array(images)
        x = torch.from_numpy(images)
    else:
        x = images
    if x.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images, got {x.dtype}")
    if x.ndim == 2:
        x = x[None]
    x = x.to(device=device, non_blocking=True).unsqueeze(1).float().div_(255.0)
    if image_size is not None and x.shape[-1] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True,
                          align_corners=False)
    return x.sub_(MEAN).div_(STD)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_model_input` (for plots and overlays): [B, 1, S, S] -> uint8 [B, S, S]."""
    return (x.squeeze(1) * STD + MEAN).clamp(0, 1).mul(255).round().to(torch.uint8)
