"""The network: SAM's image encoder, prompt encoder and mask decoder, with Meta's names."""

from .base import PromptableModel
from .build import build_model
from .fusion import FusionNet
from .sam import Sam

__all__ = ["FusionNet", "PromptableModel", "Sam", "build_model"]
