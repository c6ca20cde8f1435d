"""Keras layers that live inside xrayest models, so a saved model takes raw pixels.

They are registered as serializable, which lets ``keras.saving.load_model`` rebuild them
in ``safe_mode`` without running any code stored in the file.
"""

from __future__ import annotations

import math

import keras
from keras import ops

__all__ = ["ImagePreprocessing", "FusedBatchNormalization", "OnGray", "RandomGeometry", "PREPROCESS_MODES",
           "POOLINGS", "pooling_layer"]

# The arithmetic of keras.applications.*.preprocess_input, one entry per mode, as data.
# Unlike preprocess_input this never writes into the caller's array (it runs as graph ops).
PREPROCESS_MODES = {
    # VGG16/19, ResNet50: RGB -> BGR, subtract ImageNet channel means.
    "caffe": {"bgr": True, "scale": 1.0, "mean": (103.939, 116.779, 123.68), "std": (1.0, 1.0, 1.0)},
    # Inception, Xception, MobileNetV2: scale to [-1, 1].
    "tf": {"bgr": False, "scale": 1 / 127.5, "mean": (1.0, 1.0, 1.0), "std": (1.0, 1.0, 1.0)},
    # DenseNet: scale to [0, 1], then ImageNet mean/std.
    "torch": {"bgr": False, "scale": 1 / 255.0, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)},
    # EfficientNet (it rescales internally) and the from-scratch CNNs fed raw [0, 255].
    "none": {"bgr": False, "scale": 1.0, "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)},
    # From-scratch CNNs: [0, 1].
    "unit": {"bgr": False, "scale": 1 / 255.0, "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)},
}


@keras.saving.register_keras_serializable(package="xrayest")
class ImagePreprocessing(keras.layers.Layer):
    """Resize RGB images in [0, 255] to ``size`` and apply a backbone's preprocessing.

    Parameters
    ----------
    size : tuple of int
        ``(height, width)`` the backbone expects.
    mode : str
        A key of :data:`PREPROCESS_MODES`.
    channels : {3, 1}
        Output channels: 3 (RGB) or 1 (the mean of R, G and B: a gray X-ray's one channel, for
        backbones with grayscale input).
    """

    def __init__(self, size, mode="none", channels=3, **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESS_MODES:
            raise ValueError(f"unknown preprocessing mode {mode!r}; valid: {sorted(PREPROCESS_MODES)}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3; got {channels!r}")
        self.size = (int(size[0]), int(size[1]))
        self.mode = mode
        self.channels = int(channels)
        self._resize = keras.layers.Resizing(*self.size, interpolation="bilinear", dtype=self.dtype_policy)

    def build(self, input_shape):
        self._resize.build(input_shape)
        self.built = True

    def call(self, images):
        x = ops.cast(images, self.compute_dtype)
        if self.channels == 1:  # gray before resizing: one channel to resize, not three
            x = ops.mean(x, axis=-1, keepdims=True)
        x = self._resize(x)
        spec = PREPROCESS_MODES[self.mode]
        if spec["bgr"]:
            x = ops.flip(x, axis=-1)
        mean, std = spec["mean"][:self.channels], spec["std"][:self.channels]
        x = x * spec["scale"] - ops.convert_to_tensor(mean, dtype=x.dtype)
        return x / ops.convert_to_tensor(std, dtype=x.dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.size, self.channels)

    def get_config(self):
        return {**super().get_config(), "size": list(self.size), "mode": self.mode, "channels": self.channels}


@keras.saving.register_keras_serializable(package="xrayest")
class OnGray(keras.layers.Layer):
    """``layer`` (an augmentation) applied to the mean of the channels, given back as equal channels.

    For a backbone that reads one gray channel (its preprocessing averages R, G and B), augmenting
    that channel alone is the same transformation at a third of the work: each augmentation applies
    one linear per-pixel operation to every channel alike, so it commutes with their mean.  At
    inference images pass through unchanged, as through any augmentation.
    """

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        self.layer = layer

    def build(self, input_shape):
        self.layer.build((*input_shape[:-1], 1))
        self.built = True

    def call(self, images, training=None):
        if not training:
            return images
        gray = self.layer(ops.mean(images, axis=-1, keepdims=True), training=True)
        return ops.repeat(gray, images.shape[-1], axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "layer": keras.saving.serialize_keras_object(self.layer)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["layer"] = keras.saving.deserialize_keras_object(config["layer"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="xrayest")
class RandomGeometry(keras.layers.Layer):
    """Random rotation, zoom, zoom-in crop and shift of each image, resampled once.

    Keras' ``RandomRotation``, ``RandomZoom`` (twice: ``zoom`` and ``crop``) and
    ``RandomTranslation`` applied one after the other, in that order, with the same draws per
    image (angle uniform in +-``rotation`` of a full turn about the centre; zoom factor in
    1 +- ``zoom``; crop factor in [1 - ``crop``, 1]; shifts in +-``shift`` of the height and of
    the width), composed into one affine map: one bilinear resampling of the image instead of one
    per layer (each of which costs a pass over the batch and blurs the image again).  Pixels the
    map takes from outside the image repeat the nearest edge pixel, as the Keras layers'
    ``fill_mode="nearest"``.  At inference images pass through unchanged.

    Parameters
    ----------
    rotation, zoom, crop, shift : float
        Fractions as in :data:`xrayest.augmentation.AUGMENT_PRESETS` (0: not drawn).
    seed : int, optional

    Examples
    --------
    >>> import numpy as np
    >>> layer = RandomGeometry(rotation=0.05, shift=0.1, seed=0)
    >>> images = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 1)).astype("float32")
    >>> moved = np.asarray(layer(images, training=True))
    >>> moved.shape, bool(np.allclose(moved, images)), bool(np.allclose(layer(images), images))
    ((2, 16, 16, 1), False, True)
    """

    def __init__(self, rotation=0.0, zoom=0.0, crop=0.0, shift=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rotation, self.zoom, self.crop, self.shift = (float(rotation), float(zoom), float(crop), float(shift))
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def get_random_transformation(self, images, training=True, seed=None):
        """Per image ``(angle in radians, zoom, crop, shift_y, shift_x as fractions)``, shape ``(n, 5)``."""
        if not training:
            return None
        n = ops.shape(images)[0]
        u = keras.random.uniform((n, 5), -1.0, 1.0, seed=seed if seed is not None else self.seed_generator)
        return ops.stack([u[:, 0] * self.rotation * 2 * math.pi, 1.0 + u[:, 1] * self.zoom,
                          1.0 - (u[:, 2] + 1.0) / 2 * self.crop, u[:, 3] * self.shift, u[:, 4] * self.shift], axis=1)

    def transform_images(self, images, transformation, training=True):
        if not training or transformation is None:
            return images
        shape = ops.shape(images)
        height, width = ops.cast(shape[1], "float32"), ops.cast(shape[2], "float32")
        angle, zoom, crop, dy, dx = (transformation[:, i] for i in range(5))
        # Output pixel p maps to input pixel c + s R (p - c) + R t: rotation R about the centre c, the
        # two zooms s = zoom * crop about it, the shift t (pixels) taken before the zooms and rotation,
        # as the layers' maps compose when applied rotation first and shift last.
        scale = zoom * crop
        cos, sin = ops.cos(angle), ops.sin(angle)
        cx, cy = (width - 1) / 2, (height - 1) / 2
        tx, ty = -dx * width * scale, -dy * height * scale
        a0, a1, b0, b1 = scale * cos, -scale * sin, scale * sin, scale * cos
        a2 = cx - a0 * cx - a1 * cy + cos * tx - sin * ty
        b2 = cy - b0 * cx - b1 * cy + sin * tx + cos * ty
        zero = ops.zeros_like(angle)
        matrix = ops.stack([a0, a1, a2, b0, b1, b2, zero, zero], axis=1)
        out = ops.image.affine_transform(ops.cast(images, "float32"), matrix, interpolation="bilinear",
                                         fill_mode="nearest")
        return ops.cast(out, images.dtype)

    def call(self, images, training=None):
        if not training:
            return images
        return self.transform_images(images, self.get_random_transformation(images, training=True), training=True)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rotation": self.rotation, "zoom": self.zoom, "crop": self.crop,
                "shift": self.shift, "seed": self.seed}


@keras.saving.register_keras_serializable(package="xrayest")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """Keras' ``BatchNormalization``, computed by TensorFlow's fused kernel where it applies.

    Keras 3 applies batch normalization as separate elementwise passes in float32 (moments, then
    normalisation, with casts around each under ``mixed_bfloat16``); in a small CNN trained from
    scratch those passes cost more than the convolutions.  On the TensorFlow backend, for a 4-D
    channels-last input without mask or renormalisation, this layer runs TensorFlow's fused
    ``FusedBatchNormV3`` kernel instead (bfloat16 input with float32 statistics, forward and
    gradient in one pass each).  Same parameters, weights, moving-statistics update (biased batch
    variance, as Keras) and results as ``keras.layers.BatchNormalization`` (tested); any other case
    is Keras' own computation.
    """

    def _fusable(self, inputs, mask):
        axis = self.axis if isinstance(self.axis, int) else (self.axis[0] if len(self.axis) == 1 else None)
        return (keras.backend.backend() == "tensorflow" and mask is None and not self.renorm
                and not self.synchronized and len(inputs.shape) == 4 and axis in (-1, 3))

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        channels = inputs.shape[-1]
        x = tf.convert_to_tensor(inputs)
        if x.dtype not in (tf.float32, tf.bfloat16, tf.float16):
            x = tf.cast(x, tf.float32)
        gamma = self.gamma.value if self.scale else tf.ones((channels,), tf.float32)
        beta = self.beta.value if self.center else tf.zeros((channels,), tf.float32)
        if training and self.trainable:
            y, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=gamma, offset=beta, mean=tf.constant([], tf.float32),
                variance=tf.constant([], tf.float32), epsilon=self.epsilon, data_format="NHWC", is_training=True)
            # The kernel returns the unbiased batch variance; Keras keeps the biased one.
            count = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float32)
            variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        else:
            y, *_ = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=gamma, offset=beta, mean=self.moving_mean.value, variance=self.moving_variance.value,
                epsilon=self.epsilon, data_format="NHWC", is_training=False)
        return tf.cast(y, self.compute_dtype)


POOLINGS = ("flatten", "avg", "max")


def pooling_layer(pooling: str, name: str = "pool") -> keras.layers.Layer:
    """The Keras layer turning a feature map into a vector."""
    layers = {
        "flatten": keras.layers.Flatten,
        "avg": keras.layers.GlobalAveragePooling2D,
        "max": keras.layers.GlobalMaxPooling2D,
    }
    if pooling not in layers:
        raise ValueError(f"pooling must be one of {POOLINGS}; got {pooling!r}")
    return layers[pooling](name=name)
