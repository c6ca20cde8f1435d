"""Reproducible runs: ``seeded(random_state)`` seeds everything a fit draws from, then restores it."""

from __future__ import annotations

import contextlib
import random

import numpy as np

__all__ = ["seeded", "reseed_initial_weights", "derive_seeds", "all_layers"]


def derive_seeds(seed, count: int) -> list[int]:
    """``count`` distinct seeds drawn from ``seed`` (NumPy's SeedSequence; fresh entropy when None).

    >>> derive_seeds(0, 3) == derive_seeds(0, 3), len(set(derive_seeds(0, 3)))
    (True, 3)
    """
    sequence = np.random.SeedSequence(None if seed is None else int(seed))
    return [int(s) for s in sequence.generate_state(int(count)) % (2**31 - 1)]


@contextlib.contextmanager
def seeded(seed):
    """Seed Python, NumPy, TensorFlow and Keras and enable deterministic ops; restore after.

    ``seed=None`` does nothing (runs stay random).  Python's and NumPy's global random
    states and TensorFlow's op-determinism switch are put back as they were, so a seeded
    fit changes nothing for the host program.

    TensorFlow has a public ``tf.config.experimental.enable_op_determinism`` but no public
    way to read or undo it; the two calls that do are TensorFlow's own
    ``tensorflow.python.framework.config`` functions (listed in docs/design.md).
    """
    if seed is None:
        yield
        return
    import keras
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config  # no public read/undo (docs/design.md)

    python_state, numpy_state = random.getstate(), np.random.get_state()
    was_deterministic = tf_config.is_op_determinism_enabled()
    keras.utils.set_random_seed(int(seed))
    # Keras seeds its global seed generator (every unseeded initializer) from Python's global
    # `random` when first used.  Drawing it now, right after seeding, keeps other threads of the
    # process that also draw from `random` (a Dask worker's event loop) from shifting it later.
    keras.random.uniform((1,))
    tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        if not was_deterministic:
            tf_config.disable_op_determinism()


# (initializer attribute, variable attribute) of the layers whose random weights Keras draws at build
_INITIALIZED = (("kernel_initializer", "kernel"), ("bias_initializer", "bias"),
                ("depthwise_initializer", "depthwise_kernel"), ("pointwise_initializer", "pointwise_kernel"),
                ("gamma_initializer", "gamma"), ("beta_initializer", "beta"))


def all_layers(model):
    """Every layer of ``model``, nested models (themselves, then their layers) included, in a fixed order."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from all_layers(layer)


def reseed_initial_weights(model, seed) -> int:
    """Draw the random initial weights of ``model`` again from ``seed`` alone; returns how many were drawn.

    Keras gives every unseeded initializer (and dropout layer) a seed from Python's global
    ``random`` when the layer is made, so a seeded build comes out differently when another
    thread of the process draws from ``random`` meanwhile (a Dask worker's event loop does).
    This draws each random initializer again with a seed made from ``seed`` and the layer's
    position, through the layers' public initializer attributes and ``get_config``/``from_config``:
    the same weights in any process.  Constant initializers (zeros, ones) are left as they are.

    Examples
    --------
    >>> import keras
    >>> def build():
    ...     return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.Dropout(0.5)])
    >>> a, b = build(), build()
    >>> reseed_initial_weights(a, 0), reseed_initial_weights(b, 0)   # the kernel; the bias starts at zeros
    (1, 1)
    >>> bool((a.get_weights()[0] == b.get_weights()[0]).all())
    True
    """
    import keras

    count = 0
    for index, layer in enumerate(all_layers(model)):
        layer_seed = (int(seed) * 7919 + index) % (2**31 - 1)
        for j, (init_name, var_name) in enumerate(_INITIALIZED):
            initializer, variable = getattr(layer, init_name, None), getattr(layer, var_name, None)
            if not isinstance(initializer, keras.initializers.Initializer) or variable is None:
                continue
            config = initializer.get_config()
            if "seed" not in config:  # constant: the same everywhere
                continue
            config["seed"] = (layer_seed * 8 + j) % (2**31 - 1)
            fresh = type(initializer).from_config(config)
            variable.assign(fresh(tuple(variable.shape), dtype=variable.dtype))
            count += 1
        generator = getattr(layer, "seed_generator", None)
        if isinstance(generator, keras.random.SeedGenerator):  # dropout masks, random augmentation
            generator.state.assign(np.asarray([layer_seed, 0], dtype=generator.state.dtype))
    return count
