"""Checkpoints in safetensors: model weights, and the training state needed to resume exactly.

    checkpoints/last.safetensors        model (safetensors.torch.save_model: shared tensors ok)
    checkpoints/last.state.safetensors  optimizer tensors + torch/cuda RNG states
    checkpoints/last.state.json         step, scheduler, optimizer hyper-parameters, numpy/python RNG

Each file is written to a temporary name and renamed, and the JSON (which names the step) is
written last, so a run killed mid-save resumes from the previous complete checkpoint.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from cxrcl.errors import CxrclError

MODEL_FILE, STATE_FILE, META_FILE = "last.safetensors", "last.state.safetensors", "last.state.json"


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def save_checkpoint(ckpt_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler, step: int, extra: dict | None = None) -> None:
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    opt = optimizer.state_dict()
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    scalars: dict[str, dict] = {}
    for pid, pstate in opt["state"].items():
        for key, val in pstate.items():
            if torch.is_tensor(val):
                tensors[f"opt.{pid}.{key}"] = val.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = val
    np_state = np.random.get_state()
    meta = {
        "step": step,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "param_groups": opt["param_groups"],
        "opt_scalars": scalars,
        "rng_numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "rng_python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        **(extra or {}),
    }
    _atomic(ckpt_dir / MODEL_FILE, lambda p: save_model(model, str(p)))
    _atomic(ckpt_dir / STATE_FILE, lambda p: save_file(tensors, str(p)))
    _atomic(ckpt_dir / META_FILE, lambda p: p.write_text(json.dumps(meta)))


def load_weights(model: nn.Module, path: Path) -> None:
    if not path.exists():
        raise CxrclError(f"{path} not found: the run has no checkpoint yet (train it, or check --run)")
    missing, unexpected = load_model(model, str(path), strict=False)
    if missing or unexpected:
        raise CxrclError(f"{path} does not match the model built from the run's config.yaml "
                         f"(missing {len(missing)}, unexpected {len(unexpected)} tensors): "
                         "was config.yaml edited?")


def load_checkpoint(ckpt_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler) -> dict:
    """Restore model, optimizer, scheduler and RNGs; returns the meta dict (with ``step``)."""
    meta_path = ckpt_dir / META_FILE
    if not meta_path.exists():
        raise CxrclError(f"nothing to resume in {ckpt_dir.parent}: no {META_FILE}; start without --resume")
    meta = json.loads(meta_path.read_text())
    load_weights(model, ckpt_dir / MODEL_FILE)
    tensors = load_file(str(ckpt_dir / STATE_FILE))
    state: dict[int, dict] = {}
    for key, val in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = val
    for pid, vals in meta["opt_scalars"].items():
        state.setdefault(int(pid), {}).update(vals)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    if scheduler is not None and meta["scheduler"] is not None:
        scheduler.load_state_dict(meta["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    n = meta["rng_numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), *n[2:]))
    p = meta["rng_python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    return meta
