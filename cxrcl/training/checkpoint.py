"""Crash-consistent checkpoints in safetensors: one directory per checkpoint, made atomic.

    checkpoints/step-00000400/model.safetensors   model (safetensors.torch.save_model)
    checkpoints/step-00000400/state.safetensors   optimizer tensors + torch/cuda RNG states
    checkpoints/step-00000400/state.json          step, scheduler, optimizer hyper-parameters,
                                                  numpy/python RNG, file sizes (written last)
    checkpoints/last.safetensors                  the newest model (a hard link; CLI.md contract)

A checkpoint is written into a hidden ``.step-N.tmp`` directory, every file and the directory
are fsynced, and the directory is renamed to ``step-N`` in one atomic step, so a ``step-*``
directory is always complete: a kill at any moment leaves either the previous checkpoint or the
new one, never step-400 weights with step-200 optimizer state. The previous checkpoint is kept
until the new one is in place (the newest ``KEEP`` are kept). A full disk while saving removes
only the unfinished temporary directory and says so; the previous checkpoint stays intact.
Resume reads the newest ``step-*`` directory and checks it (sizes recorded in state.json, every
file readable) before touching the model; a damaged one is named in one sentence.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from cxrcl.errors import CxrclError

MODEL_FILE, STATE_FILE, META_FILE = "model.safetensors", "state.safetensors", "state.json"
LAST_MODEL = "last.safetensors"
KEEP = 2


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def checkpoint_dirs(ckpt_dir: Path) -> list[Path]:
    """Complete checkpoint directories, oldest first (temporary ones are never listed)."""
    if not ckpt_dir.is_dir():
        return []
    found = [p for p in ckpt_dir.iterdir() if p.is_dir() and p.name.startswith("step-")
             and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    dirs = checkpoint_dirs(ckpt_dir)
    return dirs[-1] if dirs else None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _state(model_step: int, optimizer: torch.optim.Optimizer, scheduler, extra: dict | None):
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
    py_state = random.getstate()
    meta = {
        "step": model_step,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "param_groups": opt["param_groups"],
        "opt_scalars": scalars,
        "rng_numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "rng_python": [py_state[0], list(py_state[1]), py_state[2]],
        **(extra or {}),
    }
    return tensors, meta


def _link_last(ckpt_dir: Path, model_file: Path) -> None:
    """Point ``checkpoints/last.safetensors`` at the newest model (hard link, else a copy)."""
    tmp = ckpt_dir / f".{LAST_MODEL}.tmp"
    tmp.unlink(missing_ok=True)
    try:
        os.link(model_file, tmp)
    except OSError:
        shutil.copyfile(model_file, tmp)
    os.replace(tmp, ckpt_dir / LAST_MODEL)


def save_checkpoint(ckpt_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler, step: int, extra: dict | None = None) -> Path:
    """Write checkpoint ``step`` as one atomic directory; returns it."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    final = ckpt_dir / step_dir_name(step)
    tmp = ckpt_dir / f".{final.name}.tmp"
    tensors, meta = _state(step, optimizer, scheduler, extra)
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_model(model, str(tmp / MODEL_FILE))
        save_file(tensors, str(tmp / STATE_FILE))
        meta["sizes"] = {MODEL_FILE: (tmp / MODEL_FILE).stat().st_size,
                         STATE_FILE: (tmp / STATE_FILE).stat().st_size}
        (tmp / META_FILE).write_text(json.dumps(meta))
        for name in (MODEL_FILE, STATE_FILE, META_FILE):
            _fsync(tmp / name)
        _fsync(tmp)
        if final.exists():  # a checkpoint of this step already exists (e.g. a re-save): replace
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync(ckpt_dir)
        _link_last(ckpt_dir, final / MODEL_FILE)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        previous = latest_checkpoint(ckpt_dir)
        kept = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"
        if e.errno == errno.ENOSPC:
            raise CxrclError(f"no space left on the device of {ckpt_dir} while saving step {step}; "
                             f"{kept}: free space and run the same command with --resume") from None
        raise CxrclError(f"could not write checkpoint step {step} in {ckpt_dir} ({e.strerror or e}); "
                         f"{kept}") from None
    for old in checkpoint_dirs(ckpt_dir)[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _check_complete(directory: Path) -> dict:
    """The state.json of a checkpoint directory, after checking that every file is whole."""
    meta_path = directory / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
        sizes = meta["sizes"]
        int(meta["step"])
    except (OSError, ValueError, KeyError, TypeError):
        raise CxrclError(f"{meta_path} is missing or damaged: move {directory} aside to resume from "
                         "the previous checkpoint, or start a new run") from None
    for name, size in sizes.items():
        path = directory / name
        if not path.exists() or path.stat().st_size != size:
            raise CxrclError(f"{path} is missing or truncated: move {directory} aside to resume from "
                             "the previous checkpoint, or start a new run")
    return meta


def model_file(run_or_ckpt: Path) -> Path:
    """The newest model weights of a run directory (or of its checkpoints/ folder)."""
    ckpt_dir = run_or_ckpt if run_or_ckpt.name == "checkpoints" else run_or_ckpt / "checkpoints"
    latest = latest_checkpoint(ckpt_dir)
    return latest / MODEL_FILE if latest else ckpt_dir / LAST_MODEL


def load_weights(model: nn.Module, path: Path) -> None:
    if not path.exists():
        raise CxrclError(f"{path} not found: the run has no checkpoint yet (train it, or check --run)")
    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        if "size mismatch" in str(e) or "shape" in str(e).lower():
            raise CxrclError(f"{path} holds weights of another model than the one the run's config.yaml "
                             "describes (was a checkpoint of another backbone copied in?)") from None
        raise CxrclError(f"{path} is damaged or not a safetensors file: restore it, or resume from an "
                         "earlier checkpoint") from None
    if missing or unexpected:
        raise CxrclError(f"{path} does not match the model built from the run's config.yaml "
                         f"(missing {len(missing)}, unexpected {len(unexpected)} tensors): "
                         "was config.yaml edited, or a checkpoint of another backbone copied in?")


def read_checkpoint_meta(ckpt_dir: Path) -> dict | None:
    """state.json of the newest complete checkpoint (checked), or None when there is none."""
    latest = latest_checkpoint(ckpt_dir)
    return _check_complete(latest) if latest else None


def load_checkpoint(ckpt_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler) -> dict:
    """Restore model, optimizer, scheduler and RNGs from the newest checkpoint; returns its
    state.json (with ``step``)."""
    latest = latest_checkpoint(ckpt_dir)
    if latest is None:
        raise CxrclError(f"nothing to resume in {ckpt_dir.parent}: it has no checkpoint yet; "
                         "start without --resume")
    meta = _check_complete(latest)
    load_weights(model, latest / MODEL_FILE)
    try:
        tensors = load_file(str(latest / STATE_FILE))
    except (SafetensorError, OSError) as e:
        raise CxrclError(f"{latest / STATE_FILE} is damaged ({e}): move {latest} aside to resume from "
                         "the previous checkpoint") from None
    state: dict[int, dict] = {}
    for key, val in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = val
    for pid, vals in meta["opt_scalars"].items():
        state.setdefault(int(pid), {}).update(vals)
    try:
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    except (ValueError, KeyError, RuntimeError) as e:
        raise CxrclError(f"the optimizer state in {latest} does not fit the model ({e}): the checkpoint "
                         "is from another model or cxrcl version") from None
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
