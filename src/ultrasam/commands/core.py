"""Core verbs: predict, info, convert, demo."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

FORMATS = ("sam", "medsam", "ultrasam", "native")


def _predict(args: argparse.Namespace) -> int:
    from ..inference.batch import Prompt, parse_box, parse_point, predict_batch

    prompt = Prompt()
    for text in args.point or []:
        x, y, label = parse_point(text)
        prompt.points.append((x, y))
        prompt.labels.append(label)
    if args.box:
        prompt.box = parse_box(args.box)
    out = Path(args.out)

    def echo(record: dict, resumed: bool) -> None:
        if record["status"] != "ok":
            _echo(f"ultrasam predict: failed: {record['image']}: {record['error']}", sys.stderr)
        elif not args.quiet and not resumed:
            files = [o["mask"] for o in record["objects"]] + list(record["outputs"].values())
            for rel in dict.fromkeys(files):
                _echo(str(out / rel), sys.stdout)

    summary = predict_batch(
        args.images, out, prompt, checkpoint=args.checkpoint, format=args.format,
        device=args.device, frame=args.frame, slice=args.slice, axis=args.axis,
        refine=args.refine, candidates=args.candidates, polygons=args.polygons,
        overlay=not args.no_overlay, dicom_seg=args.dicom_seg, nifti_labels=args.nifti,
        coco_prompt=args.coco_prompt, image_root=args.image_root, overwrite=args.overwrite,
        workers=args.workers, threads=args.threads, engine=args.engine,
        scheduler=args.scheduler, progress=not args.quiet and sys.stderr.isatty(),
        on_record=echo, backend=args.backend)
    for path in summary.label_volumes:
        _echo(str(path), sys.stdout)
    print(f"ultrasam predict: {summary.line()}", file=sys.stderr)
    return 1 if summary.failed else 0


def _echo(line: str, stream: Any) -> None:
    """Print without breaking the progress bar (tqdm is optional)."""
    try:
        from tqdm import tqdm
    except ImportError:
        print(line, file=stream)
    else:
        tqdm.write(line, file=stream)


def _info(args: argparse.Namespace) -> int:
    from ..weights.checkpoints import CheckpointError, checkpoint_info

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
    from ..weights.checkpoints import convert_checkpoint

    out = convert_checkpoint(args.src, args.dst, format=args.format)
    print(f"wrote {out}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from ..inference.demo import run_demo

    return run_demo(args.out)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="segment images, folders, manifests or COCO files from prompts",
        description="Segment images from point / box / mask prompts. INPUTS are image files "
                    "(PNG/JPEG/TIFF/BMP, DICOM, NIfTI, MetaImage), folders (searched "
                    "recursively), globs, CSV/JSONL manifests (path, frame, slice, axis, id, "
                    "points, labels, box, mask per row) or COCO JSON files (their boxes or "
                    "mask points become the prompts). Outputs mirror the input folders under "
                    "--out; results.jsonl and results.coco.json list every item. Bad items "
                    "are reported and skipped (exit code 1); a rerun skips items already done.")
    p.add_argument("images", nargs="+", metavar="INPUTS",
                   help="files, folders, globs, .csv/.jsonl manifests or COCO .json files")
    p.add_argument("--checkpoint", help="checkpoint file or native folder (default: bundled)")
    p.add_argument("--format", choices=FORMATS, help="checkpoint format (default: detected)")
    p.add_argument("--frame", type=int, help="DICOM cine frame (0-based)")
    p.add_argument("--slice", type=int, help="NIfTI slice index along --axis")
    p.add_argument("--axis", type=int, default=0, help="NIfTI slicing axis (0, 1 or 2)")
    p.add_argument("--point", action="append", metavar="X,Y[,LABEL]",
                   help="point prompt in pixels; LABEL 1 foreground (default) or 0 background")
    p.add_argument("--box", metavar="X0,Y0,X1,Y1", help="box prompt in pixels")
    p.add_argument("--refine", action="store_true", help="UltraSam's two-pass refinement")
    p.add_argument("--candidates", action="store_true",
                   help="also write all three multimask candidates of each object")
    p.add_argument("--polygons", action="store_true", help="add outline polygons to the JSON")
    p.add_argument("--no-overlay", action="store_true", help="do not write overlay pictures")
    p.add_argument("--dicom-seg", action="store_true",
                   help="write a DICOM SEG for DICOM inputs (needs ultrasam[dicomseg])")
    p.add_argument("--nifti", action="store_true",
                   help="write a NIfTI label volume per NIfTI input")
    p.add_argument("--coco-prompt", choices=("box", "point"), default="box",
                   help="COCO inputs: prompt with each annotation's box or a point inside it")
    p.add_argument("--image-root", help="folder of a COCO file's images (default: beside it)")
    p.add_argument("--overwrite", action="store_true", help="redo items already done")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes, each loading the model once (default 1)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per worker (default 1: no oversubscribed cores)")
    p.add_argument("--engine", choices=("local", "dask"), default="local",
                   help="local processes, or Dask distributed (needs ultrasam[distributed])")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="address of a running Dask scheduler (default: a local cluster)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar (shown on a terminal) and no output paths")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                   help="onnx: --checkpoint is an `ultrasam export onnx` folder, run by ONNX "
                        "Runtime on the CPU (PyTorch not needed)")
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

    p = sub.add_parser("demo", help="segment an embedded real ultrasound scan (lymph node) "
                                    "with the bundled default model")
    p.add_argument("--out", default="ultrasam-demo")
    p.set_defaults(func=_demo)
