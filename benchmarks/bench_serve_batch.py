"""Which ``ultrasam serve --max-batch`` serves 16 users best? Interleaved load tests.

    python benchmarks/bench_serve_batch.py [--sizes 1 2 4 8 16] [--rounds 2] [--users 16]
        [--requests 50] [--out benchmarks/results/serve_max_batch.json]

Runs ``bench_serve_load.py`` once per size per round, the sizes interleaved within each round
so that the machine's drift (large on the shared 2-core machine) hits every size alike; records
each run's throughput, p50 / p95 / max latency on embedded images and peak memory.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--users", type=int, default=16)
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "serve_max_batch.json")
    args = ap.parse_args()
    runs: dict[int, list[dict[str, float]]] = {s: [] for s in args.sizes}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for size in args.sizes:
                out = Path(tmp) / f"{size}_{r}.json"
                cmd = [sys.executable, str(HERE / "bench_serve_load.py"), "--users",
                       str(args.users), "--requests", str(args.requests), "--threads", "2",
                       "--max-batch", str(size), "--out", str(out)]
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=HERE)
                rec = json.loads(out.read_text())
                lat = rec["latency_ms_embedded"]
                runs[size].append({"throughput_rps": rec["throughput_rps"],
                                   "errors": rec["errors"], "p50_ms": round(lat["p50"], 1),
                                   "p95_ms": round(lat["p95"], 1),
                                   "max_ms": round(lat["max"], 1),
                                   "rss_mb_peak": rec["rss_mb_peak"]})
                print(f"max batch {size}, round {r + 1}: {runs[size][-1]}", file=sys.stderr)
    record = {"command": "python benchmarks/bench_serve_batch.py " + " ".join(sys.argv[1:]),
              "date": datetime.date.today().isoformat(), "cores": os.cpu_count(),
              "users": args.users, "requests_per_user": args.requests,
              "runs_by_max_batch": {str(k): v for k, v in runs.items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
