"""XrayCNNClassifier: a pretrained (or from-scratch) CNN with a dense head, as a scikit-learn classifier."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.metrics import accuracy_score
from sklearn.utils.validation import check_is_fitted

from .atomic import all_or_nothing
from .augmentation import AugmentedCopies, augment_config, build_augmentation
from .backbones import backbone_spec_or_model, image_size_for
from .cache import estimator_cache
from .device import device_scope, resolve_precision, check_cpu_precision
from .head_training import predict_head
from .heads import EMBEDDING_LAYER, build_head, head_loss
from .inputs import as_image_source, check_n_features, chunk_size, take_rows
from .lungs import crop_source
from .layers import OnGray
from .multilabel import masked_subset_accuracy
from .optimizers import build_optimizer, check_optimizer_learning_rate
from .params import constraints_for, validate_arguments, validate_param, validate_params
from .pipeline import PackedImages, image_dataset
from .seeding import seeded
from .targets import check_groups, dense_target, fit_targets, labeled_values, output_count, unlabeled_rows
from .callbacks import EpochTimer, RecalibratedValidation, fit_callbacks
from .training import (choose_loop, has_trainable_batch_norm, plan_training, recalibrate_batch_norm, run_phase,
                       stratified_split)
from .trunk import Trunk, pooling_in_trunk

__all__ = ["XrayCNNClassifier", "from_saved", "is_adaptable"]


class XrayCNNClassifier(ClassifierMixin, TransformerMixin, BaseEstimator):
    """CNN image classifier for chest X-rays: a Keras backbone plus a dense head.

    A scikit-learn classifier through scikit-learn's public API: ``is_classifier`` is True
    (so ``GridSearchCV(cv=3)`` stratifies), ``clone`` keeps every parameter, pickling
    round-trips predictions exactly, parameters are validated at ``fit``
    (:mod:`xrayest.params`).

    When the backbone is frozen (the default for pretrained backbones), ``fit`` runs it
    once per distinct image, caches the result (:mod:`xrayest.cache`) and trains only the
    head; predictions still come from raw images and equal those of the composed model
    ``model_``.  How each fit trains is a ``TrainingPlan`` (``xrayest.training``)
    (``training_plan_``).

    Parameters
    ----------
    backbone : str or keras.Model, default="vgg16"
        A name from :data:`xrayest.backbones.BACKBONES` (the ImageNet networks of
        ``keras.applications``, ``xception_middle``: Xception through block 12, and the
        from-scratch CNNs) or your own ``keras.Model`` mapping RGB 0-255 images to a feature map
        (it is copied, never modified).
    weights : {"imagenet", None} or path, default="imagenet"
        Backbone weights: ImageNet (downloaded, or found offline, see :mod:`xrayest.weights`),
        None for random, or a ``.weights.h5`` file.
    image_size : int or (int, int), optional
        Size images are resized to inside the model; default the backbone's own.
    crop : {None, "lungs"}, default=None
        "lungs": every image this classifier trains on, predicts or adapts to is first cut to its lung
        fields (:mod:`xrayest.lungs`: thresholds and morphology, no trained model), so the film's
        framing, borders and edge markers are not what it learns.  The crop is part of the model:
        saved with it, and part of the cached features' keys.
    pooling : {"avg", "max", "flatten"}, default="avg"
        How the backbone's feature map becomes a vector.
    hidden_units : int or sequence of int, default=(256,)
        Dense ReLU layers of the head; the last is the embedding returned by ``transform``.
    dropout : float or sequence of float, default=0.5
        Dropout after each hidden layer (a sequence gives one rate per layer).
    batch_norm : bool, default=False
        BatchNormalization on the backbone output, before pooling.
    l2 : float, default=0.0
        L2 penalty on the head's Dense kernels.
    optimizer : str, class or keras Optimizer, default="adam"
        A fresh copy is made per fit.  Plain Adam runs as
        ``xrayest.optimizers.FusedAdam`` (same results, one fused kernel per update).
        Every phase trains at ``learning_rate``: an instance built with another rate is an error at
        ``fit`` (pass the same rate to both, or the optimizer's name or class).
    learning_rate : float, default=1e-3
    epochs : int, default=20
    batch_size : int, default=32
    validation_split : float, default=0.0
        Fraction of the training data held out, stratified by class, to report
        ``val_loss``/``val_accuracy`` in ``history_``.
    class_weight : "balanced", dict or None, default=None
    augment : None, "light", "medium", "strong", "xray" or dict, default=None
        Training-time augmentation (see :mod:`xrayest.augmentation`); identity at inference.
        With augmentation the backbone must see every augmented image, so features are not cached.
    tta : int, default=0
        Test-time augmentation: ``predict_proba`` (and ``predict``) average the probabilities
        of each image and ``tta`` augmented copies of it (``augment``'s settings, or the "xray"
        preset when ``augment`` is None).  Copy ``k`` is one random transformation drawn from
        ``random_state`` (0 when None) and ``k``, the same for every image, so an image scores the
        same alone or in any batch.  0: off; at most 100.
        ``transform`` never augments.  Each copy costs one more forward pass through the
        whole network (no cached features).
    freeze_backbone : "auto" or bool, default="auto"
        "auto" freezes pretrained-family backbones and trains the from-scratch CNNs.
    fine_tune : int or str, optional
        Unfreeze the last N backbone layers (int) or every layer after the named one (str,
        e.g. InceptionV3's ``"mixed7"``); BatchNorm layers stay frozen in inference mode.
        Without ``augment`` (and with ``cache_features``), the activation where the frozen part
        ends is computed once per image and cached, and each epoch runs only the unfrozen
        layers and the head (``training_inputs_`` says "cut"); this needs the unfrozen layers
        to read one tensor of the frozen part (a block boundary: Xception's last 16 layers
        are its blocks 13-14), else every epoch runs the whole network.
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
    training_loop : {"auto", "graph", "keras"}, default="auto"
        How a head on cached features trains.  "graph": one compiled graph per epoch
        (``xrayest.head_training.fit_head``, far less fixed cost per fit; only the
        epoch-level hooks of callbacks run, and a callback with per-batch hooks is an error).
        "keras": ``keras.Model.fit``.  "auto": "graph" unless a callback has per-batch hooks.
        Training on images always uses ``keras.Model.fit``.  ``training_loop_`` records
        the loop of each phase.
    cache_features : bool, default=True
        Share frozen-backbone features (and the activations at a fine-tuning cut, see
        ``fine_tune``) across fits through the feature cache.  False: computed anew every
        fit, and fine-tuning runs the whole network every epoch.
    cache_dir : path, optional
        Keep cached features on disk there too (shared by parallel workers).
    device : {"auto", "cpu", "gpu", "gpu:N"}, default="auto"
    precision : {"auto", "float32", "bfloat16", "float16"}, default="auto"
        Arithmetic of the backbone.  "auto" picks the fastest one the device runs natively
        (``xrayest.device.choose_precision``: bfloat16 on CPUs with AMX-BF16 or AVX512-BF16 and
        on Ampere and newer GPUs, float16 on V100 / T4, float32 elsewhere); ``precision_`` says
        which.  "bfloat16" (Keras ``mixed_bfloat16``: float32
        weights, bfloat16 compute) is faster on CPUs with AMX and uses tensor cores on
        recent GPUs (benchmarks/RESULTS.md measures it); "float16" (``mixed_float16``) is
        for GPUs without bfloat16 (V100, T4), and trains the backbone with Keras' dynamic
        loss scaling (``LossScaleOptimizer``).  Features differ slightly from float32 ones
        (cached apart).  The head always trains in float32.
    random_state : int, optional
        Seeds weights, shuffling, dropout and the validation split: two fits give
        identical predictions on CPU.
    verbose : int, default=0
        > 0: a line per epoch (and a progress bar over long feature extractions).

    Attributes
    ----------
    classes_ : ndarray
        Class labels, in the order of ``predict_proba``'s columns.
    trunk_ : xrayest.trunk.Trunk
        Images -> backbone features.  A frozen named backbone is kept as a TrunkConfig, built
        on first use and not pickled; its weights are checked against the fingerprint taken
        at fit.  ``trunk_.model`` is the Keras model.
    head_ : keras.Model
        Backbone features -> class probabilities.
    model_ : keras.Model
        The composed model ``images -> trunk -> head`` (the model trained on images, or
        assembled from ``trunk_`` and ``head_`` on first access).
    backbone_ : keras.Model
        The backbone inside the trunk.
    history_ : dict of list
        Per-epoch ``loss``, ``accuracy``, ``epoch_time`` and, with validation, ``val_*``.
    training_plan_ : TrainingPlan
    training_loop_ : list of str
        "graph" or "keras", one per phase of the plan.
    training_inputs_ : list of str
        What each phase trained on: "features" (cached frozen-backbone features), "cut" (fine-tuning
        on the cached activation where the frozen part of the backbone ends; each epoch runs only the
        unfrozen layers and the head) or "images" (the whole network, every epoch).
    multilabel_ : bool
        True when fitted on an ``(n, k)`` indicator matrix: ``classes_`` is then a list of k
        arrays ``[0, 1]`` (scikit-learn's multi-output convention), ``predict`` returns the
        indicator matrix and ``predict_proba`` the ``(n, k)`` finding probabilities.
    findings_ : list of str
        Multi-label only: the name of each column of ``y`` (a DataFrame's columns, else "0",
        "1", ...); saved with the model and used by the CLI.  Assign a list to name them.
    image_size_ : tuple
    precision_ : str
        The precision the fit ran in ("auto" resolved for the device).
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
    >>> clf.training_loop_
    ['graph']
    """

    _parameter_constraints = constraints_for(
        "backbone", "weights", "image_size", "crop", "pooling", "hidden_units", "dropout", "batch_norm", "l2",
        "optimizer", "learning_rate", "epochs", "batch_size", "validation_split", "class_weight", "augment",
        "freeze_backbone", "fine_tune", "fine_tune_epochs", "fine_tune_learning_rate", "early_stopping", "reduce_lr",
        "lr_schedule", "tta", "callbacks", "training_loop", "cache_features", "cache_dir", "device", "precision",
        "random_state", "verbose")

    def __init__(self, backbone="vgg16", *, weights="imagenet", image_size=None, crop=None, pooling="avg",
                 hidden_units=(256,), dropout=0.5, batch_norm=False, l2=0.0, optimizer="adam",
                 learning_rate=1e-3, epochs=20, batch_size=32, validation_split=0.0, class_weight=None,
                 augment=None, freeze_backbone="auto", fine_tune=None, fine_tune_epochs=0,
                 fine_tune_learning_rate=None, early_stopping=None, reduce_lr=None, lr_schedule=None,
                 tta=0, callbacks=None, training_loop="auto", cache_features=True, cache_dir=None, device="auto",
                 precision="auto", random_state=None, verbose=0):
        self.backbone = backbone
        self.weights = weights
        self.image_size = image_size
        self.crop = crop
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
        self.tta = tta
        self.callbacks = callbacks
        self.training_loop = training_loop
        self.cache_features = cache_features
        self.cache_dir = cache_dir
        self.device = device
        self.precision = precision
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = []  # embeddings are always float32
        tags.classifier_tags.multi_label = True  # an (n, k) indicator y: one sigmoid per finding
        tags.non_deterministic = self.random_state is None
        return tags

    # ------------------------------------------------------------------ fitting
    @all_or_nothing
    def fit(self, X, y, sample_weight=None, validation_data=None, groups=None):
        """Fit the head (and an unfrozen backbone) on images X and labels y.

        Parameters
        ----------
        X : array of images ``(n, h, w[, c])`` or sequence of image paths
        y : array-like of shape (n,) or (n, k)
            String or integer labels, at least two classes; or an ``(n, k)`` 0/1 indicator matrix
            of findings (multi-label: one sigmoid per column, per-finding binary cross-entropy;
            entries of -1 are left out of the loss, see :func:`xrayest.load_label_table`).
        sample_weight : array-like of shape (n,), optional
            Non-negative; multiplied by ``class_weight``'s weights (the caller's array is
            never modified).
        validation_data : (X_val, y_val), optional
            Scored every epoch into ``history_`` instead of a ``validation_split``.
        groups : array-like of shape (n,), optional
            Patient (or study) of each image: ``validation_split`` then holds whole groups out
            (stratified by class where the groups allow), so no patient is on both sides.

        With string labels, images labeled -1 (the int, or the string "-1"), as scikit-learn's
        semi-supervised estimators take them, are unlabeled films of the site the model is for: the
        classifier trains on the labeled images, then adapts to the unlabeled ones (:meth:`adapt`, with
        its defaults), and ``adapted_to_`` counts them.
        """
        rows = unlabeled_rows(y)
        if rows is not None:
            return self._fit_then_adapt(X, y, rows, sample_weight=sample_weight, validation_data=validation_data,
                                        groups=groups)
        validate_params(self)
        check_optimizer_learning_rate(self.optimizer, self.learning_rate)
        check_cpu_precision(self.precision, self.device)
        precision = resolve_precision(self.precision, self.device)
        spec = backbone_spec_or_model(self.backbone)
        image_size = image_size_for(spec, self.image_size)
        augment = augment_config(self.augment)
        plan = plan_training(pretrained=getattr(spec, "pretrained", True), freeze_backbone=self.freeze_backbone,
                             fine_tune=self.fine_tune, fine_tune_epochs=self.fine_tune_epochs,
                             augmented=augment is not None, epochs=self.epochs, learning_rate=self.learning_rate,
                             fine_tune_learning_rate=self.fine_tune_learning_rate)
        source = crop_source(as_image_source(X, warn_unit_range=True), self.crop)
        targets = fit_targets(y, len(source), class_weight=self.class_weight, sample_weight=sample_weight)
        groups = None if groups is None else check_groups(groups, len(source))
        check_n_features(self, source, reset=True)
        validation = _validation_source(validation_data, targets, self.crop)
        split = self._make_validation_split(targets, groups, validation)
        self.classes_, self.image_size_, self.training_plan_ = targets.classes, image_size, plan
        self.precision_ = precision
        self.multilabel_ = targets.multilabel
        if targets.multilabel:  # a DataFrame's column names, else the column numbers
            self.findings_ = [str(c) for c in getattr(y, "columns", range(len(targets.classes)))]
        self.history_, self.training_loop_, self.training_inputs_ = {}, [], []
        cache = estimator_cache(self)
        with device_scope(self.device):
            trunk = self._make_trunk(plan, spec, image_size)
            frozen_key = trunk.cache_key if cache is not None else None
            head = model = packed = None
            for phase in plan.phases:
                if phase.unfreeze:
                    trunk = trunk.unfrozen(self.fine_tune)
                inputs = self._phase_inputs(phase, trunk, frozen_key, source, validation, image_size, augment, cache,
                                             packed)
                packed = inputs.data if inputs.kind == "images" else packed
                if head is None:
                    head = self._make_head(inputs.feature_shape, targets)
                trainee = self._trainee(inputs, head, augment)
                model = trainee if inputs.kind == "images" else model
                train_rows = self._train(trainee, phase, inputs, targets, split)
                if inputs.kind == "images":  # moving BatchNorm statistics of the trained trunk, made exact
                    recalibrate_batch_norm(trunk.model, packed.batches(train_rows, self.batch_size))
                self.training_inputs_.append(inputs.kind)
        self.trunk_, self.head_, self._model = trunk, head, model
        return self

    # ------------------------------------------------------------------ the steps of fit
    def _fit_then_adapt(self, X, y, rows, *, sample_weight, validation_data, groups):
        """``fit`` on the labeled ``rows[0]``, then this estimator adapted to the unlabeled images ``rows[1]``."""
        labeled, unlabeled = rows
        self.fit(take_rows(X, labeled), labeled_values(y, labeled),
                 sample_weight=None if sample_weight is None else take_rows(sample_weight, labeled),
                 validation_data=validation_data, groups=None if groups is None else take_rows(groups, labeled))
        if is_adaptable(self):
            vars(self).update(vars(self.adapt(take_rows(X, unlabeled))))
        else:
            warnings.warn(f"fit got {len(unlabeled)} unlabeled images (label -1), but this classifier has no "
                          "BatchNorm to adapt (a trained trunk's, or a head's with batch_norm=True); they were "
                          "left out", UserWarning, stacklevel=3)
        return self

    def _make_trunk(self, plan, spec, image_size) -> Trunk:
        """The trunk ``plan`` starts from, for the backbone ``spec`` (resolved once, at the start of fit)."""
        if plan.trunk == "frozen":
            return Trunk.frozen(spec, self.weights, image_size,
                                pooling=pooling_in_trunk(self.pooling, self.batch_norm), seed=self.random_state,
                                precision=self.precision_, fold_batch_norm=plan.fold_batch_norm,
                                cache=self.cache_features)
        fine_tune = self.fine_tune if plan.trunk == "fine_tune" else None
        return Trunk.trainable(spec, self.weights, image_size, seed=self.random_state,
                               precision=self.precision_, fine_tune=fine_tune)

    def _phase_inputs(self, phase, trunk, frozen_key, source, validation, image_size, augment, cache,
                      packed) -> "PhaseInputs":
        """What ``phase`` trains on (:class:`PhaseInputs`): the trunk's cached features, the output of a
        fine-tuned trunk's frozen front (the cut), or the images themselves."""
        # Fine-tuning without augmentation: the frozen part's output at the cut is as fixed as frozen
        # features, so it is computed once (and cached) and each epoch runs the rest only.
        cut = trunk.cut(frozen_key) if (self.fine_tune is not None and not phase.on_features
                                        and augment is None and self.cache_features) else None
        if phase.on_features or cut:
            front = trunk if phase.on_features else cut[0]
            data = front.features(source, batch_size=self.batch_size, cache=cache, verbose=self.verbose)
            val = validation and (front.features(validation[0], batch_size=self.batch_size, cache=cache),
                                  validation[1])
            if phase.on_features:
                return PhaseInputs("features", data, val, None, data.shape[1:])
            return PhaseInputs("cut", data, val, cut[1], trunk.model.output_shape[1:])
        # images decoded once into uint8 (PackedImages), streamed in batches
        packed = packed if packed is not None else PackedImages.from_source(source, image_size)
        val = validation and (PackedImages.from_source(validation[0], image_size), validation[1])
        return PhaseInputs("images", packed, val, trunk.model, trunk.model.output_shape[1:])

    def _make_head(self, feature_shape, targets):
        with seeded(self.random_state):  # the head's weights do not depend on what was built before
            return build_head(feature_shape, targets.n_outputs, pooling=self.pooling, hidden_units=self.hidden_units,
                              dropout=self.dropout, batch_norm=self.batch_norm, l2=self.l2,
                              multilabel=targets.multilabel, seed=self.random_state)

    def _trainee(self, inputs, head, augment):
        """The Keras model a phase trains: the head, the cut's back part + head, or augmentation + trunk + head."""
        if inputs.kind == "features":
            return head
        if inputs.kind == "cut":
            return _stack(inputs.below, head)
        with seeded(self.random_state):
            return _compose(inputs.below, head, augment, self.random_state)

    def _make_validation_split(self, targets, groups, validation):
        """The rows every phase trains and validates on, drawn once per fit: ``(train_rows, val_rows)``.

        ``validation_split`` holds rows out, stratified (whole ``groups`` when given; a class with one
        image stays in training, with a warning), unless validation data was given (``val_rows`` None).
        """
        if validation is not None or not self.validation_split:
            return np.arange(len(targets.encoded)), None
        return stratified_split(targets.encoded, float(self.validation_split), self.random_state, groups=groups,
                                class_names=targets.classes)

    def _train(self, trainee, phase, inputs, targets, split):
        """Compile ``trainee`` for ``phase`` and train it on ``split``'s rows, appending to ``history_``; returns
        the rows trained on."""
        loss, metrics = head_loss(targets.n_outputs, targets.multilabel)
        # float16 gradients of the backbone underflow without loss scaling; a head on features is float32
        loss_scaling = self.precision_ == "float16" and inputs.kind != "features"
        trainee.compile(optimizer=build_optimizer(self.optimizer, phase.learning_rate, loss_scaling=loss_scaling),
                        loss=loss, metrics=metrics, jit_compile=False)
        data = self._phase_data(inputs, targets, split)
        validation = data.validation
        done = len(self.history_.get("loss", []))
        scored = []
        if validation is not None and inputs.kind == "images" and has_trainable_batch_norm(inputs.below):
            # validation scored after recalibrating BatchNorm on up to 1,024 training images, not by Keras
            rows = data.train_rows
            sample = rows[np.random.default_rng(self.random_state).permutation(len(rows))[:1024]]
            scored = [RecalibratedValidation(inputs.below, lambda: inputs.data.batches(sample, self.batch_size),
                                             validation)]
            has_validation, validation = True, None
        else:
            has_validation = validation is not None
        callbacks = [EpochTimer(), *scored,
                     *fit_callbacks(early_stopping=self.early_stopping, reduce_lr=self.reduce_lr,
                                    lr_schedule=self.lr_schedule, has_validation=has_validation,
                                    epochs=done + phase.epochs),
                     *(self.callbacks or [])]
        loop = choose_loop(self.training_loop, phase, callbacks)
        history = run_phase(trainee, data.x, data.y, loop=loop, epochs=phase.epochs, initial_epoch=done,
                            batch_size=self.batch_size, sample_weight=data.sample_weight, validation=validation,
                            callbacks=callbacks, seed=self.random_state, verbose=self.verbose)
        self.training_loop_.append(loop)
        for key, values in history.items():
            self.history_.setdefault(key, []).extend(values)
        return data.train_rows

    def _phase_data(self, inputs, targets, split) -> "_PhaseData":
        """What one phase trains and validates on: feature arrays, or image batches streamed from PackedImages.

        ``split``: the training and held-out rows (:meth:`_make_validation_split`); held-out rows None
        when validation data was given.  For images, ``x`` and ``validation`` are ``tf.data`` datasets
        (targets and weights inside) and ``y``, ``sample_weight`` are None.
        """
        shaped = targets.shaped
        y, weights, validation = targets.encoded, targets.weights, inputs.validation
        train_rows, val_rows = split
        if inputs.kind == "images":
            stream = dict(batch_size=self.batch_size, seed=self.random_state)
            x = image_dataset(inputs.data, train_rows, shaped(y), weights, shuffle=True, **stream)
            if val_rows is not None:
                validation = image_dataset(inputs.data, val_rows, shaped(y), weights, shuffle=False, **stream)
            elif validation is not None:
                val_images, val_y = validation
                validation = image_dataset(val_images, np.arange(len(val_y)), shaped(val_y), shuffle=False,
                                           **stream)
            return _PhaseData(x, None, None, validation, train_rows)
        features = inputs.data
        if val_rows is not None:
            validation = (features[val_rows], shaped(y[val_rows]),
                          *(() if weights is None else (weights[val_rows],)))
        elif validation is not None:
            validation = (validation[0], shaped(validation[1]))
        return _PhaseData(features[train_rows], shaped(y[train_rows]),
                          None if weights is None else weights[train_rows], validation, train_rows)

    # ------------------------------------------------------------------ the fitted network
    @property
    def model_(self):
        """The composed model ``images -> trunk -> head`` (assembled on first access when not stored)."""
        check_is_fitted(self, "head_")  # NotFittedError is an AttributeError: hasattr(clf, "model_") is False
        if self._model is None:
            with device_scope(self.device):
                self._model = _compose(self.trunk_.model, self.head_)
        return self._model

    @property
    def backbone_(self):
        """The backbone model inside the trunk."""
        check_is_fitted(self, "trunk_")
        return self.trunk_.backbone

    def __getstate__(self):
        state = dict(self.__dict__)
        model, trunk = state.get("_model"), state.get("trunk_")
        if model is not None and trunk is not None:
            if trunk.config is not None:
                state["_model"] = None  # recomposed from the rebuilt trunk and the head
            else:
                # trunk and head are layers of the model: pickle the model once and find them in it again
                state["trunk_"] = ("layer of _model", trunk.is_frozen, trunk.cache_key)
                state["head_"] = None
        return state

    def __setstate__(self, state):
        trunk = state.get("trunk_")
        if isinstance(trunk, tuple):
            _, is_frozen, cache_key = trunk
            state["trunk_"] = Trunk.from_model(state["_model"].get_layer("trunk"), is_frozen=is_frozen,
                                               cache_key=cache_key)
            state["head_"] = state["_model"].get_layer("head")
        self.__dict__.update(state)

    # ------------------------------------------------------------------ prediction
    def _outputs(self, X, head, tta=0):
        """``head`` applied to the trunk's features of X: from the cache for a frozen trunk, else through model_.

        ``tta`` > 0 averages the outputs over the images and ``tta`` augmented copies (full forward passes).
        """
        import keras

        check_is_fitted(self, "head_")
        source = crop_source(as_image_source(X, warn_unit_range=True), self.crop)
        check_n_features(self, source, reset=False)
        with device_scope(self.device):
            if self.trunk_.is_frozen and not tta:
                cache = estimator_cache(self)
                feats = self.trunk_.features(source, batch_size=self.batch_size, cache=cache, verbose=self.verbose)
                if feats.shape[1:] != tuple(head.input_shape[1:]):  # cached entries of another shape: recompute
                    warnings.warn(f"cached features of shape {feats.shape[1:]} do not fit the head "
                                  f"{tuple(head.input_shape[1:])}; recomputing them", RuntimeWarning, stacklevel=3)
                    feats = self.trunk_.features(source, batch_size=self.batch_size, cache=None)
                return predict_head(head, feats, self.batch_size)
            model = self.model_ if head is self.head_ else keras.Model(
                self.model_.input, head(self.trunk_.model(self.model_.input)))
            copies = tta and AugmentedCopies(augment_config(self.augment) or augment_config("xray"),
                                            seed=self.random_state)
            chunk = chunk_size(self.batch_size)  # files are read a chunk at a time: bounded memory
            out = []
            for i in range(0, len(source), chunk):
                images = source.batch(i, i + chunk, self.image_size_)
                total = np.asarray(model.predict(images, batch_size=self.batch_size, verbose=0),
                                   np.float64 if tta else None)
                for k in range(tta):  # test-time augmentation: the mean over the image and its augmented copies
                    total = total + model.predict(copies(images, k), batch_size=self.batch_size, verbose=0)
                out.append(total / (tta + 1) if tta else total)
            return np.concatenate(out) if out else np.zeros((0, *model.output_shape[1:]), np.float32)

    def predict_proba(self, X):
        """Class probabilities, shape ``(n_samples, n_classes)``, columns in ``classes_`` order.

        Multi-label: the probability of each finding, ``(n_samples, n_findings)`` (rows need not sum to 1).
        """
        check_is_fitted(self, "head_")
        validate_param(self, "tta")  # set_params(tta=...) after fit reaches here unchecked
        raw = self._outputs(X, self.head_, tta=self.tta).astype(np.float64)
        if raw.shape[1] == 1 and not getattr(self, "multilabel_", False):
            raw = np.column_stack([1.0 - raw[:, 0], raw[:, 0]])
        return raw

    def predict(self, X):
        """Predicted class labels (the same type as the ``y`` passed to ``fit``).

        Multi-label: the ``(n_samples, n_findings)`` 0/1 indicator matrix (probability >= 0.5).
        """
        proba = self.predict_proba(X)
        if getattr(self, "multilabel_", False):
            return (proba >= 0.5).astype(np.int64)
        return self.classes_[np.argmax(proba, axis=1)]

    def score(self, X, y, sample_weight=None):
        """Mean accuracy on ``(X, y)`` (multi-label: subset accuracy, every known finding of an image right;
        entries of -1 are left out, as in training)."""
        if getattr(self, "multilabel_", False):
            return masked_subset_accuracy(dense_target(y), self.predict(X), sample_weight=sample_weight)
        return accuracy_score(y, self.predict(X), sample_weight=sample_weight)

    def transform(self, X):
        """Embeddings from the head's last hidden layer, shape ``(n_samples, hidden_units[-1])``.

        With no hidden layers, the pooled backbone features.
        """
        import keras

        check_is_fitted(self, "head_")
        head = self.head_
        names = [layer.name for layer in head.layers]
        layer = EMBEDDING_LAYER if EMBEDDING_LAYER in names else names[-2]
        return self._outputs(X, keras.Model(head.input, head.get_layer(layer).output))

    # ------------------------------------------------------------------ a new site
    def adapt(self, X, *, tent_steps=10, tent_learning_rate=1e-3):
        """A copy of this classifier adapted to the unlabeled images X of a new site.

        Two adaptations that need no labels (:mod:`xrayest.adaptation`), each where this classifier has
        what it works on:

        - AdaBN (Li et al., 2016), for a trunk that was trained (from scratch, or
          ``freeze_backbone=False``): its BatchNorm statistics, learned on the training films,
          re-estimated on X (no weight changes);
        - TENT (Wang et al., 2021): ``tent_steps`` Adam steps, each on one batch of X, that lower the
          entropy of the predictions by moving only the scale and offset of the BatchNorm layers (a
          trained trunk's and the head's, ``batch_norm=True``); a trained trunk's statistics are then
          re-estimated once more.  A frozen pretrained trunk is left as it is: its head's BatchNorm
          (on the cached features) is what TENT moves.

        Adapt to a batch of a few hundred images from one site, and use the adapted copy for that
        site only: its predictions for an image depend on the images it was adapted to.  This
        estimator is left as it was.

        Parameters
        ----------
        X : array of images or sequence of image paths
            Unlabeled images of the new site (at least two).
        tent_steps : int, default=10
            TENT steps (one batch of ``batch_size`` images of X each, cycling over X); 0: AdaBN only.
        tent_learning_rate : float, default=1e-3
            Adam's learning rate for the TENT steps.

        Returns
        -------
        XrayCNNClassifier
            The adapted copy; ``adapted_to_`` is the number of images it was adapted to, ``adaptation_``
            what was done (``{"batch_norm_statistics": bool, "tent_steps": int}``).

        Examples
        --------
        >>> import numpy as np
        >>> from xrayest import XrayCNNClassifier
        >>> rng = np.random.default_rng(0)
        >>> X = rng.integers(0, 200, (20, 32, 32), dtype=np.uint8)
        >>> X_new = rng.integers(50, 255, (8, 32, 32), dtype=np.uint8)  # another site: brighter films
        >>> clf = XrayCNNClassifier("small_cnn", weights=None, image_size=32, epochs=1, random_state=0)
        >>> site = clf.fit(X, [0, 1] * 10).adapt(X_new, tent_steps=2)
        >>> site.adapted_to_, site.adaptation_, site.predict_proba(X_new).shape, hasattr(clf, "adapted_to_")
        (8, {'batch_norm_statistics': True, 'tent_steps': 2}, (8, 2), False)
        """
        import pickle

        from .adaptation import affine_batch_norm_weights, entropy_steps

        check_is_fitted(self, "head_")
        validate_arguments("adapt", tent_steps=tent_steps, tent_learning_rate=tent_learning_rate)
        if not is_adaptable(self):
            raise ValueError("adapt re-estimates the BatchNorm statistics of a trained trunk and moves BatchNorm "
                             "scales and offsets; this classifier's trunk is frozen or has no BatchNorm, and its head "
                             "has none (fit a from-scratch backbone, pass freeze_backbone=False, or batch_norm=True)")
        source = crop_source(as_image_source(X, warn_unit_range=True), self.crop)
        check_n_features(self, source, reset=False)
        if len(source) < 2:
            raise ValueError(f"adapt needs at least 2 images of the new site to estimate statistics; got {len(source)}")
        adapted = pickle.loads(pickle.dumps(self))  # a separate network: this estimator stays as it was
        trained = not adapted.trunk_.is_frozen and has_trainable_batch_norm(adapted.trunk_.model)
        steps = tent_steps if affine_batch_norm_weights(adapted.head_) or trained else 0
        rng = np.random.default_rng(self.random_state)
        with device_scope(self.device):
            if trained:
                packed = PackedImages.from_source(source, self.image_size_)
                everything = np.arange(len(source))
                recalibrate_batch_norm(adapted.trunk_.model, packed.batches(everything, self.batch_size))
                if steps:  # the images as packed for AdaBN: decoded (and cropped) once
                    entropy_steps(adapted.model_, (packed.batch(np.arange(a, b)) for a, b in
                                                   _cycled_batches(len(source), self.batch_size, steps, rng)),
                                  learning_rate=tent_learning_rate)
                    recalibrate_batch_norm(adapted.trunk_.model, packed.batches(everything, self.batch_size))
            elif steps:
                feats = adapted.trunk_.features(source, batch_size=self.batch_size, cache=estimator_cache(self))
                entropy_steps(adapted.head_, (feats[a:b] for a, b in
                                              _cycled_batches(len(source), self.batch_size, steps, rng)),
                              learning_rate=tent_learning_rate)
        adapted.adapted_to_ = len(source)
        adapted.adaptation_ = {"batch_norm_statistics": trained, "tent_steps": steps}
        return adapted

    # ------------------------------------------------------------------ saving
    def save(self, path):
        """Save to one ``.keras`` file (Keras model + parameters as JSON); see :func:`xrayest.load`."""
        from .persistence import write_model

        check_is_fitted(self, "head_")
        return write_model(path, self.model_, self.saved_meta())

    def saved_meta(self) -> dict:
        """What :meth:`save` writes beside the network: parameters, classes and fitted state, as plain data."""
        from .persistence import plain_params

        check_is_fitted(self, "head_")
        multilabel = bool(getattr(self, "multilabel_", False))
        # multi-label: the file lists the findings' column numbers; classes_ is rebuilt at load
        classes = np.arange(len(self.classes_)) if multilabel else np.asarray(self.classes_)
        return {
            "estimator": type(self).__name__,
            "params": plain_params(self.get_params(deep=False)),
            "classes": classes.tolist(),
            "classes_dtype": classes.dtype.str,
            "state": {"image_size_": list(self.image_size_), "history_": self.history_,
                      "frozen": self.trunk_.is_frozen, "cache_key": self.trunk_.cache_key,
                      "training_loop_": self.training_loop_, "training_inputs_": self.training_inputs_,
                      "multilabel_": multilabel, "precision_": getattr(self, "precision_", self.precision),
                      **({"findings_": list(self.findings_)} if multilabel else {})},
        }


@dataclass(frozen=True)
class PhaseInputs:
    """What one training phase trains on; ``kind`` is what ``training_inputs_`` reports.

    Attributes
    ----------
    kind : {"features", "cut", "images"}
        The frozen trunk's cached features (the head trains alone); the cached output of a fine-tuned
        trunk's frozen front (its trainable back part and the head train); the images (augmentation,
        trunk and head train, or the head on a frozen trunk behind augmentation).
    data : ndarray or PackedImages
        Feature rows, or the images held compactly and streamed in batches.
    validation : (inputs, encoded labels) or None
        ``validation_data`` in the same form as ``data``.
    below : keras.Model or None
        What sits under the head: the cut's back part, or the trunk's model for images.
    feature_shape : tuple
        The shape of one input of the head.
    """

    kind: str
    data: object
    validation: object
    below: object
    feature_shape: tuple


@dataclass(frozen=True)
class _PhaseData:
    x: object
    y: object
    sample_weight: object
    validation: object
    train_rows: np.ndarray


def is_adaptable(estimator) -> bool:
    """Whether ``estimator.adapt`` can adapt it: a fitted XrayCNNClassifier whose trained trunk or head has
    BatchNorm layers, or an ensemble or cascade holding one."""
    from .adaptation import affine_batch_norm_weights

    if isinstance(estimator, XrayCNNClassifier):
        trunk, head = getattr(estimator, "trunk_", None), getattr(estimator, "head_", None)
        if trunk is None or head is None:
            return False
        return bool((not trunk.is_frozen and has_trainable_batch_norm(trunk.model))
                    or affine_batch_norm_weights(head))
    members = getattr(estimator, "estimators_", None)
    members = members.values() if isinstance(members, dict) else members or []
    return any(is_adaptable(member) for member in members)


def _cycled_batches(n: int, batch_size: int, steps: int, rng):
    """``steps`` ``(start, stop)`` spans of batches over rows ``0..n`` (contiguous, in a shuffled order of the
    batches, cycling when there are fewer batches than steps)."""
    spans = [(a, min(a + batch_size, n)) for a in range(0, n, batch_size)]
    order = []
    while len(order) < steps:
        order += list(rng.permutation(len(spans)))
    return [spans[k] for k in order[:steps]]


def _validation_source(validation_data, targets, crop):
    """``validation_data`` as ``(image source, labels encoded as y's)``, or None."""
    if validation_data is None:
        return None
    source = crop_source(as_image_source(validation_data[0]), crop)
    return source, targets.encode(validation_data[1], len(source))


def _stack(bottom, head):
    """``head`` on top of ``bottom`` as one Keras model."""
    import keras

    return keras.Model(bottom.input, head(bottom.output), name="cut_and_head")


def _compose(trunk_model, head, augment=None, seed=None):
    """``images -> [augmentation] -> trunk -> head`` as one Keras model."""
    import keras

    images = keras.Input((None, None, 3), name="images")
    x = images
    if augment:
        augmentation = build_augmentation(augment, seed=seed)
        # a backbone of one gray channel: augment that channel, not three equal ones (a third of the work)
        x = (OnGray(augmentation, name="augment_gray") if _reads_gray(trunk_model) else augmentation)(images)
    return keras.Model(images, head(trunk_model(x)), name="xray_cnn")


def _reads_gray(trunk_model) -> bool:
    """Whether the trunk's preprocessing averages the input's channels into one."""
    try:
        return trunk_model.get_layer("preprocess").channels == 1
    except (ValueError, AttributeError):
        return False


def from_saved(model, meta: dict, path, device="auto") -> XrayCNNClassifier:
    """The fitted classifier of a network and the metadata :meth:`XrayCNNClassifier.saved_meta` wrote.

    ``path`` names the file in error messages; the network already lives on ``device``.
    """
    import inspect

    from .persistence import CorruptModelError, restored_params

    def bad(problem):
        raise CorruptModelError(f"corrupt or incompatible model file {path}: {problem}")

    defaults = {k: p.default for k, p in inspect.signature(XrayCNNClassifier).parameters.items()}
    try:
        params = restored_params(meta["params"], defaults)
    except ValueError as exc:
        bad(str(exc))
    unknown = sorted(set(params) - set(XrayCNNClassifier._parameter_constraints))
    if unknown:
        bad(f"unknown parameters {unknown}")
    for key in ("hidden_units", "image_size", "dropout"):
        if isinstance(params.get(key), list):
            params[key] = tuple(params[key])
    if params.get("backbone") is None:
        params["backbone"] = "custom"
    params["device"] = device
    estimator = XrayCNNClassifier(**params)
    try:
        validate_params(estimator)
    except ValueError as exc:
        bad(exc)
    state = meta["state"]
    estimator.classes_ = np.asarray(meta["classes"], dtype=np.dtype(meta["classes_dtype"]))
    if state.get("multilabel_", False):  # one array of classes per finding, as fit sets it
        estimator.classes_ = [np.array([0, 1]) for _ in estimator.classes_]
        estimator.findings_ = [str(f) for f in state.get("findings_", range(len(estimator.classes_)))]
    names = [layer.name for layer in model.layers]
    if "trunk" not in names or "head" not in names:
        bad(f"the network has no 'trunk' and 'head' (layers: {names})")
    estimator.multilabel_ = bool(state.get("multilabel_", False))
    n_outputs = output_count(len(estimator.classes_), estimator.multilabel_)
    if tuple(model.output_shape[1:]) != (n_outputs,):
        bad(f"{len(estimator.classes_)} classes but the network has {model.output_shape[-1]} outputs")
    estimator.image_size_ = tuple(state["image_size_"])
    estimator.history_ = state.get("history_", {})
    estimator.training_loop_ = state.get("training_loop_", [])
    estimator.training_inputs_ = state.get("training_inputs_", [])
    # files written before precision_ was saved ran in their precision parameter (then never "auto")
    estimator.precision_ = state.get("precision_", params.get("precision", "float32"))
    estimator.training_plan_ = None  # not saved: the file holds the trained network, not how it trained
    # Files of format 1 named these backbone_frozen_ and _feature_config.
    frozen = state.get("frozen", state.get("backbone_frozen_", True))
    estimator.trunk_ = Trunk.from_model(model.get_layer("trunk"), is_frozen=frozen,
                                        cache_key=state.get("cache_key", state.get("_feature_config")))
    estimator.head_ = model.get_layer("head")
    estimator._model = model
    return estimator
