"""The input pipeline of phases that train on images: images packed as uint8, streamed in shuffled batches.

A phase on images (augmentation, an unfrozen backbone) shows every training image to the network in
every epoch.  Decoding the set into one float32 array at model size costs 12 bytes per pixel (three
float channels) and is held for the whole fit.  Instead, :class:`PackedImages` decodes each file once
into ``uint8`` at the model's input size, with one channel when the images are grayscale (X-rays
are): 1 byte per pixel, 12x less.  An array passed by the caller is used as it is, not copied.
:func:`image_dataset` then streams shuffled batches from them with ``tf.data``: a batch of
indices is gathered and converted to float RGB (the only float copy is one batch),
and the next batches are prepared while the current one trains (``prefetch``).  Augmentation runs
inside the model's graph (:mod:`xrayest.augmentation`).  Resident memory is the packed images plus a few
batches, whatever the number of epochs.
"""

from __future__ import annotations

import numpy as np

from .inputs import ArrayImages, ImageSource, to_rgb

__all__ = ["PackedImages", "image_dataset"]


class PackedImages:
    """Training images held compactly: ``(n, h, w, c)``, read a batch at a time as float32 RGB.

    Examples
    --------
    >>> import numpy as np
    >>> from xrayest.inputs import as_image_source
    >>> store = PackedImages.from_source(as_image_source(np.zeros((5, 8, 8), np.uint8)), (8, 8))
    >>> len(store), store.batch([0, 3]).shape, store.batch([0, 3]).dtype
    (5, (2, 8, 8, 3), dtype('float32'))
    """

    def __init__(self, array: np.ndarray):
        self.array = array

    @classmethod
    def from_source(cls, source: ImageSource, size, *, chunk: int = 256) -> "PackedImages":
        """The images of ``source`` at ``size`` (height, width).

        Arrays are used as they are (the model resizes them); files are decoded once, ``chunk`` at a
        time, into ``uint8`` at ``size``, one channel while every image is gray.
        """
        if isinstance(source, ArrayImages):
            return cls(source.array)
        n, (height, width) = len(source), (int(size[0]), int(size[1]))
        store = np.empty((n, height, width, 1), np.uint8)
        for start in range(0, n, chunk):
            batch = source.batch(start, min(start + chunk, n), size)  # float32 RGB holding uint8 values
            gray = np.array_equal(batch[..., 0], batch[..., 1]) and np.array_equal(batch[..., 0], batch[..., 2])
            if not gray and store.shape[-1] == 1:  # a colour image: keep three channels from here on
                colour = np.empty((n, height, width, 3), np.uint8)
                colour[:start] = store[:start]
                store = colour
            store[start:start + len(batch)] = np.rint(batch[..., :store.shape[-1]]).astype(np.uint8)
        return cls(store)

    def __len__(self) -> int:
        return len(self.array)

    @property
    def nbytes(self) -> int:
        return int(self.array.nbytes)

    @property
    def image_shape(self) -> tuple:
        return tuple(self.array.shape[1:3])

    def batch(self, indices) -> np.ndarray:
        """Float32 RGB images (0-255) at ``indices``, a new array."""
        return to_rgb(self.array[np.asarray(indices, dtype=np.intp)])

    def batches(self, rows, batch_size: int):
        """The images at ``rows``, in order, as float32 RGB batches of ``batch_size``."""
        for start in range(0, len(rows), batch_size):
            yield self.batch(rows[start:start + batch_size])


def image_dataset(store: PackedImages, indices, y, sample_weight=None, *, batch_size: int, shuffle: bool,
                  seed=None):
    """A ``tf.data.Dataset`` of ``(images, y[, sample_weight])`` batches over ``store[indices]``.

    Parameters
    ----------
    store : PackedImages
    indices : array of int
        The rows of the store this dataset covers (a training or validation split).
    y : ndarray
        Targets, one row per store row.
    sample_weight : ndarray, optional
    batch_size : int
    shuffle : bool
        Reshuffle the rows every epoch (seeded by ``seed``).
    """
    import tensorflow as tf

    indices = np.asarray(indices, dtype=np.int64)
    targets = tf.constant(np.asarray(y)[indices])
    weights = None if sample_weight is None else tf.constant(np.asarray(sample_weight, np.float32)[indices])
    rows = tf.data.Dataset.from_tensor_slices((indices, tf.range(len(indices), dtype=tf.int64)))
    if shuffle:
        rows = rows.shuffle(len(indices), seed=seed, reshuffle_each_iteration=True)
    rows = rows.batch(batch_size)
    height, width = store.image_shape

    def load(store_rows, positions):
        images = tf.numpy_function(store.batch, [store_rows], tf.float32, stateful=False)
        images.set_shape((None, height, width, 3))
        out = (images, tf.gather(targets, positions))
        return out if weights is None else (*out, tf.gather(weights, positions))

    return rows.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)
