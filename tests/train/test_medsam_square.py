"""MedSAM-style checkpoints train on the full square, as their inference preprocesses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ultrasam.data.coco import CocoWriter, write_json
from ultrasam.modeling import build_model
from ultrasam.train import load_config, train
from ultrasam.train.augment import AugmentParams
from ultrasam.train.data import BatchLoader, MixingSampler, TrainImages
from ultrasam.weights.checkpoints import save_native


def _corpus(root: Path) -> Path:
    w = CocoWriter("WIDE", ["lesion"], images_dir=root / "WIDE" / "images")
    rng = np.random.default_rng(0)
    for i in range(3):
        mask = np.zeros((60, 100), bool)
        mask[10:40, 20 + 10 * i:60 + 10 * i] = True
        w.add_image(rng.integers(0, 255, (60, 100), dtype=np.uint8), {"lesion": mask},
                    source=f"w{i}")
    write_json(root / "WIDE" / "annotations.coco.json", w.to_coco())
    return root


def test_square_loader_stretches_like_medsam(tmp_path: Path) -> None:
    images = TrainImages([_corpus(tmp_path)], min_instance_area=12)
    kwargs = dict(input_size=128, mask_size=32, images_per_batch=2, max_instances=2,
                  min_instance_area=12, augment_params=AugmentParams(hflip=0.0), seed=0)
    sam_batch = BatchLoader(images, MixingSampler(images.datasets()), **kwargs).next_batch()
    assert sam_batch.sizes.tolist() == [[77, 128]] * 2          # longest side + padding
    med = BatchLoader(images, MixingSampler(images.datasets()), square=True, **kwargs)
    batch = med.next_batch()
    assert batch.sizes.tolist() == [[128, 128]] * 2             # the whole square
    # The lesion keeps its relative position: rows 10-40 of 60 -> about 21-85 of 128.
    rows = torch.as_tensor(batch.masks[0][0]).any(1).nonzero().flatten()
    assert abs(rows.min() - 21) <= 1 and abs(rows.max() + 1 - 85) <= 1


def test_training_from_a_medsam_checkpoint_runs(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    model = build_model("tiny")
    model.config = model.config.replace(preprocessing="medsam")
    ckpt = save_native(model, tmp_path / "medsam_tiny", source_format="medsam")
    out = tmp_path / "run"
    cfg = load_config(None, [f"model.checkpoint={ckpt}", f"data.paths=[{_corpus(tmp_path)}]",
                             f"run.out_dir={out}", "run.steps=2", "run.checkpoint_every=2",
                             "data.images_per_batch=2", "augment.p_scale=0.5",
                             "run.progress=false", "run.tensorboard=false"])
    result = train(cfg)
    assert result["step"] == 2
    from ultrasam.weights.checkpoints import load_model
    assert load_model(result["export"]).config.preprocessing == "medsam"
