"""Per-example outputs, task metrics and prediction-collapse statistics for classifiers.

Every function takes numpy arrays or torch tensors and computes in numpy. Labels and
predictions are integer class ids in ``[0, num_labels)``. Confusion matrices have the
true label on the rows and the predicted label on the columns. `score_confusion` scores
a whole stack of them, so the bootstrap in `svutils.stats` scores thousands of resamples
in one call with the same formulas as `score`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

METRICS = ("accuracy", "f1", "mcc")
"""Metric names accepted by `score` and `score_confusion`."""


def as_numpy(values: Any, *, name: str) -> np.ndarray:
    """Convert a numpy array, a torch tensor or a sequence to a numpy array.

    Torch tensors are detached and copied to the CPU. `name` is used in error messages.
    """
    if hasattr(values, "detach") and hasattr(values, "cpu"):
        values = values.detach().cpu().numpy()
    try:
        return np.asarray(values)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be an array or a tensor, got {type(values).__name__}: {error}") from error


def as_class_ids(values: Any, *, name: str) -> np.ndarray:
    """Validate 1-D integer class ids and return them as an int64 array.

    Booleans count as the classes 0 and 1. Floats are rejected even when they hold whole
    numbers, because they usually mean that probabilities or logits were passed by mistake.
    """
    array = as_numpy(values, name=name)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D with one class id per example, got shape {array.shape}")
    if array.dtype == np.bool_:
        return array.astype(np.int64)
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(
            f"{name} must contain integer class ids, got dtype {array.dtype}; "
            "take the argmax of logits first, or cast whole-number floats with .astype(int)"
        )
    array = array.astype(np.int64, copy=False)
    if array.size and array.min() < 0:
        raise ValueError(f"{name} contains the negative class id {int(array.min())}; class ids start at 0")
    return array


def _check_same_length(first: np.ndarray, second: np.ndarray, names: tuple[str, str]) -> None:
    if first.shape[0] != second.shape[0]:
        raise ValueError(
            f"{names[0]} has {first.shape[0]} examples but {names[1]} has {second.shape[0]}; "
            "pass both for the same examples in the same order"
        )


def _check_num_labels(num_labels: int, *, minimum: int) -> int:
    if isinstance(num_labels, bool) or not isinstance(num_labels, (int, np.integer)):
        raise TypeError(f"num_labels must be an int, got {type(num_labels).__name__}")
    if num_labels < minimum:
        raise ValueError(f"num_labels must be at least {minimum}, got {num_labels}")
    return int(num_labels)


def _check_below(array: np.ndarray, num_labels: int, name: str) -> None:
    if array.size and array.max() >= num_labels:
        raise ValueError(
            f"{name} contains the class id {int(array.max())}, but num_labels is {num_labels}; "
            f"valid ids are 0..{num_labels - 1}"
        )


def per_example_outputs(logits: Any, labels: Any) -> dict[str, np.ndarray]:
    """Compute the prediction, correctness and cross-entropy loss of each example.

    `logits` is [N, C] and `labels` is [N] with ids in ``[0, C)``. Returns ``pred`` (int64
    [N], the argmax, so ties go to the lowest class id), ``correct`` (bool [N]) and
    ``loss`` (float64 [N], natural-log cross-entropy from a float64 log-softmax, so large
    logits do not overflow). Raises ValueError on NaN or infinite logits.
    """
    logits = as_numpy(logits, name="logits")
    if logits.ndim != 2:
        raise ValueError(f"logits must be 2-D [examples, classes], got shape {logits.shape}")
    if logits.shape[1] < 1:
        raise ValueError("logits has no class column; expected shape [examples, classes] with classes >= 1")
    if not np.issubdtype(logits.dtype, np.number) or np.issubdtype(logits.dtype, np.complexfloating):
        raise TypeError(f"logits must be real numbers, got dtype {logits.dtype}")
    labels = as_class_ids(labels, name="labels")
    _check_same_length(logits, labels, ("logits", "labels"))
    _check_below(labels, logits.shape[1], "labels")

    logits = logits.astype(np.float64, copy=False)
    finite = np.isfinite(logits).all(axis=1)
    if not finite.all():
        bad_rows = np.flatnonzero(~finite)
        raise ValueError(
            f"logits contain NaN or infinite values in {bad_rows.size} rows (first rows: {bad_rows[:5].tolist()}); "
            "check the model outputs before scoring"
        )

    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    pred = logits.argmax(axis=1).astype(np.int64)
    loss = -log_probs[np.arange(labels.shape[0]), labels]
    return {"pred": pred, "correct": pred == labels, "loss": loss}


def confusion_matrix(pred: Any, labels: Any, num_labels: int | None = None) -> np.ndarray:
    """Count examples per (true label, predicted label) pair as an int64 [K, K] matrix.

    K is `num_labels`, or one more than the largest id in `pred` and `labels` when None.
    """
    pred = as_class_ids(pred, name="pred")
    labels = as_class_ids(labels, name="labels")
    _check_same_length(pred, labels, ("pred", "labels"))
    if num_labels is None:
        num_labels = int(max(pred.max(initial=0), labels.max(initial=0))) + 1
    num_labels = _check_num_labels(num_labels, minimum=1)
    _check_below(pred, num_labels, "pred")
    _check_below(labels, num_labels, "labels")
    codes = labels * num_labels + pred
    return np.bincount(codes, minlength=num_labels * num_labels).reshape(num_labels, num_labels)


def _check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid metrics are {', '.join(METRICS)}")
    return metric


def score_confusion(metric: str, confusion: np.ndarray) -> np.ndarray:
    """Compute `metric` from confusion matrices of shape [..., K, K], one value per matrix.

    Rows are true labels and columns are predictions. "f1" is binary F1 of class 1 and
    needs K = 2. It is 2·TP / (2·TP + FP + FN), and 0 when that denominator is 0, like
    scikit-learn's ``f1_score(zero_division=0)``. "mcc" is the multi-class Matthews
    correlation (Gorodkin's R_K, the formula of scikit-learn's ``matthews_corrcoef``),
    and 0 when it is undefined because all true labels or all predictions fall in one
    class. Raises ValueError for an empty set of examples.
    """
    _check_metric(metric)
    confusion = np.asarray(confusion)
    if confusion.ndim < 2 or confusion.shape[-1] != confusion.shape[-2]:
        raise ValueError(f"confusion must have shape [..., K, K], got {confusion.shape}")
    confusion = confusion.astype(np.float64)
    total = confusion.sum(axis=(-2, -1))
    if np.any(total == 0):
        raise ValueError(f"cannot compute {metric} on zero examples; pass at least one example")

    if metric == "accuracy":
        return np.trace(confusion, axis1=-2, axis2=-1) / total

    if metric == "f1":
        if confusion.shape[-1] != 2:
            raise ValueError(
                f"f1 is binary F1 of class 1 and needs 2 classes, got {confusion.shape[-1]}; "
                "use accuracy or mcc for multi-class tasks"
            )
        true_positive = confusion[..., 1, 1]
        false_positive = confusion[..., 0, 1]
        false_negative = confusion[..., 1, 0]
        denominator = 2 * true_positive + false_positive + false_negative
        return np.divide(
            2 * true_positive, denominator, out=np.zeros_like(denominator), where=denominator > 0
        )

    true_counts = confusion.sum(axis=-1)
    pred_counts = confusion.sum(axis=-2)
    correct = np.trace(confusion, axis1=-2, axis2=-1)
    covariance_true_pred = correct * total - (true_counts * pred_counts).sum(axis=-1)
    covariance_pred = total**2 - (pred_counts**2).sum(axis=-1)
    covariance_true = total**2 - (true_counts**2).sum(axis=-1)
    denominator = np.sqrt(covariance_pred * covariance_true)
    return np.divide(
        covariance_true_pred, denominator, out=np.zeros_like(denominator), where=denominator > 0
    )


def score(metric: str, pred: Any, labels: Any) -> float:
    """Compute "accuracy", "f1" (binary, class 1 is positive) or "mcc" of predictions.

    `pred` and `labels` are [N] integer class ids with N >= 1. See `score_confusion` for
    the definitions and the values used where F1 or MCC is undefined.
    """
    _check_metric(metric)
    pred = as_class_ids(pred, name="pred")
    labels = as_class_ids(labels, name="labels")
    _check_same_length(pred, labels, ("pred", "labels"))
    if pred.size == 0:
        raise ValueError(f"cannot compute {metric} on zero examples; pass at least one example")
    num_labels = int(max(pred.max(), labels.max())) + 1
    if metric == "f1":
        if num_labels > 2:
            raise ValueError(
                f"f1 is binary F1 of class 1, but the class ids go up to {num_labels - 1}; "
                "use accuracy or mcc for multi-class tasks"
            )
        num_labels = 2
    return float(score_confusion(metric, confusion_matrix(pred, labels, num_labels)))


def collapse_stats(pred: Any, num_labels: int, *, threshold: float = 0.95) -> dict[str, Any]:
    """Measure how far predictions have collapsed onto one class.

    Returns ``majority_class`` (most frequent prediction, lowest id on ties),
    ``majority_share`` (its share of the N predictions), ``pred_entropy`` (entropy of the
    predicted-class distribution divided by log2(num_labels), so 1 is uniform and 0 is a
    single class), ``pred_entropy_bits`` (the same entropy in bits), ``class_shares``
    (share of each class id), ``n`` and ``collapsed`` (majority_share >= threshold).
    """
    num_labels = _check_num_labels(num_labels, minimum=2)
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    pred = as_class_ids(pred, name="pred")
    if pred.size == 0:
        raise ValueError("cannot compute collapse statistics of zero predictions")
    _check_below(pred, num_labels, "pred")

    counts = np.bincount(pred, minlength=num_labels)
    shares = counts / pred.size
    nonzero = shares[shares > 0]
    # Adding 0.0 turns the -0.0 of a single class into 0.0.
    entropy_bits = float(-(nonzero * np.log2(nonzero)).sum()) + 0.0
    majority_class = int(counts.argmax())
    majority_share = float(shares[majority_class])
    return {
        "majority_class": majority_class,
        "majority_share": majority_share,
        "pred_entropy": entropy_bits / float(np.log2(num_labels)),
        "pred_entropy_bits": entropy_bits,
        "class_shares": shares.tolist(),
        "n": int(pred.size),
        "collapsed": majority_share >= threshold,
    }


def majority_rate(labels: Any, num_labels: int) -> float:
    """Return the accuracy of always predicting the most frequent true label."""
    num_labels = _check_num_labels(num_labels, minimum=1)
    labels = as_class_ids(labels, name="labels")
    if labels.size == 0:
        raise ValueError("cannot compute the majority rate of zero labels")
    _check_below(labels, num_labels, "labels")
    return float(np.bincount(labels, minlength=num_labels).max() / labels.size)
