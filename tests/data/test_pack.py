"""Training packs: format, caps, determinism, reading back, size of the shared-corpus pack."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ultrasam.cli import main as cli_main
from ultrasam.data.coco import CocoWriter, write_json
from ultrasam.data.dataset import CocoDataset
from ultrasam.data.factory import open_dataset
from ultrasam.data.pack import PackDataset, cap_indices, iter_pack, pack

MIB = 2**20


def _make_dataset(root: Path, name: str, n: int, size: tuple[int, int], colour: bool = False,
                  split: str | None = None) -> Path:
    """A tiny per-dataset COCO folder: gradient images, one square lesion each (n images)."""
    writer = CocoWriter(name, ["lesion", "vessel"], images_dir=root / name / "images")
    h, w = size
    for i in range(n):
        image = np.add.outer(np.arange(h), np.arange(w) * (i + 1)).astype(np.uint8)
        if colour:
            image = np.stack([image, image // 2, 255 - image], axis=2)
        mask = np.zeros((h, w), bool)
        mask[h // 4: h // 2, w // 4: w // 2] = True
        speck = np.zeros((h, w), bool)
        speck[-2:, -2:] = True  # too small to survive downscaling
        writer.add_image(image, {"lesion": mask, "vessel": speck}, source=f"{i}.png",
                         group=f"g{i // 2}", split=split, frame=i)
    write_json(root / name / "annotations.coco.json", writer.to_coco())
    return root / name / "annotations.coco.json"


def test_pack_round_trip_caps_and_determinism(tmp_path):
    corpus = tmp_path / "corpus"
    _make_dataset(corpus, "GRAY", 10, (120, 200))
    _make_dataset(corpus, "RGB", 3, (64, 48), colour=True, split="val")
    meta = pack(corpus, tmp_path / "p1", max_side=50, quality=90, caps={"gray": 4},
                shard_bytes=4096, progress=False)
    pack(corpus, tmp_path / "p2", max_side=50, quality=90, caps={"gray": 4}, shard_bytes=4096,
         progress=False)
    files1 = sorted(p.name for p in (tmp_path / "p1").iterdir())
    assert files1 == sorted(p.name for p in (tmp_path / "p2").iterdir())
    for name in files1:
        assert (tmp_path / "p1" / name).read_bytes() == (tmp_path / "p2" / name).read_bytes()

    assert meta["samples"] == 7 and len(meta["shards"]) > 1
    assert meta["datasets"]["GRAY"] == {"available": 10, "packed": 4, "capped_out": 6,
                                        "instances": 4}
    assert meta["dropped_empty_instances"] == {"GRAY": 4}  # RGB specks survive a 0.78 scale
    assert meta["datasets"]["RGB"]["instances"] == 6
    assert "GRAY capped to 4 of 10" in meta["trade_off"] and "quality 90" in meta["trade_off"]
    on_disk = sum(p.stat().st_size for p in (tmp_path / "p1").iterdir())
    assert meta["pack_bytes_total"] == on_disk

    ds = open_dataset(tmp_path / "p1")
    assert isinstance(ds, PackDataset) and len(ds) == 7
    records = list(iter_pack(tmp_path / "p1"))
    assert [m["image_id"] for m, _ in records if m["dataset"] == "GRAY"] == [2, 4, 7, 9]
    gray = ds[0]
    assert gray.image.shape == (30, 50, 3) and gray.image.dtype == np.uint8
    assert (gray.image[..., 0] == gray.image[..., 2]).all()  # stored single-channel
    assert gray.masks.shape == (1, 30, 50) and gray.structures == ["lesion"]
    assert gray.masks[0, 8:14, 13:24].all() and not gray.masks[0, 20:, :].any()
    rgb = PackDataset(tmp_path / "p1", split="val")
    assert len(rgb) == 3 and rgb[0].image.shape == (50, 38, 3)
    assert not (rgb[0].image[..., 0] == rgb[0].image[..., 2]).all()
    assert len(PackDataset(tmp_path / "p1", split="train")) == 4  # null split counts as train


def test_pack_errors(tmp_path):
    coco = _make_dataset(tmp_path / "c", "D", 2, (20, 20))
    with pytest.raises(ValueError, match="caps name datasets"):
        pack(coco, tmp_path / "p", caps={"other": 1}, progress=False)
    with pytest.raises(ValueError, match="quality"):
        pack(coco, tmp_path / "p", quality=0, progress=False)
    with pytest.raises(FileNotFoundError, match="not a pack"):
        PackDataset(tmp_path)
    pack(coco, tmp_path / "p", max_side=16, progress=False)
    shard = tmp_path / "p" / "shard-00000.usp"
    shard.write_bytes(b"XXXX" + shard.read_bytes()[4:])
    with pytest.raises(ValueError, match="bad record magic"):
        PackDataset(tmp_path / "p")
    assert cli_main(["data", "pack", str(coco), "--max-side", "16", "--quality", "50",
                     "--cap", "D", "--out", str(tmp_path / "q")]) == 1


def test_cap_indices_spread_evenly():
    assert cap_indices(10, 4) == [1, 3, 6, 8]
    assert cap_indices(3, 5) == [0, 1, 2]
    assert cap_indices(1793, 500)[-1] > 1780


def test_pack_shared_subset_reads_like_the_corpus(us_corpus, tmp_path):
    coco = us_corpus / "USGRA" / "annotations.coco.json"
    meta = pack(coco, tmp_path / "p", max_side=128, quality=60, split="test", progress=False)
    assert meta["samples"] == 40
    packed = PackDataset(tmp_path / "p")
    full = CocoDataset(coco, split="test")
    a, b = packed[0], full[0]
    assert a.image_id == b.image_id and set(a.structures) <= set(b.structures)
    assert a.image.shape == (128, 128, 3) and b.image.shape == (384, 384, 3)
    # The packed mask is the corpus mask downscaled 3x: they agree on most pixels.
    k = b.structures.index(a.structures[0])
    inter = a.masks[0] & b.masks[k][1::3, 1::3]
    assert inter.sum() > 0.8 * a.masks[0].sum()


@pytest.mark.slow
def test_shared_corpus_training_pack_fits_40_mib(us_corpus, tmp_path):
    out = tmp_path / "pack"
    assert cli_main(["data", "pack", str(us_corpus), "--max-side", "256", "--quality", "60",
                     "--split", "train", "--cap", "TG3K=500", "--out", str(out)]) == 0
    meta = json.loads((out / "pack.json").read_text())
    size = sum(p.stat().st_size for p in out.iterdir())
    assert size == meta["pack_bytes_total"] and size < 40 * MIB
    assert meta["datasets"]["MMOTU_2d"]["packed"] == 999  # official val (469) excluded
    assert meta["datasets"]["TG3K"]["packed"] == 500
