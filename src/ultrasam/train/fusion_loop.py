"""The CPU recipe of the default model: early-fusion training with simulated corrective clicks.

``ultrasam train configs/default_cpu.yaml`` runs :func:`train_fusion` when the config says
``recipe: fusion``. One step:

1. draw B instances (weighted by dataset) from the decoded cache (``fusion_cache``);
2. augment them (``fusion_augment``) and normalise as the predictor does (padding = 0);
3. simulate first prompts (boxes or clicks, ``fusion_prompts``) and encode the images once;
4. with probability ``p_click_rounds``, run 1..``max_click_rounds`` no-grad rounds, each adding
   a corrective click per sample and passing the previous logits as the mask prompt (RITM's
   iterative training); some point-prompted rows instead get the box of their previous mask and
   no clicks, which is what the second pass of ``refine=True`` feeds the model;
5. decode with gradients and take BCE + Dice on the single-mask output, the best of the three
   multimask outputs, the coarse 1/4 output, and an MSE on the predicted IoUs.

Every random draw of step ``k`` comes from generators seeded by ``(seed, k)``, so a run killed
and resumed from its last checkpoint (model, optimiser, step) continues exactly. Runs are
bounded by ``run.max_seconds`` of wall time; a later run continues from the checkpoint in
``run.out_dir`` (or warm-starts from exported weights with ``model.init_from``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from ..config import get_config
from ..evaluate.prompts import mask_box_xyxy
from ..modeling.build import build_model
from ..modeling.fusion import FusionNet, rasterise_prompts
from .config import build_dataclass, parse_override, read_config_file, set_dotted
from .fusion_augment import AugmentConfig, augment
from .fusion_cache import TrainCache, build_cache, load_cache
from .fusion_prompts import PromptBatch, corrective_clicks, initial_prompts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FusionModelSection:
    """``init_from``: warm-start weights (not the optimiser): a native model folder, or an
    earlier fusion run folder, whose ``last.pt`` gives the full-precision weights."""

    variant: str = "fusion"
    overrides: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None


@dataclass(frozen=True)
class FusionDataSection:
    """``sources``: COCO files / corpus folders of the *training* split (e.g. the ``train``
    merge written by ``ultrasam data split``); ``exclude``: never trained on; ``weights``:
    per-dataset sampling multiplier (1 = proportional to its images); ``eval_source``: the
    corpus folder of the learning-curve dataset, ``eval_split`` its split, ``eval_images`` the
    size of the fixed seeded subset."""

    sources: tuple[str, ...] = ()
    split: str | None = None
    exclude: tuple[str, ...] = ("MMOTU_2d:val",)
    weights: dict[str, float] = field(default_factory=dict)
    cache_dir: str = "runs/cache_fusion"
    eval_source: str | None = None
    eval_split: str = "val"
    eval_images: int = 100


@dataclass(frozen=True)
class FusionPromptSection:
    p_box: float = 0.5
    box_jitter: float = 0.05
    p_multi: float = 0.2
    p_click_rounds: float = 0.5
    max_click_rounds: int = 2
    p_refine_style: float = 0.2


@dataclass(frozen=True)
class FusionOptimSection:
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 300
    min_lr_ratio: float = 0.02
    grad_clip: float = 1.0


@dataclass(frozen=True)
class FusionLossSection:
    multimask: float = 0.5
    coarse: float = 0.4
    iou: float = 1.0


@dataclass(frozen=True)
class FusionRunSection:
    """``steps``: the schedule's length; ``max_seconds``: wall-time bound of this run (it
    checkpoints and stops; a rerun continues). ``nice``: added to the process's niceness."""

    out_dir: str = "runs/default_cpu"
    steps: int = 4000
    max_seconds: float = 10_000.0
    seed: int = 0
    threads: int = 2
    nice: int = 10
    bf16: bool = True
    checkpoint_every: int = 100
    eval_every: int = 250


@dataclass(frozen=True)
class FusionTrainConfig:
    recipe: Literal["fusion"] = "fusion"
    model: FusionModelSection = FusionModelSection()
    data: FusionDataSection = FusionDataSection()
    prompts: FusionPromptSection = FusionPromptSection()
    augment: AugmentConfig = AugmentConfig()
    optim: FusionOptimSection = FusionOptimSection()
    loss: FusionLossSection = FusionLossSection()
    run: FusionRunSection = FusionRunSection()

    def to_dict(self) -> dict[str, Any]:
        import dataclasses

        return json.loads(json.dumps(dataclasses.asdict(self)))


def is_fusion_config(path: str | Path) -> bool:
    data = read_config_file(Path(path))
    return isinstance(data, dict) and data.get("recipe") == "fusion"


def load_fusion_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()
                       ) -> FusionTrainConfig:
    data = read_config_file(Path(path)) or {}
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(data, key, value)
    cfg: FusionTrainConfig = build_dataclass(FusionTrainConfig, data, "")
    return cfg


# ----------------------------------------------------------------------------- pieces
def lr_at(step: int, cfg: FusionOptimSection, total: int) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio`` x lr at ``total`` steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def instance_probabilities(cache: TrainCache, weights: dict[str, float]) -> np.ndarray:
    """Each image equally likely (times its dataset's weight), split among its instances."""
    img = cache.instances[:, 0]
    per_image = np.bincount(img, minlength=len(cache.datasets)).astype(np.float64)
    w = np.array([weights.get(cache.datasets[i], 1.0) for i in img], np.float64)
    p = w / per_image[img]
    return p / p.sum()


def normalise(images: torch.Tensor, valid: torch.Tensor, model: FusionNet) -> torch.Tensor:
    """0-255 images B x 3 x S x S -> model input, padding (outside ``valid``) = 0 as at
    inference (``PromptableModel.preprocess`` pads after normalising)."""
    return (images - model.pixel_mean) / model.pixel_std * valid[:, None]


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """logits P x M x H x W, target P x 1 x H x W -> P x M."""
    p = torch.sigmoid(logits)
    inter = (p * target).sum(dim=(2, 3))
    return 1 - (2 * inter + 1) / (p.sum(dim=(2, 3)) + target.sum(dim=(2, 3)) + 1)


def mask_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + Dice per output: P x M."""
    bce = F.binary_cross_entropy_with_logits(logits, target.expand_as(logits),
                                             reduction="none").mean(dim=(2, 3))
    return bce + dice_loss(logits, target)


def batch_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """pred P x M x H x W bool, target P x 1 x H x W bool -> IoU P x M."""
    inter = (pred & target).sum(dim=(2, 3)).float()
    union = (pred | target).sum(dim=(2, 3)).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


# ----------------------------------------------------------------------------- one step
@dataclass
class StepData:
    x: torch.Tensor        # B x 3 x S x S normalised input
    masks: torch.Tensor    # B x S x S bool ground truth
    valid: torch.Tensor    # B x S x S bool valid region


def draw_batch(cache: TrainCache, probs: np.ndarray, model: FusionNet, cfg: FusionTrainConfig,
               rng: np.random.Generator, gen: torch.Generator) -> StepData:
    """Steps 1-2: draw, augment, normalise."""
    b, s = cfg.optim.batch_size, cache.size
    inst = rng.choice(len(probs), size=b, p=probs)
    img_idx = cache.instances[inst, 0]
    images = torch.from_numpy(np.stack([cache.images[i] for i in img_idx]))
    images = images.permute(0, 3, 1, 2).float()
    masks = torch.from_numpy(np.stack([cache.mask(int(k)) for k in inst]))
    valid = torch.zeros(b, s, s, dtype=torch.bool)
    for j, i in enumerate(img_idx):
        h, w = cache.sizes[i]
        valid[j, :h, :w] = True
    a_images, a_masks, a_valid = augment(images, masks, valid, cfg.augment, gen)
    # A warp that pushed the instance (almost) out of view: keep that sample unwarped.
    lost = a_masks.sum(dim=(1, 2)) < 12
    a_images[lost], a_masks[lost], a_valid[lost] = images[lost], masks[lost], valid[lost]
    return StepData(normalise(a_images, a_valid, model), a_masks, a_valid)


def simulate_prompts(model: FusionNet, emb: torch.Tensor, data: StepData,
                     cfg: FusionTrainConfig, rng: np.random.Generator, autocast: Any
                     ) -> tuple[PromptBatch, torch.Tensor, torch.Tensor]:
    """Steps 3-4: first prompts, then no-grad corrective rounds.

    Each sample draws its own number of rounds (0 with probability 1 - ``p_click_rounds``), so
    every batch mixes first prompts with corrected ones: BatchNorm's batch statistics then
    match its running statistics (a batch where all or none of the rows carry a previous mask
    teaches the network a per-batch offset that inference never sees). The rounds run in
    eval mode, as inference does, and do not touch the running statistics.
    Returns (prompts, previous logits B x 1 x S x S, mask_present B bool).
    """
    pc = cfg.prompts
    gt, valid = data.masks.numpy(), data.valid.numpy()
    b, s = gt.shape[0], gt.shape[1]
    prompts, is_box = initial_prompts(gt, valid, rng, pc.p_box, pc.box_jitter, pc.p_multi)
    rounds = np.where(rng.random(b) < pc.p_click_rounds,
                      rng.integers(1, pc.max_click_rounds + 1, size=b), 0)
    prev = torch.zeros(b, 1, s, s)
    present = torch.zeros(b, dtype=torch.bool)
    if rounds.max() > 0:
        model.eval()
        for k in range(int(rounds.max())):
            with torch.no_grad(), autocast():
                logits, _ = model.decode_all(emb.detach(), prompts.coords, prompts.labels,
                                             prompts.boxes, prev, mask_present=present)
            out = logits[:, :1].float()
            active = rounds > k
            xy, lab, ok = corrective_clicks((out[:, 0] > 0).numpy(), gt, valid, rng)
            act = torch.from_numpy(active)
            prev = torch.where(act[:, None, None, None], out, prev)
            present = present | act
            prompts = prompts.with_click(xy, lab, ok & active)
        model.train()
        # Refine-style rows (point prompts with a previous mask): the previous mask's box and
        # no clicks, which is what the second pass of ``refine=True`` feeds the model.
        pred = (prev[:, 0] > 0).numpy()
        for i in range(b):
            if (present[i] and not is_box[i] and pred[i].any()
                    and rng.random() < pc.p_refine_style):
                prompts.boxes[i] = torch.as_tensor(mask_box_xyxy(pred[i]), dtype=torch.float32)
                prompts.labels[i] = -1
    return prompts, prev, present


def train_step(model: FusionNet, opt: torch.optim.Optimizer, cache: TrainCache,
               probs: np.ndarray, cfg: FusionTrainConfig, step: int, total: int
               ) -> dict[str, float]:
    rng = np.random.default_rng([cfg.run.seed, step])
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if cfg.run.bf16 \
        else (lambda: torch.autocast("cpu", enabled=False))
    data = draw_batch(cache, probs, model, cfg, rng, gen)
    x = data.x.contiguous(memory_format=torch.channels_last)
    with autocast():
        emb = model.encode(x)
    prompts, prev, present = simulate_prompts(model, emb, data, cfg, rng, autocast)
    with autocast():
        logits, iou, coarse = model.decode_all(emb, prompts.coords, prompts.labels,
                                               prompts.boxes, prev, coarse=True,
                                               mask_present=present)
    logits, iou, coarse = logits.float(), iou.float(), coarse.float()
    target = data.masks[:, None].float()
    per_out = mask_loss(logits, target)
    l_single = per_out[:, 0].mean()
    l_multi = per_out[:, 1:].min(dim=1).values.mean()
    t4 = F.avg_pool2d(target, 4)
    l_coarse = (F.binary_cross_entropy_with_logits(coarse[:, :1], t4)
                + dice_loss(coarse[:, :1], t4).mean())
    with torch.no_grad():
        true_iou = batch_iou(logits > 0, data.masks[:, None])
    l_iou = F.mse_loss(iou, true_iou)
    lw = cfg.loss
    loss = l_single + lw.multimask * l_multi + lw.coarse * l_coarse + lw.iou * l_iou
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite loss at step {step}")
    lr = lr_at(step, cfg.optim, total)
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
    opt.step()
    return {"loss": loss.item(), "single": l_single.item(), "multi": l_multi.item(),
            "coarse": l_coarse.item(), "iou_mse": l_iou.item(), "grad_norm": gnorm.item(),
            "lr": lr, "train_iou": float(true_iou[:, 0].mean())}


# ----------------------------------------------------------------------------- evaluation
@dataclass
class EvalSet:
    """A fixed subset at the training frame: inputs, masks, valid regions, box and point."""

    x_raw: torch.Tensor
    masks: torch.Tensor
    valid: torch.Tensor
    boxes: torch.Tensor
    points: torch.Tensor


def build_eval_set(cache: TrainCache, n_images: int, seed: int) -> EvalSet:
    from ..evaluate.prompts import centroid_point

    images = sorted(set(int(i) for i in cache.instances[:, 0]))
    chosen = set(np.random.default_rng(seed).permutation(images)[:n_images].tolist())
    rows = [k for k in range(len(cache.instances)) if int(cache.instances[k, 0]) in chosen]
    s = cache.size
    xs, ms, vs, bs, ps = [], [], [], [], []
    for k in rows:
        i = int(cache.instances[k, 0])
        m = cache.mask(k)
        xs.append(torch.from_numpy(np.array(cache.images[i])).permute(2, 0, 1).float())
        ms.append(torch.from_numpy(m))
        v = torch.zeros(s, s, dtype=torch.bool)
        h, w = cache.sizes[i]
        v[:h, :w] = True
        vs.append(v)
        bs.append(torch.as_tensor(mask_box_xyxy(m), dtype=torch.float32))
        ps.append(torch.as_tensor(centroid_point(m), dtype=torch.float32))
    return EvalSet(torch.stack(xs), torch.stack(ms), torch.stack(vs), torch.stack(bs),
                   torch.stack(ps))


@torch.no_grad()
def evaluate_curve(model: FusionNet, ev: EvalSet, batch: int = 32) -> dict[str, float]:
    """Mean Dice of the single-mask output for the GT box and the centroid point, and the
    inscribed ellipse's Dice, at the training frame (S x S)."""
    model.eval()
    dice = {"box": [], "point": [], "ellipse": []}
    for start in range(0, len(ev.masks), batch):
        sl = slice(start, start + batch)
        x = normalise(ev.x_raw[sl], ev.valid[sl], model)
        emb = model.encode(x)
        gt = ev.masks[sl]
        n = gt.shape[0]
        for name, kw in (("box", {"boxes": ev.boxes[sl]}),
                         ("point", {"point_coords": ev.points[sl][:, None],
                                    "point_labels": torch.ones(n, 1, dtype=torch.int64)})):
            logits, _ = model.decode(emb, multimask_output=False, **kw)
            pred = logits[:, 0] > 0
            dice[name] += _dice(pred, gt).tolist()
        # The inscribed ellipse of the same box, rasterised exactly as the model's prior.
        ell = rasterise_prompts(None, None, ev.boxes[sl], None, n, model.img_size,
                                model.img_size)[:, 3] > 0.5
        dice["ellipse"] += _dice(ell, gt).tolist()
    model.train()
    return {k: float(np.mean(v)) for k, v in dice.items()}


def _dice(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    inter = (pred & gt).sum(dim=(1, 2)).float()
    return 2 * inter / (pred.sum(dim=(1, 2)) + gt.sum(dim=(1, 2))).float().clamp(min=1)


# ----------------------------------------------------------------------------- the loop
def _save(path: Path, model: FusionNet, opt: torch.optim.Optimizer, step: int,
          seen: int, elapsed: float) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optim": opt.state_dict(), "step": step,
                "seen": seen, "elapsed": elapsed}, tmp)
    os.replace(tmp, path)


def train_fusion(cfg: FusionTrainConfig) -> dict[str, Any]:
    """Train (or continue) the early-fusion model as ``cfg`` says; returns a summary."""
    run = cfg.run
    if run.nice:
        os.nice(run.nice)
    torch.set_num_threads(run.threads)
    out = Path(run.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1, sort_keys=True))
    if not cfg.data.sources:
        raise ValueError("data.sources is empty: give the training split's COCO file(s)")
    s = get_config(cfg.model.variant, **cfg.model.overrides).img_size
    cache_root = Path(cfg.data.cache_dir)
    cache = load_cache(build_cache(cfg.data.sources, cache_root / f"train_{s}", s,
                                   split=cfg.data.split, exclude=cfg.data.exclude))
    probs = instance_probabilities(cache, cfg.data.weights)
    ev = None
    if cfg.data.eval_source:
        ev_cache = load_cache(build_cache([cfg.data.eval_source], cache_root / f"eval_{s}", s,
                                          split=cfg.data.eval_split))
        ev = build_eval_set(ev_cache, cfg.data.eval_images, run.seed)
    torch.manual_seed(run.seed)  # the initial weights (steps draw from their own generators)
    model = build_model(get_config(cfg.model.variant, **cfg.model.overrides))
    if not isinstance(model, FusionNet):
        raise ValueError(f"recipe 'fusion' trains FusionNet variants, not {cfg.model.variant}")
    if cfg.model.init_from:
        warm_start(model, _init_weights(Path(cfg.model.init_from)))
    model = model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr,
                            weight_decay=cfg.optim.weight_decay)
    ckpt = out / "last.pt"
    step, seen, elapsed = 0, 0, 0.0
    if ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        step, seen, elapsed = int(state["step"]), int(state["seen"]), float(state["elapsed"])
        log.info("resumed from %s at step %d (%d samples)", ckpt, step, seen)
    metrics_f = (out / "metrics.jsonl").open("a")
    curve_f = out / "curve.csv"
    if not curve_f.exists():
        curve_f.write_text("step,images_seen,elapsed_s,box_dice,point_dice,ellipse_dice\n")
    start = time.time()
    stopped = "steps"
    while step < run.steps:
        if time.time() - start > run.max_seconds:
            stopped = "max_seconds"
            break
        t0 = time.time()
        m = train_step(model, opt, cache, probs, cfg, step, run.steps)
        step += 1
        seen += cfg.optim.batch_size
        m.update(step=step, seen=seen, step_s=time.time() - t0,
                 elapsed=elapsed + time.time() - start)
        metrics_f.write(json.dumps(m) + "\n")
        metrics_f.flush()
        if step % 20 == 0:
            log.info("step %d loss %.4f iou %.3f lr %.2e %.2f s/step", step, m["loss"],
                     m["train_iou"], m["lr"], m["step_s"])
        if step % run.checkpoint_every == 0 or step == run.steps:
            _save(ckpt, model, opt, step, seen, elapsed + time.time() - start)
        if ev is not None and (step % run.eval_every == 0 or step == run.steps):
            d = evaluate_curve(model, ev)
            with curve_f.open("a") as f:
                f.write(f"{step},{seen},{elapsed + time.time() - start:.0f},{d['box']:.4f},"
                        f"{d['point']:.4f},{d['ellipse']:.4f}\n")
            log.info("eval step %d: box %.4f point %.4f (ellipse %.4f)", step, d["box"],
                     d["point"], d["ellipse"])
    _save(ckpt, model, opt, step, seen, elapsed + time.time() - start)
    metrics_f.close()
    return {"out_dir": str(out), "step": step, "images_seen": seen, "stopped": stopped}


def warm_start(model: FusionNet, state: dict[str, torch.Tensor]) -> list[str]:
    """Load warm-start weights strictly, except that blocks added since which start as the
    identity (``FusionNet.IDENTITY_AT_INIT``: the global-context blocks) may be missing.
    Returns the keys left at their initial values; any other missing or unexpected key, or a
    shape mismatch, raises."""
    result = model.load_state_dict(state, strict=False)
    new = [k for k in result.missing_keys if k.startswith(model.IDENTITY_AT_INIT)]
    other = sorted(set(result.missing_keys) - set(new))
    if other or result.unexpected_keys:
        raise ValueError(f"warm-start weights do not fit the model: missing {other}, "
                         f"unexpected {sorted(result.unexpected_keys)}")
    if new:
        log.info("warm start: %d new context-block tensors start at the identity", len(new))
    return new


def _init_weights(src: Path) -> dict[str, torch.Tensor]:
    """Warm-start weights: a run folder's fp32 ``last.pt`` (exported folders hold fp16)."""
    if (src / "last.pt").is_file():
        return torch.load(src / "last.pt", map_location="cpu", weights_only=True)["model"]
    from ..weights.checkpoints import load_model

    return load_model(src).state_dict()


def export_fusion(run_dir: str | Path, out_dir: str | Path, card: str | None = None) -> Path:
    """Write the run's weights as a native folder (fp16 safetensors + config.json + card)."""
    from ..weights.checkpoints import save_native

    run_dir = Path(run_dir)
    cfg = json.loads((run_dir / "config.json").read_text())
    model = build_model(get_config(cfg["model"]["variant"], **cfg["model"]["overrides"]))
    state = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    return save_native(model.eval(), out_dir, source=str(run_dir.name), source_format=None,
                       card=card, licence="other", dtype=torch.float16)


__all__ = ["FusionTrainConfig", "export_fusion", "is_fusion_config",
           "load_fusion_config", "train_fusion"]
