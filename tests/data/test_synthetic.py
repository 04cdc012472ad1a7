"""Synthetic B-mode phantoms: determinism, exact masks, and plausible image statistics."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from ultrasam.data.synthetic import GEOMETRIES, KINDS, Phantom, make_batch, make_phantom

EXPECTED = {"cyst": {"cyst"}, "layered": {"skin", "fat", "muscle"}}


def _ring(mask: np.ndarray, fov: np.ndarray, inner: int = 2, outer: int = 6) -> np.ndarray:
    """Pixels 3..6 px outside the mask (inside the FOV): the lesion's immediate background."""
    def grow(r: int) -> np.ndarray:
        return cv2.dilate(mask.astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)) > 0
    return grow(outer) & ~grow(inner) & fov


def test_same_seed_same_bytes_other_seed_other_image() -> None:
    a = make_phantom(7, 128, "sector", "mixed")
    b = make_phantom(7, 128, "sector", "mixed")
    assert a.image.tobytes() == b.image.tobytes()
    assert a.structures == b.structures
    assert all(np.array_equal(a.masks[s], b.masks[s]) for s in a.structures)
    assert np.array_equal(a.boxes, b.boxes)
    c = make_phantom(8, 128, "sector", "mixed")
    assert a.image.tobytes() != c.image.tobytes()


@pytest.mark.parametrize("geometry, kind", list(itertools.product(GEOMETRIES, KINDS)))
def test_masks_are_exact_non_empty_and_inside_the_fov(geometry: str, kind: str) -> None:
    p = make_phantom(3, 128, geometry, kind)
    assert isinstance(p, Phantom)
    assert p.image.shape == (128, 128) and p.image.dtype == np.uint8
    assert p.instances and p.boxes.shape == (len(p.instances), 4)
    if kind in EXPECTED:
        assert set(p.structures) == EXPECTED[kind]
    if kind == "solid":
        assert set(p.structures) <= {"hypoechoic_lesion", "hyperechoic_lesion"}
    if kind == "mixed":
        assert {"skin", "fat", "muscle", "cyst"} <= set(p.structures) and len(p.structures) == 5
    for inst, box in zip(p.instances, p.boxes):
        assert inst.mask.dtype == bool and inst.mask.shape == (128, 128)
        assert inst.mask.any() and not (inst.mask & ~p.fov).any()
        rows, cols = np.nonzero(inst.mask)
        assert box.tolist() == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
        assert not (inst.mask & ~p.masks[inst.structure]).any()
    union = np.zeros((128, 128), int)
    for inst in p.instances:
        union += inst.mask
    assert union.max() == 1  # instances never overlap: lesions occlude layers
    if geometry == "sector":
        assert p.image[~p.fov].max() == 0 and 0.3 < p.fov.mean() < 0.9
        assert p.image[p.fov].mean() > 20
    else:
        assert p.fov.all()
    if kind in ("layered", "mixed"):
        assert union[p.fov].min() == 1  # the layers tile the whole field of view


def test_lesion_echogenicity_goes_the_expected_way() -> None:
    seen: dict[str, list[float]] = {}
    for seed, geometry in itertools.product(range(4), GEOMETRIES):
        for kind in ("cyst", "solid"):
            p = make_phantom(seed, 128, geometry, kind)
            for inst in p.instances:
                inside = p.image[inst.mask].mean()
                around = p.image[_ring(inst.mask, p.fov)].mean()
                seen.setdefault(inst.structure, []).append(inside - around)
    assert max(seen["cyst"]) < -60  # anechoic: much darker than the tissue around it
    assert max(seen["hypoechoic_lesion"]) < -10
    assert min(seen["hyperechoic_lesion"]) > 5


def test_posterior_enhancement_and_shadowing() -> None:
    """Linear geometry: the band below a lesion vs the same depths beside it."""
    effect: dict[str, list[float]] = {}
    for seed in range(8):
        for kind in ("cyst", "solid"):
            p = make_phantom(seed, 128, "linear", kind)
            for inst in p.instances:
                x0, y0, x1, y1 = inst.box
                w, h = x1 - x0, y1 - y0
                if y1 + h // 2 > 128:
                    continue
                below = p.image[y1 + 2:y1 + h // 2, x0 + w // 4:x1 - w // 4]
                beside = np.concatenate([p.image[y1 + 2:y1 + h // 2, max(0, x0 - w):x0 - 4].ravel(),
                                         p.image[y1 + 2:y1 + h // 2, x1 + 4:x1 + w].ravel()])
                effect.setdefault(inst.structure, []).append(below.mean() - beside.mean())
    assert np.mean(effect["cyst"]) > 10  # posterior enhancement
    assert np.mean(effect["hyperechoic_lesion"]) < -10  # acoustic shadow


def test_speckle_is_rayleigh_like_with_a_lateral_grain() -> None:
    p = make_phantom(0, 256, "linear", "cyst")
    tissue = ~cv2.dilate(p.masks["cyst"].astype(np.uint8), np.ones((41, 41), np.uint8)).astype(bool)
    img = p.image.astype(np.float64)
    # Log-compressed fully developed speckle has a std of ~5.6 dB; scaled to grey levels here.
    patch = img[60:200, 20:236][tissue[60:200, 20:236]]
    assert 10 < patch.std() < 45
    centred = img[60:200, 20:236] - img[60:200, 20:236].mean()

    def corr(dy: int, dx: int) -> float:
        a = centred[: centred.shape[0] - dy, : centred.shape[1] - dx]
        b = centred[dy:, dx:]
        return float((a * b).mean() / centred.var())
    assert corr(0, 2) > corr(2, 0) + 0.1  # the PSF is wider laterally than axially
    assert corr(0, 8) < 0.5  # but the grain is small: speckle, not blobs


def test_centroid_and_boxes_helpers() -> None:
    p = make_phantom(1, 128, "sector", "layered")
    for key in [*range(len(p.instances)), *p.structures]:
        x, y = p.centroid(key)
        mask = p.masks[key] if isinstance(key, str) else p.instances[key].mask
        assert mask[int(y), int(x)]
    with pytest.raises(KeyError, match="cyst"):
        p.centroid("cyst")
    with pytest.raises(IndexError):
        p.centroid(len(p.instances))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="geometry"):
        make_phantom(0, 64, "convex")
    with pytest.raises(ValueError, match="kind"):
        make_phantom(0, 64, "sector", "tumour")
    with pytest.raises(ValueError, match="size"):
        make_phantom(0, 16)
    with pytest.raises(TypeError, match="seed"):
        make_phantom("0")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n must"):
        make_batch(-1)


def test_make_batch_is_reproducible_and_varied() -> None:
    batch = make_batch(6, seed=3, size=64)
    again = make_batch(6, seed=3, size=64)
    assert [p.image.tobytes() for p in batch] == [p.image.tobytes() for p in again]
    assert len({(p.geometry, p.kind) for p in batch}) > 1
    one = batch[2]
    assert make_phantom(one.seed, 64, one.geometry, one.kind).image.tobytes() == \
        one.image.tobytes()
    assert {p.kind for p in make_batch(3, seed=0, size=64, kind="cyst")} == {"cyst"}
