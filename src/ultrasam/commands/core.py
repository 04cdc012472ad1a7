"""Core verbs: predict, info, convert, demo."""

from __future__ import annotations

import argparse
import json
import sys

FORMATS = ("sam", "medsam", "ultrasam", "native")


def _predict(args: argparse.Namespace) -> int:
    from ..segment import Prompt, parse_box, parse_point, predict_files

    prompt = Prompt()
    for text in args.point or []:
        x, y, label = parse_point(text)
        prompt.points.append((x, y))
        prompt.labels.append(label)
    if args.box:
        prompt.box = parse_box(args.box)
    predict_files(args.images, args.out, prompt, checkpoint=args.checkpoint, format=args.format,
                  frame=args.frame, slice=args.slice, axis=args.axis, refine=args.refine,
                  device=args.device)
    return 0


def _info(args: argparse.Namespace) -> int:
    from ..checkpoints import CheckpointError, checkpoint_info

    try:
        info = checkpoint_info(args.checkpoint, format=args.format)
    except CheckpointError as e:
        first = str(e).splitlines()[0]
        print(f"ultrasam info: refused: {first}", file=sys.stderr)
        return 1
    d = info.as_dict()
    if args.json:
        print(json.dumps(d, indent=1))
    else:
        for k, v in d.items():
            print(f"{k}: {v}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from ..checkpoints import convert_checkpoint

    out = convert_checkpoint(args.src, args.dst, format=args.format)
    print(f"wrote {out}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    return run_demo(args.out)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="segment images from point / box prompts")
    p.add_argument("images", nargs="+", help="PNG/JPEG/TIFF/BMP, DICOM or NIfTI files")
    p.add_argument("--checkpoint", help="checkpoint file or native folder (default: bundled)")
    p.add_argument("--format", choices=FORMATS, help="checkpoint format (default: detected)")
    p.add_argument("--frame", type=int, help="DICOM cine frame (0-based)")
    p.add_argument("--slice", type=int, help="NIfTI slice index along --axis")
    p.add_argument("--axis", type=int, default=0, help="NIfTI slicing axis (0, 1 or 2)")
    p.add_argument("--point", action="append", metavar="X,Y[,LABEL]",
                   help="point prompt in pixels; LABEL 1 foreground (default) or 0 background")
    p.add_argument("--box", metavar="X0,Y0,X1,Y1", help="box prompt in pixels")
    p.add_argument("--refine", action="store_true", help="UltraSam's two-pass refinement")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=_predict)

    p = sub.add_parser("info", help="describe a checkpoint (or refuse an unsafe one)")
    p.add_argument("checkpoint")
    p.add_argument("--format", choices=FORMATS)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_info)

    p = sub.add_parser("convert", help="convert a checkpoint to the native folder format")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--format", choices=FORMATS)
    p.set_defaults(func=_convert)

    p = sub.add_parser("demo", help="segment a generated ultrasound phantom with the default "
                                    "model")
    p.add_argument("--out", default="ultrasam-demo")
    p.set_defaults(func=_demo)
