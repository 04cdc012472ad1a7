"""The GPU fast-path switches keep the model's function (CPU), and the GPU benchmark's pieces work.

What a GPU alone can show (speed, Inductor's CUDA kernels, FlexAttention's backward) is
measured by ``benchmarks/bench_gpu.py``; its CPU smoke mode runs end to end in a slow test.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from ultrasam.config import ModelConfig, get_config
from ultrasam.modeling import Sam, build_model
from ultrasam.modeling.speed import (
    adamw,
    keep_decoder_fp32,
    optimise_for_gpu,
    set_attention_backend,
)

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"


def _model(seed: int = 0) -> Sam:
    torch.manual_seed(seed)
    model = build_model(get_config("tiny"))
    with torch.no_grad():  # zero at init in SAM: make the rel-pos path matter
        for name, p in model.named_parameters():
            if "rel_pos" in name or "pos_embed" in name:
                p.normal_(0, 0.3)
    return model.eval()


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 128, 128, generator=g)
    boxes = torch.tensor([[10.0, 12.0, 70.0, 90.0], [40.0, 30.0, 120.0, 100.0],
                          [5.0, 5.0, 60.0, 50.0]])
    return x, boxes, torch.tensor([0, 1, 1])


def _run(model: Sam) -> tuple[torch.Tensor, torch.Tensor]:
    x, boxes, index = _inputs()
    return model(x, boxes=boxes, multimask_output=True, image_index=index)


def test_set_attention_backend_reaches_every_block() -> None:
    model = _model()
    n = set_attention_backend(model, "fold")
    assert n == len(model.image_encoder.blocks) == 2
    assert {b.attn.backend for b in model.image_encoder.blocks} == {"fold"}
    with pytest.raises(ValueError, match="unknown attention backend 'fast'"):
        set_attention_backend(model, "fast")
    with pytest.raises(ValueError, match="no SAM ViT attention"):
        set_attention_backend(model.mask_decoder, "fold")


def test_defaults_are_untouched() -> None:
    model = _model()
    assert {b.attn.backend for b in model.image_encoder.blocks} == {"sdpa"}
    assert model.image_encoder.gradient_checkpointing is False


@pytest.mark.parametrize("attention", ["fold", "flex", "auto"])
def test_optimise_without_compile_keeps_outputs_and_names(attention: str) -> None:
    model = _model()
    keys = list(model.state_dict())
    with torch.no_grad():
        want = _run(model)
        optimise_for_gpu(model, attention=attention, compile=False, decoder_fp32=True)
        got = _run(model)
    assert list(model.state_dict()) == keys
    for a, b in zip(want, got):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def test_optimise_compiled_keeps_outputs_and_gradients() -> None:
    """Compiled through dynamo + AOTAutograd (no Inductor codegen: fast on CPU), training."""
    torch._dynamo.reset()
    eager, fast = _model().train(), _model().train()
    optimise_for_gpu(fast, attention="fold", compile=True, compile_backend="aot_eager",
                     activation_checkpointing=True)
    assert list(fast.state_dict()) == list(eager.state_dict())
    outs = []
    for model in (eager, fast):
        logits, iou = _run(model)
        (logits.square().mean() + iou.sum()).backward()
        outs.append((logits.detach(), [p.grad for p in model.parameters()]))
    torch.testing.assert_close(outs[1][0], outs[0][0], rtol=1e-4, atol=1e-4)
    for a, b in zip(outs[0][1], outs[1][1]):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4)


def test_bad_model_is_named() -> None:
    with pytest.raises(TypeError, match="expected a Sam model"):
        optimise_for_gpu(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="either cuda_graphs or compile_mode"):
        optimise_for_gpu(_model(), cuda_graphs=True, compile_mode="default")


def test_fp32_decoder_under_autocast() -> None:
    model = _model()
    x, boxes, index = _inputs()
    with torch.no_grad():
        emb = model.encode(x)
        want, _ = model.decode(emb, boxes=boxes, image_index=index)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16, _ = model.decode(emb, boxes=boxes, image_index=index)
        keep_decoder_fp32(model.mask_decoder)
        keep_decoder_fp32(model.mask_decoder)  # idempotent
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got, _ = model.decode(emb, boxes=boxes, image_index=index)
    assert bf16.dtype == torch.bfloat16 and got.dtype == torch.float32
    # The prompt encoder still runs under autocast (bf16 sparse embeddings), so not bit-exact.
    err = float((got - want).norm() / want.norm())
    assert err < 0.5 * float((bf16.float() - want).norm() / want.norm())


def test_adamw_is_fused_on_cuda_only() -> None:
    opt = adamw(_model().parameters(), lr=1e-4)
    assert not opt.defaults.get("fused")


# ---------------------------------------------------------------------- the benchmark
def _load(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCH))  # bench_gpu imports its sibling _reference
    spec = importlib.util.spec_from_file_location(f"_test_{name}", BENCH / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_agreement_measures_error_and_iou(monkeypatch: pytest.MonkeyPatch) -> None:
    bench = _load("bench_gpu", monkeypatch)
    eager = torch.full((3, 1, 10, 10), -1.0)
    eager[0, 0, :5] = 1.0       # 50 % cover: counted
    eager[1, 0, 0, 0] = 1.0     # 1 % cover: left out of the IoU
    eager[2, 0, :3] = 1.0       # 30 % cover: counted
    fast = eager.clone()
    fast[0, 0, 5] = 1.0         # one row more: IoU 50 / 60
    res = bench.agreement(fast, eager)
    assert res["iou_prompts"] == 2 and res["prompts"] == 3
    assert res["mean_mask_iou_vs_eager"] == pytest.approx((50 / 60 + 1.0) / 2)
    assert res["rel_logit_error_vs_eager"] == pytest.approx(
        float((fast - eager).norm() / eager.norm()))


def test_summary_takes_the_best_variant_and_computes_mfu(
        monkeypatch: pytest.MonkeyPatch) -> None:
    bench = _load("bench_gpu", monkeypatch)
    res = {"tiny": False, "peak_tflops": 800.0, "infer_flops_per_img": 1000.0,
           "train_flops_per_img": 3000.0, "recipe_flops_per_img": 3100.0,
           "reference_infer_img_s": 50.0, "reference_train_img_s": 15.0,
           "variants": {
               "eager_bf16_sdpa": {"infer_img_s": 999.0},  # not a fast path: never chosen
               "fold": {"infer_img_s": 300.0, "train_img_s": 100.0,
                        "recipe_train_img_s": 90.0, "rel_logit_error_vs_eager": 0.01,
                        "mean_mask_iou_vs_eager": 0.995},
               "flex": {"infer_img_s": 320.0, "rel_logit_error_vs_eager": 0.012,
                        "mean_mask_iou_vs_eager": 0.993}}}
    bench.summarise(res)
    assert res["ultrasam_infer_img_s"] == 320.0 and res["ultrasam_infer_variant"] == "flex"
    assert res["ultrasam_train_variant"] == "fold"
    assert res["rel_logit_error_vs_eager"] == 0.012  # from the chosen inference variant
    assert res["infer_mfu"] == pytest.approx(320 * 1000e9 / 800e12, rel=1e-3)
    assert res["train_mfu"] == pytest.approx(100 * 3000e9 / 800e12, rel=1e-3)
    assert res["infer_speedup"] == 6.4 and res["train_speedup"] == pytest.approx(6.67)


def _encoder_flops_by_hand(cfg: ModelConfig) -> int:
    """Multiply-adds x 2 of SAM's ViT image encoder on one image (what FlopCounterMode counts:
    convolutions, matrix products, attention; not norms or element-wise ops).

    G = S / p patches a side, N = G^2 tokens, width D, MLP width M, neck width C.
    Patch embedding: 2 N D (3 p^2). Per block, with t tokens per attention window (side s:
    the window, or G for a global block) and n windows over the grid padded to a multiple of
    s (n t >= N tokens attended): qkv 2 n t D 3D; decomposed rel-pos bias (two einsums, each
    over s positions) 4 n t s D; attention (QK^T and AV) 4 n t t D; projection 2 n t D^2;
    MLP (unpadded) 4 N D M. Neck: 1x1 conv 2 N D C, 3x3 conv 2 N C^2 9.
    """
    p, d, c = cfg.patch_size, cfg.encoder_embed_dim, cfg.prompt_embed_dim
    g = cfg.img_size // p
    n_tok, mlp = g * g, int(d * cfg.mlp_ratio)
    total = 2 * n_tok * d * 3 * p * p
    for i in range(cfg.encoder_depth):
        side = g if i in cfg.encoder_global_attn_indexes else cfg.window_size
        windows = (-(-g // side)) ** 2
        t = side * side
        attended = windows * t
        total += (2 * attended * d * 3 * d + 4 * attended * side * d + 4 * attended * t * d
                  + 2 * attended * d * d + 4 * n_tok * d * mlp)
    return total + 2 * n_tok * d * c + 2 * n_tok * c * c * 9


def test_flops_are_counted_with_attention(monkeypatch: pytest.MonkeyPatch) -> None:
    """The benchmark's FLOP counts equal a count by hand (tiny: an 8 x 8 grid in 3 x 3
    windows, so the padding to 9 x 9 counts; ViT-B at 1024 px on the meta device, no compute:
    the 972 GFLOP of the performance notes)."""
    bench = _load("bench_gpu", monkeypatch)
    tiny = get_config("tiny")
    flops = bench.model_flops(tiny, [2, 1], torch.device("cpu"))
    assert flops["infer_flops_per_img"] == _encoder_flops_by_hand(tiny)
    # A training step: forward + backward (about twice the forward) + the decoder.
    assert 2.5 < flops["train_flops_per_img"] / flops["infer_flops_per_img"] < 3.5
    assert flops["recipe_flops_per_img"] > flops["train_flops_per_img"]
    vit_b = get_config("vit_b")
    with torch.device("meta"):
        encoder = build_model(vit_b).image_encoder
        x = torch.zeros(1, 3, vit_b.img_size, vit_b.img_size)
    with torch.no_grad():
        assert bench.count_flops(lambda: encoder(x)) == _encoder_flops_by_hand(vit_b)


def test_benchmark_times_the_real_training_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU benchmark's step is ``ultrasam.train``'s: on the tiny config one step on CPU
    updates the IoU head too (the benchmark once timed its own loss without the IoU term)."""
    bench = _load("bench_gpu", monkeypatch)
    cfg = get_config("tiny")
    inst = bench.instances([3, 2], cfg, 0, torch.device("cpu"))
    assert inst.targets.shape == (5, 1, cfg.mask_size, cfg.mask_size)
    assert 0 < float(inst.targets.mean()) < 0.5
    x = bench.images(2, cfg.img_size, 0, torch.device("cpu"))
    batch = bench.training_batch(x, inst, cfg)
    assert [len(m) for m in batch.masks] == [3, 2]
    model = bench.randomise_(build_model(cfg), 0).train()
    opt = adamw(model.parameters(), lr=1e-3)
    iou_head = model.mask_decoder.iou_prediction_head.layers[-1].weight
    before = iou_head.detach().clone()
    step = bench.RealStep(model, batch, bench.step_config(recipe=True), opt, use_bf16=False)
    step()
    assert not torch.equal(iou_head, before)


def test_gpu_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                   capsys: pytest.CaptureFixture[str]) -> None:
    table = _load("gpu_table", monkeypatch)
    assert table.main(["--results", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == "no GPU results recorded yet"
    (tmp_path / "gpu_2030-01-01_tiny.json").write_text(json.dumps({"tiny": True}))
    assert table.table(table.load_results(tmp_path)) == "no GPU results recorded yet"
    row = {"gpu": "Test GPU", "date": "2030-01-02", "torch": "9.9", "peak_tflops": 700.0,
           "reference_infer_img_s": 50.0, "ultrasam_infer_img_s": 355.5, "infer_mfu": 0.43,
           "train_mfu": None, "ultrasam_infer_variant": "fold", "errors": {"train_flex": "x"}}
    (tmp_path / "gpu_2030-01-02.json").write_text(json.dumps(row))
    out = tmp_path / "table.md"
    table.main(["--results", str(tmp_path), "--out", str(out)])
    text = out.read_text()
    lines = text.splitlines()
    assert lines[0].startswith("| date | GPU |") and len(lines[2].split("|")) == len(
        lines[0].split("|"))
    assert "| 2030-01-02 | Test GPU | 9.9 | 700 | 50.0 | 355.5 | - | 43% |" in text
    assert "gpu_2030-01-02.json: train_flex" in text


@pytest.mark.slow
def test_benchmark_smoke_mode_runs(tmp_path: Path) -> None:
    """``bench_gpu.py --device cpu --tiny`` end to end (~40 s on 2 cores)."""
    cmd = [sys.executable, str(BENCH / "bench_gpu.py"), "--device", "cpu", "--tiny",
           "--out-dir", str(tmp_path)]
    if importlib.util.find_spec("segment_anything") is None:
        cmd.append("--skip-reference")
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = tmp_path.glob("gpu_*_tiny.json")
    res = json.loads(path.read_text())
    assert res["errors"] == {}, res["errors"]
    for key in ("gpu", "date", "torch", "peak_tflops", "ultrasam_infer_img_s",
                "ultrasam_train_img_s", "ultrasam_recipe_train_img_s", "infer_mfu",
                "train_mfu", "rel_logit_error_vs_eager", "mean_mask_iou_vs_eager"):
        assert res.get(key) is not None, key
    if "--skip-reference" not in cmd:
        assert res["reference_infer_img_s"] and res["reference_train_img_s"]
    assert res["skipped"] == {"train_flex": "FlexAttention has no CPU backward"}
    assert res["rel_logit_error_vs_eager"] < 0.05 and res["mean_mask_iou_vs_eager"] > 0.9
