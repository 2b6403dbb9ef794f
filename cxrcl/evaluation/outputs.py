"""The files ``cxrcl eval``, ``bench``, ``report`` and ``embed`` write: checked before any work,
written atomically, and never written over a file cxrcl did not write.

:func:`check_output` runs first in each command, so a wrong ``--out`` (a directory, a folder
that cannot be written, someone else's file) costs one sentence and no compute. The writers
(:func:`write_json`, :func:`write_npz`, :func:`save_figure`) go through
:func:`cxrcl.io.atomic_write`: a kill leaves the previous file or the complete new one.

What counts as "written by cxrcl" (so a re-run may replace it): a JSON object that is an eval
result (has ``task``) or a bench result (has ``methods`` and ``machine``); an NPZ holding
``features``, ``id`` and ``split``; a Markdown report with cxrcl's ``Reproduce: `cxrcl report``
line. Anything else under that name is left alone.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cxrcl.errors import CxrclError
from cxrcl.io import atomic_write, check_writable_file

REPORT_MARK = "Reproduce: `cxrcl report"


def _is_result_json(path: Path) -> bool:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(obj, dict) and ("task" in obj or ("methods" in obj and "machine" in obj))


def _is_embedding_npz(path: Path) -> bool:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {"features", "id", "split"} <= set(z.files)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        return False


def _is_report(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            head = f.read(65536)
    except (OSError, UnicodeDecodeError):
        return False
    return head.startswith("# ") and REPORT_MARK in head


OURS: dict[str, Callable[[Path], bool]] = {"json": _is_result_json, "npz": _is_embedding_npz,
                                           "report": _is_report}


def check_output(path: str | os.PathLike, kind: str, flag: str = "--out") -> Path:
    """One sentence (CxrclError) unless ``path`` can take a new ``kind`` output file.

    ``kind`` is ``"json"`` (eval, bench), ``"npz"`` (embed) or ``"report"``.
    """
    path = check_writable_file(path, what=flag)
    if path.exists() and not path.is_file():
        raise CxrclError(f"{flag} {path} is not a regular file; choose another path")
    if path.is_file() and not OURS[kind](path):
        raise CxrclError(f"{flag} {path} exists and was not written by cxrcl, so it is left alone: "
                         "choose another path or move that file away")
    return path


def _write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """:func:`cxrcl.io.atomic_write` (which turns an OS failure into one sentence)."""
    return atomic_write(path, write)


def write_json(obj, path: str | os.PathLike) -> Path:
    """Indented strict JSON (no NaN), written atomically."""
    text = json.dumps(obj, indent=2, allow_nan=False) + "\n"
    return _write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_text(path: str | os.PathLike, text: str) -> Path:
    """UTF-8 text, written atomically."""
    return _write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """``np.savez_compressed`` to exactly ``path`` (no ``.npz`` appended), atomically."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    return _write(path, write)


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    """A Matplotlib figure as PNG, atomically."""
    return _write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
