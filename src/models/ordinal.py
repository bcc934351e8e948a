"""Ordinal losses and decoding for star ratings, where predicting 2 for a 1-star review is less
wrong than predicting 5.

Classes are indexed 0..K-1 (star s is class s - 1). Two ordinal terms can be added to the
cross-entropy, both computed from the predicted class distribution p:

- squared EMD: sum_k (CDF_p(k) - CDF_y(k))^2, the squared earth mover's distance between the
  predicted and the one-hot target distribution over ordered classes (Hou, Yu and Samaras,
  "Squared Earth Mover's Distance-based Loss for Training Deep Neural Networks", 2016);
- absolute error: sum_k p_k |k - y|, the expected absolute error of a prediction drawn from p.

Decoding turns a distribution into one class: the argmax minimises the expected 0-1 loss
(accuracy), the median minimises the expected absolute error (MAE).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

ORDINAL_LOSSES = ("squared_emd", "absolute_error")
DECODINGS = ("median", "argmax")


def squared_emd(probabilities: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Return the mean squared EMD between (batch, K) `probabilities` and (batch,) class indices."""
    num_classes = probabilities.shape[-1]
    predicted_cdf = probabilities.cumsum(dim=-1)  # (batch, K)
    classes = torch.arange(num_classes, device=targets.device)
    target_cdf = (classes[None, :] >= targets[:, None]).to(probabilities.dtype)  # (batch, K)
    return ((predicted_cdf - target_cdf) ** 2).sum(dim=-1).mean()


def expected_absolute_error(probabilities: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Return the mean of sum_k p_k |k - y| over the batch."""
    num_classes = probabilities.shape[-1]
    classes = torch.arange(num_classes, device=targets.device)
    distance = (classes[None, :] - targets[:, None]).abs().to(probabilities.dtype)  # (batch, K)
    return (probabilities * distance).sum(dim=-1).mean()


def ordinal_loss(logits: torch.Tensor, targets: torch.Tensor, kind: str = "squared_emd",
                 weight: float = 1.0) -> torch.Tensor:
    """Return cross-entropy plus `weight` times the ordinal term `kind` (one of ORDINAL_LOSSES).

    `logits` is (batch, K) and is computed in float32 here, because bfloat16 keeps only about
    three significant digits, too few for differences of CDFs. A `weight` of 0 gives plain cross-entropy.
    """
    logits = logits.float()
    loss = F.cross_entropy(logits, targets)
    if weight == 0:
        return loss
    probabilities = logits.softmax(dim=-1)
    if kind == "squared_emd":
        return loss + weight * squared_emd(probabilities, targets)
    if kind == "absolute_error":
        return loss + weight * expected_absolute_error(probabilities, targets)
    raise ValueError(f"kind={kind!r} must be one of {list(ORDINAL_LOSSES)}")


def median_class(probabilities: np.ndarray) -> np.ndarray:
    """Return, per row of (n, K) `probabilities`, the smallest class whose CDF reaches 0.5.

    That lower median minimises the expected absolute error. Rows are renormalised first, so
    rounding in a sum of 0.9999999 cannot push the median past the last class.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    cdf = np.cumsum(probabilities, axis=1) / probabilities.sum(axis=1, keepdims=True)
    # The tolerance keeps an exact 0.5 (e.g. 0.2 + 0.3) from rounding to just below it.
    below_half = cdf < 0.5 - 1e-9
    return below_half.sum(axis=1)


def argmax_class(probabilities: np.ndarray) -> np.ndarray:
    """Return the most probable class per row (the first one on ties)."""
    return np.asarray(probabilities).argmax(axis=1)


def decode(probabilities: np.ndarray, decoding: str) -> np.ndarray:
    """Return one class index per row of (n, K) `probabilities` by `decoding` (see DECODINGS)."""
    if decoding == "median":
        return median_class(probabilities)
    if decoding == "argmax":
        return argmax_class(probabilities)
    raise ValueError(f"decoding={decoding!r} must be one of {list(DECODINGS)}")


def expected_class(probabilities: np.ndarray) -> np.ndarray:
    """Return the mean class index sum_k k p_k per row."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    return probabilities @ np.arange(probabilities.shape[1], dtype=np.float64)


def confusion_matrix(targets: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Return the (K, K) count matrix whose entry [i, j] counts class i predicted as class j."""
    flat = np.asarray(targets, dtype=np.int64) * num_classes + np.asarray(predictions, np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def scores_from_confusion(confusion: np.ndarray) -> dict[str, float]:
    """Return accuracy, MAE (in classes, so in stars) and macro-F1 of a confusion matrix.

    Macro-F1 averages the per-class F1 over the classes that are true or predicted at least
    once, as scikit-learn's `f1_score(average="macro")` does without a `labels` argument.
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    total = confusion.sum()
    if total == 0:
        return {"accuracy": float("nan"), "mae": float("nan"), "macro_f1": float("nan")}
    classes = np.arange(confusion.shape[0])
    distance = np.abs(classes[:, None] - classes[None, :])
    true_positives = np.diag(confusion)
    denominator = confusion.sum(axis=0) + confusion.sum(axis=1)
    f1 = np.divide(2 * true_positives, denominator, out=np.zeros_like(true_positives),
                   where=denominator > 0)
    return {
        "accuracy": float(true_positives.sum() / total),
        "mae": float((confusion * distance).sum() / total),
        "macro_f1": float(f1[denominator > 0].mean()),
    }
