"""Segmentation probe (``cxrcl eval segment``): a light decoder on the encoder's feature maps.

Protocol (EVALUATION.md, issue 11): the images of the train split that have a mask are the
pool; at each fraction (1 %, 10 %, 100 % by default) and seed the masked training images are
``sample_label_fraction`` of the indicator "mask is non-empty" (the seed scheme of the linear
probe: stratified, nested over fractions, at least one image with and, where they exist, one
without a lesion). Early stopping uses the val split's masked images, sampled the same way at the
same fraction and seed (a user with 1 % of the masks has no full val set either); Dice is
measured on every masked test image and never used for any choice.

Our choices (the paper-free part):

- Features: a ViT gives four levels, the hidden tokens after blocks depth/4, depth/2, 3depth/4
  and depth (UNETR's z3, z6, z9, z12 for depth 12), each through the final norm, as maps
  [D, H/p, W/p]; a CNN gives the output of each of its stages. A SparseContrast encoder is
  segmented densely (its backbone with every token kept; the predictor is not used): a pruned
  token set has no map to decode, and its kept set depends on the image.
- Head ("light decoder", written here, ~0.1 M parameters): 1x1 lateral convs to 64 channels,
  resampled to the finest level and summed (UPerNet/FPN-style fusion without the PPM), then one
  (2x upsample, 3x3 conv, GroupNorm, ReLU) stage per factor 2 up to the input size, channels
  halving per stage down to 16 (so the full-resolution convs stay cheap on a CPU), a 1x1 conv
  to one logit, bilinear to the mask size. No skip from the raw image: the decoder sees only the
  encoder's features, so Dice measures them (UNETR's image skip would let an untrained encoder
  segment lungs from pixels alone).
- Training: AdamW (head lr 1e-3, wd 1e-4), batch 16 sampled with replacement, BCE + soft Dice
  loss, ``steps`` updates; val Dice every ``eval_every`` steps, the best state kept, stop after
  ``patience`` evaluations without gain. A gain is a higher val Dice, or the same Dice with a
  lower val loss (our choice: small lesions give Dice 0 for a while, and without the tie-break
  patience would stop a head that is still learning, keeping its first state). The encoder is
  frozen (its features are computed once) unless ``finetune`` (then it trains at lr 1e-4 and
  features are recomputed every step).
- Metric: ``torchmetrics.functional.segmentation.dice_score`` on the thresholded prediction
  (logit > 0) at the mask's resolution. ``dice`` is the mean per-image Dice over test images
  whose mask is not empty (Dice is undefined on an empty mask); ``dice_global`` pools all test
  pixels (empty masks included, so false positives on healthy images count).
"""

from __future__ import annotations

import copy
import math
import os
import time
import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.functional.segmentation import dice_score

from cxrcl.data.normalize import to_model_input
from cxrcl.data.prepared import PreparedDataset
from cxrcl.errors import CxrclError
from cxrcl.evaluation.fractions import (
    DEFAULT_FRACTIONS,
    parse_fractions,
    sample_label_fraction,
    seed_list,
)
from cxrcl.models.backbones import CNNBackbone, TokenBackbone, ViTBackbone
from cxrcl.models.saliency import SparseEncoder

HEAD_CHANNELS = 64


# ----------------------------------------------------------------------------- features
def vit_cut_points(depth: int) -> list[int]:
    """Block counts after which a level is taken: depth/4, depth/2, 3 depth/4, depth."""
    return sorted({max(1, round(depth * q / 4)) for q in (1, 2, 3, 4)})


def feature_levels(backbone: TokenBackbone, x: torch.Tensor) -> list[torch.Tensor]:
    """Multi-level feature maps [B, C_l, H_l, W_l] of images ``x`` [B, 1, S, S]."""
    if isinstance(backbone, SparseEncoder):  # dense: every token kept
        backbone = backbone.backbone
    if isinstance(backbone, ViTBackbone):
        v = backbone.vit
        h, w = backbone.grid
        z = backbone.add_prefix(backbone.embed(x))
        levels, start = [], 0
        for end in vit_cut_points(len(v.blocks)):
            z = backbone.run_blocks(z, start, end)
            start = end
            t = v.norm(z)[:, v.num_prefix_tokens:]
            levels.append(t.transpose(1, 2).reshape(t.shape[0], t.shape[2], h, w))
        return levels
    if isinstance(backbone, CNNBackbone):
        fmap, levels = backbone.stem(x), []
        for i, stage in enumerate(backbone.stages):
            fmap = stage(fmap)
            levels.append(backbone.final_norm(fmap) if i == len(backbone.stages) - 1 else fmap)
        return levels
    raise CxrclError(f"segmentation supports ViT and CNN backbones, not {type(backbone).__name__}")


# ----------------------------------------------------------------------------- the head
class SegmentationHead(nn.Module):
    """Lateral 1x1 convs -> sum at the finest level -> progressive 2x upsampling -> 1 logit."""

    def __init__(self, channels: Sequence[int], finest: int, image_size: int, width: int = HEAD_CHANNELS):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in channels)
        ups, size, c = [], finest, width
        while size * 2 <= image_size:  # channels halve as the map doubles (down to 16)
            c_out = max(c // 2, 16)
            ups.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                     nn.Conv2d(c, c_out, 3, padding=1, bias=False),
                                     nn.GroupNorm(8, c_out), nn.ReLU(inplace=True)))
            size, c = size * 2, c_out
        self.up = nn.Sequential(*ups)
        self.out = nn.Conv2d(c, 1, 1)

    def forward(self, levels: Sequence[torch.Tensor], out_size: int) -> torch.Tensor:
        size = max(t.shape[-1] for t in levels)
        fused = sum(F.interpolate(lat(t), size=(size, size), mode="bilinear", align_corners=False)
                    if t.shape[-1] != size else lat(t) for lat, t in zip(self.lateral, levels, strict=True))
        logit = self.out(self.up(fused))
        if logit.shape[-1] != out_size:
            logit = F.interpolate(logit, size=(out_size, out_size), mode="bilinear", align_corners=False)
        return logit[:, 0]


# ----------------------------------------------------------------------------- metric + loss
def _quiet_dice(*args, **kwargs) -> torch.Tensor:
    with warnings.catch_warnings():  # torchmetrics warns of a future default we do not use
        warnings.simplefilter("ignore", UserWarning)
        return dice_score(*args, **kwargs)


def dice_per_image(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image foreground Dice of binary maps [N, H, W] (torchmetrics; NaN for an empty
    target with an empty prediction)."""
    return _quiet_dice(pred.long(), target.long(), num_classes=2, include_background=False,
                      input_format="index", average="micro", aggregation_level="samplewise").reshape(-1)


def dice_pooled(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Foreground Dice over all pixels of all images (torchmetrics, global aggregation)."""
    return float(_quiet_dice(pred.long(), target.long(), num_classes=2, include_background=False,
                            input_format="index", average="micro", aggregation_level="global").reshape(-1)[0])


def _loss(logit: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    bce = F.binary_cross_entropy_with_logits(logit, target)
    p = torch.sigmoid(logit)
    inter = (p * target).sum((1, 2))
    soft = 1 - (2 * inter + 1) / (p.sum((1, 2)) + target.sum((1, 2)) + 1)
    return bce + soft.mean()


# ----------------------------------------------------------------------------- the probe
class _Split:
    """Images, masks and (frozen mode) pre-computed feature levels of one split's masked rows."""

    def __init__(self, ds: PreparedDataset, rows: np.ndarray):
        self.rows = rows
        self.images = torch.from_numpy(np.array(ds.images[rows]))
        self.masks = torch.from_numpy(np.array(ds.masks[rows])).float()
        self.levels: list[torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.rows)


def masked_rows(ds: PreparedDataset, split: str) -> np.ndarray:
    rows = ds.indices(split)
    if "has_mask" in ds.meta.columns:
        has = ds.meta["has_mask"].fillna(0).to_numpy()[rows].astype(int) == 1
        rows = rows[has]
    return rows


def check_masks(ds: PreparedDataset) -> None:
    if ds.masks is None:
        raise CxrclError(f"{ds.root} has no masks.npy: segmentation needs masks (prepare a source that "
                         "carries them, e.g. `cxrcl data prepare npz ../shared/data/covid_chestxray OUT`, "
                         "or `cxrcl data phantom OUT`)")
    for split in ("train", "test"):
        rows = masked_rows(ds, split)
        if len(rows) == 0 or not any(ds.masks[r].any() for r in rows):
            raise CxrclError(f"{ds.root} has no {split} image with a non-empty mask: segmentation needs "
                             "them in the train and test splits (re-split the data set)")


class SegmentationProbe:
    """Trains one head per (fraction, seed) on a (frozen or fine-tuned) backbone."""

    def __init__(self, backbone: TokenBackbone, image_size: int, mask_size: int, *, finetune: bool = False,
                 steps: int = 300, batch_size: int = 16, eval_every: int = 20, patience: int = 5,
                 lr: float = 1e-3, encoder_lr: float = 1e-4, device: str | torch.device = "cpu"):
        self.backbone, self.image_size, self.mask_size = backbone.to(device).eval(), image_size, mask_size
        self.finetune, self.steps, self.batch_size = finetune, steps, batch_size
        self.eval_every, self.patience, self.lr, self.encoder_lr = eval_every, patience, lr, encoder_lr
        self.device = torch.device(device)
        with torch.no_grad():
            probe = feature_levels(self.backbone, to_model_input(np.zeros((1, image_size, image_size), np.uint8),
                                                                 image_size, self.device))
        self.channels = [t.shape[1] for t in probe]
        self.finest = max(t.shape[-1] for t in probe)

    def _input(self, images: torch.Tensor) -> torch.Tensor:
        return to_model_input(images, self.image_size, self.device)

    @torch.no_grad()
    def precompute(self, split: _Split, chunk: int = 64) -> None:
        outs = [feature_levels(self.backbone, self._input(split.images[i:i + chunk]))
                for i in range(0, len(split), chunk)]
        split.levels = [torch.cat([o[k] for o in outs]).cpu() for k in range(len(self.channels))]

    def _levels(self, backbone, split: _Split, idx: torch.Tensor) -> list[torch.Tensor]:
        if split.levels is not None and backbone is self.backbone:
            return [lv[idx].to(self.device) for lv in split.levels]
        return feature_levels(backbone, self._input(split.images[idx]))

    @torch.no_grad()
    def logits(self, head, backbone, split: _Split, pos: np.ndarray, chunk: int = 64):
        """(row indices, logits [n, M, M]) for rows ``pos`` of ``split``, ``chunk`` at a time."""
        head.eval()
        backbone.eval()
        for i in range(0, len(pos), chunk):
            idx = torch.as_tensor(pos[i:i + chunk])
            yield idx, head(self._levels(backbone, split, idx), self.mask_size)

    @torch.no_grad()
    def val_scores(self, head, backbone, split: _Split, pos: np.ndarray) -> tuple[float, float]:
        """Pooled Dice and mean training loss of rows ``pos`` of ``split`` (one forward pass)."""
        preds, losses = [], []
        for idx, logit in self.logits(head, backbone, split, pos):
            preds.append((logit > 0).cpu())
            losses.append(float(_loss(logit, split.masks[idx].to(self.device))) * len(idx))
        dice = dice_pooled(torch.cat(preds), split.masks[pos])
        return (-1.0 if math.isnan(dice) else dice), sum(losses) / len(pos)

    @torch.no_grad()
    def predict(self, head, backbone, split: _Split, pos: np.ndarray | None = None) -> torch.Tensor:
        """Binary predictions [n, M, M] for ``split`` (rows ``pos`` of it, default all)."""
        pos = np.arange(len(split)) if pos is None else pos
        out = [(logit > 0).cpu() for _, logit in self.logits(head, backbone, split, pos)]
        return torch.cat(out) if out else torch.zeros(0, self.mask_size, self.mask_size, dtype=torch.bool)

    def fit(self, train: _Split, train_pos: np.ndarray, val: _Split, val_pos: np.ndarray, seed: int):
        """Train a head on ``train_pos`` rows; early stopping on pooled Dice of ``val_pos`` rows.
        Returns (head, backbone, details)."""
        torch.manual_seed(seed)
        head = SegmentationHead(self.channels, self.finest, self.image_size).to(self.device)
        backbone = copy.deepcopy(self.backbone) if self.finetune else self.backbone
        groups = [{"params": head.parameters(), "lr": self.lr}]
        if self.finetune:
            groups.append({"params": backbone.parameters(), "lr": self.encoder_lr})
        opt = torch.optim.AdamW(groups, weight_decay=1e-4)
        gen = torch.Generator().manual_seed(seed)
        best, best_loss, best_step, bad = -1.0, math.inf, 0, 0
        best_state = None
        for step in range(1, self.steps + 1):
            head.train()
            backbone.train(self.finetune)
            pick = torch.as_tensor(train_pos)[torch.randint(len(train_pos), (self.batch_size,), generator=gen)]
            logit = head(self._levels(backbone, train, pick), self.mask_size)
            loss = _loss(logit, train.masks[pick].to(self.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if len(val_pos) and (step % self.eval_every == 0 or step == self.steps):
                score, val_loss = self.val_scores(head, backbone, val, val_pos)
                if score > best + 1e-6 or (score > best - 1e-6 and val_loss < best_loss):
                    best, best_loss, best_step, bad = score, val_loss, step, 0
                    best_state = (copy.deepcopy(head.state_dict()),
                                  copy.deepcopy(backbone.state_dict()) if self.finetune else None)
                else:
                    bad += 1
                    if bad >= self.patience:
                        break
        if best_state is not None:
            head.load_state_dict(best_state[0])
            if self.finetune:
                backbone.load_state_dict(best_state[1])
        else:
            best_step = step
        return head, backbone, {"best_step": best_step, "steps_run": step,
                                "val_dice": best if best_state is not None else None}


def segmentation_probe(ds: PreparedDataset | str | os.PathLike, backbone: TokenBackbone, image_size: int,
                       run_name: str = "encoder", fractions=DEFAULT_FRACTIONS,
                       seeds: int | Sequence[int] = 3, *, finetune: bool = False, steps: int = 300,
                       batch_size: int = 16, eval_every: int = 20, patience: int = 5,
                       extra: dict | None = None, device: str | None = None) -> dict:
    """Dice of a light decoder at each mask fraction and seed; returns the eval JSON (task
    ``"segment"``; each result has ``dice``, ``dice_global``, ``n_train``, ``n_val``)."""
    from cxrcl import __version__

    ds = ds if isinstance(ds, PreparedDataset) else PreparedDataset.open(ds)
    check_masks(ds)
    fractions, seeds = parse_fractions(fractions), seed_list(seeds)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.perf_counter()
    splits = {s: _Split(ds, masked_rows(ds, s)) for s in ("train", "val", "test")}
    probe = SegmentationProbe(backbone, image_size, ds.size, finetune=finetune, steps=steps,
                              batch_size=batch_size, eval_every=eval_every, patience=patience, device=device)
    if not finetune:
        for split in splits.values():
            probe.precompute(split)
    t1 = time.perf_counter()
    train, val, test = splits["train"], splits["val"], splits["test"]
    strat_tr = (train.masks.flatten(1).amax(1) > 0).float().numpy()
    strat_va = (val.masks.flatten(1).amax(1) > 0).float().numpy()
    nonempty_test = test.masks.flatten(1).amax(1) > 0
    results = []
    for fraction in fractions:
        for seed in seeds:
            tr = sample_label_fraction(strat_tr, fraction, seed)
            va = sample_label_fraction(strat_va, fraction, seed) if len(val) else np.arange(0)
            head, bb, details = probe.fit(train, tr, val, va, seed)
            pred = probe.predict(head, bb, test)
            per_image = dice_per_image(pred, test.masks)
            results.append({"fraction": fraction, "seed": seed, "n_train": int(len(tr)), "n_val": int(len(va)),
                            "dice": float(per_image[nonempty_test].mean()) if nonempty_test.any() else None,
                            "dice_global": dice_pooled(pred, test.masks),
                            "n_test": int(len(test)), "n_test_empty": int((~nonempty_test).sum()),
                            "train_rows": [int(r) for r in train.rows[tr]], **details})
    t2 = time.perf_counter()
    summary = {}
    for fraction in fractions:
        rs = [r for r in results if r["fraction"] == fraction]
        d = np.array([r["dice"] for r in rs if r["dice"] is not None], dtype=float)
        g = np.array([r["dice_global"] for r in rs], dtype=float)
        summary[str(fraction)] = {"dice_mean": float(d.mean()) if len(d) else None,
                                  "dice_std": float(d.std(ddof=1)) if len(d) > 1 else 0.0,
                                  "dice_global_mean": float(g.mean()),
                                  "n_train_mean": float(np.mean([r["n_train"] for r in rs])), "n_seeds": len(rs)}
    n_head = sum(p.numel() for p in SegmentationHead(probe.channels, probe.finest, image_size).parameters())
    result = {
        "task": "segment", "run": str(run_name), "labels": ["mask"],
        "data": {"path": str(ds.root), "source": ds.info.get("source"),
                 "content_hash": ds.info.get("content_hash"), "split_hash": ds.split_hash,
                 "n": {s: int(len(ds.indices(s))) for s in ("train", "val", "test")},
                 "n_masked": {s: len(v) for s, v in splits.items()}, "size": ds.size},
        "degrade_test": 0, "feature_dim": int(backbone.dim), "image_size": int(image_size),
        "protocol": {
            "decoder": f"cxrcl.evaluation.segment.SegmentationHead ({n_head} parameters): 1x1 laterals "
                       f"of levels {probe.channels} -> {HEAD_CHANNELS} ch, fused at {probe.finest}x{probe.finest}, "
                       "2x upsample+conv+GroupNorm+ReLU stages (channels halving to 16), 1x1 -> logit",
            "encoder": "fine-tuned (lr 1e-4)" if finetune else "frozen",
            "tokens": ("every token kept: a SparseContrast encoder segmented densely (its backbone; "
                       "the saliency predictor unused)") if isinstance(backbone, SparseEncoder) else "every token",
            "train": f"AdamW lr 1e-3 wd 1e-4, batch {batch_size}, up to {steps} steps, BCE + soft Dice",
            "early_stopping": f"pooled val Dice every {eval_every} steps (ties: lower val loss), patience {patience}, best state kept; "
                              "val masks sampled at the same fraction and seed",
            "fraction_sampler": "sample_label_fraction of 'mask non-empty' over the train split's masked images",
            "metric": "torchmetrics dice_score (foreground, logit > 0): dice = mean per test image with a "
                      "non-empty mask; dice_global = pooled over all test pixels",
        },
        "results": results, "summary": summary, "cxrcl_version": __version__,
        "timing": {"extract_s": round(t1 - t0, 3), "probe_s": round(t2 - t1, 3)},
    }
    result.update(extra or {})
    return result


def evaluate_segment(run: str, data: str | os.PathLike, out: str | os.PathLike | None = None,
                     fractions=DEFAULT_FRACTIONS, seeds: int = 3, image_size: int | None = None,
                     finetune: bool = False, steps: int = 300) -> dict:
    """``cxrcl eval segment``: load the encoder named by ``run`` (a run directory or
    ``random:BACKBONE``), run :func:`segmentation_probe` and write the JSON to ``out``."""
    import shlex
    import sys
    from pathlib import Path

    from cxrcl.encoders import RANDOM_PREFIX, load_encoder
    from cxrcl.evaluation.outputs import check_output
    from cxrcl.evaluation.results import save_json

    run = str(run)
    if run == "pixels":
        raise CxrclError("--run pixels has no feature maps to decode: segment a run directory or random:BACKBONE")
    if out is not None:
        out = check_output(out, "json")
    if steps < 1:
        raise CxrclError(f"--steps {steps}: the segmentation head needs at least one step")
    ds = PreparedDataset.open(data)
    check_masks(ds)
    enc = load_encoder(run, image_size or ds.size) if run.startswith(RANDOM_PREFIX) else load_encoder(run, image_size)
    extra = {"command": "cxrcl " + shlex.join(sys.argv[1:])} if Path(sys.argv[0]).name == "cxrcl" else {}
    if enc.resized:
        extra["input_size"] = enc.resized
    result = segmentation_probe(ds, enc.backbone, enc.image_size, run_name=run, fractions=fractions, seeds=seeds,
                                finetune=finetune, steps=steps, extra=extra, device=str(enc.device))
    if out is not None:
        save_json(result, out)
    return result
