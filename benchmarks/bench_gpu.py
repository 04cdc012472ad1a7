"""GPU speed of ViT-B SAM, Meta's reference vs ultrasam, in one run on one GPU (issue 6).

Measured in the same process, on the same card:

- ``peak_tflops``: a large bf16 matrix product (8192^3), the card's practical ceiling;
- model FLOPs per image from ``torch.utils.flop_counter.FlopCounterMode`` (attention and the
  rel-pos terms included, on the eager formulation, so every variant is judged against the same
  work): inference counted on the meta device; the training steps counted while one real step
  runs eagerly on the device (its prompts and refinement depend on the data);
- Meta's ``segment_anything`` 1.0 (random ViT-B weights, bf16 autocast, eager, as shipped):
  encoder inference images/s at 1024 px batch 8, and the common fine-tuning step (batch 4
  images, one box each, encoder once, decoder called image by image as fine-tuning scripts
  drive it, focal + dice on the 256 x 256 logits, backward, ``torch.optim.AdamW``), each with
  its peak memory;
- ultrasam on the same workloads for each fast attention backend (``fold``, ``flex``; bf16
  autocast, ``torch.compile``, fused AdamW), plus eager bf16 SDPA as a no-compile baseline.
  Its training steps are the real one, ``ultrasam.train.step.train_step`` (what ``ultrasam
  train`` runs: simulated prompts, ``PromptedTraining``'s passes, focal + dice + IoU-regression
  loss, clipping, the optimiser step): ``train`` with one jittered box per image and no
  refinement pass (the reference's workload), ``recipe`` with the training defaults (up to 8
  instances per image, box or point prompts, the refinement pass, loss on both passes);
- MFU = counted FLOPs x images/s / ``peak_tflops``;
- correctness: ultrasam's fast inference path (compiled bf16 encoder, fp32 decoder) vs its
  eager fp32 path, same randomised weights (rel-pos tables, position embedding and the
  hypernetwork output layer scaled so that masks are neither empty nor full): relative logit
  error ||fast - eager|| / ||eager|| over all prompts, and the mean IoU of the low-res masks
  (logits > 0) over prompts whose eager mask covers 5-95 % of the 256 x 256 mask.

Headline keys (``ultrasam_infer_img_s``, ``ultrasam_train_img_s``, ...) take the best measured
variant and name it (``*_variant``); every variant's numbers are kept under ``variants``.
Sections run in priority order within ``--budget-s``; a failing section records its error and
the run goes on; the JSON is rewritten after every section, so a killed run keeps what it had.

GPU run (Python 3.12 + torch 2.11 there, no package index; Meta's pure-Python package
travels from this checkout's venv, the results come back through $OUT): device ``run`` with
carry ``[".venv/lib/python3.11/site-packages/segment_anything"]``, timeout_s 420, command

    PYTHONUNBUFFERED=1 PYTHONPATH=src:.venv/lib/python3.11/site-packages timeout 360 python3 benchmarks/bench_gpu.py --out-dir $OUT --budget-s 270 2>&1 | tee $OUT/bench_gpu.log

then copy ``gpu_<date>.json`` from the returned files into ``benchmarks/results/`` and run
``python benchmarks/gpu_table.py``. (Where the venv is missing, carry Meta's wheel instead: put
``segment_anything-1.0-py3-none-any.whl`` in an ignored ``.whl/``, carry ``.whl`` and prefix
the command with ``pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl &&``
and ``/tmp/site`` on PYTHONPATH.)

CPU smoke run (tiny configs, a few steps, compile through dynamo + AOTAutograd without
Inductor code generation; numbers meaningless, proves the script runs end to end):

    python benchmarks/bench_gpu.py --device cpu --tiny --out-dir /tmp/bench_gpu_smoke
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import gc
import json
import logging
import platform
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))  # run from a bare checkout (the GPU machine)

from _reference import import_segment_anything  # noqa: E402

from ultrasam.config import ModelConfig, get_config  # noqa: E402
from ultrasam.modeling import Sam, build_model  # noqa: E402
from ultrasam.modeling.speed import adamw, optimise_for_gpu  # noqa: E402
from ultrasam.train.config import TrainConfig, load_config  # noqa: E402
from ultrasam.train.data import Batch  # noqa: E402
from ultrasam.train.prompted import PromptedTraining  # noqa: E402
from ultrasam.train.step import train_step  # noqa: E402

log = logging.getLogger("bench_gpu")
RESULTS = HERE / "results"
FAST_BACKENDS = ("fold", "flex")


# ----------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Workload:
    """Sizes of one run: full ViT-B on a GPU, or the tiny config for the CPU smoke test."""

    config: ModelConfig
    infer_batch: int
    train_batch: int
    warmup: int
    iters: int
    max_instances: int
    matmul_n: int
    compile_backend: str  # "inductor" on GPU; "aot_eager" traces without code generation


def workload(tiny: bool, device: torch.device, iters: int | None) -> Workload:
    if tiny:
        return Workload(get_config("tiny"), infer_batch=2, train_batch=2, warmup=1,
                        iters=iters or 2, max_instances=3, matmul_n=256,
                        compile_backend="aot_eager")
    return Workload(get_config("vit_b"), infer_batch=8, train_batch=4, warmup=3,
                    iters=iters or 10, max_instances=8, matmul_n=8192,
                    compile_backend="inductor" if device.type == "cuda" else "aot_eager")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def timed(fn: Callable[[], object], warmup: int, iters: int, device: torch.device
          ) -> tuple[float, float | None]:
    """Seconds per call after ``warmup`` calls, and peak memory (GiB) over the timed calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    dt = (time.perf_counter() - t0) / iters
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return dt, peak


def autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast; none on the meta device (FLOP counting)."""
    if device.type == "meta":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


# ------------------------------------------------------------------------------- inputs
def images(b: int, size: int, seed: int, device: torch.device) -> torch.Tensor:
    """B x 3 x S x S normalised model input: smooth random structure plus noise."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(b, 3, 8, 8, generator=g)
    x = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    return (x + 0.3 * torch.randn(b, 3, size, size, generator=g)).to(device)


@dataclass
class Instances:
    """P instances over B images: boxes P x 4 (XYXY, input frame), point P x 2 (inside the
    box), image_index P, targets P x 1 x L x L (ellipses inscribed in the boxes, L = mask
    size)."""

    boxes: torch.Tensor
    points: torch.Tensor
    image_index: torch.Tensor
    targets: torch.Tensor


def instances(counts: list[int], cfg: ModelConfig, seed: int, device: torch.device
              ) -> Instances:
    g = torch.Generator().manual_seed(seed)
    p, s, m = sum(counts), cfg.img_size, cfg.mask_size
    centre = torch.rand(p, 2, generator=g) * 0.6 * s + 0.2 * s
    half = (torch.rand(p, 2, generator=g) * 0.15 + 0.05) * s
    boxes = torch.cat([centre - half, centre + half], dim=1).clamp(0, s - 1)
    points = centre + (torch.rand(p, 2, generator=g) - 0.5) * half
    yy, xx = torch.meshgrid(torch.arange(m) + 0.5, torch.arange(m) + 0.5, indexing="ij")
    c, h = centre * m / s, half * m / s
    inside = (((xx - c[:, None, None, 0]) / h[:, None, None, 0]) ** 2
              + ((yy - c[:, None, None, 1]) / h[:, None, None, 1]) ** 2) <= 1
    index = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    return Instances(boxes.to(device), points.to(device), index.to(device),
                     inside.float()[:, None].to(device))


def focal_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SAM's 20:1 focal + dice per mask (fp32), the reference step's loss: logits
    P x M x L x L, target P x 1 x L x L -> P x M."""
    logits = logits.float()
    target = target.expand_as(logits)
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    focal = ((0.25 * target + 0.75 * (1 - target)) * ce * (1 - p_t) ** 2).mean((-1, -2))
    dice = 1 - (2 * (p * target).sum((-1, -2)) + 1) / (p.sum((-1, -2)) + target.sum((-1, -2)) + 1)
    return 20 * focal + dice


# ------------------------------------------------------------------------------- models
def randomise_(model: Sam, seed: int) -> Sam:
    """Weights that make the correctness check meaningful (speed does not depend on them).

    SAM initialises the rel-pos tables and the position embedding at zero (the rel-pos path
    would be untested) and its random decoder gives logits of ~0.05 (masks decided by noise):
    rel-pos N(0, 0.3^2), pos_embed N(0, 0.5^2), hypernetwork output layers x4.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".rel_pos_" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith("pos_embed"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif "output_hypernetworks_mlps" in name and name.endswith("layers.2.weight"):
                p.mul_(4.0)
    return model


def meta_sam(sa: Any, cfg: ModelConfig) -> nn.Module:
    """Meta's Sam with ``cfg``'s sizes (``sam_model_registry`` for ViT-B), random weights."""
    if cfg.variant == "vit_b" and cfg.img_size == 1024:
        return sa.sam_model_registry["vit_b"](checkpoint=None)
    m = sa.modeling
    grid = cfg.embed_size
    return m.Sam(
        image_encoder=m.ImageEncoderViT(
            depth=cfg.encoder_depth, embed_dim=cfg.encoder_embed_dim, img_size=cfg.img_size,
            mlp_ratio=cfg.mlp_ratio, norm_layer=lambda d: nn.LayerNorm(d, eps=1e-6),
            num_heads=cfg.encoder_num_heads, patch_size=cfg.patch_size, qkv_bias=True,
            use_rel_pos=True, global_attn_indexes=cfg.encoder_global_attn_indexes,
            window_size=cfg.window_size, out_chans=cfg.prompt_embed_dim),
        prompt_encoder=m.PromptEncoder(
            embed_dim=cfg.prompt_embed_dim, image_embedding_size=(grid, grid),
            input_image_size=(cfg.img_size, cfg.img_size), mask_in_chans=cfg.mask_in_chans),
        mask_decoder=m.MaskDecoder(
            num_multimask_outputs=cfg.num_multimask_outputs,
            transformer=m.TwoWayTransformer(
                depth=cfg.decoder_depth, embedding_dim=cfg.prompt_embed_dim,
                mlp_dim=cfg.decoder_mlp_dim, num_heads=cfg.decoder_num_heads,
                attention_downsample_rate=cfg.attention_downsample_rate),
            transformer_dim=cfg.prompt_embed_dim, iou_head_depth=cfg.iou_head_depth,
            iou_head_hidden_dim=cfg.iou_head_hidden_dim),
        pixel_mean=list(cfg.pixel_mean), pixel_std=list(cfg.pixel_std))


def fast_model(cfg: ModelConfig, backend: str, wl: Workload, device: torch.device, *,
               train: bool, cuda_graphs: bool = False, checkpointing: bool = False,
               base: Sam | None = None) -> Sam:
    """ultrasam on its fast path (a copy of ``base`` when given, else randomised weights)."""
    model = copy.deepcopy(base) if base is not None else randomise_(build_model(cfg), 0)
    model = model.to(device).train(train)
    # Training keeps the decoder eager: compiling it would add a graph per prompt count and
    # output mode (three in this run) to the compile time, which the budget cannot spare.
    return optimise_for_gpu(model, attention=backend, compile=True, compile_decoder=not train,
                            cuda_graphs=cuda_graphs,
                            activation_checkpointing=checkpointing, decoder_fp32=not train,
                            compile_backend=wl.compile_backend)


# ---------------------------------------------------------------------------- workloads
def reference_train_step(sam: nn.Module, x: torch.Tensor, inst: Instances,
                         opt: torch.optim.Optimizer, device: torch.device) -> None:
    """The common fine-tuning step on Meta's model: decoder called image by image."""
    with autocast(device):
        emb = sam.image_encoder(x)
        pe = sam.prompt_encoder.get_dense_pe()
        losses = []
        for i in range(x.shape[0]):
            sparse, dense = sam.prompt_encoder(points=None, boxes=inst.boxes[i:i + 1],
                                               masks=None)
            low, _ = sam.mask_decoder(image_embeddings=emb[i:i + 1], image_pe=pe,
                                      sparse_prompt_embeddings=sparse,
                                      dense_prompt_embeddings=dense, multimask_output=False)
            losses.append(focal_dice(low, inst.targets[i:i + 1]))
        loss = torch.cat(losses).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def step_config(recipe: bool) -> TrainConfig:
    """The training config of a workload: ``recipe`` the training defaults (box or point
    prompts, refinement pass); else one jittered box per instance and one pass."""
    return load_config(None, [] if recipe else ["prompts.p_box=1.0", "prompts.refine=false"])


def training_batch(x: torch.Tensor, inst: Instances, cfg: ModelConfig) -> Batch:
    """The instances as ``ultrasam.train``'s batch: images 0-255 at the full input size,
    masks in the input frame (the ellipses, upsampled), targets on the logit grid."""
    s, b = cfg.img_size, x.shape[0]
    images = ((x - x.amin()) / (x.amax() - x.amin()) * 255).float()
    masks = F.interpolate(inst.targets, size=(s, s), mode="nearest")[:, 0] > 0.5
    index = inst.image_index
    return Batch(images=images, sizes=torch.tensor([[s, s]] * b, device=x.device),
                 masks=[masks[index == i] for i in range(b)], targets=inst.targets[:, 0],
                 image_index=index, positions=[(0, i) for i in range(b)],
                 ids=[f"bench/{i}" for i in range(b)])


@dataclass
class RealStep:
    """``ultrasam.train.step.train_step`` bound to a model, a batch and an optimiser."""

    model: Sam
    batch: Batch
    config: TrainConfig
    optimizer: torch.optim.Optimizer
    use_bf16: bool

    def __post_init__(self) -> None:
        self.net = PromptedTraining(self.model, self.config)
        self.params = [p for p in self.model.parameters() if p.requires_grad]

    def __call__(self) -> None:
        outcome = train_step(self.net, self.model, self.optimizer, self.params, [self.batch],
                             self.config, use_bf16=self.use_bf16)
        if not outcome.finite:
            raise RuntimeError("non-finite loss or gradient in the benchmark step")


# ----------------------------------------------------------------------------- counting
def count_flops(fn: Callable[[], object]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return float(counter.get_total_flops())


def model_flops(cfg: ModelConfig, counts: list[int], device: torch.device
                ) -> dict[str, float]:
    """FLOPs per image, eager formulation, batch 1 (the recipe at its own batch, divided by its
    image count): inference on the meta device (no compute); the training steps while one
    real step runs on ``device`` (its prompts and refinement pass depend on the data)."""
    with torch.device("meta"):
        model = build_model(cfg)
        x1 = torch.zeros(1, 3, cfg.img_size, cfg.img_size)
    with torch.no_grad():
        infer = count_flops(lambda: model.image_encoder(x1))
    eager = build_model(cfg).to(device).train()
    sgd = torch.optim.SGD(eager.parameters(), lr=0.0)
    one = training_batch(images(1, cfg.img_size, 0, device), instances([1], cfg, 0, device), cfg)
    rec = training_batch(images(len(counts), cfg.img_size, 0, device),
                         instances(counts, cfg, 0, device), cfg)
    train = count_flops(RealStep(eager, one, step_config(recipe=False), sgd, False))
    recipe = count_flops(RealStep(eager, rec, step_config(recipe=True), sgd, False)) / len(counts)
    return {"infer_flops_per_img": infer, "train_flops_per_img": train,
            "recipe_flops_per_img": recipe}


def peak_tflops(n: int, device: torch.device) -> float:
    """bf16 matrix product throughput (TFLOP/s) on n x n x n, 10 timed after 3 warm-ups."""
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=g)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=g)
    dt, _ = timed(lambda: a @ b, 3, 10, device)
    return 2 * n**3 / dt / 1e12


# ----------------------------------------------------------------------------- the run
class Run:
    """Holds the results, the clock and the budget; writes the JSON after every section."""

    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        self.args = args
        self.device = device
        self.t0 = time.perf_counter()
        date = datetime.date.today().isoformat()
        self.path = Path(args.out_dir) / f"gpu_{date}{'_tiny' if args.tiny else ''}.json"
        gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        self.res: dict[str, Any] = {
            "gpu": gpu, "date": date, "torch": torch.__version__,
            "python": platform.python_version(), "device": str(device), "tiny": args.tiny,
            "variants": {}, "sections": {}, "errors": {}, "skipped": {}}

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def save(self) -> None:
        self.res["wall_s"] = round(self.elapsed(), 1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.res, indent=2, sort_keys=True) + "\n")

    def section(self, name: str, fn: Callable[[], None], need_s: float = 0.0) -> bool:
        """Run one section unless the budget cannot fit ``need_s`` more seconds."""
        left = self.args.budget_s - self.elapsed()
        if left < need_s:
            self.res["skipped"][name] = f"budget: {left:.0f} s left, needs ~{need_s:.0f} s"
            log.warning("skip %s (%s)", name, self.res["skipped"][name])
            self.save()
            return False
        start = time.perf_counter()
        log.info("== %s (t=%.0f s)", name, self.elapsed())
        ok = True
        try:
            fn()
        except Exception as e:  # a failing section must not cost the rest of the run
            ok = False
            self.res["errors"][name] = f"{type(e).__name__}: {e}"[:2000]
            log.error("%s failed:\n%s", name, traceback.format_exc())
        self.res["sections"][name] = round(time.perf_counter() - start, 1)
        free(self.device)
        self.save()
        return ok

    def variant(self, name: str, **values: Any) -> None:
        self.res["variants"].setdefault(name, {}).update(
            {k: (round(v, 4) if isinstance(v, float) else v) for k, v in values.items()})


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: use --device cpu --tiny for the smoke run")
    torch.backends.cuda.matmul.allow_tf32 = False  # eager fp32 means fp32
    torch.backends.cudnn.allow_tf32 = False
    for key in ("recompile_limit", "cache_size_limit"):  # variants share code objects
        if hasattr(torch._dynamo.config, key):
            setattr(torch._dynamo.config, key, 64)
    wl = workload(args.tiny, device, args.iters)
    cfg = wl.config
    r = Run(args, device)
    r.res.update(workload=cfg.variant, img_size=cfg.img_size, infer_batch=wl.infer_batch,
                 train_batch=wl.train_batch, iters=wl.iters, warmup=wl.warmup)
    g = torch.Generator().manual_seed(1)
    counts = torch.randint(1, wl.max_instances + 1, (wl.train_batch,), generator=g).tolist()
    counts[0] = wl.max_instances  # "up to" N instances: the largest case always present
    r.res["recipe_instances_per_image"] = counts
    x_inf = images(wl.infer_batch, cfg.img_size, 10, device)
    x_tr = images(wl.train_batch, cfg.img_size, 11, device)
    one_box = instances([1] * wl.train_batch, cfg, 12, device)
    recipe = instances(counts, cfg, 13, device)
    n_inf, n_tr = wl.infer_batch, wl.train_batch

    def s_peak() -> None:
        r.res["peak_tflops"] = float(f"{peak_tflops(wl.matmul_n, device):.4g}")

    def s_flops() -> None:
        r.res.update({k: float(f"{v / 1e9:.6g}")
                      for k, v in model_flops(cfg, counts, device).items()})
        r.res["flops_unit"] = "GFLOP"

    sa: Any = None

    def s_reference() -> None:
        nonlocal sa
        sa = import_segment_anything()
        sam = meta_sam(sa, cfg).to(device).eval()
        with torch.no_grad(), autocast(device):
            dt, mem = timed(lambda: sam.image_encoder(x_inf), wl.warmup, wl.iters, device)
        r.res["reference_infer_img_s"] = round(n_inf / dt, 2)
        r.res["reference_infer_peak_gib"] = mem and round(mem, 2)
        sam.train()
        opt = torch.optim.AdamW(sam.parameters(), lr=1e-5, weight_decay=0.01)
        dt, mem = timed(lambda: reference_train_step(sam, x_tr, one_box, opt, device),
                        wl.warmup, wl.iters, device)
        r.res["reference_train_img_s"] = round(n_tr / dt, 2)
        r.res["reference_train_peak_gib"] = mem and round(mem, 2)

    eager: dict[str, torch.Tensor] = {}
    base = randomise_(build_model(cfg), 0).to(device)
    # Correctness prompts: 4 boxes on every inference image.
    check = instances([4] * n_inf, cfg, 14, device)

    def s_eager() -> None:
        """Eager fp32 logits (the correctness reference) and eager bf16 SDPA speed."""
        model = copy.deepcopy(base).eval()
        with torch.no_grad():
            emb = model.encode(x_inf)
            eager["logits"], _ = model.decode(emb, boxes=check.boxes, multimask_output=False,
                                              image_index=check.image_index)
            cover = (eager["logits"] > 0).float().mean((-1, -2)).flatten()
            r.res["eager_mask_coverage"] = [round(c, 3) for c in cover.tolist()]
            with autocast(device):
                dt, mem = timed(lambda: model.encode(x_inf), wl.warmup, wl.iters, device)
        r.variant("eager_bf16_sdpa", infer_img_s=n_inf / dt, infer_peak_gib=mem)

    def s_infer(backend: str, cuda_graphs: bool = False) -> Callable[[], None]:
        name = backend + ("_cudagraphs" if cuda_graphs else "")

        def go() -> None:
            model = fast_model(cfg, backend, wl, device, train=False, cuda_graphs=cuda_graphs,
                               base=base)
            with torch.no_grad(), autocast(device):
                dt, mem = timed(lambda: model.encode(x_inf), wl.warmup, wl.iters, device)
            r.variant(name, infer_img_s=n_inf / dt, infer_peak_gib=mem)
            if "logits" in eager:
                with torch.no_grad(), autocast(device):
                    emb = model.encode(x_inf)
                    fast, _ = model.decode(emb, boxes=check.boxes, multimask_output=False,
                                           image_index=check.image_index)
                r.variant(name, **agreement(fast.float(), eager["logits"]))

        return go

    def s_train(backend: str, with_recipe: bool, checkpointing: bool = False
                ) -> Callable[[], None]:
        name = backend + ("_checkpointing" if checkpointing else "")

        def go() -> None:
            if backend == "flex" and device.type != "cuda":
                r.res["skipped"][f"train_{name}"] = "FlexAttention has no CPU backward"
                return
            model = fast_model(cfg, backend, wl, device, train=True, base=base,
                               checkpointing=checkpointing)
            opt = adamw(model.parameters(), lr=1e-5, device=device)
            bf16 = device.type == "cuda"
            step = RealStep(model, training_batch(x_tr, one_box, cfg), step_config(recipe=False),
                            opt, bf16)
            dt, mem = timed(step, wl.warmup, wl.iters, device)
            r.variant(name, train_img_s=n_tr / dt, train_peak_gib=mem)
            if with_recipe:
                step = RealStep(model, training_batch(x_tr, recipe, cfg),
                                step_config(recipe=True), opt, bf16)
                dt, mem = timed(step, wl.warmup, wl.iters, device)
                r.variant(name, recipe_train_img_s=n_tr / dt, recipe_train_peak_gib=mem)

        return go

    # Priority order; the second number is the time a section needs to be started.
    primary, secondary = args.backends[0], args.backends[1:]
    r.section("peak_tflops", s_peak)
    r.section("flops", s_flops)
    if not args.skip_reference:
        r.section("reference", s_reference)
    r.section("eager", s_eager)
    r.section(f"infer_{primary}", s_infer(primary), need_s=60)
    r.section(f"train_{primary}", s_train(primary, with_recipe=True), need_s=120)
    for b in secondary:
        r.section(f"infer_{b}", s_infer(b), need_s=60)
        r.section(f"train_{b}", s_train(b, with_recipe=False), need_s=110)
    if args.extras:
        r.section(f"infer_{primary}_cudagraphs", s_infer(primary, cuda_graphs=True), need_s=60)
        r.section(f"train_{primary}_checkpointing",
                  s_train(primary, with_recipe=False, checkpointing=True), need_s=110)
    summarise(r.res)
    r.save()
    log.info("wrote %s (%.0f s)", r.path, r.elapsed())
    return r.res


def agreement(fast: torch.Tensor, eager: torch.Tensor) -> dict[str, Any]:
    """Relative logit error and mean IoU over masks whose eager cover is 5-95 % (P x 1 x L x L)."""
    rel = float((fast - eager).norm() / eager.norm())
    a, b = eager > 0, fast > 0
    cover = a.float().mean((-1, -2)).flatten()
    keep = (cover >= 0.05) & (cover <= 0.95)
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float().clamp(min=1)
    iou = (inter / union)[keep]
    return {"rel_logit_error_vs_eager": rel,
            "mean_mask_iou_vs_eager": float(iou.mean()) if len(iou) else None,
            "iou_prompts": int(keep.sum()), "prompts": int(len(cover))}


def summarise(res: dict[str, Any]) -> None:
    """Headline keys from the best variant of each measurement, and MFU."""
    fast = {k: v for k, v in res["variants"].items() if k.split("_")[0] in FAST_BACKENDS}

    def best(metric: str) -> tuple[str | None, float | None]:
        have = [(v[metric], k) for k, v in fast.items() if v.get(metric) is not None]
        if not have:
            return None, None
        value, name = max(have)
        return name, value

    for key, metric in (("ultrasam_infer_img_s", "infer_img_s"),
                        ("ultrasam_train_img_s", "train_img_s"),
                        ("ultrasam_recipe_train_img_s", "recipe_train_img_s")):
        name, value = best(metric)
        res[key] = value and round(value, 2)
        res[key.replace("_img_s", "_variant")] = name
    inf_name = res.get("ultrasam_infer_variant")
    chosen = fast.get(inf_name, {}) if inf_name else {}
    res["rel_logit_error_vs_eager"] = chosen.get("rel_logit_error_vs_eager")
    res["mean_mask_iou_vs_eager"] = chosen.get("mean_mask_iou_vs_eager")
    peak = res.get("peak_tflops")

    def mfu(img_s: float | None, flops_key: str) -> float | None:
        flops = res.get(flops_key)
        if not (img_s and peak and flops):
            return None
        return float(f"{img_s * flops * 1e9 / (peak * 1e12):.4g}")

    res["infer_mfu"] = mfu(res.get("ultrasam_infer_img_s"), "infer_flops_per_img")
    res["train_mfu"] = mfu(res.get("ultrasam_train_img_s"), "train_flops_per_img")
    res["recipe_train_mfu"] = mfu(res.get("ultrasam_recipe_train_img_s"),
                                  "recipe_flops_per_img")
    res["reference_infer_mfu"] = mfu(res.get("reference_infer_img_s"), "infer_flops_per_img")
    res["reference_train_mfu"] = mfu(res.get("reference_train_img_s"), "train_flops_per_img")
    for key, ref in (("infer_speedup", "reference_infer_img_s"),
                     ("train_speedup", "reference_train_img_s")):
        ours = res.get(f"ultrasam_{key.split('_')[0]}_img_s")
        res[key] = round(ours / res[ref], 2) if ours and res.get(ref) else None
    if res["tiny"]:
        res["note"] = "CPU/tiny smoke run: numbers prove the script runs, not speed"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (the benchmark) or cpu (smoke)")
    p.add_argument("--tiny", action="store_true", help="tiny configs, few steps (smoke test)")
    p.add_argument("--out-dir", default=str(RESULTS), help="folder for gpu_<date>.json")
    p.add_argument("--budget-s", type=float, default=270.0,
                   help="start no section that would not fit in this many seconds")
    p.add_argument("--iters", type=int, default=None, help="timed iterations per workload")
    p.add_argument("--backends", default="fold,flex",
                   help="fast attention backends in priority order (first: also the recipe)")
    p.add_argument("--skip-reference", action="store_true")
    p.add_argument("--extras", action="store_true",
                   help="also CUDA graphs (inference) and activation checkpointing (training)")
    args = p.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    bad = [b for b in args.backends if b not in FAST_BACKENDS]
    if bad or not args.backends:
        p.error(f"--backends takes {FAST_BACKENDS}, got {args.backends}")
    if args.device == "cpu" and not args.tiny:
        p.error("--device cpu runs only with --tiny (ViT-B on a CPU takes minutes per step)")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    res = run(parse_args(argv))
    keys = ("gpu", "peak_tflops", "reference_infer_img_s", "ultrasam_infer_img_s",
            "reference_train_img_s", "ultrasam_train_img_s", "ultrasam_recipe_train_img_s",
            "infer_mfu", "train_mfu", "rel_logit_error_vs_eager", "mean_mask_iou_vs_eager")
    print(json.dumps({k: res.get(k) for k in keys}, indent=1))
    if res["errors"]:
        print("errors:", json.dumps(res["errors"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
