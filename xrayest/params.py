"""Every estimator parameter and what it accepts: one table, checked at ``fit``.

This follows scikit-learn's convention (``_parameter_constraints``, checked at the start of
``fit``, never in ``__init__``), written with xrayest's own small constraint types so that
nothing depends on scikit-learn's private validation module.  Each estimator takes the
rows of ``PARAMETERS`` it has, and ``validate_params`` raises a ``ValueError``
naming the parameter, what it accepts and what it got.

Checks that need more than the value itself (a backbone name looked up in the registry,
an ``image_size`` below the backbone's minimum, ``dropout`` rates per hidden layer, a GPU
that is not there) are made by the module that owns that knowledge, still at ``fit``.

Examples
--------
>>> from xrayest.params import validate_params
>>> from xrayest import XrayCNNClassifier
>>> validate_params(XrayCNNClassifier(learning_rate=-0.1))
Traceback (most recent call last):
...
ValueError: XrayCNNClassifier: learning_rate must be a real number in (0, inf); got -0.1
"""

from __future__ import annotations

import math
import os
from numbers import Integral, Real

from .trunk_graph import PRECISIONS

__all__ = ["Interval", "Options", "InstanceOf", "SequenceOf", "Callable", "PARAMETERS", "constraints_for",
           "validate_params", "validate_param", "validate_arguments"]


class Interval:
    """A number of ``kind`` (``Integral`` or ``Real``; never bool, never NaN) within bounds.

    ``closed`` is "both", "left", "right" or "neither"; a bound of None is unbounded.
    """

    def __init__(self, kind, low, high, closed="both"):
        self.kind, self.low, self.high, self.closed = kind, low, high, closed

    def accepts(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, self.kind):
            return False
        if isinstance(value, Real) and math.isnan(value):
            return False
        if self.low is not None:
            if value < self.low or (value == self.low and self.closed in ("right", "neither")):
                return False
        if self.high is not None:
            if value > self.high or (value == self.high and self.closed in ("left", "neither")):
                return False
        return True

    def __str__(self):
        kind = "an int" if self.kind is Integral else "a real number"
        left = "[" if self.closed in ("both", "left") and self.low is not None else "("
        right = "]" if self.closed in ("both", "right") and self.high is not None else ")"
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"{kind} in {left}{low}, {high}{right}"


class Options:
    """One of a fixed set of values (compared with ``==``, bools never match numbers)."""

    def __init__(self, *values):
        self.values = values

    def accepts(self, value) -> bool:
        return any(value is v if isinstance(v, bool) or isinstance(value, bool) else
                   (isinstance(value, type(v)) and value == v) for v in self.values)

    def __str__(self):
        return "one of " + ", ".join(repr(v) for v in self.values)


class InstanceOf:
    """An instance of one of ``types`` (bool excluded unless asked for), described by ``text``."""

    def __init__(self, types, text):
        self.types, self.text = types, text

    def accepts(self, value) -> bool:
        if isinstance(value, bool) and bool not in (self.types if isinstance(self.types, tuple) else (self.types,)):
            return False
        return isinstance(value, self.types)

    def __str__(self):
        return self.text


class SequenceOf:
    """A tuple or list (non-empty unless ``allow_empty``) whose every item satisfies ``item``."""

    def __init__(self, item, allow_empty=False):
        self.item, self.allow_empty = item, allow_empty

    def accepts(self, value) -> bool:
        return (isinstance(value, (tuple, list)) and (self.allow_empty or len(value) > 0)
                and all(self.item.accepts(v) for v in value))

    def __str__(self):
        return f"a {'' if self.allow_empty else 'non-empty '}sequence of ({self.item})"


class Callable:
    """Any callable."""

    def accepts(self, value) -> bool:
        return callable(value)

    def __str__(self):
        return "a callable"


class _NoneConstraint:
    def accepts(self, value) -> bool:
        return value is None

    def __str__(self):
        return "None"


def _keras_model_type():
    import keras

    return keras.Model


class _KerasModel:
    def accepts(self, value) -> bool:
        return isinstance(value, _keras_model_type())

    def __str__(self):
        return "a keras.Model"


class _KerasOptimizer:
    def accepts(self, value) -> bool:
        import keras

        base = keras.optimizers.Optimizer
        return isinstance(value, base) or (isinstance(value, type) and issubclass(value, base))

    def __str__(self):
        return "a keras optimizer class or instance"


class _Classifier:
    def accepts(self, value) -> bool:
        return not isinstance(value, type) and all(callable(getattr(value, m, None))
                                                   for m in ("fit", "predict_proba", "get_params"))

    def __str__(self):
        return "a scikit-learn classifier with predict_proba (e.g. XrayCNNClassifier)"


class _Classifiers:
    def accepts(self, value) -> bool:
        return isinstance(value, (list, tuple)) and len(value) > 0 and all(_Classifier().accepts(v) for v in value)

    def __str__(self):
        return "a non-empty list of such classifiers"


_POSITIVE_INT = Interval(Integral, 1, None)
_PATH = InstanceOf((str, os.PathLike), "a path")

# name -> the constraints of which at least one must hold.  Shared by every estimator.
PARAMETERS = {
    "backbone": [InstanceOf(str, "a backbone name"), _KerasModel()],
    "weights": [Options("imagenet"), _NoneConstraint(), _PATH],
    "image_size": [_NoneConstraint(), _POSITIVE_INT, SequenceOf(_POSITIVE_INT)],
    "crop": [_NoneConstraint(), Options("lungs")],
    "pooling": [Options("avg", "max", "flatten")],
    "hidden_units": [_POSITIVE_INT, SequenceOf(_POSITIVE_INT, allow_empty=True)],
    "dropout": [Interval(Real, 0, 1, "left"), SequenceOf(Interval(Real, 0, 1, "left"))],
    "batch_norm": [InstanceOf(bool, "a bool")],
    "l2": [Interval(Real, 0, None)],
    "optimizer": [InstanceOf(str, "an optimizer name"), _KerasOptimizer()],
    "learning_rate": [Interval(Real, 0, None, "neither")],
    "epochs": [_POSITIVE_INT],
    "batch_size": [_POSITIVE_INT],
    "validation_split": [Interval(Real, 0, 1, "left")],
    "class_weight": [Options("balanced"), InstanceOf(dict, "a dict {label: weight}"), _NoneConstraint()],
    "augment": [_NoneConstraint(), InstanceOf(str, "a preset name"), InstanceOf(dict, "a dict")],
    "freeze_backbone": [Options("auto"), InstanceOf(bool, "a bool")],
    "fine_tune": [_NoneConstraint(), _POSITIVE_INT, InstanceOf(str, "a layer name")],
    "fine_tune_epochs": [Interval(Integral, 0, None)],
    "fine_tune_learning_rate": [_NoneConstraint(), Interval(Real, 0, None, "neither")],
    "early_stopping": [_NoneConstraint(), _POSITIVE_INT],
    "reduce_lr": [_NoneConstraint(), _POSITIVE_INT],
    "lr_schedule": [_NoneConstraint(), Options("cosine", "step"), Callable()],
    # more than 100 augmented copies move the mean by nothing measurable and cost a forward pass each
    "tta": [Interval(Integral, 0, 100)],
    # adapt's arguments (XrayCNNClassifier.adapt and the ensembles' and cascades')
    "tent_steps": [Interval(Integral, 0, None)],
    "tent_learning_rate": [Interval(Real, 0, None, "neither")],
    "callbacks": [_NoneConstraint(), InstanceOf((list, tuple), "a list of keras callbacks")],
    "training_loop": [Options("auto", "graph", "keras")],
    "cache_features": [InstanceOf(bool, "a bool")],
    "cache_dir": [_NoneConstraint(), _PATH],
    "device": [InstanceOf(str, "'auto', 'cpu', 'gpu' or 'gpu:N'")],
    "precision": [Options("auto", *PRECISIONS)],
    "random_state": [_NoneConstraint(), Interval(Integral, 0, 2**32 - 1)],
    "verbose": [Interval(Integral, 0, None), InstanceOf(bool, "a bool")],
    "estimator": [_Classifier(), _Classifiers()],
    "vote_weights": [_NoneConstraint(), SequenceOf(Interval(Real, 0, None))],
    "n_members": [_POSITIVE_INT],
    # TSNEEmbedding
    "n_components": [Interval(Integral, 1, 3)],
    "perplexity": [Interval(Real, 0, None, "neither")],
    "pca_components": [_NoneConstraint(), _POSITIVE_INT],
    "n_iter": [_POSITIVE_INT],
    "metric": [InstanceOf(str, "a metric name")],
    "n_jobs": [Interval(Integral, -1, None)],
    # CascadeClassifier (the stages themselves are checked against the labels at fit)
    "stages": [SequenceOf(InstanceOf(tuple, "a (name, estimator, groups) tuple"))],
    # featurize (xrayest.distributed)
    "chunk": [_POSITIVE_INT],
    "overwrite": [InstanceOf(bool, "a bool")],
    "progress": [InstanceOf(bool, "a bool")],
}


def constraints_for(*names) -> dict:
    """The rows of :data:`PARAMETERS` for ``names`` (an estimator's ``_parameter_constraints``)."""
    return {name: PARAMETERS[name] for name in names}


def validate_param(estimator, name) -> None:
    """Check one parameter, for a method other than ``fit`` that reads it (``tta`` at ``predict``)."""
    _check(type(estimator).__name__, name, estimator.get_params(deep=False)[name],
           type(estimator)._parameter_constraints[name])


def validate_arguments(owner: str, **values) -> None:
    """Check a function's arguments against their rows of :data:`PARAMETERS` (``featurize`` has no
    estimator to hold them); the message names ``owner`` and the argument, as for an estimator."""
    for name, value in values.items():
        _check(owner, name, value, PARAMETERS[name])


def _check(owner, name, value, constraints) -> None:
    if not any(c.accepts(value) for c in constraints):
        accepted = " or ".join(str(c) for c in constraints)
        raise ValueError(f"{owner}: {name} must be {accepted}; got {value!r}")


def validate_params(estimator) -> None:
    """Check every parameter of ``estimator`` against its ``_parameter_constraints``.

    Raises
    ------
    ValueError
        ``"<Estimator>: <name> must be <what it accepts>; got <value>"`` for the first
        parameter that fits none of its constraints.
    """
    for name in type(estimator)._parameter_constraints:
        validate_param(estimator, name)
