"""The ``cxrcl`` command: a thin layer that parses arguments and calls the library.

A user's mistake (a :class:`~cxrcl.errors.CxrclError`) prints one line on stderr and exits 2;
the contract is in docs/cli.md (CLI.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from cxrcl.errors import CxrclError, RunStopped

METHOD_HELP = "method spec NAME[:KEY=VALUE...], e.g. spcl or spcl:ratios=0.4,0.4"


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of numbers") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cxrcl", description="Efficient contrastive learning for chest X-rays.")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="make, prepare and inspect data sets").add_subparsers(dest="data_command", required=True)
    ph = data.add_parser("phantom", help="synthesise the phantom CXR data set (offline default)")
    ph.add_argument("out")
    ph.add_argument("--n", type=int, default=1024)
    ph.add_argument("--size", type=int, default=128)
    ph.add_argument("--seed", type=int, default=0)
    ph.add_argument("--overwrite", action="store_true",
                    help="replace OUT when it is already a prepared data set (never a folder of other files)")
    pr = data.add_parser("prepare", help="turn a public layout into a prepared data set")
    pr.add_argument("source")
    pr.add_argument("input")
    pr.add_argument("out")
    pr.add_argument("--size", type=int, default=128)
    pr.add_argument("--split", default="patient:0.7,0.1,0.2")
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--workers", type=int, default=1)
    pr.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                    help="a source option, e.g. --opt uncertain=ones (chexpert, mimic-cxr)")
    pr.add_argument("--overwrite", action="store_true",
                        help="replace OUT when it is already a prepared data set (never a folder of other files)")
    info = data.add_parser("info", help="counts per split and label, text coverage, image statistics")
    info.add_argument("prepared")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.add_argument("--montage", metavar="PNG", help="also write a montage of sample images per label")
    mg = data.add_parser("merge", help="merge prepared data sets (labels unioned, NaN where a set lacks one)")
    mg.add_argument("inputs", nargs="+", help="prepared data sets, then the output directory")
    mg.add_argument("--size", type=int, help="common size (default: the smallest input size)")
    mg.add_argument("--names", help="comma list of id prefixes, one per input")
    mg.add_argument("--workers", type=int, default=1)
    mg.add_argument("--overwrite", action="store_true",
                        help="replace OUT when it is already a prepared data set (never a folder of other files)")
    rl = data.add_parser("relabel", help="rename, merge (logical OR) or drop label columns")
    rl.add_argument("prepared")
    rl.add_argument("out")
    rl.add_argument("--map", action="append", default=[], metavar="OLD[,OLD...]=NEW")
    rl.add_argument("--drop", action="append", default=[], metavar="LABEL")
    rl.add_argument("--overwrite", action="store_true",
                        help="replace OUT when it is already a prepared data set (never a folder of other files)")

    pp = data.add_parser("pair-reports", help="pair real images with real reports whose labeller "
                         "findings match the image label (an experiment, not real pairs)")
    pp.add_argument("images", help="a prepared image data set with a binary label")
    pp.add_argument("reports", help="an Open-i folder (or any input `cxrcl text label` reads)")
    pp.add_argument("out")
    pp.add_argument("--positive", required=True, metavar="LABEL",
                    help="the image label whose 1 gets an opacity/pneumonia report (0 gets a normal one)")
    pp.add_argument("--seed", type=int, default=0)
    pp.add_argument("--overwrite", action="store_true",
                    help="replace OUT when it is already a prepared data set (never a folder of other files)")

    pt = sub.add_parser("pretrain", help="self-supervised pre-training")
    pt.add_argument("method", help=METHOD_HELP)
    pt.add_argument("--data", required=True, help="a prepared data set")
    pt.add_argument("--out", required=True, help="the run directory")
    pt.add_argument("--backbone", help="timm name with overrides, e.g. vit_tiny_patch16_224:patch_size=8")
    pt.add_argument("--image-size", type=int)
    g = pt.add_mutually_exclusive_group()
    g.add_argument("--epochs", type=float)
    g.add_argument("--steps", type=int)
    pt.add_argument("--batch-size", type=int, help="per process")
    pt.add_argument("--lr", type=float)
    pt.add_argument("--seed", type=int)
    pt.add_argument("--config", help="YAML with method, method_config, backbone, image_size, train")
    pt.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    pt.add_argument("--stop-after", type=int, help="stop this invocation after N steps (checkpointed)")
    pt.add_argument("--devices", type=int, help="processes per node (Fabric launches them)")
    pt.add_argument("--num-nodes", type=int)
    pt.add_argument("--precision", help="32-true, bf16-mixed, 16-mixed or auto")
    pt.add_argument("--accelerator", help="auto, cpu or cuda")
    pt.add_argument("--max-bad-steps", type=int,
                    help="stop after this many non-finite losses in a row (each is skipped; default 5)")
    pt.add_argument("--splits", help="comma list of splits to pre-train on (default train)")
    pt.add_argument("--log-every", type=int)
    pt.add_argument("--checkpoint-every", type=int)
    pt.add_argument("--no-progress", action="store_true")
    pt.add_argument("--logger", choices=["csv", "tensorboard"],
                    help="also log metrics through Fabric's CSV or TensorBoard logger (RUN/logs)")

    ev = sub.add_parser("eval", help="evaluate an encoder (linear, finetune, knn, zeroshot, retrieval, segment)")
    ev.add_argument("task", choices=["linear", "knn", "zeroshot", "retrieval", "finetune", "segment"])
    ev.add_argument("--run", required=True, help="run directory, random:BACKBONE, or pixels")
    ev.add_argument("--data", required=True)
    ev.add_argument("--label", help="NAME[,NAME...] or all (every task but retrieval)")
    ev.add_argument("--out", required=True)
    ev.add_argument("--fractions", type=_floats, default=[0.01, 0.1, 1.0])
    ev.add_argument("--seeds", type=int, default=3)
    ev.add_argument("--degrade-test", type=int, default=0, metavar="LEVEL")
    ev.add_argument("--image-size", type=int, help="encoder input size (default: the run's)")
    ev.add_argument("--val-labels", choices=["matched", "full"],
                    help="linear (C) and finetune (early stopping): val labels sampled at the same fraction (matched, "
                         "the default) or on all of them (full)")
    ev.add_argument("--max-epochs", type=int, help="finetune: epoch budget (default 20)")
    ev.add_argument("--patience", type=int, help="finetune: stop after N epochs without val gain (default 5)")
    ev.add_argument("--lr", type=float, help="finetune: encoder learning rate (default 1e-4; head x10)")
    ev.add_argument("--layer-decay", type=float, help="finetune: layer-wise lr decay, e.g. 0.75 (default off)")
    ev.add_argument("--batch-size", type=int, help="finetune: batch size (default 32)")
    ev.add_argument("--prompts", help="zeroshot: YAML of prompts per label (default configs/prompts/default.yaml)")
    ev.add_argument("--scoring", choices=["posneg", "cosine"],
                    help="zeroshot: MaCo's positive-vs-negative softmax (posneg, default) or plain cosine")
    ev.add_argument("--ensemble", choices=["mean", "first"],
                    help="zeroshot: average every phrase x template (mean, default) or the first only")
    ev.add_argument("--split", default="test", help="zeroshot/retrieval: split scored (val to choose prompts)")
    ev.add_argument("--text-column", help="retrieval: the report column (default report)")
    ev.add_argument("--exclude-nonempty", metavar="COLUMN",
                    help="zeroshot/retrieval: leave out rows whose COLUMN is non-empty "
                         "(e.g. covid_chestxray_match: copies of another set's images)")
    ev.add_argument("--k", default="1,5,10", help="retrieval: comma list of K for Recall@K")
    ev.add_argument("--match", default="text", choices=["text", "labels"],
                    help="retrieval: a hit is the image's own report (text) or any report of the same "
                         "label set (labels; adds Precision@K, CheXpert 5x200 style)")
    ev.add_argument("--report-embedding", default="whole", choices=["whole", "sentences"],
                    help="retrieval: embed each report in one pass (whole) or as the mean of its sentence "
                         "embeddings from the run's training pool (sentences; for text_sentences runs)")
    ev.add_argument("--finetune", action="store_true", help="segment: train the encoder too (default frozen)")
    ev.add_argument("--head-steps", type=int, default=300, help="segment: decoder training steps (early-stopped on val)")

    be = sub.add_parser("bench", help="efficiency of several methods, side by side in one process")
    be.add_argument("--methods", required=True, help="comma list of method specs")
    be.add_argument("--data", required=True)
    be.add_argument("--out", required=True)
    be.add_argument("--backbone", default="vit_tiny_patch16_224")
    be.add_argument("--image-size", type=int)
    be.add_argument("--batch-size", type=int, default=64)
    be.add_argument("--steps", type=int, default=10)
    be.add_argument("--warmup", type=int, default=2)
    be.add_argument("--reference", help="method the ratios are against (default simclr)")
    be.add_argument("--no-memory", action="store_true", help="skip the per-method peak-memory processes")
    be.add_argument("--precision", default="auto", choices=["32-true", "bf16-mixed", "auto"],
                    help="auto: bf16-mixed where bf16 matmul is faster and a fp32/bf16 loss check agrees")

    rp = sub.add_parser("report", help="eval/bench JSON and runs -> markdown tables + plots")
    rp.add_argument("inputs", nargs="+")
    rp.add_argument("--out", required=True)
    rp.add_argument("--baseline", default="simclr",
                    help="method every other run is tested against (paired bootstrap; default simclr)")

    xo = sub.add_parser("export", help="a run's encoder for timm (safetensors) or onnxruntime")
    xo.add_argument("--run", required=True, help="run directory (or random:BACKBONE with --image-size)")
    xo.add_argument("--format", required=True, choices=["timm", "onnx"])
    xo.add_argument("--out", required=True, help="a new file (.safetensors for timm, .onnx)")
    xo.add_argument("--image-size", type=int, help="input size (default: the run's)")
    xo.add_argument("--force", action="store_true", help="replace --out if it exists")

    em = sub.add_parser("embed", help="features of every image of a prepared data set")
    em.add_argument("--run", required=True)
    em.add_argument("--data", required=True)
    em.add_argument("--out", required=True)

    de = sub.add_parser("demo", help="phantom -> S-PCL -> linear probe vs floors -> report")
    de.add_argument("--out", default="cxrcl-demo")
    de.add_argument("--quick", action="store_true", help="a much shorter run (tests)")

    xp = sub.add_parser("explain", help="overlays of the kept tokens / saliency, and lesion coverage")
    xp.add_argument("--run", required=True, help="a run directory (sparsecontrast, or any ViT run)")
    xp.add_argument("--data", required=True, help="a prepared data set")
    xp.add_argument("--out", required=True, help="a new (or empty) directory")
    xp.add_argument("--n", type=int, default=16, help="images to draw (lesion images first)")
    xp.add_argument("--split", default="test")
    xp.add_argument("--keep", type=float, help="kept fraction (default: the run's; 0.5 for rollout)")
    tx = sub.add_parser("text", help="reports: labeller, its evaluation, text encoders, similarity")
    tx = tx.add_subparsers(dest="text_command", required=True)
    tl = tx.add_parser("label", help="finding labels (1/0/-1/empty) of every report -> CSV")
    tl.add_argument("input", help="an Open-i folder, a CSV of reports, a prepared data set or .txt reports")
    tl.add_argument("--out", required=True, help="a new CSV file")
    tl.add_argument("--column", help="the report column of a CSV (default: report, text, ...)")
    te = tx.add_parser("label-eval", help="score the labeller against Open-i MeSH terms -> JSON")
    te.add_argument("input", help="the Open-i reports folder (ecgen-radiology XMLs)")
    te.add_argument("--out", required=True, help="a new JSON file")
    te.add_argument("--uncertain", choices=("negative", "positive"), default="negative",
                    help="count an uncertain mention as this (default chosen on the dev half)")
    tp = tx.add_parser("pretrain", help="BPE tokenizer + small transformer trained from scratch (MLM)")
    tp.add_argument("--reports", required=True, help="an Open-i folder, a CSV of reports, ...")
    tp.add_argument("--out", required=True, help="a new (or empty) run folder; bpe:OUT loads it")
    tp.add_argument("--steps", type=int, default=300)
    tp.add_argument("--batch-size", type=int, default=32)
    tp.add_argument("--vocab-size", type=int, default=4000)
    tp.add_argument("--layers", type=int, default=3)
    tp.add_argument("--width", type=int, default=128)
    tp.add_argument("--heads", type=int, default=4)
    tp.add_argument("--lr", type=float, default=5e-4)
    tp.add_argument("--seed", type=int, default=0)
    ts = tx.add_parser("similar", help="the reports nearest to a query text")
    ts.add_argument("--reports", required=True, help="an Open-i folder, a CSV of reports, ...")
    ts.add_argument("--query", required=True, help="report text to compare")
    ts.add_argument("--method", default="minilm",
                    help="labels, or a text encoder: minilm, bpe:RUN, hf:PATH_OR_NAME (default minilm)")
    ts.add_argument("--k", type=int, default=5)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args) or 0
    except RunStopped as e:
        print(f"cxrcl: {e}", file=sys.stderr)
        return e.exit_code
    except CxrclError as e:
        print(f"cxrcl: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("cxrcl: interrupted (pre-training resumes with --resume; data prepare resumes when the "
              "same command is run again)", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of our output went away (`cxrcl data info X | head`): stop quietly, like
        # other Unix tools; point stdout at devnull so the interpreter's final flush is silent
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


# ----------------------------------------------------------------------------- commands
def cmd_data(args) -> int:
    if args.data_command == "phantom":
        from cxrcl.data.phantom import make_phantom

        ds = make_phantom(args.out, n=args.n, size=args.size, seed=args.seed, progress=True,
                          overwrite=args.overwrite)
        print(f"wrote {len(ds)} phantom images ({ds.size} px) to {ds.root}")
    elif args.data_command == "prepare":
        from cxrcl.data.sources import prepare
        from cxrcl.specs import parse_spec

        options = parse_spec("opt:" + ":".join(args.opt))[1] if args.opt else {}
        ds = prepare(args.source, args.input, args.out, size=args.size, split=args.split,
                     seed=args.seed, workers=args.workers, overwrite=args.overwrite, **options)
        skipped = len(ds.info.get("skipped", []))
        print(f"prepared {len(ds)} images ({ds.size} px) from {args.input} into {ds.root}"
              + (f"; skipped {skipped} unreadable files (listed in dataset.json)" if skipped else ""))
    elif args.data_command == "merge":
        from cxrcl.data.merge import merge_prepared

        if len(args.inputs) < 3:
            raise CxrclError("give at least two prepared data sets and then the output directory")
        *inputs, out = args.inputs
        names = args.names.split(",") if args.names else None
        ds = merge_prepared(inputs, out, size=args.size, names=names, workers=args.workers, progress=True,
                            overwrite=args.overwrite)
        print(f"merged {len(inputs)} data sets into {ds.root}: {len(ds)} images, labels {', '.join(ds.label_names)}")
    elif args.data_command == "relabel":
        from cxrcl.data.merge import parse_mapping, relabel_prepared

        ds = relabel_prepared(args.prepared, args.out, parse_mapping(args.map), drop=args.drop,
                              overwrite=args.overwrite)
        print(f"relabelled {args.prepared} into {ds.root}: labels {', '.join(ds.label_names)}")
    elif args.data_command == "pair-reports":
        from cxrcl.data.pairing import pair_reports

        ds = pair_reports(args.images, args.reports, args.out, positive=args.positive, seed=args.seed,
                          overwrite=args.overwrite)
        print(ds.info["pairing"]["summary"])
    else:
        from cxrcl.data.info import describe, format_info
        from cxrcl.data.prepared import PreparedDataset

        d = describe(PreparedDataset.open(args.prepared), montage_png=args.montage)
        print(json.dumps(d, indent=2) if args.json else format_info(d))
    return 0


def cmd_text(args) -> int:
    from cxrcl.text import commands

    if args.text_command == "label":
        table = commands.label(args.input, args.out, column=args.column)
        print(f"labelled {len(table)} reports -> {args.out}")
    elif args.text_command == "label-eval":
        res = commands.label_eval(args.input, args.out, uncertain=args.uncertain)
        for name, v in res["findings"].items():
            print(f"{name:14s} P={v['precision']:.3f} R={v['recall']:.3f} F1={v['f1']:.3f} n={v['support']}")
        print(f"macro F1 {res['macro_f1']:.3f} on {res['n_reports']} reports "
              f"(dev {res['splits']['dev']['macro_f1']:.3f}, held-out "
              f"{res['splits']['heldout']['macro_f1']:.3f}) -> {args.out}")
    elif args.text_command == "pretrain":
        rec = commands.pretrain(args.reports, args.out, steps=args.steps, batch_size=args.batch_size,
                                vocab_size=args.vocab_size, layers=args.layers, width=args.width,
                                heads=args.heads, lr=args.lr, seed=args.seed)
        print(f"MLM loss {rec['train_loss'][0]['loss']:.3f} -> {rec['train_loss'][-1]['loss']:.3f} "
              f"(held-out {rec['val_loss_before']:.3f} -> {rec['val_loss_after']:.3f}), vocabulary "
              f"{rec['vocab_size']}, {rec['seconds']:.0f} s -> {args.out} (load it as bpe:{args.out})")
    elif args.text_command == "similar":
        table = commands.similar(args.reports, args.query, method=args.method, k=args.k)
        for r in table.to_dict("records"):
            print(f"{r['rank']}. {r['similarity']:.3f} {r['id']}: {r['text'][:300]}")
    return 0


def cmd_pretrain(args) -> int:
    from cxrcl.training.fit import pretrain

    overrides = {"steps": args.steps, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                 "seed": args.seed, "devices": args.devices, "num_nodes": args.num_nodes,
                 "precision": args.precision, "log_every": args.log_every,
                 "checkpoint_every": args.checkpoint_every, "accelerator": args.accelerator,
                 "max_bad_steps": args.max_bad_steps, "logger": args.logger,
                 "splits": tuple(args.splits.split(",")) if args.splits else None}
    if args.no_progress:
        overrides["progress"] = False
    summary = pretrain(args.method, args.data, args.out, backbone=args.backbone, image_size=args.image_size,
                       train_overrides=overrides, config_file=args.config, resume=args.resume,
                       stop_after=args.stop_after)
    if summary and summary.get("already_complete"):
        print(f"{args.out} is already complete ({summary['steps']}/{summary['steps_total']} steps): nothing "
              "to do and nothing changed; pass a larger --steps or --epochs with --resume to train on")
    elif summary:
        print(f"{summary['method']} on {summary['backbone']}: {summary['steps']}/{summary['steps_total']} steps, "
              f"final loss {summary['final_loss']:.4f}, {summary['images_per_s']} images/s -> {args.out}")
    return 0


def _finetune_options(args) -> dict:
    keys = ("max_epochs", "patience", "lr", "layer_decay", "batch_size")
    opts = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    if opts and args.task != "finetune":
        raise CxrclError(f"--{'/--'.join(k.replace('_', '-') for k in opts)} apply to `cxrcl eval finetune` only")
    return opts


def cmd_eval(args) -> int:
    if args.task in ("zeroshot", "retrieval"):
        from cxrcl.evaluation.image_text_cli import run_image_text_eval

        return run_image_text_eval(args)
    if args.task == "segment":
        from cxrcl.evaluation.segment import evaluate_segment

        result = evaluate_segment(args.run, args.data, args.out, fractions=args.fractions, seeds=args.seeds,
                                  image_size=args.image_size, finetune=args.finetune, steps=args.head_steps)
        for frac, s in result["summary"].items():
            print(f"segment {result['run']}: {float(frac):g} of masks -> Dice {s['dice_mean']:.3f} ± "
                  f"{s['dice_std']:.3f} ({s['n_seeds']} seeds)")
        print(f"wrote {args.out}")
        return 0
    if not args.label:
        raise CxrclError(f"cxrcl eval {args.task} needs --label NAME[,NAME...] or --label all")
    from cxrcl.evaluation.protocol import evaluate

    result = evaluate(args.task, args.run, args.data, args.label, args.out, fractions=args.fractions,
                      seeds=args.seeds, degrade_level=args.degrade_test, image_size=args.image_size,
                      val_labels=args.val_labels, finetune_options=_finetune_options(args))
    for frac, s in result["summary"].items():
        ci = s.get("auroc_ci") or [None, None]
        ci_text = f", 95% CI {ci[0]:.3f}-{ci[1]:.3f}" if ci[0] is not None else ""
        print(f"{args.task} {result['run']}: {float(frac):g} of labels -> AUROC "
              f"{s['auroc_mean']:.3f} ± {s['auroc_std']:.3f} ({s['n_seeds']} seeds{ci_text})")
    print(f"wrote {args.out}")
    return 0


def cmd_bench(args) -> int:
    from cxrcl.evaluation.efficiency import benchmark
    from cxrcl.evaluation.outputs import check_output
    from cxrcl.evaluation.results import save_json

    check_output(args.out, "json")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    from cxrcl.methods.registry import method_config

    for m in methods:
        method_config(m)  # unknown names fail before any timing
    result = benchmark(methods, args.data, args.backbone, args.image_size, args.batch_size, args.steps,
                       args.warmup, measure_memory=not args.no_memory, reference=args.reference, precision=args.precision,
                       progress=lambda s: print(s, file=sys.stderr))
    save_json(result, args.out)
    ref = result["ratios_vs"]
    for name, r in result["methods"].items():
        ratio = result["ratios"][name]
        print(f"{name:>16}: train {r['train_images_per_s']:.1f} img/s ({ratio['train_images_per_s']:.2f}x {ref}), "
              f"forward {r['gflops_per_image']:.3f} GFLOPs/img ({ratio['gflops_per_image']:.2f}x), "
              f"infer {r['infer_images_per_s']:.1f} img/s, {r['achieved_fraction_of_peak']:.2f} of the "
              f"measured {r['precision']} matmul peak")
    print(f"wrote {args.out}")
    return 0


def cmd_report(args) -> int:
    from cxrcl.evaluation.report import write_report

    path = write_report([Path(i) for i in args.inputs], Path(args.out), baseline=args.baseline)
    print(f"wrote {path}")
    return 0


def cmd_export(args) -> int:
    from cxrcl.export import export

    r = export(args.run, args.format, args.out, image_size=args.image_size, force=args.force)
    print(f"wrote {r['file']} ({args.format}, {r['feature_dim']}-dim features, input {r['input']}; "
          f"checked: max relative difference {r['max_rel_diff']:.1e}). Load it with:\n{r['load']}")
    return 0


def cmd_embed(args) -> int:
    from cxrcl.data.prepared import PreparedDataset
    from cxrcl.evaluation.outputs import check_output, write_npz
    from cxrcl.evaluation.protocol import extractor_for

    check_output(args.out, "npz")
    ds = PreparedDataset.open(args.data)
    feats = extractor_for(args.run, ds)(ds.images)
    write_npz(args.out, features=feats, id=ds.meta["id"].to_numpy(), split=ds.meta["split"].to_numpy())
    print(f"wrote {feats.shape[0]} x {feats.shape[1]} features to {args.out}")
    return 0


def cmd_demo(args) -> int:
    from cxrcl.demo import run_demo

    run_demo(Path(args.out), quick=args.quick)
    return 0


def cmd_explain(args) -> int:
    from cxrcl.evaluation.explain import explain

    r = explain(args.run, args.data, args.out, n=args.n, split=args.split, keep=args.keep)
    lesion = (f"; lesion area kept {r['lesion_area_kept']:.3f} vs {r['random_area_kept']:.3f} for "
              f"random tokens, difference 95 % CI [{r['lesion_minus_random_ci95'][0]:.3f}, "
              f"{r['lesion_minus_random_ci95'][1]:.3f}] ({r['n_images_with_masks']} masked images)"
              if r["lesion_area_kept"] is not None else "")
    print(f"{r['source']} at keep {r['keep_ratio']:g}: {r['n_overlays']} overlays{lesion} -> {args.out}")
    return 0


COMMANDS = {"data": cmd_data, "pretrain": cmd_pretrain, "eval": cmd_eval, "bench": cmd_bench,
            "report": cmd_report, "embed": cmd_embed, "demo": cmd_demo, "explain": cmd_explain,
            "text": cmd_text, "export": cmd_export}

if __name__ == "__main__":
    sys.exit(main())
