"""Evaluation: the paper's prompted protocol, robustness sweeps, baselines and reports.

``evaluate`` is the entry point (``ultrasam evaluate``); the metric, COCO, prompt and baseline
modules are usable on their own.
"""

from __future__ import annotations

from ultrasam.evaluate.coco_eval import class_agnostic, coco_map, load_ground_truth
from ultrasam.evaluate.interactive import NocSettings
from ultrasam.evaluate.metrics import dice, hd95, instance_scores, iou
from ultrasam.evaluate.protocol import PROTOCOLS, evaluate

__all__ = ["PROTOCOLS", "NocSettings", "class_agnostic", "coco_map", "dice", "evaluate", "hd95",
           "instance_scores", "iou", "load_ground_truth"]
