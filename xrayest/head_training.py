"""Training and applying a head on in-memory features: one compiled graph per epoch.

``keras.Model.fit`` is built for data that streams: per fit it builds a tf.data pipeline,
traces a train function with metric and distribution machinery, and dispatches each step
from Python.  On a frozen backbone's cached features (a few hundred rows, a head of a few
dense layers) that fixed cost is nearly all of the work: about 3 s of a 10-epoch fit on
180 Xception vectors, when the arithmetic takes a few hundredths of a second.  A grid
search pays it once per candidate and fold.

:func:`fit_head` trains the same compiled head with the same loss, optimizer, regularisation,
dropout and BatchNorm updates, but runs each epoch as a single ``tf.function`` call looping
over the batches inside the graph.  Keras callbacks that act per epoch (EarlyStopping,
ReduceLROnPlateau, LearningRateScheduler, the estimator's EpochTimer) run unchanged;
per-batch hooks do not fire, so the estimator keeps ``keras.Model.fit`` for user callbacks
and progress bars.

With a plain Adam optimizer (the estimator's default) each step's update is TensorFlow's
fused ``ResourceApplyAdam`` kernel, the same arithmetic as Keras' Adam (``m``, ``v`` and the
bias-corrected rate, on the optimizer's own slot variables) in one pass instead of about
ten: Keras' elementwise ops over a 2048x256 Dense kernel were half of a head's training
time.  Anything else (AMSGrad, weight decay, clipping, EMA, other optimizers) goes through
``optimizer.apply_gradients``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fit_head", "predict_head", "LOSSES"]

# The losses the estimator compiles heads with, as the Loss classes Keras wraps them in
# (default reduction "sum_over_batch_size", like compile's).
LOSSES = {
    "binary_crossentropy": "BinaryCrossentropy",
    "sparse_categorical_crossentropy": "SparseCategoricalCrossentropy",
}


def _targets(head, y):
    """Targets shaped for the head's loss: (n, 1) floats for a sigmoid output, int labels otherwise."""
    y = np.asarray(y)
    if head.output_shape[-1] == 1:
        return y.reshape(len(y), 1).astype(np.float32)
    return y.reshape(len(y)).astype(np.int32)


def _accuracy(head, y_true, y_pred):
    """Per-sample hit (1.0/0.0), as Keras' "accuracy" metric for this head's loss computes it."""
    import tensorflow as tf

    if head.output_shape[-1] == 1:
        return tf.cast(tf.equal(y_true, tf.cast(y_pred > 0.5, y_true.dtype)), tf.float32)[:, 0]
    return tf.cast(tf.equal(y_true, tf.cast(tf.argmax(y_pred, axis=-1), y_true.dtype)), tf.float32)


def _regularization(head):
    import tensorflow as tf

    losses = head.losses
    return tf.add_n(losses) if losses else 0.0


def _fused_adam_step(optimizer, variables):
    """A graph-mode update ``step(grads)`` for a plain Keras Adam, or None when it does not apply."""
    import keras
    import tensorflow as tf

    plain = (type(optimizer) is keras.optimizers.Adam and not optimizer.amsgrad
             and optimizer.weight_decay is None and optimizer.clipnorm is None and optimizer.clipvalue is None
             and optimizer.global_clipnorm is None and not optimizer.use_ema
             and optimizer.gradient_accumulation_steps is None and optimizer.loss_scale_factor is None
             and keras.backend.backend() == "tensorflow"
             and all(v.dtype == "float32" and v.constraint is None for v in variables))
    if not plain:
        return None
    slots = [(optimizer._momentums[optimizer._get_variable_index(v)].value,
              optimizer._velocities[optimizer._get_variable_index(v)].value) for v in variables]
    beta_1, beta_2 = tf.constant(optimizer.beta_1, tf.float32), tf.constant(optimizer.beta_2, tf.float32)
    epsilon = tf.constant(optimizer.epsilon, tf.float32)

    def step(grads):
        rate = tf.cast(optimizer.learning_rate, tf.float32)  # follows schedules and callbacks
        count = tf.cast(optimizer.iterations + 1, tf.float32)
        beta_1_power, beta_2_power = tf.pow(beta_1, count), tf.pow(beta_2, count)
        for variable, (m, v), grad in zip(variables, slots, grads):
            tf.raw_ops.ResourceApplyAdam(var=variable.value.handle, m=m.handle, v=v.handle,
                                         beta1_power=beta_1_power, beta2_power=beta_2_power, lr=rate,
                                         beta1=beta_1, beta2=beta_2, epsilon=epsilon,
                                         grad=tf.convert_to_tensor(grad))
        optimizer.iterations.assign_add(1)

    return step


def _evaluate(head, loss_fn, x, y, w):
    """Loss (with regularisation, sample-weighted) and accuracy (unweighted, like Keras' compiled
    ``metrics``) on a whole set, in inference mode."""
    import tensorflow as tf

    pred = head(tf.constant(x), training=False)
    y = tf.constant(y)
    loss = loss_fn(y, pred, sample_weight=None if w is None else tf.constant(w)) + _regularization(head)
    return float(loss), float(np.mean(_accuracy(head, y, pred).numpy()))


def fit_head(head, x, y, *, batch_size, epochs, initial_epoch=0, sample_weight=None, validation_data=None,
             callbacks=(), shuffle=True, seed=None):
    """Train the compiled Keras ``head`` on feature rows ``x`` with labels ``y``.

    Parameters
    ----------
    head : keras.Model
        Compiled (``loss`` a name of a Keras loss, any Keras optimizer).
    x : ndarray of shape (n, ...)
        Features.
    y : ndarray of shape (n,)
        Encoded labels (0/1 for a sigmoid head, class indices for a softmax head).
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
    labels = tf.constant(_targets(head, y))
    weights = tf.constant(np.ones(n, np.float32) if sample_weight is None
                          else np.asarray(sample_weight, dtype=np.float32))
    if head.loss not in LOSSES:
        raise ValueError(f"fit_head supports heads compiled with loss {sorted(LOSSES)}; got {head.loss!r}")
    loss_fn = getattr(keras.losses, LOSSES[head.loss])()
    optimizer = head.optimizer
    variables = head.trainable_variables
    if not optimizer.built:
        optimizer.build(variables)
    n_batches = -(-n // batch_size)
    fused_step = _fused_adam_step(optimizer, variables)

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
            if fused_step is not None:
                fused_step(grads)
            else:
                optimizer.apply_gradients(zip(grads, variables))
            size = tf.cast(tf.shape(rows)[0], tf.float32)
            loss_sum += loss * size
            hits += tf.reduce_sum(_accuracy(head, yb, pred))
        return loss_sum / n, hits / n

    if validation_data is not None:
        x_val, y_val = np.asarray(validation_data[0], np.float32), _targets(head, validation_data[1])
        w_val = None if len(validation_data) < 3 or validation_data[2] is None \
            else np.asarray(validation_data[2], np.float32)
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
        if head.stop_training:
            break
    callback_list.on_train_end(logs)
    return history


def predict_head(head, x, batch_size=32):
    """``head`` applied to feature rows ``x`` in inference mode, as a float32 array.

    A direct call per chunk of rows rather than ``keras.Model.predict``, which traces a
    predict function per model (about half a second) before doing microseconds of work.
    """
    import tensorflow as tf

    x = np.asarray(x, dtype=np.float32)
    chunk = 8 * batch_size
    out = [head(tf.constant(x[i:i + chunk]), training=False).numpy() for i in range(0, len(x), chunk)]
    return np.concatenate(out) if out else np.zeros((0, *head.output_shape[1:]), np.float32)
