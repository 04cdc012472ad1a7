"""``train(cfg)``: the training loop, one function to read top to bottom.

What it does, in order: processes and device (``torchrun`` sets ``WORLD_SIZE``/``RANK``/
``LOCAL_RANK``: NCCL on GPU, gloo on CPU); the model (from scratch, from any checkpoint
``load_model`` accepts, LoRA / frozen encoder); data; optimiser (AdamW, fused on CUDA); resume
or weights-only warm start; then per step: load ``accumulate`` micro-batches, simulate prompts,
forward (encode once, decode every prompt of the batch in one call per pass, loss on every
pass), backward (DDP syncs on the last micro-batch), clip, step; metrics, checkpoints; export.

**Exact resume.** A checkpoint holds the model, the optimiser, the step (the schedule is a pure
function of it), every process's sampler state and every process's RNG states (python, numpy,
torch, cuda). Batches, augmentations and prompts are seeded by image position (see
``ultrasam.train.data``), so a resumed run continues bit for bit like an uninterrupted one on
the same hardware and process count.

**Weights-only warm start** (``run.warm_start``): when only weights can move between machines
(a native export, a SAM-format file, or a training checkpoint whose optimiser is unwanted), the
weights are loaded, the optimiser starts fresh, the step counter starts at 0 and the warm-up
is ``run.warm_start_warmup_steps`` long instead of ``schedule.warmup_steps``, so Adam's moment
estimates settle before the full learning rate applies.

**Failures.** A non-finite loss or gradient stops the run with a ``RuntimeError`` naming the
step and the images of the batch; no checkpoint is written for that step, so the newest one on
disk is the last good state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..modeling import Sam, build_model
from ..modeling.lora import add_lora, merge_lora
from .config import TrainConfig
from .data import BatchLoader, MixingSampler, TrainImages
from .distributed import gather, init_distributed
from .prompted import PromptedTraining
from .schedule import lr_factor
from .state import (
    CHECKPOINT_FORMAT,
    checkpoints_in,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .step import train_step
from .training_log import TrainingLog

log = logging.getLogger(__name__)

# Moved to their own modules; importable from here as before.
__all__ = ["CHECKPOINT_FORMAT", "PromptedTraining", "checkpoints_in", "load_checkpoint",
           "train"]


def _build_model(cfg: TrainConfig) -> tuple[Sam, str | None]:
    """The model to train and the format of the checkpoint it came from (None: scratch)."""
    m = cfg.model
    if m.checkpoint is not None and m.overrides:
        raise ValueError("model.overrides only applies to a model built from scratch; it "
                         "cannot change a loaded model.checkpoint")
    if m.checkpoint is not None:
        from ..weights.checkpoints import load_model
        model = load_model(m.checkpoint, "cpu", None if m.checkpoint_format == "auto"
                           else m.checkpoint_format)
        return model, getattr(model, "checkpoint_format", None)
    from ..config import get_config
    try:
        config = get_config(m.variant, **m.overrides)
    except TypeError as e:
        raise ValueError(f"model.overrides: {e}") from e
    return build_model(config), None


def _warm_start_weights(path: str) -> dict[str, torch.Tensor]:
    p = Path(path)
    if p.is_file() and p.suffix == ".pt":
        with contextlib.suppress(ValueError):
            return load_checkpoint(p)["model"]
    from ..weights.checkpoints import load_model
    return load_model(p, "cpu").state_dict()


def _resume_path(cfg: TrainConfig, ckpt_dir: Path) -> Path | None:
    """The checkpoint to continue from: the newest in the run folder (``auto``), none
    (``never``), or the named file."""
    if cfg.run.resume == "auto":
        found = checkpoints_in(ckpt_dir)
        return found[-1] if found else None
    if cfg.run.resume != "never":
        return Path(cfg.run.resume)
    return None


def _adapt(sam: Sam, cfg: TrainConfig) -> None:
    """Freeze the image encoder, and wrap its qkv layers in LoRA, as ``cfg.model`` says."""
    if cfg.model.freeze_encoder or cfg.model.lora_rank > 0:
        sam.image_encoder.requires_grad_(False)
    if cfg.model.lora_rank > 0:
        n = add_lora(sam, cfg.model.lora_rank, cfg.model.lora_alpha)
        log.info("LoRA rank %d on %d qkv layers", cfg.model.lora_rank, n)


def _data(cfg: TrainConfig, sam: Sam, rank: int, world: int
          ) -> tuple[TrainImages, MixingSampler, BatchLoader]:
    """Usable images, the sampler (this process's shard) and the batch loader."""
    run = cfg.run
    images = TrainImages(cfg.data.paths, datasets=cfg.data.datasets, split=cfg.data.split,
                         exclude=cfg.data.exclude, min_instance_area=cfg.data.min_instance_area)
    sampler = MixingSampler(images.datasets(), cfg.data.weights, seed=run.seed, rank=rank,
                            world_size=world, epoch_size=cfg.data.epoch_size)
    # MedSAM-style checkpoints see the whole square at inference: train them that way, and
    # without scale augmentation (a shrunk image would leave padding MedSAM never sees).
    square = sam.config.preprocessing == "medsam"
    augment_params = cfg.augment
    if square and augment_params.p_scale > 0:
        log.info("MedSAM preprocessing: scale augmentation disabled (square inputs)")
        augment_params = dataclasses.replace(augment_params, p_scale=0.0)
    loader = BatchLoader(images, sampler, input_size=sam.img_size,
                         mask_size=sam.config.mask_size,
                         images_per_batch=cfg.data.images_per_batch,
                         max_instances=cfg.data.max_instances,
                         min_instance_area=cfg.data.min_instance_area,
                         augment_params=augment_params, seed=run.seed,
                         load_threads=cfg.data.load_threads, square=square)
    return images, sampler, loader


def _learning_rate(cfg: TrainConfig, step: int, warmup: int) -> float:
    s = cfg.schedule
    return cfg.optim.lr * lr_factor(step, total_steps=cfg.run.steps, kind=s.kind,
                                    warmup_steps=warmup, warmup_factor=s.warmup_factor,
                                    milestones=s.milestones, gamma=s.gamma,
                                    min_factor=s.min_factor)


def _checkpoint(path: Path, step: int, sam: Sam, optimizer: torch.optim.Optimizer,
                samplers: list[Any], rngs: list[Any], cfg: TrainConfig) -> None:
    save_checkpoint(path, {
        "format": CHECKPOINT_FORMAT, "step": step,
        "model": {k: v.detach().cpu() for k, v in sam.state_dict().items()},
        "optimizer": optimizer.state_dict(), "sampler": samplers, "rng": rngs,
        "config": cfg.to_dict(), "model_config": sam.config.to_dict()})


# ------------------------------------------------------------------------------------ train
def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train (or continue training) a SAM-family model as ``cfg`` says; see the module doc.

    Returns a summary: ``step`` reached, ``first_loss`` / ``last_loss`` (logged averages),
    ``checkpoint`` (newest), ``export`` (native folder or None), ``metrics`` (JSONL path),
    ``counts`` (images and instances used / skipped), ``resumed_from``.
    """
    run = cfg.run
    if run.steps < 1 or run.checkpoint_every < 1 or run.log_every < 1:
        raise ValueError("run.steps, run.checkpoint_every and run.log_every must be >= 1")
    if cfg.optim.accumulate < 1:
        raise ValueError(f"optim.accumulate must be >= 1, got {cfg.optim.accumulate}")

    # 1. Processes, device, output folder.
    rank, world, device = init_distributed(run.device)
    main = rank == 0
    out_dir = Path(run.out_dir)
    ckpt_dir = out_dir / "checkpoints"
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1, sort_keys=True)
                                             + "\n", encoding="utf-8")
    training_log = None
    try:
        # 2. Model (same seed everywhere: every process starts from identical weights), the
        #    weights-only warm start, frozen encoder / LoRA.
        random.seed(run.seed)
        np.random.seed(run.seed)
        torch.manual_seed(run.seed)
        sam, source_format = _build_model(cfg)
        resume = _resume_path(cfg, ckpt_dir)
        # A warm-started run keeps its short warm-up when it is later resumed.
        warmup = (cfg.schedule.warmup_steps if run.warm_start is None
                  else run.warm_start_warmup_steps)
        if resume is None and run.warm_start is not None:
            # Weights only (before any LoRA wrapping, so SAM's names match).
            sam.load_state_dict(_warm_start_weights(run.warm_start))
            log.info("warm start from %s (weights only, %d warm-up steps)", run.warm_start,
                     warmup)
        _adapt(sam, cfg)
        sam.to(device).train()
        net: nn.Module = PromptedTraining(sam, cfg)
        if world > 1:
            # Some parameters sit idle in some steps (e.g. the mask-prompt path without
            # refinement or ellipse prompts), hence find_unused_parameters.
            net = nn.parallel.DistributedDataParallel(
                net, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=True)

        # 3. Data: usable images, the sampler (this process's shard), the batch loader.
        images, sampler, loader = _data(cfg, sam, rank, world)

        # 4. Optimiser over the trainable parameters (fused kernels on CUDA).
        params = [p for p in sam.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, betas=cfg.optim.betas,
                                      eps=cfg.optim.eps, weight_decay=cfg.optim.weight_decay,
                                      fused=device.type == "cuda")

        # 5. Resume: model, optimiser, step, this process's sampler and RNG states.
        step, resumed_from = 0, None
        if resume is not None:
            state = load_checkpoint(resume)
            sam.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            step = int(state["step"])
            sampler.load_state_dict(state["sampler"][rank])
            set_rng_state(state["rng"][rank])
            resumed_from = str(resume)
            log.info("resumed from %s at step %d", resume, step)

        # 6. Logging: JSONL always (rank 0), TensorBoard when installed, a progress bar.
        training_log = TrainingLog(cfg, out_dir, step, main)
        use_bf16 = run.bf16 and device.type == "cuda"
        last_ckpt = str(checkpoints_in(ckpt_dir)[-1]) if checkpoints_in(ckpt_dir) else None

        # 7. The loop: one iteration = one optimiser update.
        while step < run.steps:
            lr = _learning_rate(cfg, step, warmup)
            for group in optimizer.param_groups:
                group["lr"] = lr
            # 7a. The step's micro-batches, then the update (prompts, forward, backward, clip,
            #     AdamW step: ultrasam.train.step).
            batches = [loader.next_batch().to(device) for _ in range(cfg.optim.accumulate)]
            outcome = train_step(net, sam, optimizer, params, batches, cfg, world=world,
                                 use_bf16=use_bf16)
            # 7b. Stop on a non-finite loss or gradient, naming the step and the images.
            if not outcome.finite:
                ids = sorted(i for part in gather([b.ids for b in batches], world)
                             for ids in part for i in ids)
                raise RuntimeError(f"non-finite loss or gradient at step {step + 1} on images "
                                   f"{ids}; the last good checkpoint is {last_ckpt}")
            step += 1

            # 7c. Metrics: sums over every process, averaged per prompt.
            training_log.add(step, lr, outcome, world)

            # 7d. Checkpoint atomically (every process contributes its sampler and RNG state).
            if step % run.checkpoint_every == 0 or step == run.steps:
                samplers = gather(sampler.state_dict(), world)
                rngs = gather(rng_state(), world)
                if main:
                    path = ckpt_dir / f"step_{step:07d}.pt"
                    _checkpoint(path, step, sam, optimizer, samplers, rngs, cfg)
                    last_ckpt = str(path)
                    if run.keep_checkpoints > 0:
                        for old in checkpoints_in(ckpt_dir)[:-run.keep_checkpoints]:
                            old.unlink()

        # 8. Export the trained weights in the native format (LoRA merged into them).
        export = None
        if main and run.export:
            merge_lora(sam)
            from ..weights.checkpoints import save_native
            export = str(save_native(sam.float().cpu().eval(), out_dir / "model",
                                     source=cfg.model.checkpoint or "scratch",
                                     source_format=source_format))
        training_log.close_progress()
        counts = {**dict(images.counts), **dict(loader.counts)}
        return {"step": step, "first_loss": training_log.first_loss,
                "last_loss": training_log.last_loss, "checkpoint": last_ckpt, "export": export,
                "metrics": str(training_log.path), "counts": dict(sorted(counts.items())),
                "resumed_from": resumed_from}
    finally:
        if training_log is not None:
            training_log.close()
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
