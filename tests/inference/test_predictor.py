"""Predictor behaviour on a tiny random model: shapes, prompts, refinement, bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from ultrasam import Predictor
from ultrasam.modeling import build_model


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    torch.manual_seed(0)
    model = build_model("tiny").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return Predictor(model)


@pytest.fixture(scope="module")
def responsive(make_responsive_sam: Any) -> Predictor:
    """Unlike the all-random weights above, whose decoder saturates, its answers depend on
    where the prompt is (distinct first masks, so distinct derived boxes)."""
    return Predictor(make_responsive_sam())


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (90, 140, 3), dtype=np.uint8)


def test_shapes_match_sampredictor(predictor: Predictor, image: np.ndarray) -> None:
    predictor.set_image(image)
    assert predictor.get_image_embedding().shape == (1, 32, 8, 8)
    masks, iou, low = predictor.predict(point_coords=np.array([[70, 45]]),
                                        point_labels=np.array([1]))
    assert masks.shape == (3, 90, 140) and masks.dtype == bool
    assert iou.shape == (3,) and low.shape == (3, 32, 32)
    masks, iou, low = predictor.predict(box=np.array([20, 10, 100, 80]), multimask_output=False)
    assert masks.shape == (1, 90, 140) and iou.shape == (1,) and low.shape == (1, 32, 32)
    logits, _, _ = predictor.predict(box=np.array([20, 10, 100, 80]), return_logits=True)
    assert logits.dtype == np.float32
    assert np.array_equal(logits > 0, predictor.predict(box=np.array([20, 10, 100, 80]))[0])


def test_many_points_negatives_box_and_mask(predictor: Predictor, image: np.ndarray) -> None:
    predictor.set_image(image)
    pts = np.array([[70, 45], [30, 30], [100, 60], [10, 80], [120, 20]])
    labels = np.array([1, 0, 1, 0, 0])
    m1, s1, low = predictor.predict(pts, labels, box=np.array([5, 5, 130, 85]),
                                    multimask_output=False)
    m2, s2, _ = predictor.predict(pts, labels, box=np.array([5, 5, 130, 85]), mask_input=low,
                                  multimask_output=False)
    assert m2.shape == m1.shape
    assert not np.allclose(s1, s2)  # the mask prompt is used


def test_grayscale_and_bgr(predictor: Predictor, image: np.ndarray) -> None:
    grey = image[..., 0]
    predictor.set_image(grey)
    e1 = predictor.get_image_embedding().clone()
    predictor.set_image(np.repeat(grey[..., None], 3, axis=2))
    assert torch.equal(e1, predictor.get_image_embedding())
    predictor.set_image(image[..., ::-1].copy(), image_format="BGR")
    e2 = predictor.get_image_embedding().clone()
    predictor.set_image(image)
    assert torch.equal(e2, predictor.get_image_embedding())


def test_embedding_reuse(predictor: Predictor, image: np.ndarray) -> None:
    predictor.set_image(image)
    emb = predictor.get_image_embedding().clone()
    ref = predictor.predict(point_coords=np.array([[70, 45]]), point_labels=np.array([1]))
    predictor.reset_image()
    predictor.set_image_embedding(emb, image.shape[:2])
    again = predictor.predict(point_coords=np.array([[70, 45]]), point_labels=np.array([1]))
    for a, b in zip(ref, again):
        assert np.array_equal(a, b)


def _best_of(out: tuple[np.ndarray, np.ndarray, np.ndarray]
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The output with the highest predicted IoU, kept as a 1-output tuple."""
    k = int(np.argmax(out[1]))
    return out[0][k:k + 1], out[1][k:k + 1], out[2][k:k + 1]


def _assert_same_output(got: tuple, want: tuple) -> None:
    """(masks or logits, iou, low-res logits) equal up to float rounding."""
    for a, b in zip(got, want):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape
        if a.dtype == bool:
            assert np.array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_refine_equals_a_manual_two_pass_call(responsive: Predictor,
                                              image: np.ndarray) -> None:
    """refine=True is UltraSam's schedule spelled out by hand with two ordinary calls: pass 1
    single-mask; pass 2 multimask with the pass-1 logits as mask prompt, keeping the output
    of highest predicted IoU; a point prompt is replaced in pass 2 by the box of its pass-1
    mask (in the 128-px model frame, padding excluded, x2 = last column + 1, minus 0.5)."""
    responsive.set_image(image)
    box = np.array([20, 10, 100, 80])
    pass1 = responsive.predict(box=box, multimask_output=False, return_logits=True)
    pass2 = responsive.predict(box=box, mask_input=pass1[2], return_logits=True)
    refined = responsive.predict(box=box, refine=True, return_logits=True)
    _assert_same_output(refined, _best_of(pass2))
    assert not np.allclose(refined[2], pass1[2], atol=1e-3)      # pass 2 changed the answer

    point, label = np.array([[70, 45]]), np.array([1])
    low1 = responsive.predict(point, label, multimask_output=False)[2]
    up = torch.nn.functional.interpolate(torch.from_numpy(low1)[None], (128, 128),
                                         mode="bilinear", align_corners=False)[0, 0] > 0
    h, w = responsive.input_size                      # (82, 128): 90 x 140 scaled
    ys, xs = np.nonzero(up[:h, :w].numpy())
    assert len(xs), "the case under test: a non-empty first mask"
    derived = torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]]) - 0.5
    masks2, iou2, low2 = responsive.predict_torch(None, None, derived.float(),
                                                 torch.from_numpy(low1)[None])
    want = _best_of((masks2[0].numpy(), iou2[0].numpy(), low2[0].numpy()))
    _assert_same_output(responsive.predict(point, label, refine=True), want)


def test_predict_torch_batches(predictor: Predictor, image: np.ndarray) -> None:
    predictor.set_image(image)
    boxes = torch.tensor([[20.0, 10, 100, 80], [0, 0, 50, 50]])
    boxes = predictor.transform.apply_boxes_torch(boxes, image.shape[:2])
    masks, iou, low = predictor.predict_torch(None, None, boxes, multimask_output=False)
    assert masks.shape == (2, 1, 90, 140) and iou.shape == (2, 1)
    single = predictor.predict(box=np.array([0, 0, 50, 50]), multimask_output=False)
    assert np.allclose(low[1].numpy(), single[2], atol=1e-5)


def test_batched_refine_equals_refine_one_by_one(responsive: Predictor,
                                                 image: np.ndarray) -> None:
    responsive.set_image(image)
    size = responsive.original_size
    boxes = np.array([[20.0, 10, 100, 80], [0, 0, 50, 50], [60, 30, 139, 89]])
    points = np.array([[[70.0, 45]], [[30, 20]], [[120, 70]]])
    t = responsive.transform
    batches = {
        "boxes": ((None, None, torch.as_tensor(t.apply_boxes(boxes, size)).float()),
                  [{"box": b} for b in boxes]),
        "points": ((torch.as_tensor(t.apply_coords(points, size)).float(),
                    torch.ones(3, 1, dtype=torch.int), None),
                   [{"point_coords": p, "point_labels": np.array([1])} for p in points]),
    }
    rows = {}
    for name, (args, one_by_one) in batches.items():
        batched = responsive.predict_torch(*args, refine=True, return_logits=True)
        assert batched[0].shape == (3, 1, 90, 140), name
        rows[name] = [responsive.predict(**kw, refine=True, return_logits=True)
                      for kw in one_by_one]
        for i, row in enumerate(rows[name]):
            _assert_same_output(tuple(x[i].numpy() for x in batched), row)
    box_rows = rows["boxes"]
    assert not np.allclose(box_rows[0][2], box_rows[1][2], atol=1e-3)   # the rows differ


def test_batched_refine_of_points_with_distinct_derived_boxes(image: np.ndarray) -> None:
    """Points whose first masks differ (a random model's cover the whole frame, so all its
    derived boxes are equal): the trained bundled model on a phantom, batched == one by one."""
    from ultrasam.data.synthetic import make_phantom
    from ultrasam.weights.checkpoints import load_model

    predictor = Predictor(load_model())
    phantom = make_phantom(seed=1, size=160, kind="cyst")
    predictor.set_image(phantom.image)
    # One click at the centre of each of two separate cysts (checked against the phantom's
    # mask), so a segmenting model's first masks, hence the derived boxes, differ.
    points = np.array([[[73.0, 47]], [[64, 84]]])
    cysts = phantom.masks["cyst"]
    assert all(cysts[int(y), int(x)] for x, y in points[:, 0])
    coords = torch.as_tensor(predictor.transform.apply_coords(points, (160, 160))).float()
    batched = predictor.predict_torch(coords, torch.ones(2, 1, dtype=torch.int), refine=True,
                                      return_logits=True)
    rows = [predictor.predict(p, np.array([1]), refine=True, return_logits=True)
            for p in points]
    for i, row in enumerate(rows):
        _assert_same_output(tuple(x[i].numpy() for x in batched), row)
    first, second = (row[0][0] > 0 for row in rows)
    assert first.sum() and second.sum() and (first & second).sum() < 0.5 * first.sum()


def test_original_size_maps_prompts_and_masks(responsive: Predictor,
                                              image: np.ndarray) -> None:
    """Prompts in original pixels are scaled per axis into the model frame, and masks come
    back through the padded square, cropped to the input size, resized to original_size."""
    import torch.nn.functional as F

    responsive.set_image(image)
    assert responsive.original_size == (90, 140)
    assert responsive.input_size == (82, 128)           # longest side 140 -> 128; 90 -> 82.3
    frame = torch.tensor([[[70 * 128 / 140, 45 * 82 / 90]]])
    by_frame = responsive.predict_torch(frame, torch.ones(1, 1, dtype=torch.int),
                                       return_logits=True)
    by_pixel = responsive.predict(np.array([[70, 45]]), np.array([1]), return_logits=True)
    _assert_same_output(by_pixel, tuple(x[0].numpy() for x in by_frame))
    low = torch.from_numpy(by_pixel[2])[None]
    square = F.interpolate(low, (128, 128), mode="bilinear", align_corners=False)
    want = F.interpolate(square[..., :82, :128], (90, 140), mode="bilinear",
                         align_corners=False)[0].numpy()
    np.testing.assert_allclose(by_pixel[0], want, rtol=1e-5, atol=1e-5)
    # The same embedding declared as an image twice the size: the same prompt at twice the
    # coordinates gives the same low-res answer, and masks at the declared size.
    responsive.set_image_embedding(responsive.get_image_embedding(), (180, 280))
    assert responsive.input_size == (82, 128)
    double = responsive.predict(np.array([[140, 90]]), np.array([1]), return_logits=True)
    assert double[0].shape == (3, 180, 280)
    _assert_same_output(double[1:], by_pixel[1:])


def test_path_input(predictor: Predictor, image: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "scan.png"
    Image.fromarray(image).save(path)
    predictor.set_image(path)
    e1 = predictor.get_image_embedding().clone()
    predictor.set_image(image)
    assert torch.equal(e1, predictor.get_image_embedding())


@pytest.mark.parametrize("kwargs, match", [
    ({"point_coords": np.array([[200, 10]]), "point_labels": np.array([1])}, "outside"),
    ({"point_coords": np.array([[-1, 10]]), "point_labels": np.array([1])}, "outside"),
    ({"point_coords": np.array([[np.nan, 10]]), "point_labels": np.array([1])}, "NaN"),
    ({"point_coords": np.array([[10, 10]]), "point_labels": np.array([2])}, "1 .foreground. or 0"),
    ({"point_coords": np.array([[10, 10]]), "point_labels": np.array([1, 0])}, "point_labels"),
    ({"point_coords": np.array([10, 10]), "point_labels": np.array([1])}, "N x 2"),
    ({"point_coords": np.array([[10, 10]])}, "together"),
    ({"box": np.array([50, 10, 20, 80])}, "x1 > x0"),
    ({"box": np.array([20, 10, 20, 80])}, "x1 > x0"),
    ({"box": np.array([20, 10, 100, 95])}, "outside"),
    ({"box": np.array([20, 10, 100])}, "4 numbers"),
    ({"mask_input": np.zeros((1, 16, 16))}, "mask_input"),
    ({}, "no prompt"),
])
def test_bad_prompts(predictor: Predictor, image: np.ndarray, kwargs: dict, match: str) -> None:
    predictor.set_image(image)
    with pytest.raises(ValueError, match=match):
        predictor.predict(**kwargs)


def test_prompt_before_image() -> None:
    p = Predictor(build_model("tiny"))
    with pytest.raises(RuntimeError, match="set_image"):
        p.predict(box=np.array([0, 0, 5, 5]))


@pytest.mark.parametrize("bad, exc", [
    (np.zeros((0, 5), np.uint8), ValueError),
    (np.zeros((1, 1), np.uint8), ValueError),
    (np.zeros((4, 4, 4, 4), np.uint8), ValueError),
    (np.zeros((8, 8, 2), np.uint8), ValueError),
    ("not/a/file.png", FileNotFoundError),
    ([[1, 2], [3, 4]], (TypeError, ValueError)),
])
def test_bad_images(predictor: Predictor, bad, exc) -> None:
    with pytest.raises(exc):
        predictor.set_image(bad)


def test_corrupt_file(predictor: Predictor, image: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "scan.png"
    Image.fromarray(image).save(path)
    broken = tmp_path / "broken.png"
    broken.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="broken.png"):
        predictor.set_image(broken)


def test_unusual_image_forms(predictor: Predictor) -> None:
    rng = np.random.default_rng(1)
    for arr in (rng.integers(0, 65535, (40, 50), dtype=np.uint16),
                rng.random((40, 50)).astype(np.float32),
                rng.integers(0, 255, (40, 50, 4), dtype=np.uint8)):
        predictor.set_image(arr)
        assert predictor.original_size == (40, 50)
    with pytest.raises(ValueError):
        predictor.set_image(np.full((40, 50), np.nan, np.float32))


def test_fast_decoder_matches_plain_decoder(predictor: Predictor, image: np.ndarray) -> None:
    plain = Predictor(predictor.model, fast=False)
    predictor.set_image(image)
    plain.set_image(image)
    prompts = [
        {"point_coords": np.array([[70, 45]]), "point_labels": np.array([1])},
        {"point_coords": np.array([[70, 45], [10, 10]]), "point_labels": np.array([1, 0]),
         "box": np.array([20, 10, 100, 80])},
        {"box": np.array([20, 10, 100, 80]), "multimask_output": False},
    ]
    for kwargs in prompts:
        a = predictor.predict(**kwargs, return_logits=True)
        b = plain.predict(**kwargs, return_logits=True)
        for x, y in zip(a, b):
            assert np.allclose(x, y, atol=1e-4), kwargs
        low = a[2][:1]
        a2 = predictor.predict(**kwargs, mask_input=low, return_logits=True)
        b2 = plain.predict(**kwargs, mask_input=low, return_logits=True)
        assert np.allclose(a2[1], b2[1], atol=1e-4) and np.allclose(a2[2], b2[2], atol=1e-4)
    ra = predictor.predict(point_coords=np.array([[70, 45]]), point_labels=np.array([1]),
                           refine=True, return_logits=True)
    rb = plain.predict(point_coords=np.array([[70, 45]]), point_labels=np.array([1]),
                       refine=True, return_logits=True)
    assert np.allclose(ra[2], rb[2], atol=1e-4)


# --------------------------------------------------------------------- shared by threads
def _random_predictor(variant: str, seed: int = 0, **config: object) -> Predictor:
    from ultrasam.config import get_config

    torch.manual_seed(seed)
    model = build_model(get_config(variant, **config) if config else variant).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return Predictor(model)


@pytest.mark.parametrize("variant", ["tiny", "fusion"])
def test_threads_sharing_a_predictor_never_mix_images(variant: str) -> None:
    """One thread alternates two images of different sizes while others predict: every answer
    must be exactly one image's answer (the old predictor crashed or mixed sizes/features)."""
    import sys
    import threading

    predictor = _random_predictor(variant)
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 255, (90, 140, 3), dtype=np.uint8),
              rng.integers(0, 255, (120, 60, 3), dtype=np.uint8)]
    box = np.array([5, 5, 50, 80])
    refs = []
    for img in images:
        predictor.set_image(img)
        refs.append(predictor.predict(box=box))
    stop = threading.Event()
    errors: list[BaseException] = []
    answers: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def swap() -> None:
        i = 0
        while not stop.is_set():
            predictor.set_image(images[i % 2])
            i += 1

    def ask() -> None:
        try:
            for _ in range(25 if variant == "tiny" else 6):
                answers.append(predictor.predict(box=box))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # interleave threads as often as possible
    try:
        swapper = threading.Thread(target=swap)
        askers = [threading.Thread(target=ask) for _ in range(3)]
        swapper.start()
        for t in askers:
            t.start()
        for t in askers:
            t.join()
        stop.set()
        swapper.join()
    finally:
        sys.setswitchinterval(old)
    assert not errors, repr(errors[0])
    assert answers
    for masks, iou, low in answers:
        matches = [k for k, (m, s, lo) in enumerate(refs)
                   if m.shape == masks.shape and np.allclose(s, iou, atol=1e-5)
                   and np.allclose(lo, low, atol=1e-5)]
        assert len(matches) == 1, "an answer mixes the two images"


def test_state_properties_are_read_only_snapshots(image: np.ndarray) -> None:
    predictor = _random_predictor("tiny")
    predictor.set_image(image)
    state = predictor.image_state
    assert predictor.features is state.features and predictor.original_size == (90, 140)
    assert predictor.image_rgb is not None and not predictor.image_rgb.flags.writeable
    with pytest.raises(AttributeError):
        predictor.features = None  # type: ignore[misc]
    predictor.set_image(image[:50])
    assert state.original_size == (90, 140) and predictor.original_size == (50, 140)
    predictor.reset_image()
    assert not predictor.is_image_set and predictor.features is None


# ------------------------------------------------------------------------ MedSAM and dtype
def test_medsam_postprocessing_follows_medsam(image: np.ndarray) -> None:
    """MedSAM_Inference.py: sigmoid, one bilinear resize to the original size, > 0.5."""
    import torch.nn.functional as F

    predictor = _random_predictor("tiny", preprocessing="medsam")
    assert predictor.postprocessing == "medsam"
    predictor.set_image(image)
    for kwargs in ({"box": np.array([20, 10, 100, 80])},
                   {"point_coords": np.array([[70, 45]]), "point_labels": np.array([1])}):
        masks, _, low = predictor.predict(**kwargs)
        prob = F.interpolate(torch.sigmoid(torch.from_numpy(low))[None], size=(90, 140),
                             mode="bilinear", align_corners=False)[0]
        expected = (prob > 0.5).numpy()
        assert masks.dtype == bool and np.array_equal(masks, expected)
        assert 0 < expected.sum() < expected.size  # the golden case decides pixels both ways


def test_medsam_refuses_letterboxed_torch_image() -> None:
    predictor = _random_predictor("tiny", preprocessing="medsam")
    with pytest.raises(ValueError, match="MedSAM"):
        predictor.set_torch_image(torch.zeros(1, 3, 128, 64), (256, 128))
    predictor.set_torch_image(torch.zeros(1, 3, 128, 128), (256, 128))
    assert predictor.input_size == (128, 128)


def test_bf16_model_takes_float32_embedding(image: np.ndarray) -> None:
    predictor = _random_predictor("tiny")
    predictor.set_image(image)
    emb = predictor.get_image_embedding().float().clone()
    predictor.model.to(torch.bfloat16)
    try:
        predictor.set_image_embedding(emb, image.shape[:2])
        assert predictor.features is not None and predictor.features.dtype == torch.bfloat16
        masks, iou, _ = predictor.predict(box=np.array([20, 10, 100, 80]))
        assert masks.shape == (3, 90, 140) and np.isfinite(iou).all()
    finally:
        predictor.model.to(torch.float32)
