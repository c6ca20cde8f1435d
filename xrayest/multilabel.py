"""Multi-label targets: several findings per X-ray, an (n, k) 0/1 indicator matrix.

scikit-learn's multilabel format: ``y[i, j] = 1`` when image ``i`` shows finding ``j``.  A -1 marks an
entry left out of training (an uncertain CheXpert label kept with ``uncertain="ignore"``):
:class:`MaskedBinaryCrossentropy` averages per-finding binary cross-entropy over the entries
that are not -1, and :func:`masked_binary_accuracy` scores the same entries.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

__all__ = ["masked_subset_accuracy", "masked_roc_auc",
           "MaskedBinaryCrossentropy", "masked_binary_accuracy"]


def masked_subset_accuracy(y_true, y_pred, sample_weight=None) -> float:
    """The share of images whose every known finding (target not -1) is predicted right."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    hits = np.all((y_pred == y_true) | (y_true == -1), axis=1)
    return float(np.average(hits, weights=sample_weight))


def masked_roc_auc(estimator, X, y) -> float:
    """Scorer (``GridSearchCV(scoring=...)``): the mean over findings of ROC AUC on their known entries."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y)
    proba = np.asarray(estimator.predict_proba(X))
    aucs = []
    for j in range(y.shape[1]):
        known = y[:, j] != -1
        if len(np.unique(y[known, j])) == 2:
            aucs.append(roc_auc_score(y[known, j], proba[known, j]))
    return float(np.mean(aucs)) if aucs else float("nan")


@keras.saving.register_keras_serializable(package="xrayest")
class MaskedBinaryCrossentropy(keras.losses.Loss):
    """Binary cross-entropy per finding, averaged over the entries whose target is not -1.

    Examples
    --------
    >>> import numpy as np
    >>> loss = MaskedBinaryCrossentropy()
    >>> y_true = np.array([[1.0, -1.0], [0.0, 1.0]], np.float32)
    >>> y_pred = np.array([[0.9, 0.2], [0.1, 0.8]], np.float32)
    >>> per_sample = [-np.log(0.9), -(np.log(0.9) + np.log(0.8)) / 2]  # the -1 entry is left out
    >>> bool(np.isclose(float(loss(y_true, y_pred)), np.mean(per_sample), rtol=1e-5))
    True
    """

    def __init__(self, name="masked_binary_crossentropy", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, y_pred.dtype)
        mask = ops.cast(ops.not_equal(y_true, -1.0), y_pred.dtype)
        p = ops.clip(y_pred, 1e-7, 1.0 - 1e-7)
        target = y_true * mask  # -1 entries become 0, then weigh nothing
        bce = -(target * ops.log(p) + (1.0 - target) * ops.log(1.0 - p))
        # per image: the mean over its known findings (an image with none counts 0)
        return ops.sum(bce * mask, axis=-1) / ops.maximum(ops.sum(mask, axis=-1), 1.0)

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction}


@keras.saving.register_keras_serializable(package="xrayest")
def masked_binary_accuracy(y_true, y_pred):
    """Per image: the share of its known findings (target not -1) predicted right at 0.5."""
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    mask = ops.cast(ops.not_equal(y_true, -1.0), "float32")
    hits = ops.cast(ops.equal(y_true, ops.cast(y_pred > 0.5, "float32")), "float32") * mask
    return ops.sum(hits, axis=-1) / ops.maximum(ops.sum(mask, axis=-1), 1.0)


def accuracy_metric():
    """``masked_binary_accuracy`` as a Keras metric logged as "accuracy"."""
    return keras.metrics.MeanMetricWrapper(masked_binary_accuracy, name="accuracy")
