"""Callbacks of a fit: small named Keras callbacks, passed as ``XrayCNNClassifier(callbacks=[...])`` or added
by the estimator's own parameters.

- :class:`WeightAveraging`: the model ends with the mean of its weights over the last epochs (SWA).
- :class:`EpochTimer`: seconds per epoch in the history (``history_["epoch_time"]``); every fit adds it.
- :class:`RecalibratedValidation`: per-epoch validation of a network trained on images, scored after
  recalibrating its BatchNorm statistics; the estimator adds it when it validates such a phase.
- :func:`fit_callbacks`: the callbacks that ``early_stopping``, ``reduce_lr`` and ``lr_schedule`` ask for.

Each acts through Keras' epoch hooks only (``on_train_begin/end``, ``on_epoch_begin/end``), so a head on
cached features keeps its one-graph-per-epoch loop (``xrayest.head_training``).
"""

from __future__ import annotations

import time

import keras
import numpy as np

from .training import recalibrate_batch_norm

__all__ = ["WeightAveraging", "EpochTimer", "RecalibratedValidation", "fit_callbacks"]


class WeightAveraging(keras.callbacks.Callback):
    """Stochastic weight averaging: the model ends with the mean of its weights over the last epochs.

    Weights are taken at the end of each of the last ``last_epochs`` epochs of a phase and their
    mean is set when training ends (Izmailov et al. 2018, "Averaging weights leads to wider optima and
    better generalization").  A network trained on images then has its BatchNorm statistics
    recalibrated for the averaged weights (``xrayest.training.recalibrate_batch_norm``), as every such fit does.
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

    Parameters
    ----------
    early_stopping, reduce_lr : int or None
        Patience in epochs; they watch ``val_loss`` when there is validation data, else ``loss``.
        Early stopping restores the best weights.
    lr_schedule : None, "cosine", "step" or callable
        A callable is ``schedule(epoch, lr) -> lr``.
    has_validation : bool
        Whether the phase is validated (what early stopping and reduce_lr watch).
    epochs : int
        The epochs of the phase (the length of the cosine or step schedule).

    Returns
    -------
    list of keras.callbacks.Callback
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


class RecalibratedValidation(keras.callbacks.Callback):
    """Validation scored at each epoch end with BatchNorm statistics recalibrated first.

    Keras scores ``validation_data`` with the running BatchNorm averages, which lag the weights and
    were taken on augmented batches: on pediatric X-rays that made validation accuracy jump by tens of
    points from one epoch to the next while training accuracy rose steadily (benchmarks/RESULTS.md).
    This callback,
    placed before early stopping and learning-rate callbacks, recalibrates the trunk's trainable
    BatchNorm layers on ``calibration()`` (un-augmented training batches, see
    ``xrayest.training.recalibrate_batch_norm``), then writes ``val_loss`` and ``val_accuracy`` into the epoch's
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
