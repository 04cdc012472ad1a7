"""Shared test fixtures: the location of ../shared/data, tiny model configs, phantom lesions."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ULTRASAM_SHARED", ROOT.parent / "shared")).resolve()
SHARED_DATA = SHARED / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests using it are skipped, with a message saying why, when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real ultrasound data not found at {SHARED_DATA} "
                    "(set ULTRASAM_SHARED to the shared folder to run this test)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def native_samples(shared_data: Path) -> Path:
    path = shared_data / "native-samples"
    if not path.is_dir():
        pytest.skip(f"native samples not found at {path}")
    return path


@pytest.fixture(scope="session")
def us_corpus(shared_data: Path) -> Path:
    path = shared_data / "us-corpus"
    if not path.is_dir():
        pytest.skip(f"shared corpus not found at {path}")
    return path


@pytest.fixture(scope="session")
def make_responsive_sam() -> Callable[[], torch.nn.Module]:
    """A factory of tiny SAMs with SAM's initialisation and the position parameters (zero at
    init) drawn, seeded: unlike all-random weights, whose decoder saturates (logits barely move
    whatever the input), their answers depend on the image, the prompt and every weight."""
    from ultrasam.modeling import build_model

    def make() -> torch.nn.Module:
        torch.manual_seed(0)
        model = build_model("tiny").eval()
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "rel_pos" in name or "pos_embed" in name:
                    p.normal_(0, 0.3)
        return model

    return make


@pytest.fixture(scope="session")
def phantom_lesion() -> Callable[[int], tuple[np.ndarray, np.ndarray]]:
    """``phantom_lesion(seed)`` -> (256-px cyst phantom image H x W x 3 uint8, its largest cyst
    H x W bool): one connected lesion, which a user would box or click."""
    import cv2

    from ultrasam.data.synthetic import make_phantom

    def make(seed: int) -> tuple[np.ndarray, np.ndarray]:
        ph = make_phantom(seed=seed, size=256, kind="cyst")
        gt = ph.masks[ph.structures[0]].astype(np.uint8)
        _, lab, stats, _ = cv2.connectedComponentsWithStats(gt)
        return ph.image, lab == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))

    return make
