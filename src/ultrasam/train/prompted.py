"""The differentiable part of a training step as one module (what DDP wraps): encode once,
decode every prompt of the batch per pass, loss on every pass."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from ..modeling import Sam
from .config import TrainConfig
from .data import Batch
from .losses import prompt_losses, select_best
from .prompts import BOX_BR, BOX_TL, PAD, Prompts, add_clicks, corrective_clicks, refinement_prompts


class PromptedTraining(nn.Module):
    """The differentiable part of a step, as one module so that DDP wraps one forward.

    forward(batch, prompts, generators) encodes the B images once, then runs the passes:
    1. the simulated prompts (single-mask output, token 0);
    2. with ``refine``: the reference's refinement pass (pass-1 logits as mask prompt, kept in
       the graph; point prompts replaced by the box of the pass-1 mask; tokens 1-3);
    3. ``click_iterations`` passes, each adding a corrective click sampled from the previous
       pass's error region (previous logits as mask prompt, detached as in SAM; token 0).
    Every pass's loss is taken on the output that best matches the target. Returns per-pass
    sums over prompts (the caller normalises): ``loss`` (summed over passes), and per pass
    ``loss_i`` and ``iou_i`` (actual IoU of the chosen output).
    """

    def __init__(self, sam: Sam, cfg: TrainConfig) -> None:
        super().__init__()
        self.sam = sam
        self.cfg = cfg
        self.encoder_frozen = cfg.model.freeze_encoder and cfg.model.lora_rank == 0

    def decode(self, embeddings: torch.Tensor, prompts: Prompts, image_index: torch.Tensor,
               multimask: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode P prompts with exactly the tokens inference uses; returns P-first outputs.

        Meta's layout: a prompt's real tokens plus one "not a point" token when it has no box
        (a point is [point, not-a-point], a box [corner, corner]). Batches whose prompts have
        different numbers of points are padded, and extra padding tokens would change what the
        decoder attends to, so prompts are grouped by their token count and each group is
        decoded in one call. Token order does not matter (the decoder has no positional
        encoding over tokens), so padding is moved to the end before slicing.
        Prompts without a mask prompt get SAM's no-mask embedding.
        """
        pe = self.sam.prompt_encoder
        labels = F.pad(prompts.labels, (0, 1), value=PAD)
        coords = F.pad(prompts.coords, (0, 0, 0, 1))
        order = torch.sort((labels == PAD).int(), dim=1, stable=True).indices
        labels = torch.gather(labels, 1, order)
        coords = torch.gather(coords, 1, order[..., None].expand(-1, -1, 2))
        has_box = ((labels == BOX_TL) | (labels == BOX_BR)).any(1)
        need = (labels != PAD).sum(1) + (~has_box).long()
        no_mask = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        h, w = pe.image_embedding_size
        if prompts.mask_inputs is not None:
            dense = pe.mask_downscaling(prompts.mask_inputs.to(no_mask.dtype))
            dense = torch.where(prompts.has_mask[:, None, None, None], dense, no_mask)
        else:
            dense = no_mask.expand(len(prompts), -1, h, w)
        groups = [(int(n), (need == n).nonzero().squeeze(1)) for n in torch.unique(need)]
        outputs = []
        for n, idx in groups:
            sparse = pe.embed_points(coords[idx, :n], labels[idx, :n], pad=False)
            outputs.append(self.sam.mask_decoder(embeddings, pe.get_dense_pe(), sparse,
                                                 dense[idx], multimask_output=multimask,
                                                 image_index=image_index[idx]))
        if len(outputs) == 1:
            return outputs[0]
        inverse = torch.argsort(torch.cat([idx for _, idx in groups]))
        return (torch.cat([o[0] for o in outputs])[inverse],
                torch.cat([o[1] for o in outputs])[inverse])

    def forward(self, batch: Batch, prompts: Prompts, generators: list[torch.Generator]
                ) -> dict[str, torch.Tensor]:
        cfg_p, cfg_l = self.cfg.prompts, self.cfg.loss
        # 0. Normalise each image's valid region and pad (SAM pads after normalising).
        x = torch.cat([self.sam.preprocess(batch.images[b:b + 1, :, :h, :w])
                       for b, (h, w) in enumerate(batch.sizes.tolist())])
        # 1. Encode the B images once; prompts gather their image by index.
        with torch.no_grad() if self.encoder_frozen else contextlib.nullcontext():
            embeddings = self.sam.encode(x)
        idx = batch.image_index
        passes = [self.decode(embeddings, prompts, idx, multimask=False)]
        # 2. Refinement pass (UltraSam's inference schedule, trained end to end).
        if cfg_p.refine:
            refined = refinement_prompts(prompts, passes[0][0], self.sam.img_size,
                                         batch.sizes[idx])
            passes.append(self.decode(embeddings, refined, idx, multimask=True))
            prompts = refined
        # 3. Corrective clicks from the error region of the best output so far.
        scale = self.sam.img_size / batch.targets.shape[-1]
        for _ in range(cfg_p.click_iterations):
            logits, _ = passes[-1]
            best, _ = select_best(logits.float(), batch.targets)
            previous = logits.detach()[torch.arange(len(best), device=best.device), best]
            coords = torch.zeros((len(best), 1, 2), device=previous.device)
            labels = torch.full((len(best), 1), -1, dtype=torch.long, device=previous.device)
            for b, gen in enumerate(generators):
                rows = idx == b
                coords[rows], labels[rows] = corrective_clicks(
                    previous[rows].float(), batch.targets[rows], gen, scale)
            prompts = add_clicks(prompts, coords, labels, previous[:, None].float())
            passes.append(self.decode(embeddings, prompts, idx, multimask=False))
        # 4. Loss on every pass, on the output that best matches the target.
        out: dict[str, torch.Tensor] = {}
        total = embeddings.new_zeros((), dtype=torch.float32)
        for i, (logits, iou) in enumerate(passes):
            terms = prompt_losses(logits, iou, batch.targets, focal_weight=cfg_l.focal_weight,
                                  dice_weight=cfg_l.dice_weight, iou_weight=cfg_l.iou_weight,
                                  gamma=cfg_l.focal_gamma, alpha=cfg_l.focal_alpha,
                                  iou_on=cfg_l.iou_on)
            total = total + terms["loss"].sum()
            out[f"loss_{i + 1}"] = terms["loss"].detach().sum()
            out[f"iou_{i + 1}"] = terms["best_iou"].sum()
        out["loss"] = total
        return out

