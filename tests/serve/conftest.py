"""Fixtures for the serve tests: a tiny random model saved as a checkpoint, live servers on
loopback (uvicorn in a thread; real HTTP), and a headless Chromium driven by Playwright."""

from __future__ import annotations

import contextlib
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="ultrasam[serve] is not installed")
uvicorn = pytest.importorskip("uvicorn", reason="ultrasam[serve] is not installed")
httpx = pytest.importorskip("httpx", reason="httpx is not installed (dev extra)")

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded random tiny model in the native folder format (what --checkpoint takes)."""
    import torch

    from ultrasam.modeling import build_model
    from ultrasam.weights.checkpoints import save_native

    torch.manual_seed(0)
    return save_native(build_model("tiny").eval(), tmp_path_factory.mktemp("tiny") / "ckpt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running(app: object, port: int | None = None) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 in a background thread; yields its base URL."""
    port = port or _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def make_app(checkpoint: Path | None, **settings: object) -> object:
    """The app of ``checkpoint`` (None: the bundled default model)."""
    from ultrasam.serve.app import create_app
    from ultrasam.serve.settings import ServeSettings
    from ultrasam.weights.checkpoints import load_model

    return create_app(load_model(checkpoint), ServeSettings(**settings),  # type: ignore[arg-type]
                      checkpoint)


@pytest.fixture(scope="session")
def base_url(tiny_checkpoint: Path) -> Iterator[str]:
    """One shared server with small limits, so limit tests need only small files."""
    app = make_app(tiny_checkpoint, max_upload_mb=2.0, max_frame_pixels=2_000_000,
                   max_decoded_mb=8.0, max_frames=64, cache_mb=64.0)
    with running(app) as url:
        yield url


@pytest.fixture()
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=60) as c:
        yield c


@pytest.fixture(scope="session")
def chromium_browser() -> Iterator[object]:
    """Headless Debian chromium (Playwright's own browser download cannot work here)."""
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is not installed (dev extra)")
    exe = CHROMIUM if CHROMIUM.exists() else shutil.which("chromium")
    if not exe:
        pytest.skip("chromium not found at /usr/bin/chromium (.ci/run installs it with apt-get)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(exe), headless=True)
        yield browser
        browser.close()


# ------------------------------------------------------------------------- file factories
def png_bytes(image: object) -> bytes:
    import cv2
    import numpy as np

    ok, data = cv2.imencode(".png", np.asarray(image))
    assert ok
    return data.tobytes()


def dicom_bytes(frames: object, **elements: object) -> bytes:
    """An uncompressed ultrasound DICOM: ``frames`` N x H x W uint8 (N > 1 makes a cine)."""
    import io

    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    pixels = np.ascontiguousarray(frames, dtype=np.uint8)
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"  # US Multi-frame Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.NumberOfFrames = pixels.shape[0]
    ds.Rows, ds.Columns = pixels.shape[1:3]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    for key, value in elements.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def us_region(x0: int, y0: int, x1: int, y1: int, delta_cm: float) -> object:
    """One calibrated ultrasound region (cm units) for SequenceOfUltrasoundRegions."""
    from pydicom.dataset import Dataset

    r = Dataset()
    r.RegionLocationMinX0, r.RegionLocationMinY0 = x0, y0
    r.RegionLocationMaxX1, r.RegionLocationMaxY1 = x1, y1
    r.PhysicalUnitsXDirection = r.PhysicalUnitsYDirection = 3
    r.PhysicalDeltaX = r.PhysicalDeltaY = delta_cm
    r.RegionSpatialFormat, r.RegionDataType = 1, 1
    return r


def moving_phantom_cine(n: int = 4, size: int = 96) -> object:
    """N x size x size uint8: a phantom whose dark cyst moves right by 4 px a frame."""
    import numpy as np

    from ultrasam.data.synthetic import make_phantom

    base = make_phantom(seed=5, size=size, geometry="linear", kind="layered").image
    yy, xx = np.mgrid[:size, :size]
    frames = []
    for k in range(n):
        f = base.copy()
        f[(yy - size // 2) ** 2 + (xx - size // 3 - 4 * k) ** 2 < (size // 8) ** 2] = 5
        frames.append(f)
    return np.stack(frames)


@pytest.fixture(scope="session")
def files() -> object:
    """The factories above, for tests (pytest's importlib mode has no sibling imports)."""
    import types

    return types.SimpleNamespace(png=png_bytes, dicom=dicom_bytes, region=us_region,
                                 cine=moving_phantom_cine)


@pytest.fixture(scope="session")
def start_server(tiny_checkpoint: Path) -> object:
    """``with start_server(**settings) as url:`` a fresh server of the tiny model
    (``start_server(default_model=True)``: of the bundled default model)."""

    def start(default_model: bool = False, **settings: object
              ) -> contextlib.AbstractContextManager[str]:
        return running(make_app(None if default_model else tiny_checkpoint, **settings))

    return start
