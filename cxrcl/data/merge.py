"""Merging and relabelling prepared data sets (``cxrcl data merge`` / ``cxrcl data relabel``).

:func:`merge_prepared` concatenates several prepared sets into one:

* images are streamed in chunks (plain file reads, never the whole array, never a memory map
  that grows the resident set) and, when the sizes differ, resized to one common size with the
  canonical resize of the sources (pad to square + Lanczos; masks nearest neighbour). The
  default size is the smallest input size: nothing is up-sampled unless asked for;
* ``id`` and ``patient_id`` are prefixed with the input's name (``<name>/<id>``; the name is
  the input's ``source``, or its directory name when two inputs share a source), so ids stay
  unique and no patient is shared across inputs; a ``dataset`` column holds the name;
* every input keeps its own split (split method ``merged``);
* label columns are the union (first-seen order); a set that lacks a label has it empty
  (unknown, NaN), never 0. Text columns and other metadata columns are the union too (empty
  where missing);
* masks are kept where present (``has_mask`` = 0 for rows of inputs without masks);
* ``dataset.json`` records every input (path, name, source, size, n, content and manifest
  hashes, split method/seed) under ``inputs``.

The merge is resumable like ``data prepare``: an interrupted merge keeps ``.OUT.partial`` and
the same call continues with the chunks that are missing.

:func:`relabel_prepared` renames, merges and drops label columns without touching the images
(hard-linked when the file system allows it, else copied). Several old labels mapped to one new
name are combined by logical OR with unknowns: 1 if any is 1, 0 if all are known and 0, empty
(unknown) otherwise.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cxrcl.data.prepared import LABEL_PREFIX, PreparedDataset, iter_npy_rows
from cxrcl.data.writer import NoSpaceLeft, PreparedWriter, check_output
from cxrcl.errors import CxrclError

log = logging.getLogger("cxrcl.data")

CHUNK = 256
#: Keys of an input's dataset.json that a relabelled copy carries over unchanged.
_RECOMPUTED = {"format_version", "source", "n", "size", "label_names", "text_columns", "has_masks",
               "split", "content_hash", "complete"}


# ----------------------------------------------------------------------------- merge
def _names(datasets: Sequence[PreparedDataset], names: Sequence[str] | None) -> list[str]:
    if names is not None:
        names = [str(n) for n in names]
        if len(names) != len(datasets):
            raise CxrclError(f"merge: {len(names)} names given for {len(datasets)} inputs")
    else:
        sources = [str(ds.info.get("source") or ds.root.name) for ds in datasets]
        names = [s if sources.count(s) == 1 else ds.root.name for s, ds in zip(sources, datasets, strict=True)]
    unique: list[str] = []
    for name in names:  # still colliding (same directory names): number them
        base, k = name, 2
        while name in unique:
            name, k = f"{base}_{k}", k + 1
        unique.append(name)
    bad = [n for n in unique if not n or "/" in n]
    if bad:
        raise CxrclError(f"merge: input names must be non-empty and without '/': {bad}")
    return unique


def _first_seen(lists: Sequence[Sequence[str]]) -> list[str]:
    out: list[str] = []
    for items in lists:
        out += [x for x in items if x not in out]
    return out


def merge_prepared(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, size: int | None = None,
                   *, names: Sequence[str] | None = None, workers: int = 1, progress: bool = False,
                   resume: bool = True, overwrite: bool = False) -> PreparedDataset:
    """Merge prepared data sets ``inputs`` into ``out`` (see the module docstring).

    ``size``: the common size (default: the smallest input size). ``names``: the id prefixes
    (default: each input's source name, or its directory name when sources repeat).
    ``workers``: processes for resizing (only used when sizes differ).
    """
    if len(inputs) < 1:
        raise CxrclError("merge: give at least one prepared data set")
    datasets = [PreparedDataset.open(p) for p in inputs]
    roots = [ds.root.resolve() for ds in datasets]
    if len(set(roots)) != len(roots):
        raise CxrclError("merge: the same prepared data set is given twice")
    out = Path(out)
    if out.resolve() in roots:
        raise CxrclError(f"merge: the output {out} is one of the inputs; choose a new directory")
    check_output(out, overwrite=overwrite)
    sizes = [ds.size for ds in datasets]
    size = int(size) if size is not None else min(sizes)
    if size < 8:
        raise CxrclError(f"merge: size {size} is too small; use at least 8 pixels")
    if len(set(sizes)) > 1 or size != sizes[0]:
        log.warning("merge: input sizes %s differ from %d px: resizing (pad + Lanczos, masks nearest)",
                    sizes, size)
    names = _names(datasets, names)

    # ---- metadata (from the CSVs only; no pixels)
    label_names = _first_seen([ds.label_names for ds in datasets])
    text_cols = _first_seen([ds.info.get("text_columns", []) for ds in datasets])
    with_masks = any(ds.masks is not None for ds in datasets)
    metas = []
    for ds, name in zip(datasets, names, strict=True):
        m = ds.meta.copy()
        m["id"] = name + "/" + m["id"].astype(str)
        m["patient_id"] = name + "/" + m["patient_id"].astype(str)
        m["dataset"] = name
        if with_masks:
            if ds.masks is None:
                m["has_mask"] = 0
            elif "has_mask" not in m.columns:
                m["has_mask"] = 1
        for lab in label_names:
            if LABEL_PREFIX + lab not in m.columns:
                m[LABEL_PREFIX + lab] = pd.NA
        for col in text_cols:
            m[col] = m[col].fillna("").astype(str) if col in m.columns else ""
        metas.append(m)
    meta = pd.concat(metas, ignore_index=True, sort=False)
    first = ["id", "patient_id", "split", "dataset", *(LABEL_PREFIX + n for n in label_names), *text_cols]
    meta = meta[first + [c for c in meta.columns if c not in first]]
    if meta["id"].duplicated().any():
        dup = meta["id"][meta["id"].duplicated()].iloc[0]
        raise CxrclError(f"merge: duplicate id {dup!r} after prefixing; give distinct --names")

    # ---- pixels (streamed, resumable)
    records = [{"path": str(ds.root.resolve()), "name": name, "source": ds.info.get("source"),
                "n": len(ds), "size": ds.size, "content_hash": ds.info.get("content_hash"),
                "manifest_hash": ds.info.get("split", {}).get("manifest_hash"),
                "split_method": ds.info.get("split", {}).get("method"),
                "split_seed": ds.info.get("split", {}).get("seed"), "has_masks": ds.masks is not None}
               for ds, name in zip(datasets, names, strict=True)]
    fingerprint = {"kind": "merge", "size": size, "with_masks": with_masks,
                   "inputs": [[r["path"], r["name"], r["content_hash"]] for r in records]}
    n = sum(len(ds) for ds in datasets)
    writer = PreparedWriter(out, n=n, size=size, with_masks=with_masks, resume=resume,
                            fingerprint=fingerprint, checkpoint_every=4 * CHUNK)
    from tqdm.auto import tqdm

    bar = tqdm(total=n, initial=writer.n_done, desc="merging", unit="img", disable=not progress, leave=False)
    try:
        offset = 0
        for ds in datasets:
            _copy_set(ds, writer, offset, size, workers, bar)
            offset += len(ds)
        writer.checkpoint()
    except BaseException as e:
        bar.close()
        if not resume or (isinstance(e, CxrclError) and not isinstance(e, NoSpaceLeft)):
            writer.abort()
        else:
            from cxrcl.data.streaming import keep_partial

            keep_partial(writer)
        raise
    bar.close()
    extra = {"inputs": records, "merged": True}
    from cxrcl.data.streaming import finish

    return finish(writer, meta, source="merge", label_names=label_names, text_columns=text_cols,
                  split_seed=None, split_method="merged", extra=extra)


def _chunk_rows(side: int) -> int:
    """Rows per chunk: :data:`CHUNK`, fewer for big images (about 64 MiB at most)."""
    return min(CHUNK, max(8, (64 << 20) // (side * side)))


def _resized(chunks, size: int, nearest: bool, workers: int):
    """``(start, chunk)`` pairs -> ``(start, resized chunk)``, in order."""
    from cxrcl.data.streaming import resize_chunks

    starts: list[int] = []

    def untagged():
        for start, c in chunks:
            starts.append(start)
            yield c
    for k, res in enumerate(resize_chunks(untagged(), size, workers, nearest=nearest)):
        yield starts[k], res


def _copy_set(ds: PreparedDataset, writer: PreparedWriter, offset: int, size: int, workers: int, bar) -> None:
    """Stream one input into rows ``offset:offset+len(ds)`` of ``writer``, skipping done chunks."""
    n = len(ds)
    chunk = _chunk_rows(ds.size)
    done = writer.done[offset:offset + n]
    todo = [s for s in range(0, n, chunk) if not done[s:s + chunk].all()]
    if not todo:
        return

    def chunks(name: str):
        for s in todo:
            yield from iter_npy_rows(ds.root / name, chunk, start=s, stop=min(n, s + chunk))

    mask_chunks = _resized(chunks("masks.npy"), size, True, 1) if ds.masks is not None else None
    for start, images in _resized(chunks("images.npy"), size, False, workers):
        masks = None
        if mask_chunks is not None:
            _, masks = next(mask_chunks)
        elif writer.masks is not None:
            masks = np.zeros_like(images)
        writer.put_many(offset + start, images, masks)
        bar.update(len(images))


# ----------------------------------------------------------------------------- relabel
def or_labels(columns: pd.DataFrame) -> pd.Series:
    """Logical OR of 1/0/NaN label columns: 1 if any is 1, 0 if all are known and 0, else NaN."""
    v = columns.apply(pd.to_numeric, errors="coerce")
    any_pos = (v == 1).any(axis=1)
    all_zero = (v == 0).all(axis=1)
    out = pd.Series(np.nan, index=v.index)
    out[all_zero] = 0.0
    out[any_pos] = 1.0
    return out.astype("Int8")


def relabel_prepared(path: str | os.PathLike, out: str | os.PathLike, mapping: Mapping[str, str] | None = None,
                     drop: Sequence[str] = (), *, link: bool = True, overwrite: bool = False
                     ) -> PreparedDataset:
    """Copy ``path`` to ``out`` with label columns renamed/merged (``mapping`` old -> new) and
    ``drop``-ped. Labels not named in ``mapping`` keep their name; a new name shared by several
    labels (including an unmapped label of that name) merges them with :func:`or_labels`.
    The images are hard-linked when ``link`` and possible, else copied (streamed).
    """
    ds = PreparedDataset.open(path)
    out = Path(out)
    if out.resolve() == ds.root.resolve():
        raise CxrclError(f"relabel: the output {out} is the input; choose a new directory")
    check_output(out, overwrite=overwrite)
    mapping = {str(k).strip(): str(v).strip() for k, v in (mapping or {}).items()}
    drop = [str(d).strip() for d in drop]
    have = ds.label_names
    unknown = sorted((set(mapping) | set(drop)) - set(have))
    if unknown:
        raise CxrclError(f"relabel: unknown label {', '.join(unknown)} in {ds.root}; "
                         f"labels: {', '.join(have) or '(none)'}")
    both = sorted(set(mapping) & set(drop))
    if both:
        raise CxrclError(f"relabel: {', '.join(both)} is both renamed and dropped; do one or the other")
    bad = [v for v in mapping.values() if not v or v != v.strip() or "," in v]
    if bad:
        raise CxrclError(f"relabel: new label names must be non-empty and without commas: {bad}")

    groups: dict[str, list[str]] = {}
    for name in have:
        if name in drop:
            continue
        groups.setdefault(mapping.get(name, name), []).append(name)
    meta = ds.meta.copy()
    label_cols = [LABEL_PREFIX + n for n in have]
    new_cols = {}
    for new, olds in groups.items():
        cols = meta[[LABEL_PREFIX + o for o in olds]]
        new_cols[LABEL_PREFIX + new] = or_labels(cols) if len(olds) > 1 else \
            pd.to_numeric(cols.iloc[:, 0], errors="coerce").astype("Int8")
    rest = [c for c in meta.columns if c not in label_cols]
    head = [c for c in ("id", "patient_id", "split") if c in rest]
    meta = pd.concat([meta[head], pd.DataFrame(new_cols, index=meta.index),
                      meta[[c for c in rest if c not in head]]], axis=1)
    merged = {new: olds for new, olds in groups.items() if len(olds) > 1}
    for new, olds in merged.items():
        log.info("relabel: %s = OR(%s)", new, ", ".join(olds))

    writer = PreparedWriter(out, n=len(ds), size=ds.size, with_masks=ds.masks is not None)
    try:
        writer.adopt("images", ds.root / "images.npy", link=link)
        if ds.masks is not None:
            writer.adopt("masks", ds.root / "masks.npy", link=link)
        split = ds.info.get("split", {})
        extra = {k: v for k, v in ds.info.items() if k not in _RECOMPUTED}
        extra["relabel"] = {"from": str(ds.root.resolve()), "from_content_hash": ds.info.get("content_hash"),
                            "mapping": mapping, "drop": drop, "merged": merged}
        return writer.finish(meta, source=str(ds.info.get("source")), label_names=list(groups),
                             text_columns=ds.info.get("text_columns", []),
                             split_seed=split.get("seed"), split_method=split.get("method", "patient"),
                             extra=extra)
    except BaseException:
        writer.abort()
        raise


def parse_mapping(specs: Sequence[str]) -> dict[str, str]:
    """CLI helper: ``["old=new", "a,b=c"]`` -> ``{"old": "new", "a": "c", "b": "c"}``."""
    mapping: dict[str, str] = {}
    for spec in specs:
        for part in str(spec).split(";"):
            if not part.strip():
                continue
            olds, sep, new = part.partition("=")
            if not sep or not new.strip() or not olds.strip():
                raise CxrclError(f"label mapping {part!r}: write OLD=NEW or OLD1,OLD2=NEW")
            for old in olds.split(","):
                if old.strip():
                    mapping[old.strip()] = new.strip()
    return mapping


__all__ = ["merge_prepared", "relabel_prepared", "or_labels", "parse_mapping"]
