"""Classification metrics with numpy: accuracy, per-class precision/recall/F1, confusion."""

import numpy as np

from common.confusion import confusion_matrix


def safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Elementwise division with 0 where the denominator is 0 (no NaN in the results)."""
    numerator = np.asarray(numerator, np.float64)
    denominator = np.asarray(denominator, np.float64)
    out = np.zeros_like(numerator)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def classification_report(labels: np.ndarray, probabilities: np.ndarray, names: list[str]) -> dict:
    """Accuracy, macro F1, per-class precision/recall/F1/support and the confusion matrix."""
    predicted = np.asarray(probabilities).argmax(axis=1)
    counts = confusion_matrix(labels, predicted, len(names))
    hits = np.diag(counts)
    precision = safe_divide(hits, counts.sum(axis=0))
    recall = safe_divide(hits, counts.sum(axis=1))
    f1 = safe_divide(2 * precision * recall, precision + recall)
    return {
        "count": int(counts.sum()),
        "accuracy": float(hits.sum() / max(counts.sum(), 1)),
        "macro_f1": float(f1.mean()),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(counts[i].sum()),
            }
            for i, name in enumerate(names)
        },
        "confusion": counts.tolist(),
    }


def agreement(first: np.ndarray, second: np.ndarray) -> dict:
    """How closely two formats' probabilities agree on the same images."""
    first, second = np.asarray(first, np.float64), np.asarray(second, np.float64)
    return {
        "label_agreement": float(np.mean(first.argmax(axis=1) == second.argmax(axis=1))),
        "max_abs_probability_difference": float(np.max(np.abs(first - second), initial=0.0)),
    }
