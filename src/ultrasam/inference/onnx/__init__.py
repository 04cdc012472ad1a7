"""Torch-free deployment: :class:`OnnxPredictor` runs an `ultrasam export onnx` folder with
numpy, ONNX Runtime and Pillow only (no PyTorch import, direct or indirect).

Nothing in this package may import torch, directly or through another ultrasam module: it
imports only ``ultrasam.io`` (torch-free), ``ultrasam.errors`` and
``ultrasam.inference.prompt_checks`` (numpy only), and ``ultrasam.inference/__init__.py`` imports
nothing, so that a deployment installs ``onnxruntime``, not PyTorch. The graphs themselves are
written by :mod:`ultrasam.export.onnx_export`.

>>> from ultrasam.inference.onnx import OnnxPredictor
>>> predictor = OnnxPredictor("exported/")          # doctest: +SKIP
>>> predictor.set_image("scan.png")                 # doctest: +SKIP
>>> masks, scores, logits = predictor.predict(box=[40, 30, 200, 180])  # doctest: +SKIP
"""

from __future__ import annotations

from .predictor import OnnxModel, OnnxModelConfig, OnnxPredictor

__all__ = ["OnnxModel", "OnnxModelConfig", "OnnxPredictor"]
