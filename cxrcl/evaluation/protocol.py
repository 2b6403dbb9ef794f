"""``cxrcl eval TASK --run RUN``: pick the encoder (a run, ``random:BACKBONE`` or ``pixels``),
run the task's probe under the protocol of EVALUATION.md, and write the JSON.

The two floors every method must beat: ``random:BACKBONE`` (the same architecture, untrained,
seeded init, at the data set's image size unless ``image_size`` is given) and ``pixels`` (a
PCA of raw pixels fitted on the train split).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from cxrcl.data.prepared import PreparedDataset
from cxrcl.encoders import RANDOM_PREFIX, load_encoder
from cxrcl.errors import CxrclError
from cxrcl.evaluation.bootstrap import check_scores_output
from cxrcl.evaluation.features import fit_pixel_pca
from cxrcl.evaluation.finetune import FinetuneConfig, finetune
from cxrcl.evaluation.knn import knn_probe
from cxrcl.evaluation.linear import linear_probe
from cxrcl.evaluation.outputs import check_output
from cxrcl.evaluation.results import VAL_LABELS, save_json

PROBES = {"linear": linear_probe, "knn": knn_probe, "finetune": finetune}
SELECTS_ON_VAL = ("linear", "finetune")  # the tasks that take --val-labels


def extractor_for(run: str, ds: PreparedDataset, image_size: int | None = None):
    """The feature extractor named by ``run``."""
    if run == "pixels":
        return fit_pixel_pca(ds)
    if run.startswith(RANDOM_PREFIX):
        return load_encoder(run, image_size or ds.size)
    return load_encoder(run, image_size)


def evaluate(task: str, run: str | Path, data: str | Path, labels: str, out: str | Path | None = None,
             fractions=(0.01, 0.1, 1.0), seeds: int = 3, degrade_level: int = 0,
             image_size: int | None = None, val_labels: str | None = None,
             finetune_options: dict | None = None) -> dict:
    """``val_labels`` (linear, finetune): ``"matched"`` (default) or ``"full"``, the val labels the
    probe's C (the fine-tuning's early stopping) is chosen on
    (:data:`cxrcl.evaluation.results.VAL_LABELS`); ``finetune_options``: FinetuneConfig keys."""
    if task not in PROBES:
        raise CxrclError(f"unknown evaluation task {task!r}; available: {', '.join(PROBES)}")
    options = {}
    if val_labels is not None:
        if task not in SELECTS_ON_VAL:
            raise CxrclError(f"--val-labels applies to {' and '.join(SELECTS_ON_VAL)} only: {task} "
                             "selects nothing on the val split")
        if val_labels not in VAL_LABELS:
            raise CxrclError(f"--val-labels {val_labels!r}: choose one of {', '.join(VAL_LABELS)}")
        options["val_labels"] = val_labels
    if task == "finetune":
        if str(run) == "pixels":
            raise CxrclError("--run pixels has no weights to fine-tune: the pixel floor is "
                             "`cxrcl eval linear --run pixels`; fine-tune a run or random:BACKBONE")
        options["config"] = FinetuneConfig(**(finetune_options or {}))  # checked before any work
    if out is not None:
        out = check_output(out, "json")
        check_scores_output(out)  # the sidecar of per-test-image scores (bootstrap.py)
    ds = PreparedDataset.open(data)
    names = ds.resolve_labels(labels)
    run = str(run)
    extract = extractor_for(run, ds, image_size)
    command = "cxrcl " + shlex.join(sys.argv[1:]) if Path(sys.argv[0]).name == "cxrcl" else None
    extra = {"command": command} if command else {}
    if getattr(extract, "resized", None):
        extra["input_size"] = extract.resized
    result = PROBES[task](ds, extract, names, fractions=fractions, seeds=seeds,
                          degrade_level=degrade_level, run_name=run, extra=extra or None, **options)
    if out is not None:
        save_json(result, out)
    return result
