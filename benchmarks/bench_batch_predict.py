"""Batch prediction throughput: images/s for 1 and 2 worker processes and a Dask local cluster.

Workload: a fixed subset of ``../shared/data/us-corpus`` -- the images with at least one
annotation, sorted by dataset and file name, ``--images`` of them drawn with a seeded RNG (seed
0; 500 by default) -- each segmented from the boxes of its annotations (one object per
annotation) through ``ultrasam.inference.batch.predict_batch`` with a JSONL manifest, as
``ultrasam predict`` runs it. Every configuration runs in a fresh subprocess into an empty output
folder, so a number includes process start-up, model loading in each worker and writing every
output file (masks, overlays, JSON, results): it is what a user waits for.

Peak memory per worker: the largest resident set of any process of the run other than the
driver (``RUSAGE_CHILDREN``; for one worker, the driver is the worker and its own peak is given).

Threads: ``--threads-check`` also times one image end to end (``set_image`` + ``predict``),
median of repeated calls, with torch's default threads (one per core) and with one thread, to
check the issue's claim that the default oversubscribes a loaded machine.

    python benchmarks/bench_batch_predict.py --checkpoint CKPT          # the real model
    python benchmarks/bench_batch_predict.py --random-variant small     # mechanics only

writes ``benchmarks/results/batch_predict.json`` (``--out`` to change). A random-weight run is
labelled as such in the file; its throughput is the model's speed, not its quality.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _reference import cpu_name

CORPUS = ROOT.parent / "shared" / "data" / "us-corpus"
RESULTS = ROOT / "benchmarks" / "results"


def build_manifest(corpus: Path, n: int, path: Path) -> dict[str, Any]:
    """Write the JSONL manifest of the fixed subset; return its description."""
    images = []
    for ann_file in sorted(corpus.glob("*/annotations.coco.json")):
        data = json.loads(ann_file.read_text(encoding="utf-8"))
        boxes: dict[int, list[list[float]]] = {}
        for a in data["annotations"]:
            x, y, w, h = a["bbox"]
            boxes.setdefault(a["image_id"], []).append([x, y, x + w, y + h])
        for im in sorted(data["images"], key=lambda im: im["file_name"]):
            if im["id"] in boxes:
                images.append((ann_file.parent / "images" / im["file_name"], boxes[im["id"]]))
    if len(images) < n:
        raise SystemExit(f"only {len(images)} annotated images in {corpus}")
    chosen = random.Random(0).sample(images, n)
    with open(path, "w", encoding="utf-8") as f:
        for image, bxs in chosen:
            f.writelines(json.dumps({"path": str(image), "box": box}) + "\n" for box in bxs)
    return {"images": n, "objects": sum(len(b) for _, b in chosen), "seed": 0,
            "datasets": sorted({p.name.split("__")[0] for p, _ in chosen})}


def run_one(args: argparse.Namespace) -> None:
    """Child mode: one configuration; prints a JSON line."""
    from ultrasam.inference.batch import predict_batch

    t0 = time.perf_counter()
    summary = predict_batch([args.manifest], args.run_out, checkpoint=args.checkpoint,
                            workers=args.workers, engine=args.engine, threads=1)
    wall = time.perf_counter() - t0
    self_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"wall_s": wall, "ok": summary.ok, "failed": summary.failed,
                      "driver_peak_rss_mib": self_kib / 1024,
                      "children_peak_rss_mib": child_kib / 1024}))


def threads_check(checkpoint: str, image: Path, threads: int | None, runs: int) -> float:
    """Median seconds of set_image + predict on one image (in a fresh process)."""
    code = f"""
import statistics, time, json, torch, numpy as np
{'' if threads is None else f'torch.set_num_threads({threads})'}
from ultrasam.weights.checkpoints import load_model
from ultrasam.inference.predictor import Predictor
p = Predictor(load_model({checkpoint!r}))
times = []
for _ in range({runs} + 1):
    t = time.perf_counter()
    p.set_image({str(image)!r})
    p.predict(box=np.array([10, 10, 100, 100]), multimask_output=False)
    times.append(time.perf_counter() - t)
print(json.dumps({{"median_s": statistics.median(times[1:]),
                  "threads": torch.get_num_threads()}}))
"""
    env = dict(os.environ)
    if threads is None:  # torch's own default: drop the caller's thread limits
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.pop(var, None)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env=env)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="checkpoint to benchmark (default: bundled model)")
    parser.add_argument("--random-variant", help="benchmark a random-weight model of this "
                        "variant instead (mechanics check; labelled in the results)")
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--configs", default="local1,local2,dask2",
                        help="comma list of local1, local2, dask2")
    parser.add_argument("--threads-check", action="store_true")
    parser.add_argument("--threads-runs", type=int, default=5)
    parser.add_argument("--out", default=str(RESULTS / "batch_predict.json"))
    parser.add_argument("--corpus", default=str(CORPUS))
    # child mode
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--manifest", help=argparse.SUPPRESS)
    parser.add_argument("--run-out", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--engine", default="local", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run_one(args)
        return
    corpus = Path(args.corpus)
    if not corpus.is_dir():
        raise SystemExit(f"corpus not found at {corpus}")
    with tempfile.TemporaryDirectory(prefix="bench_batch_") as tmp:
        tmp_path = Path(tmp)
        checkpoint = args.checkpoint
        model_label = checkpoint or "default (bundled)"
        if args.random_variant:
            import torch

            from ultrasam.modeling import build_model
            from ultrasam.weights.checkpoints import save_native

            torch.manual_seed(0)
            checkpoint = str(save_native(build_model(args.random_variant),
                                         tmp_path / "random"))
            model_label = f"{args.random_variant} with RANDOM weights (mechanics check)"
        manifest = tmp_path / "subset.jsonl"
        subset = build_manifest(corpus, args.images, manifest)
        load_before = os.getloadavg()
        runs = []
        for config in [c for c in args.configs.split(",") if c]:
            engine = "dask" if config.startswith("dask") else "local"
            workers = int(config.removeprefix("dask").removeprefix("local"))
            cmd = [sys.executable, __file__, "--one", "--manifest", str(manifest),
                   "--run-out", str(tmp_path / f"out_{config}"), "--workers", str(workers),
                   "--engine", engine]
            if checkpoint:
                cmd += ["--checkpoint", checkpoint]
            r = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if r.returncode != 0:
                raise SystemExit(f"{config} failed:\n{r.stderr[-2000:]}")
            res = json.loads(r.stdout.strip().splitlines()[-1])
            per_worker = res["driver_peak_rss_mib"] if workers == 1 and engine == "local" \
                else res["children_peak_rss_mib"]
            runs.append({"config": config, "engine": engine, "workers": workers,
                         "threads_per_worker": 1, "wall_s": round(res["wall_s"], 2),
                         "images_per_s": round(args.images / res["wall_s"], 3),
                         "ok": res["ok"], "failed": res["failed"],
                         "peak_rss_per_worker_mib": round(per_worker, 1),
                         "driver_peak_rss_mib": round(res["driver_peak_rss_mib"], 1)})
            print(json.dumps(runs[-1]), flush=True)
        threads = None
        if args.threads_check:
            first = json.loads(manifest.read_text().splitlines()[0])["path"]
            threads = {"image": Path(first).name, "runs": args.threads_runs,
                       "default_threads": threads_check(checkpoint, Path(first), None,
                                                        args.threads_runs),
                       "one_thread": threads_check(checkpoint, Path(first), 1,
                                                   args.threads_runs)}
            print(json.dumps(threads), flush=True)
        load_after = os.getloadavg()
    result = {
        "benchmark": "batch prediction throughput (ultrasam predict, JSONL manifest, boxes)",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": model_label, "subset": subset,
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_before": load_before, "load_avg_after": load_after},
        "command": " ".join(["python", "benchmarks/bench_batch_predict.py", *_public_args()]),
        "runs": runs, "threads_check": threads}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")


def _public_args() -> list[str]:
    """The command-line arguments minus machine-specific paths (--out, --corpus values)."""
    args, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
        elif a in ("--out", "--corpus", "--checkpoint"):
            args.append(f"{a} ...")
            skip = True
        elif a.split("=")[0] not in ("--out", "--corpus", "--checkpoint"):
            args.append(a)
    return args


if __name__ == "__main__":
    main()
