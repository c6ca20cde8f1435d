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

import numpy as np

from .seeding import all_layers

__all__ = ["affine_batch_norm_weights", "entropy_steps", "mean_entropy", "adaptable", "adapt_networks",
           "is_adaptable", "check_adaptable", "fit_then_adapt"]

# fit parameters with one entry per image: cut to the labeled rows with X and y
_ROW_ALIGNED = ("sample_weight", "groups")


def affine_batch_norm_weights(model) -> list:
    """The scale and offset variables of ``model``'s trainable BatchNorm layers (nested models included)."""
    import keras

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
    import keras
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


def _trained_batch_norm(trunk) -> bool:
    """Whether ``trunk`` was trained and has BatchNorm layers (whose statistics AdaBN re-estimates)."""
    from .training import has_trainable_batch_norm

    return not trunk.is_frozen and has_trainable_batch_norm(trunk.model)


def adaptable(trunk, head) -> bool:
    """Whether a trunk and head have something to adapt: a trained trunk with BatchNorm, or a head with a
    trainable BatchNorm."""
    return bool(_trained_batch_norm(trunk) or affine_batch_norm_weights(head))


def adapt_networks(trunk, head, composed, source, *, image_size, batch_size: int, tent_steps: int,
                   learning_rate: float, seed, cache=None) -> dict:
    """Adapt ``trunk`` and ``head`` in place to the unlabeled images of ``source`` (a new site).

    A trained trunk with BatchNorm: AdaBN (its statistics re-estimated on ``source``), then
    ``tent_steps`` TENT steps through ``composed()`` (the images -> trunk -> head model), then AdaBN
    again.  A frozen trunk: TENT steps on the head's BatchNorm over the trunk's (cached) features.
    Each step reads one batch of ``batch_size`` images, cycling over them in a seeded order.
    Returns what was done: ``{"batch_norm_statistics": bool, "tent_steps": int}``.
    """
    from .pipeline import PackedImages
    from .training import recalibrate_batch_norm

    trained = _trained_batch_norm(trunk)
    steps = tent_steps if affine_batch_norm_weights(head) or trained else 0
    spans = _cycled_batches(len(source), batch_size, steps, np.random.default_rng(seed))
    if trained:
        packed = PackedImages.from_source(source, image_size)
        everything = np.arange(len(source))
        recalibrate_batch_norm(trunk.model, packed.batches(everything, batch_size))
        if steps:  # the images as packed for AdaBN: decoded (and cropped) once
            entropy_steps(composed(), (packed.batch(np.arange(a, b)) for a, b in spans), learning_rate=learning_rate)
            recalibrate_batch_norm(trunk.model, packed.batches(everything, batch_size))
    elif steps:
        feats = trunk.features(source, batch_size=batch_size, cache=cache)
        entropy_steps(head, (feats[a:b] for a, b in spans), learning_rate=learning_rate)
    return {"batch_norm_statistics": trained, "tent_steps": steps}


def _cycled_batches(n: int, batch_size: int, steps: int, rng):
    """``steps`` ``(start, stop)`` spans of batches over rows ``0..n`` (contiguous, in a shuffled order of the
    batches, cycling when there are fewer batches than steps)."""
    spans = [(a, min(a + batch_size, n)) for a in range(0, n, batch_size)]
    order = []
    while len(order) < steps:
        order += list(rng.permutation(len(spans)))
    return [spans[k] for k in order[:steps]]


def is_adaptable(estimator) -> bool:
    """Whether ``estimator.adapt`` can adapt it: a fitted classifier whose trained trunk or head has
    BatchNorm layers, or an ensemble or cascade holding one."""
    trunk, head = getattr(estimator, "trunk_", None), getattr(estimator, "head_", None)
    if trunk is not None and head is not None:
        return adaptable(trunk, head)
    members = getattr(estimator, "estimators_", None)
    members = members.values() if isinstance(members, dict) else members or []
    return any(is_adaptable(member) for member in members)


def check_adaptable(classifier, n_images: int) -> None:
    """A ``ValueError`` saying why, where a classifier's ``adapt`` cannot run: nothing to adapt, or fewer
    than two images of the new site."""
    if not is_adaptable(classifier):
        raise ValueError("adapt re-estimates the BatchNorm statistics of a trained trunk and moves BatchNorm "
                         "scales and offsets; this classifier's trunk is frozen or has no BatchNorm, and its head "
                         "has none (fit a from-scratch backbone, pass freeze_backbone=False, or batch_norm=True)")
    if n_images < 2:
        raise ValueError(f"adapt needs at least 2 images of the new site to estimate statistics; got {n_images}")


def fit_then_adapt(estimator, X, y, rows, **fit_params):
    """``estimator.fit`` on the labeled ``rows[0]`` (row-aligned ``fit_params``, ``sample_weight`` and
    ``groups``, cut to them), then the estimator adapted to the unlabeled images ``rows[1]`` (its ``adapt``
    with the defaults).  Where it has nothing to adapt a warning says the unlabeled images were left out.
    What every estimator's ``fit`` does with -1 labels (:func:`xrayest.targets.unlabeled_rows`)."""
    import warnings

    from .device import callers_stacklevel
    from .inputs import take_rows
    from .targets import labeled_values

    labeled, unlabeled = rows
    kept = {k: take_rows(v, labeled) if k in _ROW_ALIGNED and v is not None else v for k, v in fit_params.items()}
    estimator.fit(take_rows(X, labeled), labeled_values(y, labeled), **kept)
    if is_adaptable(estimator):
        vars(estimator).update(vars(estimator.adapt(take_rows(X, unlabeled))))
    else:
        warnings.warn(f"fit got {len(unlabeled)} unlabeled images (label -1), but this {type(estimator).__name__} "
                      "has no BatchNorm to adapt (a trained trunk's, or a head's with batch_norm=True); they were "
                      "left out", UserWarning, stacklevel=callers_stacklevel())
    return estimator
