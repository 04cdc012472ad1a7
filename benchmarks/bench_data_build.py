"""Conversion throughput (images/s) and peak memory of ``build_corpus`` on the native samples.

Usage: ``python benchmarks/bench_data_build.py [--samples DIR] [--repeat N] [--out JSON]``.
Peak memory is the process's maximum resident set size (``ru_maxrss``), which includes the
interpreter and imported libraries; ``peak_traced_mib`` is the Python-allocated peak during the
build (tracemalloc), i.e. what the build itself holds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path

from ultrasam.data.corpus import build_corpus

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=Path,
                        default=Path(os.environ.get("ULTRASAM_SHARED", ROOT.parent / "shared"))
                        / "data" / "native-samples")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results"
                        / "data_build.json")
    args = parser.parse_args()
    if not args.samples.is_dir():
        raise SystemExit(f"native samples not found at {args.samples}")
    times, images, traced = [], 0, 0
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            tracemalloc.start()
            start = time.perf_counter()
            manifest = build_corpus(args.samples, Path(tmp) / "corpus", progress=False)
            times.append(time.perf_counter() - start)
            traced = max(traced, tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
            images = sum(v["images"] for v in manifest["splits"].values())
    best = min(times)
    result = {
        "benchmark": "data build (native-samples, convert + filter + dedup + split + merge + "
                     "manifest)",
        "datasets": len(manifest["datasets"]), "images": images,
        "seconds_best": round(best, 3), "seconds_all": [round(t, 3) for t in times],
        "images_per_s": round(images / best, 2),
        "peak_traced_mib": round(traced / 2**20, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "python": platform.python_version(),
        "note": "tracemalloc slows the run; throughput is a lower bound",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(json.dumps(result, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
