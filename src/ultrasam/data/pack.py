"""Training packs: a compact, sharded, streamable copy of a corpus for moving it between machines.

A pack is a folder::

    pack.json            metadata (below)
    shard-00000.usp      records, one per image, back to back
    shard-00001.usp      ...

Record layout (little-endian, no padding; no pickle anywhere)::

    b"USR1"  uint32 meta_len  uint32 image_len  meta (UTF-8 JSON, meta_len bytes)  image (JPEG)

``meta`` holds ``dataset``, ``image_id`` (in its source file), ``file_name``, ``group``,
``split``, ``label``, ``width``/``height`` (stored size), ``orig_width``/``orig_height``,
``spacing_mm`` (at the stored size, or null), ``structures`` (N names) and ``masks`` (N
compressed RLE dicts at the stored size, pycocotools format with string counts). Images are
JPEG, single-channel when the source is grayscale (all channels equal), else 3-channel.

``pack.json`` holds the format name, parameters (``max_side``, ``quality``, ``split``, ``caps``),
``trade_off`` (the stated loss: quality and subset), per-dataset counts (available, packed,
capped-out), dropped instances (empty after resizing), and every shard's name, record count,
size and sha256. Records can be read sequentially (streaming) or by index after a header scan.

Caps: ``caps={dataset: N}`` keeps N images of that dataset, chosen evenly spaced over its images
in id order (the source's frame order), so a capped sweep still covers the whole sweep; it is
meant for near-duplicate consecutive frames (TG3K: every frame is within a few pixels of the
next). Packs are lossy: train from them, evaluate on the lossless corpus.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .coco import decode_rle, encode_rle
from .dataset import CocoDataset
from .decode import to_rgb
from .json_file import read_json_file
from .sample import Sample, spacing_of
from .selection import check_split, norm_name, split_matches

log = logging.getLogger(__name__)

FORMAT = "ultrasam-pack/1"
MAGIC = b"USR1"
HEADER = struct.Struct("<4sII")
PACK_JSON = "pack.json"
DEFAULT_SHARD_BYTES = 16 * 1024 * 1024


def resize_longest(image: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale (never upscale) so that the longest side is ``max_side`` (area interpolation)."""
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if mask.shape == shape:
        return mask
    # Area-average then threshold at half: keeps thin structures better than nearest.
    small = cv2.resize(mask.astype(np.uint8) * 255, (shape[1], shape[0]),
                       interpolation=cv2.INTER_AREA)
    return small >= 128


def _encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    gray = bool((rgb[:, :, 0] == rgb[:, :, 1]).all() and (rgb[:, :, 1] == rgb[:, :, 2]).all())
    data = rgb[:, :, 0] if gray else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", data, [cv2.IMWRITE_JPEG_QUALITY, int(quality),
                                          cv2.IMWRITE_JPEG_OPTIMIZE, 1])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def cap_indices(n: int, cap: int) -> list[int]:
    """``cap`` indices of ``range(n)`` spread evenly (all when cap >= n)."""
    if cap < 0:
        raise ValueError(f"cap must be >= 0, got {cap}")
    if cap >= n:
        return list(range(n))
    return sorted({int((k + 0.5) * n / cap) for k in range(cap)})


def _trade_off(max_side: int, quality: int, caps: dict[str, int],
               per_dataset: dict[str, dict[str, int]]) -> str:
    text = (f"Lossy training copy: longest side <= {max_side} px (area downscaling, masks "
            f"area-averaged and thresholded at 0.5), JPEG quality {quality}. Train from it; "
            "evaluate on the lossless corpus.")
    for ds in sorted(caps):
        info = per_dataset.get(ds)
        if info:
            text += (f" {ds} capped to {info['packed']} of {info['available']} images (evenly "
                     "spaced in frame order: consecutive frames are near-duplicates).")
    return text


def pack(corpus_or_coco: Path | str, out: Path | str, max_side: int = 256, quality: int = 60,
         split: str | None = None, caps: dict[str, int] | None = None,
         shard_bytes: int = DEFAULT_SHARD_BYTES, progress: bool = True) -> dict[str, Any]:
    """Write a pack of ``corpus_or_coco`` (COCO file or corpus folder) to ``out``; returns its
    metadata (also ``out/pack.json``). ``split`` selects as :class:`CocoDataset` does."""
    if max_side < 8:
        raise ValueError(f"max_side must be >= 8, got {max_side}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    if shard_bytes < 1024:
        raise ValueError(f"shard_bytes must be >= 1024, got {shard_bytes}")
    caps = dict(caps or {})
    source = CocoDataset(corpus_or_coco, split=split)
    present = {norm_name(source.dataset_of(i)): source.dataset_of(i) for i in range(len(source))}
    unknown = sorted(k for k in caps if norm_name(k) not in present)
    if unknown:
        raise ValueError(f"caps name datasets not in the data: {unknown}; "
                         f"present: {sorted(present.values())}")
    caps = {present[norm_name(k)]: int(v) for k, v in caps.items()}

    by_dataset: dict[str, list[int]] = {}
    for i in range(len(source)):
        by_dataset.setdefault(source.dataset_of(i), []).append(i)
    selected: list[int] = []
    per_dataset: dict[str, dict[str, int]] = {}
    for ds, idx in by_dataset.items():
        idx = sorted(idx, key=lambda i: source.entries[i].record["id"])
        keep = [idx[k] for k in cap_indices(len(idx), caps[ds])] if ds in caps else idx
        selected.extend(keep)
        per_dataset[ds] = {"available": len(idx), "packed": len(keep),
                           "capped_out": len(idx) - len(keep), "instances": 0}
    selected.sort()

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("shard-*.usp"):
        stale.unlink()
    shards: list[dict[str, Any]] = []
    dropped: Counter[str] = Counter()
    structures: Counter[str] = Counter()
    current: Any = None
    iterator: Any = selected
    if progress:
        try:
            from tqdm import tqdm
        except ImportError:  # optional dependency: no bar, same work
            pass
        else:
            iterator = tqdm(selected, desc="pack", unit="img")
    try:
        for i in iterator:
            record = _pack_record(source, i, max_side, quality, dropped)
            if current is None or current["bytes"] + len(record) > shard_bytes and current["n"]:
                if current is not None:
                    _close_shard(current, shards)
                name = f"shard-{len(shards):05d}.usp"
                current = {"name": name, "file": open(out / name, "wb"), "n": 0, "bytes": 0,
                           "sha": hashlib.sha256()}
            current["file"].write(record)
            current["sha"].update(record)
            current["n"] += 1
            current["bytes"] += len(record)
        if current is not None:
            _close_shard(current, shards)
    finally:
        if current is not None and not current["file"].closed:
            current["file"].close()

    for info in iter_pack(out, shards=[s["file"] for s in shards]):
        per_dataset[info[0]["dataset"]]["instances"] += len(info[0]["structures"])
        structures.update(info[0]["structures"])
    total = sum(s["bytes"] for s in shards)
    metadata = {
        "format": FORMAT, "source": Path(corpus_or_coco).name, "split": split,
        "max_side": max_side, "quality": quality, "caps": dict(sorted(caps.items())),
        "trade_off": _trade_off(max_side, quality, caps, per_dataset),
        "samples": sum(s["samples"] for s in shards),
        "instances": sum(structures.values()),
        "structures": dict(sorted(structures.items())),
        "datasets": dict(sorted(per_dataset.items())),
        "dropped_empty_instances": dict(sorted(dropped.items())),
        "shards": shards, "shard_bytes_total": total,
        "record_layout": "b'USR1' <u32 meta_len> <u32 image_len> meta_json image_jpeg",
    }
    # The stated total includes pack.json itself: iterate until its own length is stable.
    metadata["pack_bytes_total"] = total
    for _ in range(5):
        payload = json.dumps(metadata, sort_keys=True, indent=1) + "\n"
        if metadata["pack_bytes_total"] == total + len(payload.encode()):
            break
        metadata["pack_bytes_total"] = total + len(payload.encode())
    (out / PACK_JSON).write_text(payload, encoding="utf-8")
    log.info("pack: %d samples, %.2f MiB", metadata["samples"], metadata["pack_bytes_total"] / 2**20)
    return metadata


def _close_shard(current: dict[str, Any], shards: list[dict[str, Any]]) -> None:
    current["file"].close()
    shards.append({"file": current["name"], "samples": current["n"], "bytes": current["bytes"],
                   "sha256": current["sha"].hexdigest()})


def _pack_record(source: CocoDataset, index: int, max_side: int, quality: int,
                 dropped: Counter[str]) -> bytes:
    sample = source[index]
    record = source.entries[index].record
    image = resize_longest(sample.image, max_side)
    h, w = image.shape[:2]
    masks, names = [], []
    for m, name in zip(sample.masks, sample.structures):
        small = _resize_mask(m, (h, w))
        if small.any():
            masks.append(encode_rle(small))
            names.append(name)
        else:
            dropped[sample.dataset] += 1
    spacing = sample.spacing_mm
    if spacing is not None:
        spacing = (spacing[0] * sample.image.shape[0] / h, spacing[1] * sample.image.shape[1] / w)
    meta = {
        "dataset": sample.dataset, "image_id": sample.image_id, "file_name": sample.file_name,
        "group": sample.group, "split": sample.split, "label": sample.label,
        "width": w, "height": h,
        "orig_width": record.get("orig_width", sample.image.shape[1]),
        "orig_height": record.get("orig_height", sample.image.shape[0]),
        "spacing_mm": None if spacing is None else [round(spacing[0], 6), round(spacing[1], 6)],
        "structures": names, "masks": masks,
    }
    meta_bytes = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    jpeg = _encode_jpeg(image, quality)
    return HEADER.pack(MAGIC, len(meta_bytes), len(jpeg)) + meta_bytes + jpeg


def read_pack_metadata(pack_dir: Path | str) -> dict[str, Any]:
    """``pack.json`` of a pack folder, with clear errors."""
    path = Path(pack_dir) / PACK_JSON
    meta = read_json_file(path, f"not a pack (no {PACK_JSON}): {pack_dir}")
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown pack format {meta.get('format')!r}, expected {FORMAT}")
    return meta


def _records(path: Path) -> Iterator[tuple[int, int, int]]:
    """(offset of meta, meta_len, image_len) for each record of a shard."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        offset = 0
        while offset < size:
            head = f.read(HEADER.size)
            if len(head) < HEADER.size:
                raise ValueError(f"{path}: truncated record header at byte {offset}")
            magic, meta_len, image_len = HEADER.unpack(head)
            if magic != MAGIC:
                raise ValueError(f"{path}: bad record magic {magic!r} at byte {offset}")
            start = offset + HEADER.size
            offset = start + meta_len + image_len
            if offset > size:
                raise ValueError(f"{path}: truncated record at byte {start}")
            yield start, meta_len, image_len
            f.seek(offset)


def iter_pack(pack_dir: Path | str, shards: Sequence[str] | None = None
              ) -> Iterator[tuple[dict[str, Any], bytes]]:
    """Stream (meta, JPEG bytes) records in order, one shard open at a time."""
    pack_dir = Path(pack_dir)
    names = shards if shards is not None else [s["file"] for s in
                                               read_pack_metadata(pack_dir)["shards"]]
    for name in names:
        path = pack_dir / name
        with open(path, "rb") as f:
            for start, meta_len, image_len in _records(path):
                f.seek(start)
                meta = json.loads(f.read(meta_len))
                yield meta, f.read(image_len)


def decode_record(meta: dict[str, Any], jpeg: bytes) -> Sample:
    """A :class:`Sample` from one pack record."""
    name = f"{meta['dataset']}/{meta['file_name']}"
    image = cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"pack record {name}: unreadable JPEG")
    image = to_rgb(image, name)
    h, w = image.shape[:2]
    masks = np.zeros((len(meta["masks"]), h, w), dtype=bool)
    for k, rle in enumerate(meta["masks"]):
        masks[k] = decode_rle(rle)
    spacing = meta.get("spacing_mm")
    return Sample(image=image, masks=masks, structures=list(meta["structures"]),
                  dataset=meta["dataset"], image_id=int(meta["image_id"]),
                  file_name=meta["file_name"], group=meta.get("group"), split=meta.get("split"),
                  spacing_mm=None if spacing is None else spacing_of({"pixel_spacing_mm": spacing}),
                  label=meta.get("label"))


class PackDataset:
    """Map-style dataset over a pack folder; ``split``/``datasets`` filter as in CocoDataset."""

    def __init__(self, pack_dir: Path | str, split: str | None = None,
                 datasets: Sequence[str] | None = None) -> None:
        check_split(split)
        self.pack_dir = Path(pack_dir)
        self.metadata = read_pack_metadata(self.pack_dir)
        wanted = {norm_name(d) for d in datasets} if datasets else None
        # Index: (shard path, meta offset, meta length, image length, dataset). Metadata is
        # re-read on access so memory holds only the index.
        self.index: list[tuple[Path, int, int, int, str]] = []
        for shard in self.metadata["shards"]:
            path = self.pack_dir / shard["file"]
            if not path.is_file():
                raise FileNotFoundError(f"pack shard missing: {path}")
            with open(path, "rb") as f:
                for start, meta_len, image_len in _records(path):
                    f.seek(start)
                    meta = json.loads(f.read(meta_len))
                    if wanted is not None and norm_name(meta["dataset"]) not in wanted:
                        continue
                    if not split_matches(meta.get("split"), split):
                        continue
                    self.index.append((path, start, meta_len, image_len, meta["dataset"]))
        if not self.index:
            raise ValueError(f"no samples in pack {self.pack_dir} for split={split!r}, "
                             f"datasets={list(datasets) if datasets else None}")

    def __len__(self) -> int:
        return len(self.index)

    def dataset_of(self, index: int) -> str:
        return self.index[index][4]

    def __getitem__(self, index: int) -> Sample:
        path, start, meta_len, image_len, _ = self.index[index]
        with open(path, "rb") as f:
            f.seek(start)
            meta = json.loads(f.read(meta_len))
            jpeg = f.read(image_len)
        return decode_record(meta, jpeg)
