"""``ultrasam export onnx [CKPT] --out DIR``: ONNX graphs for deployment without PyTorch."""

from __future__ import annotations

import argparse

FORMATS = ("sam", "medsam", "ultrasam", "native")


def _export_onnx(args: argparse.Namespace) -> int:
    from ..export.onnx_export import export_onnx

    result = export_onnx(args.checkpoint, args.out, format=args.format, quantize=args.quantize,
                         opset=args.opset, single_mask=args.single_mask,
                         return_logits=not args.binary_masks)
    for path in (result.encoder, result.decoder, result.preprocess, result.readme):
        print(path)
    worst = max((v for k, v in result.check.items() if k.endswith("_max_rel")), default=0.0)
    print(f"ultrasam export: max relative difference to PyTorch on a test input: {worst:.2g}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from ..export import DEFAULT_OPSET  # the package itself imports nothing heavy

    p = sub.add_parser("export", help="export a model for deployment (ONNX)")
    formats = p.add_subparsers(dest="target", metavar="TARGET", required=True)
    o = formats.add_parser(
        "onnx", help="encoder.onnx + decoder.onnx (SAM's decoder I/O) + preprocess.json",
        description="Export the image encoder and the prompt decoder as two single-file ONNX "
                    "graphs; the decoder follows Meta's SAM ONNX contract, so SAM ONNX clients "
                    "work unchanged. Run them with `ultrasam predict --backend onnx DIR` or "
                    "ultrasam.inference.onnx.OnnxPredictor, which need onnxruntime but not "
                    "PyTorch.")
    o.add_argument("checkpoint", nargs="?", metavar="CKPT",
                   help="checkpoint file or native folder (default: the bundled model)")
    o.add_argument("--out", required=True, metavar="DIR", help="output folder")
    o.add_argument("--format", choices=FORMATS, help="checkpoint format (default: detected)")
    o.add_argument("--quantize", choices=("int8",),
                   help="int8 dynamic quantization of MatMul / Gemm weights")
    o.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset (default {DEFAULT_OPSET})")
    o.add_argument("--single-mask", action="store_true",
                   help="decoder returns one mask by Meta's rule instead of all four")
    o.add_argument("--binary-masks", action="store_true",
                   help="decoder 'masks' output holds 0/1 instead of logits")
    o.set_defaults(func=_export_onnx)
