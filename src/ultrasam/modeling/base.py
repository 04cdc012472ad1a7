"""What every promptable model shares: input geometry, preprocessing and mask upsampling.

Two families implement it: :class:`~ultrasam.modeling.sam.Sam` (late fusion: a heavy image
embedding, a cheap prompt decoder) and :class:`~ultrasam.modeling.fusion.FusionNet` (early
fusion: prompts enter the network right after a cheap stem). The predictor, refinement and
evaluation talk to this interface only: ``encode`` once per image, ``decode`` per prompt batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig


class PromptableModel(nn.Module):
    """Base class: ``encode(x)`` -> per-image features, ``decode(features, prompts...)`` ->
    (low-res logits P x M x L x L, predicted IoU P x M), with L = ``config.mask_size``."""

    mask_threshold: float = 0.0
    # True when a prompt padded with label -1 points (at 0, 0) and, lacking a box, given a box
    # of -1s decodes exactly as the prompt alone, so prompts of different layouts may share one
    # decode (see ultrasam.inference.prompt_batch). SAM attends to padding tokens: False.
    exact_prompt_padding: bool = False

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        # Not persistent: none of the released checkpoints store them.
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(-1, 1, 1), False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the weights (a model cast to bf16/fp16 takes inputs of that dtype)."""
        return next(self.parameters()).dtype

    @property
    def img_size(self) -> int:
        return self.config.img_size

    @property
    def embedding_shape(self) -> tuple[int, int, int]:
        """C x h x w of one image's features as returned by :meth:`encode`."""
        g = self.config.embed_size
        return (self.config.prompt_embed_dim, g, g)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Resized images B x 3 x h x w (0-255, h, w <= img_size) -> padded model input.

        SAM: ImageNet normalisation, zero padding at the bottom/right. MedSAM: min-max scaling
        of each image to [0, 1] (its input is already resized to the full square).
        """
        if self.config.preprocessing == "medsam":
            lo = x.amin(dim=(1, 2, 3), keepdim=True)
            hi = x.amax(dim=(1, 2, 3), keepdim=True)
            x = (x - lo) / torch.clamp(hi - lo, min=1e-8)
        else:
            x = (x - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        return F.pad(x, (0, self.img_size - w, 0, self.img_size - h))

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def decode(self, image_embeddings: torch.Tensor, point_coords: torch.Tensor | None = None,
               point_labels: torch.Tensor | None = None, boxes: torch.Tensor | None = None,
               mask_inputs: torch.Tensor | None = None, multimask_output: bool = True,
               image_index: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, images: torch.Tensor, point_coords: torch.Tensor | None = None,
                point_labels: torch.Tensor | None = None, boxes: torch.Tensor | None = None,
                mask_inputs: torch.Tensor | None = None, multimask_output: bool = True,
                image_index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded input images B x 3 x S x S + prompts -> (logits P x M x L x L, iou P x M)."""
        return self.decode(self.encode(images), point_coords, point_labels, boxes, mask_inputs,
                           multimask_output, image_index)

    def postprocess_masks(self, masks: torch.Tensor, input_size: tuple[int, int],
                          original_size: tuple[int, int]) -> torch.Tensor:
        """Low-res logits B x M x L x L -> logits at the original image size (bilinear).

        SAM: upsample to the padded input square, crop the padding, resize to the original.
        MedSAM: its input is the whole square, so no crop.
        """
        masks = F.interpolate(masks, (self.img_size, self.img_size), mode="bilinear",
                              align_corners=False)
        masks = masks[..., : input_size[0], : input_size[1]]
        return F.interpolate(masks, original_size, mode="bilinear", align_corners=False)
