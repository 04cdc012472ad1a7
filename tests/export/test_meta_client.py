"""A client written only from Meta's decoder contract and preprocess.json (numpy, Pillow and
onnxruntime; no ultrasam code) reproduces the Predictor's masks."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
from PIL import Image

from ultrasam.data.synthetic import make_phantom
from ultrasam.inference.predictor import Predictor


def client_masks(folder, rgb: np.ndarray, point: tuple[float, float]) -> tuple[np.ndarray, ...]:
    """Segment ``rgb`` from one positive click, as SAM's ONNX example notebook does."""
    spec = json.loads((folder / "preprocess.json").read_text())
    s = spec["input_size"]
    h, w = rgb.shape[:2]
    scale = s / max(h, w)
    new_h, new_w = int(h * scale + 0.5), int(w * scale + 0.5)
    resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[spec["interpolation"]]
    resized = np.asarray(Image.fromarray(rgb).resize((new_w, new_h), resample), np.float32)
    x = (resized - np.array(spec["mean"], np.float32)) / np.array(spec["std"], np.float32)
    image = np.zeros((1, 3, s, s), np.float32)
    image[0, :, :new_h, :new_w] = x.transpose(2, 0, 1)
    enc = ort.InferenceSession(str(folder / "encoder.onnx"), providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(folder / "decoder.onnx"), providers=["CPUExecutionProvider"])
    emb = enc.run(None, {"image": image})[0]
    coords = np.array([[point, (0.0, 0.0)]], np.float32)  # the click and a padding point
    coords[..., 0] *= new_w / w
    coords[..., 1] *= new_h / h
    m = dec.get_inputs()[3].shape[-1]
    masks, iou, _ = dec.run(None, {
        "image_embeddings": emb, "point_coords": coords,
        "point_labels": np.array([[1, -1]], np.float32),
        "mask_input": np.zeros((1, 1, m, m), np.float32),
        "has_mask_input": np.zeros(1, np.float32),
        "orig_im_size": np.array([h, w], np.float32)})
    return masks > spec["mask_threshold"], iou, masks


def test_metas_client_reproduces_predictor(exported) -> None:
    for variant in ("small", "fusion"):
        model, folder = exported(variant)
        _, single = exported(variant, single_mask=True)
        rgb = make_phantom(seed=4, size=180).image[:150]
        rgb = np.stack([rgb] * 3, -1)
        pred = Predictor(model)
        pred.set_image(rgb)
        want, scores, _ = pred.predict(point_coords=np.array([[90, 70]]),
                                       point_labels=np.array([1]))
        logits = pred.predict(point_coords=np.array([[90, 70]]), point_labels=np.array([1]),
                              return_logits=True)[0]
        masks, iou, _ = client_masks(folder, rgb, (90, 70))
        near = np.abs(logits) < 1e-3
        assert masks.shape == (1, 4, 150, 180)
        assert ((masks[0, 1:] == want) | near).all()
        np.testing.assert_allclose(iou[0, 1:], scores, rtol=1e-4, atol=1e-6)
        # Single-mask export, one click + padding: Meta's rule picks the best multimask output.
        one, _, _ = client_masks(single, rgb, (90, 70))
        best = int(np.argmax(scores))
        assert ((one[0, 0] == want[best]) | near[best]).all()
