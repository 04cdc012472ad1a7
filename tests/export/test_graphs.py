"""The exported graphs: Meta's decoder I/O contract, single files, and parity with PyTorch."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from ultrasam.export.graphs import DecoderGraph, EncoderGraph
from ultrasam.export.preprocess import PREPROCESS_KEYS

VARIANTS = ("tiny", "small", "fusion")


def session(path: object) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-12))


def decoder_feeds(model: object, s: int, m: int, emb: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Prompt layouts a client may send: point + padding, points + box, box only, mask only
    (no tokens), with and without a mask input."""
    rng = np.random.default_rng(3)
    mask = (rng.normal(size=(1, 1, m, m)) * 4).astype(np.float32)
    layouts = [
        ([[0.4 * s, 0.5 * s], [0, 0]], [1, -1], 0.0, (300, 200)),
        ([[0.4 * s, 0.5 * s], [0.2 * s, 0.3 * s], [0.1 * s, 0.1 * s], [0.9 * s, 0.8 * s]],
         [1, 0, 2, 3], 1.0, (200, 300)),
        ([[0.1 * s, 0.2 * s], [0.7 * s, 0.6 * s]], [2, 3], 0.0, (257, 255)),
        (np.zeros((0, 2)), np.zeros(0), 1.0, (100, 100)),
    ]
    return [{"image_embeddings": emb,
             "point_coords": np.asarray(c, np.float32).reshape(1, -1, 2),
             "point_labels": np.asarray(lab, np.float32).reshape(1, -1),
             "mask_input": mask, "has_mask_input": np.array([has], np.float32),
             "orig_im_size": np.array(size, np.float32)}
            for c, lab, has, size in layouts]


@pytest.mark.parametrize("variant", VARIANTS)
def test_graphs_match_pytorch(exported, variant: str) -> None:
    model, folder = exported(variant)
    s, m = model.img_size, model.config.mask_size
    image = torch.randn(1, 3, s, s, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ref_emb = EncoderGraph(model)(image).numpy()
    emb = session(folder / "encoder.onnx").run(None, {"image": image.numpy()})[0]
    assert emb.shape == (1, *model.embedding_shape)
    assert rel_err(emb, ref_emb) < 1e-4
    dec = session(folder / "decoder.onnx")
    graph = DecoderGraph(model)
    for feed in decoder_feeds(model, s, m, ref_emb):
        with torch.no_grad():
            ref = graph(*(torch.from_numpy(feed[k]) for k in (
                "image_embeddings", "point_coords", "point_labels", "mask_input",
                "has_mask_input", "orig_im_size")))
        out = dec.run(None, feed)
        h, w = (int(v) for v in feed["orig_im_size"])
        assert out[0].shape == (1, 4, h, w)
        assert out[1].shape == (1, 4) and out[2].shape == (1, 4, m, m)
        for a, b in zip(out, ref):
            assert rel_err(a, b.numpy()) < 1e-4


@pytest.mark.parametrize("variant", ("tiny", "fusion"))
def test_decoder_graph_equals_model_decode(exported, variant: str) -> None:
    """The wrapper itself is the model: same logits as ``model.decode`` with the same prompt
    (points then box corners; has_mask_input 0 = no mask input)."""
    model, _ = exported(variant)
    s, m = model.img_size, model.config.mask_size
    emb = model.encode(torch.randn(1, 3, s, s, generator=torch.Generator().manual_seed(2)))
    pts = torch.tensor([[[0.3 * s, 0.4 * s], [0.6 * s, 0.5 * s]]])
    lab = torch.tensor([[1, 0]])
    box = torch.tensor([[0.1 * s, 0.2 * s, 0.8 * s, 0.9 * s]])
    mask = torch.randn(1, 1, m, m, generator=torch.Generator().manual_seed(4)) * 3
    graph = DecoderGraph(model)
    with torch.no_grad():
        for mask_in, has in ((None, 0.0), (mask, 1.0)):
            want, want_iou = model.decode(emb, pts, lab, box, mask_in, multimask_output=True)
            coords = torch.cat([pts, box.view(1, 2, 2)], dim=1)
            labels = torch.tensor([[1.0, 0.0, 2.0, 3.0]])
            _, iou, low = graph(emb, coords, labels, torch.zeros(1, 1, m, m) if mask_in is None
                                else mask_in, torch.tensor([has]), torch.tensor([s, s + 0.0]))
            torch.testing.assert_close(low[:, 1:], want, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(iou[:, 1:], want_iou, rtol=1e-4, atol=1e-5)


def test_decoder_follows_metas_contract(exported) -> None:
    model, folder = exported("small")
    proto = onnx.load(str(folder / "decoder.onnx"))
    f32 = onnx.TensorProto.FLOAT

    def dims(v: onnx.ValueInfoProto) -> list[object]:
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    inputs = {v.name: v for v in proto.graph.input}
    assert list(inputs) == ["image_embeddings", "point_coords", "point_labels", "mask_input",
                            "has_mask_input", "orig_im_size"]
    assert all(v.type.tensor_type.elem_type == f32 for v in inputs.values())
    c, h, w = model.embedding_shape
    assert dims(inputs["image_embeddings"]) == [1, c, h, w]
    assert dims(inputs["point_coords"])[0] == 1 and dims(inputs["point_coords"])[2] == 2
    assert isinstance(dims(inputs["point_coords"])[1], str)  # dynamic N
    assert dims(inputs["point_labels"])[1] == dims(inputs["point_coords"])[1]
    assert dims(inputs["mask_input"]) == [1, 1, 4 * h, 4 * w]
    assert dims(inputs["has_mask_input"]) == [1] and dims(inputs["orig_im_size"]) == [2]
    assert [v.name for v in proto.graph.output] == ["masks", "iou_predictions", "low_res_masks"]
    enc = onnx.load(str(folder / "encoder.onnx"))
    assert [v.name for v in enc.graph.input] == ["image"]
    assert dims(enc.graph.input[0]) == [1, 3, model.img_size, model.img_size]
    assert [v.name for v in enc.graph.output] == ["image_embeddings"]
    # Single files: every weight inside the graph, nothing else in the folder.
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "decoder.onnx",
                                                        "encoder.onnx", "preprocess.json"]
    for g in (proto, enc):
        assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in g.graph.initializer)
    spec = json.loads((folder / "preprocess.json").read_text())
    assert tuple(spec) == PREPROCESS_KEYS
    assert spec == {"input_size": model.img_size, "resize": "longest_side",
                    "interpolation": "bilinear", "mean": list(model.config.pixel_mean),
                    "std": list(model.config.pixel_std), "pad": "bottom_right",
                    "channels": "RGB", "mask_threshold": 0.0}


def test_single_mask_and_binary_options(exported) -> None:
    """Meta's single-mask rule (<= 2 entries: best multimask output; more: token 0) and 0/1
    masks, against the full decoder of the same model."""
    model, full = exported("tiny")
    _, single = exported("tiny", single_mask=True, return_logits=False)
    s, m = model.img_size, model.config.mask_size
    emb = np.random.default_rng(0).normal(size=(1, *model.embedding_shape)).astype(np.float32)
    a, b = session(full / "decoder.onnx"), session(single / "decoder.onnx")
    for feed in decoder_feeds(model, s, m, emb)[:3]:
        masks, iou, low = a.run(None, feed)
        one, one_iou, one_low = b.run(None, feed)
        n = feed["point_labels"].shape[1]
        k = 0 if n > 2 else 1 + int(np.argmax(iou[0, 1:]))
        assert one.shape[1] == 1 and one_low.shape[1] == 1
        np.testing.assert_allclose(one_iou[0, 0], iou[0, k], rtol=1e-5)
        np.testing.assert_allclose(one_low[0, 0], low[0, k], rtol=1e-4, atol=1e-6)
        assert set(np.unique(one).tolist()) <= {0.0, 1.0}
        agree = (one[0, 0] > 0.5) == (masks[0, k] > 0)
        assert (agree | (np.abs(masks[0, k]) < 1e-3)).all()
