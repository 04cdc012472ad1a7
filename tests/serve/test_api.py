"""The HTTP API over real HTTP (uvicorn on loopback, tiny random model): answers, and a clear
4xx JSON error for every bad request."""

from __future__ import annotations

import csv
import gzip
import io
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from ultrasam.data.coco import decode_rle
from ultrasam.data.synthetic import make_phantom


def _upload(client: httpx.Client, data: bytes, name: str = "image.png") -> httpx.Response:
    return client.post("/api/images", files={"file": (name, data, "application/octet-stream")})


def _error(r: httpx.Response, status: int, *words: str) -> str:
    """The response is ``status`` with a one-line JSON ``detail`` containing ``words``."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail
    for w in words:
        assert w.lower() in detail.lower(), detail
    return detail


@pytest.fixture()
def phantom_id(client: httpx.Client, files: Any) -> str:
    r = _upload(client, files.png(make_phantom(seed=1, size=128).image))
    assert r.status_code == 201, r.text
    return r.json()["image_id"]


# ----------------------------------------------------------------------------- answers
def test_health_names_the_model(client: httpx.Client) -> None:
    h = client.get("/health").json()
    assert h["status"] == "ok"
    assert h["model"]["variant"] == "tiny" and h["model"]["name"] == "ckpt"
    assert h["model"]["parameters"] > 0 and h["tracking"] is True


def test_upload_segment_roundtrip(client: httpx.Client, files: Any) -> None:
    phantom = make_phantom(seed=2, size=160)
    r = _upload(client, files.png(phantom.image), "scan.png")
    assert r.status_code == 201
    info = r.json()
    assert (info["width"], info["height"], info["frames"]) == (160, 160, 1)
    assert info["format"] == "PNG" and info["kind"] == "image"
    assert info["spacing_mm"] is None and info["calibration"] == "uncalibrated"
    assert len(info["image_id"]) >= 22  # 128 random bits
    x, y = phantom.centroid(0)
    first = client.post(f"/api/images/{info['image_id']}/segment",
                        json={"frame": 0, "points": [[x, y, 1]], "box": None, "refine": False})
    assert first.status_code == 200, first.text
    a = first.json()
    mask = decode_rle(a["rle"])
    assert mask.shape == (160, 160) and a["rle"]["size"] == [160, 160]
    assert int(mask.sum()) == a["area_px"] > 0
    assert a["area_mm2"] is None and a["calibrated"] is False and "pixels" in a["note"]
    assert a["diameter_px"] >= np.sqrt(2) and a["embedded"] is True
    # The second prompt on the same frame reuses the cached embedding.
    second = client.post(f"/api/images/{info['image_id']}/segment",
                         json={"points": [[x, y, 1], [5, 5, 0]], "box": [2, 2, 150, 150],
                               "refine": True}).json()
    assert second["embedded"] is False and second["mask_id"] != a["mask_id"]


def test_content_not_name_decides_the_type(client: httpx.Client, files: Any) -> None:
    r = _upload(client, files.png(np.zeros((8, 8), np.uint8)), "looks_like.dcm")
    assert r.status_code == 201 and r.json()["format"] == "PNG"


def test_calibrated_dicom_cine(client: httpx.Client, files: Any) -> None:
    frames = files.cine(n=4, size=96)
    data = files.dicom(frames, SequenceOfUltrasoundRegions=[files.region(0, 0, 95, 95, 0.02)])
    info = _upload(client, data, "cine.dcm").json()
    assert info["format"] == "DICOM" and info["kind"] == "cine" and info["frames"] == 4
    assert info["calibration"] == "calibrated"
    assert info["spacing_mm"] == pytest.approx([0.2, 0.2])
    iid = info["image_id"]
    pngs = [client.get(f"/api/images/{iid}/frames/{k}") for k in (0, 3)]
    assert all(p.status_code == 200 and p.headers["content-type"] == "image/png" for p in pngs)
    shown = [cv2.imdecode(np.frombuffer(p.content, np.uint8), cv2.IMREAD_GRAYSCALE)
             for p in pngs]
    assert np.array_equal(shown[0], frames[0]) and np.array_equal(shown[1], frames[3])
    a = client.post(f"/api/images/{iid}/segment",
                    json={"frame": 3, "box": [10, 10, 80, 80]}).json()
    assert a["frame"] == 3 and a["calibrated"] is True
    assert a["area_mm2"] == pytest.approx(a["area_px"] * 0.04)
    assert a["diameter_mm"] == pytest.approx(a["diameter_px"] * 0.2, rel=1e-5)


def test_nifti_volume_axes(client: httpx.Client, tmp_path: Path) -> None:
    nib = pytest.importorskip("nibabel")
    vol = (np.arange(20 * 24 * 6).reshape(20, 24, 6) % 251).astype(np.uint8)  # x, y, z
    img = nib.Nifti1Image(vol, np.diag([0.5, 0.25, 2.0, 1.0]))
    img.header.set_xyzt_units("mm")
    path = tmp_path / "v.nii.gz"
    nib.save(img, str(path))
    info = _upload(client, path.read_bytes(), "v.nii.gz").json()
    assert info["kind"] == "volume" and info["format"] == "NIFTI"
    assert [(a["frames"], a["width"], a["height"]) for a in info["axes"]] == \
        [(6, 20, 24), (24, 20, 6), (20, 24, 6)]
    assert info["default_frame"] == 3 and info["spacing_mm"] == pytest.approx([0.25, 0.5])
    a = client.post(f"/api/images/{info['image_id']}/segment",
                    json={"axis": 2, "frame": 7, "points": [[10, 3, 1]]}).json()
    assert a["rle"]["size"] == [6, 24] and a["axis"] == 2


def test_ids_are_random_and_client_names_never_reach_the_disk(
        client: httpx.Client, files: Any, base_url: str) -> None:
    data = files.png(np.zeros((8, 8), np.uint8))
    ids = {_upload(client, data, "../../etc/passwd").json()["image_id"] for _ in range(3)}
    assert len(ids) == 3
    info = client.get(f"/api/images/{ids.pop()}").json()
    assert info["name"] == "passwd"  # a label only


def test_delete(client: httpx.Client, phantom_id: str) -> None:
    assert client.delete(f"/api/images/{phantom_id}").status_code == 204
    _error(client.delete(f"/api/images/{phantom_id}"), 404, "no image")
    _error(client.post(f"/api/images/{phantom_id}/segment", json={"points": [[1, 1, 1]]}),
           404, "no image")
    _error(client.get(f"/api/images/{phantom_id}/frames/0"), 404)


# ------------------------------------------------------------------------ bad uploads
def test_upload_errors(client: httpx.Client, files: Any) -> None:
    _error(_upload(client, b""), 422, "empty")
    _error(_upload(client, b"just some text, not an image"), 415, "unrecognised")
    _error(client.post("/api/images", data={"other": "x"}), 422, "file")
    good = files.png(make_phantom(seed=0, size=64).image)
    _error(_upload(client, good[: len(good) // 2]), 422, "PNG")  # truncated after the header
    _error(_upload(client, b"\x00" * (3 << 20)), 413, "limit")  # server limit: 2 MiB


def test_streamed_body_over_the_limit(client: httpx.Client, phantom_id: str) -> None:
    """Without Content-Length (chunked), the body is counted as it arrives."""
    def chunks(n: int, head: bytes = b"") -> Any:
        yield head
        for _ in range(n):
            yield b"\x00" * (1 << 20)

    boundary = b"xyz"
    head = (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; '
            b'filename="a.png"\r\nContent-Type: image/png\r\n\r\n')
    r = client.post("/api/images", content=chunks(3, head),
                    headers={"content-type": "multipart/form-data; boundary=xyz"})
    _error(r, 413, "limit")
    r = client.post(f"/api/images/{phantom_id}/segment", content=chunks(2, b'{"points": "'),
                    headers={"content-type": "application/json"})
    _error(r, 413, "limit")


def test_decompression_bombs_refused_from_headers(client: httpx.Client, files: Any) -> None:
    # 1500 x 1500 zeros compress to a few KiB but exceed the 2,000,000-pixel limit.
    _error(_upload(client, files.png(np.zeros((1500, 1500), np.uint8))), 413, "pixels")
    # A DICOM header declaring huge frames (pixel data absent: never read).
    bomb = files.dicom(np.zeros((1, 4, 4), np.uint8))
    from pydicom import dcmread

    ds = dcmread(io.BytesIO(bomb))
    ds.Rows = ds.Columns = 4000
    buf = io.BytesIO()
    ds.save_as(buf)
    _error(_upload(client, buf.getvalue(), "x.dcm"), 413, "pixels")
    _error(_upload(client, files.dicom(np.zeros((65, 4, 4), np.uint8))), 413, "frames")
    # NIfTI header declaring 800 MB.
    hdr = _nifti_header((1000, 1000, 400), datatype=4, bitpix=16)
    _error(_upload(client, gzip.compress(hdr + b"\x00" * 4)), 413, "MiB")
    # MetaImage whose compressed payload inflates beyond its declared size.
    payload = zlib.compress(b"\x00" * (4 << 20))
    mha = (b"ObjectType = Image\nNDims = 2\nDimSize = 4 4\nElementType = MET_UCHAR\n"
           b"CompressedData = True\nElementDataFile = LOCAL\n") + payload
    _error(_upload(client, mha), 413, "inflates")


def _nifti_header(shape: tuple[int, ...], datatype: int, bitpix: int) -> bytes:
    hdr = bytearray(352)
    struct.pack_into("<i", hdr, 0, 348)
    dims = [len(shape), *shape] + [1] * (7 - len(shape))
    struct.pack_into("<8h", hdr, 40, *dims)
    struct.pack_into("<hh", hdr, 70, datatype, bitpix)
    struct.pack_into("<8f", hdr, 76, *([1.0] * 8))
    struct.pack_into("<f", hdr, 108, 352.0)
    hdr[344:348] = b"n+1\x00"
    return bytes(hdr)


def test_metaimage_may_not_name_another_file(client: httpx.Client, tmp_path: Path) -> None:
    mhd = (b"ObjectType = Image\nNDims = 2\nDimSize = 4 4\nElementType = MET_UCHAR\n"
           b"ElementDataFile = ../../../../etc/hostname\n")
    _error(_upload(client, mhd, "x.mhd"), 422, "LOCAL")
    inline = (b"ObjectType = Image\nNDims = 2\nDimSize = 4 3\nElementType = MET_UCHAR\n"
              b"ElementSpacing = 0.5 0.25\nElementDataFile = LOCAL\n") + bytes(range(12))
    info = _upload(client, inline, "x.mha").json()
    assert info["format"] == "METAIMAGE" and (info["width"], info["height"]) == (4, 3)


# ----------------------------------------------------------------------- bad prompts
@pytest.mark.parametrize("body, words", [
    ({}, ["no prompt"]),
    ({"points": [[10, 10, 2]]}, ["points.0.2"]),
    ({"points": [[500, 10, 1]]}, ["outside"]),
    ({"points": [[10, 10]]}, ["points.0"]),
    ({"box": [50, 50, 10, 10]}, ["x1 > x0"]),
    ({"box": [0, 0, 10]}, ["box"]),
    ({"points": [[1, 1, 1]], "frame": 3}, ["frame 3", "0..0"]),
    ({"points": [[1, 1, 1]], "axis": 1}, ["axis 1"]),
    ({"points": [[1, 1, 1]], "axis": 7}, ["axis"]),
    ({"points": [[1, 1, 1]], "frame": -1}, ["frame"]),
    ({"points": [[1, 1, 1]], "colour": "red"}, ["colour"]),
    ({"points": [[1, 1, 1]] * 300}, ["points"]),
    ({"points": "10,10"}, ["points"]),
])
def test_segment_errors(client: httpx.Client, phantom_id: str, body: dict[str, Any],
                        words: list[str]) -> None:
    _error(client.post(f"/api/images/{phantom_id}/segment", json=body), 422, *words)


def test_segment_raw_body_errors(client: httpx.Client, phantom_id: str) -> None:
    url = f"/api/images/{phantom_id}/segment"
    headers = {"content-type": "application/json"}
    _error(client.post(url, content=b'{"points": [[NaN, 1, 1]]}', headers=headers), 422)
    _error(client.post(url, content=b"{not json", headers=headers), 422)
    _error(client.post(url, content=b'{"points": [[1, 1, 1]], "pad": "' + b"x" * (2 << 20)
                       + b'"}', headers=headers), 413, "limit")
    _error(client.post("/api/images/not-an-id!/segment", json={"points": [[1, 1, 1]]}), 422)
    _error(client.post("/api/images/AAAAAAAAAAAAAAAAAAAAAA/segment",
                       json={"points": [[1, 1, 1]]}), 404, "no image")
    _error(client.get(f"/api/images/{phantom_id}/frames/5"), 422, "out of range")
    _error(client.get("/api/nothing-here"), 404)
    _error(client.put(url, json={}), 405)


# ------------------------------------------------------------------------------ exports
def _segment(client: httpx.Client, iid: str, **body: Any) -> dict[str, Any]:
    r = client.post(f"/api/images/{iid}/segment", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_exports_hold_the_api_answers(client: httpx.Client, files: Any) -> None:
    iid = _upload(client, files.dicom(files.cine(n=3, size=64)), "c.dcm").json()["image_id"]
    a0 = _segment(client, iid, frame=0, points=[[20, 30, 1]])
    a2 = _segment(client, iid, frame=2, box=[5, 5, 50, 40])
    b0 = _segment(client, iid, frame=0, points=[[40, 20, 1], [10, 10, 0]])
    objects = [{"name": "=cyst", "color": "#ff0000", "masks": [a0["mask_id"], a2["mask_id"]]},
               {"name": "wall", "color": "#00ff00", "masks": [b0["mask_id"]]}]
    coco = client.post(f"/api/images/{iid}/export/coco", json={"objects": objects})
    assert coco.status_code == 200
    assert "attachment" in coco.headers["content-disposition"]
    doc = coco.json()
    assert [c["name"] for c in doc["categories"]] == ["=cyst", "wall"]
    assert sorted(im["frame"] for im in doc["images"]) == [0, 2]
    by_mask = {ann["mask_id"]: ann for ann in doc["annotations"]}
    for answer in (a0, a2, b0):
        ann = by_mask[answer["mask_id"]]
        assert ann["segmentation"] == answer["rle"] and ann["area"] == answer["area_px"]
    rows = list(csv.DictReader(io.StringIO(
        client.post(f"/api/images/{iid}/export/csv", json={"objects": objects}).text)))
    assert [r["object"] for r in rows] == ["'=cyst", "'=cyst", "wall"]  # no formula injection
    assert [int(r["area_px"]) for r in rows] == [a0["area_px"], a2["area_px"], b0["area_px"]]
    z = zipfile.ZipFile(io.BytesIO(
        client.post(f"/api/images/{iid}/export/masks", json={"objects": objects}).content))
    assert sorted(z.namelist()) == ["cyst_frame0000.png", "cyst_frame0002.png",
                                    "wall_frame0000.png"]
    png = cv2.imdecode(np.frombuffer(z.read("cyst_frame0002.png"), np.uint8),
                       cv2.IMREAD_UNCHANGED)
    assert np.array_equal(png > 0, decode_rle(a2["rle"]))


def test_export_errors(client: httpx.Client, phantom_id: str) -> None:
    a = _segment(client, phantom_id, points=[[20, 20, 1]])
    b = _segment(client, phantom_id, points=[[30, 20, 1]])
    url = f"/api/images/{phantom_id}/export"
    obj = {"name": "x", "color": "#123456", "masks": [a["mask_id"]]}
    _error(client.post(f"{url}/coco", json={"objects": [{**obj, "masks": ["nope"]}]}), 404,
           "no mask")
    _error(client.post(f"{url}/coco", json={"objects": [{**obj, "masks": [a["mask_id"],
                                                                         b["mask_id"]]}]}),
           422, "two masks")
    _error(client.post(f"{url}/pdf", json={"objects": [obj]}), 422, "kind")
    _error(client.post(f"{url}/csv", json={"objects": []}), 422, "objects")
    _error(client.post(f"{url}/csv", json={"objects": [{**obj, "color": "red"}]}), 422, "color")
    _error(client.post(f"{url}/csv", json={"objects": [{**obj, "name": ""}]}), 422, "name")


# ------------------------------------------------------------------------ guard: host
def test_loopback_server_refuses_foreign_host_and_origin(client: httpx.Client,
                                                         phantom_id: str) -> None:
    _error(client.get("/health", headers={"host": "attacker.example"}), 400, "loopback")
    _error(client.post(f"/api/images/{phantom_id}/segment", json={"points": [[1, 1, 1]]},
                       headers={"origin": "http://attacker.example"}), 403, "cross-origin")
    page = client.get("/")
    assert page.status_code == 200 and "script-src 'self'" in page.headers[
        "content-security-policy"]
    assert client.get("/docs").status_code == 200
    assert "/api/images/{image_id}/segment" in client.get("/openapi.json").json()["paths"]


# ---------------------------------------------------------------------------- tracking
def test_propagate_through_a_cine(client: httpx.Client, files: Any) -> None:
    iid = _upload(client, files.dicom(files.cine(n=5, size=64)), "c.dcm").json()["image_id"]
    assert client.get("/health").json()["tracking"] is True
    r = client.post(f"/api/images/{iid}/propagate",
                    json={"prompts": [{"frame": 1, "box": [8, 20, 40, 44]}]})
    assert r.status_code == 200, r.text
    frames = r.json()["frames"]
    assert [f["frame"] for f in frames] == [0, 1, 2, 3, 4]
    assert [f["prompted"] for f in frames] == [False, True, False, False, False]
    for f in frames:
        assert int(decode_rle(f["rle"]).sum()) == f["area_px"]
    # The tracked masks are the server's masks: they export like any other.
    coco = client.post(f"/api/images/{iid}/export/coco", json={"objects": [
        {"name": "cyst", "masks": [f["mask_id"] for f in frames]}]}).json()
    assert [a["segmentation"] for a in coco["annotations"]] == [f["rle"] for f in frames]
    url = f"/api/images/{iid}/propagate"
    _error(client.post(url, json={"prompts": []}), 422, "prompts")
    _error(client.post(url, json={"prompts": [{"frame": 9, "box": [1, 1, 5, 5]}]}), 422,
           "frame 9")
    _error(client.post(url, json={"prompts": [{"frame": 0}]}), 422, "no point")
    _error(client.post(url, json={"prompts": [{"frame": 3, "box": [1, 1, 5, 5]}],
                                  "range": [0, 2]}), 422, "outside the range")
    _error(client.post(url, json={"prompts": [{"frame": 0, "box": [1, 1, 500, 5]}]}), 422,
           "outside")


def test_health_counts_the_parameters_before_bf16_folding() -> None:
    # The bf16 worker folds BatchNorm into the convolutions (fewer parameters in memory); the
    # page must still show the checkpoint's own count.
    import torch

    from ultrasam.config import get_config
    from ultrasam.modeling import build_model
    from ultrasam.serve.app import create_app
    from ultrasam.serve.settings import ServeSettings

    from .conftest import running

    model = build_model(get_config("fusion", img_size=64, conv_dims=(8, 16, 16, 16),
                                   conv_depths=(1, 1, 1, 1), prompt_embed_dim=16,
                                   iou_head_hidden_dim=16)).eval()
    n = sum(p.numel() for p in model.parameters())
    app = create_app(model, ServeSettings(model_threads=1, precision="bf16"))
    with running(app) as url:
        h = httpx.get(f"{url}/health").json()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # folded
    assert h["worker"]["precision"] == "bf16" and h["model"]["parameters"] == n
