"""CPU latency of the `small` variant (the default-model architecture) vs Meta's decoder.

Same run, same machine, interleaved so that background load hits every candidate alike:
- encoder: the small conv encoder on one padded 256 x 256 input (-> 1 x 128 x 64 x 64), and
  the whole ``Predictor.set_image`` (resize, normalise, pad, encode) on a 384 x 300 phantom;
- decoder, per prompt on a cached 64 x 64 embedding (prompt encoder + mask decoder,
  low-res logits): the small model through the predictor's fast path (``fast_decode`` with the
  per-image cache, as ``Predictor.predict`` runs it) and its plain decoder, for one positive
  point (multimask output) and one box (single mask); Meta's ``segment_anything`` 1.0 decoder
  (SAM ViT-B's, width 256) on a 1 x 256 x 64 x 64 embedding with the same point;
- medians of repeated calls after warm-up; the 1-, 5- and 15-minute load averages before and
  after are recorded, since the machine is shared (rerun when the load is high).

Weights are random (latency does not depend on their values).

    python benchmarks/bench_cpu_small.py [--threads 2] [--runs 30]
writes benchmarks/results/cpu_small.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _reference import cpu_name, import_segment_anything, times_ms

RESULTS = Path(__file__).resolve().parent / "results"






def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=30, help="timed calls per candidate "
                        "(split over rounds)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--out", default=str(RESULTS / "cpu_small.json"))
    args = parser.parse_args()

    sa = import_segment_anything()
    from ultrasam import Predictor
    from ultrasam.data.synthetic import make_phantom
    from ultrasam.modeling import build_model
    from ultrasam.modeling.fast_decoder import fast_decode, prepare_image

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    load_before = os.getloadavg()

    small = build_model("small").eval()
    meta = sa.build_sam_vit_b(None).eval()
    n_params = sum(p.numel() for p in small.parameters())

    x = small.preprocess(torch.randint(0, 256, (1, 3, 256, 256)).float())
    emb = small.encode(x)                                   # 1 x 128 x 64 x 64
    meta_emb = torch.randn(1, 256, 64, 64)
    meta_pe = meta.prompt_encoder.get_dense_pe()
    cache = prepare_image(small.mask_decoder, small.prompt_encoder, emb)
    point = (torch.tensor([[[103.0, 132.0]]]), torch.tensor([[1]]))
    meta_point = (point[0] * 4, point[1])                    # same place in a 1024 frame
    box = torch.tensor([[60.0, 70.0, 180.0, 200.0]])
    phantom = np.ascontiguousarray(make_phantom(seed=1, size=384, kind="mixed").image[:, :300])
    predictor = Predictor(small)

    def encoder() -> object:
        return small.encode(x)

    def set_image() -> object:
        return predictor.set_image(phantom)

    def fast_point() -> object:
        s, _ = small.prompt_encoder(points=point, boxes=None, masks=None)
        return fast_decode(small.mask_decoder, cache, s, None, True)

    def fast_box() -> object:
        s, _ = small.prompt_encoder(points=None, boxes=box, masks=None)
        return fast_decode(small.mask_decoder, cache, s, None, False)

    def plain_point() -> object:
        return small.decode(emb, point[0], point[1], multimask_output=True)

    def meta_decoder() -> object:
        s, d = meta.prompt_encoder(points=meta_point, boxes=None, masks=None)
        return meta.mask_decoder(image_embeddings=meta_emb, image_pe=meta_pe,
                                 sparse_prompt_embeddings=s, dense_prompt_embeddings=d,
                                 multimask_output=True)

    candidates = {"encoder_small": encoder, "set_image_small": set_image,
                  "decoder_small_fast_point": fast_point, "decoder_small_fast_box": fast_box,
                  "decoder_small_plain_point": plain_point, "decoder_meta_vit_b_point":
                  meta_decoder}
    per_round = max(1, args.runs // args.rounds)
    times: dict[str, list[float]] = {k: [] for k in candidates}
    for _ in range(args.rounds):
        for name, fn in candidates.items():
            times[name] += times_ms(fn, per_round)
    t0 = time.perf_counter()
    prepare_image(small.mask_decoder, small.prompt_encoder, emb)
    cache_ms = 1000 * (time.perf_counter() - t0)

    res: dict[str, object] = {
        "command": "python benchmarks/bench_cpu_small.py " + " ".join(sys.argv[1:]),
        "date": datetime.date.today().isoformat(), "torch": torch.__version__,
        "cpu": cpu_name(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
        "load_avg_1_5_15_before": [round(v, 2) for v in load_before],
        "load_avg_1_5_15_after": [round(v, 2) for v in os.getloadavg()],
        "weights": "random", "small_parameters": n_params,
        "small_embedding": list(emb.shape), "meta_embedding": list(meta_emb.shape),
        "encoder_input": list(x.shape), "set_image_input_hw": list(phantom.shape[:2]),
        "runs_per_candidate": per_round * args.rounds, "rounds": args.rounds,
        "decoder_cache_ms_once_per_image": round(cache_ms, 3),
    }
    for name, values in times.items():
        res[f"{name}_ms_median"] = round(statistics.median(values), 3)
        res[f"{name}_ms_min"] = round(min(values), 3)
    res["decoder_speedup_small_fast_vs_meta"] = round(
        res["decoder_meta_vit_b_point_ms_median"]           # type: ignore[operator]
        / res["decoder_small_fast_point_ms_median"], 2)     # type: ignore[operator]
    res["targets"] = {"encoder_ms": 250, "decoder_ms_per_prompt": 30,
                      "decoder_speedup_vs_meta": 2.0}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    for k, v in res.items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
