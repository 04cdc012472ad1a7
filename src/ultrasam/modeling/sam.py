"""The composed model: image encoder + prompt encoder + mask decoder (differentiable).

Conveniences (numpy I/O, thresholds, resizing of user images) live in the predictor; everything
here is a plain differentiable function of tensors.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from .base import PromptableModel
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder


class Sam(PromptableModel):
    """A SAM-family model whose sub-module and parameter names are Meta's.

    ``config`` records the architecture and the behaviour switches that travel with weights
    (UltraSam's doubled decoder residual, the preprocessing a checkpoint expects).
    """

    def __init__(self, config: ModelConfig, image_encoder: nn.Module,
                 prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder) -> None:
        super().__init__(config)
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.mask_decoder.transformer.set_doubled_mlp_residual(config.doubled_mlp_residual)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Padded model input B x 3 x S x S -> image embeddings B x C x S/16 x S/16."""
        return self.image_encoder(x)

    # ---------------------------------------------------------------------------- prompts
    def decode(self, image_embeddings: torch.Tensor, point_coords: torch.Tensor | None = None,
               point_labels: torch.Tensor | None = None, boxes: torch.Tensor | None = None,
               mask_inputs: torch.Tensor | None = None, multimask_output: bool = True,
               image_index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode P prompts against B image embeddings (B x C x h x w).

        point_coords: P x N x 2 xy in the model-input frame; point_labels: P x N (1 fg, 0 bg,
        -1 padding, 2/3 box corners); boxes: P x 4 XYXY; mask_inputs: P x 1 x 4h x 4w logits;
        image_index: P, the image of each prompt (see ``MaskDecoder.forward``).
        Returns low-res logits P x M x 4h x 4w and predicted IoU P x M.
        """
        points = None
        if point_coords is not None:
            if point_labels is None:
                raise ValueError("point_labels are required with point_coords")
            points = (point_coords, point_labels)
        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=mask_inputs)
        return self.mask_decoder(image_embeddings, self.prompt_encoder.get_dense_pe(), sparse,
                                 dense, multimask_output=multimask_output,
                                 image_index=image_index)
