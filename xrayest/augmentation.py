"""Training-time augmentation as Keras preprocessing layers (identity at inference).

``augment=`` takes a preset name or a dict of these keys (plain data):

=============== ========================= ==============================================================================
key             layer                     meaning
=============== ========================= ==============================================================================
rotation        RandomGeometry            max angle as a fraction of a full turn (0.05 = 18 degrees)
zoom            RandomGeometry            max zoom in/out fraction
shift           RandomGeometry            max shift as a fraction of height/width
horizontal_flip RandomFlip                True to mirror left-right (moves the heart: off in every preset)
brightness      RandomBrightness          max change as a fraction of the 0-255 range
contrast        RandomContrast            max contrast factor change
crop            RandomGeometry            random resized crop keeping at least 1 - crop of each side
sharpness       RandomSharpness           blur or sharpen by up to this much (0.5: from fully blurred to twice as sharp)
=============== ========================= ==============================================================================

Rotation, zoom, crop and shift are one ``xrayest.layers.RandomGeometry`` layer: Keras'
``RandomRotation``, ``RandomZoom`` and ``RandomTranslation`` draws, composed into one affine map and
resampled once.
"""

from __future__ import annotations

import numpy as np

__all__ = ["AUGMENT_PRESETS", "augment_config", "build_augmentation", "layer_seeds", "AugmentedCopies"]

AUGMENT_PRESETS = {
    "light": {"rotation": 0.02, "zoom": 0.05, "shift": 0.03, "brightness": 0.1, "contrast": 0.1},
    "medium": {"rotation": 0.04, "zoom": 0.1, "shift": 0.06, "brightness": 0.15, "contrast": 0.2, "crop": 0.1},
    "strong": {"rotation": 0.06, "zoom": 0.15, "shift": 0.1, "brightness": 0.25, "contrast": 0.3, "crop": 0.2},
    # The published SUTD recipe's RandomResizedCrop(scale 0.7-1.0 of the area: >= 0.84 of each side) with
    # small rotations (+-10 degrees), shifts and exposure changes; no flips (the heart stays on the left).
    "xray": {"crop": 0.16, "rotation": 0.028, "shift": 0.05, "brightness": 0.1, "contrast": 0.1},
}
_KEYS = ("rotation", "zoom", "shift", "horizontal_flip", "brightness", "contrast", "crop", "sharpness")


def augment_config(augment) -> dict | None:
    """Validate ``augment`` (None, a preset name or a dict) into a plain dict, or None."""
    if augment is None or augment is False or augment == {}:
        return None
    if isinstance(augment, str):
        if augment not in AUGMENT_PRESETS:
            raise ValueError(f"unknown augment preset {augment!r}; presets: {', '.join(AUGMENT_PRESETS)}, or a dict")
        return dict(AUGMENT_PRESETS[augment])
    if not isinstance(augment, dict):
        raise ValueError(f"augment must be None, a preset name or a dict; got {augment!r}")
    unknown = set(augment) - set(_KEYS)
    if unknown:
        raise ValueError(f"unknown augment keys {sorted(unknown)}; valid keys: {', '.join(_KEYS)}")
    for key, value in augment.items():
        if key == "horizontal_flip":
            if not isinstance(value, (bool, np.bool_)):  # "no" or "false" would read as True
                raise ValueError(f"augment['horizontal_flip'] must be True or False; got {value!r}")
            continue
        if isinstance(value, (bool, np.bool_)) or not (isinstance(value, (int, float)) and 0 <= value < 1):
            raise ValueError(f"augment[{key!r}] must be a number in [0, 1); got {value!r}")
        if key == "sharpness" and value > 0.5:
            raise ValueError(f"augment['sharpness'] must be a number in [0, 0.5]; got {value!r}")
    return dict(augment)


def layer_seeds(seed, count: int) -> list:
    """``count`` distinct seeds derived from ``seed`` (all None when it is None).

    Each random layer needs a seed of its own: Keras layers given the same seed draw the same
    numbers, so the rotation angle, zoom, shift, brightness and contrast of an image would all be
    one draw (one random direction through the augmentation space instead of the whole space).

    Examples
    --------
    >>> a, b = layer_seeds(0, 2)
    >>> a != b, layer_seeds(0, 2) == [a, b], layer_seeds(None, 2)
    (True, True, [None, None])
    """
    if seed is None:
        return [None] * count
    from .seeding import derive_seeds

    return derive_seeds(seed, count)


def build_augmentation(config: dict, seed=None):
    """A ``keras.Sequential`` named "augment" applying ``config`` to 0-255 RGB images.

    Every random layer gets its own seed derived from ``seed`` (:func:`layer_seeds`): the
    transformations of an image are drawn independently of one another.
    """
    import keras

    from .layers import RandomGeometry

    L = keras.layers
    layers = []
    seeds = iter(layer_seeds(seed, len(_KEYS)))
    if config.get("horizontal_flip"):
        layers.append(L.RandomFlip("horizontal", seed=next(seeds)))
    geometry = {key: float(config.get(key) or 0.0) for key in ("rotation", "zoom", "crop", "shift")}
    if any(geometry.values()):  # one resampling for all four (the Keras layers resample once each)
        layers.append(RandomGeometry(**geometry, seed=next(seeds)))
    if config.get("brightness"):
        layers.append(L.RandomBrightness(config["brightness"], value_range=(0, 255), seed=next(seeds)))
    if config.get("contrast"):
        layers.append(L.RandomContrast(config["contrast"], value_range=(0, 255), seed=next(seeds)))
    if config.get("sharpness"):  # Keras' factor: 0 fully blurred, 0.5 unchanged, 1 sharpened
        amount = float(config["sharpness"])
        layers.append(L.RandomSharpness((0.5 - amount, 0.5 + amount), value_range=(0, 255), seed=next(seeds)))
    return keras.Sequential(layers, name="augment")


class AugmentedCopies:
    """The augmented copies of test-time augmentation: copy ``k`` is one fixed transformation.

    Copy ``k`` of every image is drawn from ``(seed, k)`` alone and applied to each image on its
    own, so an image's copies (and so its averaged probability) are the same whether it is scored
    alone or among other images, in any position: a random layer applied to a batch would give each
    position other draws.

    Parameters
    ----------
    config : dict
        An :func:`augment_config` result.
    seed : int, optional
        None is 0: test-time copies are always reproducible.
    """

    def __init__(self, config: dict, seed=None):
        import keras

        self.layers = build_augmentation(config, seed=0).layers
        self.seed = 0 if seed is None else int(seed)
        self._generators = [keras.random.SeedGenerator(0) for _ in self.layers]
        self._one = None

    def __call__(self, images, k: int):
        """Copy ``k`` of each of ``images`` (float ``(n, h, w, 3)``, 0-255), a new float32 array."""
        import numpy as np
        import tensorflow as tf

        if self._one is None:
            @tf.function(reduce_retracing=True)
            def one(image, copy):
                x = image[None]
                for j, (layer, generator) in enumerate(zip(self.layers, self._generators)):
                    # public SeedGenerator state: the draw depends on (seed, copy, layer) only
                    state = tf.stack([tf.constant(self.seed, tf.int64) * 1000 + copy, tf.constant(j, tf.int64)])
                    generator.state.assign(tf.cast(state, generator.state.dtype))
                    x = layer.transform_images(x, layer.get_random_transformation(x, training=True, seed=generator),
                                               training=True)
                return x[0]

            self._one = one
        images = np.asarray(images, np.float32)
        copy = tf.constant(int(k), tf.int64)
        if not len(images):
            return images
        return np.stack([np.asarray(self._one(tf.constant(image), copy)) for image in images])
