"""Method name -> class (and its config), and the one factory the CLI and API use."""

from __future__ import annotations

import dataclasses

from cxrcl.errors import CxrclError
from cxrcl.methods.base import Method, MethodConfig
from cxrcl.methods.clip import CLIP
from cxrcl.methods.comcl import CoMCL
from cxrcl.methods.dino import DINO
from cxrcl.methods.maco import MaCo
from cxrcl.methods.mae import MAE
from cxrcl.methods.mocov3 import MoCoV3
from cxrcl.methods.simclr import SimCLR
from cxrcl.methods.sista import SISTA
from cxrcl.methods.sparsecontrast import SparseContrast
from cxrcl.methods.spcl import SPCL
from cxrcl.models.backbones import DEFAULT_BACKBONE, TokenBackbone, create_backbone
from cxrcl.specs import apply_overrides, parse_spec

METHODS: dict[str, type[Method]] = {m.name: m for m in (SPCL, SimCLR, SparseContrast, CoMCL, MoCoV3, DINO)}
METHODS[CLIP.name] = CLIP
METHODS[SISTA.name] = SISTA
METHODS[MAE.name] = MAE
METHODS[MaCo.name] = MaCo


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise CxrclError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def method_config(spec: str, base: dict | None = None) -> tuple[type[Method], MethodConfig]:
    """``"spcl:ratios=0.4,0.4"`` (+ a dict from a YAML config, applied first) -> (class, config)."""
    name, overrides = parse_spec(spec)
    cls = method_class(name)
    config = apply_overrides(cls.config_class(), dict(base or {}), f"method {name}")
    return cls, apply_overrides(config, overrides, f"method {name}")


def build_method(spec: str, backbone: str | TokenBackbone = DEFAULT_BACKBONE, image_size: int = 128,
                 base: dict | None = None) -> Method:
    cls, config = method_config(spec, base)
    if isinstance(backbone, str):
        backbone = create_backbone(backbone, image_size)
    try:
        return cls(config, backbone)
    except ValueError as e:
        raise CxrclError(f"method {spec!r}: {e}") from None


def config_dict(config: MethodConfig) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}
