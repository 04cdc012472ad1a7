"""One optimiser update of the SAM recipe: prompts, forward, backward, clip, step.

``train_step`` is what ``train()`` runs each iteration and what ``benchmarks/bench_gpu.py``
times, so the benchmark measures the real step (its prompts, every pass, every loss term).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..modeling import Sam
from .config import TrainConfig
from .data import Batch, position_seed
from .prompts import Prompts, concat_prompts, simulate_prompts


@dataclass
class StepOutcome:
    """What one update measured.

    ``sums``: per-pass loss and IoU sums over the step's micro-batches (this process, detached
    float scalars; ``loss`` included); ``n_prompts``: prompts over all micro-batches and
    processes; ``grad_norm``: the norm before clipping; ``finite``: False when a loss or
    gradient was not finite on any process; the optimiser did not step then.
    """

    sums: dict[str, torch.Tensor]
    n_prompts: torch.Tensor
    grad_norm: torch.Tensor
    finite: bool


def batch_prompts(batch: Batch, sam: Sam, cfg: TrainConfig, seed: int, device: torch.device
                  ) -> tuple[Prompts, list[torch.Generator]]:
    """The batch's first-pass prompts and per-image generators, each seeded by the image's
    position, so prompts do not depend on the process count or on what came before."""
    p = cfg.prompts
    gens = [torch.Generator(device=device).manual_seed(position_seed(seed, e, k, 1))
            for e, k in batch.positions]
    parts = [simulate_prompts(
        masks, gen, mask_size=sam.config.mask_size, input_size=sam.img_size, p_box=p.p_box,
        box_jitter=p.box_jitter, p_multi_point=p.p_multi_point, max_positive=p.max_positive,
        max_negative=p.max_negative, p_ellipse_mask=p.p_ellipse_mask,
        ellipse_logit=p.ellipse_logit)
        for masks, gen in zip(batch.masks, gens)]
    return concat_prompts(parts, sam.config.mask_size), gens


def train_step(net: nn.Module, sam: Sam, optimizer: torch.optim.Optimizer,
               params: list[nn.Parameter], batches: list[Batch], cfg: TrainConfig, *,
               world: int = 1, use_bf16: bool = False) -> StepOutcome:
    """One update from ``batches`` (the step's micro-batches, on the device).

    ``net``: :class:`~ultrasam.train.prompted.PromptedTraining` over ``sam`` (or DDP around
    it when ``world`` > 1); ``params``: the trainable parameters the optimiser holds.
    """
    device = batches[0].images.device
    # 1. The loss is normalised by the number of prompts over all micro-batches and processes,
    #    so gradients equal those of one big batch on one process.
    n_prompts = torch.tensor(float(sum(len(b.targets) for b in batches)), device=device)
    if world > 1:
        dist.all_reduce(n_prompts)
    sums: dict[str, torch.Tensor] = {}
    bad = torch.zeros((), device=device)
    optimizer.zero_grad(set_to_none=True)
    for i, batch in enumerate(batches):
        # 2. Prompts: per image, from a generator seeded by the image's position.
        prompts, gens = batch_prompts(batch, sam, cfg, cfg.run.seed, device)
        # 3. Forward under bf16 autocast on GPU; DDP syncs only on the last backward.
        sync = (world == 1 or i == len(batches) - 1)
        ctx = contextlib.nullcontext() if sync else net.no_sync()  # type: ignore[operator]
        with ctx:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                out = net(batch, prompts, gens)
            loss = out["loss"] * world / n_prompts
            # Backward even when non-finite: every DDP process must join the reduction.
            loss.backward()
        bad = torch.maximum(bad, (~torch.isfinite(loss.detach())).float())
        for key, value in out.items():
            sums[key] = sums.get(key, 0) + value.detach().float()
    # 4. Clip; a non-finite loss or gradient on any process skips the update everywhere.
    grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.clip_grad_norm
                                               if cfg.optim.clip_grad_norm > 0
                                               else float("inf"))
    bad = torch.maximum(bad, (~torch.isfinite(grad_norm)).float())
    if world > 1:
        dist.all_reduce(bad, op=dist.ReduceOp.MAX)
    finite = bad.item() == 0
    # 5. The update.
    if finite:
        optimizer.step()
    return StepOutcome(sums, n_prompts, grad_norm, finite)
