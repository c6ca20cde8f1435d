"""The classification head: optional BatchNorm, pooling, dense/dropout stack, output layer."""

from __future__ import annotations

from numbers import Real

import keras

from .layers import pooling_layer

__all__ = ["build_head", "EMBEDDING_LAYER", "head_loss"]

EMBEDDING_LAYER = "embedding"


def head_loss(n_outputs: int, multilabel: bool):
    """The loss (a ``keras.losses.Loss``, which both training loops call as it is) and metrics a head of
    ``n_outputs`` is compiled with."""
    if multilabel:
        from .multilabel import MaskedBinaryCrossentropy, accuracy_metric

        return MaskedBinaryCrossentropy(), [accuracy_metric()]
    if n_outputs == 1:
        return keras.losses.BinaryCrossentropy(), ["accuracy"]
    return keras.losses.SparseCategoricalCrossentropy(), ["accuracy"]


def dropout_rates(dropout, n_hidden: int) -> list[float]:
    """One dropout rate per hidden layer from a scalar or a per-layer sequence."""
    rates = [dropout] * n_hidden if isinstance(dropout, Real) else list(dropout)
    if len(rates) != n_hidden:
        raise ValueError(f"dropout has {len(rates)} rates for {n_hidden} hidden layers")
    for rate in rates:
        if not isinstance(rate, Real) or not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rates must be numbers in [0, 1); got {dropout!r}")
    return [float(r) for r in rates]


def build_head(feature_shape, n_outputs: int, *, pooling, hidden_units=(256,), dropout=0.5,
               batch_norm=False, l2=0.0, multilabel=False, seed=None, name="head") -> keras.Model:
    """Build the trainable head on top of backbone features.

    Parameters
    ----------
    feature_shape : tuple
        Shape of one backbone output: ``(h, w, c)`` for a feature map, ``(c,)`` for
        features that were already pooled.
    n_outputs : int
        1 gives a sigmoid unit (binary); more gives a softmax, or with ``multilabel`` one
        sigmoid per finding.
    pooling : {"flatten", "avg", "max"}
        Applied to feature maps; ignored for pooled features.
    hidden_units : int or sequence of int
        Width of each Dense+ReLU layer; the last one is named ``"embedding"``.
    dropout : float or sequence of float
        Rate after each hidden layer (0 for none).
    batch_norm : bool
        BatchNormalization directly on the backbone's output.
    l2 : float
        L2 penalty on every Dense kernel.
    multilabel : bool
        Independent sigmoid outputs (several findings per image) instead of a softmax.
    seed : int, optional
        Seeds every kernel initializer and dropout mask of the head explicitly.  Keras draws the
        seed of an unseeded layer from Python's global ``random``, which other threads of the
        process may draw from at the same time (a Dask worker's event loop does): explicit seeds
        make a seeded fit the same in any process.
    """
    if isinstance(hidden_units, Real):
        hidden_units = (hidden_units,)
    hidden_units = [int(u) for u in hidden_units]
    if any(u < 1 for u in hidden_units):
        raise ValueError(f"hidden_units must be positive integers; got {hidden_units}")
    rates = dropout_rates(dropout, len(hidden_units))
    if not isinstance(l2, Real) or l2 < 0:
        raise ValueError(f"l2 must be a non-negative number; got {l2!r}")
    regularizer = keras.regularizers.L2(float(l2)) if l2 else None

    inputs = keras.Input(tuple(feature_shape), name="features")
    x = inputs
    if batch_norm:
        x = keras.layers.BatchNormalization(name="backbone_bn")(x)
    if len(feature_shape) == 3:
        x = pooling_layer(pooling)(x)
    def layer_seed(i):
        return None if seed is None else (int(seed) * 1000 + i) % (2**31 - 1)

    def kernel(i):
        return keras.initializers.GlorotUniform(seed=layer_seed(i))

    for i, (units, rate) in enumerate(zip(hidden_units, rates)):
        last = i == len(hidden_units) - 1
        x = keras.layers.Dense(units, activation="relu", kernel_regularizer=regularizer,
                               kernel_initializer=kernel(2 * i), name=EMBEDDING_LAYER if last else f"dense_{i + 1}")(x)
        if rate:
            x = keras.layers.Dropout(rate, seed=layer_seed(2 * i + 1), name=f"dropout_{i + 1}")(x)
    activation = "sigmoid" if n_outputs == 1 or multilabel else "softmax"
    outputs = keras.layers.Dense(n_outputs, activation=activation, kernel_regularizer=regularizer,
                                 kernel_initializer=kernel(999), name="output")(x)
    return keras.Model(inputs, outputs, name=name)
