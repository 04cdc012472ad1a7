"""Reuse across fine-tuning runs of one process: images resized into the encoder's frame and a
frozen encoder's features, kept per image.

A transfer table trains many runs on the same images (two encoders x label fractions x heads).
Decoding and resizing an image depends only on (the image, the frame size, the segmentation
classes of its label map); a frozen encoder's forward pass only on (the encoder's weights, the
image, the frame size). :class:`RunCache` keeps both per image, so a label fraction whose
training images are a subset of another run's, or the same validation / test images seen by a
second head, cost nothing more. Only augmentation-free inputs are cached: linear-probe mode
computes its features once, without augmentation, by design.

Keys: the source's ``cache_key`` (shared by :meth:`ImageSource.subset` views of one parsed
corpus) and the record index, plus the frame size (and the classes for label maps); features
add the encoder's :func:`fingerprint`, a hash of its weights, so two checkpoints (or random
inits with different seeds) never share entries. Memory is bounded by ``max_bytes``: the least
recently used entries go first.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Any

import torch

from .data import ImageSource, Tensors, load_tensors
from .encoder import EncoderAdapter

FEATURE_BATCH = 8


def fingerprint(encoder: EncoderAdapter) -> str:
    """SHA-256 of the encoder's family, frame size and every weight (names and bytes)."""
    h = hashlib.sha256(f"{encoder.family}|{encoder.img_size}".encode())
    for name, value in encoder.model.state_dict().items():
        h.update(name.encode())
        h.update(str(value.dtype).encode())
        h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def frozen_features(encoder: EncoderAdapter, images: torch.Tensor, valid: torch.Tensor
                    ) -> list[torch.Tensor]:
    """Features of uint8-valued ``images`` N x 3 x S x S with ``valid`` N x S x S, in eval
    mode without gradients, stored fp16 (half the memory; the linear probe trains on exactly
    these), finest first: one N x C_i x H_i x W_i tensor per scale."""
    encoder.eval()
    dev = encoder.model.device
    chunks: list[list[torch.Tensor]] = []
    with torch.no_grad():
        for s in range(0, len(images), FEATURE_BATCH):
            sl = slice(s, s + FEATURE_BATCH)
            feats = encoder(images[sl].to(dev).float(), valid[sl].to(dev))
            chunks.append([f.cpu().half() for f in feats])
    return [torch.cat([c[i] for c in chunks]) for i in range(len(chunks[0]))]


def _nbytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    return 0


class RunCache:
    """Per-image cache of resized inputs and frozen features (module docstring)."""

    def __init__(self, max_bytes: int = 3 << 30) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._store: OrderedDict[Hashable, Any] = OrderedDict()
        self._bytes = 0
        self.stats = {"image_hits": 0, "image_misses": 0,
                      "feature_hits": 0, "feature_misses": 0}

    @property
    def nbytes(self) -> int:
        return self._bytes

    def clear(self) -> None:
        self._store.clear()
        self._bytes = 0

    def _get(self, key: Hashable) -> Any:
        value = self._store.get(key)
        if value is not None:
            self._store.move_to_end(key)
        return value

    def _put(self, key: Hashable, value: Any) -> None:
        if key in self._store:
            self._bytes -= _nbytes(self._store.pop(key))
        self._store[key] = value
        self._bytes += _nbytes(value)
        while self._bytes > self.max_bytes and len(self._store) > 1:
            _, old = self._store.popitem(last=False)
            self._bytes -= _nbytes(old)

    def _lookup(self, keys: dict[int, Hashable], stat: str) -> dict[int, Any]:
        got = {}
        for i, key in keys.items():
            value = self._get(key)
            if value is not None:
                got[i] = value
        self.stats[f"{stat}_hits"] += len(got)
        self.stats[f"{stat}_misses"] += len(keys) - len(got)
        return got

    def tensors(self, source: ImageSource, indices: Sequence[int], size: int,
                classes: Sequence[str] | None = None) -> Tensors:
        """:func:`.data.load_tensors` of ``indices``, reading only the images not cached."""
        cls_key = None if classes is None else tuple(classes)
        keys = {i: ("image", source.cache_key, i, size, cls_key) for i in indices}
        got = self._lookup(keys, "image")
        missing = [i for i in keys if i not in got]
        if missing:
            t = load_tensors(source, missing, size, classes)
            for row, i in enumerate(missing):
                value = (t.images[row].clone(), t.sizes[row].clone(),
                         None if t.targets is None else t.targets[row].clone())
                got[i] = value
                self._put(keys[i], value)
        rows = [got[i] for i in indices]
        images = torch.stack([r[0] for r in rows]) if rows else \
            torch.zeros(0, 3, size, size, dtype=torch.uint8)
        sizes = torch.stack([r[1] for r in rows]) if rows else torch.zeros(0, 2, dtype=torch.long)
        targets = None
        if classes is not None:
            targets = torch.stack([r[2] for r in rows]) if rows else \
                torch.zeros(0, size, size, dtype=torch.uint8)
        return Tensors(images, sizes, targets)

    def features(self, encoder: EncoderAdapter, encoder_key: str, source: ImageSource,
                 indices: Sequence[int], tensors: Tensors) -> list[torch.Tensor]:
        """:func:`frozen_features` of ``tensors`` (row r = record ``indices[r]``), computing
        only the rows whose features are not cached for ``encoder_key``."""
        if len(indices) != len(tensors.images):
            raise ValueError(f"{len(indices)} indices for {len(tensors.images)} images")
        size = int(tensors.images.shape[-1])
        keys = {row: ("features", encoder_key, source.cache_key, i, size)
                for row, i in enumerate(indices)}
        got = self._lookup(keys, "feature")
        missing = [row for row in keys if row not in got]
        if missing:
            sel = torch.tensor(missing)
            feats = frozen_features(encoder, tensors.images[sel], tensors.valid()[sel])
            for k, row in enumerate(missing):
                value = [f[k].clone() for f in feats]
                got[row] = value
                self._put(keys[row], value)
        n_scales = len(next(iter(got.values())))
        return [torch.stack([got[row][s] for row in range(len(indices))])
                for s in range(n_scales)]
