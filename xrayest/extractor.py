"""FeatureExtractor: a frozen backbone as a scikit-learn transformer (images -> feature matrix)."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .atomic import all_or_nothing
from .backbones import backbone_spec_or_model, image_size_for
from .cache import estimator_cache
from .device import device_scope, resolve_precision, check_cpu_precision
from .inputs import as_image_source, check_n_features
from .params import constraints_for, validate_params
from .trunk import Trunk, pooling_in_trunk

__all__ = ["FeatureExtractor"]


class FeatureExtractor(TransformerMixin, BaseEstimator):
    """Images to a 2-D matrix of frozen-backbone features, for any scikit-learn Pipeline.

    Features are computed once per distinct image and cached (keyed by image content and
    backbone configuration, weights included), so cross-validation and grid searches
    over later Pipeline steps never rerun the backbone.

    Parameters
    ----------
    backbone : str or keras.Model, default="xception"
        A name from :data:`xrayest.backbones.BACKBONES` or your own ``keras.Model``.
    weights : {"imagenet", None} or path, default="imagenet"
    pooling : {"avg", "max", "flatten"}, default="avg"
        How each feature map becomes a vector ("flatten" keeps every position).
    image_size : int or (int, int), optional
        Default: the backbone's own input size.
    device : {"auto", "cpu", "gpu", "gpu:N"}, default="auto"
    precision : {"auto", "float32", "bfloat16", "float16"}, default="auto"
        Arithmetic of the backbone.  "auto": the fastest the device runs natively
        (``xrayest.device.choose_precision``); ``precision_`` says which.
        "bfloat16" (Keras ``mixed_bfloat16``: float32
        weights, bfloat16 compute) is faster on CPUs with AMX and on recent GPUs
        (benchmarks/RESULTS.md measures it); "float16" (``mixed_float16``) is for GPUs
        without bfloat16 (V100, T4).  Features then differ slightly from float32 ones, and
        are cached apart.  Features are float32 either way.
    batch_size : int, default=32
    cache_features : bool, default=True
    cache_dir : path, optional
        Also cache on disk there (shared by parallel workers and later runs).
    random_state : int, optional
        Seeds random backbone weights (``weights=None``), making features reproducible.
    verbose : int, default=0
        Progress bar for long extractions when > 0.

    Attributes
    ----------
    trunk_ : xrayest.trunk.Trunk
        Raw images -> features (``trunk_.model`` is the Keras model).  For a named backbone
        with known weights (a file, ImageNet, or a seed) the model is built on first use,
        not in ``fit``, and not pickled: pickles stay small, and the rebuilt weights are
        checked against the fingerprint taken at fit.
    n_features_out_ : int
    image_size_ : tuple
    precision_ : str
        The precision the features are computed in ("auto" resolved for the device).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.linear_model import LogisticRegression
    >>> from xrayest import FeatureExtractor
    >>> X = np.random.default_rng(0).integers(0, 255, (10, 32, 32), dtype=np.uint8)
    >>> y = [0, 1] * 5
    >>> pipe = make_pipeline(FeatureExtractor("vgg16", weights=None, image_size=32, random_state=0),
    ...                      LogisticRegression())
    >>> pipe.fit(X, y).predict(X).shape
    (10,)
    """

    def __init__(self, backbone="xception", *, weights="imagenet", pooling="avg", image_size=None, device="auto",
                 precision="auto", batch_size=32, cache_features=True, cache_dir=None, random_state=None,
                 verbose=0):
        self.backbone = backbone
        self.weights = weights
        self.pooling = pooling
        self.image_size = image_size
        self.device = device
        self.precision = precision
        self.batch_size = batch_size
        self.cache_features = cache_features
        self.cache_dir = cache_dir
        self.random_state = random_state
        self.verbose = verbose

    _parameter_constraints = constraints_for("backbone", "weights", "pooling", "image_size", "device", "precision",
                                             "batch_size", "cache_features", "cache_dir", "random_state", "verbose")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = []  # features are float32 whatever X was
        tags.non_deterministic = self.weights is None and self.random_state is None
        return tags

    @all_or_nothing
    def fit(self, X, y=None):
        """Describe the frozen backbone; X is only validated (nothing is learned from it).

        A named backbone with known weights is not even built here when the feature cache
        already knows its output shape: it is built on first use, and only when some image
        is missing from the cache.
        """
        validate_params(self)
        check_cpu_precision(self.precision, self.device)
        precision = resolve_precision(self.precision, self.device)
        source = as_image_source(X, warn_unit_range=True)
        spec = backbone_spec_or_model(self.backbone)
        self.image_size_ = image_size_for(spec, self.image_size)
        with device_scope(self.device):
            self.trunk_ = Trunk.frozen(spec, self.weights, self.image_size_,
                                       pooling=pooling_in_trunk(self.pooling),
                                       seed=self.random_state, precision=precision, cache=self.cache_features)
            self.n_features_out_ = int(np.prod(self.trunk_.output_shape(estimator_cache(self))))
        self.precision_ = precision
        check_n_features(self, source, reset=True)
        return self

    def transform(self, X):
        """Backbone features of X, shape ``(n_samples, n_features_out_)``, float32."""
        check_is_fitted(self, "n_features_out_")
        source = as_image_source(X, warn_unit_range=True)
        check_n_features(self, source, reset=False)
        with device_scope(self.device):
            feats = self.trunk_.features(source, batch_size=self.batch_size, cache=estimator_cache(self),
                                         verbose=self.verbose)
        return feats.reshape(len(feats), -1)

    def get_feature_names_out(self, input_features=None):
        """``<backbone>_<pooling>_<i>`` for each output column."""
        check_is_fitted(self, "n_features_out_")
        name = self.backbone if isinstance(self.backbone, str) else "custom"
        return np.asarray([f"{name}_{self.pooling}_{i}" for i in range(self.n_features_out_)], dtype=object)
