"""Binding rules, the token, the bounded caches and the serve verb's refusals."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import httpx
import numpy as np
import pytest

from ultrasam.serve.lru import ByteLRU
from ultrasam.serve.settings import ServeSettings


def test_settings_refuse_a_public_bind_without_token() -> None:
    with pytest.raises(ValueError, match="refusing to bind 0.0.0.0"):
        ServeSettings(host="0.0.0.0")
    with pytest.raises(ValueError, match="token"):
        ServeSettings(host="0.0.0.0", token="short")
    with pytest.raises(ValueError, match="token"):
        ServeSettings(token="has spaces in it")
    assert ServeSettings(host="0.0.0.0", token="s3cret-token").token
    assert ServeSettings(host="::1").host == "::1"  # loopback needs no token


def test_settings_check_precision_without_torch() -> None:
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16"):
        ServeSettings(precision="fp16")
    assert ServeSettings(precision="bf16").precision == "bf16"


def test_cli_refuses_public_bind_in_one_line() -> None:
    r = subprocess.run([sys.executable, "-m", "ultrasam.cli", "serve", "--host", "0.0.0.0"],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "--token" in r.stderr


def test_token_required_everywhere(start_server: Any, files: Any) -> None:
    token = "test-token-123"
    with start_server(token=token) as url, \
            httpx.Client(base_url=url, timeout=60) as c:
        for path in ("/health", "/", "/docs", "/openapi.json", "/static/js/main.js"):
            r = c.get(path)
            assert r.status_code == 401 and "token" in r.json()["detail"], path
        assert c.get("/health", headers={"authorization": "Bearer wrong-token"}).status_code \
            == 401
        assert c.get("/health", headers={"authorization": f"Bearer {token}"}).status_code == 200
        assert c.get("/health", headers={"x-ultrasam-token": token}).status_code == 200
        page = c.get(f"/?token={token}")
        assert page.status_code == 200 and "HttpOnly" in page.headers["set-cookie"]
        # The page's own requests then carry the cookie (httpx keeps it like a browser).
        up = c.post("/api/images", files={"file": ("a.png", files.png(np.zeros((8, 8),
                                                                              np.uint8)))})
        assert up.status_code == 201
        # With a token the Host header is not restricted (the server may sit on a LAN name).
        assert c.get("/health", headers={"host": "scanner-pc.local"}).status_code == 200


def test_byte_lru_is_bounded() -> None:
    lru: ByteLRU[int, bytes] = ByteLRU(100, len)
    for k in range(10):
        lru.put(k, b"x" * 30)
    s = lru.stats()
    assert s.bytes <= 100 and s.entries == 3 and s.evictions == 7
    assert lru.get(0) is None and lru.get(9) == b"x" * 30
    lru.put(99, b"y" * 500)  # larger than the cap alone: kept, everything older dropped
    assert lru.stats().entries == 1 and lru.get(99) is not None
    grow = bytearray(b"z")
    lru.put(1, grow)
    grow.extend(b"z" * 40)
    lru.resize(1)
    assert lru.stats().bytes == 41
    assert lru.discard(lambda k: k == 1) == 1 and lru.stats().bytes == 0


def test_embedding_cache_stays_under_its_cap(start_server: Any, files: Any) -> None:
    """Frames of a cine, each embedded: the server's cache never exceeds its cap."""
    cap_mb = 0.2
    with start_server(cache_mb=cap_mb, max_images=2) as url, \
            httpx.Client(base_url=url, timeout=60) as c:
        data = files.dicom(files.cine(n=12, size=96))
        iid = c.post("/api/images", files={"file": ("c.dcm", data)}).json()["image_id"]
        for k in range(12):
            r = c.post(f"/api/images/{iid}/segment", json={"frame": k, "points": [[40, 40, 1]]})
            assert r.status_code == 200 and r.json()["embedded"]
            cache = c.get("/health").json()["cache"]
            assert cache["bytes"] <= cap_mb * 2**20
        assert cache["evictions"] > 0
        # A revisited, evicted frame is embedded again; the answer is the same.
        again = c.post(f"/api/images/{iid}/segment", json={"frame": 0, "points": [[40, 40, 1]]})
        assert again.json()["embedded"] is True
        # Only max_images images are kept; the least recently used one goes.
        ids = [c.post("/api/images", files={"file": ("p.png", files.png(
            np.full((8, 8), k, np.uint8)))}).json()["image_id"] for k in range(2)]
        assert c.get(f"/api/images/{iid}").status_code == 404
        assert all(c.get(f"/api/images/{i}").status_code == 200 for i in ids)
