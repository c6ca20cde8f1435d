"""Training and applying a head on in-memory features: one compiled graph per epoch.

``keras.Model.fit`` is built for data that streams: per fit it builds a tf.data pipeline,
traces a train function with metric and distribution machinery, and dispatches each step
from Python.  On a frozen backbone's cached features (a few hundred rows, a head of a few
dense layers) that fixed cost is nearly all of the work (benchmarks/bench_head.py measures
it against the arithmetic).  A grid search pays it once per candidate and fold.

:func:`fit_head` trains the same compiled head with the same loss, optimizer, regularisation,
dropout and BatchNorm updates, but runs each epoch as a single ``tf.function`` call looping
over the batches inside the graph.  Keras callbacks that act per epoch (EarlyStopping,
ReduceLROnPlateau, LearningRateScheduler, the estimator's EpochTimer) run unchanged.

The optimizer is whatever the head was compiled with (:func:`xrayest.optimizers.build_optimizer`
gives plain Adam as :class:`~xrayest.optimizers.FusedAdam`, one fused kernel per update); it is
applied through ``optimizer.apply_gradients``, the public Keras API.

Callbacks: only epoch-level hooks run (``on_train_begin/end``, ``on_epoch_begin/end``).
:func:`has_batch_hooks` tells whether a callback wants more; the estimator then trains with
``keras.Model.fit`` instead, and says so in ``training_loop_`` (see
``XrayCNNClassifier(training_loop=...)``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["fit_head", "predict_head", "has_batch_hooks", "sample_hits"]


def sample_hits(y_true, y_pred):
    """Per-sample hit (1.0/0.0), as Keras' "accuracy" metric computes it for xrayest's heads.

    ``y_pred`` of one column is a sigmoid (``y_true`` of shape (n, 1), 0/1, hit at > 0.5); a
    ``y_true`` of the same (n, k) shape is multi-label (the share of known findings right, see
    :func:`xrayest.multilabel.masked_binary_accuracy`); otherwise a softmax (``y_true`` class
    indices of shape (n,)).
    """
    import tensorflow as tf

    if y_pred.shape[-1] > 1 and len(y_true.shape) == 2 and y_true.shape[-1] == y_pred.shape[-1]:
        from .multilabel import masked_binary_accuracy

        return masked_binary_accuracy(y_true, y_pred)
    if y_pred.shape[-1] == 1:
        return tf.cast(tf.equal(y_true, tf.cast(y_pred > 0.5, y_true.dtype)), tf.float32)[:, 0]
    return tf.cast(tf.equal(y_true, tf.cast(tf.argmax(y_pred, axis=-1), y_true.dtype)), tf.float32)


def _regularization(head):
    import tensorflow as tf

    losses = head.losses
    return tf.add_n(losses) if losses else 0.0


def has_batch_hooks(callback) -> bool:
    """Whether a Keras callback overrides any per-batch hook (which :func:`fit_head` never calls)."""
    import keras

    base = keras.callbacks.Callback
    hooks = ("on_batch_begin", "on_batch_end", "on_train_batch_begin", "on_train_batch_end",
             "on_test_batch_begin", "on_test_batch_end", "on_test_begin", "on_test_end")
    if any(hook in vars(callback) for hook in hooks):  # LambdaCallback sets its hooks on the instance
        return True
    return any(getattr(type(callback), hook) is not getattr(base, hook) for hook in hooks)


def _evaluate(head, loss_fn, x, y, w):
    """Loss (with regularisation, sample-weighted) and accuracy (unweighted, like Keras' compiled
    ``metrics``) on a whole set, in inference mode."""
    import tensorflow as tf

    pred = head(tf.constant(x), training=False)
    y = tf.constant(y)
    loss = loss_fn(y, pred, sample_weight=None if w is None else tf.constant(w)) + _regularization(head)
    return float(loss), float(np.mean(sample_hits(y, pred).numpy()))


def fit_head(head, x, y, *, batch_size, epochs, initial_epoch=0, sample_weight=None, validation_data=None,
             callbacks=(), shuffle=True, seed=None, verbose=0):
    """Train the compiled Keras ``head`` on feature rows ``x`` with labels ``y``.

    Parameters
    ----------
    head : keras.Model
        Compiled (``loss`` a ``keras.losses.Loss`` instance, any Keras optimizer).
    x : ndarray of shape (n, ...)
        Features.
    y : ndarray
        Targets shaped for the loss (``xrayest.targets.Targets.shaped``): ``(n, 1)`` 0/1 for a
        sigmoid head, class indices ``(n,)`` for a softmax, the ``(n, k)`` matrix for several sigmoids.
    batch_size, epochs, initial_epoch : int
        As in ``keras.Model.fit``; epochs ``initial_epoch .. epochs - 1`` run.
    sample_weight : ndarray of shape (n,), optional
    validation_data : tuple, optional
        ``(x_val, y_val)`` or ``(x_val, y_val, w_val)``: adds ``val_loss``/``val_accuracy``.
    callbacks : sequence of keras.callbacks.Callback
        Epoch-level callbacks.
    shuffle : bool
        Reshuffle the rows every epoch.
    seed : int, optional
        Seeds the shuffling.
    verbose : int
        > 0 prints one line per epoch (loss, accuracy, validation).

    Returns
    -------
    keras.callbacks.History
        ``history.history`` has per-epoch ``loss`` and ``accuracy`` (as Keras computes them
        during an epoch) plus whatever the callbacks log.
    """
    import keras
    import tensorflow as tf

    n = len(x)
    features = tf.constant(np.asarray(x, dtype=np.float32))
    labels = tf.constant(np.asarray(y))
    weights = tf.constant(np.ones(n, np.float32) if sample_weight is None
                          else np.asarray(sample_weight, dtype=np.float32))
    loss_fn = head.loss
    if not isinstance(loss_fn, keras.losses.Loss):
        raise ValueError(f"fit_head needs a head compiled with a keras.losses.Loss instance; got {loss_fn!r}")
    optimizer = head.optimizer
    variables = head.trainable_variables
    if not optimizer.built:
        optimizer.build(variables)
    n_batches = -(-n // batch_size)

    @tf.function(jit_compile=False)
    def run_epoch(order):
        # Keras' epoch loss is the mean of batch losses weighted by batch size; its compiled
        # "accuracy" ignores sample weights (only weighted_metrics use them).
        loss_sum, hits = tf.constant(0.0), tf.constant(0.0)
        for b in tf.range(n_batches):
            rows = order[b * batch_size:(b + 1) * batch_size]
            xb, yb, wb = tf.gather(features, rows), tf.gather(labels, rows), tf.gather(weights, rows)
            with tf.GradientTape() as tape:
                pred = head(xb, training=True)
                loss = loss_fn(yb, pred, sample_weight=wb) + _regularization(head)
            grads = tape.gradient(loss, variables)
            optimizer.apply_gradients(zip(grads, variables))
            size = tf.cast(tf.shape(rows)[0], tf.float32)
            loss_sum += loss * size
            hits += tf.reduce_sum(sample_hits(yb, pred))
        return loss_sum / n, hits / n

    if validation_data is not None:
        x_val, y_val = np.asarray(validation_data[0], np.float32), np.asarray(validation_data[1])
        w_val = (None if len(validation_data) < 3 or validation_data[2] is None
                 else np.asarray(validation_data[2], np.float32))
    rng = np.random.default_rng(seed)
    history = keras.callbacks.History()
    callback_list = keras.callbacks.CallbackList(list(callbacks) + [history], model=head, epochs=epochs,
                                                 steps=n_batches, verbose=0)
    head.stop_training = False
    callback_list.on_train_begin()
    logs = {}
    for epoch in range(initial_epoch, epochs):
        callback_list.on_epoch_begin(epoch)
        order = rng.permutation(n) if shuffle else np.arange(n)
        loss, accuracy = run_epoch(tf.constant(order, dtype=tf.int32))
        logs = {"loss": float(loss), "accuracy": float(accuracy)}
        if validation_data is not None:
            logs["val_loss"], logs["val_accuracy"] = _evaluate(head, loss_fn, x_val, y_val, w_val)
        callback_list.on_epoch_end(epoch, logs)
        if verbose:
            print(f"epoch {epoch + 1}/{epochs} - " + " - ".join(f"{k}: {v:.4f}" for k, v in logs.items()), flush=True)
        if head.stop_training:
            break
    callback_list.on_train_end(logs)
    return history


def predict_head(head, x, batch_size=32):
    """``head`` applied to feature rows ``x`` in inference mode, as a float32 array.

    A direct call per chunk of rows rather than ``keras.Model.predict``, which traces a
    predict function per model (about half a second) before doing microseconds of work.

    The rows go through the head in one canonical order (sorted by their bytes) and come back in
    the caller's: a matrix product's rounding can depend on where a row sits in its block of
    rows (AVX2 kernels treat the last, partial block of rows apart), so without it the same rows
    in another order could differ in the last bit (scikit-learn's sample-order check).
    """
    import tensorflow as tf

    from .inputs import chunk_size

    x = np.ascontiguousarray(x, dtype=np.float32)
    if not len(x):
        return np.zeros((0, *head.output_shape[1:]), np.float32)
    order = np.argsort(x.reshape(len(x), -1).view(np.dtype((np.void, x[0].nbytes))).ravel(), kind="stable")
    chunk = chunk_size(batch_size)
    out = None
    for i in range(0, len(x), chunk):  # gathered a chunk at a time: no sorted copy of all the rows
        rows = order[i:i + chunk]
        part = head(tf.constant(x[rows]), training=False).numpy()
        if out is None:
            out = np.empty((len(x), *part.shape[1:]), part.dtype)
        out[rows] = part
    return out
