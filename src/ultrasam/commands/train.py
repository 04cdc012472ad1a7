"""``ultrasam train CONFIG.yaml [key=value ...]``: fine-tune or train a SAM-family model."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train", help="train or fine-tune a model (YAML config + key=value overrides)",
        description="Train as CONFIG.yaml says; dotted key=value overrides replace its values "
                    "(e.g. optim.lr=3e-4 run.steps=2000 data.weights.TG3K=0.5). Multi-GPU / "
                    "multi-node: torchrun --nproc-per-node N -m ultrasam.cli train ... . "
                    "A run continues from the newest checkpoint in run.out_dir unless "
                    "run.resume=never.")
    p.add_argument("config", help="training config (YAML, or JSON without PyYAML); see configs/")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ultrasam.train.fusion_loop import is_fusion_config, load_fusion_config, train_fusion

    if is_fusion_config(args.config):
        # The early-fusion CPU recipe of the default model (configs/default_cpu.yaml).
        result = train_fusion(load_fusion_config(args.config, args.overrides))
    else:
        from ultrasam.train import load_config, train

        result = train(load_config(args.config, args.overrides))
    print(json.dumps(result, indent=1, sort_keys=True))
    return 0
