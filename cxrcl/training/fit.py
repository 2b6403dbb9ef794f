"""The pre-training loop, on Lightning Fabric (CPU or GPU, bf16 autocast, DDP, many nodes).

One run = one directory::

    config.yaml      fully resolved (method, backbone, image size, training, data identity, and
                     the runtime that ran: device, precision, world size)
    environment.json versions, device, world size
    metrics.jsonl    one JSON object per logged step: step, loss, lr, images_per_s, skipped, ...
    checkpoints/     one atomic directory per checkpoint (see training.checkpoint)
    summary.json     method, backbone, steps, wall seconds, images/second, final loss

Launch on several devices or nodes with ``torchrun`` (Fabric reads its environment) or with
``--devices N`` (Fabric starts the processes itself). Batches and random draws are pure
functions of (seed, step, rank), so ``--resume`` continues exactly where the last checkpoint was.

Reliability (docs/reliability.md): the whole config is checked before a directory is made;
Ctrl-C/SIGTERM stop at the next step with a checkpoint; a non-finite loss or gradient skips the
step (no update, counted in metrics.jsonl) and ``max_bad_steps`` in a row stop the run with its
last good checkpoint intact; BatchNorm is synchronised across processes under DDP.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path

import torch
import yaml

from cxrcl.data.normalize import to_model_input
from cxrcl.data.prepared import PreparedDataset
from cxrcl.errors import CxrclError, RunStopped
from cxrcl.io import atomic_write_json, atomic_write_text, check_writable_dir
from cxrcl.methods.base import Method
from cxrcl.methods.registry import build_method
from cxrcl.models.sync_norm import convert_batchnorm, has_batchnorm
from cxrcl.training.batches import BatchStream, step_generator
from cxrcl.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from cxrcl.training.interrupts import stop_on_signals
from cxrcl.training.loggers import loggable, make_loggers
from cxrcl.training.optim import param_groups, warmup_cosine
from cxrcl.training.resume import read_run_config, reconcile_resume
from cxrcl.training.run_config import RunConfig, TrainConfig, resolve_run_config, resolved_precision

__all__ = ["RunConfig", "TrainConfig", "param_groups", "pretrain", "resolve_run_config", "warmup_cosine"]

LAUNCHER_ENV = ("WORLD_SIZE", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "NODE_RANK")


def check_launch(train: TrainConfig) -> None:
    """Refuse a multi-node request that no launcher started (it would wait for peers forever)."""
    if train.num_nodes > 1 and not any(k in os.environ for k in LAUNCHER_ENV):
        raise CxrclError(f"--num-nodes {train.num_nodes} needs one launch per node (e.g. `torchrun "
                         f"--nnodes {train.num_nodes} --node-rank R --rdzv-endpoint HOST:PORT -m cxrcl "
                         "pretrain ...` or SLURM's srun); on one machine use --devices instead")
    if train.precision in ("16-mixed", "bf16-true") and not torch.cuda.is_available():
        raise CxrclError(f"precision {train.precision} needs a GPU; on CPU use 32-true or bf16-mixed")


def make_fabric(train: TrainConfig, loggers: list | None = None):
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
    if accelerator in ("cuda", "gpu") and not torch.cuda.is_available():
        raise CxrclError(f"accelerator {accelerator} was asked for but this machine has no GPU; "
                         "use --accelerator auto or cpu")
    strategy = "auto"
    if multi:
        from datetime import timedelta

        from lightning.fabric.strategies import DDPStrategy

        timeout = float(os.environ.get("CXRCL_DDP_TIMEOUT_S", "300"))
        strategy = DDPStrategy(timeout=timedelta(seconds=timeout))
    fabric = Fabric(accelerator=accelerator, devices=devices, num_nodes=num_nodes,
                    strategy=strategy, precision=resolved_precision(train), loggers=loggers)
    fabric.launch()
    return fabric


def pretrain(method: str, data: str | Path, out: str | Path, *, backbone: str | None = None,
             image_size: int | None = None, train_overrides: dict | None = None,
             config_file: str | Path | None = None, resume: bool = False,
             stop_after: int | None = None) -> dict | None:
    """Pre-train ``method`` on the train split of a prepared data set; returns the summary
    (on the global-zero process; None on the others).

    ``stop_after`` ends this invocation after that many steps with a checkpoint (for jobs with a
    time limit); ``resume=True`` continues a run from its last checkpoint with its saved config
    (a larger ``steps``/``epochs`` extends it; other changes are refused by name). Resuming a
    finished run changes nothing and returns its summary with ``already_complete: True``.
    """
    out = Path(out)
    if stop_after is not None and (isinstance(stop_after, bool) or stop_after < 1):
        raise CxrclError(f"--stop-after {stop_after} is not allowed: it must be a whole number of steps >= 1")
    dataset = PreparedDataset.open(data)
    ckpt_dir = out / "checkpoints"
    if resume:
        saved = read_run_config(out)
        requested = None
        if method or backbone or image_size or train_overrides or config_file:
            requested = dict(method=method, backbone=backbone, image_size=image_size,
                             train_overrides=train_overrides, config_file=config_file)
        run, notes = reconcile_resume(saved, dataset, out, requested)
        for note in notes:
            print(f"cxrcl: note: {note}")
        done = latest_checkpoint(ckpt_dir)
        if done is None:
            raise CxrclError(f"nothing to resume in {out}: it has no checkpoint yet; start without "
                             "--resume (or remove the folder)")
    else:
        if out.exists() and out.is_file():
            raise CxrclError(f"--out {out} is a file: name a new folder for the run")
        check_writable_dir(out, "run folder --out")
        if latest_checkpoint(ckpt_dir) is not None:
            raise CxrclError(f"{out} already holds a run: pass --resume to continue it, or choose another --out")
        if out.exists() and not _only_run_files(out):
            raise CxrclError(f"--out {out} is a folder with other files in it: name a new or empty folder "
                             "for the run (cxrcl never writes into a folder of yours)")
        run = resolve_run_config(method, dataset, backbone, image_size, train_overrides, config_file)
    check_launch(run.train)
    from lightning.fabric.utilities.seed import seed_everything

    seed_everything(run.train.seed, verbose=False)  # the same initial weights on every process
    model = build_method(run.method, run.backbone, run.image_size, base=run.method_config)
    model.check_data(dataset)  # refuse a data set the method cannot use before writing anything
    try:
        summary = _fit(run, dataset, model, out, resume=resume, stop_after=stop_after)
    except RunStopped:  # every process stops together (a signal is agreed on by all-reduce)
        _leave_process_group()
        raise
    _leave_process_group()
    return summary


def _leave_process_group() -> None:
    """End a DDP run on every process together: a rank that exits while gloo's threads are
    still alive can abort ("terminate called without an active exception", seen in CI)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


RUN_FILES = {"config.yaml", "metrics.jsonl", "environment.json", "summary.json", "checkpoints", "logs"}


def _only_run_files(out: Path) -> bool:
    """True for an empty folder, or one holding only what a run killed before its first
    checkpoint wrote (a fresh start may replace those files: there is nothing to resume)."""
    names = {p.name for p in out.iterdir() if not (p.name.startswith(".") and p.name.endswith(".tmp"))}
    if not names <= RUN_FILES:
        return False
    ckpt = out / "checkpoints"
    return not ckpt.exists() or all(p.name.startswith(".") for p in ckpt.iterdir())


def _write_run_files(out: Path, run: RunConfig, total: int, fabric, resume: bool) -> None:
    resolved = run.to_dict()
    resolved["steps_total"] = total
    resolved["runtime"] = {"device": str(fabric.device), "device_type": fabric.device.type,
                           "precision": resolved_precision(run.train), "world_size": fabric.world_size}
    if resume:  # keep the history of where the run has been (machine changes, extensions)
        saved = yaml.safe_load((out / "config.yaml").read_text())
        history = saved.get("runtime_history", []) + [saved.get("runtime")]
        resolved["runtime_history"] = [h for h in history if h]
    atomic_write_text(out / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    atomic_write_json(out / "environment.json", environment(fabric))


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint a resume starts from (a killed run logged
    them, the resumed run logs them again)."""
    if not path.exists():
        atomic_write_text(path, "")
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # a line cut by the kill
    atomic_write_text(path, "".join(k + "\n" for k in keep))


def _fit(run: RunConfig, dataset: PreparedDataset, model: Method, out: Path, resume: bool,
         stop_after: int | None) -> dict | None:
    from tqdm import tqdm

    train = run.train
    fabric = make_fabric(train, make_loggers(train.logger, out))  # --logger (training/loggers.py)
    fabric.seed_everything(train.seed, verbose=False)
    rows = dataset.indices(list(train.splits))
    stream = BatchStream(dataset.images, rows, train.batch_size, train.seed,
                         fabric.global_rank, fabric.world_size)
    total = train.steps or max(1, int(round(train.epochs * stream.steps_per_epoch)))
    if fabric.world_size > 1 and has_batchnorm(model):
        model = convert_batchnorm(model, fabric.device.type)
    optimizer = torch.optim.AdamW(param_groups(model, train.weight_decay), lr=train.lr, betas=train.betas)
    schedule = warmup_cosine(total, train.warmup_fraction, train.min_lr_fraction)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    raw_model, raw_optimizer = model, optimizer
    model, optimizer = fabric.setup(model, optimizer)
    model.mark_forward_method("training_step")

    start = 0
    if resume:
        meta = load_checkpoint(out / "checkpoints", raw_model, raw_optimizer, scheduler)
        start = meta["step"]
        if start >= total:
            fabric.barrier()
            return _already_complete(out, start, total) if fabric.is_global_zero else None
        for group, base in zip(raw_optimizer.param_groups, scheduler.base_lrs, strict=True):
            group["lr"] = base * schedule(start)  # the schedule of this (possibly extended) run
    if fabric.is_global_zero:
        out.mkdir(parents=True, exist_ok=True)
        _write_run_files(out, run, total, fabric, resume)
        if resume:
            _truncate_metrics(out / "metrics.jsonl", start)
        else:
            atomic_write_text(out / "metrics.jsonl", "")
    fabric.barrier()

    end = total if stop_after is None else min(total, start + stop_after)
    bar = tqdm(total=total, initial=start, desc=f"{run.method} pre-training", unit="step",
               disable=not (train.progress and fabric.is_global_zero), dynamic_ncols=True)
    metrics = open(out / "metrics.jsonl", "a") if fabric.is_global_zero else None
    wall, images_seen, t_log, n_log, loss_value = 0.0, 0, time.perf_counter(), 0, float("nan")
    bad_in_row, skipped_total, last_saved, done = 0, 0, start, start
    stopped_by = ""
    try:
        with stop_on_signals() as stop:
            for step in range(start, end):
                t0 = time.perf_counter()
                raw_model.set_progress(step, total)
                raw_model.set_batch_rows(stream.rows_for(step), dataset)
                x = to_model_input(stream.batch(step), run.image_size, device=fabric.device)
                # Fabric applies its precision (bf16 autocast) to forward() only: a method marked
                # with mark_forward_method on one device is called as is, so autocast here
                with fabric.autocast():
                    logs = model.training_step(x, step_generator(train.seed, step, fabric.global_rank,
                                                                 fabric.device))
                loss = logs["loss"]
                good = _all_agree(fabric, bool(torch.isfinite(loss.detach())))
                optimizer.zero_grad(set_to_none=True)
                if good:
                    fabric.backward(loss)
                    norm = fabric.clip_gradients(model, optimizer, max_norm=train.grad_clip or math.inf,
                                                 error_if_nonfinite=False)
                    good = _all_agree(fabric, bool(torch.isfinite(norm)))
                if good:
                    optimizer.step()
                    raw_model.after_optimizer_step()
                    bad_in_row = 0
                else:  # skip the update: the weights keep their last good values
                    optimizer.zero_grad(set_to_none=True)
                    bad_in_row += 1
                    skipped_total += 1
                    if bad_in_row >= train.max_bad_steps:
                        raise CxrclError(
                            f"the loss or its gradient was not finite for {bad_in_row} steps in a row "
                            f"(last at step {step}) in {out}: lower the learning rate (train.lr={train.lr}) "
                            f"or use precision 32-true; the last good checkpoint (step {last_saved}) is "
                            "intact and resumes with --resume")
                scheduler.step()
                wall += time.perf_counter() - t0
                images_seen += x.shape[0] * fabric.world_size
                n_log += 1
                done = step + 1
                if done % train.log_every == 0 or done == end or not good:
                    loss_value = float(fabric.all_reduce(loss.detach(), reduce_op="mean"))
                    now = time.perf_counter()
                    record = {"step": done, "loss": loss_value, "lr": scheduler.get_last_lr()[0],
                              "epoch": round(stream.epoch_of(done), 4),
                              "images_per_s": n_log * x.shape[0] * fabric.world_size / (now - t_log),
                              "skipped": not good, "skipped_total": skipped_total}
                    record.update({k: float(v) for k, v in logs.items() if k != "loss"})
                    if metrics:
                        metrics.write(json.dumps(record) + "\n")
                        metrics.flush()
                    fabric.log_dict(loggable(record), step=done)
                    bar.set_postfix(loss=f"{loss_value:.4f}")
                    t_log, n_log = now, 0
                if done % train.checkpoint_every == 0 or done == end:
                    _checkpoint(fabric, raw_model, raw_optimizer, scheduler, out, done)
                    last_saved = done
                bar.update(1)
                if not _all_agree(fabric, not stop):
                    stopped_by = stop.name or "a signal on another process"
                    break
    except KeyboardInterrupt:  # a second Ctrl-C: stop now, the last checkpoint stays as it was
        raise RunStopped(f"interrupted at step {done} of {out}; the last checkpoint (step {last_saved}) "
                         "resumes with --resume") from None
    finally:
        bar.close()
        if metrics:
            metrics.close()
        for logger in fabric.loggers:
            logger.finalize("success")
    if stopped_by and last_saved != done:
        _checkpoint(fabric, raw_model, raw_optimizer, scheduler, out, done)
        last_saved = done

    summary = _summary(run, out, done, total, wall, images_seen, loss_value, fabric.world_size,
                       skipped_total)
    if fabric.is_global_zero:
        atomic_write_json(out / "summary.json", summary)
    if stopped_by:
        raise RunStopped(f"stopped by {stopped_by} at step {done} of {total} with a checkpoint in {out}; "
                         "continue with the same command plus --resume")
    return summary if fabric.is_global_zero else None


def _all_agree(fabric, flag: bool) -> bool:
    """``flag`` on every process (one tiny all-reduce under DDP), so ranks take the same branch."""
    if fabric.world_size == 1:
        return flag
    t = torch.tensor([0.0 if flag else 1.0], device=fabric.device)
    return float(fabric.all_reduce(t, reduce_op="sum")) == 0.0


def _already_complete(out: Path, step: int, total: int) -> dict:
    path = out / "summary.json"
    summary = json.loads(path.read_text()) if path.exists() else {"steps": step, "steps_total": total}
    return {**summary, "already_complete": True}


def _checkpoint(fabric, model, optimizer, scheduler, out: Path, step: int) -> None:
    if fabric.is_global_zero:
        save_checkpoint(out / "checkpoints", model, optimizer, scheduler, step)
    fabric.barrier()


def _summary(run: RunConfig, out: Path, step: int, total: int, wall: float, images: int,
             loss: float, world: int, skipped: int) -> dict:
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
        "skipped_steps": previous.get("skipped_steps", 0) + skipped,
        "world_size": world,
        "precision": resolved_precision(run.train),
        "data": run.data,
    }


def environment(fabric) -> dict:
    import lightning
    import timm

    return {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
            "lightning": lightning.__version__, "platform": platform.platform(),
            "device": str(fabric.device), "world_size": fabric.world_size,
            "precision": str(fabric._precision.__class__.__name__),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}

