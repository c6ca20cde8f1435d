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
"""

from __future__ import annotations

import time
import warnings
import weakref
from dataclasses import dataclass

import keras
import numpy as np
from sklearn.model_selection import StratifiedShuffleSplit, ShuffleSplit

from .seeding import all_layers

__all__ = ["Phase", "TrainingPlan", "plan_training", "choose_loop", "run_phase", "recalibrate_batch_norm",
           "RecalibratedValidation", "has_trainable_batch_norm",
           "stratified_split", "EpochTimer", "WeightAveraging", "fit_callbacks", "sample_weights"]


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


class WeightAveraging(keras.callbacks.Callback):
    """Stochastic weight averaging: the model ends with the mean of its weights over the last epochs.

    Weights are taken at the end of each of the last ``last_epochs`` epochs of a phase and their
    mean is set when training ends (Izmailov et al. 2018, "Averaging weights leads to wider optima and
    better generalization").  A network trained on images then has its BatchNorm statistics
    recalibrated for the averaged weights (:func:`recalibrate_batch_norm`), as every such fit does.
    Pass it as ``XrayCNNClassifier(callbacks=[WeightAveraging(10)])``.

    Examples
    --------
    >>> import numpy as np, keras
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> averaging = WeightAveraging(last_epochs=2)
    >>> _ = model.fit(np.ones((4, 2)), np.ones(4), epochs=3, verbose=0, callbacks=[averaging])
    >>> averaging.averaged
    2
    """

    def __init__(self, last_epochs=5):
        super().__init__()
        if isinstance(last_epochs, bool) or not isinstance(last_epochs, int) or last_epochs < 1:
            raise ValueError(f"WeightAveraging: last_epochs must be a positive int; got {last_epochs!r}")
        self.last_epochs = last_epochs

    def __repr__(self):
        return f"WeightAveraging(last_epochs={self.last_epochs})"

    def on_train_begin(self, logs=None):
        self._sum, self.averaged = None, 0

    def on_epoch_end(self, epoch, logs=None):
        if epoch < int(self.params.get("epochs", 0)) - self.last_epochs:
            return
        weights = [np.asarray(w, np.float64) for w in self.model.get_weights()]
        self._sum = weights if self._sum is None else [s + w for s, w in zip(self._sum, weights)]
        self.averaged += 1

    def on_train_end(self, logs=None):
        if self._sum is not None and self.averaged > 1:
            current = self.model.get_weights()
            self.model.set_weights([(s / self.averaged).astype(c.dtype) for s, c in zip(self._sum, current)])
        self._sum = None


class EpochTimer(keras.callbacks.Callback):
    """Records seconds per epoch into the logs as ``epoch_time``."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_time"] = time.perf_counter() - self._start


def fit_callbacks(*, early_stopping=None, reduce_lr=None, lr_schedule=None, has_validation=False, epochs=1):
    """The named callbacks the estimator parameters ask for.

    early_stopping, reduce_lr : int or None
        Patience in epochs; they watch ``val_loss`` when there is validation data, else ``loss``.
        Early stopping restores the best weights.
    lr_schedule : None, "cosine", "step" or callable(epoch, lr) -> lr
    """
    import math

    monitor = "val_loss" if has_validation else "loss"
    callbacks = []
    if early_stopping:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=monitor, patience=int(early_stopping),
                                                       restore_best_weights=True))
    if reduce_lr:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor=monitor, factor=0.5, patience=int(reduce_lr),
                                                           min_lr=1e-7))
    if lr_schedule is not None:
        if callable(lr_schedule):
            schedule = lr_schedule
        elif lr_schedule in ("cosine", "step"):
            state = {}

            def schedule(epoch, lr, kind=lr_schedule):
                base = state.setdefault("base", lr)
                if kind == "cosine":
                    return base * 0.5 * (1 + math.cos(math.pi * epoch / max(epochs, 1)))
                return base * 0.5 ** (epoch // max(epochs // 3, 1))
        else:
            raise ValueError(f"lr_schedule must be None, 'cosine', 'step' or a function; got {lr_schedule!r}")
        callbacks.append(keras.callbacks.LearningRateScheduler(schedule))
    return callbacks


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


class RecalibratedValidation(keras.callbacks.Callback):
    """Validation scored at each epoch end with BatchNorm statistics recalibrated first.

    Keras scores ``validation_data`` with the running BatchNorm averages, which lag the weights and
    were taken on augmented batches: on pediatric X-rays that made validation accuracy jump by tens of
    points from one epoch to the next while training accuracy rose steadily (benchmarks/RESULTS.md).
    This callback,
    placed before early stopping and learning-rate callbacks, recalibrates the trunk's trainable
    BatchNorm layers on ``calibration()`` (un-augmented training batches, see
    :func:`recalibrate_batch_norm`), then writes ``val_loss`` and ``val_accuracy`` into the epoch's
    logs.  Training itself is unchanged: in training mode BatchNorm uses batch statistics.

    Parameters
    ----------
    trunk : keras.Model
        The part holding the BatchNorm layers.
    calibration : callable
        Returns an iterable of float image batches.
    validation : tf.data.Dataset
        ``(images, targets[, weights])`` batches.
    """

    def __init__(self, trunk, calibration, validation):
        super().__init__()
        self.trunk, self.calibration, self.validation = trunk, calibration, validation
        self._predict = None

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        from .head_training import sample_hits

        recalibrate_batch_norm(self.trunk, self.calibration())
        if self._predict is None:  # one traced graph for every epoch's validation batches
            self._predict = tf.function(lambda x: self.model(x, training=False), reduce_retracing=True)
        loss = self.model.loss
        # per-sample losses: a Loss object's own call (e.g. the masked multi-label loss), else Keras' function
        loss_fn = loss.call if isinstance(loss, keras.losses.Loss) else keras.losses.get(loss)
        total = hits = count = 0.0
        for batch in self.validation:
            x, y = batch[0], batch[1]
            w = batch[2] if len(batch) > 2 else tf.ones(tf.shape(y)[:1])
            pred = self._predict(x)
            per_sample = tf.reshape(loss_fn(y, pred), [-1])
            total += float(tf.reduce_sum(per_sample * tf.cast(w, per_sample.dtype)))
            hits += float(tf.reduce_sum(sample_hits(y, pred)))
            count += float(tf.shape(x)[0])
        if logs is not None and count:
            regularization = float(sum(self.model.losses)) if self.model.losses else 0.0
            logs["val_loss"], logs["val_accuracy"] = total / count + regularization, hits / count


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
