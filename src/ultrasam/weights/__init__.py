"""Weights layer: checkpoint formats, safe loading and saving, SAM <-> UltraSam conversion, and
the bundled default model (``default/``: fp16 safetensors, ``config.json``, model card).

Sits above ``ultrasam.modeling`` (it builds the network a checkpoint describes) and below
``ultrasam.inference``. The public entry points are re-exported by the package front door:
``ultrasam.load_model``, ``ultrasam.save_native``, ``ultrasam.convert_checkpoint``,
``ultrasam.checkpoint_info`` (defined in :mod:`ultrasam.weights.checkpoints`). Nothing is
imported here, so reading a file's format never loads more than it needs.
"""
