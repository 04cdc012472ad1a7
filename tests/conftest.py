"""Shared test fixtures: the location of ../shared/data and tiny model configs."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

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
