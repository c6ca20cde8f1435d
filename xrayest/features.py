"""Frozen-backbone features, computed once per image and cached.

A frozen backbone's output never changes, so xrayest runs it once per distinct image
and trains only the head on the result.  :class:`FeatureCache` keeps those outputs keyed
by *image content* and *backbone configuration* (weights fingerprint included), so clones,
cross-validation folds and grid-search candidates share them.

The cache lives in memory (least-recently-used entries are dropped past ``max_bytes``)
and, optionally, on disk under ``directory`` (one ``.npy`` per image, written atomically,
so parallel workers and later processes share it).  A configuration whose features are
not reproducible (random weights with no ``random_state``) is never cached.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .inputs import ImageSource

__all__ = ["FeatureCache", "default_cache", "config_key", "extract_features", "build_trunk", "TrunkRecipe"]

DEFAULT_MAX_BYTES = int(float(os.environ.get("XRAYEST_FEATURE_CACHE_MB", "1024")) * 2**20)


class FeatureCache:
    """Bounded map ``(config key, image key) -> feature array``, in memory and optionally on disk.

    Parameters
    ----------
    max_bytes : int
        Memory bound; least recently used features are evicted beyond it.
    directory : path-like, optional
        Also keep features as ``directory/<config>/<image>.npy``.  Disk entries are not
        evicted; delete the folder to reclaim space.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES, directory=None):
        self.max_bytes = int(max_bytes)
        self.directory = Path(directory) if directory is not None else None
        self._entries: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self):
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def clear(self):
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def _disk_path(self, config: str, key: str) -> Path:
        return self.directory / config[:24] / f"{key}.npy"

    def get(self, config: str, key: str):
        with self._lock:
            found = self._entries.get((config, key))
            if found is not None:
                self._entries.move_to_end((config, key))
                self.hits += 1
                return found
        if self.directory is not None:
            path = self._disk_path(config, key)
            if path.is_file():
                try:
                    found = np.load(path, allow_pickle=False)
                except (OSError, ValueError):
                    found = None  # a damaged entry is recomputed, never trusted
                if found is not None:
                    self._remember(config, key, found)
                    self.hits += 1
                    return found
        self.misses += 1
        return None

    def put(self, config: str, key: str, features: np.ndarray):
        features = np.array(features, copy=True)
        features.flags.writeable = False
        self._remember(config, key, features)
        if self.directory is not None:
            path = self._disk_path(config, key)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    np.save(fh, features, allow_pickle=False)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise

    def _remember(self, config, key, features):
        if features.nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop((config, key), None)
            if old is not None:
                self._bytes -= old.nbytes
            self._entries[(config, key)] = features
            self._bytes += features.nbytes
            while self._bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.nbytes


_DEFAULT_CACHE = FeatureCache()
_DISK_CACHES: dict[str, FeatureCache] = {}


def default_cache(directory=None) -> FeatureCache:
    """The process-wide in-memory cache, or the one bound to ``directory``."""
    if directory is None:
        return _DEFAULT_CACHE
    directory = str(Path(directory).resolve())
    if directory not in _DISK_CACHES:
        _DISK_CACHES[directory] = FeatureCache(directory=directory)
    return _DISK_CACHES[directory]


def config_key(**config) -> str:
    """Stable hash of a backbone configuration (plain JSON-able values)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def trunk_config(spec_or_model, fingerprint, size, preprocess, pooling, seed, precision="float32"):
    """Cache key of a frozen trunk's features, or None when they are not reproducible.

    Shared by XrayCNNClassifier and FeatureExtractor, so the two reuse each other's features.
    Random weights (no fingerprint) are keyed by their seed, and not cached without one.
    The compute precision is part of the key: bfloat16 features differ from float32 ones.
    """
    import keras

    if fingerprint is None and seed is None:
        return None
    return config_key(backbone=getattr(spec_or_model, "name", "custom"), weights=fingerprint, size=tuple(size),
                      preprocess=preprocess, pooling=pooling, seed=None if fingerprint else seed,
                      precision=precision, keras=keras.__version__)


def build_trunk(backbone, spec_size, preprocess: str, pooling=None, name="trunk"):
    """Raw RGB images (any size, 0-255) -> resize + preprocess -> backbone -> optional pooling."""
    import keras

    from .heads import pooling_layer
    from .layers import ImagePreprocessing

    inputs = keras.Input((None, None, 3), name="images")
    x = ImagePreprocessing(spec_size, preprocess, name="preprocess")(inputs)
    x = backbone(x)
    if pooling is not None:
        x = pooling_layer(pooling, name="trunk_pool")(x)  # float32 layer: casts a bfloat16 map up
    elif x.dtype != "float32":
        x = keras.layers.Activation("linear", dtype="float32", name="trunk_float32")(x)
    return keras.Model(inputs, x, name=name)


def _progress(total, verbose, desc):
    if not verbose:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", leave=False)


def extract_features(trunk, source: ImageSource, *, size, batch_size=32, config=None,
                     cache: FeatureCache | None = None, verbose=0) -> np.ndarray:
    """Run ``trunk`` over every image of ``source`` once, reusing cached outputs.

    Parameters
    ----------
    trunk : keras.Model or callable
        Frozen model from raw images to features, or a function returning it: then it is
        only built when some image is missing from the cache.
    source : ImageSource
    size : tuple
        ``(height, width)`` image files are read at.
    batch_size : int
    config : str or None
        Configuration key; None disables the cache.
    cache : FeatureCache or None
    verbose : int
        Show a progress bar when > 0.

    Returns
    -------
    ndarray of shape ``(len(source), *trunk.output_shape[1:])``
    """
    import keras

    get_trunk = (lambda: trunk) if isinstance(trunk, keras.Model) else trunk
    n = len(source)
    use_cache = cache is not None and config is not None
    keys = source.keys(size) if use_cache else [str(i) for i in range(n)]
    found: dict[str, np.ndarray] = {}
    if use_cache:
        for key in dict.fromkeys(keys):
            value = cache.get(config, key)
            if value is not None:
                found[key] = value
    # Each distinct missing image is computed once, even if it repeats within X.
    first_index = {}
    for i, key in enumerate(keys):
        if key not in found and key not in first_index:
            first_index[key] = i
    todo = np.fromiter(first_index.values(), dtype=np.intp, count=len(first_index))
    bar = _progress(len(todo), verbose if len(todo) >= 2 * batch_size else 0, "backbone features")
    pending = source.subset(todo) if len(todo) else None
    # Files are read a chunk (several batches) at a time: memory stays bounded while
    # each model.predict call is long enough to amortise its set-up.
    chunk = 8 * batch_size
    for start in range(0, len(todo), chunk):
        stop = min(start + chunk, len(todo))
        out = np.asarray(get_trunk().predict(pending.batch(start, stop, size), batch_size=batch_size, verbose=0))
        for offset, features in enumerate(out):
            key = keys[todo[start + offset]]
            found[key] = features
            if use_cache:
                cache.put(config, key, features)
        if bar is not None:
            bar.update(stop - start)
    if bar is not None:
        bar.close()
    if n == 0:
        return np.zeros((0, *get_trunk().output_shape[1:]), np.float32)
    return np.stack([found[key] for key in keys])


def image_size_for(spec_or_model, image_size):
    """``(height, width)`` the backbone runs at: ``image_size`` or the backbone's default."""
    from .backbones import BackboneSpec

    if image_size is None:
        if isinstance(spec_or_model, BackboneSpec):
            return (spec_or_model.default_size, spec_or_model.default_size)
        shape = spec_or_model.input_shape[1:3]
        if None in shape:
            raise ValueError("image_size is required with a keras.Model backbone whose input size is not fixed")
        return tuple(int(s) for s in shape)
    size = (image_size, image_size) if np.isscalar(image_size) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in size):
        raise ValueError(f"image_size must be a positive int or (height, width); got {image_size!r}")
    min_size = getattr(spec_or_model, "min_size", 1)
    if min(size) < min_size:
        raise ValueError(f"image_size {size} is below the smallest input backbone {spec_or_model.name!r} accepts ({min_size} px)")
    return tuple(int(s) for s in size)


def make_backbone(backbone, weights, size):
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

    from .backbones import get_backbone_spec
    from .weights import load_backbone, weights_fingerprint

    if isinstance(backbone, keras.Model):
        model = keras.models.clone_model(backbone)
        model.set_weights(backbone.get_weights())
        if weights not in (None, "imagenet"):
            model.load_weights(str(weights))
        digest = hashlib.sha256(model.to_json().encode())
        for w in model.get_weights():
            digest.update(np.ascontiguousarray(w).tobytes())
        return model, "none", f"model:{digest.hexdigest()}", True
    spec = get_backbone_spec(backbone)
    model = load_backbone(spec, (*size, 3), weights)
    return model, spec.preprocess, weights_fingerprint(spec, weights), spec.pretrained


def backbone_spec_or_model(backbone):
    import keras

    from .backbones import get_backbone_spec

    return backbone if isinstance(backbone, keras.Model) else get_backbone_spec(backbone)


def build_frozen_trunk(backbone, weights, size, pooling, seed, precision="float32", fold_batch_norm=True):
    """A frozen trunk built now (call inside the caller's device scope).

    It computes in ``precision`` and, unless the backbone will be fine-tuned later
    (``fold_batch_norm=False``), its BatchNormalization layers are folded into the
    convolutions before them (:func:`xrayest.trunk_graph.rewrite_backbone`: the same
    function up to float rounding, in fewer passes).  Its output is float32 either way.

    Returns
    -------
    trunk : keras.Model
    preprocess : str
    fingerprint : str or None
        As :func:`make_backbone` gives them, for the cache key and for checking a rebuild.
    """
    from .training import seeded

    from .trunk_graph import rewrite_backbone

    with seeded(seed):
        model, preprocess, fingerprint, _ = make_backbone(backbone, weights, size)
    model.trainable = False
    model = rewrite_backbone(model, fold_batch_norm=fold_batch_norm, precision=precision)
    return build_trunk(model, size, preprocess, pooling=pooling), preprocess, fingerprint


# Output shape of each trunk configuration built in this process (a few bytes per entry):
# lets an estimator size its head without building the backbone again.
_OUTPUT_SHAPES: dict[str, tuple] = {}


@dataclass(frozen=True)
class TrunkRecipe:
    """Plain-data description of a frozen, reproducible trunk; the Keras model is built on demand.

    A frozen backbone with known weights (a file, ImageNet, or random weights drawn from a
    seed) is fully determined by these few fields.  Estimators keep the recipe instead of
    the model where they can: fitting on cached features never builds the backbone, and a
    pickle holds a few hundred bytes instead of the backbone's weights.  :meth:`build`
    checks that the weights still match the ``fingerprint`` taken when the recipe was made,
    so a rewritten weights file is refused rather than silently mixed with old features.

    Use :meth:`for_backbone` to make one.
    """

    backbone: str
    weights: str | None
    image_size: tuple
    pooling: str | None
    seed: int | None
    fingerprint: str | None
    precision: str = "float32"
    # Folding changes features by float rounding only (~1e-6), so it is not in the cache key.
    fold_batch_norm: bool = True

    @classmethod
    def for_backbone(cls, backbone, weights, image_size, pooling, seed, precision="float32",
                     fold_batch_norm=True):
        """A recipe, or None when the trunk could not be rebuilt identically later.

        That is the case for a user's ``keras.Model`` backbone (its weights live only in
        that object) and for random weights without a seed.
        """
        from .backbones import get_backbone_spec
        from .weights import weights_fingerprint

        if not isinstance(backbone, str) or (weights is None and seed is None):
            return None
        spec = get_backbone_spec(backbone)
        if weights not in (None, "imagenet"):
            weights = os.path.abspath(os.fspath(weights))  # rebuilt later, maybe from another folder
        return cls(spec.name, weights, tuple(int(s) for s in image_size), pooling,
                   None if seed is None else int(seed), weights_fingerprint(spec, weights), precision,
                   bool(fold_batch_norm))

    @property
    def config(self) -> str:
        """Feature-cache key of this trunk's outputs."""
        from .backbones import get_backbone_spec

        spec = get_backbone_spec(self.backbone)
        return trunk_config(spec, self.fingerprint, self.image_size, spec.preprocess, self.pooling, self.seed,
                            self.precision)

    def output_shape(self):
        """Per-image feature shape if a trunk of this recipe was built in this process, else None."""
        return _OUTPUT_SHAPES.get(self.config)

    def build(self):
        """The trunk as a frozen ``keras.Model`` (call inside the caller's device scope)."""
        trunk, _, fingerprint = build_frozen_trunk(self.backbone, self.weights, self.image_size, self.pooling,
                                                   self.seed, self.precision, self.fold_batch_norm)
        if fingerprint != self.fingerprint:
            raise RuntimeError(
                f"the weights of backbone {self.backbone!r} changed since this estimator was fitted "
                f"(weights={self.weights!r}); fit it again"
            )
        _OUTPUT_SHAPES[self.config] = tuple(trunk.output_shape[1:])
        return trunk
