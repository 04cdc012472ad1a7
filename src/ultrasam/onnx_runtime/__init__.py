"""Torch-free inference over exported ONNX graphs (numpy + onnxruntime + Pillow only).

Nothing in this package may import torch, directly or through another ultrasam module
(``ultrasam.io`` is torch-free and allowed): a deployment installs ``onnxruntime``, not PyTorch.
The public entry point is :class:`ultrasam.onnx.OnnxPredictor`.
"""
