"""Tiny synthetic tasks for the fine-tuning tests: a folder-per-class set of B-mode-like images
(three echo levels) and tiny encoders saved as native checkpoints."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ultrasam.config import get_config
from ultrasam.modeling.build import build_model
from ultrasam.weights.checkpoints import save_native

CLASSES = ("bright", "dark", "mid")
SIZE = 64


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def synthetic_image(cls: str, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """size x size uint8: speckle-like texture whose echo level is the class (a deliberately
    easy task: any encoder, even a random one, must carry it), plus a distracting disk of
    random brightness at a random place."""
    level = {"dark": 50.0, "mid": 115.0, "bright": 180.0}[cls]
    img = rng.gamma(8.0, level / 8.0, size=(size, size)).clip(0, 255).astype(np.float32)
    img = cv2.GaussianBlur(img, (3, 3), 0)
    cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
    yy, xx = np.mgrid[:size, :size]
    img[(yy - cy) ** 2 + (xx - cx) ** 2 <= (size // 6) ** 2] = rng.uniform(0, 255)
    return img.astype(np.uint8)


def write_class_folder(root: Path, per_class: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for cls in CLASSES:
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            cv2.imwrite(str(root / cls / f"{cls}_{i:03d}.png"), synthetic_image(cls, rng))
    return root


@pytest.fixture(scope="session")
def class_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_class_folder(tmp_path_factory.mktemp("classes"), per_class=24)


TINY_FUSION = {"img_size": SIZE, "conv_dims": (8, 16, 24, 32), "conv_depths": (1, 1, 1, 1),
                   "prompt_embed_dim": 16, "iou_head_hidden_dim": 16}


@pytest.fixture(scope="session")
def tiny_fusion(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 64 px FusionNet saved as a native checkpoint folder."""
    torch.manual_seed(0)
    model = build_model(get_config("fusion", **TINY_FUSION))
    return save_native(model, tmp_path_factory.mktemp("fusion_ckpt"), source="test")


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 'tiny' ViT variant (128 px, 8 x 8 embedding) at 64 px, saved as a checkpoint."""
    torch.manual_seed(0)
    model = build_model(get_config("tiny", img_size=SIZE, window_size=2))
    return save_native(model, tmp_path_factory.mktemp("vit_ckpt"), source="test")
