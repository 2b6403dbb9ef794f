"""The pre-training loop, on Lightning Fabric (CPU or GPU, bf16 autocast, DDP, many nodes).

One run = one directory::

    config.yaml      fully resolved (method, backbone, image size, training, data identity)
    environment.json versions, device, world size
    metrics.jsonl    one JSON object per logged step: step, loss, lr, images_per_s, ...
    checkpoints/     last.safetensors + training state (see training.checkpoint)
    summary.json     method, backbone, steps, wall seconds, images/second, final loss

Launch on several devices or nodes with ``torchrun`` (Fabric reads its environment) or with
``--devices N`` (Fabric starts the processes itself). Batches and random draws are pure
functions of (seed, step, rank), so ``--resume`` continues exactly where the last checkpoint was.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from cxrcl.data.normalize import to_model_input
from cxrcl.data.prepared import PreparedDataset
from cxrcl.errors import CxrclError
from cxrcl.methods.registry import build_method, config_dict, method_config
from cxrcl.models.backbones import DEFAULT_BACKBONE
from cxrcl.specs import apply_overrides, check_keys, parse_spec
from cxrcl.training.batches import BatchStream, step_generator
from cxrcl.training.checkpoint import load_checkpoint, save_checkpoint


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
    splits: tuple[str, ...] = ("train",)  # pre-training sees the train split only (EVALUATION.md)
    progress: bool = True


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
    def from_dict(cls, d: dict) -> RunConfig:
        train = apply_overrides(TrainConfig(), d.get("train", {}), "train")
        return cls(method=d["method"], method_config=d.get("method_config", {}),
                   backbone=d.get("backbone", DEFAULT_BACKBONE), image_size=d.get("image_size"),
                   train=train, data=d.get("data", {}))


def resolve_run_config(method: str, data: PreparedDataset, backbone: str | None = None,
                       image_size: int | None = None, train_overrides: dict | None = None,
                       config_file: str | Path | None = None) -> RunConfig:
    """Merge defaults < YAML config file < explicit arguments into one resolved config."""
    file_cfg: dict = {}
    if config_file:
        path = Path(config_file)
        if not path.exists():
            raise CxrclError(f"config file {path} not found")
        file_cfg = yaml.safe_load(path.read_text()) or {}
        check_keys(f"config file {path}", file_cfg, {"method", "method_config", "backbone", "image_size", "train"})
    name, _ = parse_spec(method)
    if file_cfg.get("method") and parse_spec(file_cfg["method"])[0] != name:
        raise CxrclError(f"config file {config_file} is for method {file_cfg['method']!r}, not {name!r}")
    _, mcfg = method_config(method, base=file_cfg.get("method_config"))
    train = apply_overrides(TrainConfig(), file_cfg.get("train", {}), "train")
    train = apply_overrides(train, {k: v for k, v in (train_overrides or {}).items() if v is not None}, "train")
    if train.steps is not None:  # steps win over epochs (also over a config file's epochs)
        train = dataclasses.replace(train, epochs=None)
    elif train.epochs is None:
        train = dataclasses.replace(train, epochs=10.0)
    return RunConfig(
        method=name,
        method_config=config_dict(mcfg),
        backbone=backbone or file_cfg.get("backbone") or DEFAULT_BACKBONE,
        image_size=image_size or file_cfg.get("image_size") or data.size,
        train=train,
        data={"path": str(data.root.resolve()), "content_hash": data.info.get("content_hash"),
              "split_hash": data.split_hash, "source": data.info.get("source")},
    )


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases, norms, position/class tokens and the temperature."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or "token" in name or "pos_embed" in name or "log_inv_t" in name
         else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(total: int, warmup_fraction: float, min_fraction: float):
    warmup = max(1, int(round(total * warmup_fraction)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, total - warmup)
        return min_fraction + (1 - min_fraction) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
    return factor


def _precision(train: TrainConfig) -> str:
    if train.precision != "auto":
        return train.precision
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def make_fabric(train: TrainConfig):
    from lightning.fabric import Fabric

    world = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun (and SLURM via Fabric)
    launched = world > 1
    devices, num_nodes = train.devices, train.num_nodes
    if launched and "LOCAL_WORLD_SIZE" in os.environ:  # torchrun: the launcher's layout wins
        devices = int(os.environ["LOCAL_WORLD_SIZE"])
        num_nodes = max(1, world // devices)
    multi = launched or devices * num_nodes > 1
    accelerator = train.accelerator
    if accelerator == "auto" and not torch.cuda.is_available():
        accelerator = "cpu"
    fabric = Fabric(accelerator=accelerator, devices=devices, num_nodes=num_nodes,
                    strategy="ddp" if multi else "auto", precision=_precision(train))
    fabric.launch()
    return fabric


def pretrain(method: str, data: str | Path, out: str | Path, *, backbone: str | None = None,
             image_size: int | None = None, train_overrides: dict | None = None,
             config_file: str | Path | None = None, resume: bool = False,
             stop_after: int | None = None) -> dict | None:
    """Pre-train ``method`` on the train split of a prepared data set; returns the summary
    (on the global-zero process; None on the others).

    ``stop_after`` ends this invocation after that many steps with a checkpoint (for jobs with a
    time limit); ``resume=True`` continues a run from its last checkpoint with its saved config.
    """
    out = Path(out)
    dataset = PreparedDataset.open(data)
    ckpt_dir = out / "checkpoints"
    if resume:
        if not (out / "config.yaml").exists():
            raise CxrclError(f"nothing to resume in {out}: no config.yaml; start without --resume")
        run = RunConfig.from_dict(yaml.safe_load((out / "config.yaml").read_text()))
        if run.data.get("content_hash") != dataset.info.get("content_hash"):
            raise CxrclError(f"{data} is not the data set {out} was trained on "
                             f"(content hash {dataset.info.get('content_hash')} != {run.data.get('content_hash')})")
    else:
        if (ckpt_dir / "last.state.json").exists():
            raise CxrclError(f"{out} already holds a run: pass --resume to continue it, or choose another --out")
        run = resolve_run_config(method, dataset, backbone, image_size, train_overrides, config_file)
    return _fit(run, dataset, out, resume=resume, stop_after=stop_after)


def _fit(run: RunConfig, dataset: PreparedDataset, out: Path, resume: bool, stop_after: int | None) -> dict | None:
    from tqdm import tqdm

    train = run.train
    fabric = make_fabric(train)
    fabric.seed_everything(train.seed, verbose=False)
    rows = dataset.indices(list(train.splits))
    stream = BatchStream(dataset.images, rows, train.batch_size, train.seed,
                         fabric.global_rank, fabric.world_size)
    total = train.steps or max(1, int(round(train.epochs * stream.steps_per_epoch)))
    model = build_method(run.method, run.backbone, run.image_size, base=run.method_config)
    optimizer = torch.optim.AdamW(param_groups(model, train.weight_decay), lr=train.lr, betas=train.betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(total, train.warmup_fraction, train.min_lr_fraction))
    raw_model, raw_optimizer = model, optimizer
    model, optimizer = fabric.setup(model, optimizer)
    model.mark_forward_method("training_step")

    start = 0
    if resume:
        start = load_checkpoint(out / "checkpoints", raw_model, raw_optimizer, scheduler)["step"]
    elif fabric.is_global_zero:
        out.mkdir(parents=True, exist_ok=True)
        resolved = run.to_dict()
        resolved["steps_total"] = total
        (out / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
        (out / "metrics.jsonl").write_text("")
        (out / "environment.json").write_text(json.dumps(environment(fabric), indent=2))
    fabric.barrier()

    end = total if stop_after is None else min(total, start + stop_after)
    bar = tqdm(total=total, initial=start, desc=f"{run.method} pre-training", unit="step",
               disable=not (train.progress and fabric.is_global_zero), dynamic_ncols=True)
    metrics = open(out / "metrics.jsonl", "a") if fabric.is_global_zero else None
    wall, images_seen, t_log, n_log, loss_value = 0.0, 0, time.perf_counter(), 0, float("nan")
    try:
        for step in range(start, end):
            t0 = time.perf_counter()
            x = to_model_input(stream.batch(step), run.image_size, device=fabric.device)
            logs = model.training_step(x, step_generator(train.seed, step, fabric.global_rank, fabric.device))
            loss = logs["loss"]
            if not torch.isfinite(loss.detach()):
                raise CxrclError(
                    f"the loss became {loss.item()} at step {step} of {out}: lower the learning rate "
                    f"(train.lr={train.lr}) or use precision 32-true; resume from the last checkpoint with --resume")
            optimizer.zero_grad(set_to_none=True)
            fabric.backward(loss)
            if train.grad_clip:
                fabric.clip_gradients(model, optimizer, max_norm=train.grad_clip, error_if_nonfinite=False)
            optimizer.step()
            scheduler.step()
            wall += time.perf_counter() - t0
            images_seen += x.shape[0] * fabric.world_size
            n_log += 1
            done = step + 1
            if done % train.log_every == 0 or done == end:
                loss_value = float(fabric.all_reduce(loss.detach(), reduce_op="mean"))
                now = time.perf_counter()
                record = {"step": done, "loss": loss_value, "lr": scheduler.get_last_lr()[0],
                          "epoch": round(stream.epoch_of(done), 4),
                          "images_per_s": n_log * x.shape[0] * fabric.world_size / (now - t_log)}
                record.update({k: float(v) for k, v in logs.items() if k != "loss"})
                if metrics:
                    metrics.write(json.dumps(record) + "\n")
                    metrics.flush()
                bar.set_postfix(loss=f"{loss_value:.4f}")
                t_log, n_log = now, 0
            if done % train.checkpoint_every == 0 or done == end:
                _checkpoint(fabric, raw_model, raw_optimizer, scheduler, out, done)
            bar.update(1)
    finally:
        bar.close()
        if metrics:
            metrics.close()

    summary = _summary(run, out, end, total, wall, images_seen, loss_value, fabric.world_size)
    if not fabric.is_global_zero:
        return None
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _checkpoint(fabric, model, optimizer, scheduler, out: Path, step: int) -> None:
    if fabric.is_global_zero:
        save_checkpoint(out / "checkpoints", model, optimizer, scheduler, step)
    fabric.barrier()


def _summary(run: RunConfig, out: Path, step: int, total: int, wall: float, images: int,
             loss: float, world: int) -> dict:
    previous = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    wall_total = previous.get("wall_seconds", 0.0) + wall
    images_total = previous.get("images_seen", 0) + images
    return {
        "method": run.method,
        "backbone": run.backbone,
        "image_size": run.image_size,
        "steps": step,
        "steps_total": total,
        "complete": step >= total,
        "wall_seconds": round(wall_total, 3),
        "images_seen": images_total,
        "images_per_s": round(images_total / wall_total, 2) if wall_total else None,
        "final_loss": loss,
        "world_size": world,
        "data": run.data,
    }


def environment(fabric) -> dict:
    import lightning
    import timm

    return {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
            "lightning": lightning.__version__, "platform": platform.platform(),
            "device": str(fabric.device), "world_size": fabric.world_size,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
