"""Reading arrays of an .npz file without loading it whole (row chunks, header only).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from cxrcl.errors import CxrclError


def npz_keys(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as z:
            return [n[:-4] if n.endswith(".npy") else n for n in z.namelist()]
    except (zipfile.BadZipFile, OSError) as e:
        raise CxrclError(f"{path} is not a readable .npz file ({e}): re-create or re-download it") from None


def npz_header(path: Path, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one array of an .npz, without reading the data."""
    with zipfile.ZipFile(path) as z, z.open(f"{key}.npy") as f:
        shape, _, dtype = _read_npy_header(f)
    return shape, dtype


def _read_npy_header(f) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    return np.lib.format.read_array_header_2_0(f)


def iter_npz_rows(path: Path, key: str, chunk: int = 512) -> Iterator[np.ndarray]:
    """Stream an array of an .npz in chunks of rows (works for compressed files; memory: one chunk)."""
    with zipfile.ZipFile(path) as z, z.open(f"{key}.npy") as f:
        shape, fortran, dtype = _read_npy_header(f)
        if fortran or dtype.hasobject or len(shape) == 0:
            arr = np.load(path, allow_pickle=False)[key]
            for s in range(0, len(arr), chunk):
                yield np.ascontiguousarray(arr[s:s + chunk])
            return
        row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        for s in range(0, shape[0], chunk):
            k = min(chunk, shape[0] - s)
            buf = f.read(k * row)
            if len(buf) != k * row:
                raise CxrclError(f"{path}: array {key!r} is truncated; re-create or re-download the file")
            yield np.frombuffer(buf, dtype=dtype).reshape((k, *shape[1:]))
