"""Efficiency against the hardware: measured matmul peaks, the precision choice, and the bench
JSON keys (fraction of the measured peak of the precision that ran, batch-1/64 inference)."""

from __future__ import annotations

import pytest
import torch

from cxrcl.cli import main
from cxrcl.errors import CxrclError
from cxrcl.evaluation import peak
from cxrcl.evaluation.efficiency import benchmark
from tests.conftest import TINY_VIT


def test_matmul_gflops_is_measured_per_size():
    r = peak.matmul_gflops(torch.float32, sizes=(64, 128), min_seconds=0.01)
    assert set(r["per_size"]) == {"64", "128"} and r["gflops"] == max(r["per_size"].values()) > 0


@pytest.mark.parametrize("peaks, fidelity, expected", [
    ({"bf16_units": False, "bf16_speedup": 3.0}, {"max_loss_rel_diff": 0.0}, "32-true"),
    ({"bf16_units": True, "bf16_speedup": 1.05}, {"max_loss_rel_diff": 0.0}, "32-true"),
    ({"bf16_units": True, "bf16_speedup": 2.0}, {"max_loss_rel_diff": 0.2}, "32-true"),
    ({"bf16_units": True, "bf16_speedup": 2.0}, None, "32-true"),
    ({"bf16_units": True, "bf16_speedup": 2.0}, {"max_loss_rel_diff": 0.001}, "bf16-mixed"),
])
def test_auto_precision_needs_units_speed_and_fidelity(peaks, fidelity, expected):
    assert peak.choose_precision(peaks, fidelity)[0] == expected


def test_unknown_precision_is_one_line(tiny_ds, tmp_path, capsys):
    with pytest.raises(CxrclError, match="--precision"):
        peak.check_precision("fp8")
    with pytest.raises(SystemExit) as e:  # argparse refuses it in one usage line
        main(["bench", "--methods", "simclr", "--data", str(tiny_ds.root), "--out", str(tmp_path / "b.json"),
              "--precision", "fp8"])
    assert e.value.code != 0 and "invalid choice: 'fp8'" in capsys.readouterr().err


def test_bench_reports_fraction_of_the_peak_that_ran(tiny_ds):
    b = benchmark(["spcl", "simclr"], str(tiny_ds.root), TINY_VIT, image_size=32, batch_size=8, steps=1,
                  warmup=0, measure_memory=False, progress=None, precision="bf16-mixed")
    peaks = b["machine"]["matmul_peak"]
    assert b["setup"]["precision"] == "bf16-mixed" and b["precision_check"]["steps"] == 5
    for r in b["methods"].values():
        assert r["precision"] == "bf16-mixed"
        assert r["achieved_fraction_of_peak"] == pytest.approx(r["achieved_gflops_per_s"] / peaks["bf16-mixed"]["gflops"])
        assert r["fraction_of_fp32_peak"] == pytest.approx(r["achieved_gflops_per_s"] / peaks["32-true"]["gflops"])
        assert r["infer_images_per_s_b1"] > 0 and r["infer_images_per_s_b64"] > 0
        # counted fwd+bwd is about 3x the forward pass
        assert 2.0 < r["train_gflops_per_step"] / (r["gflops_per_image"] * 8) < 4.0
    assert b["machine"]["matmul_peak_gflops"] == peaks["32-true"]["gflops"]
    fp = b["precision_check"]
    assert len(fp["loss_fp32"]) == len(fp["loss_bf16"]) == 5 and fp["max_loss_rel_diff"] >= 0
