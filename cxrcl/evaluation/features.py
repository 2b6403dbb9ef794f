"""Frozen features for probes, and the pixel-PCA floor.

An encoder reaches evaluation as a *feature extractor*: any callable
``extract(images uint8 [N, H, W]) -> float32 [N, D]`` (it batches internally; an object with a
``features`` or ``extract`` method is accepted too). :func:`extract_splits` streams a prepared
data set's memory-mapped images through it in batches (never the whole set as floats), once per
split; the test split can be degraded (:mod:`cxrcl.data.degrade`) for robustness.

The pixel floor (``cxrcl eval ... --run pixels``): every image is area-averaged down to 32 x 32
px (1,024 values in [0, 1]), and a PCA with 256 components (capped at n_train - 1 and at the
number of pixels) is fitted on the *train split only*; the projections are the features. On a
few hundred small images this often beats self-supervised encoders trained from scratch, so it
is the honest bar every method has to clear.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cxrcl.data.degrade import degrade
from cxrcl.data.prepared import PreparedDataset
from cxrcl.errors import CxrclError

Extractor = Callable[[np.ndarray], np.ndarray]
Features = dict[str, tuple[np.ndarray, np.ndarray]]


def as_extractor(obj) -> Extractor:
    """A callable, or an object with ``features``/``extract`` -> the callable."""
    for name in ("features", "extract"):
        fn = getattr(obj, name, None)
        if callable(fn):
            return fn
    if callable(obj):
        return obj
    raise TypeError(f"{type(obj).__name__} is not a feature extractor (need a callable "
                    "images uint8 [N, H, W] -> float32 [N, D])")


def extract_splits(ds: PreparedDataset, extract, splits: Sequence[str] = ("train", "val", "test"),
                   batch_size: int = 256, degrade_level: int = 0, seed: int = 0) -> Features:
    """``{split: (features float32 [n, D], rows int64 [n])}``, rows in data set order.

    Only the ``test`` split is degraded (at ``degrade_level`` with ``seed``; each image's
    corruption depends on its row number, not on batching). An empty split gives [0, D] (or
    [0, 0] when no split has rows yet).
    """
    fn = as_extractor(extract)
    out: Features = {}
    dim = None
    for split in splits:
        rows = ds.indices(split).astype(np.int64)
        chunks = []
        for a in range(0, len(rows), batch_size):
            r = rows[a:a + batch_size]
            imgs = np.asarray(ds.images[r])
            if split == "test" and degrade_level:
                imgs = degrade(imgs, degrade_level, seed, positions=r)
            feats = _check(fn(imgs), len(r), ds)
            if dim is None:
                dim = feats.shape[1]
            elif feats.shape[1] != dim:
                raise CxrclError(f"the encoder returned {feats.shape[1]}-dim features for some images "
                                 f"of {ds.root} and {dim}-dim for others")
            chunks.append(feats)
        out[split] = (np.concatenate(chunks) if chunks else None, rows)
    for split, (f, rows) in out.items():
        if f is None:
            out[split] = (np.zeros((0, dim or 0), np.float32), rows)
    return out


def _check(feats, n: int, ds: PreparedDataset) -> np.ndarray:
    if isinstance(feats, torch.Tensor):
        feats = feats.detach().float().cpu().numpy()
    f = np.asarray(feats, dtype=np.float32)
    if f.ndim != 2 or len(f) != n:
        raise CxrclError(f"the encoder returned features of shape {f.shape} for {n} images of "
                         f"{ds.root}; expected [{n}, D]")
    if not np.isfinite(f).all():
        raise CxrclError(f"the encoder returned NaN or infinite features on {ds.root}: the "
                         "checkpoint is probably diverged; evaluate an earlier one or retrain")
    return f


def downsample(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 [N, H, W] -> float32 [N, size*size] in [0, 1] by area averaging (adaptive pooling)."""
    x = torch.from_numpy(np.asarray(images, dtype=np.float32) * np.float32(1 / 255.0)).unsqueeze(1)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.adaptive_avg_pool2d(x, (size, size))
    return x.reshape(len(x), -1).numpy()


class PixelPCA:
    """Feature extractor: downsample to ``size`` px, project on the train-split PCA basis."""

    def __init__(self, mean: np.ndarray, components: np.ndarray, size: int, batch_size: int = 1024):
        self.mean = mean.astype(np.float32)
        self.components = components.astype(np.float32)  # [k, size*size]
        self.size = int(size)
        self.batch_size = int(batch_size)

    @property
    def n_components(self) -> int:
        return int(self.components.shape[0])

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim == 2:
            images = images[None]
        out = np.empty((len(images), self.n_components), np.float32)
        for a in range(0, len(images), self.batch_size):
            x = downsample(images[a:a + self.batch_size], self.size)
            out[a:a + len(x)] = (x - self.mean) @ self.components.T
        return out

    def __repr__(self) -> str:
        return f"PixelPCA(size={self.size}, n_components={self.n_components})"


def fit_pixel_pca(ds: PreparedDataset, train_rows: np.ndarray | None = None, n_components: int = 256,
                  size: int = 32, batch_size: int = 1024) -> PixelPCA:
    """Fit the pixel floor on ``train_rows`` (default: the train split) only.

    Components = min(n_components, n_train - 1, size * size). Streaming and deterministic: the
    mean and the [size^2, size^2] scatter matrix are accumulated in float64 over batches, the
    basis is its top eigenvectors (signs fixed so each component's largest entry is positive).
    """
    rows = ds.indices("train") if train_rows is None else np.asarray(train_rows, dtype=np.int64)
    if len(rows) < 2:
        raise CxrclError(f"{ds.root} has {len(rows)} training images: the pixel floor needs at least 2")
    size = int(min(size, ds.size))
    d = size * size
    total = np.zeros(d, np.float64)
    scatter = np.zeros((d, d), np.float64)
    for a in range(0, len(rows), batch_size):
        x = downsample(np.asarray(ds.images[rows[a:a + batch_size]]), size).astype(np.float64)
        total += x.sum(axis=0)
        scatter += x.T @ x
    n = len(rows)
    mean = total / n
    cov = scatter / n - np.outer(mean, mean)
    evals, evecs = np.linalg.eigh(cov)
    k = int(min(n_components, n - 1, d))
    comp = evecs[:, ::-1][:, :k].T  # [k, d], by decreasing variance
    signs = np.sign(comp[np.arange(k), np.abs(comp).argmax(axis=1)])
    comp = comp * np.where(signs == 0, 1.0, signs)[:, None]
    return PixelPCA(mean, comp, size)
