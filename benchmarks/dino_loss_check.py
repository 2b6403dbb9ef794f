"""Why did DINO's loss not fall in the 150-step robustness run? Variants on the phantom.

Each variant pre-trains DINO with the robustness benchmark's setting (ViT-Tiny, 16 px patches at
64 px, batch 32, phantom 1,024 images, train split) and logs the loss and the two collapse
diagnostics of ``cxrcl.methods.dino`` every 5 steps: ``teacher_entropy`` (per-image entropy of
the teacher's centred, sharpened distribution; ln K = uniform teacher) and
``teacher_batch_entropy`` (entropy of its batch mean; near 0 = one prototype for every image).
Only the pre-training loss is read (no labels, no test split). Idempotent: finished runs are
skipped, so it can be called again after a time limit.

Usage: .venv/bin/python benchmarks/dino_loss_check.py [VARIANT ...]
Writes benchmarks/results/comcl/dino_check.json and dino_check_<variant>_metrics.jsonl.
       .venv/bin/python benchmarks/dino_loss_check.py --eval VARIANT ...
Linear probe of finished covid_radiography variants (label covid19, 1/10/100 %, 3 seeds):
dino_check_<variant>_linear.json.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CXRCL = ROOT / ".venv/bin/cxrcl"
WORK = ROOT / ".bench-data/comcl"
DATA = WORK / "phantom64"
OUT = ROOT / "benchmarks/results/comcl"

# name -> (method spec, steps, extra CLI arguments)
VARIANTS = {
    "default150": ("dino", 150, []),
    "lr2e-3_150": ("dino", 150, ["--lr", "0.002"]),
    "tt0.02_150": ("dino:teacher_temp=0.02,0.02", 150, []),
    "k256_150": ("dino:num_prototypes=256", 150, []),
    # DINO's linear scaling rule, lr = 5e-4 * batch / 256: 6.25e-5 at batch 32 (the loop's default
    # 5e-4 is 8x that)
    "lr6e-5_150": ("dino", 150, ["--lr", "6.25e-5"]),
    "lr6e-5_tt0.02_150": ("dino:teacher_temp=0.02,0.02", 150, ["--lr", "6.25e-5"]),
    # a slower centre: DINO's 0.9 at 2 x 1,024 teacher outputs per step averages over ~20k
    # outputs; at 2 x 32 it averages over ~640, so the centre follows the current batch
    "cm0.99_150": ("dino:center_momentum=0.99", 150, []),
    # cm0.99 fell (6.19 -> 4.41 by step 65) and then rose as the teacher spread out: at 150 steps
    # a 0.996 teacher moves ~45 % of the way to the student, so it is still mostly its random
    # start; a faster teacher (MoCo v3's 0.99) and/or a smaller lr
    "cm0.99_m0.99_150": ("dino:center_momentum=0.99:momentum=0.99", 150, []),
    "cm0.99_lr1e-4_150": ("dino:center_momentum=0.99", 150, ["--lr", "1e-4"]),
    # DINOv2's (and so RAD-DINO's) centring: Sinkhorn-Knopp over the batch, no running centre
    "sk_150": ("dino:centering=sinkhorn", 150, []),
    "sk_m0.99_150": ("dino:centering=sinkhorn:momentum=0.99", 150, []),
    # Sinkhorn shares the batch's 2 x 32 teacher outputs equally over the K prototypes: with
    # K = 1024 >> 64 every target is spread thin (sk_150 stayed at ln K); fewer prototypes
    "sk_k64_150": ("dino:centering=sinkhorn:num_prototypes=64", 150, []),
    "cm0.99_k64_150": ("dino:center_momentum=0.99:num_prototypes=64", 150, []),
    # every variant above ends with a near-uniform teacher: at initialisation a ViT gives nearly
    # the same features for every phantom image, so the teacher's centred logits barely differ
    # between images. Batch norm in the head's hidden layers (DINO's own choice for ResNets)
    # standardises them across the batch
    "bn_150": ("dino:proj_batch_norm=true", 150, []),
    # bn_150 still spread out (teacher entropy 5.1 -> 6.2 of 6.93), so the head's input is not
    # the cause. Local crops of 5-40 % of a 64 px image (a 14-40 px patch blown up to 64 px)
    # may hold too little of the image for the student to predict the teacher's global view: the
    # best it can do is a flat guess, which the EMA passes on to the teacher. Only the 2 global crops:
    "nolocal_150": ("dino:local_crops=0", 150, []),
    "nolocal_cm0.99_150": ("dino:local_crops=0:center_momentum=0.99", 150, []),
    # same rise without local crops. cm0.99_m0.99 fell furthest but then put every image on a few
    # prototypes (the slow centre cannot push back); a faster teacher with DINO's own centre 0.9:
    "m0.99_150": ("dino:momentum=0.99", 150, []),
    # In every variant above the teacher's information about the image, I = H(batch mean) - mean
    # H(per image) (teacher_batch_entropy - teacher_entropy), falls from the start (e.g. 0.8 ->
    # 0.25 nats): the student only matches the teacher across views by dropping what tells phantom
    # images apart. SimCLR's loss barely falls on the phantom either (4.87 -> 4.74, chance 4.84),
    # while on covid_radiography's real CXRs it does (first -> last 4 logged: 3.96 -> 3.71 in 150 steps). The same DINO on
    # covid_radiography's train split (prepared by benchmarks/comcl_robustness.sh covrad):
    "covrad_default150": ("dino", 150, [], "covrad64"),
    "covrad_cm0.99_150": ("dino:center_momentum=0.99", 150, [], "covrad64"),
    # the same drift on real CXRs. DINO's batch: 256 images (512 teacher outputs per step, and
    # DINO's lr rule 5e-4 x 256 / 256 = the loop's default), 2 global crops only, ~4 epochs
    "covrad_b256_nolocal_150": ("dino:local_crops=0", 150, ["--batch-size", "256"], "covrad64"),
    # b256 drifted the same way (stopped at step 50; dino_check_covrad_b256_nolocal_150_stopped_metrics.jsonl).
    # DINO's ResNet recipe: a CNN backbone with batch norm, batch norm in the head (stopped at step
    # 25 for CPU time: dino_check_covrad_resnet18_bn_150_stopped_metrics.jsonl)
    "covrad_resnet18_bn_150": ("dino:proj_batch_norm=true", 150, ["--backbone", "resnet18"], "covrad64"),
    # Fourth round. The loss is ~ the teacher's per-image entropy, which can only fall if the
    # teacher's logits spread out: with unit-norm prototypes (norm_last_layer) they are cosines,
    # at most 1/0.04 = 25 apart. DINO's ViT-S recipe learns the prototypes' norms
    # (norm_last_layer=False) and freezes the output layer during the first epoch; and all runs
    # so far were 150 steps, in which a 0.996 -> 1 teacher moves little. Longer runs:
    "nnl_150": ("dino:norm_last_layer=false", 150, []),
    "freeze0.3_150": ("dino:freeze_last_layer=0.3", 150, []),
    "nnl_freeze0.3_150": ("dino:norm_last_layer=false:freeze_last_layer=0.3", 150, []),
    # no change: the same rise at 150 steps.
    # If the random teacher's output depends more on the crop than on the image, the student's best
    # guess across views is the batch mean, which the centre removes: weaker crops on real CXRs
    "covrad_weak_nolocal_150": ("dino:local_crops=0:global_crop_area=0.8,1.0", 150, [], "covrad64"),
    "covrad_nolocal_150": ("dino:local_crops=0", 150, [], "covrad64"),
    "covrad_weak_nolocal_1000": ("dino:local_crops=0:global_crop_area=0.8,1.0", 1000, [], "covrad64"),
    "covrad_nolocal_1000": ("dino:local_crops=0", 1000, [], "covrad64"),
    # weak_nolocal_1000 rose to 6.77 (step 170), then fell to 6.19 (last 20 steps; low 5.79);
    # nolocal_1000 stayed flat (6.73): the crops decide it. A second seed, and local crops added:
    "covrad_weak_nolocal_1000_s1": ("dino:local_crops=0:global_crop_area=0.8,1.0", 1000, ["--seed", "1"], "covrad64"),
    # s1 rose to 6.85 (step 265) and fell to 6.45 over the last 20 steps, still above its start
    # (6.18: its first steps were lower than seed 0's). The same seed with twice the steps:
    "covrad_weak_nolocal_2000_s1": ("dino:local_crops=0:global_crop_area=0.8,1.0", 2000, ["--seed", "1"], "covrad64"),
    # weak_1000 (with 2 local crops) collapsed to a uniform teacher; stopped at step 605
    # (dino_check_covrad_weak_1000_stopped_metrics.jsonl)
    "covrad_weak_1000": ("dino:global_crop_area=0.8,1.0", 1000, [], "covrad64"),
}


def run(name: str) -> dict:
    spec, steps, extra, *data = VARIANTS[name]
    data = WORK / (data[0] if data else "phantom64")
    if not (data / "dataset.json").exists():
        raise SystemExit(f"{data} is missing: run benchmarks/comcl_robustness.sh covrad first")
    out = WORK / "runs" / f"dino_check_{name}"
    summary = out / "summary.json"
    if not (summary.exists() and json.loads(summary.read_text()).get("complete")):
        resume = ["--resume"] if (out / "config.yaml").exists() else []
        subprocess.run([str(CXRCL), "pretrain", spec, "--data", str(data), "--out", str(out),
                        "--backbone", "vit_tiny_patch16_224", "--image-size", "64", "--steps", str(steps),
                        "--batch-size", "32", "--log-every", "5", "--no-progress", *extra, *resume], check=True)
        # (a --batch-size or --backbone in extra comes last and wins)
    shutil.copy(out / "metrics.jsonl", OUT / f"dino_check_{name}_metrics.jsonl")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]

    def mean(key, part):
        vals = [r[key] for r in part]
        return sum(vals) / len(vals)
    first, last = rows[:4], rows[-4:]
    peak = max(rows, key=lambda r: r["loss"])
    low = min(rows, key=lambda r: r["loss"])
    return {"spec": spec, "steps": steps, "extra_args": extra, "data": data.name,
            "num_prototypes": int(spec.split("num_prototypes=")[1]) if "num_prototypes=" in spec else 1024,
            "loss_first20": mean("loss", first), "loss_last20": mean("loss", last),
            "loss_peak": peak["loss"], "loss_peak_step": peak["step"],
            "loss_min": low["loss"], "loss_min_step": low["step"],
            "teacher_entropy_first20": mean("teacher_entropy", first),
            "teacher_entropy_last20": mean("teacher_entropy", last),
            "teacher_batch_entropy_last20": mean("teacher_batch_entropy", last),
            "teacher_information_first20": mean("teacher_batch_entropy", first) - mean("teacher_entropy", first),
            "teacher_information_last20": mean("teacher_batch_entropy", last) - mean("teacher_entropy", last),
            "images_per_s": json.loads(summary.read_text()).get("images_per_s")}


def main(names: list[str]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    if not (DATA / "dataset.json").exists():
        subprocess.run([str(CXRCL), "data", "phantom", str(DATA), "--n", "1024", "--size", "64"], check=True)
    path = OUT / "dino_check.json"
    result = json.loads(path.read_text()) if path.exists() else {"variants": {}}
    for name in names or list(VARIANTS):
        result["variants"][name] = run(name)
        res = result["variants"][name]
        res["ln_K"] = math.log(res["num_prototypes"])
        path.write_text(json.dumps(result, indent=1) + "\n")
        print(name, {k: round(v, 3) if isinstance(v, float) else v for k, v in res.items()})
    result["setting"] = ("phantom 1,024 x 64 px (train split) unless data says covrad64 (covid_radiography's "
                         "9,558 train images at 64 px); vit_tiny_patch16_224 at 64 px (16 tokens), "
                         "batch 32, AdamW lr 5e-4 unless --lr, loop defaults otherwise; means over the "
                         "first/last 4 logged values (20 steps)")
    path.write_text(json.dumps(result, indent=1) + "\n")


def evaluate(names: list[str]) -> None:
    for name in names:
        spec, steps, extra, *data = VARIANTS[name]
        out = OUT / f"dino_check_{name}_linear.json"
        subprocess.run([str(CXRCL), "eval", "linear", "--run", str(WORK / "runs" / f"dino_check_{name}"),
                        "--data", str(WORK / (data[0] if data else "phantom64")), "--label",
                        "covid19" if data else "all", "--fractions", "0.01,0.1,1.0", "--seeds", "3",
                        "--out", str(out)], check=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--eval"]:
        evaluate(sys.argv[2:])
    else:
        main(sys.argv[1:])
