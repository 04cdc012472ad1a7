"""Training config, schedule, sampler, batching and the loop on a tiny model.

The data is a synthetic corpus written into tmp_path (seeded B-mode cyst phantoms with exact
masks, plus an image without instances and one with only a too-small instance).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ultrasam.cli import main as cli_main
from ultrasam.data.coco import CocoWriter, write_json
from ultrasam.data.synthetic import make_phantom
from ultrasam.train import load_config, train
from ultrasam.train.augment import AugmentParams
from ultrasam.train.config import TrainConfig, parse_override
from ultrasam.train.data import BatchLoader, MixingSampler, TrainImages
from ultrasam.train.loop import load_checkpoint
from ultrasam.train.schedule import lr_factor

N_CYSTS = 8


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    # Two shared cores: one intra-op thread avoids oversubscription (and is deterministic).
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    w = CocoWriter("SYN", ["cyst"], images_dir=root / "SYN" / "images")
    for seed in range(N_CYSTS):
        ph = make_phantom(seed=seed, size=96, geometry="linear", kind="cyst")
        w.add_image(ph.image, {"cyst": ph.masks["cyst"]}, source=f"cyst{seed}")
    blank = make_phantom(seed=99, size=96, geometry="linear", kind="cyst").image
    w.add_image(blank, {"cyst": np.zeros((96, 96), bool)}, source="empty")
    tiny = np.zeros((96, 96), bool)
    tiny[10:12, 10:12] = True   # 4 px < min_instance_area
    w.add_image(blank, {"cyst": tiny}, source="tiny")
    w2 = CocoWriter("HELD", ["cyst"], images_dir=root / "HELD" / "images")
    for seed in range(3):
        ph = make_phantom(seed=50 + seed, size=96, geometry="linear", kind="cyst")
        w2.add_image(ph.image, {"cyst": ph.masks["cyst"]}, source=f"h{seed}", split="val")
    write_json(root / "SYN" / "annotations.coco.json", w.to_coco())
    write_json(root / "HELD" / "annotations.coco.json", w2.to_coco())
    return root


def tiny_cfg(corpus: Path, out: Path, *extra: str) -> TrainConfig:
    return load_config(None, [
        f"data.paths=[{corpus}]", "data.exclude=[HELD:val]", f"run.out_dir={out}",
        "data.images_per_batch=2", "data.max_instances=3", "optim.lr=2e-3",
        "schedule.warmup_steps=2", "schedule.kind=step", "run.log_every=1",
        "run.progress=false", "run.tensorboard=false", "run.resume=never", *extra])


def read_metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------- config
def test_config_rejects_unknown_keys_and_wrong_types(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'optim.lrr'"):
        load_config(None, ["optim.lrr=1"])
    with pytest.raises(ValueError, match="'nosuch'"):
        TrainConfig.from_dict({"nosuch": {}})
    with pytest.raises(ValueError, match="'run.steps' expects int"):
        load_config(None, ["run.steps=1.5"])
    with pytest.raises(ValueError, match="'run.bf16' expects bool"):
        load_config(None, ["run.bf16=1"])
    with pytest.raises(ValueError, match="'schedule.kind' must be one of"):
        load_config(None, ["schedule.kind=linear"])
    with pytest.raises(ValueError, match=r"'augment.scale_range' needs 2 values"):
        load_config(None, ["augment.scale_range=[0.5]"])
    with pytest.raises(ValueError, match=r"'data.weights.BUSI' expects float"):
        load_config(None, ["data.weights={BUSI: many}"])
    with pytest.raises(ValueError, match="key=value"):
        parse_override("optim.lr")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: 1e-4\n  clip: 0.1\n")
    with pytest.raises(ValueError, match="'optim.clip'"):
        load_config(bad)


def test_config_reads_yaml_with_overrides_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  variant: tiny\n  overrides: {img_size: 64}\n"
                    "optim:\n  lr: 1e-4\ndata:\n  weights: {BUSI: 2}\n")
    cfg = load_config(path, ["optim.lr=3e-4", "data.weights.TG3K=0.5", "run.steps=7"])
    assert cfg.optim.lr == pytest.approx(3e-4) and isinstance(cfg.optim.lr, float)
    assert cfg.data.weights == {"BUSI": 2.0, "TG3K": 0.5}
    assert cfg.model.overrides == {"img_size": 64} and cfg.run.steps == 7
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def _with_file_values(defaults: dict, written: dict) -> dict:
    """The defaults with every value the file writes put in place (section by section)."""
    expected = {k: (dict(v) if isinstance(v, dict) else v) for k, v in defaults.items()}
    for key, value in written.items():
        if isinstance(value, dict) and isinstance(expected.get(key), dict):
            expected[key].update(value)
        else:
            expected[key] = value
    return expected


@pytest.mark.parametrize("name", sorted(
    p.name for p in (Path(__file__).resolve().parents[2] / "configs").glob("*.yaml")))
def test_repository_configs_load(name: str) -> None:
    # Each shipped config parses to exactly what its YAML says (read here with PyYAML
    # directly), every key it leaves out keeps its default, and it round-trips.
    import yaml

    from ultrasam.train.fusion_loop import FusionTrainConfig, load_fusion_config

    path = Path(__file__).resolve().parents[2] / "configs" / name
    written = yaml.safe_load(path.read_text())
    assert isinstance(written, dict) and written, f"{name}: empty config"
    if written.get("recipe") == "fusion":
        fusion = load_fusion_config(path)
        assert fusion.to_dict() == _with_file_values(FusionTrainConfig().to_dict(), written)
    else:
        cfg = load_config(path)
        assert cfg.to_dict() == _with_file_values(TrainConfig().to_dict(), written)
        assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_repository_configs_cover_both_recipes() -> None:
    root = Path(__file__).resolve().parents[2] / "configs"
    recipes = {"fusion" if "\nrecipe: fusion" in "\n" + p.read_text() else "sam"
               for p in root.glob("*.yaml")}
    assert recipes == {"fusion", "sam"}


# ----------------------------------------------------------------------------- schedule
def test_schedule_warmup_step_and_cosine() -> None:
    kw = dict(total_steps=100, warmup_steps=10, warmup_factor=0.001)
    assert lr_factor(0, kind="step", **kw) == pytest.approx(0.001)
    assert lr_factor(5, kind="step", **kw) == pytest.approx(0.5005)
    assert lr_factor(10, kind="step", milestones=(50, 80), **kw) == 1.0
    assert lr_factor(50, kind="step", milestones=(50, 80), **kw) == pytest.approx(0.1)
    assert lr_factor(85, kind="step", milestones=(50, 80), **kw) == pytest.approx(0.01)
    assert lr_factor(10, kind="cosine", min_factor=0.1, **kw) == pytest.approx(1.0)
    assert lr_factor(55, kind="cosine", min_factor=0.1, **kw) == pytest.approx(0.55)
    assert lr_factor(100, kind="cosine", min_factor=0.1, **kw) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="kind"):
        lr_factor(1, total_steps=10, kind="linear")


# ------------------------------------------------------------------------------ sampler
def test_sampler_is_seeded_sharded_weighted_and_resumable() -> None:
    names = ["A"] * 30 + ["B"] * 10
    whole = MixingSampler(names, seed=3).epoch_order(0)
    assert sorted(whole.tolist()) == list(range(40))          # weight 1: natural frequency
    again = MixingSampler(names, seed=3).epoch_order(0)
    assert np.array_equal(whole, again)
    assert not np.array_equal(whole, MixingSampler(names, seed=4).epoch_order(0))
    mixed = MixingSampler(names, {"b": 3.0}, seed=0).epoch_order(0)
    assert (mixed >= 30).sum() == 20                          # 3 x 10 vs 1 x 30 -> half
    assert (MixingSampler(names, {"A": 0}, seed=0).epoch_order(0) >= 30).all()
    with pytest.raises(ValueError, match="not in the data"):
        MixingSampler(names, {"C": 1.0})
    # Two shards read the single-process sequence, interleaved.
    r0, r1 = MixingSampler(names, rank=0, world_size=2), MixingSampler(names, rank=1, world_size=2)
    single = MixingSampler(names)
    seq = [single.next()[0] for _ in range(50)]
    inter = [s.next()[0] for _ in range(25) for s in (r0, r1)]
    assert inter == seq
    # state_dict / load_state_dict continue the exact sequence (across epochs too).
    a = MixingSampler(names, seed=1)
    for _ in range(37):
        a.next()
    b = MixingSampler(names, seed=1)
    b.load_state_dict(a.state_dict())
    assert [a.next() for _ in range(10)] == [b.next() for _ in range(10)]


def test_batches_skip_images_without_usable_instances(corpus: Path) -> None:
    images = TrainImages([corpus], exclude=["HELD:val"], min_instance_area=12)
    c = images.counts
    assert c["images_seen"] == N_CYSTS + 5 and c["images_excluded"] == 3
    assert c["images_without_instances"] == 2 and c["instances_too_small"] == 1
    assert len(images) == N_CYSTS
    loader = BatchLoader(images, MixingSampler(images.datasets()), input_size=128, mask_size=32,
                         images_per_batch=3, max_instances=2, min_instance_area=12,
                         augment_params=AugmentParams(p_speckle=1.0, p_shadow=1.0), seed=0)
    batch = loader.next_batch()
    assert batch.images.shape == (3, 3, 128, 128) and batch.sizes.tolist() == [[128, 128]] * 3
    assert batch.targets.shape[1:] == (32, 32) and len(batch.targets) == len(batch.image_index)
    assert all(len(m) <= 2 and m.shape[1:] == (128, 128) for m in batch.masks)
    assert (batch.targets.flatten(1).sum(1) > 0).all()
    with pytest.raises(ValueError, match="no usable training images"):
        TrainImages([corpus], datasets=["HELD"], exclude=["HELD"])
    with pytest.raises(ValueError, match="no images"):
        TrainImages([corpus], datasets=["NOPE"])


def test_augmentations_keep_image_and_masks_aligned() -> None:
    from ultrasam.train import augment as aug
    rng = np.random.default_rng(0)
    image = np.full((40, 60, 3), 100, np.uint8)
    masks = np.zeros((1, 40, 60), bool)
    masks[0, 10:20, 5:15] = True
    image[masks[0]] = 200
    flipped, fm = aug.hflip(image, masks)
    assert fm[0, 10:20, 45:55].all() and (flipped[fm[0]] == 200).all()
    big, bm = aug.scale_crop(image, masks, 2.0, 64, rng)
    assert big.shape == (64, 64, 3) and bm.shape == (1, 64, 64)
    assert (big[bm[0]] > 150).all() and (big[~bm[0]] < 150).all()
    small, sm = aug.scale_crop(image, masks, 0.5, 64, rng)
    assert small.shape == (20, 30, 3) and sm[0].sum() == 25
    deep = aug.depth_attenuation(image, 1.0)
    assert deep[0, 0, 0] == 100 and deep[-1, 0, 0] < 40
    assert aug.gain(image, 2.0).max() == 255
    shadowed = aug.shadow(image, 0.9, rng)
    assert shadowed.shape == image.shape and shadowed.min() < 100 and (shadowed[0] == image[0]).all()
    noisy = aug.speckle(image, 0.3, rng)
    assert noisy.dtype == np.uint8 and abs(float(noisy[~masks[0]].mean()) - 100) < 5


# --------------------------------------------------------------------------------- loop
def test_loss_falls_on_a_tiny_run(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = train(tiny_cfg(corpus, out, "run.steps=24", "run.checkpoint_every=24",
                            "prompts.click_iterations=1", "prompts.p_multi_point=0.3",
                            "prompts.p_ellipse_mask=0.5"))
    losses = [r["loss"] for r in read_metrics(out)]
    assert len(losses) == 24 and all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:5])
    assert {"loss_1", "loss_2", "loss_3", "iou_1", "lr", "grad_norm"} <= set(read_metrics(out)[0])
    assert result["step"] == 24 and result["counts"]["images_drawn"] == 48
    # The export is a native folder that load_model reads.
    from ultrasam.weights.checkpoints import load_model
    assert load_model(result["export"]).config.variant == "tiny"


def test_resume_continues_bitwise_identically(corpus: Path, tmp_path: Path) -> None:
    extra = ("run.steps=4", "run.checkpoint_every=2", "run.keep_checkpoints=0",
             "augment.p_scale=0.5", "augment.p_speckle=0.5", "prompts.click_iterations=1")
    full = tmp_path / "full"
    train(tiny_cfg(corpus, full, *extra))
    part = tmp_path / "part"
    result = train(tiny_cfg(corpus, part, *extra[:-1], "prompts.click_iterations=1",
                            f"run.resume={full / 'checkpoints' / 'step_0000002.pt'}"))
    assert result["resumed_from"].endswith("step_0000002.pt")
    a = load_checkpoint(full / "checkpoints" / "step_0000004.pt")
    b = load_checkpoint(part / "checkpoints" / "step_0000004.pt")
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    for key, st in a["optimizer"]["state"].items():
        assert torch.equal(st["exp_avg"], b["optimizer"]["state"][key]["exp_avg"])
    assert a["sampler"] == b["sampler"]
    # "auto" picks the newest complete checkpoint: a write killed half-way leaves only a
    # .tmp file (checkpoints are written to a temporary name, then renamed), which is ignored.
    (full / "checkpoints" / "step_0000006.pt.tmp").write_bytes(b"killed mid-write")
    again = train(tiny_cfg(corpus, full, *extra[:-1], "run.resume=auto"))
    assert again["resumed_from"].endswith("step_0000004.pt") and again["step"] == 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_WORKER = ("import json, sys, torch; torch.set_num_threads(1); "
           "from ultrasam.train import TrainConfig, train; "
           "train(TrainConfig.from_dict(json.loads(sys.argv[1])))")


def test_ddp_two_gloo_processes_match_one_process(corpus: Path, tmp_path: Path) -> None:
    extra = ("run.steps=2", "run.checkpoint_every=2", "prompts.click_iterations=1",
             "run.export=false")
    single = tmp_path / "single"
    train(tiny_cfg(corpus, single, *extra))
    ddp = tmp_path / "ddp"
    cfg = tiny_cfg(corpus, ddp, *extra, "data.images_per_batch=1")
    # What torchrun does: one process per rank, rendezvous through environment variables.
    port = _free_port()
    procs = [subprocess.Popen(
        [sys.executable, "-c", _WORKER, json.dumps(cfg.to_dict())],
        env={**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
             "WORLD_SIZE": "2", "RANK": str(r), "LOCAL_RANK": str(r), "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(2)]
    for p in procs:
        output, _ = p.communicate(timeout=120)
        assert p.returncode == 0, output
    m1, m2 = read_metrics(single), read_metrics(ddp)
    for a, b in zip(m1, m2):
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    s1 = load_checkpoint(single / "checkpoints" / "step_0000002.pt")
    s2 = load_checkpoint(ddp / "checkpoints" / "step_0000002.pt")
    assert len(s2["sampler"]) == 2 and len(s2["rng"]) == 2
    # Adam divides by |g|: where a gradient is ~0, summation-order noise moves an update by a
    # few 1e-6; a wrong gradient moves it by ~lr (2e-3 here).
    for key, value in s1["model"].items():
        torch.testing.assert_close(value, s2["model"][key], rtol=1e-4, atol=2e-5)


def test_nan_loss_stops_naming_step_and_images_keeping_last_checkpoint(
        corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(tiny_cfg(corpus, out, "run.steps=2", "run.checkpoint_every=1", "run.export=false"))
    good = (out / "checkpoints" / "step_0000002.pt").read_bytes()
    with pytest.raises(RuntimeError, match=r"at step 3 on images \['SYN/\d+/SYN__\d+\.png'") as e:
        train(tiny_cfg(corpus, out, "run.steps=4", "run.checkpoint_every=1", "run.resume=auto",
                       "loss.dice_weight=.nan"))
    assert "step_0000002.pt" in str(e.value)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "step_0000001.pt", "step_0000002.pt"]
    assert (out / "checkpoints" / "step_0000002.pt").read_bytes() == good


def test_frozen_encoder_lora_and_weights_only_warm_start(corpus: Path, tmp_path: Path) -> None:
    base = tmp_path / "base"
    first = train(tiny_cfg(corpus, base, "run.steps=1", "run.checkpoint_every=1"))
    frozen = tmp_path / "frozen"
    train(tiny_cfg(corpus, frozen, "run.steps=2", "run.checkpoint_every=2",
                   "model.freeze_encoder=true", f"run.warm_start={first['export']}",
                   "run.export=false"))
    a = load_checkpoint(base / "checkpoints" / "step_0000001.pt")["model"]
    state = load_checkpoint(frozen / "checkpoints" / "step_0000002.pt")
    assert len(state["optimizer"]["state"]) < len(a)     # fresh optimiser, decoder only
    for key, value in a.items():
        if key.startswith("image_encoder."):
            assert torch.equal(value, state["model"][key]), key
        elif key.startswith("mask_decoder.output_upscaling."):
            assert not torch.equal(value, state["model"][key]), key
    lora = tmp_path / "lora"
    res = train(tiny_cfg(corpus, lora, "run.steps=2", "run.checkpoint_every=2",
                         "model.lora_rank=2", "optim.lr=0.05"))
    lstate = load_checkpoint(lora / "checkpoints" / "step_0000002.pt")["model"]
    assert any(".lora_b" in k for k in lstate)
    from ultrasam.weights.checkpoints import load_model
    merged = load_model(res["export"]).state_dict()      # SAM names again, update folded in
    key = "image_encoder.blocks.0.attn.qkv.weight"
    assert key in merged and not torch.equal(merged[key],
                                             lstate["image_encoder.blocks.0.attn.qkv.base.weight"])
    assert torch.equal(merged["image_encoder.patch_embed.proj.weight"],
                       lstate["image_encoder.patch_embed.proj.weight"])


def test_cli_reports_config_errors_in_one_line(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("run:\n  stepz: 3\n")
    assert cli_main(["train", str(path)]) == 1
    err = capsys.readouterr().err
    assert "'run.stepz'" in err and len(err.strip().splitlines()) == 1
    path.write_text("run: {steps: 1}\n")
    assert cli_main(["train", str(path), "data.paths=[]"]) == 1
    assert "data.paths is empty" in capsys.readouterr().err
