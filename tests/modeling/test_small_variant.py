"""The small default-model variant: conv encoder + SAM's prompt encoder + a narrow decoder.

Covers the config (validation, JSON round trip), shapes, the parameter and fp16 file-size
budget, gradients to every encoder weight, the native save/load round trip (and the refusal of
SAM-format files), predictor agreement between the fast and plain decoders on a padded
non-square phantom, and a few training steps on synthetic phantoms where the loss falls.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ultrasam import Predictor
from ultrasam.config import SMALL, VARIANTS, ModelConfig, get_config
from ultrasam.data.coco import CocoWriter, write_json
from ultrasam.data.synthetic import make_phantom
from ultrasam.modeling import build_model
from ultrasam.train import load_config, train
from ultrasam.weights.checkpoints import CheckpointError, load_model, save_native

ROOT = Path(__file__).resolve().parents[2]
MAX_FILE_BYTES = 16 * 2**20


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    # Two shared cores: one intra-op thread avoids oversubscription (and is deterministic).
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def small() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("small").eval()


# ------------------------------------------------------------------------------ config
def test_small_is_registered_and_sam_variants_are_vit() -> None:
    assert VARIANTS["small"] is SMALL
    assert SMALL.encoder == "conv" and SMALL.embed_size == 64 and SMALL.mask_size == 256
    assert VARIANTS["fusion"].encoder == "fusion"  # the early-fusion default model
    assert {c.encoder for k, c in VARIANTS.items() if k not in ("small", "fusion")} == {"vit"}


def test_conv_config_validation_and_round_trip() -> None:
    with pytest.raises(ValueError, match="conv_dims and conv_depths"):
        get_config("small", conv_depths=(2, 2))
    with pytest.raises(ValueError, match="multiple of patch_size"):
        get_config("small", img_size=200)
    with pytest.raises(ValueError, match="conv_kernel_size"):
        get_config("small", conv_kernel_size=4)
    with pytest.raises(ValueError, match="unknown encoder"):
        get_config("small", encoder="mlp")
    # YAML/JSON lists become tuples, and the dict form reads back equal.
    cfg = get_config("small", conv_dims=[32, 64, 128, 256])
    assert cfg.conv_dims == (32, 64, 128, 256)
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


# ------------------------------------------------------------------------------ network
def test_shapes_and_budget(small: torch.nn.Module, tmp_path: Path) -> None:
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        emb = small.encode(x)
        assert emb.shape == (2, 128, 64, 64)
        boxes = torch.tensor([[40.0, 50, 120, 160], [10, 10, 250, 200]])
        masks, iou = small.decode(emb, boxes=boxes, multimask_output=True,
                                  image_index=torch.tensor([0, 1]))
    assert masks.shape == (2, 3, 256, 256) and iou.shape == (2, 3)
    n = sum(p.numel() for p in small.parameters())
    assert 4_000_000 <= n <= 8_300_000, n
    out = save_native(small, tmp_path / "m", dtype=torch.float16)
    size = (out / "model.safetensors").stat().st_size
    assert size <= MAX_FILE_BYTES
    assert abs(size - 2 * n) < 0.01 * 2 * n   # fp16: two bytes per parameter, small header
    assert json.loads((out / "config.json").read_text())["model"]["encoder"] == "conv"


def test_wrong_input_size_is_refused(small: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match="256 x 256"):
        small.image_encoder(torch.randn(1, 3, 128, 128))


def test_every_weight_gets_a_gradient() -> None:
    torch.manual_seed(0)
    model = build_model(get_config("small", img_size=128)).train()
    images = torch.randn(2, 3, 128, 128)
    emb = model.encode(images)
    # A box prompt on image 0 and a point + mask prompt on image 1 reach every prompt path.
    pe = model.prompt_encoder
    sparse = torch.cat([pe.embed_points(torch.tensor([[[20.0, 30], [90, 100]]]),
                                        torch.tensor([[2, 3]]), pad=False),
                        pe.embed_points(torch.tensor([[[60.0, 60], [0, 0]]]),
                                        torch.tensor([[1, -1]]), pad=False)])
    dense = torch.cat([pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, 32, 32),
                       pe.mask_downscaling(torch.randn(1, 1, 128, 128))])
    masks, iou = model.mask_decoder(emb, pe.get_dense_pe(), sparse, dense, True,
                                    image_index=torch.tensor([0, 1]))
    m1, _ = model.mask_decoder(emb, pe.get_dense_pe(), sparse, dense, False,
                               image_index=torch.tensor([0, 1]))
    (masks.square().mean() + iou.sum() + m1.mean()).backward()
    missing = [name for name, p in model.named_parameters()
               if p.grad is None or not torch.isfinite(p.grad).all()
               or (name.startswith("image_encoder") and p.grad.abs().sum() == 0)]
    assert missing == []


def test_native_round_trip_fp16(small: torch.nn.Module, tmp_path: Path) -> None:
    folder = save_native(small, tmp_path / "m", dtype=torch.float16, source="test")
    loaded = load_model(folder)
    assert loaded.config == small.config
    # The loaded model equals the original with its weights rounded to fp16.
    rounded = build_model("small").eval()
    rounded.load_state_dict({k: v.half().float() for k, v in small.state_dict().items()})
    x = torch.randn(1, 3, 256, 256)
    box = torch.tensor([[30.0, 40, 200, 220]])
    with torch.no_grad():
        a = loaded.decode(loaded.encode(x), boxes=box)
        b = rounded.decode(rounded.encode(x), boxes=box)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_sam_format_file_with_conv_encoder_is_refused(small: torch.nn.Module,
                                                      tmp_path: Path) -> None:
    path = tmp_path / "small.pth"
    torch.save(small.state_dict(), path)
    with pytest.raises(CheckpointError, match="native checkpoint folder"):
        load_model(path)


def test_predictor_fast_and_plain_decoders_agree(small: torch.nn.Module) -> None:
    # A non-square phantom: resized so its long side is 256, padded at the bottom.
    ph = make_phantom(seed=3, size=256, geometry="linear", kind="cyst")
    image = np.ascontiguousarray(ph.image[:180])
    fast, plain = Predictor(small, fast=True), Predictor(small, fast=False)
    for p in (fast, plain):
        p.set_image(image)
    assert fast.get_image_embedding().shape == (1, 128, 64, 64)
    assert fast.input_size == (180, 256)
    box = np.array([60, 40, 180, 150])
    prompts = [dict(box=box, multimask_output=False),
               dict(point_coords=np.array([[120, 90], [30, 20]]), point_labels=np.array([1, 0])),
               dict(point_coords=np.array([[120, 90]]), point_labels=np.array([1]), box=box)]
    for kwargs in prompts:
        ma, ia, la = fast.predict(return_logits=True, **kwargs)
        mb, ib, lb = plain.predict(return_logits=True, **kwargs)
        assert ma.shape == (la.shape[0], 180, 256)
        assert np.abs(la - lb).max() <= 1e-4 * max(1.0, np.abs(lb).max())
        assert np.abs(ia - ib).max() <= 1e-5
        # A mask prompt from the previous call takes the decoder's other (dense) path.
        ma2, _, la2 = fast.predict(mask_input=la[:1], box=box, multimask_output=False,
                                   return_logits=True)
        mb2, _, lb2 = plain.predict(mask_input=lb[:1], box=box, multimask_output=False,
                                    return_logits=True)
        assert np.abs(la2 - lb2).max() <= 1e-4 * max(1.0, np.abs(lb2).max())


# ------------------------------------------------------------------------------ training
def _phantom_corpus(root: Path, n: int) -> Path:
    w = CocoWriter("SYN", ["cyst"], images_dir=root / "SYN" / "images")
    for seed in range(n):
        ph = make_phantom(seed=seed, size=128, geometry="linear", kind="cyst")
        w.add_image(ph.image, {"cyst": ph.masks["cyst"]}, source=f"cyst{seed}")
    write_json(root / "SYN" / "annotations.coco.json", w.to_coco())
    return root


def test_default_gpu_config_builds_the_small_variant() -> None:
    cfg = load_config(ROOT / "configs" / "default_small_gpu.yaml")
    assert cfg.model.variant == "small" and cfg.model.checkpoint is None
    assert "MMOTU_2d:val" in cfg.data.exclude
    assert get_config(cfg.model.variant, **cfg.model.overrides) == SMALL


def test_few_training_steps_reduce_the_loss(tmp_path: Path) -> None:
    corpus = _phantom_corpus(tmp_path / "corpus", 4)
    out = tmp_path / "run"
    # The GPU recipe's config, shrunk to a few CPU steps at a 128 px input (same modules).
    cfg = load_config(ROOT / "configs" / "default_small_gpu.yaml", [
        f"data.paths=[{corpus}]", f"run.out_dir={out}", "model.overrides={img_size: 128}",
        "data.images_per_batch=2", "data.max_instances=2", "data.load_threads=0",
        "optim.lr=2e-3", "schedule.warmup_steps=2", "schedule.kind=constant",
        "run.steps=24", "run.log_every=4", "run.checkpoint_every=24", "run.progress=false",
        "run.tensorboard=false", "run.resume=never", "run.device=cpu"])
    summary = train(cfg)
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records]
    assert len(losses) == 6 and all(np.isfinite(losses))
    assert np.mean(losses[-2:]) < 0.8 * np.mean(losses[:2]), losses
    model = load_model(summary["export"])
    assert model.config.encoder == "conv" and model.config.img_size == 128


# ------------------------------------------------------------------------ the GPU recipe
def test_gpu_script_runs_end_to_end_on_cpu(tmp_path: Path) -> None:
    """``scripts/gpu_train_default.sh train`` on synthetic stand-ins for the carried data:
    probe, train, fp16 export, evaluation, card and records (~15-30 s on two CPU cores)."""
    import os
    import subprocess
    import sys

    from ultrasam.data.pack import pack

    data = tmp_path / "gpu_data"
    corpus = _phantom_corpus(tmp_path / "corpus", 4)
    pack(corpus, data / "train_pack", max_side=128, quality=80, progress=False)
    w = CocoWriter("MMOTU_2d", ["ovarian_tumor"],
                   images_dir=data / "mmotu_val" / "MMOTU_2d" / "images")
    for seed in range(3):
        ph = make_phantom(seed=40 + seed, size=160, geometry="linear", kind="cyst")
        w.add_image(ph.image, {"ovarian_tumor": ph.masks["cyst"]}, source=f"v{seed}",
                    split="val")
    write_json(data / "mmotu_val" / "MMOTU_2d" / "annotations.coco.json", w.to_coco())
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "WORK": str(tmp_path / "work"),
           "DATA_DIR": str(data), "DEVICE": "cpu", "PYTHON": sys.executable,
           "TRAIN_SECONDS": "1", "PROBE_STEPS": "2", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_train_default.sh"), "train",
         "model.overrides={img_size: 128}", "data.images_per_batch=1", "data.max_instances=1",
         "data.load_threads=0"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    weights = out / "default_small" / "model.safetensors"
    assert weights.stat().st_size <= MAX_FILE_BYTES
    card = (out / "default_small" / "README.md").read_text()
    assert "baseline-ellipse" in card and "| SYN | 4 |" in card
    assert "baseline-ellipse" in (out / "eval_summary.md").read_text()
    assert (out / "records.tar.gz").stat().st_size > 0
    assert load_model(out / "default_small").config.img_size == 128
