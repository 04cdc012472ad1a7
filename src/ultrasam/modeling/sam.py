"""The composed model: image encoder + prompt encoder + mask decoder (differentiable).

Conveniences (numpy I/O, thresholds, resizing of user images) live in the predictor; everything
here is a plain differentiable function of tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder


class Sam(nn.Module):
    """A SAM-family model whose sub-module and parameter names are Meta's.

    ``config`` records the architecture and the behaviour switches that travel with weights
    (UltraSam's doubled decoder residual, the preprocessing a checkpoint expects).
    """

    mask_threshold: float = 0.0

    def __init__(self, config: ModelConfig, image_encoder: nn.Module,
                 prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder) -> None:
        super().__init__()
        self.config = config
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        # Not persistent: none of the released checkpoints store them.
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(-1, 1, 1), False)
        self.mask_decoder.transformer.set_doubled_mlp_residual(config.doubled_mlp_residual)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def img_size(self) -> int:
        return self.config.img_size

    # ----------------------------------------------------------------------------- images
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
