"""Source adapters for ``cxrcl data prepare SOURCE INPUT OUT``: one module per public layout.

Every adapter has the signature ``prepare_<name>(input, out, size=128,
split="patient:0.7,0.1,0.2", seed=0, workers=1, progress=True) -> PreparedDataset`` and writes a
prepared data set (see :mod:`cxrcl.data.prepared`) atomically. Sources in this round:

- ``npz``      directory of ``images_*.npz`` + ``metadata.csv`` (+ ``lung_masks_*.npz``), the
               layout of ``../shared/data/*``  (:mod:`.npz`)
- ``medmnist`` a MedMNIST .npz or flag, official split kept  (:mod:`.medmnist`)
- ``folder``   ``INPUT/<class>/*.png|jpg|jpeg``  (:mod:`.folder`)
- ``csv``      a CSV with a ``path`` column and label columns  (:mod:`.csv`)

Adapters are imported lazily, so ``import cxrcl.data.sources`` stays cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from cxrcl.data.prepared import PreparedDataset, parse_split_spec
from cxrcl.errors import CxrclError


def _lazy(module: str, func: str) -> Callable[..., PreparedDataset]:
    def run(input, out, size=128, split="patient:0.7,0.1,0.2", seed=0, workers=1, progress=True):
        fn = getattr(importlib.import_module(f"{__name__}.{module}"), func)
        return fn(input, out, size=size, split=split, seed=seed, workers=workers, progress=progress)

    run.__name__ = func
    run.__qualname__ = func
    run.__doc__ = f"Lazy entry point for :func:`cxrcl.data.sources.{module}.{func}`."
    return run


SOURCES: dict[str, Callable[..., PreparedDataset]] = {
    "npz": _lazy("npz", "prepare_npz"),
    "medmnist": _lazy("medmnist", "prepare_medmnist"),
    "folder": _lazy("folder", "prepare_folder"),
    "csv": _lazy("csv", "prepare_csv"),
}


def prepare(source: str, input: str | Path, out: str | Path, size: int = 128,
            split: str = "patient:0.7,0.1,0.2", seed: int = 0, workers: int = 1,
            progress: bool = True) -> PreparedDataset:
    """Prepare ``input`` (a ``source`` layout) into the prepared data set directory ``out``."""
    fn = SOURCES.get(str(source).lower())
    if fn is None:
        raise CxrclError(f"unknown data source {source!r}: available sources are {', '.join(sorted(SOURCES))}")
    if int(size) < 8:
        raise CxrclError(f"--size {size} is too small: use at least 8 pixels (e.g. 128)")
    parse_split_spec(split)  # a bad --split fails before any work
    if int(workers) < 1:
        raise CxrclError(f"--workers {workers} must be at least 1")
    out = Path(out)
    if Path(input).exists() and out.resolve() == Path(input).resolve():
        raise CxrclError(f"output {out} is the input itself: choose another output directory")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "dataset.json").exists())):
        raise CxrclError(f"{out} exists and is not a prepared data set: choose a new output directory "
                         "(an existing prepared data set is replaced)")
    return fn(input, out, size=int(size), split=split, seed=int(seed), workers=int(workers),
              progress=progress)


__all__ = ["SOURCES", "prepare"]
