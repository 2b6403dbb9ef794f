import json
import re

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


# ----------------------------------------------------------------------------- CIs, significance, cost, ROC
def _scored_eval(path, run, y, scores_per_seed, fractions=(0.1, 1.0)):
    """An eval JSON with bootstrap CIs and a score sidecar, as `cxrcl eval` writes it."""
    from sklearn.metrics import roc_auc_score

    from cxrcl.evaluation.bootstrap import attach_uncertainty
    from cxrcl.evaluation.results import save_json

    results, scores = [], []
    for f in fractions:
        for seed, s in enumerate(scores_per_seed):
            per = {lbl: float(roc_auc_score(y[:, j], s[:, j])) for j, lbl in enumerate(("a", "b"))}
            results.append({"fraction": f, "seed": seed, "n_train": 10, "auroc": float(np.mean(list(per.values()))),
                            "auroc_per_label": per})
            scores.append(s)
    ev = {"task": "linear", "run": str(run), "labels": ["a", "b"], "data": DATA, "degrade_test": 0,
          "results": results, "summary": summarize(results), "command": f"cxrcl eval linear --run {run}"}
    attach_uncertainty(ev, np.arange(len(y)), y, np.stack(scores), n_boot=200)
    save_json(ev, path)
    return path


def _summary_run(path, method, wall, seen=6400):
    path.mkdir(parents=True)
    (path / "summary.json").write_text(json.dumps({
        "method": method, "backbone": "vit_tiny", "image_size": 64, "steps": 100, "wall_seconds": wall,
        "images_seen": seen, "images_per_s": seen / wall, "final_loss": 1.0,
        "data": {"path": "data/phantom"}}))
    return path


@pytest.fixture
def scored(tmp_path):
    rng = np.random.default_rng(0)
    n = 400
    y = (rng.random((n, 2)) < 0.4).astype(float)
    noise = [rng.normal(size=(n, 2)) for _ in range(3)]
    base = [y * 0.6 + e for e in noise]                          # simclr: the baseline
    same = [y * 0.6 + e + 0.01 * rng.normal(size=(n, 2)) for e in noise]  # no real difference
    better = [y * 2.0 + e for e in noise]                         # clearly better
    runs = tmp_path / "runs"
    r_base = _summary_run(runs / "simclr", "simclr", wall=100.0)
    r_same = _summary_run(runs / "same", "mocov3", wall=50.0)
    r_better = _summary_run(runs / "spcl", "spcl", wall=80.0)
    d = tmp_path / "eval"
    d.mkdir()
    files = [_scored_eval(d / "simclr.json", r_base, y, base),
             _scored_eval(d / "same.json", r_same, y, same),
             _scored_eval(d / "spcl.json", r_better, y, better),
             _scored_eval(d / "pixels.json", "pixels", y, [y * 0.3 + e for e in noise])]
    bench = _write(tmp_path / "bench.json", {
        "methods": {m: {"train_images_per_s": 100.0, "train_step_s": 0.64, "infer_images_per_s": 400.0,
                        "gflops_per_image": g, "train_gflops_per_step": 3 * g * 64, "peak_rss_mb": 900.0,
                        "fraction_of_peak_bf16": 0.42}
                    for m, g in (("simclr", 2.0), ("mocov3", 2.0), ("spcl", 0.5))},
        "machine": {"matmul_peak_gflops": 200.0},
        "setup": {"backbone": "vit_tiny", "image_size": 64, "batch_size": 64, "steps": 5, "data": "data/phantom"}})
    return d, files, bench, (r_base, r_same, r_better)


def test_report_ci_significance_cost_and_roc(scored, tmp_path):
    d, files, bench, runs = scored
    out = write_report([d, bench, *runs], tmp_path / "rep" / "R.md")
    text = out.read_text()
    row = {}
    for line in text.splitlines():
        if line.startswith("| "):
            row.setdefault(line.split("|")[1].strip(), line)  # the accuracy table comes first
    # CI in every cell; the indistinguishable method is marked, the clearly better one is not
    assert re.search(r"\d\.\d{3} ± \d\.\d{3} \(3\) \[\d\.\d{3}, \d\.\d{3}\]", row[str(runs[2])])
    assert "†" in row[str(runs[1])] and "†" not in row[str(runs[2])]
    assert "(baseline)" in row[str(runs[0]) + " (baseline)"]
    assert "Paired bootstrap against the baseline" in text and "no †" in text
    # every table is headed by the command that made it
    assert text.index("Made by:") < text.index("| run | 10 % | 100 % |")
    assert "cxrcl bench --methods simclr,mocov3,spcl --data data/phantom" in text
    assert f"cxrcl pretrain spcl --data data/phantom --out {runs[2]}" in text
    # the bench's extra measures are shown
    assert "fraction_of_peak_bf16" in text and "0.42" in text
    # cost: GFLOPs = train GFLOPs/step / batch x images seen = 3 x 0.5 x 6400 for spcl
    assert "## Accuracy vs. cost" in text and "9,600" in text and "38,400" in text
    cost = text.split("## Accuracy vs. cost")[-1].splitlines()
    spcl_cost = next(line for line in cost if line.startswith("| spcl |"))
    assert "| yes | yes |" in spcl_cost  # cheapest in GFLOPs and on the wall-seconds frontier
    simclr_cost = next(line for line in cost if line.startswith("| simclr |"))
    assert "| no | no |" in simclr_cost  # dominated: spcl is better and cheaper on both axes
    for kind in ("cost", "roc", "auroc", "bench"):
        png = out.with_name(f"R_{kind}.png")
        assert png.read_bytes()[:8] == PNG and f"]({png.name})" in text


def test_report_without_sidecars_says_so(scored, tmp_path):
    d, files, _, _ = scored
    for f in files:
        f.with_name(f.stem + ".scores.npz").unlink()
    text = write_report(files, tmp_path / "R.md").read_text()
    cells = [line for line in text.splitlines() if line.startswith("| ") and "±" in line]
    assert cells and not any("†" in line for line in cells)
    assert "Paired bootstrap against" not in text
    assert "No significance marks for" in text and "No ROC curve for" in text
    assert not (tmp_path / "R_roc.png").exists()


def test_report_saliency_and_other_tasks(tmp_path):
    ex = tmp_path / "explain_spcl"
    ex.mkdir()
    (ex / "explain.json").write_text(json.dumps({
        "run": "runs/spcl", "method": "spcl", "data": "data/phantom", "split": "test", "n_overlays": 8,
        "lesion_area_kept": 0.71, "random_area_kept": 0.5, "lesion_minus_random": 0.21,
        "lesion_minus_random_ci95": [0.15, 0.27]}))
    (ex / "overlays.png").write_bytes(PNG + b"rest")
    seg = {"task": "segment", "run": "runs/spcl", "labels": ["mask"], "data": DATA, "degrade_test": 0,
           "results": [{"fraction": 1.0, "seed": 0, "n_train": 9, "dice": 0.8}],
           "summary": {"1.0": {"dice_mean": 0.8, "dice_std": 0.0, "n_seeds": 1}}}
    ret = {"task": "retrieval", "run": "runs/clip", "labels": [], "data": DATA, "degrade_test": 0,
           "results": [{"fraction": 0.0, "seed": 0, "n_train": 0, "auroc": None,
                        "recall_at_k": {"image_to_report": {"1": 0.25}, "report_to_image": {"1": 0.2}},
                        "chance_at_k": {"image_to_report": {"1": 0.01}, "report_to_image": {"1": 0.01}}}],
           "summary": {}}
    files = [_write(tmp_path / "seg.json", seg), _write(tmp_path / "ret.json", ret)]
    out = write_report([*files, ex], tmp_path / "S.md")
    text = out.read_text()
    assert "0.800 ± 0.000 (1)" in text and "Dice over test images" in text
    assert "image→report R@1" in text and "0.250 (chance 0.010)" in text
    assert "## Saliency" in text and "0.71" in text and "0.21" in text and "[0.150, 0.270]" in text
    assert "cxrcl explain --run runs/spcl --data data/phantom" in text and "--split test --n 8" in text
    assert out.with_name("S_saliency_0.png").read_bytes()[:8] == PNG
