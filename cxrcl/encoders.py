"""Frozen encoders for downstream use: from a run directory, or a random-init floor.

    enc = load_encoder("runs/spcl")                 # the run's backbone with its trained weights
    enc = load_encoder("random:resnet18", 64)       # the untrained floor (seeded init)
    feats = enc.features(uint8_images)              # np.float32 [N, D]

An :class:`Encoder` is also a plain callable ``images -> features``, the feature-extractor
contract of :mod:`cxrcl.evaluation`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml

from cxrcl.data.normalize import to_model_input
from cxrcl.errors import CxrclError
from cxrcl.methods.registry import build_method
from cxrcl.models.backbones import TokenBackbone, create_backbone
from cxrcl.models.input_size import set_image_size
from cxrcl.training.checkpoint import load_weights, model_file

RANDOM_PREFIX = "random:"


class Encoder:
    """A backbone in eval mode that maps uint8 images [N, H, W] to pooled features."""

    def __init__(self, backbone: TokenBackbone, image_size: int, name: str,
                 device: str | torch.device | None = None, batch_size: int = 256):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.backbone = backbone.to(self.device).eval()
        self.image_size, self.name, self.batch_size = image_size, name, batch_size
        self.resized: dict | None = None

    @property
    def dim(self) -> int:
        return self.backbone.dim

    @torch.no_grad()
    def features(self, images: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(images), self.batch_size):
            x = to_model_input(np.asarray(images[i:i + self.batch_size]), self.image_size, self.device)
            out.append(self.backbone(x).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    __call__ = features


def load_encoder(run: str | Path, image_size: int | None = None, device=None, seed: int = 0) -> Encoder:
    """``run`` is a run directory or ``random:BACKBONE[:KEY=VALUE...]``.

    For a random encoder ``image_size`` is required (use the data set's size); for a run it
    defaults to the size the run was trained at.
    """
    spec = str(run)
    if spec.startswith(RANDOM_PREFIX):
        if image_size is None:
            raise CxrclError("a random encoder needs an image size (the data set's size)")
        torch.manual_seed(seed)
        return Encoder(create_backbone(spec[len(RANDOM_PREFIX):], image_size), image_size, spec, device)
    root = Path(run)
    cfg_path = root / "config.yaml"
    if not cfg_path.exists():
        raise CxrclError(f"{root} is not a run directory (no config.yaml): pass a directory written by "
                         "`cxrcl pretrain`, `random:BACKBONE` or `pixels`")
    cfg = yaml.safe_load(cfg_path.read_text())
    trained_size = int(cfg["image_size"])
    method = build_method(cfg["method"], cfg["backbone"], trained_size, base=cfg.get("method_config"))
    load_weights(method, model_file(root))
    resized = set_image_size(method.encoder, image_size, trained_size) if image_size else None
    encoder = Encoder(method.encoder, image_size or trained_size, str(root), device)
    encoder.resized = resized  # how the backbone was adapted to image_size (None: unchanged)
    return encoder
