"""Prompt simulation for training: points, boxes, jitter, negatives, corrective clicks.

Conventions (shared with ``Sam.decode``):

- Coordinates are xy in the model-input frame (pixels of the resized image, before padding).
  A point at integer (x, y) denotes the centre of that pixel: the prompt encoder adds 0.5.
- Boxes are XYXY with the exclusive end (x2 = last column + 1), like COCO's x + w.
- Every prompt is a padded list of points: labels 1 foreground, 0 background, 2 / 3 a box's
  top-left / bottom-right corner, -1 padding. Boxes as two labelled points let box and point
  prompts of many images share one decode call.

Every random choice takes a ``torch.Generator``; the functions are pure otherwise. The loop
gives each image its own generator seeded from the image's position in the sampler, so a
prompt does not depend on which process or batch the image lands in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

PAD, NEG, POS, BOX_TL, BOX_BR = -1, 0, 1, 2, 3


@dataclass
class Prompts:
    """P prompts: ``coords`` P x N x 2 (float xy), ``labels`` P x N (long), ``mask_inputs``
    P x 1 x L x L logits or None, ``has_mask`` P (bool: use ``mask_inputs`` for this prompt),
    ``is_box`` P (bool: the prompt started as a box)."""

    coords: torch.Tensor
    labels: torch.Tensor
    mask_inputs: torch.Tensor | None
    has_mask: torch.Tensor
    is_box: torch.Tensor

    def __len__(self) -> int:
        return int(self.coords.shape[0])


def _rand(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=generator.device)


def boxes_from_masks(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Tight boxes of P x H x W masks: (P x 4 XYXY float with exclusive end, P bool non-empty).

    Empty masks get the box (0, 0, 0, 0) and ``False``.
    """
    if masks.ndim != 3:
        raise ValueError(f"masks must be P x H x W, got {tuple(masks.shape)}")
    m = masks.bool()
    rows = m.any(2)
    cols = m.any(1)
    valid = rows.any(1)
    h, w = m.shape[1:]
    ar_h = torch.arange(h, device=m.device)
    ar_w = torch.arange(w, device=m.device)
    y1 = torch.where(rows, ar_h, h).amin(1)
    y2 = torch.where(rows, ar_h, -1).amax(1) + 1
    x1 = torch.where(cols, ar_w, w).amin(1)
    x2 = torch.where(cols, ar_w, -1).amax(1) + 1
    boxes = torch.stack([x1, y1, x2, y2], 1).float()
    return torch.where(valid[:, None], boxes, torch.zeros_like(boxes)), valid


def jitter_boxes(boxes: torch.Tensor, amount: float, size: tuple[int, int],
                 generator: torch.Generator) -> torch.Tensor:
    """Move each coordinate by U(-amount, amount) x the box's width (x) or height (y).

    boxes P x 4 XYXY; size (h, w) of the frame the result is clipped to. The box keeps at
    least one pixel on each side.
    """
    if amount < 0:
        raise ValueError(f"box jitter must be >= 0, got {amount}")
    wh = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    noise = (_rand(tuple(boxes.shape), generator) * 2 - 1) * amount
    out = boxes + noise.to(boxes.device) * wh
    h, w = size
    x1 = out[:, 0].clamp(0, w - 1)
    y1 = out[:, 1].clamp(0, h - 1)
    x2 = torch.maximum(out[:, 2].clamp(0, w), x1 + 1)
    y2 = torch.maximum(out[:, 3].clamp(0, h), y1 + 1)
    return torch.stack([x1, y1, x2, y2], 1)


def sample_points(region: torch.Tensor, k: int, generator: torch.Generator
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` uniform random pixels of each P x H x W region (with replacement).

    Returns (P x k x 2 xy, each a pixel index plus U(-0.5, 0.5) sub-pixel jitter, and P bool:
    the region is non-empty). Points of empty regions are (0, 0) and must be padded.
    """
    if region.ndim != 3:
        raise ValueError(f"region must be P x H x W, got {tuple(region.shape)}")
    p, _, w = region.shape
    flat = region.flatten(1).float()
    valid = flat.sum(1) > 0
    weights = torch.where(valid[:, None], flat, torch.ones_like(flat))
    idx = torch.multinomial(weights, k, replacement=True, generator=generator)
    xy = torch.stack([idx % w, idx // w], -1).float()
    xy = xy + _rand((p, k, 2), generator).to(xy.device) - 0.5
    return torch.where(valid[:, None, None], xy, torch.zeros_like(xy)), valid


def negative_region(masks: torch.Tensor, boxes: torch.Tensor, margin: float = 0.25
                    ) -> torch.Tensor:
    """Where negative points are drawn: inside the box grown by ``margin`` x its size but
    outside the mask (the informative background next to the object); the whole background
    where that is empty. masks P x H x W bool, boxes P x 4 -> P x H x W bool."""
    p, h, w = masks.shape
    wh = (boxes[:, 2:] - boxes[:, :2]) * margin
    grown = torch.cat([boxes[:, :2] - wh, boxes[:, 2:] + wh], 1)
    ys = torch.arange(h, device=masks.device).view(1, h, 1)
    xs = torch.arange(w, device=masks.device).view(1, 1, w)
    inside = ((xs >= grown[:, 0, None, None]) & (xs < grown[:, 2, None, None])
              & (ys >= grown[:, 1, None, None]) & (ys < grown[:, 3, None, None]))
    near = inside & ~masks
    empty = ~near.flatten(1).any(1)
    return torch.where(empty[:, None, None], ~masks, near)


def ellipse_mask_logits(boxes: torch.Tensor, input_size: int, mask_size: int,
                        logit: float = 4.0) -> torch.Tensor:
    """Each box's inscribed ellipse as mask-prompt logits: P x 4 -> P x 1 x L x L.

    The ellipse (centre at the box centre, semi-axes half the box sides) is drawn on the
    L x L grid that covers the padded ``input_size`` square: ``+logit`` inside, ``-logit``
    outside.
    """
    scale = input_size / mask_size
    centres = (torch.arange(mask_size, device=boxes.device, dtype=torch.float32) + 0.5) * scale
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    ax = ((boxes[:, 2] - boxes[:, 0]) / 2).clamp(min=0.5)
    ay = ((boxes[:, 3] - boxes[:, 1]) / 2).clamp(min=0.5)
    dx = (centres.view(1, 1, -1) - cx.view(-1, 1, 1)) / ax.view(-1, 1, 1)
    dy = (centres.view(1, -1, 1) - cy.view(-1, 1, 1)) / ay.view(-1, 1, 1)
    inside = dx ** 2 + dy ** 2 <= 1
    return torch.where(inside, logit, -logit).unsqueeze(1).float()


def box_points(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes P x 4 as corner points: (P x 2 x 2 coords, P x 2 labels 2 and 3)."""
    coords = boxes.view(-1, 2, 2)
    labels = torch.tensor([BOX_TL, BOX_BR], device=boxes.device).expand(boxes.shape[0], 2)
    return coords, labels.clone()


def simulate_prompts(masks: torch.Tensor, generator: torch.Generator, *, mask_size: int,
                     input_size: int, p_box: float = 0.5, box_jitter: float = 0.05,
                     p_multi_point: float = 0.0, max_positive: int = 3, max_negative: int = 2,
                     p_ellipse_mask: float = 0.0, ellipse_logit: float = 4.0) -> Prompts:
    """First-pass prompts for the P instances of one image.

    masks: P x H x W bool in the model-input frame (H, W <= input_size, every mask non-empty).
    Each instance gets a jittered box (probability ``p_box``) or points: one uniform random
    foreground point, or (probability ``p_multi_point``) 1..max_positive foreground points and
    0..max_negative background points near the object. Box prompts get the inscribed ellipse
    of their box as mask prompt with probability ``p_ellipse_mask``. Returns ``Prompts`` with
    N = max(2, max number of points) (N = 2 when ``p_multi_point`` is 0: a point prompt is
    then [point, padding] and a box [corner, corner], exactly the tokens inference feeds),
    padded with label -1.
    """
    if masks.ndim != 3 or masks.shape[0] == 0:
        raise ValueError(f"masks must be P x H x W with P >= 1, got {tuple(masks.shape)}")
    for name, value in (("p_box", p_box), ("p_multi_point", p_multi_point),
                        ("p_ellipse_mask", p_ellipse_mask)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
    if max_positive < 1 or max_negative < 0:
        raise ValueError(f"need max_positive >= 1 and max_negative >= 0, got {max_positive}, "
                         f"{max_negative}")
    masks = masks.bool()
    p, h, w = masks.shape
    tight, valid = boxes_from_masks(masks)
    if not bool(valid.all()):
        raise ValueError(f"empty instance masks at {torch.nonzero(~valid).flatten().tolist()}")
    # 1. Prompt kind per instance and how many points the point prompts get.
    is_box = _rand((p,), generator) < p_box
    multi = _rand((p,), generator) < p_multi_point
    n_pos = torch.where(multi, 1 + (_rand((p,), generator) * max_positive).long().clamp(
        max=max_positive - 1), torch.ones(p, dtype=torch.long, device=generator.device))
    n_neg = torch.where(multi, (_rand((p,), generator) * (max_negative + 1)).long().clamp(
        max=max_negative), torch.zeros(p, dtype=torch.long, device=generator.device))
    is_box, n_pos, n_neg = is_box.to(masks.device), n_pos.to(masks.device), n_neg.to(masks.device)
    # 2. Candidate points (always drawn, so the random stream does not depend on the kinds).
    pos, _ = sample_points(masks, max_positive, generator)
    neg, neg_ok = sample_points(negative_region(masks, tight), max(max_negative, 1), generator)
    boxes = jitter_boxes(tight, box_jitter, (h, w), generator)
    # 3. Assemble padded point lists: positives, negatives, then padding. Only as many slots
    #    as a prompt can use: every padding slot is one more "not a point" token the decoder
    #    attends to, and inference feeds a single point as [point, not-a-point] and a box as
    #    [corner, corner] (Meta's layout), so single-point training must use N = 2.
    pos_slots = max_positive if p_multi_point > 0 else 1
    neg_slots = max_negative if p_multi_point > 0 else 0
    n = max(2, pos_slots + neg_slots)
    coords = torch.zeros((p, n, 2), device=masks.device)
    labels = torch.full((p, n), PAD, dtype=torch.long, device=masks.device)
    slots = torch.arange(pos_slots, device=masks.device)
    labels[:, :pos_slots] = torch.where(slots < n_pos[:, None], POS, PAD)
    coords[:, :pos_slots] = pos[:, :pos_slots]
    if neg_slots > 0:
        slots = torch.arange(neg_slots, device=masks.device)
        use = (slots < n_neg[:, None]) & neg_ok[:, None]
        labels[:, pos_slots:pos_slots + neg_slots] = torch.where(use, NEG, PAD)
        coords[:, pos_slots:pos_slots + neg_slots] = neg[:, :neg_slots]
    box_xy, box_lab = box_points(boxes)
    coords = torch.where(is_box[:, None, None], torch.cat(
        [box_xy, torch.zeros((p, n - 2, 2), device=masks.device)], 1), coords)
    labels = torch.where(is_box[:, None], torch.cat(
        [box_lab, torch.full((p, n - 2), PAD, device=masks.device)], 1), labels)
    coords = torch.where(labels[..., None] == PAD, torch.zeros_like(coords), coords)
    # 4. Optional shape prior: the box's inscribed ellipse as mask prompt.
    has_mask = is_box & (_rand((p,), generator) < p_ellipse_mask).to(masks.device)
    mask_inputs = None
    if bool(has_mask.any()):
        mask_inputs = ellipse_mask_logits(boxes, input_size, mask_size, ellipse_logit)
        mask_inputs = torch.where(has_mask[:, None, None, None], mask_inputs,
                                  torch.zeros_like(mask_inputs))
    return Prompts(coords, labels, mask_inputs, has_mask, is_box)


def concat_prompts(parts: list[Prompts], mask_size: int) -> Prompts:
    """Prompts of several images in one batch, point lists padded to the longest."""
    if not parts:
        raise ValueError("no prompts to concatenate")
    n = max(pr.coords.shape[1] for pr in parts)
    device = parts[0].coords.device
    coords, labels, masks = [], [], []
    any_mask = any(pr.mask_inputs is not None for pr in parts)
    for pr in parts:
        extra = n - pr.coords.shape[1]
        coords.append(F.pad(pr.coords, (0, 0, 0, extra)))
        labels.append(F.pad(pr.labels, (0, extra), value=PAD))
        if any_mask:
            masks.append(pr.mask_inputs if pr.mask_inputs is not None else torch.zeros(
                (len(pr), 1, mask_size, mask_size), device=device))
    return Prompts(torch.cat(coords), torch.cat(labels),
                   torch.cat(masks) if any_mask else None,
                   torch.cat([pr.has_mask for pr in parts]),
                   torch.cat([pr.is_box for pr in parts]))


def corrective_clicks(logits: torch.Tensor, target: torch.Tensor, generator: torch.Generator,
                      scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One SAM-style corrective click per prompt, sampled from its error region.

    logits: P x L x L low-res logits of the current mask; target: P x L x L in {0, 1};
    ``scale``: input-frame pixels per low-res cell. The click is a uniform random pixel of
    the error region (missed foreground or false foreground); its label is 1 where it falls in
    missed foreground and 0 in false foreground. Returns (P x 1 x 2 xy in the input frame,
    P x 1 labels; -1 where the mask is already perfect).
    """
    if logits.shape != target.shape or logits.ndim != 3:
        raise ValueError(f"logits and target must both be P x L x L, got "
                         f"{tuple(logits.shape)} and {tuple(target.shape)}")
    pred = logits.detach() > 0
    gt = target > 0.5
    error = pred ^ gt
    xy, ok = sample_points(error, 1, generator)
    col = (xy[:, 0, 0] + 0.5).floor().clamp(0, gt.shape[2] - 1).long()
    row = (xy[:, 0, 1] + 0.5).floor().clamp(0, gt.shape[1] - 1).long()
    hit_fg = gt[torch.arange(gt.shape[0], device=gt.device), row, col]
    labels = torch.where(ok, torch.where(hit_fg, POS, NEG), PAD).long()
    # Low-res cell (col, row) covers input pixels [col*scale, (col+1)*scale): its centre.
    coords = (xy + 0.5) * scale - 0.5
    coords = torch.where(ok[:, None, None], coords, torch.zeros_like(coords))
    return coords, labels[:, None]


def refinement_prompts(prompts: Prompts, logits: torch.Tensor, frame: int,
                       input_sizes: torch.Tensor, point_to_box: bool = True) -> Prompts:
    """Second-pass prompts, as in ``ultrasam.inference.refine`` (the inference schedule).

    logits: P x 1 x L x L first-pass logits, kept in the graph as the mask prompt (the
    reference does not detach them); frame: the model input side; input_sizes: P x 2 (h, w)
    of each prompt's image. Point prompts (``point_to_box``) are replaced by the box of their
    first-pass mask (upsampled to ``frame``, thresholded at 0, padding ignored), fed minus
    0.5 px exactly as ``ultrasam.inference.refine`` does; prompts whose first mask is empty keep
    their points; box prompts keep their box.
    """
    from ..inference.refine import boxes_from_logits

    coords, labels = prompts.coords, prompts.labels
    if point_to_box:
        boxes, valid = boxes_from_logits(logits.detach(), frame, input_sizes)
        swap = ~prompts.is_box & valid
        box_xy, box_lab = box_points(boxes - 0.5)
        p, n = coords.shape[:2]
        box_xy = torch.cat([box_xy, torch.zeros((p, n - 2, 2), device=coords.device)], 1)
        box_lab = torch.cat([box_lab, torch.full((p, n - 2), PAD, device=coords.device)], 1)
        coords = torch.where(swap[:, None, None], box_xy.to(coords.dtype), coords)
        labels = torch.where(swap[:, None], box_lab, labels)
    return Prompts(coords, labels, logits, torch.ones_like(prompts.has_mask), prompts.is_box)


def add_clicks(prompts: Prompts, coords: torch.Tensor, labels: torch.Tensor,
               mask_inputs: torch.Tensor) -> Prompts:
    """Prompts with one more point each (P x 1 x 2, P x 1) and a new mask prompt."""
    return Prompts(torch.cat([prompts.coords, coords], 1), torch.cat([prompts.labels, labels], 1),
                   mask_inputs, torch.ones_like(prompts.has_mask), prompts.is_box)
