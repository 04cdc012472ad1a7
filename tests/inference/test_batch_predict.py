"""Batch prediction end to end with a tiny random model: the issue's user story and the outputs.

The story: a folder tree of mixed PNG/DICOM files (one broken, two sharing a name) segmented
from a CSV of per-image prompts; every good item lands under its own path, the broken one is
listed with its error, a rerun does nothing, ``--overwrite`` redoes it, and the Dask engine on a
local cluster gives identical files.
"""

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
from ultrasam.inference.batch import predict_batch
from ultrasam.modeling import build_model
from ultrasam.weights.checkpoints import save_native


def _cli(*args: str) -> subprocess.CompletedProcess:
    """``ultrasam ARGS`` in a fresh interpreter (slow on a loaded machine: use sparingly)."""
    return subprocess.run([sys.executable, "-m", "ultrasam.cli", *args], capture_output=True,
                          text=True, check=False)


@pytest.fixture
def cli(capsys):
    """``ultrasam ARGS`` through the console entry point, in this process (fast)."""
    from ultrasam.cli import main

    def run(*args: str) -> subprocess.CompletedProcess:
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, captured.out, captured.err)

    return run


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """The tiny variant with random weights, saved as a native folder."""
    torch.manual_seed(0)
    return save_native(build_model("tiny"), tmp_path_factory.mktemp("ckpt") / "tiny")


def _grey(seed: int, size: int) -> np.ndarray:
    image = make_phantom(seed=seed, size=size).image
    return image if image.ndim == 2 else image[..., 0]


def _write_us_dicom(path: Path, pixels: np.ndarray) -> Path:
    """A single-frame ultrasound DICOM (8-bit grey) with the identifiers a SEG refers to."""
    pytest.importorskip("pydicom")
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, UltrasoundImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = UltrasoundImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientID, ds.PatientName = "US", "P1", "Test^Patient"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20260101", "120000", "A1", "1"
    ds.ReferringPhysicianName, ds.PatientBirthDate, ds.PatientSex = "", "", "O"
    ds.SeriesNumber, ds.InstanceNumber, ds.Manufacturer = 1, 1, "test"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _tree(root: Path) -> Path:
    """site_a/scan.png, site_b/scan.png (same name), site_a/us.dcm, site_b/study/IM0001 (a
    suffix-less DICOM), site_b/broken.png; returns a CSV with per-image prompts."""
    for site, seed in (("site_a", 1), ("site_b", 2)):
        (root / site).mkdir(parents=True)
        Image.fromarray(make_phantom(seed=seed, size=96).image).save(root / site / "scan.png")
    _write_us_dicom(root / "site_a" / "us.dcm", _grey(3, 80))
    _write_us_dicom(root / "site_b" / "study" / "IM0001",
                    _grey(4, 64))
    (root / "site_b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    csv = root / "prompts.csv"
    csv.write_text("path,points,labels,box\n"
                   'site_a/scan.png,"[[40, 40], [5, 5]]","[1, 0]",\n'
                   'site_b/scan.png,,,"10,10,70,70"\n'
                   'site_a/us.dcm,"30,30",,\n'
                   'site_b/study/IM0001,,,"8,8,50,50"\n'
                   'site_b/broken.png,,,"1,1,5,5"\n', encoding="utf-8")
    return csv


def _files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file()}


def _results(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_user_story_tree_csv_broken_item_rerun_overwrite(tmp_path: Path, tiny: Path,
                                                        cli) -> None:
    csv = _tree(tmp_path / "data")
    out = tmp_path / "out"
    r = _cli("predict", str(csv), "--checkpoint", str(tiny), "--out", str(out), "--polygons")
    assert r.returncode == 1, r.stderr  # one item failed
    stems = ["site_a/scan", "site_b/scan", "site_a/us", "site_b/study/IM0001"]
    for stem in stems:
        for ext in (".mask.png", ".overlay.png", ".json"):
            assert (out / f"{stem}{ext}").is_file(), stem + ext
            assert str(out / f"{stem}{ext}") in r.stdout.splitlines()
    assert not list(out.rglob("broken*"))
    records = _results(out)
    assert [rec["status"] for rec in records] == ["ok", "ok", "ok", "ok", "failed"]
    assert "broken.png" in records[4]["image"] and "corrupt" in records[4]["error"]
    assert "failed: " in r.stderr and "broken.png" in r.stderr
    assert "4 segmented, 0 already done, 1 failed" in r.stderr
    first = records[0]["objects"][0]
    assert first["prompt"]["labels"] == [1, 0] and first["polygons"]
    assert records[2]["format"] == "DICOM"
    mask = np.array(Image.open(out / "site_a/us.mask.png")) > 0
    assert mask.shape == (80, 80) and int(mask.sum()) == records[2]["objects"][0]["area_px"]
    coco = json.loads((out / "results.coco.json").read_text())
    assert [c["image_id"] for c in coco] == [1, 2, 3, 4]
    before = {p: (out / p).stat().st_mtime_ns for p in _files(out) if not p.startswith("res")}

    r = cli("predict", str(csv), "--checkpoint", str(tiny), "--out", str(out), "--polygons")
    assert r.returncode == 1
    assert "0 segmented, 4 already done, 1 failed" in r.stderr
    assert r.stdout == ""  # nothing new written
    assert {p: (out / p).stat().st_mtime_ns for p in before} == before
    assert _results(out) == records

    r = cli("predict", str(csv), "--checkpoint", str(tiny), "--out", str(out), "--polygons",
            "--overwrite")
    assert "4 segmented, 0 already done, 1 failed" in r.stderr
    assert all((out / p).stat().st_mtime_ns != before[p] for p in before)
    assert _results(out) == records  # same inputs, same model: the same results

    # Other prompts for an item: that item is redone, the others are kept.
    csv.write_text(csv.read_text().replace('"10,10,70,70"', '"12,12,70,70"'))
    r = cli("predict", str(csv), "--checkpoint", str(tiny), "--out", str(out), "--polygons")
    assert "1 segmented, 3 already done, 1 failed" in r.stderr


def test_dask_local_cluster_gives_identical_outputs(tmp_path: Path, tiny: Path) -> None:
    distributed = pytest.importorskip("distributed")
    csv = _tree(tmp_path / "data")
    local = tmp_path / "local"
    summary = predict_batch([csv], local, checkpoint=tiny)
    assert (summary.ok, summary.failed) == (4, 1)
    # In-process workers (threads) keep this test fast; they share the model, so this also
    # checks that each thread gets its own predictor.
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        dask_out = tmp_path / "dask"
        summary = predict_batch([csv], dask_out, checkpoint=tiny, engine="dask",
                                scheduler=cluster.scheduler_address)
    assert (summary.ok, summary.failed) == (4, 1)
    assert _files(dask_out) == _files(local)


@pytest.mark.slow
def test_worker_processes_and_dask_processes_give_identical_outputs(tmp_path: Path,
                                                                    tiny: Path) -> None:
    pytest.importorskip("distributed")
    csv = _tree(tmp_path / "data")
    outs = {}
    for name, extra in (("one", []), ("two", ["--workers", "2"]),
                        ("dask", ["--engine", "dask", "--workers", "2"])):
        outs[name] = tmp_path / name
        r = _cli("predict", str(csv), "--checkpoint", str(tiny), "--out", str(outs[name]),
                 "--quiet", *extra)
        assert r.returncode == 1 and "4 segmented" in r.stderr, r.stderr
    assert _files(outs["two"]) == _files(outs["one"]) == _files(outs["dask"])


def test_errors_before_work_leave_no_output_folder(tmp_path: Path, tiny: Path, cli) -> None:
    img = tmp_path / "scan.png"
    Image.fromarray(make_phantom(seed=5, size=64).image).save(img)
    (tmp_path / "a_file").write_text("x")
    broken = tmp_path / "broken_ckpt"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    (broken / "config.json").write_text("{}")
    cases = [(["--out", str(tmp_path / "a_file")], "not a folder"),
             (["--device", "nonsense:7"], "device"),
             (["--workers", "0"], "workers"),
             (["--candidates", "--refine"], "exclude"),
             (["--checkpoint", str(broken)], "")]
    for extra, match in cases:
        args = ["predict", str(img), "--box", "5,5,40,40", "--checkpoint", str(tiny),
                "--out", str(tmp_path / "o"), *extra]
        r = cli(*args)
        assert r.returncode != 0, extra
        assert match in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not (tmp_path / "o").exists(), extra


def test_candidates_mask_prompt_and_several_objects(tmp_path: Path, tiny: Path) -> None:
    img = tmp_path / "in" / "scan.png"
    img.parent.mkdir()
    Image.fromarray(make_phantom(seed=6, size=64).image).save(img)
    prompt_mask = np.zeros((64, 64), np.uint8)
    prompt_mask[20:40, 20:40] = 1
    Image.fromarray(prompt_mask).save(tmp_path / "in" / "prompt.png")
    Image.fromarray(prompt_mask[:32]).save(tmp_path / "in" / "small.png")
    manifest = tmp_path / "m.jsonl"
    rows = [{"path": "in/scan.png", "box": [10, 10, 50, 50]},
            {"path": "in/scan.png", "mask": "in/prompt.png"},
            {"path": "in/scan.png", "points": [[30, 30]]}]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    summary = predict_batch([manifest], out, checkpoint=tiny, candidates=True)
    assert summary.ok == 1
    record = json.loads((out / "scan.json").read_text())
    assert len(record["objects"]) == 3
    for k, obj in enumerate(record["objects"]):
        assert obj["mask"] == f"scan.obj{k}.mask.png" and (out / obj["mask"]).is_file()
        assert [c["mask"] for c in obj["candidates"]] == \
            [f"scan.obj{k}.cand{c}.mask.png" for c in range(3)]
    # The single positive point is ambiguous: its mask is the best-scored candidate.
    point = record["objects"][2]
    assert point["rle"] == point["candidates"][point["selected"]]["rle"]
    assert record["objects"][1]["prompt"]["mask"].endswith("prompt.png")
    # Redone without candidates (other options): the earlier candidate files go away.
    summary = predict_batch([manifest], out, checkpoint=tiny)
    assert summary.ok == 1 and summary.resumed == 0
    assert not list(out.glob("*.cand*")) and (out / "scan.obj2.mask.png").is_file()

    manifest.write_text(json.dumps({"path": "in/scan.png", "mask": "in/small.png"}) + "\n")
    summary = predict_batch([manifest], tmp_path / "out2", checkpoint=tiny)
    assert summary.failed == 1
    (rec,) = _results(tmp_path / "out2")
    assert "64x32" in rec["error"] or "is 64x32" in rec["error"], rec["error"]


def test_coco_input_keeps_ids_in_coco_results(tmp_path: Path, tiny: Path) -> None:
    from pycocotools.coco import COCO

    from ultrasam.inference.batch.masks import encode_rle

    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    images, anns = [], []
    for i in range(2):
        ph = make_phantom(seed=10 + i, size=64, kind="cyst")
        Image.fromarray(ph.image).save(root / "images" / f"im{i}.png")
        images.append({"id": 100 + i, "file_name": f"im{i}.png", "width": 64, "height": 64})
        for m in ph.masks.values():
            if m.any():
                ys, xs = np.nonzero(m)
                anns.append({"id": len(anns) + 1, "image_id": 100 + i, "category_id": 5,
                             "iscrowd": 0, "area": int(m.sum()),
                             "bbox": [int(xs.min()), int(ys.min()),
                                      int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)],
                             "segmentation": encode_rle(m)})
    gt = root / "annotations.coco.json"
    gt.write_text(json.dumps({"images": images, "annotations": anns,
                              "categories": [{"id": 5, "name": "cyst"}]}))
    for mode in ("box", "point"):
        out = tmp_path / mode
        summary = predict_batch([gt], out, checkpoint=tiny, coco_prompt=mode)
        assert summary.failed == 0 and summary.ok == 2
        results = json.loads((out / "results.coco.json").read_text())
        assert len(results) == len(anns)
        assert {r["image_id"] for r in results} == {100, 101}
        assert {r["category_id"] for r in results} == {5}
        coco_gt = COCO(str(gt))
        coco_gt.loadRes(str(out / "results.coco.json"))  # valid COCO results


def test_nifti_label_volume_puts_slices_back(tmp_path: Path, tiny: Path) -> None:
    nib = pytest.importorskip("nibabel")
    from ultrasam.io.volumes import read_nifti_slice

    vol = np.stack([_grey(20 + k, 48) for k in range(4)])
    affine = np.diag([0.5, 0.7, 2.0, 1.0])
    path = tmp_path / "vols" / "case1.nii.gz"
    path.parent.mkdir()
    nib.save(nib.Nifti1Image(np.ascontiguousarray(vol.transpose(2, 1, 0)), affine), path)
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,slice,axis,box\n"
                        'vols/case1.nii.gz,1,0,"5,5,40,40"\n'
                        'vols/case1.nii.gz,3,0,"8,8,30,30"\n'
                        'vols/case1.nii.gz,10,1,"8,8,30,30"\n')
    out = tmp_path / "out"
    summary = predict_batch([manifest], out, checkpoint=tiny, nifti_labels=True)
    assert (summary.ok, summary.failed) == (2, 1)  # slice 10 along y is out of range
    (labels_path,) = summary.label_volumes
    assert labels_path == out / "case1.labels.nii.gz"
    labels = nib.load(labels_path)
    assert labels.shape == (48, 48, 4) and np.allclose(labels.affine, affine)
    for k in (1, 3):
        mask = np.array(Image.open(out / f"case1.slice{k}.mask.png")) > 0
        plane, *_ = read_nifti_slice(labels_path, slice=k, axis=0)
        assert np.array_equal(plane == 1, mask)
    plane, *_ = read_nifti_slice(labels_path, slice=0, axis=0)
    assert not plane.any()


def test_dicom_seg_for_dicom_inputs(tmp_path: Path, tiny: Path) -> None:
    hd = pytest.importorskip("highdicom")
    dcm = _write_us_dicom(tmp_path / "in" / "us.dcm", _grey(7, 64))
    out = tmp_path / "out"
    summary = predict_batch([dcm], out, checkpoint=tiny, dicom_seg=True,
                            prompt=_box(6, 6, 50, 50))
    assert summary.ok == 1
    record = json.loads((out / "us.json").read_text())
    assert record["outputs"]["dicom_seg"] == "us.seg.dcm"
    seg = hd.seg.segread(out / "us.seg.dcm")
    mask = np.array(Image.open(out / "us.mask.png")) > 0
    frame = np.asarray(seg.pixel_array).reshape(-1, 64, 64)[0] > 0
    assert np.array_equal(frame, mask)
    src = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    import pydicom

    assert src.ReferencedSOPInstanceUID == pydicom.dcmread(dcm).SOPInstanceUID


def _box(x0: float, y0: float, x1: float, y1: float):
    from ultrasam.inference.batch import Prompt

    return Prompt(box=(x0, y0, x1, y1))


def test_non_finite_scores_are_written_as_valid_json(tmp_path: Path, tiny: Path) -> None:
    from ultrasam.inference.batch import worker

    img = tmp_path / "scan.png"
    Image.fromarray(make_phantom(seed=8, size=64).image).save(img)
    spec = worker.ModelSpec(str(tiny), None, "cpu")
    model = worker._predictor(spec).model  # the process's cached model, as a worker holds it
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        with torch.no_grad():
            for p in model.mask_decoder.iou_prediction_head.parameters():
                p.fill_(float("nan"))
        summary = predict_batch([img], tmp_path / "out", _box(5, 5, 40, 40), checkpoint=tiny)
    finally:
        model.load_state_dict(saved)
    assert summary.ok == 1
    text = (tmp_path / "out" / "scan.json").read_text()
    record = json.loads(text, parse_constant=lambda c: pytest.fail(f"invalid JSON {c}"))
    assert record["objects"][0]["scores"] == [None]
    assert any("non-finite" in w for w in record["warnings"])
    (res,) = json.loads((tmp_path / "out" / "results.coco.json").read_text(),
                        parse_constant=lambda c: pytest.fail(f"invalid JSON {c}"))
    assert res["score"] == 0.0
