"""The phantom: synthetic, CXR-like frontal radiographs with known lesions, masks and reports.

The phantom exists to prove the *mechanics* of cxrcl end to end (data format, pre-training
loops, evaluation, lesion-patch sampling, saliency checks, report handling) on a machine
without any patient data. It is a drawing, not a model of anatomy or disease: nothing
learned, measured or published on it is a claim about real patients or real radiographs.

What is drawn (radiological convention: the patient's right is on the image left, so the heart
bulges to the image right):

* anatomy: dark air around a soft-tissue body with neck and shoulders, two lung fields with
  rounded apices and diaphragm domes (the right dome a little higher), a tilted heart and
  mediastinum with aortic knob, trachea, spine with vertebral bodies, clavicles, curved
  posterior and faint anterior ribs, vascular markings that fade towards the periphery and a
  gastric air bubble under the left dome;
* variation: per-patient body habitus, lung and heart shape; per-image position, scale,
  rotation (+-4 degrees), inspiration depth, exposure (gamma, gain, offset), smooth
  low-frequency intensity variation and film-grain noise;
* findings (multi-label, independent, about 40 % of images normal): ``nodule`` (small bright
  round blob in a lung), ``consolidation`` (larger fuzzy patch with air bronchograms),
  ``effusion`` (fluid at a lung base with a meniscus, blunting the costophrenic angle),
  ``cardiomegaly`` (per patient; cardiothoracic ratio 0.53-0.65 against ~0.43 normally) and
  ``pneumothorax`` (apical/lateral rim without lung markings, bounded by a thin pleural line).
  Lesion intensity varies from obvious to subtle.

Outputs per image: a uint8 image, a uint8 {0, 1} mask (union of the lesion regions; for
cardiomegaly the enlarged heart above the diaphragm; empty for normal images), one-hot labels,
``lesion_boxes`` (JSON list of ``[finding, x0, y0, x1, y1]``, one per present finding, in pixel
coordinates of the final image, half-open like slices: rows ``y0:y1``, columns ``x0:x1``;
conservative by about one pixel, and every mask pixel lies in a box), the nominal
cardiothoracic ratio ``ctr`` and a templated radiology ``report`` (EXAMINATION / INDICATION /
COMPARISON / FINDINGS / IMPRESSION on one line, varied phrasing with lobe-level locations,
explicit negations of absent findings, and ``XXXX`` de-identification placeholders as in
Open-i; the indication may mention a suspicion such as pneumonia, as real ones do).

Images are grouped into synthetic patients of 1-3 consecutive images that share habitus and
heart size (so cardiomegaly), so patient-level splitting matters. Everything is a pure
function of ``(index, size, seed)``: image ``i`` is the same whatever ``n`` is (the split,
which depends on all patients, is not). Output is byte-identical for the same arguments on the
same machine and libraries; another BLAS may round a few float sums differently.

Speed: anatomy is drawn with numpy on small cache-sized batches in an axis-aligned
anatomical frame, where most terms are separable (a ``[B, H, 1]`` part combined with a
``[B, 1, W]`` part, formed by a batched matrix product), into preallocated buffers, then
rotated by a table gather. Smooth random fields are Gaussian up-samplings of coarse random
grids (two matrix products); vascular markings are ridges of such a field in (radius, angle)
about each hilum, gathered per pixel; exposure is a per-image look-up table; film grain is a
random crop of a per-seed noise bank. Lesions are drawn in small windows. About 1,500
images/s at 128 px and 3,000 at 64 px on one core (benchmarks/bench_phantom.py).
"""

from __future__ import annotations

import json
import math
import os
from functools import lru_cache
from types import SimpleNamespace

import numpy as np
import pandas as pd

from cxrcl.data.prepared import LABEL_PREFIX, PreparedDataset
from cxrcl.data.splits import DEFAULT_SPLIT_FRACTIONS, assign_patient_splits
from cxrcl.data.writer import PreparedWriter
from cxrcl.errors import CxrclError

FINDINGS: tuple[str, ...] = ("nodule", "consolidation", "effusion", "cardiomegaly", "pneumothorax")
#: Probability of each finding (independent; cardiomegaly is drawn once per patient).
FINDING_RATES: dict[str, float] = {
    "nodule": 0.18,
    "consolidation": 0.18,
    "effusion": 0.16,
    "cardiomegaly": 0.16,
    "pneumothorax": 0.15,
}
MIN_SIZE, MAX_SIZE = 16, 1024

_F32 = np.float32
_LUT_LEVELS = 1024  # quantisation levels of the density before the exposure look-up table
_D_MAX = 1.25  # density mapped to the top LUT level
_ANGLES = np.arange(-8, 9) * 0.5  # rotation in degrees, quantised to 0.5 degree steps
_PIXEL_BUDGET = 1 << 17  # pixels per rendered batch: keeps the float arrays in cache
_GRAIN_PLANES = 8
# vessel texture per hilum: (radius, angle) bins, radius over [0, _VR_RMAX); only the first half
# of the radius bins (radius < 2, enough for every lung pixel) is drawn. Bin counts grow with
# the image size (see _tables); the control points (smoothness) do not.
_VA_CTRL, _VR_CTRL, _VR_RMAX = 18, 10, 4.0


# ============================================================================ public API
def render_phantom(n: int, size: int = 128, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Render ``n`` phantom images in memory.

    Returns ``images`` uint8 [n, size, size], ``masks`` uint8 [n, size, size] (0/1) and the
    per-image ``meta`` frame (``id``, ``patient_id``, ``label_<finding>``, ``report``,
    ``lesion_boxes``, ``ctr``, ``has_mask``; no ``split`` column: :func:`make_phantom` adds it).
    """
    n, size, seed = _check_args(n, size, seed)
    images = np.empty((n, size, size), np.uint8)
    masks = np.empty((n, size, size), np.uint8)
    rows: list[dict] = []
    for start, img, msk, meta in _iter_batches(n, size, seed):
        images[start:start + len(img)] = img
        masks[start:start + len(msk)] = msk
        rows.extend(meta)
    return images, masks, pd.DataFrame(rows)


def make_phantom(out: str | os.PathLike, n: int = 1024, size: int = 128, seed: int = 0,
                 split_fractions=DEFAULT_SPLIT_FRACTIONS, progress: bool = False,
                 overwrite: bool = False) -> PreparedDataset:
    """Write a phantom prepared data set (images, masks, meta, dataset.json) to ``out``
    (an existing prepared data set there is replaced only with ``overwrite``).

    Images are streamed batch by batch into a :class:`PreparedWriter`; the split is
    patient-level (:func:`assign_patient_splits` with ``seed``).
    """
    n, size, seed = _check_args(n, size, seed)
    # validate the fractions before rendering anything
    assign_patient_splits(["p"], split_fractions, seed)
    writer = PreparedWriter(out, n=n, size=size, with_masks=True, overwrite=overwrite)
    rows: list[dict] = []
    bar = None
    try:
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=n, unit="img", desc="phantom", leave=False)
        for start, img, msk, meta in _iter_batches(n, size, seed):
            writer.put_many(start, img, msk)
            rows.extend(meta)
            if bar is not None:
                bar.update(len(img))
        meta_df = pd.DataFrame(rows)
        meta_df.insert(2, "split", assign_patient_splits(meta_df["patient_id"], split_fractions, seed))
        return writer.finish(
            meta_df, source="phantom", label_names=list(FINDINGS), text_columns=["report"],
            split_seed=seed,
            extra={"phantom": {"seed": seed, "findings": list(FINDINGS),
                               "finding_rates": dict(FINDING_RATES),
                               "split_fractions": [float(f) for f in split_fractions],
                               "note": "synthetic phantom: proves mechanics only, "
                                       "never a claim about real patients"}},
        )
    except BaseException:
        writer.abort()
        raise
    finally:
        if bar is not None:
            bar.close()


def _check_args(n, size, seed) -> tuple[int, int, int]:
    try:
        n_i, size_i, seed_i = int(n), int(size), int(seed)
    except (TypeError, ValueError):
        raise CxrclError(f"phantom: --n, --size and --seed must be integers, got {n!r}, {size!r}, {seed!r}") from None
    if n_i != n or size_i != size or seed_i != seed:
        raise CxrclError(f"phantom: --n, --size and --seed must be integers, got {n!r}, {size!r}, {seed!r}")
    if n_i < 1:
        raise CxrclError(f"phantom: --n must be at least 1, got {n_i}")
    if not MIN_SIZE <= size_i <= MAX_SIZE:
        raise CxrclError(f"phantom: --size must be between {MIN_SIZE} and {MAX_SIZE} pixels, got {size_i}")
    if seed_i < 0:
        raise CxrclError(f"phantom: --seed must be a non-negative integer, got {seed_i}")
    return n_i, size_i, seed_i


# ============================================================================ parameters
def _patient_of(n: int, seed: int) -> np.ndarray:
    """Image index -> patient number; groups of 1-3 consecutive images (prefix-stable in n)."""
    rng = np.random.default_rng([seed, 0x5A71E47])
    sizes = rng.choice([1, 2, 3], p=[0.45, 0.35, 0.20], size=n)
    return np.repeat(np.arange(n), sizes)[:n]


class _Uniforms:
    """U(0, 1) numbers from a numpy Generator drawn in blocks (a call per number is slow)."""

    def __init__(self, rng: np.random.Generator, block: int = 96):
        self.rng, self.block = rng, block
        self.buf: list[float] = rng.random(block).tolist()
        self.i = 0

    def take(self, k: int) -> list[float]:
        if self.i + k > len(self.buf):
            self.buf, self.i = self.buf[self.i:] + self.rng.random(self.block + k).tolist(), 0
        self.i += k
        return self.buf[self.i - k:self.i]

    def random(self) -> float:
        if self.i == len(self.buf):
            self.buf, self.i = self.rng.random(self.block).tolist(), 0
        self.i += 1
        return self.buf[self.i - 1]


def _sample_patient(seed: int, pid: int) -> dict:
    r = np.random.default_rng([seed, 1, pid])
    u = r.random(24).tolist()
    cardio = u[0] < FINDING_RATES["cardiomegaly"]
    ctr = 0.53 + 0.12 * u[1] if cardio else min(0.48, max(0.37, 0.43 + 0.025 * r.standard_normal()))
    return dict(
        cardio=cardio, ctr=ctr,
        sx=0.86 + 0.12 * u[2], sy=0.86 + 0.12 * u[3],
        lcx=0.41 + 0.04 * u[4], lw=0.33 + 0.05 * u[5],
        ytop=-0.80 + 0.08 * u[6], yd=0.50 + 0.10 * u[7], hd=0.07 + 0.08 * u[8],
        dd=0.02 + 0.05 * u[9], hb=0.32 + 0.06 * u[10], rho=0.30 + 0.15 * u[11],
        hxj=0.03 * (u[12] - 0.5), mw=0.085 + 0.03 * u[13],
        bwc=0.90 + 0.07 * u[14], nw=0.26 + 0.06 * u[15],
        tissue=0.60 + 0.10 * u[16], air=0.36 + 0.08 * u[17],
        rib_sp=0.115 + 0.03 * u[18], rib_c=1.0 + 0.6 * u[19], rib_ph=u[20],
        bone=0.05 + 0.04 * u[21], spw=0.055 + 0.02 * u[22], vamp=0.10 + 0.08 * u[23],
    )


def _sample_image(seed: int, i: int, pat: dict, size: int) -> dict:
    """Per-image parameters: position, exposure, noise fields, findings and lesions."""
    rng = np.random.default_rng([seed, 2, i])
    r = _Uniforms(rng)
    p = dict(pat)
    p["rng"] = r
    p["seed"] = seed
    u = r.take(32)
    p["tx"] = 0.04 * (u[0] - 0.5) * 2
    p["ty"] = 0.03 * (u[1] - 0.5) * 2 + 0.02
    zoom = 0.96 + 0.08 * u[2]
    p["sx"] *= zoom
    p["sy"] *= zoom
    p["angle_k"] = min(int(u[16] * len(_ANGLES)), len(_ANGLES) - 1)
    p["yd"] += 0.04 * (u[3] - 0.5)  # depth of inspiration
    p["gamma"] = 0.8 + 0.45 * u[4]
    p["gain"] = 0.9 + 0.2 * u[5]
    p["offset"] = 0.08 * (u[6] - 0.5)
    p["lf_amp"] = 0.03 + 0.07 * u[7]
    p["grain"] = 0.010 + 0.025 * u[8]
    p["bubble_amp"] = 0.2 * p["tissue"] * (u[9] < 0.7)  # gastric air bubble (70 % of images)
    p["bubble_x"] = 0.30 + 0.12 * u[10]
    p["bubble_r"] = 0.05 + 0.04 * u[11]
    p["knob_r"] = 0.05 + 0.025 * u[12]
    p["ant_amp"] = 0.25 + 0.3 * u[13]
    p["clav_y"] = -0.66 + 0.06 * (u[14] - 0.5)
    # heart geometry from the cardiothoracic ratio (thoracic width = 2 * (lcx + lw))
    rho = p["rho"]
    ha_eff = p["ctr"] * (p["lcx"] + p["lw"])
    p["ha"] = ha_eff * math.sqrt(1.0 - rho * rho)
    hb = p["hb"] * (1.0 + 0.8 * max(0.0, p["ctr"] - 0.45))
    p["hb"] = hb
    p["hx"] = ha_eff / 3.0 + p["hxj"]
    # widest point of the heart (Y = rho / sqrt(1 - rho^2)) sits above the left dome
    p["hy"] = p["yd"] + p["dd"] - 0.8 * p["hd"] - (rho / math.sqrt(1 - rho * rho) + 0.25) * hb
    p["mx"] = 0.01 + 0.01 * u[15]
    pad = _grain_pad(size) + 1
    p["grain_at"] = (min(int(u[17] * _GRAIN_PLANES), _GRAIN_PLANES - 1), int(u[18] * pad),
                     int(u[19] * pad), u[20] < 0.5)
    g = rng.standard_normal(16 + 2 * _VA_CTRL * _VR_CTRL, dtype=_F32)
    p["lf_grid"] = g[:16].reshape(4, 4)
    p["v_grid"] = g[16:].reshape(2, _VR_CTRL, _VA_CTRL)  # vessel tree per side
    labels = {f: 0 for f in FINDINGS}
    labels["cardiomegaly"] = int(p["cardio"])
    for j, f in enumerate(("nodule", "consolidation", "effusion", "pneumothorax")):
        labels[f] = int(u[21 + j] < FINDING_RATES[f])
    p["labels"] = labels
    lesions = []
    if labels["consolidation"]:
        lesions.append(_sample_consolidation(p, r))
    if labels["nodule"]:
        lesions.append(_sample_nodule(p, r))
    if labels["effusion"]:
        lesions.append(_sample_effusion(p, r))
    if labels["pneumothorax"]:
        lesions.append(_sample_pneumothorax(p, r))
    if labels["cardiomegaly"]:
        sev = "mild" if p["ctr"] < 0.58 else "moderate" if p["ctr"] < 0.63 else "marked"
        lesions.append(dict(kind="cardiomegaly", severity=sev))
    p["lesions"] = lesions
    return p


def _lung_point(p: dict, r, margin: float, t_range=(0.15, 0.9)) -> tuple[float, float, int]:
    """A point inside a lung field at least ``margin`` from its border (rejection sampling)."""
    ns = SimpleNamespace(**p)
    for _ in range(4):  # 16 candidates at a time; nearly always the first round succeeds
        u = np.array(r.take(48)).reshape(3, 16)
        side = np.where(u[0] < 0.55, -1.0, 1.0)
        y = p["ytop"] + (t_range[0] + (t_range[1] - t_range[0]) * u[1]) * (p["yd"] - p["ytop"])
        x = side * (p["lcx"] + (-0.75 + 1.55 * u[2]) * p["lw"])
        ok = np.flatnonzero(_field_sdf(ns, x, y) > margin)
        if ok.size:
            j = ok[0]
            return float(x[j]), float(y[j]), int(side[j])
    return -(p["lcx"] + 0.1 * p["lw"]), p["ytop"] + 0.5 * (p["yd"] - p["ytop"]), -1


def _zone(p: dict, x: float, y: float) -> str:
    t = (y - p["ytop"]) / (p["yd"] - p["ytop"])
    side = "right" if x < 0 else "left"
    z = "upper" if t < 0.4 else "mid" if t < 0.68 else "lower"
    return f"{side}-{z}"


def _sample_nodule(p, r) -> dict:
    rad = 0.045 + 0.045 * r.random()
    x, y, side = _lung_point(p, r, margin=rad * 1.2)
    amp = 0.09 + 0.21 * r.random() ** 1.3
    return dict(kind="nodule", x=x, y=y, r=rad, amp=amp, zone=_zone(p, x, y),
                mm=int(round(rad * 2 * 170 / p["sx"])))


def _sample_consolidation(p, r) -> dict:
    rx = 0.09 + 0.10 * r.random()
    ry = rx * (0.7 + 0.6 * r.random())
    x, y, side = _lung_point(p, r, margin=0.04, t_range=(0.25, 0.95))
    amp = 0.10 + 0.22 * r.random() ** 1.2
    return dict(kind="consolidation", x=x, y=y, rx=rx, ry=ry, amp=amp, zone=_zone(p, x, y),
                ph=r.random())


def _sample_effusion(p, r) -> dict:
    side = -1 if r.random() < 0.5 else 1
    lung_h = p["yd"] - p["ytop"]
    frac = 0.08 + 0.35 * r.random() ** 1.5  # fluid height / lung height
    size = "small" if frac < 0.16 else "moderate" if frac < 0.3 else "large"
    return dict(kind="effusion", side=side, level=p["yd"] + (p["dd"] if side > 0 else 0.0) - frac * lung_h,
                men=0.06 + 0.10 * r.random(), soft=0.025 + 0.04 * r.random(),
                alpha=0.45 + 0.5 * r.random(), size=size)


def _sample_pneumothorax(p, r) -> dict:
    side = -1 if r.random() < 0.5 else 1
    frac = 0.3 + 0.45 * r.random()  # how far down the lateral wall the rim extends
    depth = 0.04 + 0.09 * r.random()  # rim thickness (anatomical units)
    size = "small" if depth < 0.07 else "moderate" if depth < 0.11 else "large"
    return dict(kind="pneumothorax", side=side, ylim=p["ytop"] + frac * (p["yd"] - p["ytop"]),
                depth=depth, dark=0.04 + 0.10 * r.random(), line=0.06 + 0.12 * r.random(),
                size=size, apical=frac < 0.5)


# ============================================================================ geometry
# The signed-distance helpers work on python floats (lesion placement) and on batches, where
# ``p`` holds [B, 1, 1] arrays, ``xa`` is [B, 1, W] and ``ya`` [B, H, 1]: every term is built
# on those thin arrays and only the last combinations touch full [B, H, W] arrays, written into
# ``out`` (and ``tmp``) when given so that no large array is allocated per batch.
def _sep(ys, xs, out=None):
    """``sum_k ys[k] * xs[k]`` for y-only and x-only factors (arrays or scalars).

    With ``out`` ([B, H, W]) it is one batched matrix product ([B, H, K] @ [B, K, W]), about
    4x faster than numpy's broadcasting of a [B, H, 1] with a [B, 1, W] operand.
    """
    if out is None:
        return sum(y * x for y, x in zip(ys, xs, strict=True))
    if len(ys) == 1:  # numpy skips BLAS for an inner dimension of 1: 8x slower
        ys, xs = [*ys, 0.0], [*xs, 0.0]
    B, H, W = out.shape
    Y = np.empty((B, H, len(ys)), _F32)
    X = np.empty((B, len(xs), W), _F32)
    for k, (y, x) in enumerate(zip(ys, xs, strict=True)):
        Y[:, :, k:k + 1] = y
        X[:, k:k + 1, :] = x
    return np.matmul(Y, X, out=out)


def _lung_sdf(p, xa, ya, out=None, tmp=None):
    """Approximate signed distance into the lung fields (positive inside), both sides at once."""
    u = (np.abs(xa) - p.lcx) / p.lw
    ydome = p.yd + p.dd * (xa > 0) - p.hd * (1.0 - np.minimum(u * u, 1.0))
    t = np.clip((ya - p.ytop) / (p.yd - p.ytop), 0.0, 1.0)
    w = p.lw * np.sqrt(t * (2.0 - t)) + 2.0 * np.minimum(ya - p.ytop, 0.0)  # closed apex
    s = _sep([w, 1.0], [1.0, -p.lw * np.abs(u)], out=out)
    return np.minimum(s, _sep([-ya, 1.0], [1.0, ydome], out=tmp), out=out)


def _heart_sdf(p, xa, ya, out=None, tmp=None):
    """Approximate distance outside the (tilted elliptic) heart; negative inside."""
    m = 0.5 * np.minimum(p.ha, p.hb)
    X = (xa - p.hx) / p.ha
    Y = (ya - p.hy) / p.hb
    return _sep([m * (Y * Y), 1.0, -Y], [1.0, m * (X * X - 1.0), 2.0 * p.rho * m * X], out=out)


def _knob_sdf(p, xa, ya, out=None):
    kx, ky = p.mw + 0.035, p.ytop + 0.32 * (p.yd - p.ytop)
    return _sep([(0.5 / p.knob_r) * (ya - ky) ** 2 - 0.5 * p.knob_r, 1.0],
                [1.0, (0.5 / p.knob_r) * (xa - kx) ** 2], out=out)


def _field_sdf(p, xa, ya, s_lung=None, out=None, tmp=None):
    """Distance into the visible (air-filled) lung: lungs minus heart, mediastinum, aortic knob."""
    s = _lung_sdf(p, xa, ya) if s_lung is None else s_lung
    s = np.minimum(s, _heart_sdf(p, xa, ya, out=out, tmp=tmp), out=out)
    s = np.minimum(s, np.abs(xa - p.mx) - p.mw, out=out)
    return np.minimum(s, _knob_sdf(p, xa, ya, out=tmp), out=out)


# ============================================================================ cached tables
@lru_cache(maxsize=8)
def _tables(size: int):
    """Pixel-centre coordinates and smooth-field up-samplers for one image size."""
    c = ((np.arange(size) + 0.5) * (2.0 / size) - 1.0).astype(_F32)
    up4 = _upsampler(size, 4)
    # vessel texture in (angle, radius) about each hilum: many control points across angles,
    # few along the radius, so the ridges of the field run outwards like branching vessels
    va = int(min(512, max(128, size)))  # angle bins
    vr = 2 * int(min(128, max(32, size // 4)))  # radius bins over [0, _VR_RMAX)
    uaT = np.ascontiguousarray(_upsampler(va, _VA_CTRL).T)
    ur = _upsampler(vr // 2, _VR_CTRL)
    rr = (np.arange(vr // 2) * (_VR_RMAX / vr))[:, None]
    v_width = (2.2 + 4.0 * rr).astype(_F32)  # vessels taper outwards ...
    v_amp = np.clip(1.1 - rr / 0.85, 0.08, 1.0).astype(_F32)  # ... and fade to the periphery
    v_haze = (0.10 * np.clip(1.0 - rr / 0.3, 0.0, 1.0)).astype(_F32)  # hilar density
    return SimpleNamespace(c=c, up4=up4, up4T=np.ascontiguousarray(up4.T), uaT=uaT, ur=ur,
                           v_width=v_width, v_amp=v_amp, v_haze=v_haze, va=va, vr=vr)


@lru_cache(maxsize=2 * len(_ANGLES))
def _rotation(size: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-neighbour gather table (flat source index per output pixel) rotating an image
    by ``_ANGLES[k]`` degrees about its centre, and the uint8 mask of in-bounds sources."""
    centre = (size - 1) / 2.0
    rr, cc = np.meshgrid(np.arange(size) - centre, np.arange(size) - centre, indexing="ij")
    th = math.radians(_ANGLES[k])
    # out pixel (r, c) takes source pixel R(-th) (r, c): images rotate by +th
    ic = np.rint(np.cos(th) * cc + np.sin(th) * rr + centre).astype(np.int64)
    ir = np.rint(-np.sin(th) * cc + np.cos(th) * rr + centre).astype(np.int64)
    valid = ((ic >= 0) & (ic < size) & (ir >= 0) & (ir < size)).astype(np.uint8)
    flat = np.clip(ir, 0, size - 1) * size + np.clip(ic, 0, size - 1)
    # intp avoids a conversion per call; large sizes keep int32 to bound the cache's memory
    return flat.ravel().astype(np.intp if size <= 256 else np.int32), valid


@lru_cache(maxsize=2)
def _grain_bank(size: int, seed: int) -> np.ndarray:
    """Unit Gaussian film grain, [planes, size + pad, size + pad]; images take random crops."""
    rng = np.random.default_rng([seed, 4, size])
    side = size + _grain_pad(size)
    return rng.standard_normal((_GRAIN_PLANES, side, side), dtype=_F32)


def _grain_pad(size: int) -> int:
    return max(16, min(size, 64))


def _upsampler(size: int, g: int) -> np.ndarray:
    """[size, g] Gaussian interpolation weights from g control points spanning the image."""
    ctrl = np.linspace(-1.15, 1.15, g)
    x = (np.arange(size) + 0.5) * (2.0 / size) - 1.0
    step = ctrl[1] - ctrl[0]
    w = np.exp(-0.5 * ((x[:, None] - ctrl[None, :]) / (0.75 * step)) ** 2)
    w /= np.sqrt((w ** 2).sum(1, keepdims=True))  # unit variance for unit-normal control points
    w[w < 1e-4] = 0.0  # no denormals: they make the matrix products 30x slower
    return w.astype(_F32)


def _rotate_point(k: int, size: int, col: np.ndarray, row: np.ndarray):
    """Forward map of pre-rotation pixel coordinates to the final image (inverse of the gather)."""
    th = math.radians(_ANGLES[k])
    centre = (size - 1) / 2.0
    dc, dr = col - centre, row - centre
    return (np.cos(th) * dc - np.sin(th) * dr + centre,
            np.sin(th) * dc + np.cos(th) * dr + centre)


# ============================================================================ rendering
class _Workspace:
    """Float/int buffers reused by every batch (fresh large arrays cost page faults)."""

    def __init__(self, bsz: int, size: int, va: int, vr: int):
        shape = (bsz, size, size)
        for name in ("D", "L", "S", "VT", "T1", "T2", "C"):
            setattr(self, name, np.empty(shape, _F32))
        self.I = np.empty(shape, np.intp)
        self.M = np.empty(shape, np.uint8)
        self.MR = np.empty(shape, np.uint8)
        self.IMG = np.empty(shape, np.uint8)
        self.VTEX = np.zeros((2 * bsz, vr, va), _F32)  # vessel textures


def _iter_batches(n: int, size: int, seed: int):
    """Yield ``(start, images uint8 [b,H,W], masks uint8 [b,H,W], meta rows)`` batch by batch.

    The yielded arrays are views of a reused workspace: copy them before the next batch.
    """
    tb = _tables(size)
    bsz = max(1, min(64, _PIXEL_BUDGET // (size * size), n))
    ws = _Workspace(bsz, size, tb.va, tb.vr)
    patient_of = _patient_of(n, seed)
    pat_cache: dict[int, dict] = {}
    for start in range(0, n, bsz):
        params = []
        for i in range(start, min(n, start + bsz)):
            pid = int(patient_of[i])
            if pid not in pat_cache:
                pat_cache.clear()  # patients are consecutive: keep only the current one
                pat_cache[pid] = _sample_patient(seed, pid)
            p = _sample_image(seed, i, pat_cache[pid], size)
            p["index"], p["pid"] = i, pid
            params.append(p)
        images, masks, rows = _render_batch(params, size, tb, ws)
        yield start, images, masks, rows


_BATCH_KEYS = ("tx", "ty", "sx", "sy", "lcx", "lw", "ytop", "yd", "hd", "dd", "ha", "hb", "hx",
               "hy", "rho", "mx", "mw", "knob_r", "bwc", "nw", "tissue", "air", "rib_sp", "rib_c",
               "rib_ph", "bone", "spw", "vamp", "ant_amp", "clav_y", "lf_amp", "grain",
               "bubble_amp", "bubble_x", "bubble_r")


def _render_batch(params: list[dict], size: int, tb, ws: _Workspace
                  ) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    B, H, W = len(params), size, size
    D, L, S, VT, T1, T2 = (getattr(ws, k)[:B] for k in ("D", "L", "S", "VT", "T1", "T2"))
    vals = np.array([[p[k] for k in _BATCH_KEYS] for p in params], _F32).T.reshape(-1, B, 1, 1)
    P = SimpleNamespace(**dict(zip(_BATCH_KEYS, vals, strict=True)))
    xa = (tb.c[None, None, :] - P.tx) / P.sx  # [B, 1, W] anatomical x (image left = patient right)
    ya = (tb.c[None, :, None] - P.ty) / P.sy  # [B, H, 1] anatomical y (down)
    ax = np.abs(xa)

    # --- body: neck, rounded shoulders, chest wall
    sh = np.clip((ya + 1.08) / 0.36, 0.0, 1.0)
    low = np.clip((ya + 0.72) / 0.35, 0.0, 1.0)
    bw = P.nw + (1.35 - P.nw) * np.sqrt(sh) - (1.35 - P.bwc) * low
    k_body = 0.5 * W * P.sx  # ~1 px skin edge
    _sep([bw * k_body + 0.5, 1.0], [1.0, -ax * k_body], out=D)
    np.clip(D, 0.0, 1.0, out=D)
    D *= P.tissue

    # --- rank-K separable terms in one batched matmul: central thickness, spine, trachea
    vert = np.clip(1.0 - np.abs(((ya - P.ytop) / P.rib_sp * 0.9 + P.rib_ph) % 1.0 - 0.5) * 5.0, 0.0, 1.0)
    bub_y = (ya - (P.yd + P.dd - 0.25 * P.hd + 0.96 * P.bubble_r)) / (0.7 * P.bubble_r)
    ycols = [
        np.clip((ya + 0.9) * 1.5, 0.0, 1.0) * 0.12,  # soft tissue thicker centrally and lower down
        (0.05 + 0.04 * vert) * np.clip((ya + 0.95) * 4, 0.0, 1.0),  # spine with vertebral bodies
        -0.16 * np.clip((P.ytop + 0.42 * (P.yd - P.ytop) - ya) * 12.0, 0.0, 1.0),  # trachea to the carina
        # gastric bubble under the left dome: rounded top, flat fluid level below
        -P.bubble_amp * np.clip((1.0 - bub_y * bub_y) * 1.5, 0.0, 1.0) * np.clip((bub_y + 0.3) * 4.0, 0.0, 1.0),
    ]
    xrows = [
        np.clip(1.0 - ax / 0.7, 0.0, 1.0) ** 2,
        np.clip((P.spw - ax) * 40.0 + 0.5, 0.0, 1.0),
        np.clip((0.045 - np.abs(xa - P.mx)) * 60.0 + 0.5, 0.0, 1.0),
        np.clip((1.0 - ((xa - P.bubble_x) / P.bubble_r) ** 2) * 1.5, 0.0, 1.0),
    ]
    D += _sep(ycols, xrows, out=T1)

    # --- lung fields: air (less at apices and bases) minus vascular markings
    _lung_sdf(P, xa, ya, out=S, tmp=T1)  # S kept for the pneumothorax rim
    _field_sdf(P, xa, ya, s_lung=S, out=L, tmp=T1)
    kedge = 0.45 * W * P.sx  # ~2 px lung border
    L *= kedge
    L += 0.5
    np.clip(L, 0.0, 1.0, out=L)
    _vessels(params, P, ax, xa, ya, tb, out=VT, tmp=T1, tmp2=T2, idx=ws.I[:B], vt=ws.VTEX)
    t_l = np.clip((ya - P.ytop) / (P.yd - P.ytop), 0.0, 1.0)
    air_y = P.air * (0.8 + 0.2 * np.clip(3.0 * t_l, 0.0, 1.0) - 0.12 * t_l * t_l)
    np.subtract(VT, air_y, out=T1)
    T1 *= L
    D += T1

    # --- ribs: posterior (curved, bright) and anterior (faint, sloping down medially)
    cage_x = np.clip((P.lcx + P.lw + 0.04 - ax) * 30.0, 0.0, 1.0) * np.clip((ax - 0.04) * 8.0, 0.0, 1.0)
    cage_y = P.bone * np.clip((ya - P.ytop + 0.08) * 8.0, 0.0, 1.0) * np.clip((P.yd + 0.05 - ya) * 6.0, 0.0, 1.0)
    cage = _sep([cage_y], [cage_x], out=ws.C[:B])
    gy = (ya - P.ytop) / P.rib_sp
    gy = gy - 0.015 * gy * gy + P.rib_ph  # spacing grows downwards
    # posterior ribs rise laterally from the spine, then curve down along the chest wall
    gx = (0.3 * ax - P.rib_c * np.clip(ax - 0.42, 0.0, None) ** 2) / P.rib_sp
    _add_bands(D, gy, gx, 0.15, 0.35 * W * P.rib_sp * P.sy, cage, T1, T2)
    # anterior ribs run down and medially and fade before the sternum (costal cartilage)
    cage *= P.ant_amp * np.clip((ax - 0.25) * 5.0, 0.0, 1.0)
    _add_bands(D, gy * 0.8 + 0.3, (0.5 * ax) / P.rib_sp, 0.12, 0.25 * W * P.rib_sp * P.sy, cage, T1, T2)

    # --- clavicles (only the top rows can hold them)
    r1 = int(min(H, max(1, math.ceil((float((P.ty - 0.45 * P.sy).max()) + 1) * H / 2))))
    d = _sep([ya[:, :r1], 1.0], [1.0, -(P.clav_y - 0.2 * (ax - 0.1) + 0.25 * (ax - 0.1) ** 2)], out=T1[:, :r1])
    np.abs(d, out=d)
    d *= -1.0 / 0.025
    d += 1.5
    np.clip(d, 0.0, 1.0, out=d)
    d *= np.clip((ax - 0.06) * 20.0, 0.0, 1.0) * np.clip((0.62 - ax) * 20.0, 0.0, 1.0) * (0.05 + P.bone)
    D[:, :r1] += d

    # --- lesions, in small windows
    M = ws.M[:B]
    M.fill(0)
    pre_boxes = [_draw_lesions(b, p, xa, ya, D, M, L, S, VT, size) for b, p in enumerate(params)]

    # --- rotation (table gather), detector effects, exposure LUT
    Dr, Mr = T1, ws.MR[:B]
    for b, p in enumerate(params):
        k = p["angle_k"]
        table, valid = _rotation(size, k)
        np.take(D[b].reshape(-1), table, out=Dr[b].reshape(-1))
        if pre_boxes[b]:
            np.take(M[b].reshape(-1), table, out=Mr[b].reshape(-1))
            Mr[b] *= valid
        else:
            Mr[b].fill(0)
    LG = np.stack([p["lf_grid"] for p in params])
    lf = np.matmul(np.matmul(tb.up4, LG), tb.up4T, out=T2)  # smooth low-frequency variation
    scale = (_LUT_LEVELS - 1) / _D_MAX  # density -> LUT level, folded into the gain field
    lf *= P.lf_amp * scale
    lf += scale
    Dr *= lf
    bank = _grain_bank(size, params[0]["seed"])
    for b, p in enumerate(params):
        k, oy, ox, flip = p["grain_at"]
        noise = bank[k, oy:oy + H, ox:ox + W]
        np.multiply(noise[::-1] if flip else noise, P.grain[b] * scale, out=T2[b])
        Dr[b] += T2[b]
    np.clip(Dr, 0, _LUT_LEVELS - 1, out=Dr)
    q = ws.I[:B]
    np.copyto(q, Dr, casting="unsafe")  # truncation = floor for non-negative values
    q += (np.arange(B) * _LUT_LEVELS)[:, None, None]
    images = ws.IMG[:B]
    np.take(_exposure_luts(params).reshape(-1), q, out=images)

    rows = []
    for b, p in enumerate(params):
        boxes = [_final_box(finding, cols, rws, p, Mr[b], size) for finding, cols, rws in pre_boxes[b]]
        rows.append(_meta_row(p, boxes))
    return images, Mr, rows


def _vessels(params, P, ax, xa, ya, tb, out, tmp, tmp2, idx, vt) -> np.ndarray:
    """Vascular markings: a per-image (radius, angle) texture about each hilum, gathered."""
    B = len(params)
    G = np.stack([p["v_grid"] for p in params]).reshape(2 * B, _VR_CTRL, _VA_CTRL)
    va, vr = tb.va, tb.vr
    T = vt[:2 * B]  # the outer half of the radii stays 0 (outside the lungs)
    t = np.matmul(np.matmul(tb.ur, G), tb.uaT)  # [2B, vr / 2, va] smooth unit-variance field
    np.abs(t, out=t)
    t *= -tb.v_width
    t += 1.0
    np.clip(t, 0.0, 1.0, out=t)  # ridges along the zero set: branching lines
    t *= tb.v_amp
    t *= np.repeat(P.vamp, 2, axis=0)
    t += tb.v_haze
    T[:, :vr // 2] = t
    # pixel -> (L1 radius, diamond angle) about the hilum of its side, as one flat float index
    hy = P.ytop + 0.5 * (P.yd - P.ytop)
    adx = np.abs(ax - (P.mw + 0.06)) + 0.004
    dy = ya - hy
    ady = np.abs(dy)
    r = _sep([ady, 1.0], [1.0, adx], out=tmp)  # full [B, H, W] from here
    ka = va / 2 - 1e-3
    a = np.divide(ka * dy, r, out=tmp2)  # diamond angle in (-ka, ka): the ray through the hilum
    a += va / 2
    kr = vr / _VR_RMAX  # the radial axis covers every pixel: no clamping needed
    rows = (np.arange(B).reshape(B, 1, 1) * 2 + (xa > 0)) * float(vr)  # texture of this side
    _sep([ady * kr, 1.0], [1.0, adx * kr + rows], out=r)
    np.floor(r, out=r)
    r *= va
    a += r
    np.copyto(idx, a, casting="unsafe")  # truncation: row * VA + floor(angle)
    return np.take(T.reshape(-1), idx, out=out)


def _add_bands(D, gy, gx, half, sharp, cage, f, fl):
    """Add periodic bright bands (ribs) along the level sets of ``gy + gx`` (period 1)."""
    _sep([gy, 1.0], [1.0, gx], out=f)
    np.floor(f, out=fl)
    f -= fl
    f -= 0.5
    np.abs(f, out=f)  # 0 at band centre ... 0.5 between bands
    f *= -sharp
    f += sharp * half + 0.5  # 1 inside the band (distance < half), ~1.5 px ramp at its edges
    np.clip(f, 0.0, 1.0, out=f)
    f *= cage
    D += f


def _window(p, size: int, x0: float, x1: float, y0: float, y1: float):
    """Pre-rotation pixel window (r0, r1, c0, c1) covering an anatomical box."""
    def col(x):
        return ((p["tx"] + p["sx"] * x) + 1.0) * size / 2.0 - 0.5

    def row(y):
        return ((p["ty"] + p["sy"] * y) + 1.0) * size / 2.0 - 0.5

    c0 = max(0, int(math.floor(col(x0))) - 1)
    c1 = min(size, int(math.ceil(col(x1))) + 2)
    r0 = max(0, int(math.floor(row(y0))) - 1)
    r1 = min(size, int(math.ceil(row(y1))) + 2)
    return r0, max(r0, r1), c0, max(c0, c1)


def _draw_lesions(b, p, xa, ya, D, M, Lf, s_lung, vterm, size) -> list:
    """Draw this image's lesions into D and M; return their pre-rotation pixels."""
    out = []
    Pb = SimpleNamespace(**p)
    px = 2.0 / size / p["sx"]  # one pixel in anatomical units

    for les in p["lesions"]:
        kind = les["kind"]
        if kind == "nodule":
            rad = les["r"]
            r0, r1, c0, c1 = _window(p, size, les["x"] - rad, les["x"] + rad, les["y"] - rad, les["y"] + rad)
            X = (xa[b, 0, c0:c1] - les["x"]) / rad
            Y = (ya[b, r0:r1, 0] - les["y"]) / rad
            d2 = X[None, :] ** 2 + Y[:, None] ** 2
            prof = np.sqrt(np.clip(1.0 - d2, 0.0, 1.0))
            D[b, r0:r1, c0:c1] += les["amp"] * prof
            m = d2 < 0.8
            out.append(_mark(b, M, m, r0, c0, kind, p, size, les["x"], les["y"]))
        elif kind == "consolidation":
            rx, ry = les["rx"], les["ry"]
            r0, r1, c0, c1 = _window(p, size, les["x"] - 1.4 * rx, les["x"] + 1.4 * rx,
                                     les["y"] - 1.4 * ry, les["y"] + 1.4 * ry)
            X = (xa[b, 0, c0:c1] - les["x"]) / rx
            Y = (ya[b, r0:r1, 0] - les["y"]) / ry
            d2 = X[None, :] ** 2 + Y[:, None] ** 2
            th = np.arctan2(Y[:, None], X[None, :])
            lobes = 1.0 + 0.18 * np.sin(3 * th + les["ph"] * 6.3) + 0.12 * np.sin(5 * th + les["ph"] * 17.0)
            pr = np.clip((1.0 - d2 / (lobes * lobes)) * 1.6, 0.0, 1.0)
            pr = pr * pr * (3.0 - 2.0 * pr)
            lf_w = Lf[b, r0:r1, c0:c1]
            pr *= lf_w
            bron = 1.0 - (0.6 / Pb.vamp) * vterm[b, r0:r1, c0:c1]  # air bronchograms along the vessels
            D[b, r0:r1, c0:c1] += les["amp"] * pr * bron
            out.append(_mark(b, M, pr > 0.4, r0, c0, kind, p, size, les["x"], les["y"]))
        elif kind == "effusion":
            side = les["side"]
            xo, xi = side * (Pb.lcx + 1.15 * Pb.lw), side * max(0.0, Pb.lcx - 1.15 * Pb.lw)
            top = les["level"] - les["men"] - 2 * les["soft"]
            bottom = Pb.yd + Pb.dd + 0.05
            r0, r1, c0, c1 = _window(p, size, min(xo, xi), max(xo, xi), top, bottom)
            xw = xa[b, 0, c0:c1]
            uu = (np.abs(xw) - Pb.lcx) / Pb.lw
            sidemask = (xw * side > 0).astype(_F32)
            edge = les["level"] - les["men"] * np.clip(uu, 0.0, 1.5) ** 2  # meniscus climbs laterally
            e = np.clip((ya[b, r0:r1, 0][:, None] - edge[None, :]) / les["soft"], 0.0, 1.0)
            e *= sidemask[None, :]
            e *= Lf[b, r0:r1, c0:c1]
            D[b, r0:r1, c0:c1] += les["alpha"] * e * (Pb.air - vterm[b, r0:r1, c0:c1])
            out.append(_mark(b, M, e > 0.5, r0, c0, kind, p, size, side * (Pb.lcx + 0.5 * Pb.lw), Pb.yd - 0.02))
        elif kind == "pneumothorax":
            side = les["side"]
            xo, xi = side * (Pb.lcx + 1.15 * Pb.lw), side * max(0.0, Pb.lcx - 1.15 * Pb.lw)
            r0, r1, c0, c1 = _window(p, size, min(xo, xi), max(xo, xi), Pb.ytop - 0.05, les["ylim"] + 0.1)
            xw = xa[b, 0, c0:c1]
            yw = ya[b, r0:r1, 0]
            uu = (np.abs(xw) - Pb.lcx) / Pb.lw
            aw = (np.clip((les["ylim"] - yw) / 0.08, 0.0, 1.0)[:, None]
                  * (np.clip((uu + 0.25) / 0.3, 0.0, 1.0) * (xw * side > 0))[None, :])
            sw = s_lung[b, r0:r1, c0:c1]
            lfw = Lf[b, r0:r1, c0:c1]
            rim = np.clip((les["depth"] - sw) / (2 * px) + 0.5, 0.0, 1.0) * aw * lfw
            line = np.exp(-(((sw - les["depth"]) / (0.8 * px)) ** 2)) * aw * (sw > 0)
            D[b, r0:r1, c0:c1] += les["line"] * line - rim * (vterm[b, r0:r1, c0:c1] + les["dark"])
            cy = Pb.ytop + 0.3 * (les["ylim"] - Pb.ytop)
            out.append(_mark(b, M, rim > 0.5, r0, c0, kind, p, size, side * (Pb.lcx + 0.6 * Pb.lw), cy))
        elif kind == "cardiomegaly":
            ha_eff = Pb.ha / math.sqrt(1 - Pb.rho ** 2)
            r0, r1, c0, c1 = _window(p, size, Pb.hx - 1.1 * ha_eff, Pb.hx + 1.1 * ha_eff,
                                     Pb.hy - 1.15 * Pb.hb, Pb.yd + Pb.dd)
            xw = xa[b, 0, c0:c1][None, :]
            yw = ya[b, r0:r1, 0][:, None]
            inside = _heart_sdf(Pb, xw, yw) < 0
            u = (np.abs(xw) - Pb.lcx) / Pb.lw
            ydome = Pb.yd + Pb.dd * (xw > 0) - Pb.hd * (1.0 - np.minimum(u * u, 1.0))
            inside &= yw < ydome
            out.append(_mark(b, M, inside, r0, c0, kind, p, size, Pb.hx, Pb.hy))
    return out


def _mark(b, M, m, r0, c0, kind, p, size, x, y):
    """OR a window mask into M; return (finding, cols, rows) of its pre-rotation pixels."""
    rows, cols = np.nonzero(m)
    if rows.size == 0:  # too small to cover a pixel centre: mark the nearest pixel
        col = int(np.clip(round(((p["tx"] + p["sx"] * x) + 1.0) * size / 2.0 - 0.5), 0, size - 1))
        row = int(np.clip(round(((p["ty"] + p["sy"] * y) + 1.0) * size / 2.0 - 0.5), 0, size - 1))
        M[b, row, col] = 1
        return kind, np.array([col]), np.array([row])
    M[b, r0:r0 + m.shape[0], c0:c0 + m.shape[1]] |= m.astype(np.uint8)
    return kind, cols + c0, rows + r0


def _final_box(finding, cols, rows, p, mask, size) -> list:
    """Box of a lesion in the final (rotated) image; guarantees a marked pixel inside it."""
    fc, fr = _rotate_point(p["angle_k"], size, cols.astype(float), rows.astype(float))
    x0 = min(max(math.floor(float(fc.min()) - 1.0), 0), size - 1)
    y0 = min(max(math.floor(float(fr.min()) - 1.0), 0), size - 1)
    x1 = min(max(math.ceil(float(fc.max()) + 1.0) + 1, x0 + 1), size)
    y1 = min(max(math.ceil(float(fr.max()) + 1.0) + 1, y0 + 1), size)
    if not mask[y0:y1, x0:x1].any():
        cc = min(max(round(float(fc.mean())), x0), x1 - 1)
        rr = min(max(round(float(fr.mean())), y0), y1 - 1)
        mask[rr, cc] = 1
    return [finding, x0, y0, x1, y1]


@lru_cache(maxsize=1)
def _film_curve() -> np.ndarray:
    d = (np.arange(_LUT_LEVELS) + 0.5) / (_LUT_LEVELS - 1) * _D_MAX
    return np.where(d < 0.85, d, 0.85 + 0.15 * np.tanh((d - 0.85) / 0.15))  # soft shoulder


def _exposure_luts(params) -> np.ndarray:
    """Per-image density -> uint8 look-up tables [B, levels]: film shoulder, gamma, gain, offset."""
    gain = np.array([p["gain"] for p in params])[:, None]
    gamma = np.array([p["gamma"] for p in params])[:, None]
    offset = np.array([p["offset"] for p in params])[:, None]
    v = np.clip(gain * _film_curve()[None, :] ** gamma + 0.04 + offset, 0.0, 1.0)
    return np.rint(v * 255.0).astype(np.uint8)


# ============================================================================ reports
_SIDE = {-1: "right", 1: "left"}
_LOC = {
    "right-upper": ["right upper lobe", "right upper lung zone", "right apex"],
    "right-mid": ["right middle lobe", "right mid lung", "right perihilar region"],
    "right-lower": ["right lower lobe", "right lung base", "right base"],
    "left-upper": ["left upper lobe", "left upper lung zone", "left apex"],
    "left-mid": ["lingula", "left mid lung", "left perihilar region"],
    "left-lower": ["left lower lobe", "left lung base", "left base"],
}
_NORMAL_IMPRESSION = ["No acute cardiopulmonary abnormality.", "No acute cardiopulmonary process.",
                      "Normal chest radiograph.", "No active disease.",
                      "No acute cardiopulmonary disease."]


def _pick(r, options):
    return options[int(r.random() * len(options))]


def _report(p: dict) -> str:
    """A templated report with FINDINGS and IMPRESSION; absent findings negated or omitted."""
    r = p["rng"]  # the image's own stream, after all drawing decisions
    lab = p["labels"]
    les = {x["kind"]: x for x in p["lesions"]}
    parts = []
    exam = _pick(r, ["Chest PA and lateral", "PA and lateral views of the chest", "Chest, 2 views",
                     "Chest PA", "Frontal chest radiograph"])
    parts.append(f"EXAMINATION: {exam}.")
    ind = _pick(r, ["XXXX-year-old {sex} with {sym}.", "{sym_c}.", "{sym_c}, evaluate for pneumonia.",
                    "Preoperative evaluation.", "XXXX-year-old {sex}, {sym}.", "XXXX."])
    sym = _pick(r, ["cough", "shortness of breath", "chest pain", "fever", "dyspnea", "hypoxia"])
    parts.append("INDICATION: " + ind.format(sex=_pick(r, ["male", "female"]), sym=sym,
                                             sym_c=sym.capitalize()))
    parts.append("COMPARISON: " + _pick(r, ["None.", "XXXX.", "Chest radiograph dated XXXX.",
                                            "None available."]))
    f: list[str] = []
    imp: list[str] = []
    # heart
    if lab["cardiomegaly"]:
        sev = les["cardiomegaly"]["severity"]
        f.append(_pick(r, [f"The heart is {sev}ly enlarged.", f"{sev.capitalize()} cardiomegaly.",
                           "The cardiac silhouette is enlarged.", "Cardiomegaly is present.",
                           f"There is {sev} enlargement of the cardiac silhouette."]))
        imp.append(_pick(r, ["Cardiomegaly.", f"{sev.capitalize()} cardiomegaly.",
                             "Enlarged cardiac silhouette."]))
    else:
        f.append(_pick(r, ["Heart size is normal.", "The cardiac silhouette is within normal limits.",
                           "Normal heart size.", "The heart is not enlarged.",
                           "The cardiomediastinal silhouette is within normal limits.",
                           "Heart size and mediastinal contours are normal."]))
    if r.random() < 0.6:
        f.append(_pick(r, ["The mediastinal contours are unremarkable.", "Mediastinal contours are normal.",
                           "Stable mediastinal contours.", "The aorta is tortuous."]))
    # lungs
    lung_pos = []
    if lab["consolidation"]:
        c = les["consolidation"]
        loc = _pick(r, _LOC[c["zone"]])
        f.append(_pick(r, [f"Focal consolidation in the {loc}.",
                           f"There is patchy airspace opacity in the {loc}, concerning for pneumonia.",
                           f"Airspace consolidation is seen in the {loc}.",
                           f"Confluent opacity in the {loc} compatible with consolidation.",
                           f"Patchy consolidation in the {loc}, which may represent pneumonia."]))
        imp.append(_pick(r, [f"{loc.capitalize()} consolidation, likely pneumonia.",
                             f"{loc.capitalize()} pneumonia.",
                             f"Consolidation in the {loc}; follow-up to resolution is recommended."]))
        lung_pos.append("consolidation")
    if lab["nodule"]:
        nd = les["nodule"]
        loc = _pick(r, _LOC[nd["zone"]])
        size = _pick(r, [f"{nd['mm']} mm", f"{nd['mm'] / 10:.1f} cm", "XXXX mm", "small"])
        f.append(_pick(r, [f"A {size} nodule is seen in the {loc}.",
                           f"There is a {size} nodular opacity in the {loc}.",
                           f"{size.capitalize()} pulmonary nodule in the {loc}.",
                           f"Rounded {size} nodule projects over the {loc}."]))
        imp.append(_pick(r, [f"{size.capitalize()} {loc} nodule; CT is recommended for further evaluation.",
                             f"Pulmonary nodule in the {loc}.",
                             f"{loc.capitalize()} nodule, recommend chest CT."]))
        lung_pos.append("nodule")
    if not lung_pos and not lab["pneumothorax"] and not lab["effusion"] and r.random() < 0.5:
        f.append(_pick(r, ["The lungs are clear.", "Lungs are clear bilaterally.",
                           "The lungs are well expanded and clear."]))
    if not lab["consolidation"] and not lab["nodule"]:
        if r.random() < 0.6:
            f.append(_pick(r, ["No focal consolidation or suspicious pulmonary nodule.",
                               "No focal airspace consolidation. No suspicious pulmonary nodules.",
                               "There is no focal consolidation or pulmonary nodule."]))
        elif r.random() < 0.6:
            f.append(_pick(r, ["No focal consolidation.", "No focal airspace disease.",
                               "There is no focal consolidation."]))
    elif not lab["consolidation"]:
        if r.random() < 0.7:
            f.append(_pick(r, ["No focal consolidation.", "No focal airspace consolidation.",
                               "There is no focal consolidation."]))
    elif not lab["nodule"] and r.random() < 0.4:
        f.append(_pick(r, ["No suspicious pulmonary nodules.", "No discrete pulmonary nodule."]))
    # pleura
    if lab["effusion"]:
        e = les["effusion"]
        side, size = _SIDE[e["side"]], e["size"]
        f.append(_pick(r, [f"{size.capitalize()} {side} pleural effusion.",
                           f"There is a {size} {side} pleural effusion with blunting of the {side} costophrenic angle.",
                           f"Blunting of the {side} costophrenic angle, consistent with a {size} effusion.",
                           f"A {size} {side}-sided pleural effusion is present."]))
        imp.append(_pick(r, [f"{size.capitalize()} {side} pleural effusion.",
                             f"{side.capitalize()} pleural effusion.",
                             f"{size.capitalize()} {side} effusion."]))
    if lab["pneumothorax"]:
        pt = les["pneumothorax"]
        side, size = _SIDE[pt["side"]], pt["size"]
        where = "apical" if pt["apical"] else "apicolateral"
        f.append(_pick(r, [f"{size.capitalize()} {side} {where} pneumothorax.",
                           f"There is a {size} {side} pneumothorax with a visible pleural line at the {side} apex.",
                           f"A visceral pleural line is seen in the {side} upper hemithorax, consistent with pneumothorax.",
                           f"{side.capitalize()} {where} pneumothorax is present."]))
        imp.append(_pick(r, [f"{size.capitalize()} {side} pneumothorax.",
                             f"{side.capitalize()} pneumothorax. Findings discussed with Dr. XXXX at XXXX.",
                             f"{side.capitalize()} {where} pneumothorax."]))
    if not lab["effusion"] and not lab["pneumothorax"]:
        f.append(_pick(r, ["No pleural effusion or pneumothorax.", "There is no pleural effusion or pneumothorax.",
                           "No pneumothorax or pleural effusion.", "No pleural effusion. No pneumothorax.",
                           "No evidence of pneumothorax or effusion."]))
    elif not lab["effusion"]:
        if r.random() < 0.8:
            f.append(_pick(r, ["No pleural effusion.", "No effusion.", "There is no pleural effusion."]))
    elif not lab["pneumothorax"]:
        if r.random() < 0.8:
            f.append(_pick(r, ["No pneumothorax.", "There is no pneumothorax.", "No evidence of pneumothorax."]))
    # bones
    if r.random() < 0.7:
        f.append(_pick(r, ["The osseous structures are intact.", "No acute bony abnormality.",
                           "Degenerative changes of the thoracic spine.", "Visualized osseous structures are unremarkable.",
                           "Surgical clips in the XXXX."]))
    if not imp:
        imp.append(_pick(r, _NORMAL_IMPRESSION))
    parts.append("FINDINGS: " + " ".join(f))
    parts.append("IMPRESSION: " + " ".join(imp))
    return " ".join(parts)


def _meta_row(p: dict, boxes: list) -> dict:
    row = {"id": f"phantom_{p['index']:06d}", "patient_id": f"phantom_p{p['pid']:06d}"}
    for f in FINDINGS:
        row[LABEL_PREFIX + f] = int(p["labels"][f])
    row["report"] = _report(p)
    row["lesion_boxes"] = json.dumps(boxes)
    row["ctr"] = round(float(p["ctr"]), 3)
    row["has_mask"] = 1
    return row
