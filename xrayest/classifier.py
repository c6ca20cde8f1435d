"""XrayCNNClassifier: a pretrained (or from-scratch) CNN with a dense head, as a scikit-learn classifier."""

from __future__ import annotations

import numpy as np
from scikeras.wrappers import BaseWrapper, KerasClassifier
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import NotFittedError
from sklearn.metrics import accuracy_score
from sklearn.utils import column_or_1d, compute_sample_weight
from sklearn.utils._tags import ClassifierTags, TransformerTags

from . import features as F
from .device import device_scope
from .heads import EMBEDDING_LAYER, POOLINGS, build_head
from .inputs import ImageSource, as_image_source, check_n_features
from .augmentation import augment_config, build_augmentation
from .head_training import fit_head, predict_head
from .training import EpochTimer, build_optimizer, fit_callbacks, seeded, stratified_split, unfreeze
from .trunk_graph import check_precision, rewrite_backbone

__all__ = ["XrayCNNClassifier"]


class _Passthrough(TransformerMixin, BaseEstimator):
    """scikeras' feature encoder slot: X stays an :class:`~xrayest.inputs.ImageSource`."""

    def fit(self, X, y=None):
        return self

    def fit_transform(self, X, y, **fit_params):
        """Fit, then return the embeddings of X (see :meth:`transform`)."""
        return self.fit(X, y, **fit_params).transform(X)

    def transform(self, X):
        return X


class XrayCNNClassifier(KerasClassifier):
    """CNN image classifier for chest X-rays: a Keras backbone plus a dense head.

    Built on scikeras' ``KerasClassifier`` with scikit-learn's contract made right:
    ``is_classifier`` is True (so ``GridSearchCV(cv=3)`` stratifies), ``clone`` keeps every
    parameter, pickling round-trips predictions exactly.

    When the backbone is frozen (the default for pretrained backbones), ``fit`` runs it
    once per distinct image, caches the result (see :mod:`xrayest.features`) and trains
    only the head; predictions still come from raw images and equal those of the composed
    model ``model_``.

    Parameters
    ----------
    backbone : str or keras.Model, default="vgg16"
        A name from :data:`xrayest.backbones.BACKBONES` (``vgg16``, ``vgg19``, ``resnet50``,
        ``densenet121``, ``inceptionv3``, ``xception``, ``mobilenetv2``, ``efficientnetb0``,
        ``small_cnn``, ``residual_cnn``) or your own ``keras.Model`` mapping RGB 0-255
        images to a feature map (it is copied, never modified).
    weights : {"imagenet", None} or path, default="imagenet"
        Backbone weights: ImageNet (downloaded, or found offline, see :mod:`xrayest.weights`),
        None for random, or a ``.weights.h5`` file.
    image_size : int or (int, int), optional
        Size images are resized to inside the model; default the backbone's own.
    pooling : {"avg", "max", "flatten"}, default="avg"
        How the backbone's feature map becomes a vector.
    hidden_units : sequence of int, default=(256,)
        Dense ReLU layers of the head; the last is the embedding returned by ``transform``.
    dropout : float or sequence of float, default=0.5
        Dropout after each hidden layer (a sequence gives one rate per layer).
    batch_norm : bool, default=False
        BatchNormalization on the backbone output, before pooling.
    l2 : float, default=0.0
        L2 penalty on the head's Dense kernels.
    optimizer : str, class or keras Optimizer, default="adam"
    learning_rate : float, default=1e-3
    epochs : int, default=20
    batch_size : int, default=32
    validation_split : float, default=0.0
        Fraction of the training data held out, stratified by class, to report
        ``val_loss``/``val_accuracy`` in ``history_``.
    class_weight : "balanced", dict or None, default=None
    augment : None, "light", "medium", "strong" or dict, default=None
        Training-time augmentation (see :mod:`xrayest.augmentation`); identity at inference.
        With augmentation the backbone must see every augmented image, so features are not cached.
    freeze_backbone : "auto" or bool, default="auto"
        "auto" freezes pretrained-family backbones and trains the from-scratch CNNs.
    fine_tune : int or str, optional
        Unfreeze the last N backbone layers (int) or every layer after the named one (str,
        e.g. InceptionV3's ``"mixed7"``); BatchNorm layers stay frozen in inference mode.
    fine_tune_epochs : int, default=0
        0: fine-tune from the start for ``epochs``.  >0: two phases, the head first for
        ``epochs`` on cached features, then the unfrozen layers for ``fine_tune_epochs``.
    fine_tune_learning_rate : float, optional
        Learning rate of the fine-tuning phase; default ``learning_rate / 10``.
    early_stopping, reduce_lr : int, optional
        Patience (epochs) of EarlyStopping (best weights restored) and ReduceLROnPlateau,
        watching ``val_loss`` when there is validation data.
    lr_schedule : None, "cosine", "step" or callable(epoch, lr), optional
    callbacks : list of keras.callbacks.Callback, optional
    cache_features : bool, default=True
        Share frozen-backbone features across fits through the feature cache.
    cache_dir : path, optional
        Keep cached features on disk there too (shared by parallel workers).
    device : {"auto", "cpu", "gpu", "gpu:N"}, default="auto"
    precision : {"float32", "bfloat16"}, default="float32"
        Arithmetic of the backbone.  "bfloat16" (Keras ``mixed_bfloat16``: float32
        weights, bfloat16 compute) runs the Xception trunk about 1.9x faster on CPUs with
        AMX and uses tensor cores on recent GPUs; its features differ from float32 ones
        by ~3% relative (cached apart).  The head always trains in float32.
    random_state : int, optional
        Seeds weights, shuffling, dropout and the validation split: two fits give
        identical predictions on CPU.
    verbose : int, default=0

    Attributes
    ----------
    classes_ : ndarray
        Class labels, in the order of ``predict_proba``'s columns.
    n_classes_ : int
    model_ : keras.Model
        The composed model: ``images -> trunk (preprocess + backbone) -> head``.  With a
        frozen named backbone it is assembled on first access (the head trains on cached
        features without it).
    trunk_, head_, backbone_ : keras.Model
        Its parts.  A frozen named backbone is rebuilt from its weights on first use and
        is not pickled; its weights are checked against the fingerprint taken at fit.
    history_ : dict of list
        Per-epoch ``loss``, ``accuracy``, ``epoch_time`` and, with validation, ``val_*``.
    image_size_ : tuple
    backbone_frozen_ : bool
    n_features_in_ : int
        Only when fitted on 2-D ``(n, p)`` rows.

    Examples
    --------
    >>> import numpy as np
    >>> from xrayest import XrayCNNClassifier
    >>> X = np.random.default_rng(0).integers(0, 255, (20, 32, 32), dtype=np.uint8)
    >>> y = np.array(["covid", "normal"] * 10)
    >>> clf = XrayCNNClassifier("vgg16", weights=None, image_size=32, epochs=2, random_state=0)
    >>> clf.fit(X, y).predict(X[:2]).shape
    (2,)
    """

    # scikeras reads these; they are fixed for xrayest, so they are class attributes and
    # not estimator parameters (get_params lists only what __init__ sets).
    model = None
    build_fn = None
    warm_start = False
    loss = None
    metrics = None
    shuffle = True
    run_eagerly = False
    validation_batch_size = None
    # Train a head on cached features with xrayest.head_training.fit_head instead of
    # keras.Model.fit (same model, ~3x less fixed cost per fit); set False on the class or
    # an instance to compare.
    fast_head_training = True

    def __init__(self, backbone="vgg16", *, weights="imagenet", image_size=None, pooling="avg",
                 hidden_units=(256,), dropout=0.5, batch_norm=False, l2=0.0, optimizer="adam",
                 learning_rate=1e-3, epochs=20, batch_size=32, validation_split=0.0, class_weight=None,
                 augment=None, freeze_backbone="auto", fine_tune=None, fine_tune_epochs=0,
                 fine_tune_learning_rate=None, early_stopping=None, reduce_lr=None, lr_schedule=None,
                 callbacks=None, cache_features=True, cache_dir=None, device="auto", precision="float32",
                 random_state=None, verbose=0):
        self.backbone = backbone
        self.weights = weights
        self.image_size = image_size
        self.pooling = pooling
        self.hidden_units = hidden_units
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.l2 = l2
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.batch_size = batch_size
        self.validation_split = validation_split
        self.class_weight = class_weight
        self.augment = augment
        self.freeze_backbone = freeze_backbone
        self.fine_tune = fine_tune
        self.fine_tune_epochs = fine_tune_epochs
        self.fine_tune_learning_rate = fine_tune_learning_rate
        self.early_stopping = early_stopping
        self.reduce_lr = reduce_lr
        self.lr_schedule = lr_schedule
        self.callbacks = callbacks
        self.cache_features = cache_features
        self.cache_dir = cache_dir
        self.device = device
        self.precision = precision
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ sklearn tags
    def __sklearn_tags__(self):
        # scikeras lists BaseWrapper before ClassifierMixin, so BaseEstimator's tags win
        # and is_classifier() is False; GridSearchCV would then use plain KFold.
        tags = BaseEstimator.__sklearn_tags__(self)
        tags.estimator_type = "classifier"
        tags.classifier_tags = ClassifierTags()
        tags.transformer_tags = TransformerTags(preserves_dtype=[])  # embeddings are always float32
        tags.target_tags.required = True
        tags.non_deterministic = self.random_state is None
        return tags

    # ------------------------------------------------------------------ validation
    def _check_params(self):
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}; got {self.pooling!r}")
        if not 0.0 <= float(self.validation_split) < 1.0:
            raise ValueError(f"validation_split must be in [0, 1); got {self.validation_split!r}")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if self.freeze_backbone not in ("auto", True, False):
            raise ValueError(f"freeze_backbone must be 'auto', True or False; got {self.freeze_backbone!r}")
        if not isinstance(self.fine_tune_epochs, (int, np.integer)) or self.fine_tune_epochs < 0:
            raise ValueError(f"fine_tune_epochs must be a non-negative integer; got {self.fine_tune_epochs!r}")
        if self.fine_tune_epochs and self.fine_tune is None:
            raise ValueError("fine_tune_epochs needs fine_tune= (how many backbone layers to unfreeze)")
        check_precision(self.precision, self.device)

    def _validate_data(self, X=None, y=None, reset=False, y_numeric=False):
        # scikeras validates X as a numeric matrix; xrayest takes images or file paths.
        if y is not None:
            y = np.asarray(y)
            if y.ndim == 2 and y.shape[1] == 1:
                y = column_or_1d(y, warn=True)
            elif y.ndim != 1:
                raise ValueError(f"y must be a 1-D array of class labels; got shape {y.shape}")
        _, y = super()._validate_data(X=None, y=y, reset=reset, y_numeric=y_numeric)
        if X is None:
            return X, y
        source = as_image_source(X, warn_unit_range=reset)
        if y is not None and len(source) != len(y):
            raise ValueError(f"X has {len(source)} images but y has {len(y)} labels")
        check_n_features(self, source, reset)
        return source, y

    @property
    def feature_encoder(self):
        return _Passthrough()

    # ------------------------------------------------------------------ model building
    def _build_keras_model(self):
        """Build what training needs; returns the composed model, or None when it is built on demand.

        A frozen, reproducible backbone (named, with a weights file, ImageNet weights or a
        seed) is kept as a :class:`~xrayest.features.TrunkRecipe`: the head trains on cached
        features, so the backbone is only built when an image is missing from the cache or
        when ``model_``/``trunk_`` is asked for.  Everything else is built here, whole.
        """
        import keras

        self._check_params()
        spec = F.backbone_spec_or_model(self.backbone)
        self.image_size_ = F.image_size_for(spec, self.image_size)
        augment = augment_config(self.augment)
        pretrained = getattr(spec, "pretrained", True)  # a user's keras.Model counts as pretrained
        frozen = pretrained if self.freeze_backbone == "auto" else bool(self.freeze_backbone)
        one_phase_fine_tune = self.fine_tune is not None and not self.fine_tune_epochs
        self.backbone_frozen_ = frozen and not one_phase_fine_tune
        # Head-only training on cached features needs a frozen backbone and un-augmented inputs.
        self._train_on_features = self.backbone_frozen_ and augment is None
        pool_in_trunk = self.backbone_frozen_ and not self.batch_norm and self.pooling != "flatten"
        trunk_pooling = self.pooling if pool_in_trunk else None
        self._model = self._head = self._trunk = None
        self._trunk_recipe = None
        with device_scope(self.device):
            if self._train_on_features:
                # A backbone fine-tuned later keeps its BatchNorm layers (they stay frozen then).
                self._trunk_recipe = F.TrunkRecipe.for_backbone(self.backbone, self.weights, self.image_size_,
                                                                trunk_pooling, self._random_state, self.precision,
                                                                fold_batch_norm=self.fine_tune is None)
            if self._trunk_recipe is not None:
                self._feature_config = self._trunk_recipe.config if self.cache_features else None
                feature_shape = self._trunk_recipe.output_shape()
                if feature_shape is None:  # first time in this process: build it to learn the shape
                    self._trunk = self._trunk_recipe.build()
                    feature_shape = self._trunk.output_shape[1:]
            else:
                with seeded(self._random_state):
                    backbone, preprocess, fingerprint, _ = F.make_backbone(self.backbone, self.weights,
                                                                           self.image_size_)
                backbone = rewrite_backbone(backbone, fold_batch_norm=frozen and self.fine_tune is None,
                                            precision=self.precision)
                backbone.trainable = not frozen
                if one_phase_fine_tune:
                    unfreeze(backbone, self.fine_tune)
                self._trunk = F.build_trunk(backbone, self.image_size_, preprocess, pooling=trunk_pooling)
                feature_shape = self._trunk.output_shape[1:]
                self._feature_config = F.trunk_config(
                    spec, fingerprint, self.image_size_, preprocess, trunk_pooling,
                    self._random_state, self.precision) if (self.backbone_frozen_ and self.cache_features) else None
            n_outputs = 1 if self.n_classes_ <= 2 else self.n_classes_
            # A fresh seeded context: the head's initial weights do not depend on whether
            # the backbone was built just before.
            with seeded(self._random_state):
                self._head = build_head(feature_shape, n_outputs, pooling=self.pooling,
                                        hidden_units=self.hidden_units, dropout=self.dropout,
                                        batch_norm=self.batch_norm, l2=self.l2)
                if not self._train_on_features:
                    images = keras.Input((None, None, 3), name="images")
                    x = build_augmentation(augment, seed=self._random_state)(images) if augment else images
                    self._model = keras.Model(images, self._head(self._trunk(x)), name="xray_cnn")
            self._compile(self._head if self._train_on_features else self._model, self.learning_rate)
        return self._model

    def _compile(self, model, learning_rate):
        loss = "binary_crossentropy" if self.n_classes_ <= 2 else "sparse_categorical_crossentropy"
        model.compile(optimizer=build_optimizer(self.optimizer, learning_rate), loss=loss,
                      metrics=["accuracy"], jit_compile=False)

    # The fitted network is kept as parts: ``_trunk`` (None until needed when a recipe can
    # rebuild it), ``_head``, and ``_model`` composing them (built on first access).
    @property
    def initialized_(self) -> bool:
        return self.__dict__.get("_head") is not None or self.__dict__.get("_model") is not None

    @property
    def model_(self):
        """The composed model ``images -> trunk -> head`` (built on first access)."""
        import keras

        if self.__dict__.get("_model") is None:
            if self.__dict__.get("_head") is None:
                raise AttributeError("model_")  # not fitted: hasattr(clf, "model_") is False
            images = keras.Input((None, None, 3), name="images")
            with device_scope(self.device):
                self._model = keras.Model(images, self._head(self.trunk_(images)), name="xray_cnn")
        return self._model

    @model_.setter
    def model_(self, model):
        # scikeras' _initialize stores _build_keras_model()'s result (parts are already set);
        # persistence.load stores a whole loaded model, split here into its parts.
        if model is not None:
            self._model = model
            self._head = model.get_layer("head")
            self._trunk = model.get_layer("trunk")
            self._trunk_recipe = None

    @property
    def trunk_(self):
        """Images -> backbone features (preprocessing, frozen backbone, maybe pooling)."""
        if self.__dict__.get("_trunk") is None:
            if self.__dict__.get("_model") is not None:
                self._trunk = self._model.get_layer("trunk")
            elif self.__dict__.get("_trunk_recipe") is not None:
                with device_scope(self.device):
                    self._trunk = self._trunk_recipe.build()
            else:
                raise AttributeError("trunk_")
        return self._trunk

    @property
    def backbone_(self):
        """The backbone model inside the trunk."""
        import keras

        return next(layer for layer in self.trunk_.layers if isinstance(layer, keras.Model))

    @property
    def head_(self):
        """Backbone features -> class probabilities."""
        if self.__dict__.get("_head") is None:
            if self.__dict__.get("_model") is None:
                raise AttributeError("head_")
            self._head = self._model.get_layer("head")
        return self._head

    def __getstate__(self):
        state = dict(super().__getstate__())  # a copy: object.__getstate__ returns the live __dict__
        if state.get("_trunk_recipe") is not None:
            # The trunk is rebuilt from the recipe on first use: pickles stay small.
            state["_trunk"] = state["_model"] = None
        elif state.get("_model") is not None:
            # Trunk and head are layers of _model; pickled separately they would be copies.
            state["_trunk"] = state["_head"] = None
        return state

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y, sample_weight=None, **kwargs):
        """Fit the head (and an unfrozen backbone) on images X and labels y.

        Parameters
        ----------
        X : array of images ``(n, h, w[, c])`` or sequence of image paths
        y : array-like of shape (n,)
            String or integer labels.
        sample_weight : array-like of shape (n,), optional
        """
        self.classes_ = None
        if self.class_weight is not None:
            # KerasClassifier multiplies the caller's sample_weight in place; build a new one.
            weights = compute_sample_weight(class_weight=self.class_weight, y=np.asarray(y))
            if sample_weight is not None:
                weights = weights * np.asarray(sample_weight, dtype=float)
            sample_weight = weights
        BaseWrapper.fit(self, X, y, sample_weight=sample_weight, **kwargs)
        return self

    def partial_fit(self, X, y, classes=None, sample_weight=None, **kwargs):
        """Train one more epoch, keeping the model and history."""
        self.classes_ = classes if classes is not None else getattr(self, "classes_", None)
        BaseWrapper.partial_fit(self, X, y, sample_weight=sample_weight, **kwargs)
        return self

    def _fit(self, X, y, sample_weight, warm_start, epochs, initial_epoch, **kwargs):
        # scikeras' _fit, less its checks of model_ (which would build the trunk): the model
        # is ours, so its outputs and loss match y by construction.
        if not ((self.warm_start or warm_start) and self.initialized_):
            X, y = self._initialize(X, y)
        else:
            X, y = self._validate_data(X, y)
        if sample_weight is not None:
            X, y, sample_weight = self._validate_sample_weight(X, y, sample_weight)
        y = self.target_encoder_.transform(y)
        self._fit_keras_model(X, y, sample_weight=sample_weight, warm_start=warm_start, epochs=epochs,
                              initial_epoch=initial_epoch, **kwargs)

    def _trunk_features(self, source: ImageSource) -> np.ndarray:
        cache = F.default_cache(self.cache_dir) if self._feature_config else None
        return F.extract_features(lambda: self.trunk_, source, size=self.image_size_, batch_size=self.batch_size,
                                  config=self._feature_config, cache=cache, verbose=self.verbose)

    def _training_inputs(self, source: ImageSource, on_features: bool):
        if on_features:
            return self._trunk_features(source), self.head_
        return source.all(self.image_size_), self.model_

    def _run_fit(self, trainee, inputs, y, sample_weight, validation, epochs, initial_epoch, **kwargs):
        callbacks = [EpochTimer(),
                     *fit_callbacks(early_stopping=self.early_stopping, reduce_lr=self.reduce_lr,
                                    lr_schedule=self.lr_schedule, has_validation=validation is not None,
                                    epochs=initial_epoch + epochs),
                     *self._fit_callbacks]
        with seeded(self._random_state):
            if trainee is self.__dict__.get("_head") and self._fast_head_fit(kwargs):
                return fit_head(trainee, inputs, y, batch_size=self.batch_size, epochs=initial_epoch + epochs,
                                initial_epoch=initial_epoch, sample_weight=sample_weight, validation_data=validation,
                                callbacks=callbacks, seed=self._random_state)
            return trainee.fit(inputs, y, batch_size=self.batch_size, epochs=initial_epoch + epochs,
                               initial_epoch=initial_epoch, sample_weight=sample_weight, validation_data=validation,
                               callbacks=callbacks, verbose=self.verbose, shuffle=True, **kwargs)

    def _fast_head_fit(self, fit_kwargs) -> bool:
        """Whether the head can train with :func:`~xrayest.head_training.fit_head` (one graph per epoch).

        Keras' own loop is kept where its per-batch machinery is wanted: user callbacks,
        progress bars (verbose), extra ``fit`` arguments, or ``fast_head_training = False``.
        """
        return self.fast_head_training and not self.verbose and not self._fit_callbacks and not fit_kwargs

    def _split(self, inputs, y, sample_weight, validation_data, on_features):
        """Training arrays and validation tuple: explicit validation_data, else a stratified split."""
        if validation_data is not None:
            X_val, y_val = validation_data[:2]
            source, y_val = self._validate_data(X_val, y_val)
            val_inputs = self._training_inputs(source, on_features)[0]
            return inputs, y, sample_weight, (val_inputs, self.target_encoder_.transform(y_val))
        if not self.validation_split:
            return inputs, y, sample_weight, None
        train, val = stratified_split(y, float(self.validation_split), self._random_state)
        validation = (inputs[val], y[val]) if sample_weight is None else (inputs[val], y[val], sample_weight[val])
        sample_weight = None if sample_weight is None else sample_weight[train]
        return inputs[train], y[train], sample_weight, validation

    def _fit_keras_model(self, X, y, sample_weight, warm_start, epochs, initial_epoch, **kwargs):
        validation_data = kwargs.pop("validation_data", None)
        histories = []
        with device_scope(self.device):
            on_features = self._train_on_features and self.backbone_frozen_
            inputs, trainee = self._training_inputs(X, on_features)
            inputs, y_fit, sw, validation = self._split(inputs, y, sample_weight, validation_data, on_features)
            histories.append(self._run_fit(trainee, inputs, y_fit, sw, validation, epochs, initial_epoch, **kwargs))
            if self.fine_tune is not None and self.fine_tune_epochs and initial_epoch == 0:
                # Phase two: unfreeze, and train the composed model on images at a lower rate.
                unfreeze(self.backbone_, self.fine_tune)
                self.backbone_frozen_ = False
                self._feature_config = None  # the backbone's features change from here on
                self._trunk_recipe = None  # and its weights must be kept, not rebuilt
                rate = self.fine_tune_learning_rate or self.learning_rate / 10
                self._compile(self.model_, rate)
                inputs = X.all(self.image_size_)
                inputs, y_fit, sw, validation = self._split(inputs, y, sample_weight, validation_data, False)
                done = len(histories[0].history.get("loss", []))
                histories.append(self._run_fit(self.model_, inputs, y_fit, sw, validation, self.fine_tune_epochs,
                                               done, **kwargs))
        if not warm_start or not hasattr(self, "history_") or initial_epoch == 0:
            self.history_ = {}
        for hist in histories:
            for key, values in hist.history.items():
                self.history_.setdefault("accuracy" if key == "compile_metrics" else key, []).extend(
                    float(v) for v in values)
        return self

    # ------------------------------------------------------------------ prediction
    def _check_fitted(self):
        if not self.initialized_:
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet. Call 'fit' first.")

    def _predict_raw(self, X, **kwargs):
        self._check_fitted()
        source, _ = self._validate_data(X=X, y=None)
        with device_scope(self.device):
            if self.backbone_frozen_:
                return predict_head(self.head_, self._trunk_features(source), self.batch_size)
            return self._predict_images(self.model_, source)

    def _predict_images(self, model, source):
        # Read files a chunk at a time so memory stays bounded on large path lists.
        chunk = 8 * self.batch_size
        out = [np.asarray(model.predict(source.batch(i, i + chunk, self.image_size_), batch_size=self.batch_size,
                                        verbose=0))
               for i in range(0, len(source), chunk)]
        return np.concatenate(out) if out else np.zeros((0, *model.output_shape[1:]), np.float32)

    def predict_proba(self, X, **kwargs):
        """Class probabilities, shape ``(n_samples, n_classes)``, columns in ``classes_`` order."""
        raw = self._predict_raw(X).astype(np.float64)
        if raw.shape[1] == 1:
            raw = np.column_stack([1.0 - raw[:, 0], raw[:, 0]])
        return raw

    def predict(self, X, **kwargs):
        """Predicted class labels (the same type as the ``y`` passed to ``fit``)."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def score(self, X, y, sample_weight=None):
        """Mean accuracy on ``(X, y)``."""
        return accuracy_score(y, self.predict(X), sample_weight=sample_weight)

    def fit_transform(self, X, y, **fit_params):
        """Fit, then return the embeddings of X (see :meth:`transform`)."""
        return self.fit(X, y, **fit_params).transform(X)

    def transform(self, X):
        """Embeddings from the head's last hidden layer, shape ``(n_samples, hidden_units[-1])``.

        With no hidden layers, the pooled backbone features.
        """
        import keras

        self._check_fitted()
        source, _ = self._validate_data(X=X, y=None)
        head = self.head_
        names = [layer.name for layer in head.layers]
        layer = EMBEDDING_LAYER if EMBEDDING_LAYER in names else names[-2]
        embed = keras.Model(head.input, head.get_layer(layer).output)
        with device_scope(self.device):
            if self.backbone_frozen_:
                return predict_head(embed, self._trunk_features(source), self.batch_size)
            full = keras.Model(self.model_.input, embed(self.trunk_(self.model_.input)))
            return self._predict_images(full, source)

    def save(self, path):
        """Save to one ``.keras`` file (Keras model + parameters as JSON); see :func:`xrayest.load`."""
        from .persistence import save

        return save(self, path)

    def __repr__(self):
        return BaseEstimator.__repr__(self)
