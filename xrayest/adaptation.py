"""Test-time adaptation to a new site's unlabeled films: BatchNorm statistics and TENT.

A network's BatchNorm layers normalise with statistics of the training films, and its outputs
carry what it learned there; another hospital's films (exposure, processing, framing) reach it with
other statistics.  Two adaptations need no labels:

- AdaBN (Li et al., 2016): the BatchNorm statistics of a trained trunk re-estimated on the new
  films (``xrayest.training.recalibrate_batch_norm``), no weight changed;
- TENT (Wang et al., 2021, "Tent: fully test-time adaptation by entropy minimization"): the
  BatchNorm layers' scale and offset (``gamma``, ``beta``; nothing else) moved for a few Adam steps
  to lower the mean entropy of the predictions on the new films, :func:`entropy_steps`.  Here the
  statistics are AdaBN's (re-estimated after the steps), not each batch's own.

The estimators' ``adapt`` methods use these; :mod:`xrayest.label_shift` adapts the class mix.

Examples
--------
>>> import keras, numpy as np
>>> from xrayest.adaptation import entropy_steps, mean_entropy
>>> inputs = keras.Input((4,))
>>> x = keras.layers.BatchNormalization()(inputs)
>>> model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
>>> X = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
>>> before = mean_entropy(model, [X])
>>> entropy_steps(model, [X] * 20, learning_rate=0.05)
20
>>> bool(mean_entropy(model, [X]) < before)
True
"""

from __future__ import annotations

import keras
import numpy as np

from .seeding import all_layers

__all__ = ["affine_batch_norm_weights", "entropy_steps", "mean_entropy"]


def affine_batch_norm_weights(model) -> list:
    """The scale and offset variables of ``model``'s trainable BatchNorm layers (nested models included)."""
    out = []
    for layer in all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable and layer.built:
            out += [v for v in (layer.gamma, layer.beta) if v is not None]
    return out


def _entropy(proba):
    import tensorflow as tf

    p = tf.cast(proba, tf.float32)
    if p.shape[-1] == 1:  # one sigmoid: its two outcomes
        p = tf.concat([p, 1.0 - p], axis=-1)
    return -tf.reduce_sum(p * tf.math.log(tf.clip_by_value(p, 1e-7, 1.0)), axis=-1)


def entropy_steps(model, batches, *, learning_rate: float = 1e-3) -> int:
    """TENT: one Adam step per batch of ``batches`` on the mean entropy of ``model``'s outputs (probabilities),
    moving only the scale and offset of its trainable BatchNorm layers (inference-mode statistics).

    Returns the number of steps taken (0 where the model has no such layer).
    """
    import tensorflow as tf

    variables = affine_batch_norm_weights(model)
    if not variables:
        return 0
    optimizer = keras.optimizers.Adam(learning_rate)
    optimizer.build(variables)

    @tf.function(reduce_retracing=True)
    def step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(_entropy(model(x, training=False)))
        optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    count = 0
    for batch in batches:
        step(tf.constant(batch))
        count += 1
    return count


def mean_entropy(model, batches) -> float:
    """The mean entropy (nats) of ``model``'s output probabilities over ``batches``."""
    total, n = 0.0, 0
    for batch in batches:
        values = np.asarray(_entropy(model(batch, training=False)))
        total, n = total + float(values.sum()), n + len(values)
    return total / max(n, 1)
