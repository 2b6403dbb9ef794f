"""What ``--resume`` may change, and what it refuses.

A resumed run continues with the config it was started with (``config.yaml``). Arguments given
with ``--resume`` are compared with it, key by key:

* a larger ``steps`` or ``epochs`` extends the run: the warm-up/cosine schedule is recomputed
  for the new length and applies from the next step (the steps already taken keep theirs);
  a smaller one than the steps already done is refused;
* ``log_every``, ``checkpoint_every``, ``progress``, ``max_bad_steps``, ``precision`` and
  ``accelerator`` may change (a different device or precision than the run's is reported);
* any other change -- the method or its settings, the backbone, the image size, the data set
  (content hash), batch size, learning rate, seed, devices, splits -- is refused in one sentence
  naming the key, because the resumed run would no longer be the run in the folder.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from cxrcl.data.prepared import PreparedDataset
from cxrcl.errors import CxrclError
from cxrcl.methods.registry import config_dict, method_config
from cxrcl.specs import apply_overrides, parse_spec
from cxrcl.training.run_config import (
    RunConfig,
    read_yaml,
    resolve_run_config,
    resolved_precision,
    validate_train,
)

MAY_CHANGE = {"log_every", "checkpoint_every", "progress", "max_bad_steps", "precision", "accelerator",
              "logger"}


def read_run_config(out: Path) -> dict:
    """The saved config.yaml of run ``out`` (one sentence when it is missing or broken)."""
    path = out / "config.yaml"
    if not path.exists():
        raise CxrclError(f"nothing to resume in {out}: no config.yaml; start without --resume")
    saved = read_yaml(path, "run config")
    RunConfig.from_dict(saved, where=str(path))  # types and keys checked here
    return saved


def reconcile_resume(saved: dict, dataset: PreparedDataset, out: Path,
                     requested: dict | None) -> tuple[RunConfig, list[str]]:
    """The config to resume with (saved + allowed changes) and notes for the user."""
    path = out / "config.yaml"
    run = RunConfig.from_dict(saved, where=str(path))
    notes: list[str] = []
    have = dataset.info.get("content_hash")
    if run.data.get("content_hash") != have:
        raise CxrclError(f"{dataset.root} is not the data set {out} was trained on (content hash "
                         f"{have} != {run.data.get('content_hash')}): pass the run's data set "
                         f"({run.data.get('path')}) or start a new run")
    if requested:
        run = _apply_requested(run, saved, dataset, requested)
    validate_train(run.train)
    runtime = saved.get("runtime") or {}
    use_gpu = torch.cuda.is_available() and run.train.accelerator not in ("cpu",)
    now = {"device_type": "cuda" if use_gpu else "cpu", "precision": resolved_precision(run.train)}
    for key, value in now.items():
        if runtime.get(key) and runtime[key] != value:
            notes.append(f"{out} was trained with {key.replace('_', ' ')} {runtime[key]}; this resume runs "
                         f"with {value} (the continuation is not bit-identical to an uninterrupted run)")
    return run, notes


def _differs(key: str, was, now) -> CxrclError:
    return CxrclError(f"--resume cannot change {key} (the run has {was!r}, this command asks for "
                      f"{now!r}): drop the argument to continue the run, or start a new run in another --out")


def _apply_requested(run: RunConfig, saved: dict, dataset: PreparedDataset, req: dict) -> RunConfig:
    if req.get("method"):
        name, overrides = parse_spec(req["method"])
        if name != run.method:
            raise _differs("the method", run.method, name)
        if overrides:
            _, cfg = method_config(req["method"], base=run.method_config)
            wanted = config_dict(cfg)
            for k, v in wanted.items():
                if run.method_config.get(k) != v:
                    raise _differs(f"method setting {k}", run.method_config.get(k), v)
    if req.get("backbone") and req["backbone"] != run.backbone:
        raise _differs("the backbone", run.backbone, req["backbone"])
    if req.get("image_size") is not None and req["image_size"] != run.image_size:
        raise _differs("the image size", run.image_size, req["image_size"])
    given = {k: v for k, v in (req.get("train_overrides") or {}).items() if v is not None}
    if req.get("config_file"):
        file_run = resolve_run_config(run.method, dataset, None, None, None, req["config_file"])
        given = {**{f.name: getattr(file_run.train, f.name) for f in dataclasses.fields(file_run.train)
                    if getattr(file_run.train, f.name) != getattr(type(file_run.train)(), f.name)},
                 **given}
    asked = apply_overrides(run.train, given, "train")
    train = run.train
    changes: dict = {}
    for key in given:
        was, now = getattr(train, key), getattr(asked, key)
        if was == now:
            continue
        if key in ("steps", "epochs"):
            continue
        if key not in MAY_CHANGE:
            raise _differs(key, was, now)
        changes[key] = now
    length = _new_length(train, asked, given, saved)
    return dataclasses.replace(run, train=dataclasses.replace(train, **changes, **length))


def _new_length(train, asked, given: dict, saved: dict) -> dict:
    """steps/epochs for an extension (only ever longer than the steps already planned)."""
    if "steps" not in given and "epochs" not in given:
        return {}
    planned = int(saved.get("steps_total") or 0)
    if "steps" in given:
        if planned and asked.steps < planned:
            raise CxrclError(f"--resume cannot shorten the run to {asked.steps} steps: it was planned for "
                             f"{planned}; give a larger --steps, or none to finish as planned")
        return {"steps": asked.steps, "epochs": None}
    if train.epochs is not None and asked.epochs < train.epochs:
        raise CxrclError(f"--resume cannot shorten the run to {asked.epochs} epochs: it was planned for "
                         f"{train.epochs}; give a larger --epochs, or none to finish as planned")
    if train.steps is not None:
        raise CxrclError(f"the run was planned in steps ({train.steps}): extend it with --steps, not --epochs")
    return {"epochs": asked.epochs, "steps": None}
