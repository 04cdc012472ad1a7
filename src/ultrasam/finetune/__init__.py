"""Downstream transfer: fine-tune any promptable model's image encoder for ultrasound
classification (pooled linear or attention-pooling head) and prompt-free segmentation (a light
FPN decoder), with linear-probe, full, partial and LoRA modes, group-aware splits, class
balancing, early stopping, exact resume and reports (``ultrasam finetune classify|segment``).
"""

from .api import classify, segment
from .config import FinetuneConfig

__all__ = ["FinetuneConfig", "classify", "segment"]
