"""Export layer: ONNX graphs (encoder + decoder with Meta's SAM decoder I/O) for deployment.

``export_onnx`` is imported from :mod:`ultrasam.export.onnx_export`; this package imports
nothing heavy on its own.
"""

# The default ONNX opset: 17 is the first with LayerNormalization.
DEFAULT_OPSET = 17
