"""Downstream transfer: fine-tune any promptable model's image encoder for ultrasound
classification (pooled linear or attention-pooling head) and prompt-free segmentation (a light
FPN decoder), with linear-probe, full, partial and LoRA modes, group-aware splits, class
balancing, early stopping, exact resume and reports (``ultrasam finetune classify|segment``);
saved runs applied to new images (``ultrasam finetune predict``).
"""

from .api import classify, segment
from .cache import RunCache
from .config import FinetuneConfig
from .predict import FinetunedModel, load_finetuned, predict_files

__all__ = ["FinetuneConfig", "FinetunedModel", "RunCache", "classify", "load_finetuned",
           "predict_files", "segment"]
