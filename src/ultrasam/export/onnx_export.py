"""``export_onnx``: any loadable model -> ``encoder.onnx``, ``decoder.onnx``, ``preprocess.json``
and ``README.md`` in one folder, ready for ONNX Runtime without PyTorch.

The graphs are traced with torch's TorchScript-based exporter: it records the decoder's output
size as a function of the ``orig_im_size`` input (Meta's contract), which the dynamo exporter
can only do through data-dependent shapes. Each graph is one self-contained file (weights
inside, no ``.onnx.data``); facts a runtime needs beyond the I/O names travel as ONNX metadata
(``ultrasam.*`` keys, see :data:`METADATA_VERSION`).
"""

from __future__ import annotations

import copy
import json
import logging
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import MissingDependencyError
from ..modeling.base import PromptableModel
from . import DEFAULT_OPSET
from .graphs import DecoderGraph, EncoderGraph
from .preprocess import preprocess_spec

log = logging.getLogger(__name__)

METADATA_VERSION = "ultrasam-onnx/1"
DECODER_INPUTS = ("image_embeddings", "point_coords", "point_labels", "mask_input",
                  "has_mask_input", "orig_im_size")
DECODER_OUTPUTS = ("masks", "iou_predictions", "low_res_masks")
QUANTIZE_MODES = ("int8",)
# Protobuf caps one ONNX file at 2 GiB; leave room for the graph itself.
SINGLE_FILE_BYTES = 2_000_000_000


@dataclass
class ExportResult:
    """Paths written and the export's self-check (max |ONNX - PyTorch| on a seeded input)."""

    out_dir: Path
    encoder: Path
    decoder: Path
    preprocess: Path
    readme: Path
    check: dict[str, float] = field(default_factory=dict)


def _require_onnx() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise MissingDependencyError("ONNX export needs the 'onnx' extra: pip install "
                                     "'ultrasam[onnx]'") from e
    return onnx, onnxruntime


def _prepare(model: PromptableModel | str | Path | None, format: str | None
             ) -> PromptableModel:
    if model is None or isinstance(model, (str, Path)):
        from ..weights.checkpoints import load_model

        return load_model(model, format=format)
    if not isinstance(model, PromptableModel):
        raise TypeError(f"export_onnx needs an ultrasam model or a checkpoint path, got "
                        f"{type(model).__name__}")
    if format is not None:
        raise ValueError("format applies to a checkpoint path, not to a model")
    return model


def _example_inputs(model: PromptableModel) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """A seeded image and one decoder call (a positive point, a box, a mask) on it."""
    g = torch.Generator().manual_seed(0)
    s = model.img_size
    image = torch.randn(1, 3, s, s, generator=g)
    with torch.no_grad():
        emb = EncoderGraph(model)(image)
    coords = torch.tensor([[[0.5 * s, 0.4 * s], [0.25 * s, 0.2 * s], [0.75 * s, 0.7 * s]]])
    labels = torch.tensor([[1.0, 2.0, 3.0]])
    m = model.config.mask_size
    mask = torch.randn(1, 1, m, m, generator=g)
    return image, (emb, coords, labels, mask, torch.ones(1), torch.tensor([0.75 * s, 1.0 * s]))


def _export(module: torch.nn.Module, args: tuple[torch.Tensor, ...], path: Path,
            inputs: tuple[str, ...], outputs: tuple[str, ...], opset: int,
            dynamic_axes: dict[str, dict[int, str]]) -> None:
    with warnings.catch_warnings():
        # The TorchScript exporter warns about every traced shape computation and about
        # its own deprecation; neither is actionable here.
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), dynamo=False, export_params=True,
                          input_names=list(inputs), output_names=list(outputs),
                          opset_version=opset, do_constant_folding=True,
                          dynamic_axes=dynamic_axes)


def _set_metadata(path: Path, meta: dict[str, Any]) -> None:
    onnx, _ = _require_onnx()
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = f"ultrasam.{key}", json.dumps(value)
    onnx.save(proto, str(path))


def _quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 quantization of MatMul / Gemm weights (activations quantized at run time).

    Convolutions stay float: ONNX Runtime's integer convolution was slower and less accurate
    than float on the CPUs measured (issue 16)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), op_types_to_quantize=["MatMul", "Gemm"],
                     weight_type=QuantType.QInt8, extra_options={"MatMulConstBOnly": True})


def _check(model: PromptableModel, encoder: Path, decoder: Path, image: torch.Tensor,
           dec_args: tuple[torch.Tensor, ...], single_mask: bool, return_logits: bool
           ) -> dict[str, float]:
    """Max absolute and relative differences of both graphs to PyTorch on the example."""
    _, ort = _require_onnx()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    enc = ort.InferenceSession(str(encoder), opts, providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(decoder), opts, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref_emb = EncoderGraph(model)(image).numpy()
        ref = [t.numpy() for t in DecoderGraph(model, single_mask, return_logits)(*dec_args)]
    emb = enc.run(None, {"image": image.numpy()})[0]
    out = dec.run(None, dict(zip(DECODER_INPUTS, (a.numpy() for a in dec_args))))

    def diffs(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
        err = float(np.abs(a - b).max()) if a.size else 0.0
        return err, err / max(float(np.abs(b).max()), 1e-12)

    result = {}
    for name, a, b in (("image_embeddings", emb, ref_emb),
                       *zip(("masks", "iou_predictions", "low_res_masks"), out, ref)):
        if a.shape != b.shape:
            raise RuntimeError(f"exported {name} has shape {a.shape}, PyTorch {b.shape}")
        result[f"{name}_max_abs"], result[f"{name}_max_rel"] = diffs(a, b)
    return result


def export_onnx(model: PromptableModel | str | Path | None, out_dir: str | Path, *,
                format: str | None = None, quantize: str | None = None,
                opset: int = DEFAULT_OPSET, single_mask: bool = False,
                return_logits: bool = True) -> ExportResult:
    """Export ``model`` (a model, a checkpoint path, or None for the bundled default model).

    ``quantize="int8"``: dynamic int8 MatMul / Gemm weights in both graphs.
    ``single_mask``: the decoder returns one mask by Meta's rule (M = 1) instead of all four
    (the single-mask token, then the three multimask tokens); ``return_logits=False``:
    ``masks`` holds 0/1 instead of logits. :class:`ultrasam.inference.onnx.OnnxPredictor` needs the
    default decoder (all four masks, logits).

    Raises:
        ValueError: unknown ``quantize``, an opset below 17, an fp32 encoder over ONNX's 2 GiB
        single-file limit (ViT-H: use ``quantize="int8"``).
        ImportError: the ``onnx`` extra is missing.
    """
    onnx, _ = _require_onnx()
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {list(QUANTIZE_MODES)} or None, got "
                         f"{quantize!r}")
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 17:
        raise ValueError(f"opset must be an integer >= 17 (LayerNormalization), got {opset!r}")
    source = model
    model = _prepare(model, format)
    if model.dtype != torch.float32 or model.training or model.device.type != "cpu":
        model = copy.deepcopy(model).float().cpu().eval()
    n_bytes = sum(p.numel() * 4 for p in model.parameters())
    if n_bytes > SINGLE_FILE_BYTES and quantize is None:
        raise ValueError(f"the fp32 model has {n_bytes / 1e9:.2f} GB of weights, over ONNX's "
                         "2 GiB single-file limit: export with quantize='int8' (--quantize int8)")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    image, dec_args = _example_inputs(model)
    enc_path, dec_path = out / "encoder.onnx", out / "decoder.onnx"
    points = {"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}}
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        # Graphs are written to a scratch folder first (a large one may need external data
        # until quantization folds it back into one file).
        raw_enc, raw_dec = Path(tmp) / "encoder.onnx", Path(tmp) / "decoder.onnx"
        _export(EncoderGraph(model).eval(), (image,), raw_enc, ("image",),
                ("image_embeddings",), opset, {})
        _export(DecoderGraph(model, single_mask, return_logits).eval(), dec_args, raw_dec,
                DECODER_INPUTS, DECODER_OUTPUTS, opset, points)
        for raw, final in ((raw_enc, enc_path), (raw_dec, dec_path)):
            if quantize == "int8":
                _quantize_int8(raw, final)
            else:
                final.write_bytes(raw.read_bytes())
    c = model.config
    meta = {"format": METADATA_VERSION, "variant": c.variant, "img_size": c.img_size,
            "mask_size": c.mask_size, "embedding_shape": list(model.embedding_shape),
            "preprocessing": c.preprocessing, "single_mask": single_mask,
            "return_logits": return_logits, "quantize": quantize,
            "mask_threshold": float(model.mask_threshold),
            "source": str(source) if isinstance(source, (str, Path)) else
            ("default" if source is None else "model")}
    _set_metadata(enc_path, meta)
    _set_metadata(dec_path, meta)
    for path in (enc_path, dec_path):
        onnx.checker.check_model(str(path))
    check = _check(model, enc_path, dec_path, image, dec_args, single_mask, return_logits)
    spec = preprocess_spec(c, float(model.mask_threshold))
    pre_path = out / "preprocess.json"
    pre_path.write_text(json.dumps(spec, indent=1) + "\n", encoding="utf-8")
    readme = out / "README.md"
    readme.write_text(_readme(meta, spec, check, opset), encoding="utf-8")
    log.info("exported %s to %s", c.variant, out)
    return ExportResult(out, enc_path, dec_path, pre_path, readme, check)


def _readme(meta: dict[str, Any], spec: dict[str, Any], check: dict[str, float],
            opset: int) -> str:
    s, m = meta["img_size"], meta["mask_size"]
    c, h, w = meta["embedding_shape"]
    n_masks = "1 (Meta's single-mask rule)" if meta["single_mask"] else \
        "4 (index 0: single-mask output; 1-3: the multimask outputs)"
    masks = "logits (foreground: > mask_threshold)" if meta["return_logits"] else \
        "0/1 (thresholded at mask_threshold)"
    if spec["resize"] == "square":
        recipe = (f"resize the RGB image to {s} x {s} ({spec['interpolation']}); as float32 "
                  "0-255 values (the encoder scales each image to [0, 1] by its own min and max)")
    else:
        recipe = (f"resize the RGB uint8 image so its longest side is {s} "
                  f"(each side rounded to the nearest integer, {spec['interpolation']}), "
                  "subtract `mean` and divide by `std` in float32, pad with zeros at the bottom "
                  f"and right to {s} x {s}")
    checks = "\n".join(f"| {k} | {v:.3g} |" for k, v in check.items())
    return f"""# ultrasam ONNX export: {meta['variant']}

Made by `ultrasam export onnx` (opset {opset}, quantization: {meta['quantize'] or 'none'}).
Run it with ONNX Runtime alone (`ultrasam.inference.onnx.OnnxPredictor`, or any SAM ONNX client).

## encoder.onnx

`image` 1 x 3 x {s} x {s} float32 -> `image_embeddings` 1 x {c} x {h} x {w}.
Make `image` as `preprocess.json` says: {recipe}. Channels first, RGB.

## decoder.onnx (Meta's SAM decoder contract)

Inputs, all float32: `image_embeddings` 1 x {c} x {h} x {w}; `point_coords` 1 x N x 2 (x, y in
the resized {s} x {s} frame: original pixel x new size / original size); `point_labels` 1 x N
(1 positive, 0 negative, -1 padding, 2 / 3 box top-left / bottom-right); `mask_input`
1 x 1 x {m} x {m} (an earlier `low_res_masks` output); `has_mask_input` (1,) 1 or 0;
`orig_im_size` (2,) = (H, W). Without a box, append one padding point (0, 0) labelled -1, as
SAM's prompt encoder does. N is dynamic.

Outputs: `masks` 1 x M x H x W {masks}; `iou_predictions` 1 x M; `low_res_masks`
1 x M x {m} x {m} logits; M = {n_masks}.

## Self-check at export (max difference to PyTorch on a seeded input)

| output | value |
|---|---|
{checks}

Not a medical device: research use only; outputs must be reviewed by a qualified person.
"""
