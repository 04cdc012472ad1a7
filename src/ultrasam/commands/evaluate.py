"""``ultrasam evaluate``: prompted evaluation of checkpoints against baselines."""

from __future__ import annotations

import argparse
from typing import Any

BASELINE_CHOICES = ("ellipse", "grabcut")
# ultrasam.evaluate.protocol.ALL_PROTOCOLS, spelled out so that parsing imports nothing heavy
# (a test keeps the two equal).
PROTOCOL_CHOICES = ("box", "box_refine", "point", "point_refine", "noc")


def _baselines(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in BASELINE_CHOICES]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown baseline(s) {bad}; choose from "
                                         f"{list(BASELINE_CHOICES)}")
    return names


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "evaluate", help="COCO mask mAP, Dice, IoU, HD95 of prompted checkpoints vs baselines",
        description="Evaluate checkpoints with the UltraSam protocol (centroid point and exact "
                    "GT box, with and without refinement), robustness sweeps and the ellipse / "
                    "GrabCut baselines; writes per-protocol predictions and metrics, "
                    "summary.md/csv, plots and example overlays into --out.")
    p.add_argument("--checkpoint", action="append", default=None, metavar="CKPT",
                   help="checkpoint file or folder (repeatable; default: the bundled model)")
    p.add_argument("--data", required=True,
                   help="COCO JSON (annotations.coco.json or merged) or corpus folder")
    p.add_argument("--split", default=None, help="keep only images whose split is S")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--max-images", type=int, default=None, metavar="N",
                   help="seeded random subset of N images with instances")
    p.add_argument("--no-sweeps", action="store_true", help="skip the robustness sweeps")
    p.add_argument("--baselines", type=_baselines, default=list(BASELINE_CHOICES),
                   metavar="LIST", help="comma-separated baselines (default: ellipse,grabcut; "
                                        "'' for none)")
    p.add_argument("--baselines-only", action="store_true",
                   help="evaluate the baselines only (no model needed)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of every sampled prompt")
    p.add_argument("--protocols", nargs="+", choices=PROTOCOL_CHOICES, default=None,
                   metavar="P", help="protocols to run, among " + ", ".join(PROTOCOL_CHOICES)
                   + " (default: the paper's four; 'noc' adds the interactive corrective-click "
                     "protocol: NoC@85/90, failures, mean IoU after 1/3/5 clicks)")
    p.add_argument("--max-clicks", type=int, default=None, metavar="N",
                   help="noc: clicks per instance at most (default 20)")
    p.add_argument("--no-mask-prompt", action="store_true",
                   help="noc: do not pass the previous prediction's low-res logits as the mask "
                        "prompt of the next click (default: pass them, as RITM/SAM do)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ultrasam.evaluate import evaluate

    if args.baselines_only and args.checkpoint:
        raise ValueError("--baselines-only and --checkpoint exclude each other")
    checkpoints = [] if args.baselines_only else args.checkpoint
    kw: dict[str, Any] = {}
    if args.protocols is not None:
        kw["protocols"] = list(dict.fromkeys(args.protocols))
    if args.max_clicks is not None or args.no_mask_prompt:
        if "noc" not in kw.get("protocols", ()):
            raise ValueError("--max-clicks and --no-mask-prompt apply to '--protocols ... noc'")
        from ultrasam.evaluate.interactive import NocSettings

        opts: dict[str, Any] = {"mask_prompt": not args.no_mask_prompt}
        if args.max_clicks is not None:
            opts["max_clicks"] = args.max_clicks
        kw["noc"] = NocSettings(**opts)
    result = evaluate(checkpoints, args.data, args.out, split=args.split,
                      baselines=args.baselines, sweeps=not args.no_sweeps,
                      max_images=args.max_images, device=args.device, seed=args.seed, **kw)
    if result["interactive"]:
        from ultrasam.evaluate.protocol import noc_text

        for m in result["interactive"]:
            t = m["timing"]
            print(f"{m['checkpoint']} noc: {noc_text(m)} ({m['n_instances']} instances, "
                  f"{t['clicks']} clicks, {t['clicks_per_s'] or 0:.1f} clicks/s)")
    print(f"wrote {result['out_dir']}/summary.md")
    return 0
