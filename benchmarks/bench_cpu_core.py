"""CPU latency of SAM ViT-B's mask decoder and image encoder: Meta's reference vs ultrasam.

Same run, same random weights (Meta's state dict loaded into ours), same inputs:
- decoder: one prompt at a time on a cached 1 x 256 x 64 x 64 embedding (prompt encoder +
  mask decoder, multimask output, low-res logits), median of repeated calls after warm-up,
  for Meta's reference, our plain decoder and our predictor's fast path; the maximum
  absolute logit difference to Meta's is recorded;
- encoder: one 1024 x 1024 image, median of a few runs.

    python benchmarks/bench_cpu_core.py [--decoder-runs 40] [--encoder-runs 3]
writes benchmarks/results/cpu_core.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import time
from pathlib import Path

import torch

from _reference import cpu_name, import_segment_anything, times_ms

RESULTS = Path(__file__).resolve().parent / "results"






def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--decoder-runs", type=int, default=40)
    parser.add_argument("--encoder-runs", type=int, default=3,
                        help="0 skips the (slow) encoder comparison")
    parser.add_argument("--out", default=str(RESULTS / "cpu_core.json"))
    args = parser.parse_args()

    sa = import_segment_anything()
    from ultrasam.modeling import build_model
    from ultrasam.modeling.fast_decoder import fast_decode, prepare_image

    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    meta = sa.build_sam_vit_b(None).eval()
    ours = build_model("vit_b").eval()
    ours.load_state_dict(meta.state_dict(), strict=True)

    image = torch.randint(0, 256, (1, 3, 1024, 1024)).float()
    x = meta.preprocess(image)
    emb = meta.image_encoder(x)  # a real embedding (of a random image) for the decoder runs
    pe = meta.prompt_encoder.get_dense_pe()
    point = (torch.tensor([[[412.0, 530.0]]]), torch.tensor([[1]]))

    def meta_decoder():
        s, d = meta.prompt_encoder(points=point, boxes=None, masks=None)
        return meta.mask_decoder(image_embeddings=emb, image_pe=pe, sparse_prompt_embeddings=s,
                                 dense_prompt_embeddings=d, multimask_output=True)

    def plain_decoder():
        return ours.decode(emb, point[0], point[1], multimask_output=True)

    cache = prepare_image(ours.mask_decoder, ours.prompt_encoder, emb)

    def fast_decoder():
        s, _ = ours.prompt_encoder(points=point, boxes=None, masks=None)
        return fast_decode(ours.mask_decoder, cache, s, None, True)

    t0 = time.perf_counter()
    prepare_image(ours.mask_decoder, ours.prompt_encoder, emb)
    cache_ms = 1000 * (time.perf_counter() - t0)

    ref = meta_decoder()
    results: dict[str, object] = {
        "date": datetime.date.today().isoformat(), "torch": torch.__version__,
        "cpu": cpu_name(), "threads": torch.get_num_threads(), "cores": os.cpu_count(),
        "decoder_embedding": [1, 256, 64, 64], "decoder_prompt": "one positive point, "
        "multimask output, low-res logits", "decoder_runs": args.decoder_runs,
        "decoder_cache_ms_once_per_image": cache_ms,
        "load_average_at_start": os.getloadavg()[0],
        "command": "cd benchmarks && python bench_cpu_core.py",
    }
    # Interleave the three decoders twice so background load hits them alike.
    medians: dict[str, list[float]] = {"meta": [], "plain": [], "fast": []}
    for _ in range(2):
        for name, fn in (("meta", meta_decoder), ("plain", plain_decoder),
                         ("fast", fast_decoder)):
            medians[name].append(statistics.median(times_ms(fn, args.decoder_runs // 2)))
    for name, values in medians.items():
        results[f"decoder_{name}_ms_median"] = statistics.mean(values)
    for name, fn in (("plain", plain_decoder), ("fast", fast_decoder)):
        out = fn()
        results[f"decoder_{name}_max_abs_logit_diff_vs_meta"] = float(
            (out[0] - ref[0]).abs().max())
        results[f"decoder_{name}_max_abs_iou_diff_vs_meta"] = float(
            (out[1] - ref[1]).abs().max())
    results["decoder_speedup_fast_vs_meta"] = (results["decoder_meta_ms_median"]
                                               / results["decoder_fast_ms_median"])

    if args.encoder_runs == 0:
        for k, v in results.items():
            print(f"{k}: {v}")
        return
    enc: dict[str, list[float]] = {"meta": [], "ours": []}
    for _ in range(args.encoder_runs):
        for name, module in (("meta", meta.image_encoder), ("ours", ours.image_encoder)):
            t = time.perf_counter()
            out = module(x)
            enc[name].append(1000 * (time.perf_counter() - t))
    results["encoder_meta_ms_median"] = statistics.median(enc["meta"])
    results["encoder_ours_ms_median"] = statistics.median(enc["ours"])
    results["encoder_max_abs_diff"] = float((ours.image_encoder(x) - emb).abs().max())
    results["encoder_runs"] = args.encoder_runs

    results["load_average_at_end"] = os.getloadavg()[0]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    for k, v in results.items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
