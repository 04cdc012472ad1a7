"""Perceptual-hash near-duplicate detection within and across datasets.

Hash: a 64-bit DCT pHash computed here with OpenCV and numpy. The image is read as 8-bit
grayscale, resized to 32 x 32 with area interpolation, transformed with a 2-D DCT; the 8 x 8
lowest frequencies (DC included) are compared with their median, giving 64 bits packed row-major
(bit 63 = coefficient [0, 0]). The hash ignores size, JPEG/PNG coding and mild noise, so the
same scan stored twice (another copy of a dataset, a resized derivative, consecutive
near-identical video frames) lands within a few bits.

Duplicate rule: two images are near-duplicates when the Hamming distance of their hashes is
``<= HAMMING_THRESHOLD`` (**4 bits of 64**). Measured on the shared corpus: consecutive TG3K
frames mostly sit at 0-6 bits while unrelated ultrasound scans, even from the same device, sit
far above 10; 4 keeps false matches between distinct patients rare while catching re-encodings.
Candidate pairs are found with multi-index hashing (pigeonhole: two hashes within ``t`` bits
agree exactly on at least one of ``t + 1`` disjoint bit blocks), so the search scales to the
full 280k-image corpus without an all-pairs comparison. Pairs are joined into clusters with a
union-find; the splitter keeps every cluster on one side of the split. Flat images (grey-level
standard deviation under ``FLAT_STD`` = 2, e.g. blank frames) get no hash and match nothing.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

HAMMING_THRESHOLD = 4
HASH_SIZE = 8  # 8 x 8 low-frequency DCT coefficients -> 64 bits
DCT_SIZE = 32
FLAT_STD = 2.0  # grey levels: below this standard deviation an image is "flat"
MAX_REPORTED_PAIRS = 50  # cross-dataset pairs listed by name in the report (all are counted)


def phash_array(gray: np.ndarray) -> int:
    """64-bit DCT pHash of an H x W (uint8 grayscale) or H x W x 3 (RGB) image, as a Python int."""
    if gray.ndim == 3:
        gray = cv2.cvtColor(gray, cv2.COLOR_RGB2GRAY)
    if gray.ndim != 2 or gray.size == 0:
        raise ValueError(f"expected a non-empty 2-D image, got shape {gray.shape}")
    small = cv2.resize(gray, (DCT_SIZE, DCT_SIZE), interpolation=cv2.INTER_AREA)
    coeffs = cv2.dct(small.astype(np.float32))[:HASH_SIZE, :HASH_SIZE]
    bits = (coeffs > np.median(coeffs)).ravel()
    value = 0
    for b in bits:
        value = (value << 1) | int(b)
    return value


def is_flat(gray: np.ndarray, min_std: float = FLAT_STD) -> bool:
    """Whether an image is (nearly) uniform: its pHash is then noise, so it is not compared
    (otherwise every blank frame of every dataset would form one giant duplicate cluster)."""
    return float(gray.std()) < min_std


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two 64-bit hashes."""
    return int((a ^ b).bit_count())


class UnionFind:
    """Disjoint sets over ``0..n-1`` with path halving; roots are the smallest member index."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            # Smallest index as root keeps cluster ids independent of the order of unions.
            lo, hi = min(ri, rj), max(ri, rj)
            self.parent[hi] = lo


def _blocks(threshold: int) -> list[tuple[int, int]]:
    """(shift, width) of ``threshold + 1`` disjoint bit blocks covering 64 bits."""
    n = threshold + 1
    widths = [64 // n + (1 if k < 64 % n else 0) for k in range(n)]
    out, shift = [], 64
    for w in widths:
        shift -= w
        out.append((shift, w))
    return out


def near_duplicate_pairs(hashes: np.ndarray, threshold: int = HAMMING_THRESHOLD) -> list[tuple[int, int]]:
    """Sorted index pairs ``(i, j)``, ``i < j``, whose hashes differ in ``<= threshold`` bits.

    ``hashes``: N uint64 array.
    """
    if threshold < 0 or threshold > 63:
        raise ValueError(f"threshold must be in 0..63, got {threshold}")
    hashes = np.asarray(hashes, dtype=np.uint64)
    pairs: set[tuple[int, int]] = set()
    for shift, width in _blocks(threshold):
        keys = (hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        # Bucket boundaries: runs of equal block values.
        cuts = np.flatnonzero(np.diff(sorted_keys)) + 1
        for bucket in np.split(order, cuts):
            if len(bucket) < 2:
                continue
            bucket = np.sort(bucket)
            h = hashes[bucket]
            dist = np.bitwise_count(h[:, None] ^ h[None, :])
            ii, jj = np.nonzero(np.triu(dist <= threshold, k=1))
            pairs.update(zip(bucket[ii].tolist(), bucket[jj].tolist()))
    return sorted(pairs)


@dataclass
class DedupResult:
    """Near-duplicate clusters over a list of images identified by (dataset, image id)."""

    threshold: int
    keys: list[tuple[str, int]]
    pairs: list[tuple[int, int]]
    cluster_of: list[int]  # per image: index of its cluster root (itself when unique)
    unhashed: list[str] = field(default_factory=list)

    def clusters(self) -> list[list[int]]:
        """Clusters with at least two members, each sorted, in order of their root."""
        groups: dict[int, list[int]] = defaultdict(list)
        for i, root in enumerate(self.cluster_of):
            groups[root].append(i)
        return [sorted(m) for _, m in sorted(groups.items()) if len(m) > 1]

    def report(self) -> dict[str, Any]:
        """Counts within and across datasets, and the first cross-dataset pairs by name."""
        within: Counter[str] = Counter()
        across: Counter[str] = Counter()
        examples = []
        for i, j in self.pairs:
            (da, ia), (db, ib) = self.keys[i], self.keys[j]
            if da == db:
                within[da] += 1
            else:
                across["|".join(sorted((da, db)))] += 1
                if len(examples) < MAX_REPORTED_PAIRS:
                    examples.append([f"{da}/{ia}", f"{db}/{ib}"])
        clusters = self.clusters()
        return {
            "method": f"64-bit DCT pHash, Hamming distance <= {self.threshold}",
            "threshold_bits": self.threshold, "pairs": len(self.pairs),
            "clusters": len(clusters), "images_in_clusters": sum(len(c) for c in clusters),
            "pairs_within_dataset": dict(sorted(within.items())),
            "pairs_across_datasets": dict(sorted(across.items())),
            "cross_dataset_examples": examples,
            "unhashed": sorted(self.unhashed),
        }


def find_duplicates(keys: list[tuple[str, int]], hashes: list[int | None],
                    threshold: int = HAMMING_THRESHOLD) -> DedupResult:
    """Cluster images by pHash. ``hashes[i]`` is None for an image without a meaningful hash
    (unreadable, or flat: see :func:`is_flat`); such images are never duplicates."""
    if len(keys) != len(hashes):
        raise ValueError(f"{len(keys)} keys but {len(hashes)} hashes")
    valid = [i for i, h in enumerate(hashes) if h is not None]
    arr = np.array([hashes[i] for i in valid], dtype=np.uint64)
    local_pairs = near_duplicate_pairs(arr, threshold) if len(valid) > 1 else []
    pairs = sorted((valid[a], valid[b]) for a, b in local_pairs)
    uf = UnionFind(len(keys))
    for i, j in pairs:
        uf.union(i, j)
    unhashed = [f"{keys[i][0]}/{keys[i][1]}" for i, h in enumerate(hashes) if h is None]
    return DedupResult(threshold, keys, pairs, [uf.find(i) for i in range(len(keys))], unhashed)
