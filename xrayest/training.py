"""Training helpers shared by the estimators: seeding, validation split, named callbacks."""

from __future__ import annotations

import contextlib
import time

import keras
import numpy as np
from sklearn.model_selection import StratifiedShuffleSplit, ShuffleSplit

__all__ = ["seeded", "stratified_split", "EpochTimer", "build_optimizer"]


@contextlib.contextmanager
def seeded(seed):
    """Seed Python, NumPy, TensorFlow and Keras and enable deterministic ops; restore after.

    ``seed=None`` does nothing (runs stay random).  Unlike scikeras' helper this never
    touches ``TF_DETERMINISTIC_OPS``, which TensorFlow may read once and keep for good.
    """
    if seed is None:
        yield
        return
    import random

    from tensorflow.python.framework import config as tf_config

    python_state, numpy_state = random.getstate(), np.random.get_state()
    was_deterministic = tf_config.is_op_determinism_enabled()
    keras.utils.set_random_seed(int(seed))
    tf_config.enable_op_determinism()
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        if not was_deterministic:
            tf_config.disable_op_determinism()


def stratified_split(y_encoded: np.ndarray, fraction: float, random_state=None):
    """Train/validation indices holding ``fraction`` out, stratified by class where possible.

    Keras' own ``validation_split`` takes the *last* rows, which on data sorted by class
    leaves whole classes out of training; this draws the rows at random per class.
    """
    n = len(y_encoded)
    labels = np.asarray(y_encoded).reshape(n, -1).argmax(axis=1) if np.ndim(y_encoded) > 1 and np.shape(y_encoded)[1] > 1 else np.asarray(y_encoded).ravel()
    n_val = int(np.ceil(fraction * n))
    if n_val < 1 or n - n_val < 1:
        raise ValueError(f"validation_split={fraction} leaves no data for training or validation with {n} samples")
    counts = np.unique(labels, return_counts=True)[1]
    if counts.min() >= 2 and n_val >= len(counts) and n - n_val >= len(counts):
        splitter = StratifiedShuffleSplit(n_splits=1, test_size=n_val, random_state=random_state)
    else:
        splitter = ShuffleSplit(n_splits=1, test_size=n_val, random_state=random_state)
    train, val = next(splitter.split(np.zeros(n), labels))
    return np.sort(train), np.sort(val)


class EpochTimer(keras.callbacks.Callback):
    """Records seconds per epoch into the logs as ``epoch_time``."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_time"] = time.perf_counter() - self._start


def build_optimizer(optimizer, learning_rate):
    """A fresh Keras optimizer from a name, class or instance, at ``learning_rate``.

    Instances are copied (never shared between fits); names and classes get ``learning_rate``.
    """
    if isinstance(optimizer, keras.optimizers.Optimizer):
        config = optimizer.get_config()
        if learning_rate is not None:
            config["learning_rate"] = float(learning_rate)
        return optimizer.__class__.from_config(config)
    if isinstance(optimizer, type) and issubclass(optimizer, keras.optimizers.Optimizer):
        return optimizer(learning_rate=float(learning_rate))
    if isinstance(optimizer, str):
        opt = keras.optimizers.get(optimizer)
        config = opt.get_config()
        config["learning_rate"] = float(learning_rate)
        return opt.__class__.from_config(config)
    raise ValueError(f"optimizer must be a Keras optimizer name, class or instance; got {optimizer!r}")


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


def unfreeze(backbone, fine_tune):
    """Make the last ``fine_tune`` layers (int) or those after layer ``fine_tune`` (str) trainable.

    BatchNormalization layers stay frozen, which in Keras 3 also keeps them in inference mode:
    their ImageNet statistics are not overwritten by a few small X-ray batches.

    Returns
    -------
    int
        Number of layers made trainable.
    """
    layers = backbone.layers
    if isinstance(fine_tune, str):
        names = [layer.name for layer in layers]
        if fine_tune not in names:
            raise ValueError(f"fine_tune layer {fine_tune!r} not found in backbone {backbone.name!r}")
        start = names.index(fine_tune) + 1
    elif isinstance(fine_tune, (int, np.integer)) and fine_tune > 0:
        start = max(len(layers) - int(fine_tune), 0)
    else:
        raise ValueError(f"fine_tune must be a positive number of layers or a layer name; got {fine_tune!r}")
    backbone.trainable = True
    count = 0
    for i, layer in enumerate(layers):
        trainable = i >= start and not isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = trainable
        count += trainable and bool(layer.weights)
    return count
