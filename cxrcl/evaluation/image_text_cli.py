"""``cxrcl eval zeroshot|retrieval``: load the image-text run, evaluate, write the eval JSON.

The JSON has the CLI.md shape (``task``, ``labels``, ``results``, ``summary``, plus ``data`` and
``protocol`` as the other probes write). Zero-shot uses no labels and no seeds: one result with
``fraction`` 0 and ``seed`` 0; ``--fractions`` and ``--seeds`` are ignored (the JSON says so).
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

from cxrcl.data.prepared import PreparedDataset
from cxrcl.errors import CxrclError
from cxrcl.evaluation.image_text_model import load_image_text_model
from cxrcl.evaluation.outputs import check_output
from cxrcl.evaluation.results import build_result, save_json


def evaluate_image_text(task: str, run: str, data: str | Path, out: str | Path | None = None, *,
                        labels: str | None = None, prompts: str | None = None, scoring: str | None = None,
                        ensemble: str | None = None, split: str = "test", text_column: str | None = None,
                        exclude_nonempty: str | None = None, ks: str = "1,5,10", match: str = "text",
                        report_embedding: str = "whole", model=None) -> dict:
    """Run ``task`` (zeroshot or retrieval) and write the JSON to ``out`` (when given).

    ``model`` (an :class:`~cxrcl.evaluation.image_text_model.ImageTextModel`) skips loading
    ``run`` (tests, notebooks)."""
    from cxrcl.evaluation.retrieval import parse_ks, retrieval
    from cxrcl.evaluation.zeroshot import load_prompts, zeroshot

    if task not in ("zeroshot", "retrieval"):
        raise CxrclError(f"unknown image-text task {task!r}; available: zeroshot, retrieval")
    if task == "zeroshot" and not labels:
        raise CxrclError("cxrcl eval zeroshot needs --label NAME[,NAME...] or --label all")
    if task == "retrieval":
        ks = parse_ks(ks)
    if out is not None:
        out = check_output(out, "json")
    ds = PreparedDataset.open(data)
    names = ds.resolve_labels(labels) if task == "zeroshot" else []
    prompt_set = load_prompts(prompts) if task == "zeroshot" else None
    if prompt_set is not None:
        for n in names:
            prompt_set.for_label(n)  # a missing prompt fails before the model is loaded
    t0 = time.time()
    model = model if model is not None else load_image_text_model(run)
    if task == "zeroshot":
        r = zeroshot(model, ds, names, prompt_set, scoring=scoring or "posneg", ensemble=ensemble or "mean",
                     split=split, exclude_nonempty=exclude_nonempty, text_column=text_column)
    else:
        r = retrieval(model, ds, text_column=text_column, split=split, ks=ks,
                      exclude_nonempty=exclude_nonempty, match=match, report_embedding=report_embedding)
    command = "cxrcl " + shlex.join(sys.argv[1:]) if Path(sys.argv[0]).name == "cxrcl" else None
    extra = {"command": command} if command else {}
    extra["ignored"] = "fractions and seeds: nothing is fitted, nothing is sampled"
    res = build_result(task=task, run_name=str(run), labels=names, ds=ds, degrade_level=0,
                       feature_dim=r["feature_dim"], results=[r["result"]], protocol=r["protocol"],
                       timing={"seconds": round(time.time() - t0, 2)}, extra=extra)
    if task == "retrieval":
        res["summary"] = {"0.0": {"auroc_mean": None, "auroc_std": None, "n_seeds": 1, "n_train_mean": 0.0,
                                  "recall_at_k": r["result"]["recall_at_k"],
                                  "chance_at_k": r["result"]["chance_at_k"]}}
        for key in ("precision_at_k", "precision_chance_at_k"):
            if key in r["result"]:
                res["summary"]["0.0"][key] = r["result"][key]
    if out is not None:
        save_json(res, out)
    return res


def run_image_text_eval(args) -> int:
    """The CLI entry (``cxrcl eval zeroshot|retrieval``); prints a short summary."""
    res = evaluate_image_text(args.task, args.run, args.data, args.out, labels=args.label,
                              prompts=args.prompts, scoring=args.scoring, ensemble=args.ensemble,
                              split=args.split, text_column=args.text_column,
                              exclude_nonempty=args.exclude_nonempty, ks=args.k, match=args.match,
                              report_embedding=args.report_embedding)
    r = res["results"][0]
    if args.task == "zeroshot":
        ci = r.get("auroc_ci95")
        ci_text = f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else ""
        per = ", ".join(f"{k} {v:.3f}" for k, v in r["auroc_per_label"].items())
        print(f"zeroshot {res['protocol']['scoring']} on {r['split']} ({r['n_test']} images): macro AUROC "
              f"{r['auroc']:.3f}{ci_text}; {per}")
    else:
        for d, rec in r["recall_at_k"].items():
            parts = ", ".join(f"R@{k} {v:.3f} (chance {r['chance_at_k'][d][k]:.3f})" for k, v in rec.items())
            if "precision_at_k" in r:
                parts += ", " + ", ".join(f"P@{k} {v:.3f} (chance {r['precision_chance_at_k'][d][k]:.3f})"
                                          for k, v in r["precision_at_k"][d].items())
            print(f"{d} on {r['split']} ({r['n_images']} images, {r['n_reports']} reports, "
                  f"match {res['protocol']['match']}): {parts}")
    print(f"wrote {args.out}")
    return 0
