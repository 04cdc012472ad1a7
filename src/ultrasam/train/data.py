"""Training batches: which images (a seeded, sharded, resumable sampler) and how they look.

Images come from ``ultrasam.data.factory.open_dataset`` (corpus folders, COCO files, packs).
Each drawn image is resized so its longest side is the model input (OpenCV), augmented, and
its instances (at most ``max_instances``, chosen at random) are kept when they still cover at
least ``min_instance_area`` pixels. Images left without instances are skipped and counted; the
batch is topped up from the sampler so every batch has the same number of images.

Determinism: the k-th image of an epoch has the *position* (epoch, k). Everything random about
that image (instance subset, augmentation, prompts) is seeded from (seed, epoch, k), so a batch
is a pure function of the sampler state, whatever the process count or restart history.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .augment import AugmentParams, augment

log = logging.getLogger(__name__)


def position_seed(seed: int, epoch: int, index: int, stream: int) -> int:
    """A 63-bit seed for one image position and one random stream (0 data, 1 prompts)."""
    ss = np.random.SeedSequence([seed, epoch, index, stream])
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


# ---------------------------------------------------------------------------------- images
@dataclass(frozen=True)
class ImageRef:
    """One usable image: which opened source, its index there, its dataset name."""

    source: int
    index: int
    dataset: str


def _parse_exclude(exclude: Sequence[str]) -> list[tuple[str, str | None]]:
    out = []
    for item in exclude:
        name, _, split = item.partition(":")
        if not name:
            raise ValueError(f"bad exclude entry {item!r}; expected DATASET or DATASET:split")
        out.append((name.lower(), split or None))
    return out


def _excluded(dataset: str, split: str | None, rules: list[tuple[str, str | None]]) -> bool:
    return any(dataset.lower() == name and (want is None or split == want)
               for name, want in rules)


class TrainImages:
    """The usable images of one or more sources, with the reasons others were skipped.

    ``counts``: images seen, excluded (``exclude`` rules), without instances, instances too
    small at the stored size, and instances / images kept. Sources that keep annotations in
    memory (COCO) are filtered here; for others (packs) the same checks run when an image is
    loaded (see :class:`BatchLoader`).
    """

    def __init__(self, paths: Sequence[str | Path], *, datasets: Sequence[str] = (),
                 split: str | None = None, exclude: Sequence[str] = (),
                 min_instance_area: int = 12) -> None:
        from ..data.factory import open_dataset

        if not paths:
            raise ValueError("data.paths is empty: name a corpus folder, COCO file or pack")
        self.rules = _parse_exclude(exclude)
        self.min_instance_area = min_instance_area
        self.sources = [open_dataset(Path(p), split=split, datasets=list(datasets) or None)
                        for p in paths]
        self.refs: list[ImageRef] = []
        self.counts: Counter[str] = Counter()
        for s, source in enumerate(self.sources):
            entries = getattr(source, "entries", None)
            for i in range(len(source)):
                self.counts["images_seen"] += 1
                name = source.dataset_of(i)
                if entries is not None:
                    record, anns = entries[i].record, entries[i].annotations
                    if _excluded(name, record.get("split"), self.rules):
                        self.counts["images_excluded"] += 1
                        continue
                    big = [a for a in anns if a.get("area", 0) >= min_instance_area]
                    self.counts["instances_too_small"] += len(anns) - len(big)
                    if not big:
                        self.counts["images_without_instances"] += 1
                        continue
                    self.counts["instances_kept"] += len(big)
                self.refs.append(ImageRef(s, i, name))
        self.counts["images_kept"] = len(self.refs)
        if not self.refs:
            raise ValueError(f"no usable training images in {[str(p) for p in paths]} "
                             f"(split={split!r}, datasets={list(datasets) or 'all'}, "
                             f"exclude={list(exclude)}): {dict(self.counts)}")
        log.info("training images: %s", dict(sorted(self.counts.items())))

    def __len__(self) -> int:
        return len(self.refs)

    def datasets(self) -> list[str]:
        return [r.dataset for r in self.refs]

    def sample(self, k: int) -> Any:
        ref = self.refs[k]
        return self.sources[ref.source][ref.index]


# --------------------------------------------------------------------------------- sampler
class MixingSampler:
    """Seeded epochs of image indices mixed by dataset weight, sharded across processes.

    An epoch holds ``epoch_size`` draws (0: the number of usable images). Dataset d gets a
    share proportional to ``weight_d x n_d`` (weight 1 = its natural frequency, 0 = never),
    rounded by largest remainder; its images are taken from a seeded permutation, repeated when
    the share exceeds its size. The epoch is then shuffled and truncated to a multiple of
    ``world_size``; process ``rank`` reads positions rank, rank + world_size, ...

    The state (epoch, cursor) is what ``state_dict`` returns; restoring it continues the exact
    sequence.
    """

    def __init__(self, datasets: Sequence[str], weights: dict[str, float] | None = None,
                 seed: int = 0, rank: int = 0, world_size: int = 1, epoch_size: int = 0) -> None:
        if not datasets:
            raise ValueError("the sampler needs at least one image")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        weights = dict(weights or {})
        names = sorted(set(datasets))
        lower = {n.lower(): n for n in names}
        unknown = sorted(k for k in weights if k.lower() not in lower)
        if unknown:
            raise ValueError(f"data.weights names datasets not in the data: {unknown}; "
                             f"present: {names}")
        table = {lower[k.lower()]: float(v) for k, v in weights.items()}
        bad = {k: v for k, v in table.items() if v < 0 or not np.isfinite(v)}
        if bad:
            raise ValueError(f"data.weights must be finite and >= 0, got {bad}")
        self.members = {n: np.array([i for i, d in enumerate(datasets) if d == n])
                        for n in names}
        self.mass = {n: table.get(n, 1.0) * len(self.members[n]) for n in names}
        if sum(self.mass.values()) <= 0:
            raise ValueError(f"data.weights leave no dataset to sample: {weights}")
        self.names = names
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch_size = epoch_size or sum(len(self.members[n]) for n in names
                                            if self.mass[n] > 0)
        if self.epoch_size < world_size:
            raise ValueError(f"epoch of {self.epoch_size} images cannot feed {world_size} "
                             "processes")
        self.epoch = 0
        self.cursor = 0
        self._order: np.ndarray | None = None

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The global sequence of image indices of one epoch (all processes)."""
        total = sum(self.mass.values())
        exact = np.array([self.epoch_size * self.mass[n] / total for n in self.names])
        counts = np.floor(exact).astype(int)
        short = self.epoch_size - counts.sum()
        counts[np.argsort(-(exact - counts), kind="stable")[:short]] += 1
        parts = []
        for d, (name, c) in enumerate(zip(self.names, counts)):
            if c == 0:
                continue
            rng = np.random.default_rng([self.seed, epoch, d, 7])
            members = self.members[name]
            reps = -(-c // len(members))
            parts.append(np.concatenate([rng.permutation(members) for _ in range(reps)])[:c])
        order = np.random.default_rng([self.seed, epoch, 11]).permutation(np.concatenate(parts))
        return order[: len(order) - len(order) % self.world_size]

    def next(self) -> tuple[int, int, int]:
        """(image index, epoch, position in the epoch) of this process's next draw."""
        if self._order is None:
            self._order = self.epoch_order(self.epoch)
        k = self.cursor * self.world_size + self.rank
        if k >= len(self._order):
            self.epoch += 1
            self.cursor = 0
            self._order = self.epoch_order(self.epoch)
            k = self.rank
        self.cursor += 1
        return int(self._order[k]), self.epoch, k

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor, "seed": self.seed,
                "rank": self.rank, "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if (state["seed"], state["world_size"]) != (self.seed, self.world_size):
            raise ValueError(f"sampler state is for seed {state['seed']} and "
                             f"{state['world_size']} processes, this run has seed {self.seed} "
                             f"and {self.world_size}")
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
        self._order = None


# ---------------------------------------------------------------------------------- batches
@dataclass
class Batch:
    """B images and their P instances (P = sum of P_b), on one device.

    images: B x 3 x S x S float, 0-255, zero-padded bottom/right (``Sam.preprocess`` pads after
    normalising, so the loop normalises each image's valid region itself);
    sizes: B x 2 (h, w) of each image's valid region;
    masks: per image a P_b x h_b x w_b bool tensor in the model-input frame (for prompts);
    targets: P x L x L float {0, 1}, the masks on the low-res logit grid (cells at least half
    covered; for an instance that covers no cell by half, its best-covered cells);
    image_index: P long, the image of each instance;
    positions: per image (epoch, position) — seeds of its random streams;
    ids: per image "dataset/image_id/file_name", for error messages.
    """

    images: torch.Tensor
    sizes: torch.Tensor
    masks: list[torch.Tensor]
    targets: torch.Tensor
    image_index: torch.Tensor
    positions: list[tuple[int, int]]
    ids: list[str]

    def to(self, device: torch.device) -> Batch:
        return Batch(self.images.to(device), self.sizes.to(device),
                     [m.to(device) for m in self.masks], self.targets.to(device),
                     self.image_index.to(device), self.positions, self.ids)


def resize_longest(image: np.ndarray, masks: np.ndarray, side: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Resize H x W x 3 and P x H x W so the longest side is ``side`` (OpenCV).

    Images: area interpolation when shrinking, bilinear when enlarging. Masks: the same filter
    on 0/1 floats, thresholded at 0.5 (keeps thin structures better than nearest).
    """
    h, w = image.shape[:2]
    scale = side / max(h, w)
    nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
    if (nh, nw) == (h, w):
        return image, masks.astype(bool)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    out = cv2.resize(image, (nw, nh), interpolation=interp)
    if out.ndim == 2:
        out = out[:, :, None]
    resized = [cv2.resize(m.astype(np.float32), (nw, nh), interpolation=interp) >= 0.5
               for m in masks]
    return out, (np.stack(resized) if resized else np.zeros((0, nh, nw), bool))


def resize_square(image: np.ndarray, masks: np.ndarray, side: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """MedSAM's geometry: stretch H x W x 3 and P x H x W to ``side`` x ``side`` (aspect ratio
    not kept), with the same filters as :func:`resize_longest`."""
    h, w = image.shape[:2]
    if (h, w) == (side, side):
        return image, masks.astype(bool)
    interp = cv2.INTER_AREA if side < max(h, w) else cv2.INTER_LINEAR
    out = cv2.resize(image, (side, side), interpolation=interp)
    if out.ndim == 2:
        out = out[:, :, None]
    resized = [cv2.resize(m.astype(np.float32), (side, side), interpolation=interp) >= 0.5
               for m in masks]
    return out, (np.stack(resized) if resized else np.zeros((0, side, side), bool))


class BatchLoader:
    """Draws images from a :class:`MixingSampler` and turns them into :class:`Batch` es.

    ``square``: resize every image to the full input square (MedSAM's preprocessing) instead
    of SAM's longest-side resize and padding, so training sees what inference sees.

    ``counts`` accumulates, for this process since it started: images loaded, skipped because
    no instance survived resizing/augmentation (or, for packs, because they are excluded or
    empty), and instances dropped as too small or beyond ``max_instances``.
    """

    def __init__(self, images: TrainImages, sampler: MixingSampler, *, input_size: int,
                 mask_size: int, images_per_batch: int, max_instances: int,
                 min_instance_area: int, augment_params: AugmentParams, seed: int,
                 load_threads: int = 0, square: bool = False) -> None:
        if images_per_batch < 1 or max_instances < 1:
            raise ValueError(f"images_per_batch and max_instances must be >= 1, got "
                             f"{images_per_batch}, {max_instances}")
        if input_size % mask_size:
            raise ValueError(f"input size {input_size} is not a multiple of mask size {mask_size}")
        self.images, self.sampler = images, sampler
        self.input_size, self.mask_size = input_size, mask_size
        self.images_per_batch, self.max_instances = images_per_batch, max_instances
        self.min_instance_area = min_instance_area
        self.augment_params, self.seed = augment_params, seed
        self.square = square
        self.pool = ThreadPoolExecutor(load_threads) if load_threads > 0 else None
        self.counts: Counter[str] = Counter()

    def load(self, k: int, epoch: int, position: int
             ) -> tuple[np.ndarray, np.ndarray, str] | None:
        """One image prepared for training (h x w x 3 uint8, P x h x w bool, id), or None."""
        sample = self.images.sample(k)
        ident = f"{sample.dataset}/{sample.image_id}/{sample.file_name}"
        if _excluded(sample.dataset, sample.split, self.images.rules):
            return None
        rng = np.random.default_rng(position_seed(self.seed, epoch, position, 0))
        masks = sample.masks[sample.masks.reshape(len(sample.masks), -1).sum(1)
                             >= self.min_instance_area] if len(sample.masks) else sample.masks
        if len(masks) > self.max_instances:
            keep = np.sort(rng.choice(len(masks), self.max_instances, replace=False))
            masks = masks[keep]
        resize = resize_square if self.square else resize_longest
        image, masks = resize(sample.image, masks, self.input_size)
        image, masks = augment(image, masks, self.augment_params, self.input_size, rng)
        areas = masks.reshape(len(masks), -1).sum(1) if len(masks) else np.zeros(0)
        self.counts["instances_too_small_after_resize"] += int((areas < self.min_instance_area)
                                                              .sum())
        masks = masks[areas >= self.min_instance_area]
        if len(masks) == 0:
            return None
        return image, masks, ident

    def next_batch(self) -> Batch:
        """The next batch of this process (``images_per_batch`` images with instances)."""
        prepared: list[tuple[np.ndarray, np.ndarray, str]] = []
        positions: list[tuple[int, int]] = []
        attempts = 0
        while len(prepared) < self.images_per_batch:
            need = self.images_per_batch - len(prepared)
            draws = [self.sampler.next() for _ in range(need)]
            attempts += need
            if self.pool is not None:
                results = list(self.pool.map(lambda d: self.load(*d), draws))
            else:
                results = [self.load(*d) for d in draws]
            for (_, epoch, pos), res in zip(draws, results):
                self.counts["images_drawn"] += 1
                if res is None:
                    self.counts["images_skipped_no_instances"] += 1
                    continue
                prepared.append(res)
                positions.append((epoch, pos))
            if attempts > 50 * self.images_per_batch and len(prepared) < self.images_per_batch:
                raise ValueError(f"{attempts} images drawn, {len(prepared)} had an instance of "
                                 f">= {self.min_instance_area} px at {self.input_size} px input; "
                                 "lower data.min_instance_area or check the data")
        return self.collate(prepared, positions)

    def collate(self, prepared: list[tuple[np.ndarray, np.ndarray, str]],
                positions: list[tuple[int, int]]) -> Batch:
        s, low = self.input_size, self.mask_size
        images = torch.zeros((len(prepared), 3, s, s))
        sizes, masks, targets, index, ids = [], [], [], [], []
        for b, (image, m, ident) in enumerate(prepared):
            h, w = image.shape[:2]
            images[b, :, :h, :w] = torch.from_numpy(np.ascontiguousarray(
                image.transpose(2, 0, 1))).float()
            sizes.append((h, w))
            mt = torch.from_numpy(np.ascontiguousarray(m))
            masks.append(mt)
            padded = F.pad(mt.float(), (0, s - w, 0, s - h))
            cover = F.avg_pool2d(padded[:, None], s // low)[:, 0]
            # A thin instance may cover no cell by half: keep its best-covered cells instead.
            peak = cover.flatten(1).amax(1).clamp(max=0.5)[:, None, None]
            targets.append(((cover >= peak) & (cover > 0)).float())
            index.extend([b] * len(m))
            ids.append(ident)
            self.counts["instances_used"] += len(m)
        return Batch(images, torch.tensor(sizes), masks, torch.cat(targets),
                     torch.tensor(index, dtype=torch.long), positions, ids)
