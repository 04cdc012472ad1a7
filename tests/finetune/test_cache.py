"""RunCache: a linear probe with the cache trains on exactly the features it would compute
itself; later runs (another label fraction) reuse them; two encoders never share entries;
memory stays bounded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ultrasam.finetune import RunCache, classify
from ultrasam.finetune.cache import fingerprint
from ultrasam.finetune.data import Tensors, open_source
from ultrasam.finetune.encoder import load_encoder

QUICK = {"epochs": 2, "patience": 2, "lr": 1e-2, "n_boot": 20, "batch_size": 8,
         "max_images": 12}


def test_cached_runs_equal_uncached_and_reuse(class_folder: Path, tiny_fusion: Path,
                                              tmp_path: Path) -> None:
    source = open_source(class_folder)  # parsed once, shared by the runs
    plain = classify(source, tmp_path / "a", checkpoint=str(tiny_fusion), **QUICK)
    cache = RunCache()
    cached = classify(source, tmp_path / "b", checkpoint=str(tiny_fusion), cache=cache,
                      **QUICK)
    assert cached["test_predictions"] == plain["test_predictions"]
    def losses(r: dict) -> list:
        return [(h["train_loss"], h["val_score"]) for h in r["history"]]

    assert losses(cached) == losses(plain)
    first = dict(cache.stats)
    n = sum(cached["n_images"].values())
    assert first["feature_misses"] == n and first["feature_hits"] == 0
    # A smaller label fraction: its images are a subset, nothing is read or computed again.
    classify(source, tmp_path / "c", checkpoint=str(tiny_fusion), cache=cache,
             label_fraction=0.5, **QUICK)
    assert cache.stats["feature_misses"] == first["feature_misses"]
    assert cache.stats["image_misses"] == first["image_misses"]
    assert cache.stats["feature_hits"] > 0
    # Another encoder (random init) computes its own features.
    classify(source, tmp_path / "d", variant="fusion", cache=cache, **{**QUICK,
                                                                        "max_images": 4})
    assert cache.stats["feature_misses"] > first["feature_misses"]


def test_fingerprint_follows_the_weights() -> None:
    a, _ = load_encoder(variant="tiny", seed=1)
    b, _ = load_encoder(variant="tiny", seed=1)
    c, _ = load_encoder(variant="tiny", seed=2)
    assert fingerprint(a) == fingerprint(b) != fingerprint(c)


def test_memory_is_bounded(class_folder: Path) -> None:
    source = open_source(class_folder)
    one = 3 * 32 * 32 + 2 * 8  # uint8 image + int64 size
    cache = RunCache(max_bytes=5 * one)
    t = cache.tensors(source, list(range(12)), 32)
    assert isinstance(t, Tensors) and t.images.shape == (12, 3, 32, 32)
    assert cache.nbytes <= 5 * one
    again = cache.tensors(source, [11, 10], 32)  # the most recent entries survived
    assert torch.equal(again.images, t.images[[11, 10]])
    assert cache.stats["image_hits"] == 2
    assert np.all(again.sizes.numpy() == 32)
