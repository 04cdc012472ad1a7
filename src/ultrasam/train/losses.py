"""Segmentation losses as pure functions, and the choice of the best-matching output.

Shapes: ``logits`` P x M x H x W (P prompts, M mask outputs), ``target`` P x H x W in {0, 1}
(float), ``iou_pred`` P x M. Every per-prompt loss returns a length-P vector so that the caller
decides the normalisation (the loop divides by the number of prompts on all processes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sigmoid_focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0,
                       alpha: float = 0.25) -> torch.Tensor:
    """Focal loss per prompt (mean over pixels): P x H x W logits and targets -> P.

    FL = -alpha_t (1 - p_t)^gamma log(p_t), alpha_t = alpha for foreground pixels and
    1 - alpha for background (RetinaNet's definition, as in SAM).
    """
    _check(logits, target)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * target + (1 - p) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return loss.flatten(1).mean(1)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice loss per prompt: 1 - (2 sum(p t) + eps) / (sum(p) + sum(t) + eps) -> P."""
    _check(logits, target)
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    return 1 - (2 * (p * t).sum(1) + eps) / (p.sum(1) + t.sum(1) + eps)


def mask_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of the thresholded masks (logits > 0) with the target: P x M x H x W, P x H x W -> P x M.

    An empty prediction of an empty target counts as IoU 1.
    """
    pred = logits > 0
    t = (target > 0.5).unsqueeze(1)
    inter = (pred & t).flatten(2).sum(-1).float()
    union = (pred | t).flatten(2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def select_best(logits: torch.Tensor, target: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the output with the highest actual IoU per prompt, and those IoUs.

    logits P x M x H x W, target P x H x W -> (best P long, actual IoU P x M, no gradient).
    """
    with torch.no_grad():
        iou = mask_iou(logits.detach(), target)
    return iou.argmax(dim=1), iou


def prompt_losses(logits: torch.Tensor, iou_pred: torch.Tensor, target: torch.Tensor, *,
                  focal_weight: float = 20.0, dice_weight: float = 1.0, iou_weight: float = 1.0,
                  gamma: float = 2.0, alpha: float = 0.25, iou_on: str = "best"
                  ) -> dict[str, torch.Tensor]:
    """The reference loss on the best-matching output, per prompt.

    Returns length-P tensors: ``loss`` (weighted total), ``focal``, ``dice``, ``iou_mse``,
    ``best_iou`` (actual IoU of the chosen output, no gradient) and ``best`` (its index).
    ``iou_on="all"`` regresses every output's predicted IoU instead of the chosen one's.
    """
    if logits.ndim != 4 or iou_pred.shape != logits.shape[:2]:
        raise ValueError(f"logits must be P x M x H x W and iou_pred P x M, got "
                         f"{tuple(logits.shape)} and {tuple(iou_pred.shape)}")
    if iou_on not in ("best", "all"):
        raise ValueError(f"iou_on must be 'best' or 'all', got {iou_on!r}")
    logits = logits.float()
    iou_pred = iou_pred.float()
    best, actual = select_best(logits, target)
    rows = torch.arange(logits.shape[0], device=logits.device)
    chosen = logits[rows, best]
    focal = sigmoid_focal_loss(chosen, target, gamma, alpha)
    dice = dice_loss(chosen, target)
    if iou_on == "best":
        iou_mse = (iou_pred[rows, best] - actual[rows, best]) ** 2
    else:
        iou_mse = ((iou_pred - actual) ** 2).mean(1)
    total = focal_weight * focal + dice_weight * dice + iou_weight * iou_mse
    return {"loss": total, "focal": focal, "dice": dice, "iou_mse": iou_mse,
            "best_iou": actual[rows, best], "best": best}


def _check(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} "
                         "must have the same shape")
