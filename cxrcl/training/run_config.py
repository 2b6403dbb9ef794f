"""A run's configuration: optimisation settings, the resolved run config, and the one place
where it is checked (typed, ranged, unknown keys named) before anything runs.

Precedence: defaults < YAML config file < explicit arguments. ``steps`` wins over ``epochs``
from any source. Every check raises :class:`~cxrcl.errors.CxrclError` with one sentence that
names the setting and says what is allowed, so ``--steps 0``, ``--lr nan``, ``steps: "ten"`` in
a YAML file or a block partition that does not divide the token grid fail before a run
directory is made.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from cxrcl.data.prepared import PreparedDataset
from cxrcl.errors import CxrclError
from cxrcl.methods.registry import config_dict, method_config
from cxrcl.models.backbones import DEFAULT_BACKBONE
from cxrcl.specs import apply_overrides, check_keys, parse_spec
from cxrcl.training.loggers import check_logger

PRECISIONS = ("auto", "32-true", "32", "bf16-mixed", "bf16-true", "16-mixed", "64-true")
ACCELERATORS = ("auto", "cpu", "cuda", "gpu", "mps")
CONFIG_FILE_KEYS = {"method", "method_config", "backbone", "image_size", "train"}


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and run settings (AdamW + linear warm-up + cosine decay)."""

    steps: int | None = None          # total optimiser steps; or set epochs
    epochs: float | None = None
    batch_size: int = 64              # per process
    lr: float = 5e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_fraction: float = 0.05
    min_lr_fraction: float = 0.01
    grad_clip: float | None = 3.0
    seed: int = 0
    precision: str = "auto"           # auto = bf16-mixed on a GPU that supports it, else 32-true
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    log_every: int = 10
    checkpoint_every: int = 200
    max_bad_steps: int = 5            # consecutive non-finite losses (skipped steps) before stopping
    splits: tuple[str, ...] = ("train",)  # pre-training sees the train split only (EVALUATION.md)
    progress: bool = True
    logger: str | None = None         # csv or tensorboard: Fabric loggers under RUN/logs (loggers.py)


@dataclass
class RunConfig:
    method: str
    method_config: dict
    backbone: str = DEFAULT_BACKBONE
    image_size: int | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    data: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["train"] = {k: list(v) if isinstance(v, tuple) else v for k, v in d["train"].items()}
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str = "config.yaml") -> RunConfig:
        if not isinstance(d, dict) or "method" not in d:
            raise CxrclError(f"{where} is not a cxrcl run config (no 'method' key)")
        train = apply_overrides(TrainConfig(), d.get("train") or {}, f"train in {where}")
        return cls(method=d["method"], method_config=d.get("method_config") or {},
                   backbone=d.get("backbone", DEFAULT_BACKBONE), image_size=d.get("image_size"),
                   train=train, data=d.get("data") or {})


def resolved_precision(train: TrainConfig) -> str:
    """What ``precision: auto`` means on this machine (recorded in config.yaml as what ran)."""
    if train.precision != "auto":
        return "32-true" if train.precision == "32" else train.precision
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported() and train.accelerator != "cpu":
        return "bf16-mixed"
    return "32-true"


def read_yaml(path: Path, what: str) -> dict:
    """A YAML mapping from ``path``, or one sentence saying what is wrong with the file."""
    if not path.exists():
        raise CxrclError(f"{what} {path} not found")
    if not path.is_file():
        raise CxrclError(f"{what} {path} is a directory, not a YAML file")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        where = getattr(e, "problem_mark", None)
        at = f" (line {where.line + 1})" if where is not None else ""
        raise CxrclError(f"{what} {path} is not valid YAML{at}: fix the file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CxrclError(f"{what} {path} must hold a mapping of KEY: VALUE, not {type(data).__name__}")
    return data


def _finite(name: str, value, low: float | None = None, *, strict: bool = False,
            high: float | None = None) -> None:
    if value is None:
        return
    ok = math.isfinite(value) and (low is None or (value > low if strict else value >= low))
    ok = ok and (high is None or value <= high)
    if not ok:
        rng = (f"> {low:g}" if strict else f">= {low:g}") if low is not None else "finite"
        if high is not None:
            rng += f" and <= {high:g}"
        raise CxrclError(f"{name}={value!r} is not allowed: it must be a finite number {rng}")


def _whole(name: str, value, low: int) -> None:
    if value is not None and value < low:
        raise CxrclError(f"{name}={value!r} is not allowed: it must be a whole number >= {low}")


def validate_train(t: TrainConfig) -> None:
    """Ranges of every training setting (types were checked when the overrides were applied)."""
    _whole("steps", t.steps, 1)
    _finite("epochs", t.epochs, 0.0, strict=True)
    _whole("batch_size", t.batch_size, 1)
    _finite("lr", t.lr, 0.0, strict=True)
    _finite("weight_decay", t.weight_decay, 0.0)
    for b in t.betas:
        _finite("betas", b, 0.0, high=1.0)
    _finite("warmup_fraction", t.warmup_fraction, 0.0, high=1.0)
    _finite("min_lr_fraction", t.min_lr_fraction, 0.0, high=1.0)
    _finite("grad_clip", t.grad_clip, 0.0, strict=True)
    _whole("seed", t.seed, 0)
    if t.precision not in PRECISIONS:
        raise CxrclError(f"precision={t.precision!r} is not supported; use one of {', '.join(PRECISIONS)}")
    if t.accelerator not in ACCELERATORS:
        raise CxrclError(f"accelerator={t.accelerator!r} is not supported; use one of {', '.join(ACCELERATORS)}")
    _whole("devices", t.devices, 1)
    _whole("num_nodes", t.num_nodes, 1)
    _whole("log_every", t.log_every, 1)
    _whole("checkpoint_every", t.checkpoint_every, 1)
    _whole("max_bad_steps", t.max_bad_steps, 1)
    check_logger(t.logger)
    if not t.splits or not all(t.splits):
        raise CxrclError(f"splits={list(t.splits)!r} is not allowed: name at least one split, e.g. train")


def resolve_run_config(method: str, data: PreparedDataset, backbone: str | None = None,
                       image_size: int | None = None, train_overrides: dict | None = None,
                       config_file: str | Path | None = None) -> RunConfig:
    """Merge defaults < YAML config file < explicit arguments into one resolved, checked config."""
    file_cfg: dict = {}
    if config_file:
        path = Path(config_file)
        file_cfg = read_yaml(path, "config file")
        check_keys(f"config file {path}", file_cfg, CONFIG_FILE_KEYS)
    name, _ = parse_spec(method)
    if file_cfg.get("method") and parse_spec(str(file_cfg["method"]))[0] != name:
        raise CxrclError(f"config file {config_file} is for method {file_cfg['method']!r}, not {name!r}")
    _, mcfg = method_config(method, base=file_cfg.get("method_config"))
    where = f"config file {config_file} train" if config_file else "train"
    train = apply_overrides(TrainConfig(), file_cfg.get("train") or {}, where)
    train = apply_overrides(train, {k: v for k, v in (train_overrides or {}).items() if v is not None}, "train")
    if train.steps is not None:  # steps win over epochs (also over a config file's epochs)
        train = dataclasses.replace(train, epochs=None)
    elif train.epochs is None:
        train = dataclasses.replace(train, epochs=10.0)
    validate_train(train)
    size = image_size if image_size is not None else file_cfg.get("image_size", data.size)
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise CxrclError(f"image_size={size!r} is not allowed: it must be a whole number of pixels >= 8")
    bb = backbone or file_cfg.get("backbone") or DEFAULT_BACKBONE
    if not isinstance(bb, str):
        raise CxrclError(f"backbone={bb!r} must be a timm name such as vit_tiny_patch16_224")
    return RunConfig(
        method=name,
        method_config=config_dict(mcfg),
        backbone=bb,
        image_size=size,
        train=train,
        data={"path": str(data.root.resolve()), "content_hash": data.info.get("content_hash"),
              "split_hash": data.split_hash, "source": data.info.get("source")},
    )
