"""Source adapters for ``cxrcl data prepare SOURCE INPUT OUT``: one module per public layout.

Every adapter has the signature ``prepare_<name>(input, out, size=128,
split="patient:0.7,0.1,0.2", seed=0, workers=1, progress=True, **options) -> PreparedDataset``
and writes a prepared data set (see :mod:`cxrcl.data.prepared`) atomically. Sources:

- ``npz``, ``medmnist``, ``folder``, ``csv``: generic layouts (``../shared/data/*``, MedMNIST,
  class folders, a CSV of paths)
- ``dicom``: a tree of DICOM files (+ labels.csv); ``rsna``: RSNA Pneumonia (boxes);
  ``siim``: SIIM-ACR Pneumothorax (RLE masks)  -- docs/sources/dicom.md
- ``nih14``, ``chexpert``, ``mimic-cxr``, ``openi``, ``covid``, ``shenzhen``, ``montgomery``:
  the publishers' layouts -- docs/sources/public.md

Source-specific options (e.g. CheXpert's ``uncertain=ones``) are passed as keyword arguments
(``cxrcl data prepare chexpert IN OUT --opt uncertain=ones``); an option the source does not
take is an error that lists the ones it does.
Adapters are imported lazily, so ``import cxrcl.data.sources`` stays cheap.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from pathlib import Path

from cxrcl.data.limits import check_limits
from cxrcl.data.prepared import PreparedDataset
from cxrcl.data.splits import parse_split_spec
from cxrcl.data.writer import check_output
from cxrcl.errors import CxrclError

COMMON_ARGS = {"input", "out", "size", "split", "seed", "workers", "progress"}


def _lazy(module: str, func: str) -> Callable[..., PreparedDataset]:
    def run(input, out, size=128, split="patient:0.7,0.1,0.2", seed=0, workers=1, progress=True,
            **options):
        fn = getattr(importlib.import_module(f"{__name__}.{module}"), func)
        if options:
            accepted = set(inspect.signature(fn).parameters) - COMMON_ARGS
            unknown = sorted(set(options) - accepted)
            if unknown:
                raise CxrclError(f"source option {', '.join(unknown)} is not known to {func}; "
                                 f"its options: {', '.join(sorted(accepted)) or '(none)'}")
        return fn(input, out, size=size, split=split, seed=seed, workers=workers, progress=progress,
                  **options)

    run.__name__ = func
    run.__qualname__ = func
    run.__doc__ = f"Lazy entry point for :func:`cxrcl.data.sources.{module}.{func}`."
    return run


SOURCES: dict[str, Callable[..., PreparedDataset]] = {
    "npz": _lazy("npz", "prepare_npz"),
    "medmnist": _lazy("medmnist", "prepare_medmnist"),
    "folder": _lazy("folder", "prepare_folder"),
    "csv": _lazy("csv", "prepare_csv"),
    "dicom": _lazy("dicom_dir", "prepare_dicom"),
    "rsna": _lazy("rsna", "prepare_rsna"),
    "siim": _lazy("siim", "prepare_siim"),
    "nih14": _lazy("nih14", "prepare_nih14"),
    "chexpert": _lazy("chexpert", "prepare_chexpert"),
    "mimic-cxr": _lazy("mimic_cxr", "prepare_mimic_cxr"),
    "openi": _lazy("openi", "prepare_openi"),
    "covid": _lazy("covid", "prepare_covid"),
    "shenzhen": _lazy("tb", "prepare_shenzhen"),
    "montgomery": _lazy("tb", "prepare_montgomery"),
}


def prepare(source: str, input: str | Path, out: str | Path, size: int = 128,
            split: str = "patient:0.7,0.1,0.2", seed: int = 0, workers: int = 1,
            progress: bool = True, overwrite: bool = False, **options) -> PreparedDataset:
    """Prepare ``input`` (a ``source`` layout) into the prepared data set directory ``out``;
    ``options`` are the source's own keyword arguments. An existing prepared data set at ``out``
    is replaced only with ``overwrite`` (see :func:`~cxrcl.data.writer.check_output`)."""
    fn = SOURCES.get(str(source).lower())
    if fn is None:
        raise CxrclError(f"unknown data source {source!r}: available sources are {', '.join(sorted(SOURCES))}")
    if int(size) < 8:
        raise CxrclError(f"--size {size} is too small: use at least 8 pixels (e.g. 128)")
    parse_split_spec(split)  # a bad --split fails before any work
    check_limits()  # a bad $CXRCL_MAX_PIXELS / $CXRCL_MAX_REPORT_BYTES too
    if int(workers) < 1:
        raise CxrclError(f"--workers {workers} must be at least 1")
    check_output(out, overwrite=overwrite, inputs=[input])
    return fn(input, out, size=int(size), split=split, seed=int(seed), workers=int(workers),
              progress=progress, **options)


__all__ = ["SOURCES", "prepare"]
