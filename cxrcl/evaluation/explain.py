"""``cxrcl explain``: which tokens a model keeps, as overlays, and whether they cover the lesions.

Saliency per token (or CNN window) comes from:

* a SparseContrast run: its saliency predictor, and the top-k it keeps at its ``keep_ratio``
  (exactly the set the pruned encoder runs on);
* an S-PCL run with ``partition=saliency``: its predictor on the patch embeddings, top
  ``saliency_keep``;
* any other ViT run: attention rollout (Abnar & Zuidema 2020: per block, the head-averaged
  attention plus the identity, rows renormalised, multiplied through the blocks); the relevance
  of input patch j is the rollout row of the class token (``pool=token``) or the mean of the
  patch rows (mean pooling); the kept set is its top ``keep`` fraction (default 0.5).

Outputs in ``DIR`` (which must be new or empty, so nothing is overwritten): ``overlays.png``
(a grid montage), ``images/<id>.png`` (one per image: the saliency heat map and the image with
dropped tokens dimmed; the lesion mask outlined in red when there is one) and ``explain.json``.
When the data set has masks, ``lesion_area_kept`` is the mean over images with a non-empty
mask of the fraction of mask pixels that fall in kept tokens, and ``random_area_kept`` the
same for random keep sets of the same size (``random_draws`` per image, seeded);
``lesion_minus_random_ci95`` is the 95 % percentile bootstrap interval of their per-image
difference (our choice: it says whether a difference near a bar is one the images can tell).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml
from matplotlib import colormaps
from PIL import Image

from cxrcl.data.normalize import to_model_input
from cxrcl.data.prepared import PreparedDataset
from cxrcl.errors import CxrclError
from cxrcl.evaluation.bootstrap import N_BOOT, mean_ci
from cxrcl.methods.registry import build_method
from cxrcl.models.backbones import ViTBackbone
from cxrcl.models.saliency import keep_count
from cxrcl.training.checkpoint import load_weights, model_file

TILE = 192  # pixels per panel in the overlays


def load_run(run: str | Path):
    """The trained method of a run directory and its config."""
    root = Path(run)
    if not (root / "config.yaml").exists():
        raise CxrclError(f"--run {root} is not a run directory (no config.yaml): pass a directory "
                         "written by `cxrcl pretrain`")
    cfg = yaml.safe_load((root / "config.yaml").read_text())
    method = build_method(cfg["method"], cfg["backbone"], int(cfg["image_size"]),
                          base=cfg.get("method_config"))
    load_weights(method, model_file(root))
    return method.eval(), cfg


def attention_rollout(backbone: ViTBackbone, x: torch.Tensor) -> torch.Tensor:
    """Relevance [B, N] of each patch token for the pooled feature (see the module docstring)."""
    vit, probs = backbone.vit, []

    def hook(attn, args):
        t = args[0]
        b, n, _ = t.shape
        qkv = attn.qkv(t).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
        probs.append(((q * attn.scale) @ k.transpose(-2, -1)).softmax(-1).mean(1))

    handles = [blk.attn.register_forward_pre_hook(hook) for blk in vit.blocks]
    try:
        backbone(x)
    finally:
        for h in handles:
            h.remove()
    n = probs[0].shape[-1]
    eye = torch.eye(n, dtype=probs[0].dtype)
    rollout = eye.expand(x.shape[0], n, n)
    for a in probs:
        a = 0.5 * a + 0.5 * eye
        rollout = (a / a.sum(-1, keepdim=True)) @ rollout
    npre = vit.num_prefix_tokens
    if backbone.pool_type == "token":
        return rollout[:, 0, npre:]
    return rollout[:, npre:, npre:].mean(1)


@torch.no_grad()
def token_saliency(method, x: torch.Tensor, keep: float | None) -> dict:
    """``scores`` [B, U], ``kept`` bool [B, U], the unit ``grid``, ``keep_ratio`` and ``source``."""
    if getattr(method, "name", "") == "sparsecontrast" and not method.dense:
        ratio = keep if keep is not None else method.config.keep_ratio
        out = method.pruned(x, ratio)
        kept = torch.zeros_like(out.logits, dtype=torch.bool)
        if out.keep is None:
            kept[:] = True
        else:
            kept.scatter_(1, out.keep, True)
        return {"scores": torch.sigmoid(out.logits), "kept": kept, "grid": out.grid,
                "keep_ratio": ratio, "source": "saliency predictor (sparsecontrast)"}
    if getattr(method, "name", "") == "spcl" and method.config.partition == "saliency":
        ratio = keep if keep is not None else method.config.saliency_keep
        scores = torch.sigmoid(method.predictor(method.backbone.embed(x)))
        source = "saliency predictor (spcl partition=saliency)"
    elif isinstance(method.backbone, ViTBackbone):
        ratio = 0.5 if keep is None else keep
        scores = attention_rollout(method.backbone, x)
        source = "attention rollout"
    else:
        raise CxrclError(f"explain needs a ViT run or a saliency predictor; {method.backbone.name} "
                         f"trained by {method.name} has neither")
    k = keep_count(scores.shape[1], ratio)
    kept = torch.zeros_like(scores, dtype=torch.bool)
    kept.scatter_(1, scores.topk(k, dim=1).indices, True)
    return {"scores": scores, "kept": kept, "grid": tuple(method.backbone.grid),
            "keep_ratio": ratio, "source": source}


def unit_map(values: np.ndarray, grid: tuple[int, int], size: int) -> np.ndarray:
    """Per-unit values [U] on a ``grid`` -> a [size, size] map (nearest, any size)."""
    rows = np.arange(size) * grid[0] // size
    cols = np.arange(size) * grid[1] // size
    return values.reshape(grid)[rows[:, None], cols[None, :]]


def area_kept(mask: np.ndarray, kept: np.ndarray, grid: tuple[int, int]) -> float:
    """Fraction of the mask's pixels that lie in kept units."""
    inside = unit_map(kept, grid, mask.shape[0]) & (mask > 0)
    return float(inside.sum() / max(1, (mask > 0).sum()))


def random_area_kept(mask: np.ndarray, k: int, grid: tuple[int, int], rng: np.random.Generator,
                     draws: int) -> float:
    n = grid[0] * grid[1]
    vals = []
    for _ in range(draws):
        kept = np.zeros(n, dtype=bool)
        kept[rng.choice(n, size=k, replace=False)] = True
        vals.append(area_kept(mask, kept, grid))
    return float(np.mean(vals))


def _outline(mask: np.ndarray) -> np.ndarray:
    m = mask > 0
    inner = m.copy()
    inner[1:-1, 1:-1] = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    return m & ~inner


def overlay(image: np.ndarray, scores: np.ndarray, kept: np.ndarray, grid: tuple[int, int],
            mask: np.ndarray | None) -> Image.Image:
    """Two panels: saliency heat map over the image | image with dropped units dimmed."""
    size = image.shape[0]
    grey = image.astype(np.float32)[..., None].repeat(3, -1) / 255
    s = (scores - scores.min()) / max(1e-8, float(scores.max() - scores.min()))
    heat = colormaps["inferno"](unit_map(s, grid, size))[..., :3]
    left = 0.55 * grey + 0.45 * heat
    right = grey * np.where(unit_map(kept, grid, size), 1.0, 0.3)[..., None]
    if mask is not None and mask.any():
        edge = _outline(mask)
        for panel in (left, right):
            panel[edge] = (1.0, 0.1, 0.1)
    panels = [Image.fromarray((np.clip(p, 0, 1) * 255).astype(np.uint8)).resize((TILE, TILE), Image.NEAREST)
              for p in (left, right)]
    out = Image.new("RGB", (2 * TILE + 4, TILE), (255, 255, 255))
    out.paste(panels[0], (0, 0))
    out.paste(panels[1], (TILE + 4, 0))
    return out


def montage(tiles: list[Image.Image], columns: int = 4) -> Image.Image:
    w, h = tiles[0].size
    rows = (len(tiles) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * (w + 6), rows * (h + 6)), (255, 255, 255))
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % columns) * (w + 6), (i // columns) * (h + 6)))
    return sheet


def explain(run: str | Path, data: str | Path, out: str | Path, n: int = 16, split: str = "test",
            keep: float | None = None, random_draws: int = 10, seed: int = 0,
            batch_size: int = 128) -> dict:
    """Overlays and ``explain.json`` for ``n`` images of ``split`` (lesion images first); the
    lesion metrics use every image of the split with a non-empty mask. Returns the JSON."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CxrclError(f"--out {out} already exists and is not empty: choose a new directory")
    if keep is not None and not 0 < keep <= 1:
        raise CxrclError(f"--keep {keep}: give a fraction in (0, 1], e.g. 0.5")
    if n < 1:
        raise CxrclError(f"--n {n}: give at least 1 image")
    ds = PreparedDataset.open(data)
    rows = ds.indices(split)
    if len(rows) == 0:
        raise CxrclError(f"{ds.root} has no images in split {split!r}: choose --split train, val or test")
    method, cfg = load_run(run)
    # written into a hidden folder beside --out and renamed at the end: an interrupted run
    # leaves no half-filled --out (it is removed on errors and Ctrl-C), so a rerun just works
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        result = _explain_into(stage, method, cfg, run, ds, rows, n, split, keep, random_draws, seed, batch_size)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if out.exists():
        out.rmdir()  # checked empty above
    stage.rename(out)
    return result


def _explain_into(out: Path, method, cfg: dict, run, ds: PreparedDataset, rows: np.ndarray, n: int, split: str,
                  keep: float | None, random_draws: int, seed: int, batch_size: int) -> dict:
    """The body of :func:`explain`: overlays, montage and explain.json written into ``out``."""
    image_size = int(cfg["image_size"])
    has_mask = np.zeros(len(rows), dtype=bool)
    if ds.masks is not None:
        has_mask = np.asarray([bool(ds.masks[r].any()) for r in rows])
    order = np.concatenate([rows[has_mask], rows[~has_mask]])[:n].tolist()
    shown = {r: i for i, r in enumerate(order)}  # montage position: lesion images first
    rng = np.random.default_rng(seed)
    lesion, random_kept, tiles, ids, info = [], [], [], [], None
    (out / "images").mkdir(parents=True, exist_ok=True)
    for a in range(0, len(rows), batch_size):
        chunk = rows[a:a + batch_size]
        todo = [i for i, r in enumerate(chunk) if has_mask[a + i] or int(r) in shown]
        if not todo:
            continue
        imgs = np.asarray(ds.images[chunk[todo]])
        info = token_saliency(method, to_model_input(imgs, image_size), keep)
        scores, kept, grid = info["scores"].float().numpy(), info["kept"].numpy(), info["grid"]
        for j, i in enumerate(todo):
            r = int(chunk[i])
            mask = np.asarray(ds.masks[r]) if has_mask[a + i] else None
            if mask is not None:
                lesion.append(area_kept(mask, kept[j], grid))
                random_kept.append(random_area_kept(mask, int(kept[j].sum()), grid, rng, random_draws))
            if r in shown:
                tile = overlay(imgs[j], scores[j], kept[j], grid, mask)
                name = str(ds.meta["id"].iloc[r])
                tile.save(out / "images" / f"{_safe(name)}.png")
                tiles.append((r, tile))
                ids.append((shown[r], name))
    tiles.sort(key=lambda t: shown[t[0]])
    montage([t for _, t in tiles]).save(out / "overlays.png")
    result = {
        "run": str(run), "method": cfg["method"], "backbone": cfg["backbone"], "data": str(ds.root),
        "split": split, "source": info["source"], "keep_ratio": info["keep_ratio"],
        "unit_grid": list(info["grid"]), "n_overlays": len(tiles), "overlay_ids": [name for _, name in sorted(ids)],
        "n_images_with_masks": len(lesion),
        "lesion_area_kept": float(np.mean(lesion)) if lesion else None,
        "random_area_kept": float(np.mean(random_kept)) if lesion else None,
        "random_draws": random_draws, "seed": seed,
        "measures": "lesion_area_kept: mean over images with a non-empty mask of the fraction of "
                    "mask pixels inside kept tokens; random_area_kept: the same for uniformly "
                    "random keep sets of the same size; lesion_minus_random_ci95: 95 % percentile "
                    f"bootstrap interval of their per-image difference ({N_BOOT} resamples of the images)",
    }
    if lesion:
        result["lesion_minus_random"] = result["lesion_area_kept"] - result["random_area_kept"]
        # paired per image; percentile bootstrap over the images with a mask (cxrcl.evaluation.bootstrap)
        result["lesion_minus_random_ci95"] = mean_ci(np.subtract(lesion, random_kept))
    (out / "explain.json").write_text(json.dumps(result, indent=2))
    return result


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:120] or "image"
