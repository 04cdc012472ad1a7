"""Torch-free deployment: :class:`OnnxPredictor` runs an `ultrasam export onnx` folder with
numpy, ONNX Runtime and Pillow only (no PyTorch import, direct or indirect).

>>> from ultrasam.onnx import OnnxPredictor
>>> predictor = OnnxPredictor("exported/")          # doctest: +SKIP
>>> predictor.set_image("scan.png")                 # doctest: +SKIP
>>> masks, scores, logits = predictor.predict(box=[40, 30, 200, 180])  # doctest: +SKIP
"""

from __future__ import annotations

from .onnx_runtime.predictor import OnnxModel, OnnxModelConfig, OnnxPredictor

__all__ = ["OnnxModel", "OnnxModelConfig", "OnnxPredictor"]
