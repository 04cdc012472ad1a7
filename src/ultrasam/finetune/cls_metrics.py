"""Classification metrics with percentile-bootstrap confidence intervals, and calibration.

Definitions (one place, so that reports and tests agree):

- **accuracy**: fraction of cases whose arg-max class is the true one;
- **balanced accuracy**: mean over the classes present in the truth of their recall;
- **macro F1**: mean over the classes present in the truth or the predictions of
  2 TP / (2 TP + FP + FN) (a class never predicted and never true is skipped; one predicted
  but never true scores 0);
- **one-vs-rest AUC**: per class with both positives and negatives in the truth, the
  Mann-Whitney probability that a positive outranks a negative on that class's probability
  (ties count half); macro = the mean of those;
- **confusion matrix**: counts, rows true class, columns predicted class;
- **confidence intervals**: percentile bootstrap over cases (seeded, ``N_BOOTSTRAP``
  resamples, 95 %) of every scalar metric and of each cell of the row-normalised matrix;
- **calibration**: the top-label confidence in ``N_BINS`` equal-width bins; expected
  calibration error (ECE) = sum over bins of |accuracy - confidence| x bin share.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..evaluate.metrics import CI_LEVEL, N_BOOTSTRAP

N_BINS = 10


def _check(y_true: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or y.ndim != 1 or len(y) != len(p) or len(y) == 0:
        raise ValueError(f"need N labels and N x K probabilities (N > 0), got {y.shape} and "
                         f"{p.shape}")
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError(f"labels must lie in 0..{p.shape[1] - 1}")
    return y.astype(np.int64), p


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """K x K counts (rows true, columns predicted)."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return cm


def balanced_accuracy(cm: np.ndarray) -> float:
    support = cm.sum(axis=1)
    present = support > 0
    return float((np.diag(cm)[present] / support[present]).mean())


def macro_f1(cm: np.ndarray) -> float:
    tp = np.diag(cm).astype(np.float64)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    used = (cm.sum(axis=0) + cm.sum(axis=1)) > 0
    return float((2 * tp[used] / (2 * tp[used] + fp[used] + fn[used])).mean())


def binary_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney AUC of ``scores`` for the boolean ``positive`` (NaN without both kinds)."""
    pos = np.asarray(positive, bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    # Average ranks (ties share the mean of their 1-based ranks) -> U of the positives.
    _, inverse, counts = np.unique(np.asarray(scores, np.float64), return_inverse=True,
                                   return_counts=True)
    r = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]
    u = r[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def ovr_auc(y: np.ndarray, probs: np.ndarray) -> tuple[float, list[float]]:
    """Macro one-vs-rest AUC and the per-class values (NaN where undefined)."""
    per = [binary_auc(probs[:, k], y == k) for k in range(probs.shape[1])]
    finite = [v for v in per if not math.isnan(v)]
    return (float(np.mean(finite)) if finite else math.nan), per


def point_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro F1, macro OvR AUC, confusion matrix (no CIs)."""
    y, p = _check(y_true, probs)
    pred = p.argmax(axis=1)
    cm = confusion_matrix(y, pred, p.shape[1])
    auc, per_class = ovr_auc(y, p)
    return {"accuracy": float((pred == y).mean()), "balanced_accuracy": balanced_accuracy(cm),
            "macro_f1": macro_f1(cm), "auc_ovr": auc, "auc_per_class": per_class,
            "confusion": cm.tolist()}


SCALARS = ("accuracy", "balanced_accuracy", "macro_f1", "auc_ovr")


def calibration(y_true: np.ndarray, probs: np.ndarray, n_bins: int = N_BINS) -> dict[str, Any]:
    """Reliability bins of the top-label confidence and the ECE (module docstring)."""
    y, p = _check(y_true, probs)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        sel = idx == b
        n = int(sel.sum())
        acc = float(correct[sel].mean()) if n else None
        mean_conf = float(conf[sel].mean()) if n else None
        if n:
            ece += abs(acc - mean_conf) * n / len(y)  # type: ignore[operator]
        bins.append({"low": float(edges[b]), "high": float(edges[b + 1]), "n": n,
                     "accuracy": acc, "confidence": mean_conf})
    return {"ece": float(ece), "bins": bins}


def classification_report(y_true: np.ndarray, probs: np.ndarray, n_boot: int = N_BOOTSTRAP,
                          level: float = CI_LEVEL, seed: int = 0) -> dict[str, Any]:
    """Point metrics, bootstrap CIs (``<metric>_ci`` [low, high], ``confusion_norm`` with
    ``confusion_norm_ci``) and calibration."""
    y, p = _check(y_true, probs)
    out = point_metrics(y, p)
    k = p.shape[1]
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {m: [] for m in SCALARS}
    norms = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        m = point_metrics(y[idx], p[idx])
        for name in SCALARS:
            samples[name].append(m[name])
        cm = np.asarray(m["confusion"], np.float64)
        norms.append(cm / np.maximum(cm.sum(axis=1, keepdims=True), 1))
    alpha = (1.0 - level) / 2.0
    for name in SCALARS:
        v = np.asarray(samples[name])
        v = v[~np.isnan(v)]
        out[f"{name}_ci"] = ([float(x) for x in np.quantile(v, [alpha, 1 - alpha])]
                             if v.size else [None, None])
    cm = np.asarray(out["confusion"], np.float64)
    out["confusion_norm"] = (cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)).tolist()
    stack = np.stack(norms) if norms else np.zeros((0, k, k))
    out["confusion_norm_ci"] = (np.quantile(stack, [alpha, 1 - alpha], axis=0).tolist()
                                if len(stack) else None)
    out["calibration"] = calibration(y, p)
    out["n"] = len(y)
    return out
