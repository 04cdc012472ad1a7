"""Serving limits and binding: one frozen dataclass, validated once."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from ultrasam.inference.precision import check_precision  # torch-free at import

# Prompts per decoder call. FusionNet costs the same per prompt at any batch size on a CPU
# (~25 ms in bf16 on one thread), so a big batch only makes its first prompts wait for its
# last: with 16 users on 2 cores, 4 gave both the highest throughput and the lowest p95
# (interleaved runs: 62-69 req/s, p95 245-309 ms; 8: 56-58, 372-380; 16: 56-61, 389-416;
# 1: 50-52, 353-355, per-call overhead), and it bounds the activations' memory.
DEFAULT_MAX_BATCH = 4

MIB = 1 << 20
# URL- and cookie-safe, so it can travel in ?token= and the session cookie unescaped.
_TOKEN = re.compile(r"^[A-Za-z0-9._~-]{8,256}$")


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1 or ``localhost``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServeSettings:
    """How the server binds and what it accepts.

    Attributes:
        host, port: where to listen; anything but a loopback address needs ``token``.
        token: shared secret every request must carry (header, cookie or ``?token=``); None
            for a loopback-only server, which then accepts only loopback Host headers.
        max_upload_mb: largest accepted upload (the request body, counted as it arrives).
        max_frame_pixels: largest accepted frame (rows x columns), checked from the header
            before decoding, so decompression bombs are refused unread.
        max_decoded_mb: largest volume (NIfTI, MetaImage) decoded in one piece.
        max_frames: most frames (cine) or slices (volume) along one axis.
        cache_mb: memory cap of the LRU holding decoded frames and their embeddings.
        max_images: images kept at once; the least recently used is dropped beyond it.
        max_masks_per_image: mask records kept per image (for exports); oldest dropped first.
        model_threads: threads running the model (:mod:`ultrasam.serve.worker`); 2 keeps one
            free for prompts while the other embeds a frame or tracks.
        torch_threads: intra-op threads of each model thread; None divides torch's default
            (the cores, or ``OMP_NUM_THREADS``) among the model threads.
        max_batch: most prompts decoded in one model call (several users' requests batched).
        precision: ``auto`` (bf16 autocast on a CPU with native bf16, else fp32), ``fp32`` or
            ``bf16`` (:mod:`ultrasam.inference.precision`).
    """

    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    max_upload_mb: float = 256.0
    max_frame_pixels: int = 40_000_000
    max_decoded_mb: float = 1024.0
    max_frames: int = 10_000
    cache_mb: float = 512.0
    max_images: int = 64
    max_masks_per_image: int = 5_000
    model_threads: int = 2
    torch_threads: int | None = None
    max_batch: int = DEFAULT_MAX_BATCH
    precision: str = "auto"

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("host must not be empty")
        if not 0 <= int(self.port) <= 65535:
            raise ValueError(f"port must be 0..65535, got {self.port}")
        if self.token is not None and not _TOKEN.match(self.token):
            raise ValueError("token must be 8 to 256 characters of A-Z a-z 0-9 . _ ~ - "
                             "(use a random string, e.g. python -c 'import secrets; "
                             "print(secrets.token_urlsafe())')")
        if not is_loopback(self.host) and not self.token:
            raise ValueError(
                f"refusing to bind {self.host}: anyone on the network could use the server; "
                "pass --token SECRET (every request must then carry it) or bind 127.0.0.1")
        for name in ("max_upload_mb", "max_decoded_mb", "cache_mb"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.torch_threads is not None and int(self.torch_threads) < 1:
            raise ValueError(f"torch_threads must be >= 1, got {self.torch_threads}")
        for name in ("max_frame_pixels", "max_frames", "max_images", "max_masks_per_image",
                     "model_threads", "max_batch"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

        check_precision(self.precision)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MIB)

    @property
    def max_decoded_bytes(self) -> int:
        return int(self.max_decoded_mb * MIB)

    @property
    def cache_bytes(self) -> int:
        return int(self.cache_mb * MIB)
