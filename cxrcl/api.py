"""The Python API: everything the ``cxrcl`` command does, callable from a notebook.

    from cxrcl import api
    ds = api.make_phantom("data/phantom", n=1024, size=64)           # or api.prepare(...)
    api.pretrain("spcl", data="data/phantom", out="runs/spcl", steps=300,
                 backbone="vit_tiny_patch16_224:patch_size=8")
    enc = api.load_encoder("runs/spcl")
    feats = enc.features(ds.images[:32])                             # np.float32 [32, 192]
    res = api.evaluate("linear", "runs/spcl", "data/phantom", "all", "runs/spcl/linear.json")
    api.write_report(["runs/spcl", "runs/spcl/linear.json"], "report/REPORT.md")
"""

from __future__ import annotations

from cxrcl.data.phantom import make_phantom
from cxrcl.data.prepared import PreparedDataset
from cxrcl.data.sources import prepare
from cxrcl.encoders import Encoder, load_encoder
from cxrcl.evaluation.efficiency import benchmark
from cxrcl.evaluation.protocol import evaluate
from cxrcl.evaluation.report import write_report
from cxrcl.methods.registry import METHODS, build_method
from cxrcl.models.backbones import create_backbone
from cxrcl.training.fit import TrainConfig


def open_dataset(path) -> PreparedDataset:
    return PreparedDataset.open(path)


def pretrain(method: str, data, out, *, backbone: str | None = None, image_size: int | None = None,
             config: str | None = None, resume: bool = False, stop_after: int | None = None,
             **train) -> dict:
    """Pre-train; ``train`` keywords are :class:`~cxrcl.training.fit.TrainConfig` fields
    (steps, epochs, batch_size, lr, seed, devices, precision, ...). Returns summary.json."""
    from cxrcl.training.fit import pretrain as _pretrain

    return _pretrain(method, data, out, backbone=backbone, image_size=image_size, train_overrides=train,
                     config_file=config, resume=resume, stop_after=stop_after)


__all__ = ["METHODS", "Encoder", "PreparedDataset", "TrainConfig", "benchmark", "build_method",
           "create_backbone", "evaluate", "load_encoder", "make_phantom", "open_dataset", "prepare",
           "pretrain", "write_report"]
