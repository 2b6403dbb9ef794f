"""The command-line contract: one clear line and a non-zero exit for a user's mistake, and the
main flows end to end."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from cxrcl.cli import main
from tests.conftest import TINY_VIT, shared_data


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.startswith("cxrcl: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for f in fragments:
        assert f in lines[0], lines[0]


def test_missing_path(capsys, tmp_path):
    code, _, err = run_cli(capsys, "pretrain", "spcl", "--data", tmp_path / "nope", "--out", tmp_path / "r")
    assert_one_line_error(code, err, "nope", "does not exist", "cxrcl data prepare")


def test_unknown_method_and_unknown_key(capsys, tiny_ds, tmp_path):
    code, _, err = run_cli(capsys, "pretrain", "simclrr", "--data", tiny_ds.root, "--out", tmp_path / "r")
    assert_one_line_error(code, err, "unknown method 'simclrr'", "spcl")
    code, _, err = run_cli(capsys, "pretrain", "spcl:ratio=0.4", "--data", tiny_ds.root, "--out", tmp_path / "r")
    assert_one_line_error(code, err, "ratio", "valid keys", "ratios")


def test_unknown_label(capsys, tiny_ds, tmp_path):
    code, _, err = run_cli(capsys, "eval", "linear", "--run", "pixels", "--data", tiny_ds.root,
                           "--label", "pneumonia", "--out", tmp_path / "e.json")
    assert_one_line_error(code, err, "unknown label pneumonia", "bright")


def test_image_that_does_not_decode(capsys, tmp_path):
    from PIL import Image

    (tmp_path / "in" / "normal").mkdir(parents=True)
    (tmp_path / "in" / "pneumonia").mkdir(parents=True)
    for i in range(6):
        Image.fromarray(np.full((40, 40), 30 * i, np.uint8)).save(tmp_path / "in" / "normal" / f"n{i}.png")
        Image.fromarray(np.full((40, 40), 20 * i, np.uint8)).save(tmp_path / "in" / "pneumonia" / f"p{i}.png")
    (tmp_path / "in" / "pneumonia" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    code, out, err = run_cli(capsys, "data", "prepare", "folder", tmp_path / "in", tmp_path / "out", "--size", "32")
    assert code == 0 and "skipped 1 unreadable" in out
    info = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert info["n"] == 12 and "broken.png" in json.dumps(info["skipped"])
    assert "broken.png" in (tmp_path / "out" / "skipped.csv").read_text()
    code, out, _ = run_cli(capsys, "data", "info", tmp_path / "out")
    assert code == 0 and "skipped at preparation: 1" in out
    # every file broken: an error, not an empty data set
    (tmp_path / "bad" / "x").mkdir(parents=True)
    (tmp_path / "bad" / "x" / "a.png").write_bytes(b"garbage")
    code, _, err = run_cli(capsys, "data", "prepare", "folder", tmp_path / "bad", tmp_path / "out2")
    assert_one_line_error(code, err, "bad")


def test_metadata_row_count_mismatch(capsys, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    np.savez(src / "images_32.npz", images=np.zeros((5, 32, 32), np.uint8))
    pd.DataFrame({"id": list("abcd"), "patient_id": list("abcd"), "label_x": [0, 1, 0, 1]}).to_csv(
        src / "metadata.csv", index=False)
    code, _, err = run_cli(capsys, "data", "prepare", "npz", src, tmp_path / "out")
    assert_one_line_error(code, err, "4 rows", "5 images")


def test_pretrain_eval_report_flow(capsys, tiny_ds, tmp_path):
    run = tmp_path / "run"
    code, out, _ = run_cli(capsys, "pretrain", "spcl", "--data", tiny_ds.root, "--out", run, "--backbone", TINY_VIT,
                           "--steps", "4", "--batch-size", "16", "--no-progress")
    assert code == 0 and "4/4 steps" in out
    code, out, _ = run_cli(capsys, "eval", "linear", "--run", run, "--data", tiny_ds.root, "--label", "all",
                           "--out", tmp_path / "e.json", "--fractions", "0.5,1.0", "--seeds", "2")
    assert code == 0
    res = json.loads((tmp_path / "e.json").read_text())
    assert res["task"] == "linear" and res["labels"] == ["bright"] and len(res["results"]) == 4
    assert res["data"]["split_hash"] == tiny_ds.split_hash
    code, out, _ = run_cli(capsys, "embed", "--run", run, "--data", tiny_ds.root, "--out", tmp_path / "f.npz")
    assert code == 0 and np.load(tmp_path / "f.npz")["features"].shape == (len(tiny_ds), 192)
    code, out, _ = run_cli(capsys, "report", run, tmp_path / "e.json", "--out", tmp_path / "rep" / "R.md")
    assert code == 0 and "bright" in (tmp_path / "rep" / "R.md").read_text()


def test_bench_cli(capsys, tiny_ds, tmp_path):
    code, out, _ = run_cli(capsys, "bench", "--methods", "spcl,simclr", "--data", tiny_ds.root, "--backbone", TINY_VIT,
                           "--batch-size", "16", "--steps", "2", "--warmup", "1", "--no-memory",
                           "--out", tmp_path / "b.json")
    assert code == 0
    b = json.loads((tmp_path / "b.json").read_text())
    assert set(b["methods"]) == {"spcl", "simclr"} and b["ratios_vs"] == "simclr"
    for key in ("train_images_per_s", "train_step_s", "infer_images_per_s", "gflops_per_image"):
        assert b["methods"]["spcl"][key] > 0
    # the FLOP count is deterministic: half the tokens per view -> about half the forward FLOPs
    assert 0.4 < b["ratios"]["spcl"]["gflops_per_image"] < 0.6
    code, _, err = run_cli(capsys, "bench", "--methods", "spcl,nope", "--data", tiny_ds.root, "--out", tmp_path / "x.json")
    assert_one_line_error(code, err, "unknown method 'nope'")


@pytest.mark.slow
def test_demo_quick(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cxrcl", "demo", "--quick", "--out", str(tmp_path / "demo")],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "demo" / "report" / "REPORT.md").exists()
    assert "S-PCL" in proc.stdout and "pixel floor" in proc.stdout


@pytest.mark.slow
def test_real_pneumoniamnist_end_to_end(tmp_path, capsys):
    """Prepare the real PneumoniaMNIST, pre-train S-PCL briefly, probe against the pixel floor."""
    src = shared_data("pneumoniamnist") / "pneumoniamnist.npz"
    data = tmp_path / "pm"
    assert run_cli(capsys, "data", "prepare", "medmnist", src, data, "--size", "28")[0] == 0
    run = tmp_path / "run"
    code, _, _ = run_cli(capsys, "pretrain", "spcl", "--data", data, "--out", run, "--steps", "30",
                         "--batch-size", "64", "--backbone", "vit_tiny_patch16_224:patch_size=4:depth=4",
                         "--no-progress")
    assert code == 0
    losses = [json.loads(line)["loss"] for line in open(run / "metrics.jsonl")]
    assert losses[-1] < losses[0]
    for name, spec in (("spcl", run), ("pixels", "pixels")):
        assert run_cli(capsys, "eval", "linear", "--run", spec, "--data", data, "--label", "pneumonia",
                       "--fractions", "0.1,1.0", "--seeds", "1", "--out", tmp_path / f"{name}.json")[0] == 0
    spcl = json.loads((tmp_path / "spcl.json").read_text())["summary"]["1.0"]["auroc_mean"]
    assert spcl > 0.6  # a real signal even after 30 steps (the pixel floor reaches ~0.93)


def test_a_closed_pipe_ends_quietly(tiny_ds):
    """`cxrcl data info X | head`: the reader goes away; no BrokenPipeError traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "cxrcl", "data", "info", str(tiny_ds.root)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) in (0, 141)  # 0 when the output fit the pipe before it closed
    assert "Traceback" not in err and "BrokenPipe" not in err
