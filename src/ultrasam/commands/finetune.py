"""``ultrasam finetune classify|segment``: downstream transfer of any checkpoint's encoder."""

from __future__ import annotations

import argparse
from typing import Any

MODES = ("linear", "full", "partial", "lora")


def _common(p: argparse.ArgumentParser, folders: bool) -> None:
    # Defaults are None: only what the user gives is passed on (library defaults rule).
    p.add_argument("--data", required=True, action="append",
                   help="COCO JSON (repeatable: a corpus split's train/val/test files read as "
                        "one), dataset folder (annotations.coco.json), corpus folder"
                        + (" or folder per class (ROOT/<class>/ or ROOT/<split>/<class>/)"
                           if folders else ""))
    p.add_argument("--out", required=True, help="output folder (report, weights, state)")
    enc = p.add_mutually_exclusive_group()
    enc.add_argument("--checkpoint", default=None,
                     help="encoder weights: any checkpoint load_model accepts (default: the "
                          "bundled default model)")
    enc.add_argument("--variant", default=None,
                     help="random init of a named variant instead (scratch baseline)")
    p.add_argument("--mode", choices=MODES, default=None,
                   help="linear probe (frozen encoder; default), full fine-tune, partial "
                        "(last --unfreeze units) or lora (ViT encoders)")
    p.add_argument("--unfreeze", type=int, default=None, metavar="K")
    p.add_argument("--lora-rank", type=int, default=None, metavar="R")
    p.add_argument("--dataset", action="append", default=None, dest="datasets",
                   metavar="NAME", help="keep only this dataset of a corpus (repeatable)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--patience", type=int, default=None, help="early-stopping patience")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="head learning rate")
    p.add_argument("--encoder-lr", type=float, default=None)
    p.add_argument("--label-fraction", type=float, default=None, metavar="F",
                   help="keep this fraction of the training groups (label efficiency)")
    p.add_argument("--max-images", type=int, default=None, metavar="N",
                   help="cap every split at N images (seeded whole groups)")
    p.add_argument("--max-seconds", type=float, default=None, help="training time budget")
    p.add_argument("--no-augment", action="store_const", const=False, default=None,
                   dest="augment")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--resume", action="store_true", help="continue from OUT/state.pt")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "finetune", help="fine-tune an encoder for classification or segmentation",
        description="Downstream transfer: a classifier or a prompt-free segmenter on top of "
                    "any checkpoint's image encoder, with a report (JSON, Markdown, plots).")
    sub = p.add_subparsers(dest="task", metavar="TASK", required=True)
    c = sub.add_parser("classify", help="image classification (image-level labels)")
    _common(c, folders=True)
    c.add_argument("--head", choices=("linear", "attention"), default=None)
    c.add_argument("--label-field", default=None, help="image field with the class (label)")
    c.add_argument("--balance", choices=("loss", "sampler", "none"), default=None,
                   help="class imbalance: weighted loss (default), balanced sampler, none")
    c.set_defaults(func=_run)
    s = sub.add_parser("segment", help="prompt-free segmentation of the annotated structures")
    _common(s, folders=False)
    s.add_argument("--structure", action="append", default=None, dest="structures",
                   metavar="NAME", help="segment this structure (repeatable; default: all)")
    s.add_argument("--decoder-width", type=int, default=None, metavar="C",
                   help="channels of the segmentation decoder (default 64; 32: ~3x cheaper)")
    s.set_defaults(func=_run)
    pr = sub.add_parser("predict", help="apply a saved fine-tuned run to new images",
                        description="Class probabilities (predictions.csv) or label-map PNGs "
                                    "(masks/<stem>.png, pixel value = class index, named in "
                                    "structures.json) from a run folder's weights.")
    pr.add_argument("run_dir", metavar="RUN_DIR", help="folder written by finetune classify "
                                                        "or segment (finetune.json + weights)")
    pr.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    pr.add_argument("--out", required=True, help="output folder")
    pr.add_argument("--batch-size", type=int, default=8)
    pr.add_argument("--device", default="cpu")
    pr.set_defaults(func=_predict)


def _predict(args: argparse.Namespace) -> int:
    from ultrasam.finetune.predict import predict_files

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    r = predict_files(args.run_dir, args.images, args.out, batch_size=args.batch_size,
                      device=args.device)
    print(f"{r['task']}: {r['n_images']} image(s) -> {args.out}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from ultrasam.finetune import classify, segment

    skip = {"command", "task", "func", "verbose", "data", "out", "resume"}
    options = {k: v for k, v in vars(args).items() if k not in skip and v is not None}
    fn = classify if args.task == "classify" else segment
    data = args.data[0] if len(args.data) == 1 else args.data
    result = fn(data, args.out, resume=args.resume, **options)
    print(f"wrote {args.out}/report.md (best epoch {result['best_epoch']}, "
          f"{result['stopped']})")
    return 0
