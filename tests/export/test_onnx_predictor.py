"""OnnxPredictor against Predictor end to end: the same masks from the same prompts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ultrasam.data.synthetic import make_phantom
from ultrasam.inference.onnx import OnnxPredictor
from ultrasam.inference.predictor import Predictor


def image(seed: int = 1) -> np.ndarray:
    """A non-square grey phantom (letterboxed in the model frame)."""
    return make_phantom(seed=seed, size=160).image[:, :130]


def prompts(mask_size: int) -> list[dict]:
    rng = np.random.default_rng(0)
    return [
        {"point_coords": np.array([[65, 80]]), "point_labels": np.array([1])},
        {"point_coords": np.array([[65, 80], [20, 30]]), "point_labels": np.array([1, 0]),
         "multimask_output": False},
        {"box": np.array([20, 30, 100, 120])},
        {"box": np.array([20, 30, 100, 120]), "point_coords": np.array([[60, 70]]),
         "point_labels": np.array([1]), "multimask_output": False},
        {"mask_input": rng.normal(size=(1, mask_size, mask_size)) * 3},
        {"point_coords": np.array([[65, 80]]), "point_labels": np.array([1]), "refine": True},
        {"point_coords": np.array([[5, 150]]), "point_labels": np.array([0]), "refine": True},
        {"box": np.array([20, 30, 100, 120]), "refine": True},
    ]


def assert_same(a: tuple, b: tuple, a_logits: np.ndarray) -> None:
    """Masks identical except where the logit is within 1e-3 of the threshold; scores and
    low-res logits to 1e-4 relative."""
    assert a[0].shape == b[0].shape and a[0].dtype == b[0].dtype == bool
    differ = a[0] != b[0]
    assert not (differ & (np.abs(a_logits) > 1e-3)).any(), int(differ.sum())
    for x, y in zip(a[1:], b[1:]):
        assert x.shape == y.shape
        assert np.abs(x - y).max() <= 1e-4 * max(float(np.abs(x).max()), 1e-6)


def pass1_fires(model: object, pred: Predictor, prompt: dict) -> bool:
    """Whether refinement takes its derived-box path for this prompt (pass-1 mask non-empty)."""
    p = {k: v for k, v in prompt.items() if k != "refine"}
    return bool(pred.predict(**p, multimask_output=False)[0].any())


@pytest.mark.parametrize("variant", ("tiny", "small", "fusion"))
def test_onnx_predictor_matches_predictor(exported, variant: str) -> None:
    torch.set_num_threads(1)
    model, folder = exported(variant)
    pred, onnx_pred = Predictor(model), OnnxPredictor(folder, threads=1)
    img = image()
    pred.set_image(img)
    onnx_pred.set_image(img)
    assert onnx_pred.original_size == pred.original_size
    assert onnx_pred.input_size == pred.input_size
    emb, ref = onnx_pred.get_image_embedding(), pred.get_image_embedding().numpy()
    assert np.abs(emb - ref).max() <= 1e-4 * np.abs(ref).max()
    derived = 0
    for prompt in prompts(model.config.mask_size):
        want = pred.predict(**prompt)
        got = onnx_pred.predict(**prompt)
        logits = pred.predict(**prompt, return_logits=True)[0]
        assert_same(want, got, logits)
        got_logits = onnx_pred.predict(**prompt, return_logits=True)[0]
        assert np.abs(got_logits - logits).max() <= 1e-4 * max(np.abs(logits).max(), 1e-6)
        if prompt.get("refine") and "box" not in prompt:
            derived += pass1_fires(model, pred, prompt)
    assert derived >= 1, "no refinement case took the derived-box path"


def test_medsam_preprocessing(exported) -> None:
    """MedSAM: square bicubic resize, min-max inside the encoder graph, one final resize."""
    model, folder = exported("tiny", preprocessing="medsam")
    spec = json.loads((folder / "preprocess.json").read_text())
    assert (spec["resize"], spec["interpolation"]) == ("square", "bicubic")
    assert spec["mean"] == [0.0] * 3 and spec["std"] == [1.0] * 3
    pred, onnx_pred = Predictor(model), OnnxPredictor(folder, threads=1)
    img = image(2)
    pred.set_image(img)
    onnx_pred.set_image(img)
    assert onnx_pred.input_size == pred.input_size == (model.img_size, model.img_size)
    for prompt in prompts(model.config.mask_size)[:4]:
        logits = pred.predict(**prompt, return_logits=True)[0]
        assert_same(pred.predict(**prompt), onnx_pred.predict(**prompt), logits)


def test_embedding_roundtrip_and_errors(exported) -> None:
    _, folder = exported("tiny")
    p = OnnxPredictor(folder, threads=1)
    with pytest.raises(RuntimeError, match="no image set"):
        p.predict(box=[1, 1, 5, 5])
    img = image()
    p.set_image(np.stack([img] * 3, -1)[..., ::-1], image_format="BGR")
    emb = p.get_image_embedding()
    first = p.predict(box=np.array([10, 10, 90, 100]))
    q = OnnxPredictor(p.model)
    q.set_image_embedding(emb, img.shape)
    again = q.predict(box=np.array([10, 10, 90, 100]))
    assert (first[0] == again[0]).all()
    with pytest.raises(ValueError, match="embedding must be"):
        q.set_image_embedding(emb[:, :1], img.shape)
    with pytest.raises(ValueError, match="outside"):
        p.predict(point_coords=[[500, 5]], point_labels=[1])
    with pytest.raises(ValueError, match="x1 > x0"):
        p.predict(box=[50, 50, 10, 10])
    with pytest.raises(ValueError, match="point_labels must be 1"):
        p.predict(point_coords=[[5, 5]], point_labels=[3])
    with pytest.raises(ValueError, match="mask_input must be"):
        p.predict(mask_input=np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="no prompt"):
        p.predict()
    with pytest.raises(ValueError, match="image_format"):
        p.set_image(img, image_format="HSV")


def test_folder_errors(exported, tmp_path) -> None:
    _, folder = exported("tiny")
    with pytest.raises(FileNotFoundError, match="not found"):
        OnnxPredictor(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="lacks"):
        OnnxPredictor(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("encoder.onnx", "decoder.onnx"):
        (bad / name).write_bytes((folder / name).read_bytes())
    for text, match in (("{", "cannot read"), ("[1]", "JSON object"),
                        ('{"input_size": 1e9}', "missing keys"),
                        (json.dumps({**json.loads((folder / "preprocess.json").read_text()),
                                     "resize": "crop"}), "resize must be"),
                        (json.dumps({**json.loads((folder / "preprocess.json").read_text()),
                                     "input_size": 64}), "preprocess.json says")):
        (bad / "preprocess.json").write_text(text)
        with pytest.raises(ValueError, match=match):
            OnnxPredictor(bad)
    (bad / "preprocess.json").write_text((folder / "preprocess.json").read_text())
    (bad / "decoder.onnx").write_bytes(b"not a graph")
    with pytest.raises(ValueError, match="cannot load"):
        OnnxPredictor(bad)


def test_predictor_refuses_single_mask_export(exported) -> None:
    _, folder = exported("tiny", single_mask=True)
    with pytest.raises(ValueError, match="single_mask"):
        OnnxPredictor(folder)
