"""Optimizers: a fresh Keras optimizer per fit, and Adam with TensorFlow's fused update kernel.

Keras' Adam updates each variable with about ten elementwise ops (``m``, ``v``, their
bias-corrected ratio, the step).  On a frozen backbone's cached features the head's
2048x256 Dense kernel makes those passes about a third of a head's training time.
TensorFlow's ``ResourceApplyAdam`` kernel does the same arithmetic in one pass.
:class:`FusedAdam` is Keras' Adam with that kernel as its update step, written through
Keras' public extension points only (``build``, ``add_variable_from_reference``,
``update_step``): the same hyperparameters, config and results as ``keras.optimizers.Adam``
(tested to 1e-5 on weights and history).  :func:`build_optimizer` uses it for plain Adam
on the TensorFlow backend, in both training loops.
"""

from __future__ import annotations

import keras

__all__ = ["FusedAdam", "build_optimizer", "check_optimizer_learning_rate"]


# Adam options FusedAdam does not reproduce (a Keras Adam using any of them stays a Keras Adam).
_UNSUPPORTED = ("amsgrad", "weight_decay", "clipnorm", "clipvalue", "global_clipnorm", "use_ema",
                "gradient_accumulation_steps", "loss_scale_factor")


@keras.saving.register_keras_serializable(package="xrayest")
class FusedAdam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` (no AMSGrad, weight decay, clipping or EMA) updated by one fused kernel.

    Examples
    --------
    >>> import numpy as np, keras
    >>> from xrayest.optimizers import FusedAdam
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer=FusedAdam(1e-2), loss="mse")
    >>> history = model.fit(np.ones((4, 3)), np.zeros(4), epochs=2, verbose=0)
    >>> len(history.history["loss"])
    2
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, name="adam", **kwargs):
        for option in _UNSUPPORTED:
            if kwargs.get(option) not in (None, False):
                raise ValueError(f"FusedAdam does not support {option}={kwargs[option]!r}; use keras.optimizers.Adam")
            kwargs.pop(option, None)
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, name=name,
                         **kwargs)

    def build(self, var_list):
        if self.built:
            return
        # The base Optimizer's build (iterations, learning rate), then our own slot variables:
        # Adam.build's lists are private to it.
        keras.optimizers.Optimizer.build(self, var_list)
        self.slots = {}
        for variable in var_list:
            if variable.dtype != "float32":
                raise ValueError(f"FusedAdam updates float32 variables only; {variable.path} is {variable.dtype}")
            self.slots[id(_tf_variable(variable))] = (
                _tf_variable(self.add_variable_from_reference(variable, "momentum")),
                _tf_variable(self.add_variable_from_reference(variable, "velocity")))

    def update_step(self, gradient, variable, learning_rate):
        import tensorflow as tf

        variable = _tf_variable(variable)  # TensorFlow's optimizer backend hands over tf.Variables
        m, v = self.slots[id(variable)]
        count = tf.cast(self.iterations + 1, tf.float32)
        beta_1 = tf.constant(self.beta_1, tf.float32)
        beta_2 = tf.constant(self.beta_2, tf.float32)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=m.handle, v=v.handle,
            beta1_power=tf.pow(beta_1, count), beta2_power=tf.pow(beta_2, count),
            lr=tf.cast(learning_rate, tf.float32), beta1=beta_1, beta2=beta_2,
            epsilon=tf.constant(self.epsilon, tf.float32), grad=tf.convert_to_tensor(gradient, tf.float32))


def _tf_variable(variable):
    """The ``tf.Variable`` behind a Keras variable (``keras.Variable.value``), or the variable itself."""
    return variable.value if isinstance(variable, keras.Variable) else variable


def _plain_adam_config(optimizer) -> dict | None:
    """The config of a Keras Adam that :class:`FusedAdam` reproduces exactly, else None."""
    if type(optimizer) is not keras.optimizers.Adam or keras.backend.backend() != "tensorflow":
        return None
    config = optimizer.get_config()
    if any(config.get(key) not in (None, False) for key in _UNSUPPORTED):
        return None
    dropped = {*_UNSUPPORTED, "ema_momentum", "ema_overwrite_frequency"}
    return {key: value for key, value in config.items() if key not in dropped}


def check_optimizer_learning_rate(optimizer, learning_rate) -> None:
    """Refuse an optimizer instance whose own learning rate is not the estimator's ``learning_rate``.

    The estimator's ``learning_rate`` (with ``lr_schedule`` and ``fine_tune_learning_rate``) is the one
    every phase trains at, and the one a grid search tunes; an instance's own rate would be replaced
    silently, so a different one is an error naming both and the two ways to agree.
    """
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        return
    own = optimizer.get_config().get("learning_rate")
    if isinstance(own, (int, float)):
        if abs(float(own) - float(learning_rate)) <= 1e-6 * max(abs(float(own)), abs(float(learning_rate))):
            return
        shown, advice = f"{float(own):g}", f"pass learning_rate={float(own):g}"
    else:
        shown, advice = "a schedule", "give the schedule as lr_schedule"
    raise ValueError(f"optimizer={type(optimizer).__name__}(...) has its own learning rate ({shown}) but "
                     f"learning_rate={float(learning_rate):g}, the rate every phase trains at: {advice}, or pass "
                     "the optimizer's name or class instead of an instance")


def build_optimizer(optimizer, learning_rate, loss_scaling=False):
    """A fresh Keras optimizer from a name, class or instance, at ``learning_rate``.

    Instances are copied (never shared between fits).  A plain Adam on the TensorFlow
    backend becomes the equivalent :class:`FusedAdam`.  ``loss_scaling``: wrapped in Keras'
    ``LossScaleOptimizer`` (dynamic loss scaling, for float16 arithmetic).
    """
    if isinstance(optimizer, keras.optimizers.Optimizer):
        config = optimizer.get_config()
        if learning_rate is not None:
            config["learning_rate"] = float(learning_rate)
        fresh = optimizer.__class__.from_config(config)
    elif isinstance(optimizer, type) and issubclass(optimizer, keras.optimizers.Optimizer):
        fresh = optimizer(learning_rate=float(learning_rate))
    elif isinstance(optimizer, str):
        try:
            template = keras.optimizers.get(optimizer)
        except ValueError:
            raise ValueError(f"optimizer {optimizer!r} is not a Keras optimizer name (e.g. 'adam', 'sgd', "
                             "'rmsprop')") from None
        config = template.get_config()
        config["learning_rate"] = float(learning_rate)
        fresh = template.__class__.from_config(config)
    else:
        raise ValueError(f"optimizer must be a Keras optimizer name, class or instance; got {optimizer!r}")
    plain = _plain_adam_config(fresh)
    fresh = FusedAdam.from_config(plain) if plain is not None else fresh
    return keras.optimizers.LossScaleOptimizer(fresh) if loss_scaling else fresh
