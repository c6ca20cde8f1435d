"""The trunk: raw images -> resize + backbone preprocessing -> backbone [-> pooling], as one object.

Both estimators own a :class:`Trunk`.  A trunk is either

* **frozen**: a fixed function of the image, so its outputs are cached per image
  (:mod:`xrayest.cache`) and a head trains on them.  A frozen named backbone with known
  weights (a file, ImageNet, or random weights drawn from a seed) is kept as a
  :class:`TrunkConfig`, a few fields of plain data; the Keras model is built on first use
  (only when an image misses the cache, or when the model itself is asked for), is not
  pickled, and is checked against the weights fingerprint taken when the config was made.
  A user's ``keras.Model`` or unseeded random weights can only come from the object that
  holds them, so those trunks keep their model and pickle it.
* **trainable**: its backbone (or the part ``fine_tune`` names) trains with the head;
  features are not cached.  :meth:`Trunk.unfrozen` turns a frozen trunk into one, which
  is the second phase of a fine-tuning plan (:mod:`xrayest.training`).

A frozen backbone is rewritten for inference (BatchNorm folded, compute precision) by
:func:`xrayest.trunk_graph.rewrite_backbone`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

import numpy as np

from .backbones import BACKBONES, BackboneSpec
from .inputs import ImageSource, chunk_size
from .seeding import reseed_initial_weights, seeded

if TYPE_CHECKING:
    import keras

# What every function here takes as ``backbone``: a registry entry or the user's own model, resolved from
# a name once where the user's ``backbone`` enters (an estimator's fit, featurize); nothing here looks a
# name up again.
Backbone = Union[BackboneSpec, "keras.Model"]

__all__ = ["Trunk", "TrunkConfig", "WeightsChangedError", "make_backbone", "build_trunk_model", "unfreeze",
           "pooling_in_trunk"]


class WeightsChangedError(RuntimeError):
    """A rebuilt backbone's weights differ from those the estimator was fitted with."""


def pooling_in_trunk(pooling: str, batch_norm: bool = False):
    """The pooling a frozen trunk applies itself (smaller cached features), or None when what comes after
    needs the whole feature map: ``"flatten"`` keeps every position, and a head's BatchNorm normalises the map.

    >>> pooling_in_trunk("avg"), pooling_in_trunk("flatten"), pooling_in_trunk("avg", batch_norm=True)
    ('avg', None, None)
    """
    return None if pooling == "flatten" or batch_norm else pooling


def make_backbone(backbone: Backbone, weights, size):
    """Build the backbone (never touching a user's model) and describe its weights.

    Returns
    -------
    model : keras.Model
    preprocess : str
        Preprocessing mode for :class:`xrayest.layers.ImagePreprocessing`.
    fingerprint : str or None
        Identity of the weights for the cache; None when they are random.
    pretrained_family : bool
        True for keras.applications and user models (frozen by default), False for the
        from-scratch CNNs.
    """
    import keras

    from .weights import fingerprinted_backbone

    if isinstance(backbone, keras.Model):
        model = keras.models.clone_model(backbone)
        model.set_weights(backbone.get_weights())
        if weights not in (None, "imagenet"):
            model.load_weights(str(weights))
        digest = hashlib.sha256(model.to_json().encode())
        for w in model.get_weights():
            digest.update(np.ascontiguousarray(w).tobytes())
        return model, "none", f"model:{digest.hexdigest()}", True
    if not isinstance(backbone, BackboneSpec):
        raise TypeError(f"a trunk is built from a BackboneSpec or a keras.Model, not {type(backbone).__name__}: "
                        "resolve a name once with xrayest.backbones.backbone_spec_or_model")
    model, fingerprint = fingerprinted_backbone(backbone, (*size, backbone.channels), weights)
    return model, backbone.preprocess, fingerprint, backbone.pretrained


def build_trunk_model(backbone, size, preprocess: str, pooling=None, name="trunk"):
    """Raw RGB images (any size, 0-255) -> resize + preprocess -> backbone -> optional pooling."""
    import keras

    from .layers import ImagePreprocessing, pooling_layer

    inputs = keras.Input((None, None, 3), name="images")
    channels = 1 if backbone.input_shape[-1] == 1 else 3  # grayscale-input backbones get the mean of R, G, B
    x = ImagePreprocessing(size, preprocess, channels=channels, name="preprocess")(inputs)
    x = backbone(x)
    if pooling is not None:
        x = pooling_layer(pooling, name="trunk_pool")(x)  # float32 layer: casts a bfloat16 map up
    elif x.dtype != "float32":
        x = keras.layers.Activation("linear", dtype="float32", name="trunk_float32")(x)
    return keras.Model(inputs, x, name=name)


def unfreeze(backbone, fine_tune) -> int:
    """Make the last ``fine_tune`` layers (int) or those after layer ``fine_tune`` (str) trainable.

    BatchNormalization layers stay frozen, which in Keras 3 also keeps them in inference mode:
    their ImageNet statistics are not overwritten by a few small X-ray batches.

    Returns
    -------
    int
        Number of layers with weights made trainable.
    """
    import keras

    layers = backbone.layers
    if isinstance(fine_tune, str):
        names = [layer.name for layer in layers]
        if fine_tune not in names:
            raise ValueError(f"fine_tune layer {fine_tune!r} not found in backbone {backbone.name!r} (Keras numbers "
                             "unnamed layers such as 'add_10' per process; pass a number of layers instead)")
        start = names.index(fine_tune) + 1
    elif isinstance(fine_tune, (int, np.integer)) and not isinstance(fine_tune, bool) and fine_tune > 0:
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


def config_key(**config) -> str:
    """A feature-cache key: a stable hash of a trunk's configuration (plain JSON-able values)."""
    import json

    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def _cache_key(spec_or_model: Backbone, fingerprint, size, preprocess, pooling, seed, precision):
    """Feature-cache key of a frozen trunk, or None when its features are not reproducible.

    Random weights (no fingerprint) are keyed by their seed, and not cached without one.
    The compute precision is part of the key (bfloat16 features differ from float32 ones);
    BatchNorm folding is not (it changes features by float rounding only).
    """
    import keras

    if fingerprint is None and seed is None:
        return None
    return config_key(backbone=getattr(spec_or_model, "name", "custom"), weights=fingerprint, size=tuple(size),
                      preprocess=preprocess, pooling=pooling, seed=None if fingerprint else seed,
                      precision=precision, keras=keras.__version__,
                      **({"channels": 1} if getattr(spec_or_model, "channels", 3) == 1 else {}),
                      **({} if fingerprint else {"init": "reseeded"}))  # random weights drawn by reseed_initial_weights


def _seeded_backbone(backbone: Backbone, weights, size, seed):
    """:func:`make_backbone` under ``seed``; seeded random weights are the same in any process."""
    with seeded(seed):
        built = make_backbone(backbone, weights, size)
    if weights is None and seed is not None and isinstance(backbone, BackboneSpec):
        reseed_initial_weights(built[0], seed)  # Python's global random may be shared (xrayest.seeding)
    return built


def _frozen_model(backbone: Backbone, weights, size, pooling, seed, precision, fold_batch_norm):
    """A frozen trunk model built now, with its preprocessing mode and weights fingerprint."""
    from .trunk_graph import rewrite_backbone

    model, preprocess, fingerprint, _ = _seeded_backbone(backbone, weights, size, seed)
    model.trainable = False
    model = rewrite_backbone(model, fold_batch_norm=fold_batch_norm, precision=precision)
    return build_trunk_model(model, size, preprocess, pooling=pooling), preprocess, fingerprint


@dataclass(frozen=True)
class TrunkConfig:
    """Plain-data description of a frozen, reproducible trunk; :meth:`build` makes the Keras model.

    Use :meth:`for_backbone` to make one.
    """

    spec: BackboneSpec
    weights: str | None
    image_size: tuple
    pooling: str | None
    seed: int | None
    fingerprint: str | None
    precision: str = "float32"
    fold_batch_norm: bool = True

    @classmethod
    def for_backbone(cls, backbone: Backbone, weights, image_size, pooling, seed, precision="float32",
                     fold_batch_norm=True):
        """A config, or None when the trunk could not be rebuilt identically later.

        That is the case for a user's ``keras.Model`` backbone (its weights live only in
        that object) and for random weights without a seed.
        """
        from .weights import weights_fingerprint

        if not isinstance(backbone, BackboneSpec) or (weights is None and seed is None):
            return None
        spec = backbone
        if weights not in (None, "imagenet"):
            weights = os.path.abspath(os.fspath(weights))  # rebuilt later, maybe from another folder
        return cls(spec, weights, tuple(int(s) for s in image_size), pooling,
                   None if seed is None else int(seed), weights_fingerprint(spec, weights), precision,
                   bool(fold_batch_norm))

    def __setstate__(self, state):
        if "backbone" in state:  # pickled when the config held the backbone's registry key, not its entry
            state = {**state, "spec": BACKBONES[state["backbone"]]}
            del state["backbone"]
        self.__dict__.update(state)

    @property
    def cache_key(self) -> str:
        """Feature-cache key of this trunk's outputs."""

        return _cache_key(self.spec, self.fingerprint, self.image_size, self.spec.preprocess, self.pooling, self.seed,
                          self.precision)

    def build(self):
        """The trunk as a frozen ``keras.Model`` (call inside the caller's device scope).

        Raises
        ------
        WeightsChangedError
            When the weights found now are not those the config was made with.
        """
        model, _, fingerprint = _frozen_model(self.spec, self.weights, self.image_size, self.pooling,
                                              self.seed, self.precision, self.fold_batch_norm)
        if fingerprint != self.fingerprint:
            raise WeightsChangedError(
                f"the weights of backbone {self.spec.name!r} changed since this estimator was fitted "
                f"(weights={self.weights!r}); fit it again"
            )
        return model


def _progress(total, verbose, desc):
    if not verbose:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", leave=False)


class Trunk:
    """Images -> backbone features, frozen (cached, maybe built on demand) or trainable.

    Make one with :meth:`frozen`, :meth:`trainable` or :meth:`from_model`.

    Attributes
    ----------
    config : TrunkConfig or None
        Set when the model can be rebuilt on demand (and is then never pickled).
    is_frozen : bool
    cache_key : str or None
        Feature-cache key of a frozen trunk whose outputs are reproducible; None otherwise.

    Examples
    --------
    >>> import numpy as np
    >>> from xrayest.backbones import get_backbone_spec
    >>> from xrayest.trunk import Trunk
    >>> from xrayest.inputs import as_image_source
    >>> trunk = Trunk.frozen(get_backbone_spec("small_cnn"), None, (16, 16), pooling="avg", seed=0)
    >>> trunk.config is not None, trunk.is_frozen          # nothing built yet
    (True, True)
    >>> images = as_image_source(np.zeros((3, 16, 16), np.uint8))
    >>> trunk.features(images, batch_size=2).shape
    (3, 128)
    """

    def __init__(self, model=None, *, config: TrunkConfig | None = None, is_frozen: bool = True,
                 cache_key: str | None = None):
        if model is None and config is None:
            raise ValueError("a Trunk needs a Keras model or a TrunkConfig to build one")
        self._model = model
        self.config = config
        self.is_frozen = bool(is_frozen)
        self.cache_key = cache_key if self.is_frozen else None

    # ------------------------------------------------------------------ construction
    @classmethod
    def frozen(cls, backbone: Backbone, weights, image_size, *, pooling=None, seed=None, precision="float32",
               fold_batch_norm=True, cache=True) -> "Trunk":
        """A frozen trunk: a config when the backbone can be rebuilt identically, else built now.

        ``fold_batch_norm=False`` keeps BatchNorm layers (for a backbone fine-tuned later);
        ``cache=False`` gives no cache key (features are computed on every call).
        """
        config = TrunkConfig.for_backbone(backbone, weights, image_size, pooling, seed, precision, fold_batch_norm)
        if config is not None:
            return cls(config=config, cache_key=config.cache_key if cache else None)
        model, preprocess, fingerprint = _frozen_model(backbone, weights, image_size, pooling, seed, precision,
                                                       fold_batch_norm)
        key = _cache_key(backbone, fingerprint, image_size, preprocess, pooling, seed, precision) if cache else None
        return cls(model, cache_key=key)

    @classmethod
    def trainable(cls, backbone: Backbone, weights, image_size, *, seed=None, precision="float32",
                  fine_tune=None) -> "Trunk":
        """A trunk that trains: the whole backbone, or only what ``fine_tune`` names (see :func:`unfreeze`)."""
        from .trunk_graph import rewrite_backbone

        model, preprocess, _, _ = _seeded_backbone(backbone, weights, image_size, seed)
        model = rewrite_backbone(model, fold_batch_norm=False, precision=precision)
        if fine_tune is None:
            model.trainable = True
        else:
            model.trainable = False
            unfreeze(model, fine_tune)
        return cls(build_trunk_model(model, image_size, preprocess), is_frozen=False)

    @classmethod
    def from_model(cls, model, *, is_frozen=True, cache_key=None) -> "Trunk":
        """Wrap an existing trunk model (e.g. one loaded from a saved file)."""
        return cls(model, is_frozen=is_frozen, cache_key=cache_key)

    def cut(self, cache_key=None):
        """Split a partly-unfrozen trunk where its frozen part ends: ``(front, back)``, or None.

        ``front`` is a frozen :class:`Trunk` (images -> the activation at the cut, float32) whose outputs
        can be cached like any frozen features, keyed by ``cache_key`` (the frozen trunk's key) and the
        cut; ``back`` is a ``keras.Model`` (activation -> this trunk's output) sharing its layers with
        this trunk, so training it trains this trunk.  The frozen part runs in inference mode, as a
        frozen trunk always does.  None when the backbone cannot be cut at one tensor
        (:func:`xrayest.trunk_graph.split_at_trainable`).
        """
        import keras

        from .trunk_graph import split_at_trainable

        backbone = self.backbone
        parts = split_at_trainable(backbone)
        if parts is None:
            return None
        front, back = parts
        images = keras.Input((None, None, 3), name="images")
        activation = front(self.model.get_layer("preprocess")(images))
        activation = keras.layers.Activation("linear", dtype="float32", name="cut_float32")(activation)
        front_trunk = keras.Model(images, activation, name="trunk_front")
        cut_input = keras.Input(tuple(front.output.shape[1:]), name="cut")
        x = back(cut_input)
        after = self.model.layers[[layer.name for layer in self.model.layers].index(backbone.name) + 1:]
        for layer in after:  # pooling or the float32 cast that follow the backbone in the trunk
            x = layer(x)
        # the cut's position, not its name: Keras numbers unnamed layers ("add_10") per process
        position = next(i for i, layer in enumerate(backbone.layers) if layer is front.layers[-1])
        key = None if cache_key is None else config_key(trunk=cache_key, cut_after_layer=position)
        return Trunk(front_trunk, cache_key=key), keras.Model(cut_input, x, name="trunk_back")

    def unfrozen(self, fine_tune) -> "Trunk":
        """This trunk's model with the layers ``fine_tune`` names made trainable (weights kept)."""
        model = self.model
        unfreeze(self.backbone, fine_tune)
        return Trunk(model, is_frozen=False)

    # ------------------------------------------------------------------ the model
    @property
    def model(self):
        """The trunk as a ``keras.Model`` (built from the config on first access)."""
        if self._model is None:
            self._model = self.config.build()
        return self._model

    @property
    def is_built(self) -> bool:
        return self._model is not None

    @property
    def backbone(self):
        """The backbone model inside the trunk."""
        import keras

        return next(layer for layer in self.model.layers if isinstance(layer, keras.Model))

    def output_shape(self, cache=None) -> tuple:
        """Per-image output shape; read from ``cache`` when it has seen these features, else built."""
        if cache is not None and self.cache_key is not None and cache.shape(self.cache_key) is not None:
            return cache.shape(self.cache_key)
        return tuple(self.model.output_shape[1:])

    def __getstate__(self):
        state = dict(self.__dict__)
        if self.config is not None:
            state["_model"] = None  # rebuilt (weights checked) on first use: pickles stay small
        return state

    # ------------------------------------------------------------------ features
    def features(self, source: ImageSource, *, batch_size=32, cache=None, verbose=0) -> np.ndarray:
        """Run the trunk over every image of ``source`` once, reusing cached outputs.

        Each distinct image missing from ``cache`` is computed once, even if it repeats
        within ``source``; the model is only built when some image is missing.  Files are
        read a chunk (eight batches) at a time, so memory stays bounded.

        Returns
        -------
        ndarray of shape ``(len(source), *output_shape)``, float32
        """
        size = self.config.image_size if self.config is not None else None
        if size is None:
            size = tuple(self._image_size())
        n = len(source)
        use_cache = cache is not None and self.cache_key is not None
        stored = hasattr(source, "stored") and self.cache_key is not None  # rows of a feature store
        keys = source.keys(size) if use_cache or stored else [str(i) for i in range(n)]
        found: dict[str, np.ndarray] = {}
        if use_cache:
            for key in dict.fromkeys(keys):
                value = cache.get(self.cache_key, key)
                if value is not None:
                    found[key] = value
        if stored and len(found) < len(set(keys)):
            for key, value in source.stored(self.cache_key).items():
                if key not in found:
                    found[key] = value
                    if use_cache:
                        cache.put(self.cache_key, key, value)
        if found:
            found = self._consistent(found)
        first_index = {}
        for i, key in enumerate(keys):
            if key not in found and key not in first_index:
                first_index[key] = i
        todo = np.fromiter(first_index.values(), dtype=np.intp, count=len(first_index))
        bar = _progress(len(todo), verbose if len(todo) >= 2 * batch_size else 0, "backbone features")
        pending = source.subset(todo) if len(todo) else None
        chunk = chunk_size(batch_size)
        for start in range(0, len(todo), chunk):
            stop = min(start + chunk, len(todo))
            out = np.asarray(self.model.predict(pending.batch(start, stop, size), batch_size=batch_size, verbose=0))
            for offset, features in enumerate(out):
                key = keys[todo[start + offset]]
                found[key] = features
                if use_cache:
                    cache.put(self.cache_key, key, features)
            if bar is not None:
                bar.update(stop - start)
        if bar is not None:
            bar.close()
        if n == 0:
            return np.zeros((0, *self.output_shape(cache)), np.float32)
        return np.stack([found[key] for key in keys])

    def _consistent(self, found: dict) -> dict:
        """Cached features of the trunk's output shape only; entries of another shape are dropped (recomputed)."""
        shapes = {value.shape for value in found.values()}
        if not shapes or (len(shapes) == 1 and not self.is_built):
            return found
        expected = tuple(self.model.output_shape[1:])
        kept = {key: value for key, value in found.items() if value.shape == expected}
        if len(kept) < len(found):
            import warnings

            warnings.warn(f"{len(found) - len(kept)} cached feature entries had a shape other than the trunk's "
                          f"{expected}; recomputing them", RuntimeWarning, stacklevel=3)
        return kept

    def _image_size(self):
        """``(height, width)`` of the trunk's preprocessing layer (images are read at it)."""
        return self.model.get_layer("preprocess").size
