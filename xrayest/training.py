"""How a classifier trains: the plan (which phases, what trains, on what), and running a phase.

A fit is a :class:`TrainingPlan` of one or two :class:`Phase` objects, decided from the
estimator's parameters by :func:`plan_training` before anything is built:

==========================================  =====================================================
parameters                                  phases
==========================================  =====================================================
frozen backbone (pretrained default)        head on cached features (``on_features``)
frozen backbone + ``augment``               head on augmented images through the frozen trunk
``freeze_backbone=False``, scratch CNNs     everything on images
``fine_tune=N``                             the last N backbone layers and the head, on images
``fine_tune=N, fine_tune_epochs=M``         head on cached features for ``epochs``, then
                                            ``unfreeze`` N layers and train on images for M
                                            epochs at ``fine_tune_learning_rate``
==========================================  =====================================================

:func:`run_phase` trains one phase with one of two loops, chosen explicitly by
:func:`choose_loop`: ``"graph"`` (:func:`xrayest.head_training.fit_head`, one compiled graph
per epoch, for a head on in-memory features; epoch-level callbacks only) or ``"keras"``
(``keras.Model.fit``: images, augmentation, per-batch callbacks).

Around the loop: :func:`stratified_split` (the ``validation_split`` rows: stratified, whole patients
with groups, every class kept in training) and :func:`recalibrate_batch_norm` (exact BatchNorm
statistics after training on images).  The callbacks live in :mod:`xrayest.callbacks`.
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass

import keras
import numpy as np
from sklearn.model_selection import StratifiedShuffleSplit, ShuffleSplit

from .seeding import all_layers

__all__ = ["Phase", "TrainingPlan", "plan_training", "choose_loop", "run_phase", "recalibrate_batch_norm",
           "has_trainable_batch_norm", "stratified_split"]


def stratified_split(y_encoded: np.ndarray, fraction: float, random_state=None, groups=None, class_names=None):
    """Train/validation indices holding ``fraction`` out, stratified by class where possible.

    Keras' own ``validation_split`` takes the *last* rows, which on data sorted by class
    leaves whole classes out of training; this draws the rows at random per class.  With
    ``groups`` (patients), whole groups go to one side: ``StratifiedGroupKFold`` with
    ``round(1 / fraction)`` folds, its first fold held out (``GroupShuffleSplit`` when the groups
    are too few to stratify).  A multi-label ``y`` is stratified by each image's first finding.

    Every class keeps at least one image in training (a model that never sees a class gives it
    no probability): a class the draw left out of training gets one of its images (its patient's
    whole group) back, and a class with a single image, which can then never be validated on, is
    warned about, named from ``class_names`` (the labels of the codes in ``y_encoded``).
    """
    n = len(y_encoded)
    multi = np.ndim(y_encoded) > 1 and np.shape(y_encoded)[1] > 1
    labels = np.asarray(y_encoded).reshape(n, -1).argmax(axis=1) if multi else np.asarray(y_encoded).ravel()
    n_val = int(np.ceil(fraction * n))
    if n_val < 1 or n - n_val < 1:
        raise ValueError(f"validation_split={fraction} leaves no data for training or validation with {n} samples")
    if groups is not None:
        train, val = _group_split(labels, np.asarray(groups), fraction, random_state)
    else:
        counts = np.unique(labels, return_counts=True)[1]
        if counts.min() >= 2 and n_val >= len(counts) and n - n_val >= len(counts):
            splitter = StratifiedShuffleSplit(n_splits=1, test_size=n_val, random_state=random_state)
        else:
            splitter = ShuffleSplit(n_splits=1, test_size=n_val, random_state=random_state)
        train, val = next(splitter.split(np.zeros(n), labels))
    if multi:
        return np.sort(train), np.sort(val)
    return _every_class_in_training(labels, np.sort(train), np.sort(val), fraction, groups, class_names)


def _every_class_in_training(labels, train, val, fraction, groups, class_names):
    """``train`` and ``val`` with one image (and its group) of each class missing from training moved back."""
    values, counts = np.unique(labels, return_counts=True)

    def name(code):
        return str(class_names[code]) if class_names is not None else str(code)

    alone = [name(v) for v, c in zip(values, counts) if c < 2]
    if alone:
        warnings.warn(f"validation_split={fraction}: class(es) {alone} have a single image, kept in training; "
                      "validation never sees them (give each class two or more images)", UserWarning, stacklevel=4)
    for value in np.setdiff1d(values, labels[train]):
        row = val[labels[val] == value][0]
        moved = np.flatnonzero(np.asarray(groups) == np.asarray(groups)[row]) if groups is not None else [row]
        train, val = np.union1d(train, moved), np.setdiff1d(val, moved)
    if len(val) == 0:
        raise ValueError(f"validation_split={fraction} leaves nothing to validate on once every class has an "
                         "image in training; pass more images, validation_split=0 or validation_data")
    return train, val


def _group_split(labels, groups, fraction, random_state):
    """Whole groups held out: about ``fraction`` of the rows, stratified where the groups allow."""
    from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold

    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise ValueError(f"validation_split with groups needs at least 2 groups (patients); got {n_groups}")
    n_splits = min(max(2, int(round(1 / fraction))), n_groups)
    zeros = np.zeros(len(labels))
    try:
        if np.unique(labels, return_counts=True)[1].min() < n_splits:
            raise ValueError("too few rows per class to stratify")
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
        train, val = next(splitter.split(zeros, labels, groups))
    except ValueError:
        splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=random_state)
        train, val = next(splitter.split(zeros, labels, groups))
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"validation_split={fraction} with {n_groups} groups leaves no data on one side")
    return np.sort(train), np.sort(val)


@dataclass(frozen=True)
class Phase:
    """One stretch of training.

    Attributes
    ----------
    epochs : int
    learning_rate : float
    on_features : bool
        The trunk is frozen and un-augmented: the head trains on its cached features.
    unfreeze : bool
        At the start of this phase, the trunk's ``fine_tune`` layers become trainable.
    """

    epochs: int
    learning_rate: float
    on_features: bool
    unfreeze: bool = False


@dataclass(frozen=True)
class TrainingPlan:
    """How the trunk is built and which phases train it (see the module docstring).

    Attributes
    ----------
    trunk : {"frozen", "trainable", "fine_tune"}
        How the trunk is built: frozen (BatchNorm folded unless a later phase fine-tunes it),
        fully trainable, or with only its ``fine_tune`` layers trainable.
    fold_batch_norm : bool
    phases : tuple of Phase
    """

    trunk: str
    fold_batch_norm: bool
    phases: tuple

    @property
    def frozen_throughout(self) -> bool:
        """The trunk never trains: predictions can use cached features."""
        return self.trunk == "frozen" and not any(p.unfreeze for p in self.phases)


def plan_training(*, pretrained, freeze_backbone, fine_tune, fine_tune_epochs, augmented, epochs, learning_rate,
                  fine_tune_learning_rate) -> TrainingPlan:
    """The plan for an estimator's parameters (validated already).

    Examples
    --------
    >>> plan = plan_training(pretrained=True, freeze_backbone="auto", fine_tune=2, fine_tune_epochs=3,
    ...                      augmented=False, epochs=10, learning_rate=1e-3, fine_tune_learning_rate=None)
    >>> [(p.epochs, p.learning_rate, p.on_features, p.unfreeze) for p in plan.phases]
    [(10, 0.001, True, False), (3, 0.0001, False, True)]
    """
    if fine_tune_epochs and fine_tune is None:
        raise ValueError("fine_tune_epochs needs fine_tune= (how many backbone layers to unfreeze)")
    frozen = pretrained if freeze_backbone == "auto" else bool(freeze_backbone)
    if fine_tune is not None and not fine_tune_epochs:
        return TrainingPlan("fine_tune", False, (Phase(epochs, learning_rate, False),))
    if not frozen:
        return TrainingPlan("trainable", False, (Phase(epochs, learning_rate, False),))
    first = Phase(epochs, learning_rate, on_features=not augmented)
    if fine_tune is None:
        return TrainingPlan("frozen", True, (first,))
    rate = fine_tune_learning_rate or learning_rate / 10
    return TrainingPlan("frozen", False, (first, Phase(fine_tune_epochs, rate, False, unfreeze=True)))


def choose_loop(training_loop: str, phase: Phase, callbacks) -> str:
    """``"graph"`` or ``"keras"`` for ``phase``, as the estimator's ``training_loop`` asks.

    ``"auto"`` takes the graph loop for a head on features unless a callback has per-batch
    hooks; ``"graph"`` insists (a callback with per-batch hooks is then an error naming it);
    phases on images always use ``keras.Model.fit``.
    """
    from .head_training import has_batch_hooks

    if not phase.on_features or training_loop == "keras":
        return "keras"
    batchy = [type(cb).__name__ for cb in callbacks if has_batch_hooks(cb)]
    if training_loop == "graph" and batchy:
        raise ValueError(f"training_loop='graph' runs epoch-level callback hooks only, but {', '.join(batchy)} "
                         "has per-batch hooks; use training_loop='keras' or 'auto'")
    return "keras" if batchy else "graph"


def run_phase(trainee, x, y, *, loop, epochs, initial_epoch, batch_size, sample_weight=None, validation=None,
              callbacks=(), seed=None, verbose=0) -> dict:
    """Train the compiled ``trainee`` for ``epochs`` more epochs; returns its per-epoch history.

    ``x`` is an array (with ``y`` and ``sample_weight``) or a ``tf.data.Dataset`` of ready batches
    (:func:`xrayest.pipeline.image_dataset`; then ``y``, ``sample_weight`` and ``batch_size`` are unused).
    """
    import tensorflow as tf

    from .head_training import fit_head
    from .seeding import seeded

    with seeded(seed):
        if loop == "graph":
            history = fit_head(trainee, x, y, batch_size=batch_size, epochs=initial_epoch + epochs,
                               initial_epoch=initial_epoch, sample_weight=sample_weight, validation_data=validation,
                               callbacks=callbacks, seed=seed, verbose=verbose)
        elif isinstance(x, tf.data.Dataset):
            # One iterator over the repeated dataset for the whole phase: Keras' per-epoch iterator
            # restarts stalled the first step of about half the epochs by the time of a whole epoch.
            steps = int(x.cardinality())
            history = trainee.fit(x.repeat(), steps_per_epoch=steps, epochs=initial_epoch + epochs,
                                  initial_epoch=initial_epoch, validation_data=validation, callbacks=list(callbacks),
                                  verbose=verbose, shuffle=False)  # the dataset shuffles itself
        else:
            history = trainee.fit(x, y, batch_size=batch_size, epochs=initial_epoch + epochs,
                                  initial_epoch=initial_epoch, sample_weight=sample_weight,
                                  validation_data=validation, callbacks=list(callbacks), verbose=verbose,
                                  shuffle=True)
    return {("accuracy" if key == "compile_metrics" else key): [float(v) for v in values]
            for key, values in history.history.items()}


_RECALIBRATION_STEPS = weakref.WeakKeyDictionary()


def recalibrate_batch_norm(model, batches) -> int:
    """Set the moving statistics of ``model``'s trainable BatchNorm layers to their average over ``batches``.

    During training a BatchNorm layer normalises with the statistics of each batch and keeps an
    exponential moving average of them for inference.  After a short training run that average still
    remembers the early, very different weights, and inference-mode outputs drift from what training
    saw (a network near zero training loss can score far lower on its own training images in
    inference mode than with batch statistics).  This pass runs ``model`` over ``batches`` (un-augmented training
    images) in training mode with the momentum of batch ``k`` set to ``1 - 1/k``, so each layer ends
    with the plain average of its batch statistics over the training set.  Weights
    do not change; frozen BatchNorm layers (``trainable=False``, e.g. when fine-tuning) are left alone.

    Returns
    -------
    int
        The number of layers recalibrated.
    """
    import tensorflow as tf

    norms = [layer for layer in all_layers(model)
             if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable and layer.built]
    if not norms:
        return 0
    momenta = [layer.momentum for layer in norms]
    sums, count = None, 0
    try:
        # Momentum 0: each training-mode call leaves one batch's statistics in the moving variables;
        # they are summed here and averaged at the end (one traced graph, not eager calls per layer).
        for layer in norms:
            layer.momentum = 0.0
        step = _RECALIBRATION_STEPS.get(model)
        if step is None:  # one traced function per model, reused by every recalibration (each epoch's)
            ref = weakref.ref(model)  # the cached function must not keep its (weakly keyed) model alive
            step = tf.function(lambda x: ref()(x, training=True), reduce_retracing=True)
            _RECALIBRATION_STEPS[model] = step
        for batch in batches:
            step(tf.constant(batch))
            stats = [(layer.moving_mean.numpy(), layer.moving_variance.numpy()) for layer in norms]
            sums = stats if sums is None else [(m0 + m, v0 + v) for (m0, v0), (m, v) in zip(sums, stats)]
            count += 1
        for layer, (mean, variance) in zip(norms, sums or []):
            layer.moving_mean.assign(mean / count)
            layer.moving_variance.assign(variance / count)
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum
    return len(norms)


def has_trainable_batch_norm(model) -> bool:
    """Whether any BatchNorm layer of ``model`` (nested models included) trains."""
    return any(isinstance(layer, keras.layers.BatchNormalization) and layer.trainable for layer in all_layers(model))
