"""The network: SAM's image encoder, prompt encoder and mask decoder, with Meta's names."""

from .build import build_model
from .sam import Sam

__all__ = ["Sam", "build_model"]
