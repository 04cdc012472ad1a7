"""Tracker mechanics with random tiny weights (exact arithmetic), and propagation quality with
the trained default model (skipped until it is bundled)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ultrasam.data.synthetic import make_cine
from ultrasam.inference.predictor import Predictor
from ultrasam.inference.tracking import (
    FrameResult,
    Tracker,
    TrackerConfig,
    estimate_shift,
    interior_point,
    mask_box,
    quality_flags,
    shift_logits,
)
from ultrasam.modeling import build_model

N = 10


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("tiny").eval()


@pytest.fixture(scope="module")
def cine():  # type: ignore[no-untyped-def]
    return make_cine(2, n_frames=N, size=96)


def _tracker(model: torch.nn.Module, cine, **config) -> Tracker:  # type: ignore[no-untyped-def]
    return Tracker(Predictor(model), cine.frames, TrackerConfig(**config))


def _same(a: FrameResult, b: FrameResult) -> bool:
    return np.array_equal(a.mask, b.mask) and a.score == b.score and a.source == b.source


def test_frame_order_one_encoding_per_frame_and_sources(model, cine) -> None:
    tr = _tracker(model, cine)
    first = tr.add_prompt(4, box=cine.boxes[4])
    assert first.prompted and first.frame == 4 and first.source == 4
    order: list[int] = []
    results = tr.propagate(on_frame=lambda r: order.append(r.frame))
    assert order == [5, 6, 7, 8, 9, 3, 2, 1, 0]  # forward, then backward from the prompt
    assert [r.frame for r in results] == list(range(N))
    assert all(r.source == 4 and r.prompted == (r.frame == 4) for r in results)
    assert tr.stats.encoded == N and tr.stats.decoded == N and tr.stats.cache_hits == 0


def test_each_frame_is_prompted_by_its_neighbour_towards_the_prompt(model, cine) -> None:
    """Recompute the chain by hand with a separate predictor: forward and backward carries."""
    margin = 0.15
    tr = _tracker(model, cine, box_margin=margin, motion=False)
    tr.add_prompt(4, box=cine.boxes[4])
    results = {r.frame: r for r in tr.propagate()}
    ref = Predictor(model)
    ref.set_image(cine.frames[4])
    masks, _, low = ref.predict(box=cine.boxes[4], multimask_output=False)
    assert np.array_equal(masks[0], results[4].mask)
    for order in ([5, 6, 7], [3, 2, 1]):
        prev_mask, prev_low = masks[0], low
        for k in order:
            ref.set_image(cine.frames[k])
            m, s, prev_low = ref.predict(box=mask_box(prev_mask, margin), mask_input=prev_low,
                                         multimask_output=False)
            assert np.array_equal(m[0], results[k].mask) and s[0] == results[k].score
            expected = abs(int(m[0].sum()) - int(prev_mask.sum())) / int(prev_mask.sum())
            assert results[k].area_change == pytest.approx(expected)
            prev_mask = m[0]


def test_carry_point_prompts_with_the_interior_most_point(model, cine) -> None:
    tr = _tracker(model, cine, carry_point=True, carry_box=False, carry_logits=False,
                  motion=False)
    tr.add_prompt(0, box=cine.boxes[0])
    results = tr.propagate()
    ref = Predictor(model)
    ref.set_image(cine.frames[1])
    m, _, _ = ref.predict(point_coords=interior_point(results[0].mask),
                          point_labels=np.ones(1), multimask_output=False)
    assert np.array_equal(m[0], results[1].mask)


def test_motion_moves_every_carried_prompt_by_the_measured_shift(model, cine) -> None:
    tr = _tracker(model, cine, carry_point=True)
    tr.add_prompt(4, box=cine.boxes[4])
    results = {r.frame: r for r in tr.propagate()}
    ref = Predictor(model)
    ref.set_image(cine.frames[4])
    _, _, low = ref.predict(box=cine.boxes[4], multimask_output=False)
    prev = results[4].mask
    dx, dy = estimate_shift(tr._grey(4), tr._grey(5), mask_box(prev))
    ref.set_image(cine.frames[5])
    m, _, _ = ref.predict(point_coords=interior_point(prev) + [dx, dy], point_labels=[1],
                          box=mask_box(prev) + [dx, dy, dx, dy],
                          mask_input=shift_logits(low, dx, dy, prev.shape),
                          multimask_output=False)
    assert np.array_equal(m[0], results[5].mask)


def test_estimate_shift_follows_a_translating_cyst() -> None:
    cine = make_cine(3, n_frames=6, size=128, motion="translate", dropout=0.0, shadow=False)
    tr = Tracker(Predictor(build_model("tiny")), cine.frames)
    for k in range(5):
        a, b = cine.masks[k], cine.masks[k + 1]
        truth = np.argwhere(b).mean(axis=0) - np.argwhere(a).mean(axis=0)  # (dy, dx)
        dx, dy = estimate_shift(tr._grey(k), tr._grey(k + 1), mask_box(a))
        assert abs(dx - truth[1]) <= 1.5 and abs(dy - truth[0]) <= 1.5, (k, dx, dy, truth)


def test_shift_logits_moves_by_image_pixels() -> None:
    logits = np.full((1, 32, 32), -5.0, np.float32)
    logits[0, 10:14, 8:12] = 5.0
    moved = shift_logits(logits, 8.0, -4.0, (64, 128))  # 32 cells over 128 px: 4 px per cell
    assert np.array_equal(moved[0] > 0, np.roll(np.roll(logits[0] > 0, 2, axis=1), -1, axis=0))
    assert moved.min() == -5.0


def test_propagating_again_reuses_everything(model, cine) -> None:
    tr = _tracker(model, cine)
    tr.add_prompt(4, box=cine.boxes[4])
    before = tr.propagate()
    calls = (tr.stats.encoded, tr.stats.decoded)
    again = tr.propagate(on_frame=lambda r: pytest.fail("nothing should be recomputed"))
    assert (tr.stats.encoded, tr.stats.decoded) == calls
    assert all(a is b for a, b in zip(before, again))


def test_a_correction_re_propagates_only_its_own_frames(model, cine) -> None:
    tr = _tracker(model, cine)
    tr.add_prompt(4, box=cine.boxes[4])
    before = {r.frame: r for r in tr.propagate()}
    encoded, decoded = tr.stats.encoded, tr.stats.decoded
    tr.add_prompt(8, box=cine.boxes[8])
    recomputed: list[int] = []
    after = {r.frame: r for r in tr.propagate(on_frame=lambda r: recomputed.append(r.frame))}
    # Nearest prompt decides: frames 0..6 stay with frame 4 (6 is a tie: the earlier prompt),
    # 7..9 now come from frame 8.
    assert sorted(recomputed) == [7, 9]
    assert tr.stats.decoded == decoded + 3 and tr.stats.encoded == encoded  # all cached
    for k in range(7):
        assert after[k] is before[k]
    assert [after[k].source for k in (7, 8, 9)] == [8, 8, 8]
    # Removing the correction restores the first result exactly.
    tr.remove_prompt(8)
    restored = {r.frame: r for r in tr.propagate()}
    assert all(_same(restored[k], before[k]) for k in range(N))


def test_correction_points_start_from_the_tracked_mask(model, cine) -> None:
    tr = _tracker(model, cine)
    tr.add_prompt(2, box=cine.boxes[2])
    tr.propagate()
    held = tr._entries["object"][6].logits  # the mask frame 6 holds, as low-res logits
    point = np.array([[float(cine.boxes[6][0]) + 3, float(cine.boxes[6][1]) + 3]])
    corrected = tr.add_prompt(6, points=point, labels=[0])
    ref = Predictor(model)
    ref.set_image(cine.frames[6])
    m, s, _ = ref.predict(point_coords=point, point_labels=np.array([0]), mask_input=held,
                          multimask_output=False)
    assert np.array_equal(m[0], corrected.mask) and s[0] == corrected.score
    assert tr.prompts()[1].mask_input is not None and tr.prompts()[0].mask_input is None


def test_embedding_cache_is_bounded_least_recently_used(model, cine) -> None:
    tr = _tracker(model, cine, cache_frames=3)
    tr.add_prompt(4, box=cine.boxes[4])
    tr.propagate()  # last encoded: 3, 2, 1, 0 -> cache holds 2, 1, 0
    assert tr.stats.encoded == N
    tr.add_prompt(1, box=cine.boxes[1])
    assert tr.stats.encoded == N  # cached
    tr.add_prompt(9, box=cine.boxes[9])
    assert tr.stats.encoded == N + 1  # evicted long ago


def test_multiple_objects_share_the_embeddings(model, cine) -> None:
    tr = _tracker(model, cine)
    tr.add_prompt(0, box=cine.boxes[0], name="cyst")
    tr.add_prompt(9, points=[[48, 20]], name="top")
    results = tr.propagate()
    assert tr.names == ["cyst", "top"]
    assert [(r.name, r.frame) for r in results] == \
        [("cyst", k) for k in range(N)] + [("top", k) for k in range(N)]
    assert tr.stats.encoded == N
    assert [r.source for r in tr.results("top")] == [9] * N
    with pytest.raises(KeyError, match="no prompt for object 'other'"):
        tr.propagate("other")


def test_frame_range_limits_the_track(model, cine) -> None:
    tr = Tracker(Predictor(model), cine.frames, frame_range=(2, 7))
    tr.add_prompt(3, box=cine.boxes[3])
    assert [r.frame for r in tr.propagate()] == [2, 3, 4, 5, 6]
    with pytest.raises(ValueError, match="outside the tracked range 2..6"):
        tr.add_prompt(7, box=cine.boxes[7])
    with pytest.raises(ValueError, match="frame_range"):
        Tracker(Predictor(model), cine.frames, frame_range=(5, 5))


def test_stop_on_drift_ends_each_direction_at_the_first_flagged_frame(model, cine) -> None:
    tr = _tracker(model, cine, min_score=-1.0, max_area_change=1e-9, on_drift="stop")
    tr.add_prompt(4, box=cine.boxes[4])
    results = tr.propagate()
    assert [r.frame for r in results] == [3, 4, 5]
    assert [r.flags for r in results if not r.prompted] == [("area_jump",), ("area_jump",)]
    # Flagging only: every frame is tracked, the same ones are flagged.
    tr = _tracker(model, cine, min_score=-1.0, max_area_change=1e-9)
    tr.add_prompt(4, box=cine.boxes[4])
    flagged = {r.frame: r.flags for r in tr.propagate()}
    assert len(flagged) == N and flagged[3] == flagged[5] == ("area_jump",)
    tr = _tracker(model, cine, min_score=2.0, on_drift="stop")  # scores are IoUs below 2
    assert tr.add_prompt(4, box=cine.boxes[4]).flags == ("low_score",)
    assert [r.frame for r in tr.propagate()] == [4]


def test_quality_flags_by_arithmetic() -> None:
    cfg = TrackerConfig(min_score=0.5, max_area_change=0.25)
    assert quality_flags(0.9, 100, 80, cfg) == ((), 0.25)
    assert quality_flags(0.9, 101, 80, cfg) == (("area_jump",), 21 / 80)
    assert quality_flags(0.4, 60, 80, cfg) == (("low_score",), 0.25)
    assert quality_flags(0.9, 0, 80, cfg) == (("empty",), 1.0)
    assert quality_flags(0.9, 50, None, cfg) == ((), None)


def test_box_and_interior_point_helpers() -> None:
    m = np.zeros((20, 30), bool)
    m[5:9, 10:20] = True  # rows 5..8, columns 10..19
    assert mask_box(m).tolist() == [10, 5, 20, 9]
    assert mask_box(m, 0.5).tolist() == [5, 3, 25, 11]
    assert mask_box(m, 2.0).tolist() == [0, 0, 30, 17]  # clipped to the image
    m2 = np.zeros((20, 30), bool)
    m2[5:16, 5:16] = True  # an 11 x 11 square centred on pixel (10, 10)
    m2[10, 15:29] = True  # with a thin tail: the centroid moves, the interior-most point not
    assert interior_point(m2).tolist() == [[10.5, 10.5]]
    edge = np.zeros((8, 8), bool)
    edge[:, :3] = True  # touching the image edge: the edge counts as border
    assert interior_point(edge).tolist()[0][0] == 1.5
    with pytest.raises(ValueError, match="empty"):
        mask_box(np.zeros((4, 4), bool))


def test_bad_prompts_and_config(model, cine) -> None:
    tr = _tracker(model, cine)
    with pytest.raises(ValueError, match="points or a box"):
        tr.add_prompt(0)
    with pytest.raises(ValueError, match="outside the 96x96 image"):
        tr.add_prompt(0, box=[0, 0, 200, 50])
    assert tr.names == []  # the refused prompt was not kept
    with pytest.raises(TypeError, match="frame must be an int"):
        tr.add_prompt(1.5, box=cine.boxes[1])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        tr.add_prompt(0, box=cine.boxes[0], name=" ")
    with pytest.raises(KeyError, match="no prompt on frame 3"):
        tr.remove_prompt(3)
    with pytest.raises(ValueError, match="carry"):
        TrackerConfig(carry_logits=False, carry_box=False)
    with pytest.raises(ValueError, match="on_drift"):
        TrackerConfig(on_drift="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cache_frames"):
        TrackerConfig(cache_frames=0)
    with pytest.raises(TypeError, match="Predictor"):
        Tracker(model, cine.frames)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- with a real model


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int((a & b).sum()) / total if total else 1.0


@pytest.mark.parametrize("motion,structure", [("mixed", "cyst"), ("pulsate", "cyst")])
def test_default_model_follows_synthetic_loops(motion: str, structure: str) -> None:
    from ultrasam.weights.checkpoints import DefaultModelUnavailable, load_model

    try:
        model = load_model()
    except DefaultModelUnavailable as e:
        pytest.skip(f"the trained default model is not bundled yet ({e}); this test measures "
                    "propagation quality and needs it")
    cine = make_cine(11, n_frames=16, size=256, motion=motion, structure=structure)
    tr = Tracker(Predictor(model), cine.frames)
    tr.add_prompt(0, box=cine.boxes[0])
    dice = [_dice(r.mask, cine.masks[r.frame]) for r in tr.propagate()]
    assert len(dice) == 16
    assert min(dice) >= 0.9, f"per-frame Dice {np.round(dice, 3).tolist()}"


def test_default_model_tracks_a_moving_lesion_better_than_copying_the_first_mask() -> None:
    # A translating hypoechoic lesion is harder (measured per-frame Dice down to ~0.6 with the
    # bundled model, docs/tracking.md): no 0.9 floor, but propagation must beat the lower
    # bound of copying frame 0's mask to every frame.
    from ultrasam.weights.checkpoints import DefaultModelUnavailable, load_model

    try:
        model = load_model()
    except DefaultModelUnavailable as e:
        pytest.skip(f"the trained default model is not bundled ({e})")
    cine = make_cine(11, n_frames=16, size=256, motion="translate",
                     structure="hypoechoic_lesion")
    tr = Tracker(Predictor(model), cine.frames)
    first = tr.add_prompt(0, box=cine.boxes[0])
    tracked = [_dice(r.mask, cine.masks[r.frame]) for r in tr.propagate()]
    copied = [_dice(first.mask, m) for m in cine.masks[:16]]
    assert np.mean(tracked) > np.mean(copied), (np.round(tracked, 3).tolist(), np.mean(copied))
