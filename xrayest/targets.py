"""The labels of a fit: ``y`` (with ``sample_weight``, ``class_weight`` and ``groups``) checked once and
turned into what training needs.

``fit_targets`` reads ``y`` as scikit-learn does (positionally: a pandas index is never used),
decides single-label or multi-label (an ``(n, k)`` 0/1 indicator matrix, scipy sparse accepted),
checks it against the images, encodes it, and computes the per-image training weights; the result
(``Targets``) also knows the head's output count and shapes labels for the head's loss.
Every problem is a ``ValueError`` naming it.

Examples
--------
>>> import numpy as np
>>> from xrayest.targets import fit_targets
>>> targets = fit_targets(["covid", "normal", "covid"], 3, class_weight="balanced")
>>> targets.classes.tolist(), targets.encoded.tolist(), targets.n_outputs
(['covid', 'normal'], [0, 1, 0], 1)
>>> targets.weights.round(2).tolist()
[0.75, 1.5, 0.75]
>>> targets.shaped().ravel().tolist()  # one sigmoid: (n, 1) floats
[0.0, 1.0, 0.0]
>>> fit_targets(np.array([[1, 0], [0, 1], [1, 1]]), 3).multilabel
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Targets", "fit_targets", "check_labels", "check_multilabel", "check_groups", "dense_target",
           "is_multilabel", "sample_weights", "output_count", "missing_positions"]


@dataclass(frozen=True)
class Targets:
    """The labels of one fit.

    Attributes
    ----------
    classes : ndarray, or list of ``array([0, 1])`` (multi-label: one per finding)
    encoded : ndarray
        Class indices ``(n,)``, or the float32 ``(n, k)`` matrix (-1: left out of the loss).
    weights : ndarray or None
        Per-image training weights (``class_weight`` times ``sample_weight``).
    multilabel : bool
    n_outputs : int
        Outputs of the head: one sigmoid for two classes, else one per class or finding.
    """

    classes: object
    encoded: np.ndarray
    weights: object
    multilabel: bool
    n_outputs: int

    def shaped(self, labels=None) -> np.ndarray:
        """Encoded ``labels`` (default: all of this fit's) shaped for the head's loss: ``(n, k)`` floats for
        several sigmoids, ``(n, 1)`` floats for one sigmoid, int class indices for a softmax."""
        y = np.asarray(self.encoded if labels is None else labels)
        if self.multilabel:
            return y.astype(np.float32)
        if self.n_outputs == 1:
            return y.reshape(len(y), 1).astype(np.float32)
        return y.reshape(len(y)).astype(np.int32)

    def encode(self, labels, n_images: int) -> np.ndarray:
        """Labels of other images (``validation_data``'s) encoded as this fit's; labels ``y`` never had are an
        error."""
        labels = np.asarray(labels)
        if self.multilabel:
            if labels.shape != (n_images, len(self.classes)):
                raise ValueError(f"validation_data's y has shape {labels.shape}; expected ({n_images}, "
                                 f"{len(self.classes)}) like y")
            return labels.astype(np.float32)
        if len(labels) != n_images:
            raise ValueError(f"validation_data has {n_images} images but {len(labels)} labels")
        unknown = sorted(set(labels.tolist()) - set(self.classes.tolist()), key=str)
        if unknown:
            raise ValueError(f"validation_data has labels {unknown} that are not in y")
        return np.searchsorted(self.classes, labels)


def fit_targets(y, n_images: int, *, class_weight=None, sample_weight=None,
                estimator: str = "XrayCNNClassifier") -> Targets:
    """``y`` checked against ``n_images`` images and encoded, with the per-image weights (``Targets``)."""
    if y is None:
        raise ValueError(f"{estimator} requires y to be passed, but the target y is None")
    y = dense_target(y)
    multilabel = is_multilabel(y)
    if multilabel:
        classes, encoded = check_multilabel(y, n_images)
        if class_weight is not None:
            raise ValueError("class_weight weighs the classes of a single-label y; with a multi-label y "
                             "pass per-image sample_weight instead")
        weights = sample_weights(encoded, None, sample_weight)
    else:
        classes, encoded = check_labels(y, n_images)
        weights = sample_weights(classes[encoded], class_weight, sample_weight)
    return Targets(classes, encoded, weights, multilabel, output_count(len(classes), multilabel))


def unlabeled_rows(y):
    """``(labeled, unlabeled)`` row indices of a 1-D ``y`` of string labels whose entries -1 (the int, or the
    string "-1") mark unlabeled images, as scikit-learn's semi-supervised estimators take them; None when ``y``
    has none, holds numeric labels (where -1 is a class, as in scikit-learn's binary -1 / 1), or is a
    multi-label matrix (where -1 marks a finding left out of the loss).

    >>> unlabeled_rows(["normal", "-1", "viral", -1])
    (array([0, 2]), array([1, 3]))
    >>> unlabeled_rows([-1, 1, 1]) is None   # numeric labels: -1 is a class
    True
    """
    target = dense_target(y)
    array = np.asarray(target, dtype=object) if not isinstance(target, np.ndarray) else target
    if array.ndim == 2 and array.shape[1] == 1:
        array = array.reshape(-1)
    if array.ndim != 1:
        return None
    values = array.tolist()
    marked = np.array([(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v == -1)
                       or (isinstance(v, (str, np.str_)) and v == "-1") for v in values], bool)
    if not marked.any() or not all(isinstance(v, (str, np.str_)) for v, m in zip(values, marked) if not m):
        return None  # numeric labels: -1 is a class (scikit-learn's binary -1 / 1)
    if marked.all():
        raise ValueError(f"every label of y is -1 (unlabeled, {len(array)} images): fit needs labeled images too")
    return np.flatnonzero(~marked), np.flatnonzero(marked)


def labeled_values(y, rows) -> np.ndarray:
    """The labels of ``y`` at ``rows`` (the labeled ones of :func:`unlabeled_rows`) as a plain array: strings stay
    strings and numbers numbers once the -1 entries are gone."""
    values = np.asarray(dense_target(y), dtype=object).reshape(-1)[np.asarray(rows, dtype=np.intp)]
    return np.array(values.tolist())


def output_count(n_classes: int, multilabel: bool) -> int:
    """Outputs of the head: one sigmoid for two classes, else one per class (softmax) or per finding (sigmoids).

    >>> output_count(2, False), output_count(3, False), output_count(2, True)
    (1, 3, 2)
    """
    return n_classes if multilabel or n_classes != 2 else 1


# ---------------------------------------------------------------- single-label y
def _is_missing(value) -> bool:
    return value is None or (isinstance(value, (float, np.floating)) and np.isnan(value))


def missing_positions(values) -> list[int]:
    """Positions of the None or NaN entries of a 1-D sequence (labels, patient groups)."""
    return [i for i, value in enumerate(values) if _is_missing(value)]


def _first(positions, shown=5) -> str:
    return ", ".join(map(str, positions[:shown])) + (", ..." if len(positions) > shown else "")


def check_labels(y, n_images: int):
    """Class labels as a 1-D array, checked against X: ``(classes, encoded)``.

    Raises
    ------
    ValueError
        y of the wrong shape or length, missing labels (None or NaN, with how many and
        where), continuous values, or a single class.
    """
    from sklearn.utils import column_or_1d
    from sklearn.utils.multiclass import check_classification_targets

    def refuse_missing(values):
        missing = missing_positions(values)
        if missing:
            raise ValueError(f"y has {len(missing)} missing labels (None or NaN) at positions {_first(missing)}")

    if isinstance(y, (list, tuple)) or (isinstance(y, np.ndarray) and y.dtype == object):
        raw = np.asarray(y, dtype=object)
        kinds = {"text" if isinstance(v, (str, bytes)) else "number" for v in np.ravel(raw) if not _is_missing(v)}
        if len(kinds) > 1:
            raise ValueError("y mixes text and numeric labels (e.g. 'covid' and 1); use one type for every label")
        if raw.ndim == 1:  # before numpy turns a NaN among strings into the string "nan"
            refuse_missing(raw)
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = column_or_1d(y, warn=True)
    elif y.ndim != 1:
        raise ValueError(f"y must be a 1-D array of class labels; got shape {y.shape}")
    if len(y) != n_images:
        raise ValueError(f"X has {n_images} images but y has {len(y)} labels")
    if len(y) == 0:
        raise ValueError("y is empty (0 labels); a classifier needs labelled images of at least 2 classes")
    if y.dtype.kind in "fO":
        refuse_missing(y)
    check_classification_targets(y)
    classes, encoded = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"y holds 1 class ({classes[0]!r}); a classifier needs at least 2 classes")
    return classes, encoded


# ---------------------------------------------------------------- multi-label y
def dense_target(y):
    """``y`` as the estimators take it: a scipy sparse indicator matrix becomes a dense copy; lists of
    finding names are refused, saying what to pass instead; anything else is returned as it is."""
    if hasattr(y, "toarray") and hasattr(y, "nnz"):  # scipy.sparse, without importing scipy here
        return y.toarray()
    if isinstance(y, (list, tuple)) and y and all(isinstance(v, (list, tuple, set, frozenset)) for v in y):
        items = [item for v in y for item in v]
        if items and all(isinstance(item, str) for item in items):
            raise ValueError("y holds lists of finding names; pass an (n, k) 0/1 indicator matrix, e.g. "
                             "sklearn.preprocessing.MultiLabelBinarizer().fit_transform(y) (its classes_ name "
                             "the columns)")
    return y


def is_multilabel(y) -> bool:
    """True for a 2-D ``y`` with more than one column (an indicator matrix); 1-D labels are single-label."""
    try:
        shape = np.asarray(y).shape  # through __array__: array-likes that are not arrays too
    except (ValueError, TypeError):  # ragged: not a matrix; check_labels names the problem
        return False
    return len(shape) == 2 and shape[1] > 1


def check_multilabel(y, n_images: int) -> tuple[list, np.ndarray]:
    """``classes_`` (``[array([0, 1])] * k``) and float32 targets of an indicator matrix, or a ValueError
    naming the problem."""
    try:
        Y = np.array(y, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a 2-D y is a multi-label indicator matrix and must be numeric: {exc}") from exc
    if len(Y) != n_images:
        raise ValueError(f"y has {len(Y)} rows but X has {n_images} images")
    values = set(np.unique(Y).tolist())
    if not values <= {0.0, 1.0, -1.0}:
        bad = sorted(values - {0.0, 1.0, -1.0})[:5]
        raise ValueError(f"a multi-label y holds 0 and 1 (and -1 for entries left out); found {bad}")
    known = Y != -1
    for j in range(Y.shape[1]):
        column = Y[known[:, j], j]
        if column.size == 0 or column.min() == column.max():
            raise ValueError(f"label column {j} of y has only one value ({column[:1].tolist() or 'all -1'}); "
                             "each finding needs positive and negative images")
    # scikit-learn's multi-output convention: one array of classes per column, so its scorers
    # (type_of_target(classes_) == "multilabel-indicator") take predict_proba's columns as they are
    return [np.array([0, 1]) for _ in range(Y.shape[1])], Y.astype(np.float32)


# ---------------------------------------------------------------- weights and groups
def sample_weights(y, class_weight, sample_weight):
    """Per-sample weights from ``class_weight`` and ``sample_weight`` (a new array, or None)."""
    from sklearn.utils import compute_sample_weight

    n = len(y)
    weights = None
    if sample_weight is not None:
        weights = np.array(sample_weight, dtype=np.float64, copy=True).reshape(-1)
        if len(weights) != n:
            raise ValueError(f"sample_weight has {len(weights)} values but y has {n} labels")
        if not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise ValueError("sample_weight must hold finite, non-negative numbers")
        if not np.any(weights > 0):
            raise ValueError("sample_weight is all zero: at least one sample needs a non-zero weight")
    if class_weight is not None:
        if isinstance(class_weight, dict):
            bad = {k: v for k, v in class_weight.items()
                   if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not np.isfinite(v) or v < 0}
            if bad:
                raise ValueError(f"class_weight values must be finite, non-negative numbers; got {bad}")
            labels = set(np.unique(y).tolist())
            unknown = sorted((k for k in class_weight if k not in labels), key=str)
            if unknown:
                raise ValueError(f"class_weight names {unknown}, which are not classes of y "
                                 f"(classes: {', '.join(map(str, sorted(labels, key=str)))})")
            # classes not named in the dict weigh 1, as in scikit-learn
            per_class = np.array([float(class_weight.get(label, 1.0)) for label in np.asarray(y).tolist()])
        else:
            per_class = compute_sample_weight(class_weight=class_weight, y=y)
        weights = per_class if weights is None else weights * per_class
    return weights


def check_groups(groups, n_images: int) -> np.ndarray:
    """``groups`` as an array of one group (patient) per image, or a ValueError naming the mismatch."""
    groups = np.asarray(groups)
    if groups.ndim != 1 or len(groups) != n_images:
        raise ValueError(f"groups must hold one group (patient) per image: {n_images} images, groups of shape "
                         f"{groups.shape}")
    missing = missing_positions(groups.tolist())
    if missing:
        raise ValueError(f"groups has {len(missing)} missing entries (None or NaN) at positions "
                         f"{_first(missing)}: every image needs its patient")
    return groups
