"""``preprocess.json``: how a client turns an image into the encoder's ``image`` input.

Keys (values on the 0-255 scale, as in SAM): ``input_size`` S; ``resize`` "longest_side"
(SAM: scale so the longest side is S, rounding each side to the nearest integer) or "square"
(MedSAM: both sides to S); ``interpolation`` of that resize on the uint8 RGB image (Pillow's
"bilinear" or "bicubic"); ``mean`` / ``std`` per channel: ``(pixel - mean) / std`` in float32;
``pad`` "bottom_right" with zeros to S x S after normalising; ``channels`` "RGB";
``mask_threshold``: a logit above it is foreground.
"""

from __future__ import annotations

from typing import Any

from ..config import ModelConfig

PREPROCESS_KEYS = ("input_size", "resize", "interpolation", "mean", "std", "pad", "channels",
                   "mask_threshold")


def preprocess_spec(config: ModelConfig, mask_threshold: float = 0.0) -> dict[str, Any]:
    """The ``preprocess.json`` of a model with this config."""
    if config.preprocessing == "medsam":
        # MedSAM's min-max scaling is inside the encoder graph (see graphs.EncoderGraph).
        resize, interpolation = "square", "bicubic"
        mean, std = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    else:
        resize, interpolation = "longest_side", "bilinear"
        mean, std = [float(v) for v in config.pixel_mean], [float(v) for v in config.pixel_std]
    return {"input_size": int(config.img_size), "resize": resize,
            "interpolation": interpolation, "mean": mean, "std": std, "pad": "bottom_right",
            "channels": "RGB", "mask_threshold": float(mask_threshold)}
