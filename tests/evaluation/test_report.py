import json

import numpy as np
import pytest

from cxrcl.errors import CxrclError
from cxrcl.evaluation.report import write_report
from cxrcl.evaluation.results import summarize

PNG = b"\x89PNG\r\n\x1a\n"
DATA = {"path": "data/phantom", "source": "phantom", "content_hash": "abc123def4567890",
        "split_hash": "feedbeef00112233", "n": {"train": 70, "val": 10, "test": 20}}


def _eval(run, means, degrade=0, task="linear", labels=("a", "b")):
    results = []
    for f, m in means.items():
        for seed, delta in enumerate((-0.01, 0.0, 0.01)):
            results.append({"fraction": f, "seed": seed, "n_train": int(f * 70) or 2,
                            "auroc": m + delta,
                            "auroc_per_label": {lbl: m + delta for lbl in labels}})
    return {"task": task, "run": run, "labels": list(labels), "data": DATA,
            "degrade_test": degrade, "feature_dim": 32, "results": results,
            "summary": summarize(results), "command": f"cxrcl eval {task} --run {run}"}


def _write(path, obj):
    path.write_text(json.dumps(obj))
    return path


def _run_dir(path, method, n=120, corrupt=False):
    path.mkdir(parents=True)
    steps = np.arange(1, n + 1)
    loss = 5 * np.exp(-steps / 40) + 0.1 * np.random.default_rng(0).random(n)
    with open(path / "metrics.jsonl", "w") as f:
        for s, v in zip(steps, loss, strict=True):
            f.write(json.dumps({"step": int(s), "loss": float(v), "lr": 1e-3}) + "\n")
        if corrupt:
            f.write('{"step": 121, "lo')  # partial line of a killed run
    (path / "summary.json").write_text(json.dumps({
        "method": method, "backbone": "resnet18", "steps": n, "wall_seconds": 12.5,
        "images_per_s": 345.6, "final_loss": float(loss[-1])}))
    return path


@pytest.fixture
def inputs(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    evals = [
        _write(d / "spcl.json", _eval("runs/spcl", {0.01: 0.612, 0.1: 0.734, 1.0: 0.812})),
        _write(d / "simclr.json", _eval("runs/simclr", {0.01: 0.601, 0.1: 0.702, 1.0: 0.799})),
        _write(d / "pixels.json", _eval("pixels", {0.01: 0.58, 0.1: 0.69, 1.0: 0.777})),
        _write(d / "random.json", _eval("random:resnet18", {0.01: 0.51, 0.1: 0.52, 1.0: 0.55})),
        _write(d / "spcl_deg2.json", _eval("runs/spcl", {0.01: 0.55, 0.1: 0.65, 1.0: 0.701}, degrade=2)),
    ]
    bench = _write(d / "bench.json", {
        "methods": {
            "sparsecontrast": {"train_images_per_s": 300.0, "train_step_s": 0.2, "infer_images_per_s": 900.0,
                               "gflops_per_image": 1.0, "peak_rss_mb": 1500.0},
            "simclr": {"train_images_per_s": 150.0, "train_step_s": 0.4, "infer_images_per_s": 600.0,
                       "gflops_per_image": 2.0, "peak_rss_mb": 1800.0},
        },
        "machine": {"cpu": "test-cpu", "threads": 2, "matmul_gflops": 100.0}})
    runs = [_run_dir(tmp_path / "runs" / "spcl", "spcl", corrupt=True),
            _run_dir(tmp_path / "runs" / "simclr", "simclr")]
    return d, evals, bench, runs


def test_report_from_files(inputs, tmp_path):
    _, evals, bench, runs = inputs
    out = write_report([*evals, bench, *runs], tmp_path / "out" / "REPORT.md")
    text = out.read_text()
    assert "# cxrcl report" in text
    # eval table: fractions as columns, mean ± std (n), floors marked, hashes shown
    assert "| run | 1 % | 10 % | 100 % |" in text
    assert "0.812 ± 0.010 (3)" in text and "0.799 ± 0.010 (3)" in text
    assert "**0.812 ± 0.010 (3)**" in text  # best of the column
    assert "_pixels_ (floor)" in text and "_random:resnet18_ (floor)" in text
    assert "abc123def4567890" in text and "feedbeef00112233" in text
    assert "degraded test L2" in text and "0.111" in text  # robustness drop 0.812 - 0.701
    # bench: reference simclr, ratios, machine info, achieved share of the matmul peak
    assert "**simclr**" in text and "2.00" in text and "0.50" in text and "test-cpu" in text
    assert "% of matmul peak" in text and "900.0 %" in text  # 3 * 1.0 * 300 / 100
    # runs table
    assert "spcl" in text and "resnet18" in text and "345.6" in text and "12.5" in text
    assert "1 line(s)" in text
    for kind in ("auroc", "loss", "bench"):
        png = out.with_name(f"REPORT_{kind}.png")
        assert png.read_bytes()[:8] == PNG
        assert f"]({png.name})" in text
    assert "cxrcl eval linear --run runs/spcl" in text


def test_report_bench_with_measured_peak(tmp_path):
    m = {"train_images_per_s": 100.0, "train_step_s": 0.32, "infer_images_per_s": 400.0,
         "gflops_per_image": 0.5, "peak_rss_mb": 900.0, "train_rss_mb": 300.0,
         "achieved_gflops_per_s": 42.0, "achieved_fraction_of_peak": 0.21}
    bench = _write(tmp_path / "b.json", {
        "methods": {"spcl": dict(m), "mae": {**m, "train_images_per_s": 50.0}},
        "ratios_vs": "mae", "machine": {"matmul_peak_gflops": 200.0},
        "setup": {"backbone": "vit_tiny", "batch_size": 32}})
    text = write_report([bench], tmp_path / "B.md").read_text()
    assert "**mae**" in text and "21.0 %" in text and "42.00" in text and "train RSS MB" in text
    assert "- backbone: `vit_tiny`" in text and "| spcl | 100.0 | 2.00 |" in text


def test_report_walks_a_directory(inputs, tmp_path):
    d, _, _, _ = inputs
    _write(d / "notes.json", {"hello": 1})  # unknown JSON inside a directory: listed as skipped
    out = write_report([d, tmp_path / "runs"], tmp_path / "R.md")
    text = out.read_text()
    assert "5 evaluation result(s), 1 benchmark(s), 2 run(s)" in text
    assert "notes.json" in text and "Skipped" in text
    assert (tmp_path / "R_auroc.png").exists() and (tmp_path / "R_loss.png").exists()


def test_report_errors_name_the_input(inputs, tmp_path):
    d, _, _, _ = inputs
    bad = _write(tmp_path / "weird.json", {"foo": "bar"})
    with pytest.raises(CxrclError, match="weird.json"):
        write_report([bad], tmp_path / "R.md")
    txt = tmp_path / "notes.txt"
    txt.write_text("x")
    with pytest.raises(CxrclError, match="notes.txt"):
        write_report([txt], tmp_path / "R.md")
    with pytest.raises(CxrclError, match="missing"):
        write_report([tmp_path / "missing"], tmp_path / "R.md")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CxrclError, match="empty"):
        write_report([empty], tmp_path / "R.md")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(CxrclError, match="broken.json"):
        write_report([broken], tmp_path / "R.md")
