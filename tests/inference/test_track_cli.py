"""``ultrasam track`` end to end with random tiny weights: pydicom's real ultrasound cine (frame
times, refused and valid calibration), a NIfTI volume, a folder of frames, several objects."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ultrasam.cli import main
from ultrasam.commands.track import parse_objects, parse_range
from ultrasam.data.synthetic import make_cine
from ultrasam.inference.track_files import CSV_COLUMNS
from ultrasam.modeling import build_model
from ultrasam.weights.checkpoints import save_native

pydicom = pytest.importorskip("pydicom")
examples = pytest.importorskip("pydicom.examples")

CINE = str(examples.get_path("ybr_color"))  # 30 frames, FrameTime 33.333 ms, 320 x 240
DELTA_MM = 0.5104970559477806  # its region's PhysicalDeltaX/Y (0.0510497... cm)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    torch.manual_seed(0)
    return str(save_native(build_model("tiny"), tmp_path_factory.mktemp("tiny") / "model"))


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "measurements.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
        return list(reader)


def _png_area(path: Path) -> int:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None and set(np.unique(img).tolist()) <= {0, 255}
    return int((img > 0).sum())


def test_pydicom_cine_every_frame_with_its_time(tmp_path: Path, checkpoint: str) -> None:
    out = tmp_path / "out"
    rc = main(["track", CINE, "--frame", "10", "--box", "100,60,200,160",
               "--checkpoint", checkpoint, "--out", str(out)])
    assert rc == 0
    rows = _rows(out)
    assert [int(r["frame"]) for r in rows] == list(range(30))
    for r in rows:
        k = int(r["frame"])
        assert float(r["time_s"]) == pytest.approx(k * 0.033333, abs=1e-6)
        assert int(r["area_px"]) == _png_area(out / "masks" / "object" / f"frame_{k:05d}.png")
        assert r["area_mm2"] == "" and r["max_diameter_mm"] == ""  # calibration refused
        assert r["prompted"] == ("1" if k == 10 else "0")
        assert r["flagged"] == ("1" if r["flags"] else "0")
    coco = json.loads((out / "annotations.json").read_text())
    assert [im["frame"] for im in coco["images"]] == list(range(30))
    assert coco["images"][3]["time_s"] == pytest.approx(0.099999)
    areas = {a["image_id"] - 1: a["area"] for a in coco["annotations"]}
    assert areas == {int(r["frame"]): int(r["area_px"]) for r in rows if int(r["area_px"])}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["timing"] == "FrameTime" and summary["calibration"] is None
    assert any("resized or cropped" in w for w in summary["warnings"])
    obj = summary["objects"]["object"]
    area = [int(r["area_px"]) for r in rows]
    assert obj["area_px"]["fractional_area_change"] == pytest.approx(
        (max(area) - min(area)) / max(area))
    assert obj["frames_tracked"] == 30 and obj["frames_untracked"] == []
    assert obj["frames_flagged"] == [int(r["frame"]) for r in rows if r["flagged"] == "1"]
    if summary["files"]["plot"]:
        assert (out / "area.png").stat().st_size > 1000


def test_calibrated_cine_gives_square_millimetres(tmp_path: Path, checkpoint: str) -> None:
    """The same cine with its ultrasound region inside the frame: areas in mm^2."""
    ds = pydicom.dcmread(CINE)
    region = ds.SequenceOfUltrasoundRegions[0]
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 0, 0
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = 319, 239
    path = tmp_path / "calibrated.dcm"
    ds.save_as(path)
    out = tmp_path / "out"
    assert main(["track", str(path), "--frame", "0", "--box", "100,60,200,160", "--range",
                 "0:6", "--checkpoint", checkpoint, "--out", str(out)]) == 0
    rows = _rows(out)
    assert [int(r["frame"]) for r in rows] == list(range(6))
    for r in rows:
        assert float(r["area_mm2"]) == pytest.approx(int(r["area_px"]) * DELTA_MM ** 2,
                                                     rel=1e-5)
        assert float(r["max_diameter_mm"]) == pytest.approx(
            float(r["max_diameter_px"]) * DELTA_MM, rel=1e-5)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["calibration"] == "ultrasound_regions"
    assert summary["spacing_mm"] == pytest.approx([DELTA_MM, DELTA_MM])
    assert summary["objects"]["object"]["area_mm2_frames"] == 6


def test_volume_writes_a_label_volume_on_its_grid(tmp_path: Path, checkpoint: str) -> None:
    nib = pytest.importorskip("nibabel")
    data = np.full((40, 32, 5), 60, np.uint8)  # x, y, z
    data[10:25, 8:20, :] = 200
    affine = np.diag([0.4, 0.5, 3.0, 1.0])
    affine[:3, 3] = [5, -2, 7]
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    src = tmp_path / "vol.nii.gz"
    nib.save(img, str(src))
    out = tmp_path / "out"
    # Slice 2 is 32 rows (y) x 40 columns (x); the bright block is x 10..24, y 8..19.
    assert main(["track", str(src), "--name", "block", "--frame", "2", "--box", "8,6,27,22",
                 "--checkpoint", checkpoint, "--out", str(out)]) == 0
    labels = nib.load(str(out / "labels.nii.gz"))
    assert labels.shape == data.shape and np.allclose(labels.affine, affine)
    lab = np.asarray(labels.dataobj)
    assert set(np.unique(lab).tolist()) <= {0, 1}
    rows = _rows(out)
    assert [int(r["frame"]) for r in rows] == list(range(5))
    for r in rows:
        k = int(r["frame"])
        assert int(r["area_px"]) == int((lab[:, :, k] == 1).sum())
        assert float(r["position_mm"]) == pytest.approx(3.0 * k)
        assert float(r["area_mm2"]) == pytest.approx(int(r["area_px"]) * 0.4 * 0.5, rel=1e-5)
        assert r["time_s"] == ""
    assert not (out / "masks").exists()


def test_folder_of_frames_with_a_range_and_two_objects(tmp_path: Path, checkpoint: str) -> None:
    cine = make_cine(0, n_frames=6, size=96)
    frames = tmp_path / "frames"
    frames.mkdir()
    for k in range(6):
        cv2.imwrite(str(frames / f"img{k}.png"), cine.frames[k])
    out = tmp_path / "out"
    box = ",".join(str(int(v)) for v in cine.boxes[2])
    assert main(["track", str(frames), "--name", "cyst", "--frame", "2", "--box", box,
                 "--name", "left", "--frame", "3", "--point", "20,40", "--point", "60,40,0",
                 "--range", "1:5", "--fps", "20", "--checkpoint", checkpoint,
                 "--out", str(out), "--overlays"]) == 0
    rows = _rows(out)
    assert [(r["name"], int(r["frame"])) for r in rows] == \
        [("cyst", k) for k in range(1, 5)] + [("left", k) for k in range(1, 5)]
    assert [float(r["time_s"]) for r in rows[:4]] == pytest.approx([0.05, 0.1, 0.15, 0.2])
    assert sorted(p.name for p in (out / "masks" / "cyst").iterdir()) == \
        [f"frame_{k:05d}.png" for k in range(1, 5)]
    assert len(list((out / "overlays").iterdir())) == 4
    coco = json.loads((out / "annotations.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["cyst", "left"]
    assert [im["file_name"] for im in coco["images"]] == [f"img{k}.png" for k in range(1, 5)]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["objects"]["left"]["prompts"] == [
        {"frame": 3, "points": [[20.0, 40.0], [60.0, 40.0]], "labels": [1, 0], "box": None}]


def test_prompt_parsing_in_command_line_order() -> None:
    objs = parse_objects([("frame", "0"), ("box", "1,2,3,4"), ("frame", "5"),
                          ("point", "7,8"), ("point", "9,10,0"), ("name", "b"),
                          ("frame", "2"), ("point", "1,1")])
    assert [(o.name, [(p.frame, p.box, p.points, p.labels) for p in o.prompts])
            for o in objs] == [
        ("object", [(0, (1.0, 2.0, 3.0, 4.0), [], []), (5, None, [(7.0, 8.0), (9.0, 10.0)],
                                                         [1, 0])]),
        ("b", [(2, None, [(1.0, 1.0)], [1])])]
    assert parse_range("3:") == (3, None) and parse_range(":-2") == (None, -2)
    with pytest.raises(ValueError, match="before any --frame"):
        parse_objects([("box", "1,2,3,4")])
    with pytest.raises(ValueError, match="one --box per prompt"):
        parse_objects([("frame", "0"), ("box", "1,2,3,4"), ("box", "1,2,3,4")])
    with pytest.raises(ValueError, match="A:B"):
        parse_range("1:2:3")


def test_bad_command_lines_are_one_line_errors(tmp_path: Path, checkpoint: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    base = [CINE, "--checkpoint", checkpoint, "--out", str(tmp_path / "o")]
    for args, message in (([], "at least one object"),
                          (["--frame", "3"], "needs --box or --point"),
                          (["--frame", "40", "--box", "1,1,9,9"], "outside the tracked range"),
                          (["--frame", "0", "--box", "1,1,9,9", "--range", "5:2"],
                           "selects no frames"),
                          (["--name", "a", "--frame", "0", "--box", "1,1,9,9", "--name", "a",
                            "--frame", "1", "--box", "1,1,9,9"], "used twice")):
        assert main(["track", *base, *args]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err


def test_object_names_that_clash_as_folder_names(tmp_path: Path, checkpoint: str) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    for k in range(2):
        cv2.imwrite(str(frames / f"{k}.png"), make_cine(1, n_frames=2, size=64).frames[k])
    out = tmp_path / "out"
    assert main(["track", str(frames), "--name", "a b", "--frame", "0", "--box", "10,10,40,40",
                 "--name", "a_b", "--frame", "1", "--point", "30,30", "--checkpoint",
                 checkpoint, "--out", str(out)]) == 0
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["a_b", "a_b_1"]
