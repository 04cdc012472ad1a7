"""Synthetic cine loops: exact per-frame masks, motion models, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest

from ultrasam.data.synthetic import MOTIONS, make_cine


def test_same_seed_same_bytes_masks_exact_and_inside_the_fov() -> None:
    a = make_cine(3, n_frames=6, size=96)
    b = make_cine(3, n_frames=6, size=96)
    assert a.frames.tobytes() == b.frames.tobytes() and a.masks.tobytes() == b.masks.tobytes()
    assert make_cine(4, n_frames=6, size=96).frames.tobytes() != a.frames.tobytes()
    assert a.frames.shape == a.masks.shape == (6, 96, 96) and a.frames.dtype == np.uint8
    for k in range(6):
        m = a.masks[k]
        assert m.any() and not (m & ~a.fov).any()
        rows, cols = np.nonzero(m)
        assert tuple(a.boxes[k]) == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
    np.testing.assert_allclose(a.times_s, np.arange(6) / 30.0)


@pytest.mark.parametrize("motion", MOTIONS)
def test_each_motion_changes_what_it_says(motion: str) -> None:
    c = make_cine(1, n_frames=12, size=128, motion=motion, period=12, dropout=0.0,
                  shadow=False)
    area = c.masks.sum(axis=(1, 2)).astype(float)
    ys, xs = zip(*[np.argwhere(m).mean(axis=0) for m in c.masks])
    travel = np.hypot(np.ptp(xs), np.ptp(ys))
    fac = (area.max() - area.min()) / area.max()
    if motion == "translate":
        assert travel > 5 and fac < 0.1
    elif motion == "pulsate":
        assert fac > 0.4 and travel < 3
    elif motion == "deform":
        assert travel < 6 and fac < 0.5
        assert (c.masks[0] ^ c.masks[6]).sum() > 0.2 * area[0]  # the outline changed
    else:
        assert travel > 3 and fac > 0.2


def test_cyst_is_dark_dropout_darkens_and_speckle_persists() -> None:
    c = make_cine(5, n_frames=8, size=128, motion="translate", dropout=1.0, shadow=False)
    d = make_cine(5, n_frames=8, size=128, motion="translate", dropout=0.0, shadow=False)
    assert c.dropout.all() and not d.dropout.any()
    ring = d.fov & ~d.masks[0]
    assert d.frames[0][d.masks[0]].mean() < 0.5 * d.frames[0][ring].mean()
    assert c.frames.mean() < d.frames.mean()  # dropout bands lose signal
    for decorrelation, lo, hi in ((0.0, 0.95, 1.0), (1.0, -0.3, 0.3)):
        f = make_cine(5, n_frames=2, size=128, motion="translate", dropout=0.0, shadow=False,
                      decorrelation=decorrelation)
        above = f.fov.copy()  # tissue above the target: no moving lesion or its enhancement
        above[np.argwhere(f.masks.any(axis=0))[:, 0].min() - 3:] = False
        r = np.corrcoef(f.frames[0][above].astype(float), f.frames[1][above].astype(float))
        assert lo < r[0, 1] < hi


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="motion"):
        make_cine(motion="spin")
    with pytest.raises(ValueError, match="structure"):
        make_cine(structure="bone")
    with pytest.raises(ValueError, match="n_frames"):
        make_cine(n_frames=0)
    with pytest.raises(TypeError, match="seed"):
        make_cine(seed=1.5)  # type: ignore[arg-type]
