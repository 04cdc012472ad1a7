"""Load test of ``ultrasam serve``: N simulated users on loopback, each uploading an image and
sending M segment requests; throughput, latency percentiles, errors and server memory.

The server runs as a child process (``ultrasam serve`` bound to 127.0.0.1, the given
checkpoint or the bundled default model); users are asyncio tasks sharing one HTTP client pool.
Each user uploads its own image (a seeded 384 x 384 phantom, or ``--image``), then sends
``--requests`` prompts one after another (a positive click; click + negative click; a box;
click + box), each waiting for its answer as the page does. Everything is bounded:
``--max-seconds`` ends the run (the remaining requests count as errors) and the server is
stopped at the end.

Recorded: requests/s over the whole run; p50/p95/max latency of the *first* prompt per image
(which computes the embedding) and of the prompts on an already embedded image (the target:
p95 <= 500 ms with 16 users on the 2-core machine and the default model); the model time per
request as the server reports it (the rest is queueing) and how many prompts each model call
decoded together; errors; the server's RSS sampled every 0.2 s: after warm-up (every user past
its first 5 prompts), at the end, and the peak. The machine's load average is recorded before
the server starts: a load near or above the core count means other work shared the CPU and the
latencies say little (a warning is printed). ``targets`` states each target and whether it was
met; memory counts as flat when its trend after warm-up grew by at most 5 % (and 25 MB): the
median RSS of the last fifth of the post-warm-up samples minus that of the first fifth. (One
sample against another measures whichever batch's activations happened to be allocated at
those two instants: up to +-70 MB here with steady peaks; medians over windows measure what a
leak would show, a level that keeps rising. The end-minus-start difference is recorded too.)

    python benchmarks/bench_serve_load.py [--checkpoint CKPT | --tiny] [--users 16]
        [--requests 50] [--threads 2] [--model-threads K] [--max-batch B]
        [--precision auto|fp32|bf16] [--repeats N] [--out benchmarks/results/serve_load.json]

Run-to-run spread on the shared 2-core machine is large (p95 +-70 ms), so the recorded runs use
``--repeats 5`` (bf16) / ``--repeats 3`` (fp32): each repeat on a fresh server; the run with
the median p95 is reported in full and every run is listed under ``repeats``.

The baseline of the serving speed-ups is the same server in full precision:
``--precision fp32 --out benchmarks/results/serve_load_fp32.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from _reference import cpu_name

from ultrasam.inference.precision import PRECISIONS

RESULTS = Path(__file__).resolve().parent / "results"
WARMUP_PROMPTS = 5
P95_TARGET_MS = 500.0  # issue 12: prompts on an embedded image, 16 users, 2 cores
FLAT_FRACTION, FLAT_MB = 0.05, 25.0
TREND_WINDOW_PARTS = 5  # memory trend: median of the last fifth minus that of the first


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mb(pid: int, field: str = "VmRSS") -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(np.array(values), q))


def _summary(values: list[float]) -> dict[str, float | int | None]:
    return {"n": len(values), "p50": _pct(values, 50), "p95": _pct(values, 95),
            "max": max(values) if values else None}


def _image_bytes(user: int, image: Path | None) -> tuple[str, bytes]:
    if image is not None:
        return image.name, image.read_bytes()
    from ultrasam.data.synthetic import make_phantom

    _, png = cv2.imencode(".png", make_phantom(seed=1000 + user, size=384).image)
    return f"phantom{user}.png", png.tobytes()


def _prompt(rng: np.random.Generator, k: int, w: int, h: int) -> dict[str, Any]:
    x, y = float(rng.uniform(0.3 * w, 0.7 * w)), float(rng.uniform(0.3 * h, 0.7 * h))
    box = [max(0.0, x - 40), max(0.0, y - 30), min(float(w), x + 40), min(float(h), y + 30)]
    kind = k % 4
    if kind == 0:
        return {"points": [[x, y, 1]]}
    if kind == 1:
        return {"points": [[x, y, 1], [float(rng.uniform(0, w)), float(rng.uniform(0, h)), 0]]}
    if kind == 2:
        return {"box": box}
    return {"points": [[x, y, 1]], "box": box}


async def _user(client: Any, user: int, n_requests: int, image: Path | None,
                log: dict[str, Any], warm: asyncio.Event, warm_count: list[int],
                n_users: int) -> None:
    import httpx

    rng = np.random.default_rng(user)
    name, data = _image_bytes(user, image)
    try:
        r = await client.post("/api/images", files={"file": (name, data)})
        r.raise_for_status()
        info = r.json()
    except (httpx.HTTPError, ValueError) as exc:
        log["errors"].append(f"user {user} upload: {exc}")
        return
    for k in range(n_requests):
        body = {"frame": info["default_frame"], **_prompt(rng, k, info["width"], info["height"])}
        start = time.perf_counter()
        try:
            r = await client.post(f"/api/images/{info['image_id']}/segment", json=body)
            elapsed = (time.perf_counter() - start) * 1000
            if r.status_code != 200:
                log["errors"].append(f"user {user} request {k}: {r.status_code} {r.text[:200]}")
                continue
            answer = r.json()
        except (httpx.HTTPError, ValueError) as exc:
            log["errors"].append(f"user {user} request {k}: {type(exc).__name__} {exc}")
            continue
        (log["first"] if answer["embedded"] else log["embedded"]).append(elapsed)
        log["model_ms"].append(answer["model_ms"])
        log["batch"].append(answer.get("batch", 1))
        log["done"] += 1
        if k + 1 == WARMUP_PROMPTS:
            warm_count[0] += 1
            if warm_count[0] == n_users:
                warm.set()


async def _sample_rss(pid: int, samples: list[tuple[float, float]], stop: asyncio.Event) -> None:
    t0 = time.perf_counter()
    while not stop.is_set():
        rss = _rss_mb(pid)
        if rss is not None:
            samples.append((time.perf_counter() - t0, rss))
        await asyncio.sleep(0.2)


async def _run(args: argparse.Namespace, url: str, pid: int) -> dict[str, Any]:
    import httpx

    log: dict[str, Any] = {"first": [], "embedded": [], "model_ms": [], "batch": [],
                           "errors": [], "done": 0}
    samples: list[tuple[float, float]] = []
    warm, stop = asyncio.Event(), asyncio.Event()
    warm_count = [0]
    limits = httpx.Limits(max_connections=args.users, max_keepalive_connections=args.users)
    async with httpx.AsyncClient(base_url=url, timeout=args.max_seconds,
                                 limits=limits) as client:
        sampler = asyncio.create_task(_sample_rss(pid, samples, stop))
        t0 = time.perf_counter()
        warm_at: list[float] = []

        async def mark_warm() -> None:
            await warm.wait()
            warm_at.append(time.perf_counter() - t0)

        marker = asyncio.create_task(mark_warm())
        users = [asyncio.create_task(_user(client, u, args.requests, args.image, log, warm,
                                           warm_count, args.users))
                 for u in range(args.users)]
        _, pending = await asyncio.wait(users, timeout=args.max_seconds)
        for task in pending:
            task.cancel()
        wall = time.perf_counter() - t0
        stop.set()
        marker.cancel()
        await sampler
        health = (await client.get("/health")).json()
    expected = args.users * args.requests
    unfinished = expected - log["done"] - len(log["errors"])
    errors = log["errors"] + ([f"{unfinished} requests not done within --max-seconds"]
                              if pending else [])
    after_warm = [rss for t, rss in samples if warm_at and t >= warm_at[0]]
    window = max(1, len(after_warm) // TREND_WINDOW_PARTS)
    return {
        "wall_s": round(wall, 2),
        "requests_done": log["done"], "requests_expected": expected,
        "throughput_rps": round(log["done"] / wall, 2),
        "errors": len(log["errors"]) + unfinished,
        "error_examples": errors[:5],
        "latency_ms_first_prompt": _summary(log["first"]),
        "latency_ms_embedded": _summary(log["embedded"]),
        "model_ms_per_request": _summary(log["model_ms"]),
        "prompts_per_model_call": {**_summary(log["batch"]),
                                   "mean": float(np.mean(log["batch"])) if log["batch"]
                                   else None},
        "warm_after_s": round(warm_at[0], 2) if warm_at else None,
        "rss_mb_after_warmup": round(after_warm[0], 1) if after_warm else None,
        "rss_mb_end": round(samples[-1][1], 1) if samples else None,
        "rss_mb_growth_end_minus_warm": (round(samples[-1][1] - after_warm[0], 1)
                                         if after_warm else None),
        "rss_mb_growth_after_warmup": (round(float(np.median(after_warm[-window:])
                                                   - np.median(after_warm[:window])), 1)
                                       if after_warm else None),
        "rss_mb_peak": _rss_mb(pid, "VmHWM"),
        "server_cache": health["cache"],
        "server_worker": health.get("worker"),
        "model": health["model"],
    }


def _targets(record: dict[str, Any]) -> dict[str, Any]:
    """Issue 12's targets and whether they were met (None: not measurable here): p95 of the
    median run; zero errors and flat memory in every run."""
    p95 = record["latency_ms_embedded"]["p95"]  # the median run's (one run: that run's)
    flats = [None if r["rss_mb_after_warmup"] is None or r["rss_mb_growth_after_warmup"] is None
             else r["rss_mb_growth_after_warmup"] <= max(FLAT_MB, FLAT_FRACTION
                                                         * r["rss_mb_after_warmup"])
             for r in record["repeats"]]
    flat = None if None in flats else all(flats)
    met = {"users_at_least_16": record["users"] >= 16,
           "zero_errors": all(r["errors"] == 0 for r in record["repeats"]),
           f"p95_embedded_at_most_{P95_TARGET_MS:g}_ms": None if p95 is None
           else p95 <= P95_TARGET_MS,
           "memory_flat_after_warmup": flat}
    met["all"] = all(v is True for v in met.values())
    # Stricter, stated beside the verdict: did every repeat, not only the median one, keep p95?
    met["p95_embedded_every_run"] = all(r["p95_embedded_ms"] <= P95_TARGET_MS
                                        for r in record["repeats"])
    return met


def _serve_and_load(args: argparse.Namespace, cmd: list[str], env: dict[str, str], url: str
                    ) -> tuple[dict[str, Any], tuple[float, ...], tuple[float, ...]] | None:
    """Start a fresh server (``cmd``, answering at ``url``), run the users against it, stop
    it. Returns (result, load average before, after); None when it did not start."""
    import httpx

    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + args.start_timeout
        while True:
            if server.poll() is not None:
                err = server.stderr.read().decode() if server.stderr else ""
                print(f"server exited: {err.strip().splitlines()[-1:]}", file=sys.stderr)
                return None
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                print(f"server did not start within {args.start_timeout:g} s", file=sys.stderr)
                return None
            time.sleep(0.3)
        load_before = os.getloadavg()
        result = asyncio.run(_run(args, url, server.pid))
        return result, load_before, os.getloadavg()
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="checkpoint (default: the bundled default model)")
    p.add_argument("--tiny", action="store_true",
                   help="serve a seeded random tiny model instead (exercises the server's "
                        "mechanics only; the targets are for the default model)")
    p.add_argument("--users", type=int, default=16)
    p.add_argument("--requests", type=int, default=50, help="segment requests per user")
    p.add_argument("--image", type=Path, help="upload this file for every user "
                                              "(default: a phantom per user)")
    p.add_argument("--threads", type=int, default=2,
                   help="server's torch threads in all (OMP_NUM_THREADS), divided among its "
                        "model threads")
    p.add_argument("--model-threads", type=int,
                   help="server's model threads (default: ultrasam serve's default)")
    p.add_argument("--max-batch", type=int,
                   help="most prompts per model call (default: ultrasam serve's default)")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="server's model arithmetic (default: ultrasam serve's default)")
    p.add_argument("--repeats", type=int, default=1,
                   help="independent runs, each on a fresh server: the run with the median p95 "
                        "is reported, every run listed; errors and memory must hold in all")
    p.add_argument("--cache-mb", type=float, default=512.0)
    p.add_argument("--max-seconds", type=float, default=900.0, help="hard end of the run")
    p.add_argument("--start-timeout", type=float, default=300.0,
                   help="seconds to wait for the server to answer /health")
    p.add_argument("--out", type=Path, default=RESULTS / "serve_load.json")
    args = p.parse_args()
    if args.users < 1 or args.requests < 1 or args.repeats < 1:
        p.error("--users, --requests and --repeats must be >= 1")

    if args.tiny and args.checkpoint:
        p.error("--tiny and --checkpoint exclude each other")
    load_at_start = os.getloadavg()  # before our server and clients add to it
    cores = os.cpu_count() or 1
    if load_at_start[0] >= 0.5:
        print(f"warning: load average {load_at_start[0]:.2f} on {cores} cores before the "
              "run: other work shares the CPU, latencies will be pessimistic", file=sys.stderr)
    port = _free_port()
    cmd = [sys.executable, "-m", "ultrasam.cli", "serve", "--host", "127.0.0.1", "--port",
           str(port), "--cache-mb", str(args.cache_mb)]
    if args.model_threads is not None:
        cmd += ["--model-threads", str(args.model_threads)]
    if args.max_batch is not None:
        cmd += ["--max-batch", str(args.max_batch)]
    if args.precision is not None:
        cmd += ["--precision", args.precision]
    tmp = tempfile.TemporaryDirectory(prefix="ultrasam-bench-")
    if args.tiny:
        import torch

        from ultrasam.modeling import build_model
        from ultrasam.weights.checkpoints import save_native

        torch.manual_seed(0)
        folder = Path(tmp.name) / "tiny-random"
        cmd += ["--checkpoint", str(save_native(build_model("tiny").eval(), folder))]
    elif args.checkpoint:
        cmd += ["--checkpoint", args.checkpoint]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    runs = []
    with tmp:  # the tiny checkpoint, if any, lives there until the last run ends
        for k in range(args.repeats):
            out = _serve_and_load(args, cmd, env, f"http://127.0.0.1:{port}")
            if out is None:
                return 1
            runs.append(out)
            if args.repeats > 1:
                print(f"run {k + 1}/{args.repeats}: {out[0]['throughput_rps']} req/s, p95 "
                      f"{out[0]['latency_ms_embedded']['p95']:.0f} ms", file=sys.stderr)
    # The run with the median p95 (on embedded images) stands for all; every run is listed.
    order = sorted(range(len(runs)), key=lambda i: runs[i][0]["latency_ms_embedded"]["p95"]
                   or 0.0)
    result, load_before, load_after = runs[order[len(order) // 2]]
    repeats = [{"throughput_rps": r["throughput_rps"], "errors": r["errors"],
                "p50_embedded_ms": round(r["latency_ms_embedded"]["p50"] or 0, 1),
                "p95_embedded_ms": round(r["latency_ms_embedded"]["p95"] or 0, 1),
                "rss_mb_after_warmup": r["rss_mb_after_warmup"],
                "rss_mb_growth_after_warmup": r["rss_mb_growth_after_warmup"],
                "rss_mb_growth_end_minus_warm": r["rss_mb_growth_end_minus_warm"],
                "rss_mb_peak": r["rss_mb_peak"], "load_avg_before": [round(v, 2) for v in lb]}
               for r, lb, _ in runs]
    record = {
        "command": "python benchmarks/bench_serve_load.py " + " ".join(sys.argv[1:]),
        "date": datetime.date.today().isoformat(), "cpu": cpu_name(), "cores": os.cpu_count(),
        "weights": "random tiny (mechanics only)" if args.tiny else (
            Path(args.checkpoint).name if args.checkpoint else "bundled default model"),
        "server_threads": args.threads, "users": args.users, "requests_per_user": args.requests,
        "image": args.image.name if args.image else "phantom 384 x 384 per user",
        "load_avg_1_5_15_at_start": [round(v, 2) for v in load_at_start],
        "machine_busy_at_start": load_at_start[0] >= 0.5,
        "load_avg_1_5_15_before": [round(v, 2) for v in load_before],
        "load_avg_1_5_15_after": [round(v, 2) for v in load_after],
        "repeats": repeats,
        **result,
    }
    record["targets"] = _targets(record)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({k: record[k] for k in ("throughput_rps", "errors",
                                             "latency_ms_embedded", "latency_ms_first_prompt",
                                             "prompts_per_model_call", "rss_mb_peak",
                                             "rss_mb_growth_after_warmup", "targets")}))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
