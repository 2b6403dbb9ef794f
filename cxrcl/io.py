"""Atomic output files: written to a temporary name in the same folder, then renamed.

A kill at any moment leaves either the previous file or the complete new one, never a half
file that a later command would read as valid. Every output cxrcl writes (run configs,
summaries, eval/bench JSON, reports, embeddings) goes through here.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from cxrcl.errors import CxrclError


def _writable(folder: Path) -> bool:
    """Can a new file be made in ``folder``? Tried for real: permission bits do not bind root,
    and a read-only or virtual file system (/proc) refuses what os.access allows."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def check_writable_file(path: str | os.PathLike, what: str = "output") -> Path:
    """Fail early, in one sentence, when ``path`` is a directory or its folder is not writable."""
    path = Path(path)
    if path.is_dir():
        raise CxrclError(f"{what} {path} is a directory: name a file, e.g. {path / 'result.json'}")
    parent = path.parent
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise CxrclError(f"cannot write {what} {path}: {probe} is a file, not a folder")
    if not _writable(probe):
        raise CxrclError(f"cannot write {what} {path}: {probe} is not writable; choose another path")
    return path


def check_writable_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Fail early, in one sentence, when folder ``path`` cannot be made or written."""
    path = Path(path)
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise CxrclError(f"cannot use {what} {path}: {probe} is a file, not a folder")
    if not _writable(probe):
        raise CxrclError(f"cannot use {what} {path}: {probe} is not writable; choose another path")
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``. An OS failure
    (full disk, lost permission) is one sentence; the previous file, if any, is intact."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CxrclError(f"cannot write {path} ({e.strerror or e}); the previous file, if any, is "
                         "unchanged: free space or fix the folder and run the same command") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def atomic_write_json(path: str | os.PathLike, obj, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")
