"""`ultrasam export onnx`: a checkpoint file in, a working folder out; int8; one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from ultrasam.cli import main
from ultrasam.inference.onnx import OnnxPredictor
from ultrasam.weights.checkpoints import save_native

from .conftest import seeded_model


def embed(folder: Path, image: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(str(folder / "encoder.onnx"), providers=["CPUExecutionProvider"])
    return s.run(None, {"image": image})[0]


def test_export_verb_fp32_and_int8(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = save_native(seeded_model("tiny"), tmp_path / "ckpt")
    assert main(["export", "onnx", str(ckpt), "--out", str(tmp_path / "fp32")]) == 0
    assert main(["export", "onnx", str(ckpt), "--out", str(tmp_path / "int8"),
                 "--quantize", "int8"]) == 0
    out = capsys.readouterr().out
    assert "max relative difference to PyTorch" in out
    for name in ("fp32", "int8"):
        assert {p.name for p in (tmp_path / name).iterdir()} == {
            "encoder.onnx", "decoder.onnx", "preprocess.json", "README.md"}
    # int8 MatMul weights: a smaller encoder whose embedding stays close to fp32's.
    assert (tmp_path / "int8" / "encoder.onnx").stat().st_size < \
        0.85 * (tmp_path / "fp32" / "encoder.onnx").stat().st_size
    image = np.random.default_rng(0).normal(size=(1, 3, 128, 128)).astype(np.float32)
    a, b = embed(tmp_path / "fp32", image).ravel(), embed(tmp_path / "int8", image).ravel()
    cos = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert 0.99 < cos < 1.0
    p = OnnxPredictor(tmp_path / "int8", threads=1)
    p.set_image(np.full((50, 60), 128, np.uint8))
    masks, scores, _ = p.predict(box=[5, 5, 40, 30])
    assert masks.shape == (3, 50, 60) and np.isfinite(scores).all()


def test_export_verb_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["export", "onnx", str(tmp_path / "missing.pth"),
                 "--out", str(tmp_path / "o")]) == 1
    ckpt = save_native(seeded_model("tiny"), tmp_path / "ckpt")
    assert main(["export", "onnx", str(ckpt), "--out", str(tmp_path / "o"),
                 "--opset", "11"]) == 1
    err = capsys.readouterr().err
    assert "opset must be an integer >= 17" in err
    assert len([ln for ln in err.splitlines() if ln.strip()]) == 2  # one line per failure
    with pytest.raises(SystemExit):
        main(["export", "onnx", str(ckpt), "--out", str(tmp_path / "o"), "--quantize", "int4"])


def test_predict_backend_onnx_needs_a_folder(tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    img = tmp_path / "a.png"
    from PIL import Image

    Image.fromarray(np.zeros((20, 20), np.uint8)).save(img)
    assert main(["predict", str(img), "--backend", "onnx", "--box", "1,1,9,9",
                 "--out", str(tmp_path / "o")]) == 1
    assert "--backend onnx needs --checkpoint DIR" in capsys.readouterr().err
    assert main(["predict", str(img), "--backend", "onnx", "--checkpoint", str(tmp_path),
                 "--box", "1,1,9,9", "--out", str(tmp_path / "o")]) == 1
    assert "lacks" in capsys.readouterr().err
