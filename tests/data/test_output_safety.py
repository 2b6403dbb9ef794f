"""Nothing a data command writes may delete or overwrite a user's files (issue 6, item 6).

Every writer path (prepare, phantom, merge, relabel) goes through
:func:`cxrcl.data.writer.check_output`: a folder of other files is refused, an existing prepared
data set is replaced only with ``--overwrite``, and never when it holds a file cxrcl did not
write. The tests run the real CLI entry point (``cxrcl.cli.main``) as a user would.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrcl.cli import main
from cxrcl.data.prepared import PreparedDataset
from cxrcl.data.writer import WRITTEN_FILES, check_output
from cxrcl.errors import CxrclError


def _folder_source(root, n=12):
    rng = np.random.default_rng(0)
    for cls in ("normal", "pneumonia"):
        (root / cls).mkdir(parents=True)
        for i in range(n // 2):
            Image.fromarray(rng.integers(0, 255, (20, 24), dtype=np.uint8)).save(root / cls / f"{cls}{i}.png")
    return root


def _phantom(path, n=24):
    assert main(["data", "phantom", str(path), "--n", str(n), "--size", "16"]) == 0
    return path


def test_phantom_refuses_a_folder_of_user_files(tmp_path, capsys):
    home = tmp_path / "thesis"
    home.mkdir()
    (home / "chapter1.tex").write_text("months of work")
    (home / "figures").mkdir()
    (home / "figures" / "fig1.pdf").write_bytes(b"%PDF")
    assert main(["data", "phantom", str(home), "--n", "16", "--size", "16"]) == 2
    err = capsys.readouterr().err
    assert "holds files that are not a prepared data set (chapter1.tex, figures)" in err
    assert "Traceback" not in err
    assert (home / "chapter1.tex").read_text() == "months of work"
    assert (home / "figures" / "fig1.pdf").exists()
    assert sorted(p.name for p in home.iterdir()) == ["chapter1.tex", "figures"]
    # and with --overwrite too: --overwrite replaces prepared data sets only
    assert main(["data", "phantom", str(home), "--n", "16", "--size", "16", "--overwrite"]) == 2
    assert (home / "chapter1.tex").read_text() == "months of work"


def test_phantom_into_a_file_or_an_empty_folder(tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("keep")
    assert main(["data", "phantom", str(f), "--n", "16", "--size", "16"]) == 2
    assert "exists and is not a directory" in capsys.readouterr().err
    assert f.read_text() == "keep"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert len(PreparedDataset.open(_phantom(empty, n=16))) == 16


def test_reprepare_needs_overwrite_and_keeps_user_files(tmp_path, capsys):
    src = _folder_source(tmp_path / "src")
    out = tmp_path / "out"
    assert main(["data", "prepare", "folder", str(src), str(out), "--size", "16"]) == 0
    first = PreparedDataset.open(out).info["content_hash"]

    # 1. without --overwrite an existing prepared set is refused, untouched
    assert main(["data", "prepare", "folder", str(src), str(out), "--size", "24"]) == 2
    err = capsys.readouterr().err
    assert "is already a prepared data set: pass --overwrite" in err
    assert PreparedDataset.open(out).info["content_hash"] == first

    # 2. a file the user put inside is never deleted, even with --overwrite
    (out / "my_notes.md").write_text("which images looked odd")
    assert main(["data", "prepare", "folder", str(src), str(out), "--size", "24", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "also holds files cxrcl did not write (my_notes.md)" in err
    assert (out / "my_notes.md").read_text() == "which images looked odd"
    assert PreparedDataset.open(out).size == 16

    # 3. only cxrcl's files: --overwrite replaces the set, and leaves nothing of the old one aside
    (out / "my_notes.md").unlink()
    assert main(["data", "prepare", "folder", str(src), str(out), "--size", "24", "--overwrite"]) == 0
    assert PreparedDataset.open(out).size == 24
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]


def test_phantom_overwrite_replaces_only_a_prepared_set(tmp_path):
    out = _phantom(tmp_path / "ph", n=16)
    assert main(["data", "phantom", str(out), "--n", "24", "--size", "16"]) == 2
    assert len(PreparedDataset.open(out)) == 16
    assert main(["data", "phantom", str(out), "--n", "24", "--size", "16", "--overwrite"]) == 0
    assert len(PreparedDataset.open(out)) == 24


def test_merge_and_relabel_refuse_user_files_and_need_overwrite(tmp_path, capsys):
    a, b = _phantom(tmp_path / "a", n=16), _phantom(tmp_path / "b", n=16)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "data.xlsx").write_bytes(b"PK")
    assert main(["data", "merge", str(a), str(b), str(busy)]) == 2
    assert main(["data", "relabel", str(a), str(busy), "--drop", "nodule"]) == 2
    assert (busy / "data.xlsx").read_bytes() == b"PK"
    assert capsys.readouterr().err.count("holds files that are not a prepared data set (data.xlsx)") == 2

    out = tmp_path / "merged"
    assert main(["data", "merge", str(a), str(b), str(out)]) == 0
    assert main(["data", "merge", str(a), str(b), str(out)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert main(["data", "merge", str(a), str(b), str(out), "--overwrite"]) == 0
    rel = tmp_path / "rel"
    assert main(["data", "relabel", str(a), str(rel), "--drop", "nodule"]) == 0
    (rel / "keep.txt").write_text("x")
    assert main(["data", "relabel", str(a), str(rel), "--drop", "nodule", "--overwrite"]) == 2
    assert (rel / "keep.txt").exists() and "nodule" not in PreparedDataset.open(rel).label_names


def test_writer_rechecks_before_replacing(tmp_path):
    """A file put into the old set while a long preparation ran is not deleted at the end."""
    from cxrcl.data.writer import PreparedWriter

    out = _phantom(tmp_path / "ph", n=16)
    w = PreparedWriter(out, n=2, size=8, overwrite=True)
    w.put_many(0, np.zeros((2, 8, 8), np.uint8))
    (out / "late.txt").write_text("added during the run")
    meta = pd.DataFrame({"id": ["a", "b"], "patient_id": ["p", "q"], "split": ["train", "test"]})
    with pytest.raises(CxrclError, match="did not write"):
        w.finish(meta, source="t")
    assert (out / "late.txt").exists() and len(PreparedDataset.open(out)) == 16


def test_written_files_cover_every_writer(tmp_path):
    """What the writers leave in a finished set is exactly what check_output may replace."""
    out = _phantom(tmp_path / "ph", n=16)
    assert {p.name for p in out.iterdir()} <= WRITTEN_FILES
    check_output(out, overwrite=True)  # replaceable
    with pytest.raises(CxrclError, match="is the input itself"):
        check_output(out, overwrite=True, inputs=[out])


def test_a_link_to_a_prepared_set_updates_the_set(tmp_path):
    target = _phantom(tmp_path / "sets" / "ph", n=16)
    link = tmp_path / "current"
    link.symlink_to(target, target_is_directory=True)
    assert main(["data", "phantom", str(link), "--n", "20", "--size", "16", "--overwrite"]) == 0
    assert link.is_symlink() and len(PreparedDataset.open(target)) == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current", "sets"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["ph"]
