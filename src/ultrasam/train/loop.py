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
import math
import os
import random
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..modeling import Sam, build_model
from .config import TrainConfig
from .data import Batch, BatchLoader, MixingSampler, TrainImages, position_seed
from .losses import prompt_losses, select_best
from .prompts import (BOX_BR, BOX_TL, PAD, Prompts, add_clicks, concat_prompts,
                      corrective_clicks, refinement_prompts, simulate_prompts)
from .schedule import lr_factor

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "ultrasam-train-v1"
_STEP_FILE = re.compile(r"step_(\d+)\.pt$")


# ------------------------------------------------------------------------------------ LoRA
class LoRALinear(nn.Module):
    """``base(x) + (alpha / rank) * x A^T B^T``: a frozen Linear plus a low-rank update.

    A (rank x in) starts small and random, B (out x rank) at zero, so the wrapped layer starts
    as the plain one.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.base = base
        self.scale = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.t() @ self.lora_b.t()) * self.scale

    def merged(self) -> nn.Linear:
        """The plain Linear with the update folded into its weight."""
        with torch.no_grad():
            self.base.weight += (self.lora_b @ self.lora_a) * self.scale
        return self.base


def add_lora(model: Sam, rank: int, alpha: float) -> int:
    """Wrap every image-encoder ``attn.qkv`` in :class:`LoRALinear`; returns how many."""
    n = 0
    for module in model.image_encoder.modules():
        qkv = getattr(module, "qkv", None)
        if isinstance(qkv, nn.Linear):
            module.qkv = LoRALinear(qkv, rank, alpha)
            n += 1
    if n == 0:
        raise ValueError("the image encoder has no attention qkv layers to adapt")
    return n


def merge_lora(model: Sam) -> None:
    """Fold every LoRA update into its Linear, restoring SAM's parameter names."""
    for module in model.image_encoder.modules():
        if isinstance(getattr(module, "qkv", None), LoRALinear):
            module.qkv = module.qkv.merged()


# ------------------------------------------------------------------------ training forward
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


# ----------------------------------------------------------------------- state and storage
def rng_state() -> dict[str, Any]:
    """This process's RNG states, in types ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)),
                  *[float(v) if isinstance(v, float) else int(v) for v in np_state[2:]]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_tuples(state["python"]))
    name, key, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(value: Any) -> Any:
    # random.setstate needs tuples; a round trip through torch.save keeps them, but be lenient.
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically: a temporary file in the same folder, then ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A training checkpoint, loaded safely on CPU; ``ValueError`` for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training checkpoint not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an ultrasam training checkpoint ({CHECKPOINT_FORMAT})")
    return state


def checkpoints_in(folder: Path) -> list[Path]:
    """``step_N.pt`` files of a folder, oldest step first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP_FILE.search(p.name))]
    return [p for _, p in sorted(found)]


def _init_distributed(device: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device); joins the process group when ``WORLD_SIZE`` > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank if world > 1 else (dev.index or 0))
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return rank, world, dev


def _gather(obj: Any, world: int) -> list[Any]:
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


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
    rank, world, device = _init_distributed(run.device)
    main = rank == 0
    out_dir = Path(run.out_dir)
    ckpt_dir = out_dir / "checkpoints"
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1, sort_keys=True)
                                             + "\n", encoding="utf-8")
    writer = None
    try:
        # 2. Model (same seed everywhere: every process starts from identical weights), the
        #    weights-only warm start, frozen encoder / LoRA.
        random.seed(run.seed)
        np.random.seed(run.seed)
        torch.manual_seed(run.seed)
        sam, source_format = _build_model(cfg)
        resume = None
        if run.resume == "auto":
            found = checkpoints_in(ckpt_dir)
            resume = found[-1] if found else None
        elif run.resume != "never":
            resume = Path(run.resume)
        # A warm-started run keeps its short warm-up when it is later resumed.
        warmup = (cfg.schedule.warmup_steps if run.warm_start is None
                  else run.warm_start_warmup_steps)
        if resume is None and run.warm_start is not None:
            # Weights only (before any LoRA wrapping, so SAM's names match).
            sam.load_state_dict(_warm_start_weights(run.warm_start))
            log.info("warm start from %s (weights only, %d warm-up steps)", run.warm_start,
                     warmup)
        if cfg.model.freeze_encoder or cfg.model.lora_rank > 0:
            sam.image_encoder.requires_grad_(False)
        if cfg.model.lora_rank > 0:
            n = add_lora(sam, cfg.model.lora_rank, cfg.model.lora_alpha)
            log.info("LoRA rank %d on %d qkv layers", cfg.model.lora_rank, n)
        sam.to(device).train()
        net: nn.Module = PromptedTraining(sam, cfg)
        if world > 1:
            # Some parameters sit idle in some steps (e.g. the mask-prompt path without
            # refinement or ellipse prompts), hence find_unused_parameters.
            net = nn.parallel.DistributedDataParallel(
                net, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=True)

        # 3. Data: usable images, the sampler (this process's shard), the batch loader.
        images = TrainImages(cfg.data.paths, datasets=cfg.data.datasets, split=cfg.data.split,
                             exclude=cfg.data.exclude,
                             min_instance_area=cfg.data.min_instance_area)
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
        metrics_path = out_dir / "metrics.jsonl"
        if main and run.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=step + 1)
            except ImportError:
                log.info("tensorboard is not installed: metrics go to %s only", metrics_path)
        progress = None
        if main and run.progress:
            try:
                from tqdm import tqdm
            except ImportError:  # optional: the JSONL file and the log carry the progress
                log.info("tqdm is not installed: no progress bar")
            else:
                progress = tqdm(total=run.steps, initial=step, desc="train", unit="step")
        use_bf16 = run.bf16 and device.type == "cuda"
        window: dict[str, float] = {}
        first_loss = last_loss = None
        last_ckpt = str(checkpoints_in(ckpt_dir)[-1]) if checkpoints_in(ckpt_dir) else None
        tic = time.perf_counter()

        # 7. The loop: one iteration = one optimiser update.
        while step < run.steps:
            lr = cfg.optim.lr * lr_factor(
                step, total_steps=run.steps, kind=cfg.schedule.kind, warmup_steps=warmup,
                warmup_factor=cfg.schedule.warmup_factor, milestones=cfg.schedule.milestones,
                gamma=cfg.schedule.gamma, min_factor=cfg.schedule.min_factor)
            for group in optimizer.param_groups:
                group["lr"] = lr
            # 7a. The step's micro-batches first: the loss is normalised by the number of
            # prompts over all micro-batches and processes, so gradients equal those of one
            # big batch on one process.
            batches = [loader.next_batch().to(device) for _ in range(cfg.optim.accumulate)]
            n_prompts = torch.tensor(float(sum(len(b.targets) for b in batches)), device=device)
            if world > 1:
                dist.all_reduce(n_prompts)
            sums: dict[str, torch.Tensor] = {}
            bad = torch.zeros((), device=device)
            optimizer.zero_grad(set_to_none=True)
            for i, batch in enumerate(batches):
                # 7b. Prompts: per image, from a generator seeded by the image's position.
                gens = [torch.Generator(device=device).manual_seed(
                    position_seed(run.seed, e, k, 1)) for e, k in batch.positions]
                parts = [simulate_prompts(
                    masks, gen, mask_size=sam.config.mask_size, input_size=sam.img_size,
                    p_box=cfg.prompts.p_box, box_jitter=cfg.prompts.box_jitter,
                    p_multi_point=cfg.prompts.p_multi_point,
                    max_positive=cfg.prompts.max_positive, max_negative=cfg.prompts.max_negative,
                    p_ellipse_mask=cfg.prompts.p_ellipse_mask,
                    ellipse_logit=cfg.prompts.ellipse_logit)
                    for masks, gen in zip(batch.masks, gens)]
                prompts = concat_prompts(parts, sam.config.mask_size)
                # 7c. Forward under bf16 autocast on GPU; DDP syncs only on the last backward.
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
            # 7d. Stop on a non-finite loss or gradient, naming the step and the images.
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.clip_grad_norm
                                                       if cfg.optim.clip_grad_norm > 0
                                                       else float("inf"))
            bad = torch.maximum(bad, (~torch.isfinite(grad_norm)).float())
            if world > 1:
                dist.all_reduce(bad, op=dist.ReduceOp.MAX)
            if bad.item() > 0:
                ids = sorted(i for part in _gather([b.ids for b in batches], world)
                             for ids in part for i in ids)
                raise RuntimeError(f"non-finite loss or gradient at step {step + 1} on images "
                                   f"{ids}; the last good checkpoint is {last_ckpt}")
            optimizer.step()
            step += 1

            # 7e. Metrics: sums over every process, averaged per prompt.
            stats = torch.stack([sums[k] for k in sorted(sums)] + [n_prompts / world])
            if world > 1:
                dist.all_reduce(stats)
            n_total = stats[-1].item()
            for key, value in zip(sorted(sums), stats[:-1].tolist()):
                window[key] = window.get(key, 0.0) + value / n_total
            window["grad_norm"] = window.get("grad_norm", 0.0) + grad_norm.item()
            window["n"] = window.get("n", 0.0) + 1
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{sums['loss'].item() / n_prompts.item() * world:.4f}")
            if step % run.log_every == 0 or step == run.steps:
                n = window.pop("n")
                record = {k: v / n for k, v in sorted(window.items())}
                elapsed = time.perf_counter() - tic
                record.update(step=step, lr=lr, seconds=round(elapsed, 3),
                              images_per_s=n * cfg.optim.accumulate * world
                              * cfg.data.images_per_batch / max(elapsed, 1e-9))
                window, tic = {}, time.perf_counter()
                first_loss = record["loss"] if first_loss is None else first_loss
                last_loss = record["loss"]
                if main:
                    with open(metrics_path, "a", encoding="utf-8") as f:
                        f.write(json.dumps(record, sort_keys=True) + "\n")
                    if writer is not None:
                        for k, v in record.items():
                            writer.add_scalar(f"train/{k}", v, step)

            # 7f. Checkpoint atomically (every process contributes its sampler and RNG state).
            if step % run.checkpoint_every == 0 or step == run.steps:
                samplers = _gather(sampler.state_dict(), world)
                rngs = _gather(rng_state(), world)
                if main:
                    path = ckpt_dir / f"step_{step:07d}.pt"
                    save_checkpoint(path, {
                        "format": CHECKPOINT_FORMAT, "step": step,
                        "model": {k: v.detach().cpu() for k, v in sam.state_dict().items()},
                        "optimizer": optimizer.state_dict(), "sampler": samplers, "rng": rngs,
                        "config": cfg.to_dict(), "model_config": sam.config.to_dict()})
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
        if progress is not None:
            progress.close()
        counts = {**dict(images.counts), **dict(loader.counts)}
        return {"step": step, "first_loss": first_loss, "last_loss": last_loss,
                "checkpoint": last_ckpt, "export": export, "metrics": str(metrics_path),
                "counts": dict(sorted(counts.items())), "resumed_from": resumed_from}
    finally:
        if writer is not None:
            writer.close()
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
