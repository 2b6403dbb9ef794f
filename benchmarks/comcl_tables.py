"""Robustness summary of benchmarks/comcl_robustness.sh: one JSON + a markdown table.

Reads ``benchmarks/results/comcl/{SET}_{NAME}_L{LEVEL}.json`` (``cxrcl eval linear`` outputs)
and writes ``{SET}_robustness.json``: per encoder and label fraction, the test AUROC (mean and
std over the 3 label-sample seeds) on clean images (level 0) and at levels 1-3, and the drop
clean - degraded; the clean val AUROC at 100 % labels (for choosing variants); plus the first and last logged pre-training loss of each run.
Runs of other pre-training seeds are named ``{NAME}_s{N}`` (seed 0 has no suffix); ``pooled``
holds, per encoder with more than one seed, the mean and std over pre-training seeds of the
per-seed mean AUROC and drop.

Usage: python benchmarks/comcl_tables.py phantom
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "comcl"


def summarise(name: str) -> dict:
    out: dict = {"set": name, "encoders": {}}
    for path in sorted(RESULTS.glob(f"{name}_*_L0.json")):
        enc = path.name[len(name) + 1:-len("_L0.json")]
        rows: dict = {}
        for level in range(4):
            p = RESULTS / f"{name}_{enc}_L{level}.json"
            if not p.exists():
                continue
            for frac, s in json.loads(p.read_text())["summary"].items():
                rows.setdefault(frac, {})[f"L{level}"] = {"auroc_mean": s["auroc_mean"],
                                                         "auroc_std": s["auroc_std"],
                                                         "n_seeds": s["n_seeds"]}
        for levels in rows.values():
            clean = levels["L0"]["auroc_mean"]
            for key in [k for k in levels if k != "L0"]:
                levels[key]["drop"] = clean - levels[key]["auroc_mean"]
        entry = {"auroc": rows}
        # variant choice: clean val AUROC at 100 % labels (the C chosen on val), never test
        val = [sum(r["val_auroc_per_label"].values()) / len(r["val_auroc_per_label"])
               for r in json.loads((RESULTS / f"{name}_{enc}_L0.json").read_text())["results"]
               if float(r["fraction"]) == 1.0 and r.get("val_auroc_per_label")]
        if val:
            entry["val_auroc_clean_100"] = sum(val) / len(val)
        metrics = RESULTS / f"{name}_{enc}_metrics.jsonl"
        if metrics.exists():
            losses = [json.loads(line)["loss"] for line in metrics.read_text().splitlines() if line]
            entry["loss_first_last"] = [losses[0], losses[-1]]
            entry["loss_first10_last10_mean"] = [sum(losses[:10]) / len(losses[:10]),
                                                 sum(losses[-10:]) / len(losses[-10:])]
        out["encoders"][enc] = entry
    out["pooled"] = pool_seeds(out["encoders"])
    return out


def pool_seeds(encoders: dict) -> dict:
    """Encoders run with several pre-training seeds (``simclr``, ``simclr_s1``, ...): per
    fraction and level, mean and std (ddof 1) over seeds of the label-seed mean AUROC and drop."""
    groups: dict = {}
    for enc in encoders:
        base = re.sub(r"_s\d+$", "", enc)
        groups.setdefault(base, []).append(enc)
    pooled = {}
    for base, members in groups.items():
        if len(members) < 2:
            continue
        rows: dict = {}
        for frac in encoders[members[0]]["auroc"]:
            for level in ("L0", "L1", "L2", "L3"):
                got = [encoders[m]["auroc"].get(frac, {}).get(level) for m in members]
                if any(g is None for g in got):
                    continue
                cell = {"auroc_mean": statistics.mean(g["auroc_mean"] for g in got),
                        "auroc_std": statistics.stdev(g["auroc_mean"] for g in got),
                        "n_pretrain_seeds": len(got)}
                if level != "L0":
                    cell["drop"] = statistics.mean(g["drop"] for g in got)
                    cell["drop_std"] = statistics.stdev(g["drop"] for g in got)
                rows.setdefault(frac, {})[level] = cell
        pooled[base] = {"members": members, "auroc": rows}
    return pooled


def table(summary: dict, frac: str, key: str = "encoders") -> str:
    lines = ["| encoder | clean | L1 | L2 | L3 | drop L1 | drop L2 | drop L3 |",
             "|---|---|---|---|---|---|---|---|"]
    for enc, e in summary[key].items():
        lv = e["auroc"].get(frac, {})
        if "L0" not in lv:
            continue
        cells = [f"{lv[k]['auroc_mean']:.3f} ± {lv[k]['auroc_std']:.3f}" if k in lv else "-"
                 for k in ("L0", "L1", "L2", "L3")]
        drops = [f"{lv[k]['drop']:+.3f}" if k in lv else "-" for k in ("L1", "L2", "L3")]
        lines.append(f"| {enc} | " + " | ".join(cells + drops) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    name = sys.argv[1] if len(sys.argv) > 1 else "phantom"
    s = summarise(name)
    (RESULTS / f"{name}_robustness.json").write_text(json.dumps(s, indent=2))
    for frac in ("0.1", "1.0"):
        print(f"\n{name}, {float(frac):.0%} labels (test AUROC, mean ± std over 3 label seeds)\n")
        print(table(s, frac))
        if s["pooled"]:
            print(f"\npooled over pre-training seeds (mean ± std over seeds of the label-seed means), "
                  f"{float(frac):.0%} labels\n")
            print(table(s, frac, "pooled"))
    print("\nclean val AUROC at 100 % labels (for choosing variants): "
          + ", ".join(f"{enc} {e['val_auroc_clean_100']:.3f}" for enc, e in s["encoders"].items()
                      if "val_auroc_clean_100" in e))
    for enc, e in s["encoders"].items():
        if "loss_first10_last10_mean" in e:
            a, b = e["loss_first10_last10_mean"]
            print(f"{enc}: pre-training loss, mean of first 10 logs {a:.3f} -> last 10 {b:.3f}")
