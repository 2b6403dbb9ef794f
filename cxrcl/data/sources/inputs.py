"""Finding and checking the files of a source adapter's INPUT folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from cxrcl.errors import CxrclError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def index_files(dirs: Iterable[Path], extensions: Sequence[str] = IMAGE_EXTENSIONS,
                by_stem: bool = False) -> dict[str, Path]:
    """File name (or stem, ``by_stem``) -> path of the first file with one of ``extensions`` (any
    case) in ``dirs``, searched in order, not recursively; missing folders are passed over. One
    ``os.scandir`` per folder, so it stays fast on folders of 100,000 files."""
    found: dict[str, Path] = {}
    for d in dirs:
        if not d.is_dir():
            continue
        with os.scandir(d) as it:
            for e in it:
                stem, ext = os.path.splitext(e.name)
                key = stem if by_stem else e.name
                if ext.lower() in extensions and key not in found:
                    found[key] = Path(e.path)
    return found


def require_dir(root: Path, needs: str) -> None:
    """The ``INPUT is not a directory`` check of the adapters: CxrclError
    ``'<root> is not a directory: <needs>'`` unless ``root`` is a folder."""
    if not Path(root).is_dir():
        raise CxrclError(f"{root} is not a directory: {needs}")


def find_first(root: Path, names: Iterable[str]) -> Path | None:
    """``root / name`` for the first of ``names`` that exists (file or folder), else None."""
    return next((root / n for n in names if (root / n).exists()), None)


def env_choice(value: str | None, arg: str, env_var: str, default: str, choices: Sequence[str],
               error: str) -> str:
    """An option the CLI cannot pass: ``value`` when given, else ``$env_var``, else ``default``;
    stripped and lower-cased, it must be one of ``choices``, else CxrclError
    ``'<arg>=<value> is not <error>'`` (``$<env_var>=...`` when it came from the environment)."""
    source = f"{arg}="
    if value is None:
        value, source = os.environ.get(env_var) or default, f"${env_var}="
    choice = str(value).strip().lower()
    if choice not in choices:
        raise CxrclError(f"{source}{value!r} is not {error}")
    return choice
