"""End-to-end fine-tuning (``cxrcl eval finetune``): the pre-trained encoder plus a fresh linear
head, all weights trained on the labelled sample, early-stopped on the val split.

Protocol (EVALUATION.md), shared with the linear probe: the labelled train images at each
(fraction, seed) are :func:`cxrcl.evaluation.fractions.sample_label_fraction` of the train split,
so every encoder (and the linear probe) sees the same labelled images; the val labels used for
early stopping are sampled the same way at the same fraction and seed (``val_labels="matched"``,
the default; ``"full"``: all of val); the test split is scored once, after training, by the
checkpoint that early stopping kept. Nothing is selected on test.

Our choices (the papers fine-tune with their own recipes; these are one recipe for every
encoder, sized for a CPU):

- Head: one ``nn.Linear(D, L)`` on the encoder's pooled features (zero-initialised), L = number
  of labels; loss = binary cross-entropy over the known labels only (unknown = NaN is masked).
- AdamW, ``lr`` (1e-4) for the encoder and ``head_lr_scale`` (10x) for the head, weight decay
  0.05 (none on biases and norms), constant rate, gradient norm clipped at 3. No augmentation.
- Layer-wise lr decay (``layer_decay``, e.g. 0.75; off by default): timm's
  ``param_groups_layer_decay`` on the ViT (per block; class token, position and patch embedding
  lowest) or, for a CNN, per stage (stem lowest); group lr = lr x its ``lr_scale``.
- An epoch is one pass over the labelled sample but at least ``min_steps_per_epoch`` (10)
  batches, so that 1 % of the labels (a handful of images) still trains the head.
- After every epoch: macro AUROC on the val labels (labels whose val sample has both classes);
  the best epoch is kept (ties -> lower val loss); training stops after ``patience`` epochs
  without improvement or at ``max_epochs``. Val without both classes for any label -> the val
  loss decides.
- Seeds change the labelled sample, the head's initialisation and the batch order; the encoder
  starts from the same weights every time (for ``random:BACKBONE``, the seeded floor init).
- Device: CUDA when present (bf16 autocast where supported), else CPU in fp32.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn

from cxrcl.data.normalize import to_model_input
from cxrcl.data.prepared import PreparedDataset
from cxrcl.encoders import Encoder
from cxrcl.errors import CxrclError
from cxrcl.evaluation.bootstrap import attach_uncertainty
from cxrcl.evaluation.features import extract_splits
from cxrcl.evaluation.fractions import (
    DEFAULT_FRACTIONS,
    parse_fractions,
    sample_label_fraction,
    seed_list,
)
from cxrcl.evaluation.results import (
    VAL_LABELS,
    build_result,
    check_both_classes,
    open_dataset,
    val_rows,
)

__all__ = ["FinetuneConfig", "finetune"]


class FinetuneConfig:
    """Budget and optimiser settings (CPU-sized defaults; see the module docstring)."""

    KEYS = ("max_epochs", "patience", "lr", "head_lr_scale", "weight_decay", "layer_decay",
            "batch_size", "min_steps_per_epoch", "grad_clip")

    def __init__(self, max_epochs: int = 20, patience: int = 5, lr: float = 1e-4,
                 head_lr_scale: float = 10.0, weight_decay: float = 0.05,
                 layer_decay: float | None = None, batch_size: int = 32,
                 min_steps_per_epoch: int = 10, grad_clip: float = 3.0):
        self.max_epochs, self.patience, self.lr = int(max_epochs), int(patience), float(lr)
        self.head_lr_scale, self.weight_decay = float(head_lr_scale), float(weight_decay)
        self.layer_decay = None if layer_decay is None else float(layer_decay)
        self.batch_size, self.min_steps_per_epoch = int(batch_size), int(min_steps_per_epoch)
        self.grad_clip = float(grad_clip)
        self.check()

    def check(self) -> None:
        for name in ("max_epochs", "patience", "batch_size", "min_steps_per_epoch"):
            if getattr(self, name) < 1:
                raise CxrclError(f"finetune {name.replace('_', '-')}={getattr(self, name)} must be >= 1")
        for name in ("lr", "head_lr_scale", "grad_clip"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise CxrclError(f"finetune {name.replace('_', '-')}={v} must be a finite number > 0")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise CxrclError(f"finetune weight-decay={self.weight_decay} must be >= 0")
        if self.layer_decay is not None and not (0 < self.layer_decay <= 1):
            raise CxrclError(f"--layer-decay {self.layer_decay} must be in (0, 1], e.g. 0.75")

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.KEYS}


class _Classifier(nn.Module):
    def __init__(self, backbone: nn.Module, dim: int, n_labels: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(dim, n_labels)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def _backbone_groups(backbone: nn.Module, cfg: FinetuneConfig) -> list[dict]:
    """Param groups of the encoder: weight decay on matrices only; timm's layer-wise lr decay
    when ``cfg.layer_decay`` is set (``lr_scale`` per group)."""
    if cfg.layer_decay is None:
        decay = [p for p in backbone.parameters() if p.requires_grad and p.ndim > 1]
        rest = [p for p in backbone.parameters() if p.requires_grad and p.ndim <= 1]
        return [{"params": decay, "weight_decay": cfg.weight_decay, "lr_scale": 1.0},
                {"params": rest, "weight_decay": 0.0, "lr_scale": 1.0}]
    from timm.optim import param_groups_layer_decay

    vit = getattr(backbone, "vit", None)
    if vit is not None and hasattr(vit, "group_matcher"):
        target, prefix = vit, "vit."
        extra = [p for n, p in backbone.named_parameters() if not n.startswith(prefix)]
    else:  # CNNBackbone: stem lowest, then one group per stage, the final norm on top
        target, extra = _StageGrouped(backbone), []
    groups = param_groups_layer_decay(target, weight_decay=cfg.weight_decay,
                                      layer_decay=cfg.layer_decay,
                                      no_weight_decay_list=getattr(target, "no_weight_decay",
                                                                   lambda: set())())
    if extra:
        groups.append({"params": extra, "weight_decay": 0.0, "lr_scale": 1.0})
    return groups


class _StageGrouped(nn.Module):
    """A CNN backbone seen through a timm-style ``group_matcher`` (per stage)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.inner = backbone

    def group_matcher(self, coarse: bool = False) -> dict:
        return {"stem": r"^inner\.stem", "blocks": [(r"^inner\.stages\.(\d+)", None),
                                                     (r"^inner\.final_norm", (99999,))]}


def _optimizer(model: _Classifier, cfg: FinetuneConfig) -> torch.optim.Optimizer:
    groups = _backbone_groups(model.backbone, cfg)
    groups.append({"params": [model.head.weight], "weight_decay": cfg.weight_decay,
                   "lr_scale": cfg.head_lr_scale})
    groups.append({"params": [model.head.bias], "weight_decay": 0.0, "lr_scale": cfg.head_lr_scale})
    groups = [g for g in groups if g["params"]]
    for g in groups:
        g["lr"] = cfg.lr * g.get("lr_scale", 1.0)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def _autocast(device: torch.device):
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


@torch.no_grad()
def _predict(model: nn.Module, images: np.ndarray, image_size: int, device: torch.device,
             batch_size: int = 256) -> np.ndarray:
    model.eval()
    out = []
    for a in range(0, len(images), batch_size):
        x = to_model_input(np.asarray(images[a:a + batch_size]), image_size, device)
        with _autocast(device):
            out.append(model(x).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.head.out_features), np.float32)


def _read(ds: PreparedDataset, rows: np.ndarray) -> np.ndarray:
    """uint8 images of ``rows`` (any order) from the memory map, read in sorted order."""
    order = np.argsort(rows, kind="stable")
    out = np.empty((len(rows),) + ds.images.shape[1:], np.uint8)
    out[order] = ds.images[rows[order]]
    return out


def _masked_bce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    known = ~torch.isnan(y)
    if not known.any():
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[known], y[known])


def _val_metrics(logits: np.ndarray, y: np.ndarray) -> tuple[float | None, float]:
    aucs = []
    for j in range(y.shape[1]):
        m = ~np.isnan(y[:, j])
        if len(np.unique(y[m, j])) == 2:
            aucs.append(roc_auc_score(y[m, j].astype(int), logits[m, j]))
    loss = float(_masked_bce(torch.from_numpy(logits).float(), torch.from_numpy(y).float())) if len(y) else 0.0
    return (float(np.mean(aucs)) if aucs else None), loss


def train_one(ds: PreparedDataset, backbone: nn.Module, dim: int, image_size: int,
              train_rows: np.ndarray, y_train: np.ndarray, val_rows_: np.ndarray, y_val: np.ndarray,
              cfg: FinetuneConfig, seed: int, device: torch.device) -> tuple[_Classifier, dict]:
    """Fine-tune ``backbone`` + a fresh head on ``train_rows``, early-stopped on ``val_rows_``.

    Only these rows are read: the caller passes no test row (tested). Returns the best model
    and its training record.
    """
    torch.manual_seed(seed)
    model = _Classifier(backbone, dim, y_train.shape[1]).to(device)
    opt = _optimizer(model, cfg)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0xF17E])
    x_val = _read(ds, val_rows_) if len(val_rows_) else None
    n = len(train_rows)
    steps = max(math.ceil(n / cfg.batch_size), cfg.min_steps_per_epoch)
    best, best_state, bad, history = None, None, 0, []
    y_train_t = torch.from_numpy(np.asarray(y_train, dtype=np.float32))
    t0 = time.perf_counter()
    order, pos = rng.permutation(n), 0
    for epoch in range(1, cfg.max_epochs + 1):
        model.train()
        for _ in range(steps):
            take = []
            while len(take) < min(cfg.batch_size, n):
                if pos == n:
                    order, pos = rng.permutation(n), 0
                k = min(cfg.batch_size - len(take), n - pos)
                take.extend(order[pos:pos + k])
                pos += k
            idx = np.asarray(take)
            x = to_model_input(_read(ds, train_rows[idx]), image_size, device)
            with _autocast(device):
                logits = model(x)
            loss = _masked_bce(logits.float(), y_train_t[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
        if x_val is not None:
            val_auc, val_loss = _val_metrics(_predict(model, x_val, image_size, device), y_val)
        else:
            val_auc, val_loss = None, float(loss.detach())
        history.append({"epoch": epoch, "val_auroc": val_auc, "val_loss": val_loss})
        key = (val_auc if val_auc is not None else -math.inf, -val_loss)
        if best is None or key > best[0]:
            best, bad = (key, epoch, val_auc, val_loss), 0
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    model.load_state_dict(best_state)
    record = {"best_epoch": best[1], "epochs_run": len(history), "steps_per_epoch": steps,
              "val_auroc": best[2], "val_loss": best[3], "train_s": round(time.perf_counter() - t0, 3)}
    return model, record


def finetune(ds: PreparedDataset | str | os.PathLike, encoder: Encoder, labels: str | Sequence[str],
             fractions=DEFAULT_FRACTIONS, seeds: int | Sequence[int] = 3, degrade_level: int = 0,
             run_name: str = "encoder", *, config: FinetuneConfig | dict | None = None,
             val_labels: str = "matched", extra: dict | None = None) -> dict:
    """Fine-tuned test AUROC at each label fraction and seed; returns the eval JSON (task
    ``"finetune"``, the shape of the linear probe's, with ``auroc_ci`` from bootstrap.py).

    ``encoder``: a :class:`cxrcl.encoders.Encoder` (a run or ``random:BACKBONE``); it is copied
    for every (fraction, seed), never changed.
    """
    if not isinstance(encoder, Encoder):
        raise CxrclError("fine-tuning needs an encoder with weights (a run directory or "
                         "random:BACKBONE); the pixel floor is evaluated with `cxrcl eval linear`")
    if val_labels not in VAL_LABELS:
        raise CxrclError(f"--val-labels {val_labels!r}: choose one of {', '.join(VAL_LABELS)}")
    cfg = config if isinstance(config, FinetuneConfig) else FinetuneConfig(**(config or {}))
    ds = open_dataset(ds)
    labels = ds.resolve_labels(labels)
    fractions, seeds = parse_fractions(fractions), seed_list(seeds)
    check_both_classes(ds, labels, "test")
    check_both_classes(ds, labels, "train")
    rtr, rva, rte = (ds.indices(s).astype(np.int64) for s in ("train", "val", "test"))
    ytr, yva, yte = ds.labels(labels, rtr), ds.labels(labels, rva), ds.labels(labels, rte)
    device = encoder.device

    results, test_scores = [], []
    t0 = time.perf_counter()
    for fraction in fractions:
        for seed in seeds:
            sample = sample_label_fraction(ytr, fraction, seed)
            vs = val_rows(yva, fraction, seed, val_labels)
            model, rec = train_one(ds, copy.deepcopy(encoder.backbone), encoder.dim, encoder.image_size,
                                   rtr[sample], ytr[sample], rva[vs], yva[vs], cfg, seed, device)
            # the test split, read only now (degraded when asked), scored by the kept checkpoint
            (scores, _), = extract_splits(ds, lambda im, m=model: _predict(m, im, encoder.image_size, device),
                                          splits=("test",), degrade_level=degrade_level).values()
            per_label, n_tr, n_va = {}, {}, {}
            s_full = np.full(yte.shape, np.nan)
            for j, name in enumerate(labels):
                tm = ~np.isnan(yte[:, j])
                per_label[name] = float(roc_auc_score(yte[tm, j].astype(int), scores[tm, j]))
                s_full[tm, j] = scores[tm, j]
                n_tr[name] = int((~np.isnan(ytr[sample, j])).sum())
                n_va[name] = int((~np.isnan(yva[vs, j])).sum())
            results.append({"fraction": fraction, "seed": seed, "n_train": int(len(sample)),
                            "n_val": int(len(vs)), "n_train_per_label": n_tr, "n_val_per_label": n_va,
                            "auroc": float(np.mean(list(per_label.values()))),
                            "auroc_per_label": per_label, **rec})
            test_scores.append(s_full)
            del model
    protocol = {
        "model": "pre-trained encoder + zero-initialised nn.Linear head, every weight trained",
        "loss": "binary cross-entropy over the known labels",
        "optimizer": "AdamW, constant lr (head x head_lr_scale), grad-norm clip"
                     + (f", layer-wise lr decay {cfg.layer_decay} (timm param_groups_layer_decay)"
                        if cfg.layer_decay else ""),
        "early_stopping": "macro AUROC on the val labels of 'val_labels' after every epoch (ties -> "
                          "lower val loss); the best epoch's weights score the test split",
        "config": cfg.to_dict(),
        "device": str(device),
        "val_labels": VAL_LABELS[val_labels],
        "fraction_sampler": "cxrcl.evaluation.fractions.sample_label_fraction (the linear probe's)",
    }
    if degrade_level:
        protocol.update(degrade_seed=0, degrade="cxrcl.data.degrade.degrade on the test split only")
    result = build_result(task="finetune", run_name=run_name, labels=labels, ds=ds,
                          degrade_level=degrade_level, feature_dim=int(encoder.dim), results=results,
                          protocol=protocol, timing={"finetune_s": round(time.perf_counter() - t0, 3)},
                          extra=extra)
    return attach_uncertainty(result, rte, yte, np.stack(test_scores))
