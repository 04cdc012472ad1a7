"""The predict / info / convert / demo verbs run as a user would: real files, subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ultrasam.data.synthetic import make_phantom
from ultrasam.modeling import build_model


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ultrasam.cli", *args], capture_output=True,
                          text=True)


@pytest.fixture(scope="module")
def sam_checkpoint(tmp_path_factory) -> Path:
    """A Meta-format (flat state dict) checkpoint of the tiny variant, random weights."""
    torch.manual_seed(0)
    model = build_model("tiny")
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    path = tmp_path_factory.mktemp("ckpt") / "sam_tiny.pth"
    torch.save(model.state_dict(), path)
    return path


def test_predict_png_writes_mask_overlay_json(tmp_path: Path, sam_checkpoint: Path) -> None:
    phantom = make_phantom(seed=3, size=128)
    img = tmp_path / "phantom.png"
    Image.fromarray(phantom.image).save(img)
    out = tmp_path / "out"
    r = _cli("predict", str(img), "--checkpoint", str(sam_checkpoint), "--point", "60,60",
             "--point", "10,10,0", "--box", "20,20,100,100", "--out", str(out))
    assert r.returncode == 0, r.stderr
    record = json.loads((out / "phantom.json").read_text())
    assert record["status"] == "ok" and "warnings" in record
    (obj,) = record["objects"]
    assert {"scores", "rle", "area_px", "area_mm2", "bbox", "mask"} <= set(obj)
    mask = np.array(Image.open(out / "phantom.mask.png"))
    assert mask.shape == phantom.image.shape[:2]
    assert int((mask > 0).sum()) == obj["area_px"]
    overlay = np.array(Image.open(out / "phantom.overlay.png"))
    assert overlay.shape == (*phantom.image.shape[:2], 3)
    assert obj["area_mm2"] is None  # a PNG carries no calibration
    for name in ("phantom.mask.png", "phantom.overlay.png", "phantom.json"):
        assert str(out / name) in r.stdout.splitlines()  # output paths are printed


def test_predict_after_convert_gives_same_output(tmp_path: Path, sam_checkpoint: Path) -> None:
    img = tmp_path / "scan.png"
    Image.fromarray(make_phantom(seed=4, size=96).image).save(img)
    native = tmp_path / "native"
    assert _cli("convert", str(sam_checkpoint), str(native)).returncode == 0
    outs = []
    for ckpt in (sam_checkpoint, native):
        out = tmp_path / f"out_{Path(ckpt).name}"
        r = _cli("predict", str(img), "--checkpoint", str(ckpt), "--point", "48,48",
                 "--refine", "--out", str(out))
        assert r.returncode == 0, r.stderr
        outs.append(json.loads((out / "scan.json").read_text())["objects"][0])
    assert outs[0]["rle"] == outs[1]["rle"] and outs[0]["scores"] == outs[1]["scores"]


def test_predict_dicom_cine_frame(tmp_path: Path, sam_checkpoint: Path) -> None:
    examples = pytest.importorskip("pydicom.examples")
    cine = examples.get_path("ybr_color")
    out = tmp_path / "out"
    r = _cli("predict", str(cine), "--frame", "12", "--checkpoint", str(sam_checkpoint),
             "--box", "100,80,250,200", "--out", str(out))
    assert r.returncode == 0, r.stderr
    stem = Path(cine).name.removesuffix(".dcm")
    record = json.loads((out / f"{stem}.frame12.json").read_text())
    # pydicom's example cine was downsampled after calibration: its regions lie outside the
    # frame, so no area in mm^2 is given, and a warning says why.
    assert record["objects"][0]["area_mm2"] is None
    assert any("region" in w.lower() for w in record["warnings"]), record["warnings"]
    assert (out / f"{stem}.frame12.overlay.png").is_file()


def test_predict_bad_input_one_line_errors(tmp_path: Path, sam_checkpoint: Path) -> None:
    img = tmp_path / "scan.png"
    Image.fromarray(make_phantom(seed=5, size=64).image).save(img)
    # Prompts that do not fit this image: the item fails with one line, then the summary.
    for extra, match in [(["--point", "500,10"], "outside"),
                         (["--box", "30,30,10,10"], "x1 > x0")]:
        r = _cli("predict", str(img), "--checkpoint", str(sam_checkpoint), *extra,
                 "--out", str(tmp_path / "o"))
        assert r.returncode == 1
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 2 and match in lines[0] and "1 failed" in lines[1], r.stderr
    # Errors found before any work: one line, and no output folder.
    for extra, match in [(["--point", "1,2,5"], "label"), ([], "--point or a --box")]:
        r = _cli("predict", str(img), "--checkpoint", str(sam_checkpoint), *extra,
                 "--out", str(tmp_path / "o2"))
        assert r.returncode != 0
        assert match in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not (tmp_path / "o2").exists()
    r = _cli("predict", str(tmp_path / "missing.png"), "--checkpoint", str(sam_checkpoint),
             "--point", "1,1", "--out", str(tmp_path / "o"))
    assert r.returncode != 0 and "missing.png" in r.stderr


def test_demo_without_default_model_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    # An installation without bundled weights (the demo with them: test_default_model.py).
    import ultrasam.weights.checkpoints as checkpoints
    from ultrasam.inference.demo import run_demo

    monkeypatch.setattr(checkpoints, "DEFAULT_MODEL_DIR", tmp_path / "no_weights")
    assert run_demo(tmp_path / "demo") == 3
    err = capsys.readouterr().err
    assert "no trained default model" in err.lower()
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "demo").exists()
