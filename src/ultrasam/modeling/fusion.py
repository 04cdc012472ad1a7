"""FusionNet: an early-fusion promptable segmenter designed to train and run on a CPU.

Why early fusion: SAM's late fusion (a heavy image embedding, prompts meeting it only in a
two-layer decoder) needs hundreds of thousands of samples before its decoder learns where an
ultrasound boundary lies; feeding the prompts as image-aligned maps right after a cheap stem
(RITM, "Reviving Iterative Training with Mask Guidance") lets every convolution see them, and on
this project's 2-core CPU learns ~10x more per sample (measurements in docs/default-model.md).

Per image (``encode``, cached by the predictor): a stride-4 stem. Per prompt batch (``decode``):

1. the prompts are rasterised at 1/2 of the input: positive and negative click disks, the box
   as a filled rectangle and as its inscribed ellipse (a strong shape prior for ultrasound
   lesions), the previous mask's probability and a flag saying whether there is one;
2. a strided convolution of those maps is added to the stem features (1/4 resolution);
3. a residual CNN (four stages, 1/4 to 1/32), optionally followed by global self-attention
   blocks on the deepest grid (``fusion_context_depth``; ``modeling.global_context``), and a
   top-down FPN back to 1/4 give coarse logits;
4. a light boundary head at 1/2 resolution, which sees the stem's 1/2-resolution image features
   and the prompt maps, adds a residual to the upsampled coarse logits: edges are decided at
   1/2 resolution instead of 1/4;
5. an IoU head on the pooled deepest features scores each of the M = 1 + 3 outputs (index 0
   is the single-mask output, 1-3 the multimask outputs, as in SAM).

The embedding returned by ``encode`` is one tensor B x (C0 + 4 * C0/2) x S/4 x S/4: the stem's
1/4-resolution features and its 1/2-resolution features folded into channels
(pixel-unshuffle), so it can be cached, saved and restored like a SAM embedding.
Coordinates follow SAM: points and boxes in pixels of the resized, padded input frame (S x S);
``point_labels`` 1 positive, 0 negative, -1 padding, 2 / 3 box corners.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .base import PromptableModel
from .global_context import GlobalContextBlock

# Prompt map channels: positive disks, negative disks, box rectangle, box ellipse,
# previous-mask probability, has-previous-mask flag.
N_PROMPT_MAPS = 6
CLICK_RADIUS = 5.0  # px in the S x S input frame (RITM uses 5 px disks at a similar scale)


def conv_bn(cin: int, cout: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual (ResNet's basic block); ``stride`` 2 downsamples."""

    # (convolution, BatchNorm) attribute pairs that ``modeling.fold.fold_batchnorm`` may merge.
    FOLD_PAIRS = (("conv1", "bn1"), ("conv2", "bn2"))

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.skip(x), inplace=True)


def _stage(cin: int, cout: int, depth: int, stride: int) -> nn.Sequential:
    blocks = [BasicBlock(cin, cout, stride)]
    blocks += [BasicBlock(cout, cout) for _ in range(depth - 1)]
    return nn.Sequential(*blocks)


def corner_boxes(point_coords: torch.Tensor, point_labels: torch.Tensor) -> torch.Tensor:
    """Boxes given as two labelled corner points (Meta's ONNX layout) -> P x 4 XYXY.

    point_coords: P x N x 2; point_labels: P x N (2 top-left, 3 bottom-right). A prompt without
    corners gets the box (-1, -1, -1, -1), which rasterises to empty maps. Branch-free, so a
    traced graph (ONNX export) handles prompts with and without a box alike.
    """
    tl = torch.where((point_labels == 2)[..., None], point_coords.float(), 0.0).sum(1)
    br = torch.where((point_labels == 3)[..., None], point_coords.float(), 0.0).sum(1)
    box = torch.cat([tl, br], dim=1)
    has = ((point_labels == 2) | (point_labels == 3)).any(dim=1)
    return torch.where(has[:, None], box, torch.full_like(box, -1.0))


def rasterise_prompts(point_coords: torch.Tensor | None, point_labels: torch.Tensor | None,
                      boxes: torch.Tensor | None, mask_inputs: torch.Tensor | None,
                      n_prompts: int, img_size: int, grid: int,
                      dtype: torch.dtype = torch.float32,
                      mask_present: torch.Tensor | None = None) -> torch.Tensor:
    """Prompts -> P x 6 x grid x grid maps (see ``N_PROMPT_MAPS``) over the S x S input frame.

    point_coords: P x N x 2 xy pixels; point_labels: P x N; boxes: P x 4 XYXY (or corners
    labelled 2 / 3 among the points); mask_inputs: P x 1 x L x L logits.
    mask_present: optional P (or 1) flags gating ``mask_inputs`` (SAM's ``has_mask_input``):
    0 gives exactly the maps of ``mask_inputs=None``, 1 those of the mask.
    A pixel index i covers [i, i + 1) in input pixels at scale S / grid; its centre is tested.
    """
    device = (point_coords if point_coords is not None else boxes if boxes is not None
              else mask_inputs).device  # type: ignore[union-attr]
    scale = img_size / grid
    centres = (torch.arange(grid, device=device, dtype=torch.float32) + 0.5) * scale
    gy, gx = centres.view(grid, 1), centres.view(1, grid)
    zeros = torch.zeros(n_prompts, grid, grid, device=device)
    pos, neg = zeros, zeros
    box = boxes.float() if boxes is not None else None
    if point_coords is not None and point_labels is not None:
        # Pixel (x, y) means the pixel whose top-left corner is (x, y): its centre is +0.5.
        c = point_coords.float() + 0.5
        d2 = (gx[None, None] - c[..., 0, None, None]) ** 2 \
            + (gy[None, None] - c[..., 1, None, None]) ** 2  # P x N x g x g
        near = d2 <= CLICK_RADIUS ** 2
        lab = point_labels[..., None, None]
        pos = (near & (lab == 1)).any(dim=1).float()
        neg = (near & (lab == 0)).any(dim=1).float()
        corners = (point_labels == 2) | (point_labels == 3)
        if box is None and bool(corners.any()):
            # Box given as two labelled corner points (Meta's ONNX layout).
            box = corner_boxes(point_coords, point_labels)
    rect, ell = zeros, zeros
    if box is not None:
        x0, y0, x1, y1 = (box[:, i, None, None] for i in range(4))
        inside_x = (gx[None] >= x0) & (gx[None] <= x1)
        inside_y = (gy[None] >= y0) & (gy[None] <= y1)
        rect = (inside_x & inside_y).float()
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        rx, ry = ((x1 - x0) / 2).clamp(min=0.5), ((y1 - y0) / 2).clamp(min=0.5)
        ell = ((((gx[None] - cx) / rx) ** 2 + ((gy[None] - cy) / ry) ** 2) <= 1.0).float()
        ell = ell * rect  # a "box" of -1s (no box for this prompt) gives empty maps
    prev, has_prev = zeros, zeros
    if mask_inputs is not None:
        prob = torch.sigmoid(mask_inputs.float())
        prev = F.interpolate(prob, (grid, grid), mode="bilinear", align_corners=False)[:, 0]
        has_prev = torch.ones_like(prev)
        if mask_present is not None:
            gate = mask_present.float().reshape(-1, 1, 1)
            prev, has_prev = prev * gate, has_prev * gate
    return torch.stack([pos, neg, rect, ell, prev, has_prev], dim=1).to(dtype)


class FusionNet(PromptableModel):
    """Early-fusion promptable segmenter (see the module docstring for the data flow).

    config fields used: ``img_size`` (S), ``conv_dims`` (C0..C3 per stage, C0 at 1/4),
    ``conv_depths`` (blocks per stage), ``prompt_embed_dim`` (FPN width F),
    ``num_multimask_outputs``, ``iou_head_hidden_dim``, ``pixel_mean`` / ``pixel_std``,
    ``fusion_context_depth`` (attention blocks after the deepest stage, with
    ``decoder_num_heads`` heads and ``mlp_ratio``).
    """

    # Parameter-name prefixes of blocks that start as the identity (zero-initialised residual
    # branches): weights trained without them still describe the same network.
    IDENTITY_AT_INIT = ("context.",)

    # Prompts are rasterised: a label -1 point draws no disk and a box of -1s no rectangle.
    exact_prompt_padding = True

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        dims, depths = config.conv_dims, config.conv_depths
        c0, half = dims[0], dims[0] // 2
        fpn = config.prompt_embed_dim
        self.n_outputs = 1 + config.num_multimask_outputs
        # Per image: stride-2 then stride-4 stem features.
        self.stem2 = nn.Sequential(conv_bn(3, half, 2), conv_bn(half, half))
        self.stem4 = conv_bn(half, c0, 2)
        # Per prompt: maps at 1/2 -> added to the 1/4 stem features.
        self.prompt_in = nn.Sequential(conv_bn(N_PROMPT_MAPS, half),
                                       nn.Conv2d(half, c0, 3, 2, 1))
        self.stages = nn.ModuleList()
        cin = c0
        for i, (d, n) in enumerate(zip(dims, depths)):
            self.stages.append(_stage(cin, d, n, 1 if i == 0 else 2))
            cin = d
        self.context = nn.Sequential(*(
            GlobalContextBlock(dims[-1], config.decoder_num_heads, config.mlp_ratio)
            for _ in range(config.fusion_context_depth)))
        self.lateral = nn.ModuleList(nn.Conv2d(d, fpn, 1) for d in dims)
        self.smooth = conv_bn(fpn, fpn)
        self.coarse = nn.Conv2d(fpn, self.n_outputs, 1)
        # Boundary head at 1/2: upsampled FPN features (reduced), stem-2 image features,
        # prompt maps and the upsampled coarse logits.
        reduced = max(8, fpn // 4)
        self.reduce = nn.Conv2d(fpn, reduced, 1)
        head_in = reduced + half + N_PROMPT_MAPS + self.n_outputs
        self.boundary = nn.Sequential(conv_bn(head_in, half), conv_bn(half, half),
                                      nn.Conv2d(half, self.n_outputs, 1))
        hidden = config.iou_head_hidden_dim
        self.iou_head = nn.Sequential(nn.Linear(2 * dims[-1], hidden), nn.ReLU(inplace=True),
                                      nn.Linear(hidden, self.n_outputs))

    @property
    def embedding_shape(self) -> tuple[int, int, int]:
        c0 = self.config.conv_dims[0]
        g = self.config.img_size // 4
        return (c0 + 4 * (c0 // 2), g, g)

    # ----------------------------------------------------------------------------- images
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Padded model input B x 3 x S x S -> B x (C0 + 2 C0) x S/4 x S/4 (see module doc)."""
        s2 = self.stem2(x)
        s4 = self.stem4(s2)
        return torch.cat([s4, F.pixel_unshuffle(s2, 2)], dim=1)

    def image_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Prompt-free features for downstream heads: the four stage outputs (1/4 .. 1/32) of
        padded model input B x 3 x S x S, computed with empty prompt maps."""
        s4 = self.stem4(self.stem2(x))
        g = self.img_size // 2
        empty = torch.zeros(x.shape[0], N_PROMPT_MAPS, g, g, device=x.device, dtype=s4.dtype)
        return self._trunk(s4 + self.prompt_in(empty))

    def _trunk(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Fused 1/4-resolution features -> the four stage outputs (1/4 .. 1/32), the deepest
        passed through the global-context blocks."""
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        feats[-1] = self.context(feats[-1])
        return feats

    # ---------------------------------------------------------------------------- prompts
    def decode(self, image_embeddings: torch.Tensor, point_coords: torch.Tensor | None = None,
               point_labels: torch.Tensor | None = None, boxes: torch.Tensor | None = None,
               mask_inputs: torch.Tensor | None = None, multimask_output: bool = True,
               image_index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode P prompts against B image embeddings (layouts as in :meth:`Sam.decode`).

        Returns low-res logits P x M x S x S (M = 3 with ``multimask_output``, else 1) and
        predicted IoU P x M.
        """
        logits, iou = self.decode_all(image_embeddings, point_coords, point_labels, boxes,
                                      mask_inputs, image_index)
        sel = slice(1, None) if multimask_output else slice(0, 1)
        return logits[:, sel], iou[:, sel]

    def decode_all(self, image_embeddings: torch.Tensor, point_coords: torch.Tensor | None,
                   point_labels: torch.Tensor | None, boxes: torch.Tensor | None,
                   mask_inputs: torch.Tensor | None, image_index: torch.Tensor | None = None,
                   coarse: bool = False, mask_present: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, ...]:
        """All 1 + 3 outputs: logits P x 4 x S x S, IoU P x 4 (and coarse P x 4 x S/4 x S/4
        logits when ``coarse``, for deep supervision in training). ``mask_present``: see
        :func:`rasterise_prompts` (the ONNX decoder's ``has_mask_input``)."""
        if point_coords is not None and point_labels is None:
            raise ValueError("point_labels are required with point_coords")
        n = _count_prompts(point_coords, boxes, mask_inputs)
        emb = image_embeddings
        c0 = self.config.conv_dims[0]
        # Unfold the 1/2-resolution features once per image, before they are repeated per
        # prompt (a server decodes many prompts of one image in a batch).
        s4, s2 = emb[:, :c0], F.pixel_shuffle(emb[:, c0:], 2)
        if image_index is not None:
            s4, s2 = s4[image_index], s2[image_index]
        elif emb.shape[0] == 1 and n > 1:
            s4, s2 = s4.expand(n, *s4.shape[1:]), s2.expand(n, *s2.shape[1:])
        elif emb.shape[0] != n:
            raise ValueError(f"{emb.shape[0]} image embeddings for {n} prompts: pass "
                             f"image_index")
        size = self.img_size
        # 1-2. prompt maps at 1/2, fused into the stem features at 1/4.
        maps = rasterise_prompts(point_coords, point_labels, boxes, mask_inputs, n, size,
                                 size // 2, dtype=s4.dtype, mask_present=mask_present)
        # 3. residual stages, global context on the deepest grid, top-down FPN back to 1/4.
        feats = self._trunk(s4 + self.prompt_in(maps))
        top = self.lateral[-1](feats[-1])
        for i in range(len(feats) - 2, -1, -1):
            top = F.interpolate(top, size=feats[i].shape[-2:], mode="nearest") \
                + self.lateral[i](feats[i])
        fused = self.smooth(top)
        coarse_logits = self.coarse(fused)
        # 4. boundary head at 1/2 adds a residual to the upsampled coarse logits.
        up = F.interpolate(coarse_logits, scale_factor=2, mode="bilinear", align_corners=False)
        red = F.interpolate(self.reduce(fused), scale_factor=2, mode="bilinear",
                            align_corners=False)
        fine = up + self.boundary(torch.cat([red, s2, maps, up], dim=1))
        # The last upsampling in fp32 and plain layout: CPU bilinear upsampling of a few
        # channels is 1.5-2x slower in bf16 / channels_last (a no-op cast under fp32).
        logits = F.interpolate(fine.float().contiguous(), scale_factor=2, mode="bilinear",
                               align_corners=False)
        # 5. IoU of each output from pooled deepest features.
        deep = feats[-1]
        pooled = torch.cat([deep.mean(dim=(2, 3)), deep.amax(dim=(2, 3))], dim=1)
        iou = self.iou_head(pooled)
        if coarse:
            return logits, iou, coarse_logits
        return logits, iou


def _count_prompts(point_coords: torch.Tensor | None, boxes: torch.Tensor | None,
                   mask_inputs: torch.Tensor | None) -> int:
    for t in (point_coords, boxes, mask_inputs):
        if t is not None:
            return int(t.shape[0])
    raise ValueError("no prompt given: pass points, a box or a mask input")
