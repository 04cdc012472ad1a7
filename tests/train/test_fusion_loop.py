"""The early-fusion CPU recipe (``recipe: fusion``): cache, clicks, augmentation, exact resume,
export, on a synthetic corpus and a small FusionNet config."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ultrasam.data.coco import CocoWriter, write_json
from ultrasam.data.synthetic import make_phantom
from ultrasam.train.fusion_augment import AugmentConfig, augment
from ultrasam.train.fusion_cache import build_cache, load_cache
from ultrasam.train.fusion_loop import export_fusion, load_fusion_config, train_fusion
from ultrasam.train.fusion_prompts import corrective_clicks, initial_prompts, interior_click
from ultrasam.weights.checkpoints import load_model

REPO = Path(__file__).resolve().parents[2]
MODEL = ["model.overrides.img_size=64", "model.overrides.conv_dims=[8, 16, 16, 16]",
         "model.overrides.conv_depths=[1, 1, 1, 1]", "model.overrides.prompt_embed_dim=16",
         "model.overrides.iou_head_hidden_dim=16"]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fusion_corpus")
    w = CocoWriter("SYN", ["cyst"], images_dir=root / "SYN" / "images")
    for seed in range(6):
        ph = make_phantom(seed=seed, size=80, geometry="linear", kind="cyst")
        w.add_image(ph.image, {"cyst": ph.masks["cyst"]}, source=f"c{seed}")
    tiny = np.zeros((80, 80), bool)
    tiny[3:5, 3:5] = True  # 4 px: not kept
    w.add_image(make_phantom(seed=40, size=80, kind="cyst").image, {"cyst": tiny},
                source="tiny")
    held = CocoWriter("HELD", ["cyst"], images_dir=root / "HELD" / "images")
    for seed in range(3):
        ph = make_phantom(seed=60 + seed, size=80, geometry="linear", kind="cyst")
        held.add_image(ph.image, {"cyst": ph.masks["cyst"]}, source=f"h{seed}", split="val")
    write_json(root / "SYN" / "annotations.coco.json", w.to_coco())
    write_json(root / "HELD" / "annotations.coco.json", held.to_coco())
    return root


def config(corpus: Path, tmp: Path, *extra: str):  # type: ignore[no-untyped-def]
    return load_fusion_config(REPO / "configs" / "default_cpu.yaml", [
        f"data.sources=[{corpus}]", "data.exclude=[HELD:val]", f"data.cache_dir={tmp}/cache",
        f"data.eval_source={corpus}/HELD", "data.eval_images=3", f"run.out_dir={tmp}/run",
        "optim.batch_size=4", "optim.warmup_steps=2", "run.nice=0", "run.threads=1",
        "run.checkpoint_every=1", "run.eval_every=2", *MODEL, *extra])


def test_cache_holds_resized_images_and_kept_instances(corpus: Path, tmp_path: Path) -> None:
    out = build_cache([corpus], tmp_path / "c", 64, exclude=["HELD:val"])
    cache = load_cache(out)
    coco = json.loads((corpus / "SYN" / "annotations.coco.json").read_text())
    assert cache.images.shape == (7, 64, 64, 3)
    # Every cyst component of the six phantoms is kept; the 4-px speck image has none.
    assert 6 <= len(cache.instances) <= len(coco["annotations"])
    assert sorted(set(cache.instances[:, 0].tolist())) == [0, 1, 2, 3, 4, 5]
    assert min(cache.mask(k).sum() for k in range(len(cache.instances))) >= 12
    assert set(cache.datasets) == {"SYN"}
    assert tuple(cache.sizes[0]) == (64, 64)
    assert cache.mask(0).shape == (64, 64) and cache.mask(0).sum() > 12
    assert build_cache([corpus], tmp_path / "c", 64, exclude=["HELD:val"]) == out  # reused
    with pytest.raises(ValueError, match="other arguments"):
        build_cache([corpus], tmp_path / "c", 32, exclude=["HELD:val"])


def test_clicks_follow_the_error_regions() -> None:
    gt = np.zeros((1, 40, 40), bool)
    gt[0, 10:30, 10:30] = True
    valid = np.ones_like(gt)
    pred = np.zeros_like(gt)
    pred[0, 10:30, 10:20] = True  # the right half is missed
    xy, label, ok = corrective_clicks(pred, gt, valid, np.random.default_rng(0))
    assert ok[0] and label[0] == 1 and 20 <= xy[0, 0] < 30 and 10 <= xy[0, 1] < 30
    pred2 = gt.copy()
    pred2[0, 0:12, 0:40] = True  # a false band on top, larger than any miss
    xy, label, ok = corrective_clicks(pred2, gt, valid, np.random.default_rng(0))
    assert ok[0] and label[0] == 0 and not gt[0, int(xy[0, 1]), int(xy[0, 0])]
    _, _, ok = corrective_clicks(gt, gt, valid, np.random.default_rng(0))
    assert not ok[0]
    centre, depth = interior_click(gt[0], np.random.default_rng(0))
    assert depth == pytest.approx(10.0) and 18 <= centre[0] <= 21 and 18 <= centre[1] <= 21


def test_initial_prompts_boxes_and_points_inside_masks() -> None:
    masks = np.zeros((8, 48, 48), bool)
    masks[:, 12:30, 8:40] = True
    prompts, is_box = initial_prompts(masks, np.ones_like(masks), np.random.default_rng(1),
                                      p_box=0.5, box_jitter=0.0, p_multi=0.0)
    for i in range(8):
        if is_box[i]:
            assert prompts.boxes[i].tolist() == [8.0, 12.0, 40.0, 30.0]
            assert bool((prompts.labels[i] == -1).all())
        else:
            x, y = prompts.coords[i, 0].int().tolist()
            assert masks[i, y, x] and prompts.labels[i, 0] == 1
            assert prompts.boxes[i].tolist() == [-1.0] * 4


def test_augmentation_keeps_image_and_masks_aligned() -> None:
    masks = torch.zeros(6, 64, 64, dtype=torch.bool)
    masks[:, 20:44, 16:40] = True
    images = masks[:, None].float().expand(6, 3, 64, 64) * 255
    cfg = AugmentConfig(gamma=0.0, contrast=(1.0, 1.0), brightness=0.0, p_speckle=0.0)
    out, m, valid = augment(images, masks, torch.ones_like(masks), cfg,
                            torch.Generator().manual_seed(0))
    agree = ((out[:, 0] > 127) == m).float().mean()
    assert agree > 0.98 and bool((m <= valid).all())
    assert not torch.equal(m, masks)  # something moved


def test_focus_crop_magnifies_the_instance_around_the_frame_centre() -> None:
    masks = torch.zeros(4, 64, 64, dtype=torch.bool)
    masks[:, 0:8, 44:52] = True  # 8 x 8 px at the top edge
    images = masks[:, None].float().expand(4, 3, 64, 64) * 255
    cfg = AugmentConfig(p_affine=0.0, rotate_deg=0.0, p_flip=0.0, gamma=0.0,
                        contrast=(1.0, 1.0), brightness=0.0, p_speckle=0.0, p_focus=1.0,
                        focus_expand=(1.4, 3.0), focus_max_zoom=4.0)
    out, m, valid = augment(images, masks, torch.ones_like(masks), cfg,
                            torch.Generator().manual_seed(0))
    assert ((out[:, 0] > 127) == m).float().mean() > 0.98 and bool((m <= valid).all())
    for k in range(4):
        rows, cols = torch.nonzero(m[k], as_tuple=True)
        side = max(int(rows.max() - rows.min()), int(cols.max() - cols.min())) + 1
        # zoom = 64 / (8 x expand), at most 4: the 8-px square becomes 21-32 px wide
        assert 20 <= side <= 33, side
        # centred up to the jitter (0.15 of the window's half side) and rounding
        assert abs(float(rows.float().mean()) - 31.5) < 6 and abs(float(cols.float().mean()) - 31.5) < 6
    # Every window reaches past the image's top edge: that part is not a valid region.
    assert not bool(valid.flatten(1).all(1).any())


def test_training_resumes_exactly_and_exports(corpus: Path, tmp_path: Path) -> None:
    straight = train_fusion(config(corpus, tmp_path / "a", "run.steps=4"))
    assert straight["step"] == 4 and straight["stopped"] == "steps"
    # The same schedule killed after step 1 (a run told to stop there; the learning rate of
    # step 0 is the warm-up's either way), then continued from its checkpoint.
    cfg = config(corpus, tmp_path / "b", "run.steps=4")
    first = train_fusion(dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, steps=1)))
    assert first["step"] == 1
    stopped = train_fusion(config(corpus, tmp_path / "b", "run.steps=4", "run.max_seconds=0"))
    assert stopped == {**stopped, "step": 1, "stopped": "max_seconds"}
    assert train_fusion(cfg)["step"] == 4
    a = torch.load(tmp_path / "a" / "run" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "run" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = (tmp_path / "a" / "run" / "curve.csv").read_text().splitlines()
    assert rows[0].startswith("step,images_seen") and len(rows) == 3  # steps 2 and 4
    metrics = [json.loads(x) for x in (tmp_path / "a" / "run" / "metrics.jsonl").open()]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    folder = export_fusion(tmp_path / "a" / "run", tmp_path / "export")
    model = load_model(folder)
    assert model.config.img_size == 64
    sd = model.state_dict()
    assert all(torch.allclose(sd[k].float(), a[k].float(), atol=1e-2, rtol=1e-3) for k in a)
