"""Parity with Meta's reference SAM (segment-anything 1.0) and with UltraSam's checkpoint format.

The golden outputs in ``tests/fixtures`` were produced by Meta's own modules and ``SamPredictor``
on a tiny randomly weighted model (``tests/fixtures/make_parity_fixture.py`` says how to
regenerate them); the reference package is not needed here. Everything runs in fp32 on the CPU
and must agree within ``ATOL``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import ultrasam
from ultrasam.config import TINY
from ultrasam.modeling import Sam, build_model

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ATOL = 1e-4
MULTIMASK = {"multi": True, "single": False}
# Hyper-parameters, prompt cases and Meta's full-size state-dict layouts (see the script).
DESCRIPTION: dict[str, Any] = json.loads((FIXTURES / "parity_tiny.json").read_text("utf-8"))


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURES / "parity_tiny.safetensors"))


@pytest.fixture(scope="module")
def sam_weights(golden: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("model."):]: v for k, v in golden.items() if k.startswith("model.")}


@pytest.fixture(scope="module")
def model(sam_weights: dict[str, torch.Tensor]) -> Sam:
    m = build_model(TINY)
    m.load_state_dict(sam_weights, strict=True)
    return m.eval()


def assert_close(actual: torch.Tensor | np.ndarray, expected: torch.Tensor, what: str) -> None:
    actual = torch.as_tensor(actual)
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != " \
                                           f"{tuple(expected.shape)}"
    diff = (actual.float() - expected.float()).abs().max().item()
    assert diff <= ATOL, f"{what}: max abs difference {diff:.3g} > {ATOL}"


def decode_case(model: Sam, golden: dict[str, torch.Tensor], prefix: str, case: str,
                multimask: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Our Sam.decode on the golden embeddings with the case's Meta-layout prompts."""
    def get(name: str) -> torch.Tensor | None:
        return golden.get(f"input.{prefix}.{case}.{name}")

    with torch.no_grad():
        return model.decode(golden["out.embeddings"], point_coords=get("coords"),
                            point_labels=get("labels"), boxes=get("boxes"),
                            mask_inputs=get("mask"), multimask_output=multimask)


SAM_CASES = sorted(DESCRIPTION["decode_cases"]["sam"])
ULTRASAM_CASES = sorted(DESCRIPTION["decode_cases"]["ultrasam"])
E2E = [(img, c["name"]) for img, spec in sorted(DESCRIPTION["e2e"].items()) for c in spec["cases"]]


# ------------------------------------------------------------------------- the fixture
def test_tiny_config_matches_the_fixture() -> None:
    for key, value in DESCRIPTION["hyper_parameters"].items():
        ours = getattr(TINY, key)
        ours = list(ours) if isinstance(ours, tuple) else ours
        assert ours == value, f"TINY.{key} = {ours!r}, fixture has {value!r}"
    assert list(TINY.pixel_mean) == DESCRIPTION["pixel_mean"]
    assert list(TINY.pixel_std) == DESCRIPTION["pixel_std"]
    assert not TINY.doubled_mlp_residual


def test_fixture_discriminates(golden: dict[str, torch.Tensor]) -> None:
    """The golden outputs would catch a wrong residual or a mask input ignored."""
    for case in ULTRASAM_CASES:
        plain, doubled = golden[f"out.sam.{case}.multi.logits"], \
            golden[f"out.ultrasam.{case}.multi.logits"]
        assert (plain - doubled).abs().max() > 0.1, case
    with_mask, without = golden["out.sam.mask_point.multi.logits"], \
        golden["out.sam.point.multi.logits"]
    assert (with_mask - without).abs().max() > 0.1


# ------------------------------------------------------------------------ model level
def test_image_embeddings(model: Sam, golden: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        emb = model.encode(golden["input.image"])
    assert_close(emb, golden["out.embeddings"], "image embeddings")


@pytest.mark.parametrize("multimask", sorted(MULTIMASK))
@pytest.mark.parametrize("case", SAM_CASES)
def test_decode_matches_meta(model: Sam, golden: dict[str, torch.Tensor], case: str,
                             multimask: str) -> None:
    logits, iou = decode_case(model, golden, "sam", case, MULTIMASK[multimask])
    assert_close(logits, golden[f"out.sam.{case}.{multimask}.logits"], f"{case} logits")
    assert_close(iou, golden[f"out.sam.{case}.{multimask}.iou"], f"{case} iou")


# -------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def predictors(model: Sam, golden: dict[str, torch.Tensor]) -> dict[str, Any]:
    out = {}
    for img in DESCRIPTION["e2e"]:
        predictor = ultrasam.Predictor(model)
        predictor.set_image(golden[f"e2e.{img}.image"].numpy())
        out[img] = predictor
    return out


def assert_masks_equal(masks: np.ndarray | torch.Tensor, golden: dict[str, torch.Tensor],
                       key: str) -> None:
    """Identical wherever Meta's logit is decided (|logit| >= 1e-3, see the fixture script)."""
    expected = golden[f"{key}.masks"].numpy().astype(bool)
    masks = np.asarray(masks)
    assert masks.dtype == np.bool_ and masks.shape == expected.shape, \
        f"{key}: masks {masks.dtype} {masks.shape}, expected bool {expected.shape}"
    differ = np.flatnonzero(masks.reshape(-1) != expected.reshape(-1))
    undecided = set(golden[f"{key}.undecided"].tolist())
    decided_differ = [i for i in differ.tolist() if i not in undecided]
    assert not decided_differ, f"{key}: {len(decided_differ)} mask pixels differ"


def test_e2e_input_size(predictors: dict[str, Any]) -> None:
    for img, spec in DESCRIPTION["e2e"].items():
        assert list(predictors[img].input_size) == spec["input_size_hw"], img
        assert list(predictors[img].original_size) == spec["size_hw"], img


@pytest.mark.parametrize("img", sorted(DESCRIPTION["e2e"]))
def test_e2e_features(predictors: dict[str, Any], golden: dict[str, torch.Tensor],
                      img: str) -> None:
    assert_close(predictors[img].get_image_embedding(), golden[f"e2e.{img}.features"],
                 f"{img} features")


@pytest.mark.parametrize(("img", "name"), E2E)
def test_e2e_predict(predictors: dict[str, Any], golden: dict[str, torch.Tensor],
                     img: str, name: str) -> None:
    case = next(c for c in DESCRIPTION["e2e"][img]["cases"] if c["name"] == name)
    key = f"e2e.{img}.{name}"
    kwargs = {k: np.array(case[k]) for k in ("point_coords", "point_labels", "box") if k in case}
    if "mask_from" in case:
        kwargs["mask_input"] = golden[f"{key}.mask_input"].numpy()
    masks, iou, low = predictors[img].predict(**kwargs,
                                              multimask_output=case["multimask_output"])
    assert isinstance(iou, np.ndarray) and isinstance(low, np.ndarray)
    assert_close(low, golden[f"{key}.low_res"], f"{key} low-res logits")
    assert_close(iou, golden[f"{key}.iou"], f"{key} scores")
    assert_masks_equal(masks, golden, key)


def test_e2e_predict_torch_batch(predictors: dict[str, Any],
                                 golden: dict[str, torch.Tensor]) -> None:
    key = "e2e.landscape.torch_boxes"
    masks, iou, low = predictors["landscape"].predict_torch(
        None, None, boxes=golden[f"{key}.boxes"], multimask_output=True)
    assert_close(low, golden[f"{key}.low_res"], f"{key} low-res logits")
    assert_close(iou, golden[f"{key}.iou"], f"{key} scores")
    assert_masks_equal(masks.numpy(), golden, key)


# ------------------------------------------------------------------ checkpoint formats
def test_ultrasam_checkpoint_loads_with_doubled_residual(
        golden: dict[str, torch.Tensor], sam_weights: dict[str, torch.Tensor]) -> None:
    model = ultrasam.load_model(FIXTURES / "ultrasam_tiny.pth")
    assert model.config.doubled_mlp_residual
    assert getattr(model, "checkpoint_format", None) == "ultrasam"
    # The conversion back to SAM naming is exact, tensor for tensor.
    state = model.state_dict()
    assert sorted(state) == sorted(sam_weights)
    for k, v in sam_weights.items():
        assert torch.equal(state[k], v), k
    with torch.no_grad():
        assert_close(model.encode(golden["input.image"]), golden["out.embeddings"],
                     "ultrasam embeddings")
    for case in ULTRASAM_CASES:
        for tag, mm in MULTIMASK.items():
            logits, iou = decode_case(model, golden, "ultrasam", case, mm)
            assert_close(logits, golden[f"out.ultrasam.{case}.{tag}.logits"], f"{case} logits")
            assert_close(iou, golden[f"out.ultrasam.{case}.{tag}.iou"], f"{case} iou")


def test_sam_checkpoint_loads_plain(golden: dict[str, torch.Tensor]) -> None:
    model = ultrasam.load_model(FIXTURES / "sam_tiny.pth")
    assert not model.config.doubled_mlp_residual
    assert getattr(model, "checkpoint_format", None) == "sam"
    for case in ULTRASAM_CASES:
        for tag, mm in MULTIMASK.items():
            logits, iou = decode_case(model, golden, "sam", case, mm)
            assert_close(logits, golden[f"out.sam.{case}.{tag}.logits"], f"{case} logits")
            assert_close(iou, golden[f"out.sam.{case}.{tag}.iou"], f"{case} iou")


def test_converter_matches_documented_mapping(sam_weights: dict[str, torch.Tensor]) -> None:
    """ultrasam.weights.convert against the mapping written independently in the fixture script."""
    from ultrasam.weights.convert import sam_to_ultrasam, ultrasam_to_sam
    from ultrasam.weights.safe_pickle import restricted_pickle_module

    container = torch.load(FIXTURES / "ultrasam_tiny.pth", map_location="cpu",
                           weights_only=False, pickle_module=restricted_pickle_module)
    reference = container["state_dict"]
    ours = sam_to_ultrasam(sam_weights)
    assert sorted(ours) == sorted(reference)
    for k, v in reference.items():
        assert torch.equal(ours[k], v), k
    back = ultrasam_to_sam(reference)
    assert sorted(back) == sorted(sam_weights)
    for k, v in sam_weights.items():
        assert torch.equal(back[k], v), k


# ------------------------------------------------------------------- full-size layouts
@pytest.mark.parametrize("variant", ["vit_b", "vit_l", "vit_h"])
def test_state_dict_layout_matches_meta(variant: str) -> None:
    """Every key and shape of Meta's sam_model_registry[variant], nothing more."""
    with torch.device("meta"):
        ours = build_model(variant).state_dict()
    expected = DESCRIPTION["meta_state_dict_shapes"][variant]
    assert sorted(ours) == sorted(expected)
    wrong = {k: (list(v.shape), expected[k]) for k, v in ours.items()
             if list(v.shape) != expected[k]}
    assert not wrong, wrong
