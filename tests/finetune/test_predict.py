"""A saved fine-tuned run, loaded back, predicts what the trained network predicted in memory
(classification through the files + CLI path, segmentation through the Python API)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from ultrasam.cli import main as cli_main
from ultrasam.data.coco import CocoWriter, write_json
from ultrasam.data.synthetic import make_phantom
from ultrasam.evaluate.metrics import instance_scores
from ultrasam.finetune import classify, load_finetuned, segment
from ultrasam.finetune.data import open_source

QUICK = {"epochs": 3, "patience": 3, "lr": 1e-2, "n_boot": 20, "batch_size": 8}


@pytest.fixture(scope="module")
def phantom_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 synthetic cyst phantoms (64 px, 0.2 mm pixels) as a COCO dataset."""
    root = tmp_path_factory.mktemp("seg")
    w = CocoWriter("PH", ["cyst"], images_dir=root / "images")
    for seed in range(24):
        ph = make_phantom(seed=seed, size=64, geometry="linear", kind="cyst")
        w.add_image(ph.image, {"cyst": ph.masks["cyst"]}, source=f"c{seed}",
                    group=f"g{seed // 2}", spacing_mm=(0.2, 0.2))
    write_json(root / "annotations.coco.json", w.to_coco())
    return root


def test_classifier_saved_loaded_predicts_the_same(class_folder: Path, tiny_fusion: Path,
                                                   tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    r = classify(class_folder, run, checkpoint=str(tiny_fusion), max_images=12, **QUICK)
    preds = r["test_predictions"]
    files = [str(class_folder / p["source"]) for p in preds]
    out = tmp_path / "pred"
    rc = cli_main(["finetune", "predict", str(run), *files, "--out", str(out),
                   "--batch-size", "5"])
    assert rc == 0 and "classification: " in capsys.readouterr().out
    with open(out / "predictions.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [row["file"] for row in rows] == files
    classes = r["classes"]
    got = np.array([[float(row[f"p_{c}"]) for c in classes] for row in rows])
    want = np.array([p["probs"] for p in preds])
    np.testing.assert_allclose(got, want, atol=2e-5)
    assert [row["predicted"] for row in rows] == [classes[int(np.argmax(p))] for p in want]
    # Python API on arrays (gray input is accepted too): same probabilities.
    model = load_finetuned(run)
    gray = [cv2.imread(f, cv2.IMREAD_GRAYSCALE) for f in files[:3]]
    np.testing.assert_allclose(model.predict_proba(gray), want[:3], atol=2e-5)
    with pytest.raises(ValueError, match="segmentation run"):
        model.predict_masks(gray)


def test_segmenter_saved_loaded_predicts_the_same(phantom_corpus: Path, tiny_fusion: Path,
                                                  tmp_path: Path) -> None:
    run = tmp_path / "run"
    r = segment(phantom_corpus, run, checkpoint=str(tiny_fusion), decoder_width=16, **QUICK)
    model = load_finetuned(run)
    assert model.structures == ["cyst"]
    source = open_source(phantom_corpus)
    by_id = {rec.image_id: rec.index for rec in source.records}
    rows = r["test_per_image"]
    assert rows
    data = [source.read(by_id[row["image_id"]]) for row in rows]
    masks = model.predict_masks([d.image for d in data])
    for row, d, mask in zip(rows, data, masks):
        assert mask.shape == d.image.shape[:2] and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 1}
        score = instance_scores(mask == 1, d.masks.any(0), d.spacing_mm)
        assert score.dice == pytest.approx(row["dice"], abs=1e-9)


def test_predict_errors_are_clear(tmp_path: Path, class_folder: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(FileNotFoundError, match="not a fine-tuning run folder"):
        load_finetuned(tmp_path)
    (tmp_path / "finetune.json").write_text(json.dumps({"task": "dance"}))
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="'task' must be one of"):
        load_finetuned(tmp_path)
    rc = cli_main(["finetune", "predict", str(tmp_path / "nope"),
                   str(next(class_folder.rglob("*.png"))), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 1 and "not a fine-tuning run folder" in err and err.count("\n") == 1
