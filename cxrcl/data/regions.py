"""Where the lesion is: pluggable region sources and lesion/healthy patch crops (CoMCL's views).

The CoMCL paper finds lesions with a pretrained detector; we have none, so a *region source*
gives, for each image of a batch, a lesion map [B, S, S] in [0, 1] (1 = lesion). Sources:

* ``mask``     -- the prepared data set's ``masks.npy``: the phantom's ground truth (union of its
  lesions) or a data set's own masks (covid_chestxray: 192 model-generated *lung* masks, so
  there "lesion" means "inside the lungs", where COVID-19 opacities are; it is not a lesion
  annotation). Rows without a mask (``has_mask`` 0) get an empty map.
* ``box``      -- the phantom's ``lesion_boxes`` column (``[finding, x0, y0, x1, y1]`` in pixels
  of the prepared image), rasterised.
* ``saliency`` -- a model trained earlier (any ``cxrcl pretrain`` run): per patch token, how
  unlike the image's mean token it is (1 - cosine to the mean of the final tokens); the top
  ``1 - quantile`` of tokens is the lesion map. Our choice: it needs no labels and works for any
  backbone (ViT tokens, or the cells of a CNN's last feature map); it is an "unusual region"
  detector, not a lesion detector.

``mask`` and ``box`` need the data set rows of the batch (see :meth:`Method.set_batch_rows`);
``saliency`` needs the images only.

Patches (our choice): on a coarse grid of ``GRID`` x ``GRID`` cells, a square patch of
``patch_fraction`` of the image side is placed where the lesion map covers it: lesion patches
are drawn with probability proportional to their lesion coverage (uniformly when an image has
no lesion at all: a normal image then contributes a patch of normal anatomy as its "lesion"),
healthy patches uniformly among the placements of *least* coverage (zero whenever the image has
any lesion-free placement). Patches are resampled to the model's input size.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cxrcl.errors import CxrclError

GRID = 16
SOURCES = ("mask", "box", "saliency")


class RegionSource:
    """Lesion maps for a batch: ``maps(images [B,1,S,S], rows or None) -> [B, S, S]`` in [0, 1]."""

    needs_rows = True

    def maps(self, images: torch.Tensor, rows: np.ndarray | None) -> torch.Tensor:
        raise NotImplementedError

    def _check_rows(self, images: torch.Tensor, rows) -> np.ndarray:
        if rows is None:
            raise CxrclError(f"regions={self.name} needs the data set rows of each batch: the training "
                             "loop must call method.set_batch_rows(rows, dataset); use "
                             "regions=saliency with region_run=DIR to work from the images alone")
        rows = np.asarray(rows)
        if len(rows) != images.shape[0]:
            raise ValueError(f"{len(rows)} rows for a batch of {images.shape[0]} images")
        return rows

    @staticmethod
    def _resize(maps: np.ndarray, size: int, device) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32)).to(device)[:, None]
        if t.shape[-1] != size:
            t = F.interpolate(t, size=(size, size), mode="area" if t.shape[-1] > size else "nearest")
        return t[:, 0].clamp(0, 1)


class MaskRegions(RegionSource):
    name = "mask"

    def __init__(self, dataset):
        if dataset.masks is None:
            raise CxrclError(f"regions=mask: {dataset.root} has no masks.npy; use comcl:regions=none "
                             "(image-level pairs only), regions=box (phantom) or "
                             "regions=saliency:region_run=DIR")
        self.masks = dataset.masks
        has = dataset.meta["has_mask"].to_numpy() if "has_mask" in dataset.meta.columns else None
        self.has_mask = None if has is None else has.astype(bool)

    def maps(self, images, rows):
        rows = self._check_rows(images, rows)
        m = np.asarray(self.masks[rows], dtype=np.float32)
        if self.has_mask is not None:
            m[~self.has_mask[rows]] = 0.0
        return self._resize(m, images.shape[-1], images.device)


class BoxRegions(RegionSource):
    name = "box"

    def __init__(self, dataset):
        if "lesion_boxes" not in dataset.meta.columns:
            raise CxrclError(f"regions=box: {dataset.root}/meta.csv has no lesion_boxes column "
                             "(only the phantom has one); use regions=mask or regions=saliency:run=DIR")
        self.boxes = dataset.meta["lesion_boxes"].to_numpy()
        self.size = dataset.size

    def maps(self, images, rows):
        rows = self._check_rows(images, rows)
        m = np.zeros((len(rows), self.size, self.size), np.float32)
        for i, r in enumerate(rows):
            text = self.boxes[r]
            for _, x0, y0, x1, y1 in json.loads(text) if text else []:
                m[i, int(y0):int(y1), int(x0):int(x1)] = 1.0
        return self._resize(m, images.shape[-1], images.device)


class SaliencyRegions(RegionSource):
    """Token distinctiveness of a trained encoder (frozen, not part of the method's weights)."""

    name = "saliency"
    needs_rows = False

    def __init__(self, run: str, quantile: float = 0.85):
        if not run:
            raise CxrclError("regions=saliency needs region_run=DIR, a run written by `cxrcl pretrain`")
        if not 0 < quantile < 1:
            raise CxrclError(f"region_quantile must be in (0, 1), got {quantile}")
        if not (Path(run) / "config.yaml").exists():
            raise CxrclError(f"region_run={run} is not a run directory (no config.yaml)")
        self.run, self.quantile, self._encoder = run, quantile, None

    def _backbone(self, device):
        if self._encoder is None:
            from cxrcl.encoders import load_encoder  # lazy: encoders imports the method registry

            self._encoder = load_encoder(self.run, device=device)
        return self._encoder

    @torch.no_grad()
    def maps(self, images, rows):
        enc = self._backbone(images.device)
        x = images
        if x.shape[-1] != enc.image_size:
            x = F.interpolate(x, size=(enc.image_size,) * 2, mode="bilinear", antialias=True,
                              align_corners=False)
        tokens = enc.backbone.encode(enc.backbone.embed(x)).patch_tokens.float()  # [B, N, D]
        side = int(round(tokens.shape[1] ** 0.5))
        distinct = 1 - F.cosine_similarity(tokens, tokens.mean(1, keepdim=True), dim=-1)
        threshold = distinct.quantile(self.quantile, dim=1, keepdim=True)
        m = (distinct >= threshold).float().view(-1, 1, side, side)
        return F.interpolate(m, size=images.shape[-2:], mode="nearest")[:, 0]


def region_source(name: str, dataset=None, run: str = "", quantile: float = 0.85) -> RegionSource:
    if name == "saliency":
        return SaliencyRegions(run, quantile)
    if name in ("mask", "box"):
        if dataset is None:
            raise CxrclError(f"regions={name} needs the data set and the rows of each batch, which "
                             "the training loop passes through method.set_batch_rows(rows, dataset); "
                             "without them use regions=saliency with region_run=DIR")
        return MaskRegions(dataset) if name == "mask" else BoxRegions(dataset)
    raise CxrclError(f"unknown region source {name!r}; use one of {', '.join(SOURCES)}")


# ----------------------------------------------------------------------------- patches
def coverage(lesion: torch.Tensor, patch_cells: int) -> torch.Tensor:
    """Lesion fraction of every patch placement: [B, S, S] -> [B, P, P], P = GRID - cells + 1."""
    cells = F.adaptive_avg_pool2d(lesion[:, None].float(), GRID)
    return F.avg_pool2d(cells, patch_cells, stride=1)[:, 0]


def place_patches(lesion: torch.Tensor, patch_fraction: float,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Top-left cells [B, 2] (row, col) of a lesion and a healthy patch per image, and the
    patch side in cells. See the module docstring for the rule."""
    cells = max(1, min(GRID, int(round(patch_fraction * GRID))))
    cov = coverage(lesion, cells).flatten(1)  # [B, P*P]
    p = GRID - cells + 1
    any_lesion = cov.sum(1, keepdim=True) > 0
    lesion_w = torch.where(any_lesion, cov, torch.ones_like(cov))
    least = cov <= cov.min(1, keepdim=True).values + 1e-6
    healthy_w = least.float()
    g_dev = generator.device
    lesion_idx = torch.multinomial(lesion_w.to(g_dev), 1, generator=generator)[:, 0].to(cov.device)
    healthy_idx = torch.multinomial(healthy_w.to(g_dev), 1, generator=generator)[:, 0].to(cov.device)

    def rc(idx):
        return torch.stack([idx // p, idx % p], 1)
    return rc(lesion_idx), rc(healthy_idx), cells


def crop_patches(images: torch.Tensor, top_left: torch.Tensor, cells: int) -> torch.Tensor:
    """Crop the cell-aligned squares ``top_left`` [B, 2] of side ``cells`` and resample each to
    the input size (bilinear): [B, C, S, S] -> [B, C, S, S]."""
    b = images.shape[0]
    scale = cells / GRID
    centre = (top_left.to(images.dtype) + cells / 2) / GRID * 2 - 1  # [-1, 1], (row, col)
    theta = torch.zeros(b, 2, 3, dtype=images.dtype, device=images.device)
    theta[:, 0, 0] = scale
    theta[:, 1, 1] = scale
    theta[:, 0, 2] = centre[:, 1]
    theta[:, 1, 2] = centre[:, 0]
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
