"""to_rgb_uint8 conversion rules and load_image on files generated in tmp_path."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ultrasam.io import LoadedImage, load_image, to_rgb_uint8
from ultrasam.io.images import ybr_full_to_rgb

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (24, 32, 3), dtype=np.uint8)
GREY = RNG.integers(0, 256, (24, 32), dtype=np.uint8)


# --------------------------------------------------------------------------- array rules


def test_grey_is_replicated_and_rgb_kept_as_a_copy() -> None:
    out = to_rgb_uint8(GREY)
    assert out.shape == (24, 32, 3) and out.dtype == np.uint8
    assert all(np.array_equal(out[..., c], GREY) for c in range(3))
    assert np.array_equal(to_rgb_uint8(GREY[..., None]), out)
    rgb = to_rgb_uint8(RGB)
    assert np.array_equal(rgb, RGB) and not np.shares_memory(rgb, RGB)
    assert np.array_equal(to_rgb_uint8(RGB, color_space="BGR"), RGB[..., ::-1])


def test_bool_maps_to_black_and_white() -> None:
    m = np.zeros((4, 5), bool)
    m[1, 2] = True
    out = to_rgb_uint8(m)
    assert out[1, 2].tolist() == [255, 255, 255] and out.sum() == 3 * 255


def test_uint16_is_min_max_scaled() -> None:
    a = np.array([[1000, 2000], [3000, 1500]], np.uint16)
    out = to_rgb_uint8(a)[..., 0]
    assert out.tolist() == [[0, 128], [255, 64]]
    assert to_rgb_uint8(np.full((3, 3), 700, np.int32)).max() == 0  # constant -> 0


def test_float_rules() -> None:
    unit = np.array([[0.0, 0.5], [0.25, 0.4]], np.float32)
    assert to_rgb_uint8(unit)[..., 0].tolist() == [[0, 128], [64, 102]]  # x255, not stretched
    wide = np.array([[-1.0, 0.0], [1.0, 3.0]])
    assert to_rgb_uint8(wide)[..., 0].tolist() == [[0, 64], [128, 255]]  # min-max
    for bad in (np.nan, np.inf, -np.inf):
        a = unit.copy()
        a[0, 1] = bad
        with pytest.raises(ValueError, match="non-finite"):
            to_rgb_uint8(a)


def test_rgba_is_composited_on_black() -> None:
    rgba = np.concatenate([RGB, np.full((24, 32, 1), 255, np.uint8)], axis=2)
    assert np.array_equal(to_rgb_uint8(rgba), RGB)  # opaque == dropped alpha
    rgba[..., 3] = 0
    assert to_rgb_uint8(rgba).max() == 0
    rgba[..., :3] = 200
    rgba[..., 3] = 128
    assert np.all(to_rgb_uint8(rgba) == 100)


def test_ybr_matches_pydicom_conversion() -> None:
    pixels = pytest.importorskip("pydicom.pixels")
    ybr = RNG.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    ours = to_rgb_uint8(ybr, color_space="YBR_FULL_422")
    theirs = pixels.convert_color_space(ybr.copy(), "YBR_FULL", "RGB")
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1
    assert np.array_equal(ybr_full_to_rgb(ybr), ours)
    grey_ybr = np.stack([GREY, np.full_like(GREY, 128), np.full_like(GREY, 128)], axis=2)
    assert np.array_equal(to_rgb_uint8(grey_ybr, color_space="YBR_FULL")[..., 1], GREY)


@pytest.mark.parametrize("array, match", [
    (np.zeros((0, 5), np.uint8), "empty"),
    (np.zeros((1, 1), np.uint8), "too small"),
    (np.zeros((1, 40), np.uint8), "too small"),
    (np.zeros((2, 3, 4, 5), np.uint8), "4 dimensions"),
    (np.zeros(7, np.uint8), "1 dimensions"),
    (np.zeros((8, 8, 2), np.uint8), "channels, got 2"),
    (np.zeros((3, 16, 16), np.uint8), "channels-first"),
    (np.zeros((4, 4), complex), "complex"),
    (np.array([["a", "b"], ["c", "d"]]), "non-numeric"),
    (np.zeros((4, 4), object), "non-numeric"),
])
def test_unusable_arrays_are_rejected(array: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        to_rgb_uint8(array)


def test_non_arrays_are_type_errors() -> None:
    for bad in ([[1, 2], [3, 4]], None, "image.png", 3.0):
        with pytest.raises(TypeError, match="numpy array or a PIL image"):
            to_rgb_uint8(bad)
    with pytest.raises(ValueError, match="color_space"):
        to_rgb_uint8(RGB, color_space="HSV")


def test_pil_modes() -> None:
    pal = Image.fromarray(GREY).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    expected = np.array(pal.convert("RGB"))
    assert np.array_equal(to_rgb_uint8(pal), expected)
    la = Image.fromarray(np.stack([GREY, np.zeros_like(GREY)], axis=2), "LA")
    assert to_rgb_uint8(la).max() == 0  # fully transparent grey -> black
    cmyk = Image.fromarray(RGB).convert("CMYK")
    assert np.array_equal(to_rgb_uint8(cmyk), np.array(cmyk.convert("RGB")))
    one = Image.fromarray(GREY > 128).convert("1")
    assert set(np.unique(to_rgb_uint8(one))) <= {0, 255}
    f = Image.fromarray(np.linspace(0, 1, 24 * 32, dtype=np.float32).reshape(24, 32), "F")
    assert to_rgb_uint8(f)[-1, -1, 0] == 255


# --------------------------------------------------------------------------- files


def _save(img: Image.Image, path: Path, **kw: object) -> Path:
    img.save(path, **kw)
    return path


def test_png_jpeg_bmp_gif_roundtrip(tmp_path: Path) -> None:
    for fmt, ext in (("PNG", "png"), ("BMP", "bmp")):
        li = load_image(_save(Image.fromarray(RGB), tmp_path / f"a.{ext}"))
        assert isinstance(li, LoadedImage) and np.array_equal(li.rgb, RGB)
        assert li.meta["format"] == fmt and li.spacing_mm is None and li.warnings == []
    li = load_image(_save(Image.fromarray(GREY), tmp_path / "g.jpg", quality=95))
    assert li.rgb.shape == (24, 32, 3) and np.abs(li.rgb[..., 0].astype(int) - GREY).mean() < 8
    li = load_image(str(_save(Image.fromarray(GREY), tmp_path / "g.gif")))
    assert li.meta["format"] == "GIF" and li.rgb.shape == (24, 32, 3)


def test_format_comes_from_content_not_extension(tmp_path: Path) -> None:
    path = _save(Image.fromarray(RGB), tmp_path / "really_a_png.jpg", format="PNG")
    li = load_image(path)
    assert li.meta["format"] == "PNG" and np.array_equal(li.rgb, RGB)


def test_rgba_and_palette_png(tmp_path: Path) -> None:
    rgba = np.concatenate([RGB, np.zeros((24, 32, 1), np.uint8)], axis=2)
    rgba[:12, :, 3] = 255
    li = load_image(_save(Image.fromarray(rgba, "RGBA"), tmp_path / "rgba.png"))
    assert np.array_equal(li.rgb[:12], RGB[:12]) and li.rgb[12:].max() == 0
    pal = Image.fromarray(GREY).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    li = load_image(_save(pal, tmp_path / "pal.png"))
    assert li.meta["mode"] == "P"
    assert np.array_equal(li.rgb, np.array(pal.convert("RGB")))


def test_sixteen_bit_multipage_tiff(tmp_path: Path) -> None:
    pages = [np.full((20, 30), 100 * (k + 1), np.uint16) for k in range(3)]
    for p in pages:
        p[:10] += 1000
    imgs = [Image.fromarray(p) for p in pages]
    path = tmp_path / "stack.tif"
    imgs[0].save(path, save_all=True, append_images=imgs[1:])
    li = load_image(path, frame=2)
    assert li.meta["n_frames"] == 3 and li.meta["frame"] == 2 and li.warnings == []
    assert li.rgb[:10].min() == 255 and li.rgb[10:].max() == 0  # min-max of page 2 alone
    default = load_image(path)
    assert default.meta["frame"] == 0 and "3 frames" in default.warnings[0]
    with pytest.raises(ValueError, match=r"valid frames are 0\.\.2"):
        load_image(path, frame=3)
    with pytest.raises(ValueError, match="volumes"):
        load_image(path, slice=1)


def test_sixteen_bit_png(tmp_path: Path) -> None:
    a = np.linspace(4000, 8000, 24 * 32).reshape(24, 32).astype(np.uint16)
    li = load_image(_save(Image.fromarray(a), tmp_path / "deep.png"))
    assert li.rgb[0, 0, 0] == 0 and li.rgb[-1, -1, 0] == 255


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF", "BMP", "GIF"])
def test_truncated_files_are_clear_value_errors(tmp_path: Path, fmt: str) -> None:
    buf = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ValueError, match=f"{fmt}.*cut.*(truncated|corrupt)"):
        load_image(path)


def test_corrupt_unknown_empty_and_missing_files(tmp_path: Path) -> None:
    bad_png = tmp_path / "bad.png"
    bad_png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    with pytest.raises(ValueError, match="bad.png"):
        load_image(bad_png)
    unknown = tmp_path / "notes.png"
    unknown.write_bytes(b"hello, this is text\n" * 10)
    with pytest.raises(ValueError, match="unrecognised image format"):
        load_image(unknown)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load_image(empty)
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ValueError, match="directory"):
        load_image(tmp_path)
    tiny = _save(Image.fromarray(np.zeros((1, 1), np.uint8)), tmp_path / "one.png")
    with pytest.raises(ValueError, match="too small"):
        load_image(tiny)


def test_arrays_pass_through_load_image() -> None:
    li = load_image(GREY)
    assert li.source == "array" and li.rgb.shape == (24, 32, 3)
    assert load_image(Image.fromarray(RGB)).source == "PIL.Image"
    with pytest.raises(ValueError, match="files only"):
        load_image(GREY, frame=1)
    with pytest.raises(TypeError):
        load_image(b"\x89PNG")


def test_real_tiff_and_gif_samples(native_samples: Path) -> None:
    tif = sorted((native_samples / "NERVE").rglob("*.tif"))[0]
    gif = sorted((native_samples / "DDTI").rglob("*.gif"))[0]
    for path in (tif, gif):
        li = load_image(path)
        ref = np.array(Image.open(path).convert("RGB"))
        assert np.array_equal(li.rgb, ref), path.name
