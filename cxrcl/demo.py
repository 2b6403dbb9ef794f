"""``cxrcl demo``: phantom -> S-PCL pre-training -> linear probe against the floors -> report.

Runs offline on the embedded phantom in a few minutes on 2 CPU cores. It proves the mechanics
(the whole pipeline, and that pre-training beats an untrained encoder), never a claim about
real patients: the phantom is synthetic.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from cxrcl.data.phantom import make_phantom
from cxrcl.data.prepared import PreparedDataset
from cxrcl.evaluation.protocol import evaluate
from cxrcl.evaluation.report import write_report
from cxrcl.training.checkpoint import latest_checkpoint
from cxrcl.training.fit import pretrain

NAMES = {"spcl": "S-PCL", "simclr": "SimCLR", "sparsecontrast": "SparseContrast", "comcl": "CoMCL",
         "mocov3": "MoCo v3", "dino": "DINO", "mae": "MAE"}


@dataclass(frozen=True)
class DemoPlan:
    method: str = "spcl"
    n: int = 1024
    size: int = 64
    backbone: str = "vit_tiny_patch16_224"  # 16 tokens at 64 px: on the phantom it beat 8 px patches
    steps: int = 500
    batch_size: int = 64
    lr: float = 1e-3
    fractions: tuple[float, ...] = (0.01, 0.1, 1.0)
    seeds: int = 3


QUICK = DemoPlan(n=160, size=32, backbone="vit_tiny_patch16_224:patch_size=8:depth=2", steps=6,
                 batch_size=32, fractions=(0.1, 1.0), seeds=1)


def run_demo(out: Path, quick: bool = False, plan: DemoPlan | None = None) -> Path:
    plan = plan or (QUICK if quick else DemoPlan())
    out = Path(out)
    t0 = time.perf_counter()
    data = out / "phantom"
    print(f"[1/4] phantom: {plan.n} synthetic CXRs at {plan.size} px with 5 findings -> {data}")
    if (data / "dataset.json").exists():
        ds = PreparedDataset.open(data)
    else:
        ds = make_phantom(data, n=plan.n, size=plan.size, seed=0)
    name = plan.method.split(":")[0]
    title = NAMES.get(name, name)
    run = out / "runs" / name
    print(f"[2/4] {title} pre-training on the train split ({len(ds.indices('train'))} images), "
          f"{plan.steps} steps of {plan.batch_size} on {plan.backbone}")
    if not (run / "summary.json").exists() or not json.loads((run / "summary.json").read_text()).get("complete"):
        resume = latest_checkpoint(run / "checkpoints") is not None
        pretrain(None if resume else plan.method, data, run, backbone=None if resume else plan.backbone,
                 resume=resume,
                 train_overrides={"steps": plan.steps, "batch_size": plan.batch_size,
                                  "lr": plan.lr, "log_every": 5} if not resume else None)
    print("[3/4] linear probe on every finding, against the two floors (untrained encoder, pixel PCA)")
    evals = {}
    for key, spec in ((name, str(run)), ("random", f"random:{plan.backbone}"), ("pixels", "pixels")):
        evals[key] = evaluate("linear", spec, data, "all", out / "eval" / f"linear_{key}.json",
                              fractions=plan.fractions, seeds=plan.seeds)
    report = write_report([run, out / "eval"], out / "report" / "REPORT.md")
    print(f"[4/4] report: {report}  ({time.perf_counter() - t0:.0f} s in all)\n")
    print(_summary_table(evals, name, title))
    return report


def _summary_table(evals: dict[str, dict], name: str, title: str) -> str:
    fracs = list(evals[name]["summary"])
    lines = ["macro AUROC over the 5 findings (mean ± std over seeds), phantom test split:",
             "  encoder  " + "".join(f"{float(f) * 100:>14g}%" for f in fracs)]
    for key, ev in evals.items():
        cells = "".join(f"{ev['summary'][f]['auroc_mean']:>9.3f} ±{ev['summary'][f]['auroc_std']:.3f}" for f in fracs)
        lines.append(f"  {key:<8}{cells}")
    for f in fracs:
        s, r, p = (evals[k]["summary"][f]["auroc_mean"] for k in (name, "random", "pixels"))
        lines.append(f"At {float(f) * 100:g}% labels {title} {'beats' if s > r else 'does NOT beat'} the untrained "
                     f"encoder ({s:.3f} vs {r:.3f}) and {'beats' if s > p else 'does NOT beat'} the pixel floor "
                     f"({p:.3f}).")
    s, p = (evals[k]["summary"][fracs[-1]]["auroc_mean"] for k in (name, "pixels"))
    if s <= p:
        lines.append("Why the pixel floor wins here: a 32-px PCA of the phantom already reads its global findings "
                     "(cardiomegaly, effusion) almost perfectly, its small lesions stay near chance for every "
                     "encoder at 64 px, and minutes of CPU pre-training do not close that gap (the recipe "
                     "search on the val split: benchmarks/results/demo/search.json).")
    lines.append("Synthetic data: this shows the pipeline works, not clinical value.")
    return "\n".join(lines)
