"""Keras layers that live inside xrayest models, so a saved model takes raw pixels.

They are registered as serializable, which lets ``keras.saving.load_model`` rebuild them
in ``safe_mode`` without running any code stored in the file.
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["ImagePreprocessing", "PREPROCESS_MODES"]

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
    """

    def __init__(self, size, mode="none", **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESS_MODES:
            raise ValueError(f"unknown preprocessing mode {mode!r}; valid: {sorted(PREPROCESS_MODES)}")
        self.size = (int(size[0]), int(size[1]))
        self.mode = mode
        self._resize = keras.layers.Resizing(*self.size, interpolation="bilinear", dtype=self.dtype_policy)

    def build(self, input_shape):
        self._resize.build(input_shape)
        self.built = True

    def call(self, images):
        x = ops.cast(images, self.compute_dtype)
        x = self._resize(x)
        spec = PREPROCESS_MODES[self.mode]
        if spec["bgr"]:
            x = ops.flip(x, axis=-1)
        x = x * spec["scale"] - ops.convert_to_tensor(spec["mean"], dtype=x.dtype)
        return x / ops.convert_to_tensor(spec["std"], dtype=x.dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.size, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "size": list(self.size), "mode": self.mode}
