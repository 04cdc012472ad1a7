"""Training/eval dataset readers on the builder's output and on the shared corpus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ultrasam.data.coco import CocoWriter, write_json
from ultrasam.data.corpus import split_corpus
from ultrasam.data.dataset import CocoDataset, sample_weights, weighted_sampler
from ultrasam.data.factory import open_dataset


def _dataset(root: Path, name: str, n: int, split: str | None = None) -> Path:
    writer = CocoWriter(name, ["a", "b"], images_dir=root / name / "images")
    for i in range(n):
        image = np.random.default_rng(len(name) * 100 + i).integers(0, 255, (24, 32), np.uint8)
        image[0, 0] = 10 * i
        ma, mb = np.zeros((24, 32), bool), np.zeros((24, 32), bool)
        ma[2:8, 2:8] = True
        mb[10:20, 10:30] = True
        mb[0:3, 28:32] = True  # second component of "b"
        writer.add_image(image, {"a": ma, "b": mb}, source=f"{i}", split=split,
                         spacing_mm=(0.1, 0.2), group=f"{name}-{i}")
    write_json(root / name / "annotations.coco.json", writer.to_coco())
    return root / name / "annotations.coco.json"


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    _dataset(tmp_path / "c", "ALPHA", 12)
    _dataset(tmp_path / "c", "BETA", 4, split="test")
    return tmp_path / "c"


def test_per_dataset_file_and_corpus_folder(corpus):
    ds = CocoDataset(corpus / "ALPHA" / "annotations.coco.json")
    s = ds[3]
    assert s.image.shape == (24, 32, 3) and s.image.dtype == np.uint8 and s.image[0, 0, 2] == 30 == s.image[0, 0, 0]
    assert s.masks.shape == (3, 24, 32) and s.masks.dtype == bool
    assert s.structures == ["a", "b", "b"] and s.masks[0, 2:8, 2:8].all()
    assert (s.dataset, s.group, s.split, s.spacing_mm) == ("ALPHA", "ALPHA-3", None, (0.1, 0.2))
    assert len(CocoDataset(corpus)) == 16
    assert len(CocoDataset(corpus, split="train")) == 12  # no official split counts as train
    assert len(CocoDataset(corpus, split="test")) == 4
    assert len(CocoDataset(corpus, datasets=["beta"])) == 4


def test_merged_files_resolve_images_wherever_written(corpus, tmp_path):
    split_corpus(corpus, tmp_path / "elsewhere", progress=False)
    for root in (tmp_path / "elsewhere", tmp_path / "elsewhere" / "lodo"):
        for f in sorted(root.glob("*.coco.json")):
            if f.name == "ALPHA.train.coco.json":  # BETA is all official test: empty, by design
                assert json.loads(f.read_text())["images"] == []
                continue
            ds = CocoDataset(f)
            assert ds[len(ds) - 1].image.shape == (24, 32, 3)
    merged = CocoDataset(tmp_path / "elsewhere", split="test")
    assert {merged.dataset_of(i) for i in range(len(merged))} >= {"BETA"}
    assert merged[0].structures[0] in {"a", "b"} and merged[0].split == "test"
    # Merges without image_root (written by another tool) resolve from their own folder.
    data = json.loads((tmp_path / "elsewhere" / "test.coco.json").read_text())
    del data["info"]["image_root"]
    write_json(corpus / "plain.coco.json", data)
    assert CocoDataset(corpus / "plain.coco.json")[0].image.shape == (24, 32, 3)


def test_clear_errors(corpus, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        CocoDataset(tmp_path / "nope")
    with pytest.raises(ValueError, match="no images"):
        CocoDataset(corpus, datasets=["gamma"])
    with pytest.raises(ValueError, match="split must be"):
        CocoDataset(corpus, split="validation")
    ds = CocoDataset(corpus / "BETA" / "annotations.coco.json")
    (corpus / "BETA" / "images" / ds.entries[0].record["file_name"]).unlink()
    with pytest.raises(FileNotFoundError, match="BETA__00001.png"):
        ds[0]
    (corpus / "bad.coco.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        CocoDataset(corpus / "bad.coco.json")


def test_weighted_sampler_mixes_datasets_by_weight(corpus):
    ds = CocoDataset(corpus)
    p = sample_weights(ds, {"ALPHA": 1.0, "BETA": 3.0})
    assert p.shape == (16,) and np.isclose(p[:12].sum(), 0.25) and np.isclose(p[12:].sum(), 0.75)
    drawn = list(weighted_sampler(ds, {"ALPHA": 1.0, "BETA": 3.0}, num_samples=4000, seed=1))
    share = np.mean([ds.dataset_of(i) == "BETA" for i in drawn])
    assert 0.72 < share < 0.78
    assert drawn == list(weighted_sampler(ds, {"ALPHA": 1, "BETA": 3}, num_samples=4000, seed=1))
    with pytest.raises(ValueError, match="no weight"):
        sample_weights(ds, {"ALPHA": 1.0})
    with pytest.raises(ValueError, match="not in the data"):
        sample_weights(ds, {"ALPHA": 1.0, "BETA": 1.0, "GAMMA": 1.0})


def test_reads_the_shared_corpus(us_corpus):
    hc = open_dataset(us_corpus, split="train", datasets=["HC"])
    s = hc[0]
    assert len(hc) == 999 and s.image.shape == (259, 384, 3)
    assert s.spacing_mm == (0.144033, 0.144033)
    assert s.structures == ["fetal_head"] and s.masks.shape == (1, 259, 384)
    val = open_dataset(us_corpus / "MMOTU_2d" / "annotations.coco.json", split="val")
    assert len(val) == 469 and val[0].label is not None
    psfhs = open_dataset(us_corpus, datasets=["PSFHS"])
    assert sorted(set(psfhs[0].structures)) == ["fetal_head", "pubic_symphysis"]
