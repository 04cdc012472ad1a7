"""Time `ultrasam.data.synthetic.make_phantom` per size, geometry and kind; record JSON.

Usage: python benchmarks/bench_synthetic.py [--repeats 15] [--out benchmarks/results/synthetic.json]

Each configuration is run once to warm up, then ``repeats`` times with different seeds; the
median and the 90th percentile wall time (ms) are recorded with the machine's CPU count and the
library versions. The target is "well under a second on a CPU" at 256 and 512.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from ultrasam.data.synthetic import GEOMETRIES, KINDS, make_phantom


def bench(sizes: tuple[int, ...], repeats: int) -> list[dict[str, object]]:
    rows = []
    for size, geometry, kind in itertools.product(sizes, GEOMETRIES, KINDS):
        make_phantom(0, size, geometry, kind)  # warm-up (imports, allocator, OpenCV threads)
        times = []
        for seed in range(1, repeats + 1):
            start = time.perf_counter()
            make_phantom(seed, size, geometry, kind)
            times.append((time.perf_counter() - start) * 1000.0)
        times.sort()
        rows.append({"size": size, "geometry": geometry, "kind": kind, "repeats": repeats,
                     "median_ms": round(statistics.median(times), 2),
                     "p90_ms": round(times[int(0.9 * (len(times) - 1))], 2)})
        print(f"{size:4d} {geometry:6s} {kind:8s} median {rows[-1]['median_ms']:7.2f} ms")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "synthetic.json")
    args = parser.parse_args()
    rows = bench(tuple(args.sizes), args.repeats)
    record = {
        "benchmark": "synthetic.make_phantom",
        "machine": {"cpu_count": os.cpu_count(), "processor": platform.processor() or
                    platform.machine(), "python": platform.python_version(),
                    "numpy": np.__version__, "opencv": cv2.__version__,
                    "opencv_threads": cv2.getNumThreads()},
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
