"""Decoding files in a process pool straight into a :class:`~cxrcl.data.writer.PreparedWriter`.

Decoding of file-based sources runs in a ``multiprocessing.Pool`` of ``workers`` processes and
streams into the writer in order, with at most ``4 * workers`` small chunks in flight
(:func:`~cxrcl.data.workers.ordered_map`), so decoded images are never all held in memory; the
writer flushes and re-maps its array every chunk, so the resident memory stays flat whatever
the number of images. Files that cannot be read are skipped, counted, logged as one warning line
each (the first 20) and listed in ``dataset.json`` under ``skipped``.

Decoding is resumable (:func:`write_decoded`): progress is recorded every
:data:`CHECKPOINT_EVERY` images in ``.OUT.partial/progress.json``; a killed or interrupted
preparation keeps its partial directory and the same command decodes only the missing images.
A decoder may also return a mask and a few per-file values (:class:`~cxrcl.data.decoding.Decoded`,
e.g. DICOM header fields), which are kept across a resume too. Array sources (already decoded)
stream their chunks with :func:`write_chunks` and :func:`resize_chunks`.

Warnings go to the ``cxrcl.data`` logger (printed to stderr as bare lines when logging is not
configured).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from cxrcl.data.decoding import Decoded, DecodeResult, decode_file, resize_stack
from cxrcl.data.workers import batched, ordered_map, progress_bar
from cxrcl.data.writer import NoSpaceLeft, PreparedWriter
from cxrcl.errors import CxrclError

log = logging.getLogger("cxrcl.data")


MAX_WARNING_LINES = 20


#: Identity of the decoder in the resume fingerprint: bump it when decoding changes its output.
DECODER_VERSION = 1


#: Images decoded between two flushes of the memory map + progress record of a resumable writer.
CHECKPOINT_EVERY = 256


def _resize_job(args: tuple[np.ndarray, int, bool]) -> np.ndarray:
    images, size, nearest = args
    return resize_stack(images, size, nearest=nearest)


def resize_chunks(chunks: Iterable[np.ndarray], size: int, workers: int = 1,
                  nearest: bool = False) -> Iterator[np.ndarray]:
    """Resize a stream of uint8 [n, H, W] chunks, in order, with ``workers`` processes
    (``nearest``: nearest-neighbour, for masks)."""
    yield from ordered_map(_resize_job, ((c, size, nearest) for c in chunks), workers,
                           max_pending=2 * workers)


def write_chunks(out: Path, n: int, size: int, chunks: Iterable[np.ndarray], progress: bool, desc: str,
                 masks: Callable[[int, int], np.ndarray] | None = None) -> PreparedWriter:
    """Stream uint8 [k, size, size] ``chunks`` (rows 0..n-1, in order) into a new
    :class:`PreparedWriter` at ``out``, with a progress bar; returns it, not finished.

    ``masks(start, k)`` gives the uint8 [k, size, size] masks of rows ``start:start + k`` (the
    writer then has ``masks.npy``). On any failure the partial directory is removed (array
    sources are fast to redo and are not resumable).
    """
    writer = PreparedWriter(Path(out), n=n, size=size, with_masks=masks is not None)
    bar = progress_bar(n, progress, desc)
    try:
        start = 0
        for chunk in chunks:
            writer.put_many(start, chunk, None if masks is None else masks(start, len(chunk)))
            start += len(chunk)
            bar.update(len(chunk))
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
    return writer


def _decode_chunk(jobs: list[tuple]) -> list[DecodeResult]:
    return [decode_file(job) for job in jobs]


def decode_stream(paths: Sequence[str | os.PathLike], size: int, workers: int = 1,
                  progress: bool = True, desc: str = "decoding", *,
                  indices: Sequence[int] | np.ndarray | None = None,
                  decode: Callable[..., np.ndarray | Decoded] | None = None,
                  args: Sequence | None = None) -> Iterator[DecodeResult]:
    """Yield ``(index, image, reason, mask, extra)`` in input order, decoding in a Pool.

    ``image`` is None for a file that failed (``reason`` says why); ``mask`` and ``extra`` are
    None unless the decoder returns them. ``indices``: decode only these rows of ``paths``
    (default all; the progress bar starts at the others). ``decode(path, size)`` returning a
    uint8 [size, size] image or a :class:`Decoded` replaces :func:`load_grey` (e.g. DICOM);
    with ``args`` (one picklable value per path) it is called as ``decode(path, size,
    args[i])``. It may raise :class:`DecodeFailure` to skip a file and still return ``extra``.
    It must pickle (a module-level function, or an instance of a module-level class) when
    ``workers > 1``. Memory: at most ``4 * workers`` chunks of a few images are in flight.
    """
    idx = np.arange(len(paths)) if indices is None else np.asarray(indices, dtype=np.int64)
    bar = progress_bar(len(paths), progress, desc, initial=len(paths) - len(idx))
    jobs = ((int(i), str(paths[i]), size, decode, *(() if args is None else (args[i],))) for i in idx)
    try:
        if workers <= 1 or len(idx) < 2:
            for job in jobs:
                yield decode_file(job)
                bar.update(1)
        else:
            chunk = max(1, min(16, len(idx) // (workers * 8)))
            for results in ordered_map(_decode_chunk, batched(jobs, chunk), workers):
                for result in results:
                    yield result
                    bar.update(1)
    finally:
        bar.close()


def _sha256_lines(items: Iterable) -> str:
    h = hashlib.sha256()
    for item in items:
        h.update(str(item).encode("utf-8", "surrogateescape"))  # non-UTF-8 file names too
        h.update(b"\0")
    return h.hexdigest()


#: The ``skipped`` reason of a file whose path (taken from the source's metadata) leaves INPUT.
LEAVES_ROOT = "path leaves the input folder (absolute, or '..' above it): not read"


def leaves_root(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """True when ``path`` (usually ``root / <a name from metadata>``) is not inside ``root``.

    ``root`` followed by plain names is inside (a symbolic link the user put inside INPUT is
    followed, our choice); a path that is absolute elsewhere or climbs with ``..`` is inside only
    when its real location is (a NUL byte there makes it outside).
    """
    pp, rp = Path(path).parts, Path(root).parts
    if pp[:len(rp)] == rp and ".." not in pp[len(rp):]:
        return False
    try:
        real, real_root = os.path.realpath(path), os.path.realpath(root)
        return os.path.commonpath([real, real_root]) != real_root
    except ValueError:  # a NUL byte, or nothing in common
        return True


def decode_fingerprint(paths: Sequence[str | os.PathLike], size: int, root: Path | None = None,
                       decode: Callable | None = None, extra: dict | None = None, *,
                       args: Sequence | None = None,
                       pre_skipped: Mapping[int, str] | None = None) -> dict:
    """What determines the decoded images: the ordered file list, the size and the decoder.

    The split (``--split``/``--seed``) and the metadata are recomputed on every run and do not
    change ``images.npy``, so they are not part of it; ``extra`` adds caller-specific fields.
    Per-file decoder ``args`` (e.g. mask annotations) and ``pre_skipped`` rows are hashed in
    when given.
    """
    if decode is None:
        name = "cxrcl.data.decoding.load_grey"
    else:
        name = (f"{getattr(decode, '__module__', type(decode).__module__)}."
                f"{getattr(decode, '__qualname__', type(decode).__qualname__)}")
    fp = {"kind": "decoded_files", "decoder": name,
          "decoder_version": DECODER_VERSION, "n": len(paths), "size": int(size),
          "paths_sha256": _sha256_lines(paths), "root": None if root is None else str(Path(root).resolve())}
    if args is not None:
        fp["args_sha256"] = _sha256_lines(json.dumps(a, sort_keys=True, default=str) for a in args)
    if pre_skipped:
        fp["pre_skipped_sha256"] = _sha256_lines(f"{i}:{r}" for i, r in sorted(pre_skipped.items()))
    return {**fp, **(extra or {})}


def write_decoded(out: Path, paths: Sequence[str | os.PathLike], size: int, workers: int,
                  progress: bool, root: Path | None = None, *, resume: bool = True,
                  decode: Callable[..., np.ndarray | Decoded] | None = None,
                  fingerprint: dict | None = None, checkpoint_every: int | None = None,
                  on_image: Callable[[int, int], None] | None = None,
                  with_masks: bool = False, args: Sequence | None = None,
                  pre_skipped: Mapping[int, str] | None = None,
                  names: Sequence[str] | None = None, what: str = "image",
                  ) -> tuple[PreparedWriter, list[int], list[dict]]:
    """Decode ``paths`` straight into a :class:`PreparedWriter` at ``out``, resumably.

    Returns the writer (not finished), the indices of the files that were decoded, in order, and
    the ``skipped`` list ``[{file, reason}]``. Image ``i`` goes to row ``i``; if some files fail,
    the rows are compacted at the end (one streamed copy, only in that case). All failing ->
    :class:`CxrclError`.

    ``decode``/``args``: see :func:`decode_stream`. With ``with_masks`` the writer has
    ``masks.npy`` and the decoder's :class:`Decoded` masks go into it (none = an empty mask).
    The decoder's ``extra`` values (also those of files that failed with a
    :class:`DecodeFailure`) are in ``writer.extras`` by input row, resumed runs included.
    ``pre_skipped`` maps rows to a reason for files known to be unusable before decoding (e.g.
    a malformed annotation): they are not read and are listed like the others. With ``root``
    (INPUT), every path that leaves it (:func:`leaves_root`, e.g. an Open-i image id
    ``../../x``) is skipped that way too, with the reason :data:`LEAVES_ROOT`. ``names`` are
    the file names shown in the ``skipped`` list and the warnings (default: the paths,
    relative to ``root``); ``what`` names the files in messages (e.g. ``"DICOM"``).

    Resuming (``resume=True``, the default): progress is recorded in ``.OUT.partial/progress.json``
    every ``checkpoint_every`` images (default :data:`CHECKPOINT_EVERY`, fewer above 512 px),
    keyed by :func:`decode_fingerprint` (+ ``fingerprint``). When the run is interrupted (Ctrl-C, an error, a kill), the partial directory is kept and
    the same call decodes only the missing images; the result is byte-identical to an
    uninterrupted run. ``resume=False`` starts over and removes the partial on failure.
    ``decode`` replaces the PIL decoder (see :func:`decode_stream`); ``on_image(done, total)``
    is called after every image (benchmarks, progress displays).
    """
    out = Path(out)
    n = len(paths)
    if n == 0:
        raise CxrclError(f"no images to prepare for {out}")
    pre_skipped = dict(pre_skipped or {})
    if root is not None:  # a path taken from metadata may name a file outside INPUT: never read it
        for i, path in enumerate(paths):
            if i not in pre_skipped and leaves_root(path, root):
                pre_skipped[i] = LEAVES_ROOT
    fp = decode_fingerprint(paths, size, root, decode, fingerprint, args=args, pre_skipped=pre_skipped)
    if checkpoint_every is None:  # 256 images, fewer for big images (<= ~64 MiB between flushes)
        checkpoint_every = min(CHECKPOINT_EVERY, max(16, (64 << 20) // (size * size)))
    writer = PreparedWriter(out, n=n, size=size, with_masks=with_masks, resume=resume, fingerprint=fp,
                            checkpoint_every=checkpoint_every)

    def display(i: int) -> str:
        return str(names[i]) if names is not None else _display(paths[i], root)

    warned = 0

    def skip(i: int, reason: str, extra: dict | None = None) -> None:
        nonlocal warned
        writer.skip(i, reason, extra)
        warned += 1
        if warned <= MAX_WARNING_LINES:
            log.warning("skipped %s: %s", display(i), reason)

    try:
        if not writer.compacted:
            for i in sorted(pre_skipped):
                if not writer.done[i]:
                    skip(i, pre_skipped[i])
            todo = writer.pending()
            done = n - len(todo)
            stream = decode_stream(paths, size, workers, progress, indices=todo, decode=decode, args=args)
            with closing(stream):  # stops the pool at once if the loop is left by an exception
                for i, img, reason, mask, extra in stream:
                    if img is None:
                        skip(i, reason, extra)
                    else:
                        writer.put(i, img, mask, extra)
                    done += 1
                    if on_image is not None:
                        on_image(done, n)
            writer.checkpoint()
    except BaseException as e:
        if not resume or (isinstance(e, CxrclError) and not isinstance(e, NoSpaceLeft)):
            writer.abort()
        else:
            keep_partial(writer)
        raise
    if warned > MAX_WARNING_LINES:
        log.warning("skipped %d more files (all listed in dataset.json 'skipped')", warned - MAX_WARNING_LINES)
    failed = writer.failed
    skipped = [{"file": display(i), "reason": failed[i]} for i in sorted(failed)]
    kept = [i for i in range(n) if i not in failed] if failed else list(range(n))
    if not kept:
        writer.abort()
        reasons = sorted({s["reason"] for s in skipped})
        raise CxrclError(f"none of the {n} {what} files for {out} could be read "
                         f"(e.g. {skipped[0]['file']}: {reasons[0]}); check the input paths and files")
    if skipped:
        log.warning("%d of %d files skipped (unreadable, missing%s; each listed with its reason in "
                    "skipped.csv)", len(skipped), n, ", outside INPUT or with a malformed annotation"
                    if pre_skipped else "")
        if not writer.compacted:
            try:
                writer.compact(kept)
            except BaseException:
                (keep_partial if resume else PreparedWriter.abort)(writer)
                raise
    return writer, kept, skipped


def keep_partial(writer: PreparedWriter) -> None:
    """Interrupted: save what is decoded and say how to resume (never raises)."""
    try:
        writer.checkpoint()
        log.warning("interrupted: %d of %d images are decoded in %s; run the same command again to "
                    "resume", writer.n_done, writer.n_input, writer.tmp)
    except BaseException:  # noqa: BLE001 - the original exception matters more
        pass


def _display(path, root: Path | None) -> str:
    p = Path(path)
    if root is not None:
        try:
            return p.relative_to(root).as_posix()
        except ValueError:
            pass
    return str(p)


@contextmanager
def keep_or_abort(writer: PreparedWriter) -> Iterator[PreparedWriter]:
    """Around work between decoding and :func:`finish` (e.g. metadata from the decoded rows):
    a :class:`CxrclError` removes the partial directory; an interruption keeps it when the
    writer is resumable (its decoded rows are on disk), like :func:`finish`."""
    try:
        yield writer
    except NoSpaceLeft:
        if not writer.tracking:
            writer.abort()
        raise
    except CxrclError:
        writer.abort()
        raise
    except BaseException:
        if not writer.tracking:
            writer.abort()
        raise


def finish(writer: PreparedWriter, meta: pd.DataFrame, **kwargs):
    """``writer.finish`` that removes the partial directory if it fails.

    A resumable writer (one that records progress) keeps its partial directory when the failure
    is an interruption rather than a :class:`CxrclError` (e.g. Ctrl-C while hashing), so that a
    rerun does not decode again.
    """
    with keep_or_abort(writer):
        return writer.finish(meta, **kwargs)
