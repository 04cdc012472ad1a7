"""Inference layer: what runs a loaded model on images — the :class:`Predictor` (``predictor``),
mask refinement (``refine``), geometry transforms (``transforms``), prompt validation
(``prompt_checks``), file prediction (``predict_files``, ``batch/``), tracking (``tracking``,
``track_files``), measurements, the demo, and the torch-free ONNX runtime (``onnx/``).

Sits above the model and weights layers and below data/train/evaluate; modules here import
only from ``ultrasam.config``, ``ultrasam.errors``, ``ultrasam.io``, ``ultrasam.modeling``,
``ultrasam.weights`` and each other (see docs/architecture.md). This file imports nothing:
``ultrasam.inference.onnx`` must stay importable without torch.
"""
