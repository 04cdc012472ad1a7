"""The page in a real browser: headless Debian chromium driven by Playwright, against a live
server of the tiny random model. Checks what a user sees (the overlay's pixels) against what
the API answered, and the downloaded exports against those answers."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from ultrasam.data.coco import decode_rle
from ultrasam.data.synthetic import make_phantom

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "img" / "serve.png"


@pytest.fixture()
def page(chromium_browser: Any, base_url: str) -> Iterator[Any]:
    # bypass_csp lets Playwright evaluate its own probes; the page's policy is tested in the
    # API tests.
    context = chromium_browser.new_context(viewport={"width": 1400, "height": 860},
                                           bypass_csp=True, accept_downloads=True)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(base_url + "/")
    pg.wait_for_selector("body[data-ready='1']")
    yield pg
    context.close()
    assert not errors, errors


def _open(pg: Any, path: Path, frame: int = 0) -> dict[str, Any]:
    with pg.expect_response(lambda r: r.url.endswith("/api/images")) as upload:
        pg.set_input_files("#file-input", str(path))
    info = upload.value.json()
    pg.wait_for_selector(f"#stage[data-frame='{frame}']")
    return info


def _screen(pg: Any, info: dict[str, Any], x: float, y: float) -> tuple[float, float]:
    box = pg.locator("#ui").bounding_box()
    return (box["x"] + x * box["width"] / info["width"],
            box["y"] + y * box["height"] / info["height"])


def _idle(pg: Any) -> None:
    pg.wait_for_function("document.body.dataset.pending === '0'")


def _click(pg: Any, info: dict[str, Any], x: float, y: float, button: str = "left",
           modifiers: list[str] | None = None) -> dict[str, Any]:
    with pg.expect_response(lambda r: r.url.endswith("/segment")) as seg:
        for key in modifiers or []:
            pg.keyboard.down(key)
        pg.mouse.click(*_screen(pg, info, x, y), button=button)
        for key in modifiers or []:
            pg.keyboard.up(key)
    _idle(pg)
    return seg.value.json()


def _drag(pg: Any, info: dict[str, Any], a: tuple[float, float], b: tuple[float, float]
          ) -> dict[str, Any]:
    with pg.expect_response(lambda r: r.url.endswith("/segment")) as seg:
        pg.mouse.move(*_screen(pg, info, *a))
        pg.mouse.down()
        pg.mouse.move(*_screen(pg, info, *b), steps=5)
        pg.mouse.up()
    _idle(pg)
    return seg.value.json()


def _overlay_pixels(pg: Any) -> int:
    """Painted pixels of the mask overlay canvas (at image resolution)."""
    return int(pg.evaluate("""() => {
        const c = document.getElementById('overlay');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
        return n; }"""))


def _request_body(response: Any) -> dict[str, Any]:
    return json.loads(response.request.post_data)


def test_phantom_click_negative_box_undo_redo(page: Any, tmp_path: Path) -> None:
    phantom = make_phantom(seed=3, size=256, kind="cyst")
    path = tmp_path / "phantom.png"
    cv2.imwrite(str(path), phantom.image)
    info = _open(page, path)
    assert _overlay_pixels(page) == 0
    assert "not calibrated" in page.locator("#calibration").inner_text()
    x, y = phantom.centroid(0)

    with page.expect_response(lambda r: r.url.endswith("/segment")) as seg:
        page.mouse.click(*_screen(page, info, x, y))
    _idle(page)
    first = seg.value.json()
    assert _request_body(seg.value)["points"] == [[pytest.approx(x, abs=0.6),
                                                  pytest.approx(y, abs=0.6), 1]]
    assert first["area_px"] > 0 and _overlay_pixels(page) == first["area_px"]
    assert f"{first['area_px']} px" in page.locator("#objects").inner_text()

    with page.expect_response(lambda r: r.url.endswith("/segment")) as seg:
        page.mouse.click(*_screen(page, info, 30, 200), button="right")
    _idle(page)
    negative = seg.value.json()
    assert [p[2] for p in _request_body(seg.value)["points"]] == [1, 0]
    assert _overlay_pixels(page) == negative["area_px"]

    alt = _click(page, info, 200, 40, modifiers=["Alt"])
    assert _overlay_pixels(page) == alt["area_px"]

    boxed = _drag(page, info, (40, 40), (200, 180))
    assert boxed["area_px"] > 0 and _overlay_pixels(page) == boxed["area_px"]

    # Undo restores the previous answer without asking the server again.
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.keyboard.press("z")
    assert _overlay_pixels(page) == alt["area_px"]
    page.click("#undo")
    assert _overlay_pixels(page) == negative["area_px"]
    page.keyboard.press("y")
    assert _overlay_pixels(page) == alt["area_px"]
    page.click("#clear")
    assert _overlay_pixels(page) == 0
    page.keyboard.press("Control+z")
    assert _overlay_pixels(page) == alt["area_px"]
    assert not [u for u in requests if u.endswith("/segment")]

    # Opacity and hide change the drawing, not the mask.
    page.keyboard.press("h")
    assert _overlay_pixels(page) == 0
    page.keyboard.press("h")
    assert _overlay_pixels(page) == alt["area_px"]

    # A second object keeps its own mask and colour.
    page.keyboard.press("n")
    assert page.locator("#objects li").count() == 2
    second = _click(page, info, x, y)
    union = np.logical_or(decode_rle(alt["rle"]), decode_rle(second["rle"]))
    assert _overlay_pixels(page) == int(union.sum())


def _first_corpus_image(us_corpus: Path) -> tuple[Path, list[float]]:
    ann = json.loads((us_corpus / "BUSI" / "annotations.coco.json").read_text())
    first = min(ann["annotations"], key=lambda a: (a["image_id"], a["id"]))
    image = next(im for im in ann["images"] if im["id"] == first["image_id"])
    return us_corpus / "BUSI" / "images" / image["file_name"], first["bbox"]


def test_real_ultrasound_image(page: Any, us_corpus: Path) -> None:
    path, (bx, by, bw, bh) = _first_corpus_image(us_corpus)
    info = _open(page, path)
    assert info["format"] == "JPEG"
    answer = _click(page, info, bx + bw / 2, by + bh / 2)
    assert answer["rle"]["size"] == [info["height"], info["width"]]
    assert _overlay_pixels(page) == answer["area_px"]
    boxed = _drag(page, info, (bx, by), (bx + bw, by + bh))
    assert _overlay_pixels(page) == boxed["area_px"]


def test_cine_frames_and_exports(page: Any, files: Any, tmp_path: Path) -> None:
    frames = files.cine(n=4, size=96)
    path = tmp_path / "cine.dcm"
    path.write_bytes(files.dicom(
        frames, SequenceOfUltrasoundRegions=[files.region(0, 0, 95, 95, 0.05)]))
    info = _open(page, path)
    assert info["frames"] == 4 and page.locator("#frame-bar").is_visible()
    assert "calibrated" in page.locator("#calibration").inner_text()
    page.fill("#objects li .name", "cyst")
    page.keyboard.press("Tab")
    f0 = _click(page, info, 32, 48)
    assert f0["frame"] == 0 and "mm²" in page.locator("#objects").inner_text()

    page.locator("#stage").focus()
    page.keyboard.press("ArrowRight")
    page.wait_for_selector("#stage[data-frame='1']")
    assert page.locator("#frame-label").inner_text() == "2 / 4"
    assert _overlay_pixels(page) == 0  # nothing segmented on frame 1 yet
    f1 = _click(page, info, 36, 48)
    assert f1["frame"] == 1 and _overlay_pixels(page) == f1["area_px"]

    page.eval_on_selector("#frame-slider", "(s) => { s.value = '3'; "
                                           "s.dispatchEvent(new Event('input')); }")
    page.wait_for_selector("#stage[data-frame='3']")
    f3 = _drag(page, info, (20, 30), (70, 70))
    assert f3["frame"] == 3

    page.eval_on_selector("#frame-slider", "(s) => { s.value = '0'; "
                                           "s.dispatchEvent(new Event('input')); }")
    page.wait_for_selector("#stage[data-frame='0']")
    assert _overlay_pixels(page) == f0["area_px"]
    page.click("#play")
    page.wait_for_selector("#stage[data-frame='1']", timeout=10_000)
    page.click("#play")

    answers = {a["mask_id"]: a for a in (f0, f1, f3)}
    with page.expect_download() as dl:
        page.click("#export-coco")
    coco = json.loads(Path(dl.value.path()).read_text())
    assert [c["name"] for c in coco["categories"]] == ["cyst"]
    assert len(coco["annotations"]) == 3
    for ann in coco["annotations"]:
        answer = answers[ann["mask_id"]]
        assert ann["segmentation"] == answer["rle"]  # exported RLE == the API's answer
        frame = next(im for im in coco["images"] if im["id"] == ann["image_id"])["frame"]
        assert frame == answer["frame"]

    with page.expect_download() as dl:
        page.click("#export-csv")
    rows = list(csv.DictReader(io.StringIO(Path(dl.value.path()).read_text())))
    assert [(int(r["frame"]), int(r["area_px"])) for r in rows] == \
        [(a["frame"], a["area_px"]) for a in (f0, f1, f3)]
    assert all(float(r["area_mm2"]) == pytest.approx(int(r["area_px"]) * 0.25) for r in rows)

    with page.expect_download() as dl:
        page.click("#export-masks")
    with zipfile.ZipFile(dl.value.path()) as z:
        assert sorted(z.namelist()) == ["cyst_frame0000.png", "cyst_frame0001.png",
                                        "cyst_frame0003.png"]
        png = cv2.imdecode(np.frombuffer(z.read("cyst_frame0001.png"), np.uint8),
                           cv2.IMREAD_UNCHANGED)
    assert np.array_equal(png > 0, decode_rle(f1["rle"]))


def _go(pg: Any, frame: int) -> None:
    pg.eval_on_selector("#frame-slider", f"(s) => {{ s.value = '{frame}'; "
                                         "s.dispatchEvent(new Event('input')); }")
    pg.wait_for_selector(f"#stage[data-frame='{frame}']")


def test_propagate_and_area_curve(page: Any, files: Any, tmp_path: Path) -> None:
    path = tmp_path / "cine.dcm"
    path.write_bytes(files.dicom(files.cine(n=5, size=96)))
    info = _open(page, path)
    assert page.locator("#curve-panel").is_visible()
    _drag(page, info, (14, 30), (50, 66))
    with page.expect_response(lambda r: r.url.endswith("/propagate")) as prop:
        page.click("#propagate")
    _idle(page)
    tracked = {f["frame"]: f for f in prop.value.json()["frames"]}
    assert sorted(tracked) == [0, 1, 2, 3, 4]
    _go(page, 3)
    assert _overlay_pixels(page) == tracked[3]["area_px"]
    page.keyboard.press("z")  # one undo removes the whole propagation
    assert _overlay_pixels(page) == 0


def test_volume_axis_and_slices(page: Any, tmp_path: Path) -> None:
    nib = pytest.importorskip("nibabel")
    vol = (np.arange(40 * 30 * 8).reshape(40, 30, 8) % 253).astype(np.uint8)  # x, y, z
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(path))
    info = _open(page, path, frame=4)  # the middle slice first
    assert page.locator("#axis").is_visible()
    assert page.locator("#frame-label").inner_text() == "5 / 8"
    page.select_option("#axis", "2")
    page.wait_for_selector("#stage[data-frame='20']")  # middle of the 40 x-slices
    size = page.eval_on_selector("#frame-img", "(i) => [i.naturalWidth, i.naturalHeight]")
    assert size == [info["axes"][2]["width"], info["axes"][2]["height"]] == [30, 8]
    answer = _click(page, {"width": 30, "height": 8}, 15, 4)
    assert answer["axis"] == 2 and answer["frame"] == 20
    assert _overlay_pixels(page) == answer["area_px"]


def test_errors_are_shown_and_shortcuts_listed(page: Any, tmp_path: Path) -> None:
    bad = tmp_path / "notes.png"
    bad.write_text("not an image at all")
    page.set_input_files("#file-input", str(bad))
    page.wait_for_selector("#toast:not([hidden])")
    assert "unrecognised" in page.locator("#toast").inner_text()
    shortcuts = page.locator("#shortcuts").inner_text()
    for key in ("Right click", "Drag", "Ctrl+Z", "Space", "←"):
        assert key in shortcuts


def test_screenshot(chromium_browser: Any, base_url: str, start_server: Any, files: Any,
                    tmp_path: Path) -> None:
    """The README's picture: a calibrated phantom cine with two named objects. Written to
    docs/img/serve.png only with ULTRASAM_WRITE_SCREENSHOT=1 (test runs leave the tree alone),
    then with the bundled default model when there is one."""
    from ultrasam.weights.checkpoints import DEFAULT_MODEL_DIR

    write = os.environ.get("ULTRASAM_WRITE_SCREENSHOT") == "1"
    default = write and (DEFAULT_MODEL_DIR / "model.safetensors").is_file()
    context = chromium_browser.new_context(viewport={"width": 1280, "height": 760},
                                           bypass_csp=True)
    pg = context.new_page()
    server = start_server(default_model=True) if default else contextlib.nullcontext(base_url)
    with server as url:
        pg.goto(url + "/")
        pg.wait_for_selector("body[data-ready='1']")
        phantom = make_phantom(seed=11, size=320, kind="mixed")
        stack = np.stack([phantom.image] * 3)
        path = tmp_path / "phantom_cine.dcm"
        path.write_bytes(files.dicom(
            stack, SequenceOfUltrasoundRegions=[files.region(0, 0, 319, 319, 0.015)]))
        info = _open(pg, path)
        pg.fill("#objects li .name", "cyst")
        pg.keyboard.press("Tab")
        ys, xs = np.nonzero(phantom.masks["cyst"])
        _drag(pg, info, (xs.min() - 2, ys.min() - 2), (xs.max() + 3, ys.max() + 3))
        pg.click("#add-object")
        pg.fill("#objects li:nth-child(2) .name", "lesion")
        pg.keyboard.press("Tab")
        _click(pg, info, *phantom.centroid("hyperechoic_lesion"))
        with pg.expect_response(lambda r: r.url.endswith("/propagate")):
            pg.click("#propagate")
        _idle(pg)
        pg.wait_for_selector("#toast", state="hidden", timeout=10_000)
        out = tmp_path / "serve.png"
        pg.screenshot(path=str(out))
    context.close()
    assert out.stat().st_size > 10_000
    if write:
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        SCREENSHOT.write_bytes(out.read_bytes())
