"""Reproducible runs: ``seeded(random_state)`` seeds everything a fit draws from, then restores it."""

from __future__ import annotations

import contextlib
import random

import numpy as np

__all__ = ["seeded"]


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
    tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        if not was_deterministic:
            tf_config.disable_op_determinism()
