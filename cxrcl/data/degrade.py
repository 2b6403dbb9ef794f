"""Image-quality degradation for robustness tests (``cxrcl eval ... --degrade-test LEVEL``).

CoMCL's low-quality views (uneven illumination, artefact spots, blur, noise), plus what a poor
chest radiograph looks like (under/over-exposure and low contrast, anti-scatter grid lines, low
resolution). Robustness of an encoder = AUROC on clean test images minus AUROC on degraded ones.

Levels: 0 = identity (the input, unchanged); 1 = mild, 2 = moderate, 3 = severe. Every component
is applied at every level > 0 with its magnitude proportional to the level; the random draws of
an image (gradient direction, spot positions, noise field, ...) depend only on (seed, position)
so level 2 is the same corruption as level 1, stronger, and severity is monotone. Positions are
the images' indices in the array, or the ``positions`` given (use data set row numbers so the
result does not depend on batching). Pure numpy, float32, vectorised over the batch (only the
per-image random draws loop over images); deterministic on every machine.

Our choices, per level s in {1, 2, 3} for an image of H px (intensities in [0, 1]), in order:

- exposure: gamma exp(+-0.2 s u), u ~ U(0.6, 1), under or over at random (per-image lookup table);
- resolution: Gaussian blur sigma = 0.3 s H/64 px, then down-sampling by 1 + 0.5 s and back (bilinear);
- contrast: x (1 - 0.1 s) around the image mean;
- uneven illumination: linear gradient in a random direction + one broad bright or dark blob,
  amplitude 0.06 s;
- grid lines: horizontal or vertical sinusoidal stripes, period 3-6 px at 224 px (scaled with H),
  amplitude 0.02 s;
- artefact spots: 2 s rounded spots (radius 1.5-4 % of H), bright or dark, strength 0.25 s;
- noise: Gaussian, std 0.02 s.

All fields are separable (outer products of per-row and per-column profiles), so a batch of
256 images of 224 px takes well under a second.

``components`` restricts a call to some of the kinds above (``COMPONENTS``; default all, the
``--degrade-test`` setting); the random draws do not depend on it, so a component looks the
same alone as in the combination. :func:`degrade_batch` is the training-side entry point
(CoMCL's low-quality views): normalised tensors in and out, a level and a component set per
image, every draw from a ``torch.Generator`` -- the same function, so training and robustness
evaluation share one definition of "low quality".
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import torch

from cxrcl.data.normalize import to_model_input, to_uint8
from cxrcl.errors import CxrclError

LEVELS = (0, 1, 2, 3)
COMPONENTS = ("exposure", "resolution", "contrast", "illumination", "grid", "spots", "noise")
_MAX_SPOTS = 2 * max(LEVELS)
_CHUNK = 16


def degrade(images: np.ndarray, level: int, seed: int = 0,
            positions: np.ndarray | None = None,
            components: Collection[str] | None = None) -> np.ndarray:
    """Degrade uint8 images [N, H, W] (or one [H, W]) at ``level``; returns uint8 of the same shape.

    ``components``: a subset of :data:`COMPONENTS` to apply (None = all of them).

    >>> bad = degrade(ds.images[rows], level=2, seed=0, positions=rows)
    """
    level = int(level)
    if level not in LEVELS:
        raise CxrclError(f"degradation level {level} is not available: use one of {list(LEVELS)} "
                         "(0 = none, 3 = severe)")
    kinds = frozenset(COMPONENTS if components is None else components)
    if not kinds or not kinds <= set(COMPONENTS):
        raise ValueError(f"components must be a non-empty subset of {COMPONENTS}, got {sorted(kinds)}")
    arr = np.asarray(images)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
        raise ValueError(f"expected uint8 images [N, H, W], got {arr.dtype} {arr.shape}")
    if level == 0:
        return np.array(arr, copy=True)
    single = arr.ndim == 2
    x = arr[None] if single else arr
    n, h, w = x.shape
    pos = np.arange(n) if positions is None else np.asarray(positions, dtype=np.int64)
    if pos.shape != (n,):
        raise ValueError(f"positions must have one entry per image ({n}), got shape {pos.shape}")
    if n == 0:
        return np.array(arr, copy=True)
    out = np.empty(x.shape, dtype=np.uint8)
    for a in range(0, n, _CHUNK):  # small chunks keep temporaries in cache (3x faster at 224 px)
        out[a:a + _CHUNK] = _degrade_chunk(x[a:a + _CHUNK], level, int(seed), pos[a:a + _CHUNK], kinds)
    return out[0] if single else out


def _degrade_chunk(x: np.ndarray, level: int, seed: int, pos: np.ndarray,
                   kinds: frozenset[str] = frozenset(COMPONENTS)) -> np.ndarray:
    n, h, w = x.shape
    s = float(level)
    p = _draw(pos, seed, h, w)

    # 1. exposure (gamma, under or over) as a per-image lookup table on the uint8 input
    gamma = np.exp(p["exp_sign"] * 0.2 * s * p["exp_u"]) if "exposure" in kinds else np.ones(n)
    lut = (np.arange(256, dtype=np.float64)[None, :] / 255.0) ** gamma[:, None]
    y = lut.astype(np.float32)[np.arange(n)[:, None, None], x]

    # 2. resolution: blur then down/up-sampling
    if "resolution" in kinds:
        y = _gaussian_blur(y, 0.3 * s * h / 64.0)
        f = 1.0 + 0.5 * s
        y = _resize(_resize(y, max(2, round(h / f)), max(2, round(w / f))), h, w)

    # 3. contrast loss around each image's mean, uneven illumination (gradient + broad blob),
    #    grid lines and artefact spots: all separable fields, so cheap at any size
    if "contrast" in kinds:
        mean = y.mean(axis=(1, 2), keepdims=True)
        y = mean + (y - mean) * np.float32(1.0 - 0.1 * s)
    yy = (np.arange(h, dtype=np.float32) / max(h - 1, 1))[None, :, None]
    xx = (np.arange(w, dtype=np.float32) / max(w - 1, 1))[None, None, :]
    amp = np.float32(0.06 * s if "illumination" in kinds else 0.0)
    ca, sa = np.cos(p["ill_angle"])[:, None, None], np.sin(p["ill_angle"])[:, None, None]
    y += amp * ((xx - 0.5) * ca + (yy - 0.5) * sa)  # gradient, peak +-0.7 amp
    y += (amp * p["blob_sign"])[:, None, None] * (
        np.exp(-((yy - p["blob_y"][:, None, None]) ** 2) / (2 * 0.25 ** 2))
        * np.exp(-((xx - p["blob_x"][:, None, None]) ** 2) / (2 * 0.25 ** 2)))
    period = np.maximum(p["grid_period"] * max(h, w) / 224.0, 2.0)
    phase = p["grid_phase"]
    rows = np.sin(2 * np.pi * np.arange(h, dtype=np.float32)[None, :] / period[:, None] + phase[:, None])
    cols = np.sin(2 * np.pi * np.arange(w, dtype=np.float32)[None, :] / period[:, None] + phase[:, None])
    vert = p["grid_vertical"]
    g = np.float32(0.02 * s if "grid" in kinds else 0.0)
    y += g * (~vert)[:, None, None] * rows[:, :, None] + g * vert[:, None, None] * cols[:, None, :]
    yi = np.arange(h, dtype=np.float32)[None, :]
    xi = np.arange(w, dtype=np.float32)[None, :]
    for k in range(2 * level if "spots" in kinds else 0):  # first 2*level of the drawn spots; rounded squares exp(-(d/r)^4)
        r = p["spot_r"][:, k, None] * h
        py = _profile((yi - p["spot_y"][:, k, None] * h) / r)
        px = _profile((xi - p["spot_x"][:, k, None] * w) / r)
        y += (np.float32(0.25 * s) * p["spot_sign"][:, k])[:, None, None] * py[:, :, None] * px[:, None, :]

    # 4. noise
    if "noise" in kinds:
        y += np.float32(0.02 * s) * p["noise"]

    return np.clip(np.rint(y * 255.0), 0, 255).astype(np.uint8)


def _profile(t: np.ndarray) -> np.ndarray:
    """exp(-t^4), flushed to 0 where tiny (denormal floats are 100x slower)."""
    v = np.exp(-np.minimum(t * t, 30.0) ** 2)
    v[v < 1e-6] = 0.0
    return v


def _draw(pos: np.ndarray, seed: int, h: int, w: int) -> dict[str, np.ndarray]:
    """Per-image random parameters from a generator seeded by (seed, position) only."""
    n = len(pos)
    keys = ("exp_sign", "exp_u", "ill_angle", "blob_y", "blob_x", "blob_sign", "grid_period",
            "grid_vertical", "grid_phase")
    p: dict[str, np.ndarray] = {k: np.empty(n, np.float32) for k in keys}
    for k in ("spot_y", "spot_x", "spot_r", "spot_sign"):
        p[k] = np.empty((n, _MAX_SPOTS), np.float32)
    p["noise"] = np.empty((n, h, w), np.float32)
    for i, q in enumerate(pos):
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(q), 0xDE6])
        p["exp_sign"][i] = rng.choice([-1.0, 1.0])
        p["exp_u"][i] = rng.uniform(0.6, 1.0)
        p["ill_angle"][i] = rng.uniform(0, 2 * np.pi)
        p["blob_y"][i], p["blob_x"][i] = rng.uniform(0.15, 0.85, size=2)
        p["blob_sign"][i] = rng.choice([-1.0, 1.0])
        p["grid_period"][i] = rng.uniform(3.0, 6.0)
        p["grid_vertical"][i] = rng.random() < 0.5
        p["grid_phase"][i] = rng.uniform(0, 2 * np.pi)
        p["spot_y"][i] = rng.uniform(0.05, 0.95, _MAX_SPOTS)
        p["spot_x"][i] = rng.uniform(0.05, 0.95, _MAX_SPOTS)
        p["spot_r"][i] = rng.uniform(0.015, 0.04, _MAX_SPOTS)
        p["spot_sign"][i] = rng.choice([-1.0, 1.0], _MAX_SPOTS)
        p["noise"][i] = rng.standard_normal((h, w), dtype=np.float32)
    p["grid_vertical"] = p["grid_vertical"].astype(bool)
    return p


def _gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of [N, H, W] float32 with edge padding."""
    if sigma < 0.2:
        return x
    r = max(1, int(np.ceil(3 * sigma)))
    t = np.arange(-r, r + 1, dtype=np.float32)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    k /= k.sum()
    for axis in (1, 2):
        pad = [(0, 0)] * 3
        pad[axis] = (r, r)
        xp = np.pad(x, pad, mode="edge")
        n = x.shape[axis]
        acc = k[r] * x
        for j in range(r):  # symmetric kernel: pair the taps at -d and +d
            lo = xp[:, j:j + n] if axis == 1 else xp[:, :, j:j + n]
            hi = (xp[:, 2 * r - j:2 * r - j + n] if axis == 1 else xp[:, :, 2 * r - j:2 * r - j + n])
            acc += k[j] * (lo + hi)
        x = acc
    return x


def _resize(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of [N, H, W] (align_corners=False convention), separable."""
    def axis_weights(n_in: int, n_out: int):
        c = (np.arange(n_out, dtype=np.float64) + 0.5) * n_in / n_out - 0.5
        c = np.clip(c, 0, n_in - 1)
        i0 = np.floor(c).astype(np.int64)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, (c - i0).astype(np.float32)

    if x.shape[1] != h:
        i0, i1, t = axis_weights(x.shape[1], h)
        x = x[:, i0, :] * (1 - t)[None, :, None] + x[:, i1, :] * t[None, :, None]
    if x.shape[2] != w:
        i0, i1, t = axis_weights(x.shape[2], w)
        x = x[:, :, i0] * (1 - t)[None, None, :] + x[:, :, i1] * t[None, None, :]
    return x


def degrade_batch(x: torch.Tensor, levels: torch.Tensor, generator: torch.Generator,
                  single_component_p: float = 0.5) -> torch.Tensor:
    """Low-quality copies of a normalised batch [B, 1, S, S] (CoMCL's degraded views).

    ``levels`` [B] (ints in 1..3, or 0 = unchanged) give each image's severity. Each image gets
    either the full combination of :data:`COMPONENTS` (as ``--degrade-test`` does) or, with
    probability ``single_component_p``, one component drawn uniformly (our choice: the network
    should meet each kind of defect alone as well as the mixture). The seed of :func:`degrade`
    comes from ``generator``, so a resumed run draws the same corruptions. The images pass
    through uint8 like every test image does; the result is on ``x``'s device.
    """
    b = x.shape[0]
    levels = levels.to("cpu", torch.long)
    single = torch.rand(b, generator=generator, device=generator.device).cpu() < single_component_p
    kind = torch.randint(len(COMPONENTS), (b,), generator=generator, device=generator.device).cpu()
    seed = int(torch.randint(2 ** 31 - 1, (1,), generator=generator, device=generator.device))
    u8 = to_uint8(x.detach()).cpu().numpy()
    out = u8.copy()
    pos = np.arange(b)
    mode = torch.where(single, kind, len(COMPONENTS))  # len(COMPONENTS) = all of them
    for level in levels.unique().tolist():
        if level == 0:
            continue
        for m in mode[levels == level].unique().tolist():
            sel = ((levels == level) & (mode == m)).numpy()
            comps = None if m == len(COMPONENTS) else (COMPONENTS[m],)
            out[sel] = degrade(u8[sel], level, seed, positions=pos[sel], components=comps)
    return to_model_input(out, device=x.device).to(x.dtype)
