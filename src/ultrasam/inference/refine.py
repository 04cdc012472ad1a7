"""UltraSam's two-pass inference schedule ("refinement"), shared by the predictor and training.

Pass 1 decodes the prompt with the single-mask output (mask token 0). Pass 2 decodes again with
the pass-1 low-res logits as the mask prompt and the multimask outputs (tokens 1-3), keeping
the one with the highest predicted IoU. A point-only prompt is replaced in pass 2 by the box of
its pass-1 mask (x2 = last foreground column + 1); prompts that contain a box keep their prompt.
A prompt whose pass-1 mask is empty keeps its points (there is no box to derive).

The derived box is fed to the prompt encoder minus 0.5 px, because our prompt encoder (Meta's)
adds the +0.5 pixel-centre shift to every coordinate while UltraSam applies that shift only to
user prompts in its data pipeline, never to the box it derives: the shift is applied once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..modeling.sam import Sam


@dataclass
class RefineOutput:
    """Both passes of the schedule, all P-first.

    pass1_logits: P x 1 x L x L, pass1_iou: P x 1 (token 0);
    pass2_logits: P x M x L x L, pass2_iou: P x M (tokens 1-3);
    logits: P x 1 x L x L and iou: P x 1, the pass-2 output with the highest predicted IoU.
    """

    pass1_logits: torch.Tensor
    pass1_iou: torch.Tensor
    pass2_logits: torch.Tensor
    pass2_iou: torch.Tensor
    logits: torch.Tensor
    iou: torch.Tensor


def boxes_from_logits(logits: torch.Tensor, frame: int,
                      input_sizes: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes (P x 4 XYXY in the model frame, x2 = last column + 1) of thresholded masks.

    logits: P x 1 x L x L, upsampled to ``frame`` x ``frame`` (bilinear) before thresholding at 0;
    input_sizes: P x 2 (h, w) of the valid, unpadded region (the padding is ignored).
    Returns (boxes, non_empty P bool).
    """
    with torch.no_grad():
        masks = F.interpolate(logits.float(), (frame, frame), mode="bilinear",
                              align_corners=False)[:, 0] > 0
        if input_sizes is not None:
            rows = torch.arange(frame, device=masks.device)
            valid_r = rows[None, :] < input_sizes[:, 0:1]
            valid_c = rows[None, :] < input_sizes[:, 1:2]
            masks = masks & valid_r[:, :, None] & valid_c[:, None, :]
        any_r = masks.any(dim=2)
        any_c = masks.any(dim=1)
        non_empty = any_r.any(dim=1)
        idx = torch.arange(frame, device=masks.device, dtype=torch.float32)
        big = torch.full_like(idx, float(frame))
        y1 = torch.where(any_r, idx, big).amin(dim=1)
        x1 = torch.where(any_c, idx, big).amin(dim=1)
        y2 = torch.where(any_r, idx, -big).amax(dim=1) + 1
        x2 = torch.where(any_c, idx, -big).amax(dim=1) + 1
        boxes = torch.stack([x1, y1, x2, y2], dim=1)
    return boxes, non_empty


def refine_two_pass(model: Sam, image_embeddings: torch.Tensor,
                    point_coords: torch.Tensor | None, point_labels: torch.Tensor | None,
                    boxes: torch.Tensor | None, image_index: torch.Tensor | None = None,
                    input_sizes: torch.Tensor | None = None,
                    mask_inputs: torch.Tensor | None = None,
                    decode: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None
                    ) -> RefineOutput:
    """Run both passes for P prompts (same layouts as :meth:`Sam.decode`).

    Differentiable through both passes (pass 2 receives pass-1 logits, not detached), so
    training can put its loss on both. ``decode(point_coords, point_labels, boxes,
    mask_inputs, multimask_output)`` replaces ``model.decode`` on these embeddings (the
    predictor passes its cached fast path).
    """
    if decode is None:
        def decode_rows(rows, c, lab, b, m, multimask):  # type: ignore[no-untyped-def]
            # ``rows``: the prompts decoded (None: all); they keep their images.
            sub = image_index
            if rows is not None and image_index is not None:
                sub = image_index[rows]
            elif rows is not None and image_embeddings.shape[0] > 1:
                sub = rows  # one prompt per image: prompt i is on image i
            return model.decode(image_embeddings, c, lab, b, m, multimask_output=multimask,
                                image_index=sub)
    else:
        custom = decode

        def decode_rows(rows, c, lab, b, m, multimask):  # type: ignore[no-untyped-def]
            return custom(c, lab, b, m, multimask)
    logits1, iou1 = decode_rows(None, point_coords, point_labels, boxes, mask_inputs, False)
    p = logits1.shape[0]
    # Which prompts already contain a box (Meta layout, or corners labelled 2/3)?
    has_box = torch.zeros(p, dtype=torch.bool, device=logits1.device)
    if boxes is not None:
        has_box[:] = True
    elif point_labels is not None:
        has_box = ((point_labels == 2) | (point_labels == 3)).any(dim=1)
    derived, non_empty = boxes_from_logits(logits1, model.img_size, input_sizes)
    use_derived = ~has_box & non_empty
    if not bool(use_derived.any()):
        # Box prompts and prompts with an empty first mask keep their prompt: pass 1's tokens.
        logits2, iou2 = decode_rows(None, point_coords, point_labels, boxes, logits1, True)
    elif bool(use_derived.all()):
        logits2, iou2 = decode_rows(None, None, None, derived - 0.5, logits1, True)
    else:
        # Two groups, each decoded with its own tokens ([corner, corner] for a derived box,
        # the original prompt otherwise), so that a prompt's output does not depend on which
        # other prompts share the call: padding tokens would change the decoder's attention.
        d = torch.nonzero(use_derived).flatten()
        k = torch.nonzero(~use_derived).flatten()
        ld, idd = decode_rows(d, None, None, derived[d] - 0.5, logits1[d], True)
        lk, idk = decode_rows(k, None if point_coords is None else point_coords[k],
                              None if point_labels is None else point_labels[k],
                              None if boxes is None else boxes[k], logits1[k], True)
        logits2 = ld.new_empty((p, *ld.shape[1:]))
        iou2 = idd.new_empty((p, *idd.shape[1:]))
        logits2[d], logits2[k] = ld, lk
        iou2[d], iou2[k] = idd, idk
    best = iou2.argmax(dim=1)
    rows = torch.arange(p, device=best.device)
    return RefineOutput(logits1, iou1, logits2, iou2, logits2[rows, best][:, None],
                        iou2[rows, best][:, None])
