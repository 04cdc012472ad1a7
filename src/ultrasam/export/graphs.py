"""The modules traced into ONNX: the encoder graph and the decoder graph with Meta's SAM I/O.

Decoder contract (``segment_anything/utils/onnx.py``'s ``SamOnnxModel``, all float32):

* inputs ``image_embeddings`` 1 x C x h x w, ``point_coords`` 1 x N x 2 (xy in the resized,
  padded input frame), ``point_labels`` 1 x N (-1 padding, 0 negative, 1 positive, 2 / 3 box
  top-left / bottom-right), ``mask_input`` 1 x 1 x 4h x 4w logits, ``has_mask_input`` (1,),
  ``orig_im_size`` (2,) = (H, W);
* outputs ``masks`` 1 x M x H x W (logits at the original size, or 0/1 when built with
  ``return_logits=False``), ``iou_predictions`` 1 x M, ``low_res_masks`` 1 x M x 4h x 4w;
  M = 4 (the single-mask token first, then the three multimask tokens), or 1 with
  ``single_mask`` (Meta's selection rule).

Both model families fit it: a SAM's embedding is its ViT / conv encoder's output; a FusionNet's
is its stem features (see ``modeling.fusion``), and its prompts are rasterised inside the graph.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..modeling.base import PromptableModel
from ..modeling.fusion import FusionNet, corner_boxes
from ..modeling.sam import Sam


class EncoderGraph(nn.Module):
    """``image`` 1 x 3 x S x S (made as ``preprocess.json`` says) -> ``image_embeddings``.

    MedSAM scales each image by its own min and max, which no fixed mean / std can state, so
    that step lives in the graph (``preprocess.json`` then says mean 0, std 1: feed the
    resized 0-255 image); SAM's fixed normalisation and padding are the client's.
    """

    def __init__(self, model: PromptableModel) -> None:
        super().__init__()
        self.model = model
        self.minmax = model.config.preprocessing == "medsam"

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image
        if self.minmax:
            lo = x.amin(dim=(1, 2, 3), keepdim=True)
            hi = x.amax(dim=(1, 2, 3), keepdim=True)
            x = (x - lo) / torch.clamp(hi - lo, min=1e-8)
        return self.model.encode(x)


class DecoderGraph(nn.Module):
    """Meta's decoder contract over any :class:`PromptableModel` (see the module docstring)."""

    def __init__(self, model: PromptableModel, single_mask: bool = False,
                 return_logits: bool = True) -> None:
        super().__init__()
        if not isinstance(model, (Sam, FusionNet)):
            raise TypeError(f"no ONNX decoder for {type(model).__name__}")
        self.model = model
        self.single_mask = single_mask
        self.return_logits = return_logits
        self.img_size = model.img_size
        # MedSAM's inference resizes the low-res logits once, straight to the original size
        # (its input is the whole square: no padding to crop); SAM goes through the square.
        self.medsam = model.config.preprocessing == "medsam"

    def forward(self, image_embeddings: torch.Tensor, point_coords: torch.Tensor,
                point_labels: torch.Tensor, mask_input: torch.Tensor,
                has_mask_input: torch.Tensor, orig_im_size: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if isinstance(self.model, Sam):
            low_res, iou = self._decode_sam(image_embeddings, point_coords, point_labels,
                                            mask_input, has_mask_input)
        else:
            low_res, iou = self._decode_fusion(image_embeddings, point_coords, point_labels,
                                               mask_input, has_mask_input)
        if self.single_mask:
            low_res, iou = self._select_single(low_res, iou, point_labels)
        masks = self._upscale(low_res, orig_im_size)
        if not self.return_logits:
            masks = (masks > self.model.mask_threshold).to(torch.float32)
        return masks, iou, low_res

    # ------------------------------------------------------------------------- families
    def _decode_sam(self, emb: torch.Tensor, coords: torch.Tensor, labels: torch.Tensor,
                    mask_input: torch.Tensor, has_mask: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.model
        assert isinstance(model, Sam)
        pe = model.prompt_encoder
        # The client lays out the tokens (points, then box corners or one padding point),
        # exactly the tokens SAM's prompt encoder makes from the same prompt.
        sparse = pe.embed_points(coords, labels, pad=False)
        # has_mask_input blends the mask embedding with the learned "no mask" embedding.
        gate = has_mask.reshape(-1, 1, 1, 1)
        dense = gate * pe.mask_downscaling(mask_input) \
            + (1 - gate) * pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return model.mask_decoder.predict_masks(emb, pe.get_dense_pe(), sparse, dense)

    def _decode_fusion(self, emb: torch.Tensor, coords: torch.Tensor, labels: torch.Tensor,
                       mask_input: torch.Tensor, has_mask: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.model
        assert isinstance(model, FusionNet)
        # Corners labelled 2 / 3 become the box (no corners: an empty box), branch-free.
        boxes = corner_boxes(coords, labels)
        logits, iou = model.decode_all(emb, coords, labels, boxes, mask_input,
                                       mask_present=has_mask)
        return logits, iou

    # ---------------------------------------------------------------------- post-steps
    @staticmethod
    def _select_single(masks: torch.Tensor, iou: torch.Tensor, labels: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Meta's rule: with more than two prompt entries (padding included) the single-mask
        token, otherwise the best multimask output. The entries are counted from the labels
        (not ``point_coords.shape[1]`` in float arithmetic, which the dynamo exporter
        rejects)."""
        n = torch.ones_like(labels).sum(dim=1, keepdim=True)  # 1 x 1, float
        weight = torch.zeros_like(iou[:1])
        weight[:, 0] = 1000.0
        best = torch.argmax(iou + (n - 2.5) * weight, dim=1)
        rows = torch.arange(masks.shape[0])
        return masks[rows, best][:, None], iou[rows, best][:, None]

    def _upscale(self, low_res: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        """Low-res logits -> the original size as the predictor does: SAM through the input
        square with its padding cropped (``PromptableModel.postprocess_masks``; the resized
        size in float64 like ``transforms.ResizeLongestSide``, as float32 could round a side
        differently), MedSAM in one resize (its ``MedSAM_Inference.py``)."""
        size = orig_im_size.to(torch.float64)
        hw = size.to(torch.int64)
        masks = low_res
        if not self.medsam:
            s = self.img_size
            masks = F.interpolate(masks, (s, s), mode="bilinear", align_corners=False)
            scale = s / torch.max(size)
            pre = torch.floor(size * scale + 0.5).to(torch.int64)
            masks = masks[..., : pre[0], : pre[1]]
        return F.interpolate(masks, size=(hw[0], hw[1]), mode="bilinear", align_corners=False)
