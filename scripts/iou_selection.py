"""How well a FusionNet model's IoU head picks among its candidate masks for one centroid click.

    python scripts/iou_selection.py --checkpoint src/ultrasam/weights/default \\
        --data ../shared/data/us-corpus/MMOTU_2d --split val [--out selection.json]

For every instance of the split (at the model's training frame, through the training cache:
resized once, padded): one positive click at the mask's centroid, all 1 + 3 outputs decoded.
Reports the mean Dice of the single-mask output, of each multimask output, of the multimask
output with the highest predicted IoU (what ``ultrasam evaluate``'s ``point`` protocol and
``Predictor.predict(multimask_output=True)`` keep), of the best output per instance (an oracle:
the most a perfect IoU head could give), how often each output is kept and is best, and the
correlation of predicted and true IoU. The ``point`` protocol's own number comes from
``ultrasam evaluate`` at the stored resolution; this script explains it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    from ultrasam.modeling.fusion import FusionNet
    from ultrasam.train.fusion_cache import build_cache, load_cache
    from ultrasam.train.fusion_loop import batch_iou, build_eval_set, normalise
    from ultrasam.weights.checkpoints import load_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="native FusionNet model folder")
    ap.add_argument("--data", required=True, help="corpus dataset folder or COCO file")
    ap.add_argument("--split", default="val")
    ap.add_argument("--cache", default=None, help="cache folder (default: a temporary one)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint).float().eval()
    if not isinstance(model, FusionNet):
        raise SystemExit(f"{args.checkpoint}: not a FusionNet model")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.cache) if args.cache else Path(tmp) / "cache"
        cache = load_cache(build_cache([args.data], folder, model.img_size, split=args.split))
        ev = build_eval_set(cache, len(cache.sizes), seed=0)  # every image
    n = len(ev.masks)
    ious, preds = [], []
    with torch.inference_mode():
        for start in range(0, n, 32):
            sl = slice(start, start + 32)
            k = ev.masks[sl].shape[0]
            emb = model.encode(normalise(ev.x_raw[sl], ev.valid[sl], model))
            logits, iou = model.decode_all(emb, ev.points[sl][:, None],
                                           torch.ones(k, 1, dtype=torch.int64), None, None)
            ious.append(batch_iou(logits > 0, ev.masks[sl][:, None]))
            preds.append(iou.float())
    true_iou, pred = torch.cat(ious).numpy(), torch.cat(preds).numpy()
    dice = 2 * true_iou / (1 + true_iou)  # per mask, Dice is a function of IoU
    rows = np.arange(n)
    kept = 1 + pred[:, 1:].argmax(1)
    best = 1 + dice[:, 1:].argmax(1)
    result = {
        "checkpoint": str(args.checkpoint), "data": str(args.data), "split": args.split,
        "n_instances": int(n), "frame_px": model.img_size,
        "dice_single_output": float(dice[:, 0].mean()),
        "dice_multimask_output": [float(dice[:, j].mean()) for j in range(1, dice.shape[1])],
        "dice_kept_by_predicted_iou": float(dice[rows, kept].mean()),
        "dice_best_output_oracle": float(dice[:, 1:].max(1).mean()),
        "kept_counts": np.bincount(kept - 1, minlength=dice.shape[1] - 1).tolist(),
        "best_counts": np.bincount(best - 1, minlength=dice.shape[1] - 1).tolist(),
        "kept_is_best": float((kept == best).mean()),
        "predicted_vs_true_iou_corr": float(np.corrcoef(pred.ravel(), true_iou.ravel())[0, 1]),
        "predicted_iou_mae": float(np.abs(pred - true_iou).mean()),
    }
    text = json.dumps(result, indent=1)
    if args.out:  # written first: a closed stdout (a pipe into `head`) must not lose it
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
