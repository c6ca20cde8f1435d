"""XrayCNNClassifier: a pretrained (or from-scratch) CNN with a dense head, as a scikit-learn classifier."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.metrics import accuracy_score
from sklearn.utils.validation import check_is_fitted

from . import fit_phases
from .adaptation import adapt_networks, check_adaptable, fit_then_adapt, is_adaptable
from .atomic import all_or_nothing
from .augmentation import augment_config
from .backbones import backbone_spec_or_model, image_size_for
from .cache import estimator_cache
from .classifier_saving import classifier_meta, pickled_state, restored_classifier, unpickled_state
from .device import device_scope, resolve_precision, check_cpu_precision
from .inputs import as_image_source, check_n_features
from .lungs import crop_source
from .multilabel import masked_subset_accuracy
from .optimizers import check_optimizer_learning_rate
from .prediction import embedding_head, network_outputs, two_columns
from .params import constraints_for, validate_arguments, validate_param, validate_params
from .targets import check_groups, dense_target, fit_targets, unlabeled_rows

__all__ = ["XrayCNNClassifier", "from_saved", "is_adaptable"]  # is_adaptable: xrayest.adaptation's


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
            return fit_then_adapt(self, X, y, rows, sample_weight=sample_weight, validation_data=validation_data,
                                  groups=groups)
        validate_params(self)
        check_optimizer_learning_rate(self.optimizer, self.learning_rate)
        check_cpu_precision(self.precision, self.device)
        precision = resolve_precision(self.precision, self.device)
        spec = backbone_spec_or_model(self.backbone)
        image_size = image_size_for(spec, self.image_size)
        augment = augment_config(self.augment)
        plan = fit_phases.training_plan(self, spec, augment)
        source = crop_source(as_image_source(X, warn_unit_range=True), self.crop)
        targets = fit_targets(y, len(source), class_weight=self.class_weight, sample_weight=sample_weight)
        groups = None if groups is None else check_groups(groups, len(source))
        check_n_features(self, source, reset=True)
        validation = fit_phases.validation_source(validation_data, targets, self.crop)
        split = fit_phases.validation_split(self, targets, groups, validation)
        self.classes_, self.image_size_, self.training_plan_ = targets.classes, image_size, plan
        self.precision_, self.multilabel_ = precision, targets.multilabel
        if targets.multilabel:  # a DataFrame's column names, else the column numbers
            self.findings_ = [str(c) for c in getattr(y, "columns", range(len(targets.classes)))]
        with device_scope(self.device):
            fitted = fit_phases.train_plan(self, plan, spec, image_size, source, validation, augment, targets, split,
                                           estimator_cache(self))
        self.trunk_, self.head_, self._model = fitted.trunk, fitted.head, fitted.model
        self.history_, self.training_loop_, self.training_inputs_ = fitted.history, fitted.loops, fitted.inputs
        return self

    # ------------------------------------------------------------------ the fitted network
    @property
    def model_(self):
        """The composed model ``images -> trunk -> head`` (assembled on first access when not stored)."""
        check_is_fitted(self, "head_")  # NotFittedError is an AttributeError: hasattr(clf, "model_") is False
        if self._model is None:
            with device_scope(self.device):
                self._model = fit_phases.compose(self.trunk_.model, self.head_)
        return self._model

    @property
    def backbone_(self):
        """The backbone model inside the trunk."""
        check_is_fitted(self, "trunk_")
        return self.trunk_.backbone

    def __getstate__(self):
        return pickled_state(self.__dict__)

    def __setstate__(self, state):
        self.__dict__.update(unpickled_state(state))

    # ------------------------------------------------------------------ prediction
    def _outputs(self, X, head, tta=0):
        """``head`` on the trunk's features of X (:func:`xrayest.prediction.network_outputs`)."""
        check_is_fitted(self, "head_")
        source = crop_source(as_image_source(X, warn_unit_range=True), self.crop)
        check_n_features(self, source, reset=False)
        with device_scope(self.device):
            return network_outputs(self, source, head, tta)

    def predict_proba(self, X):
        """Class probabilities, shape ``(n_samples, n_classes)``, columns in ``classes_`` order.

        Multi-label: the probability of each finding, ``(n_samples, n_findings)`` (rows need not sum to 1).
        """
        check_is_fitted(self, "head_")
        validate_param(self, "tta")  # set_params(tta=...) after fit reaches here unchecked
        return two_columns(self._outputs(X, self.head_, tta=self.tta), getattr(self, "multilabel_", False))

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
        check_is_fitted(self, "head_")
        return self._outputs(X, embedding_head(self.head_))

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

        check_is_fitted(self, "head_")
        validate_arguments("adapt", tent_steps=tent_steps, tent_learning_rate=tent_learning_rate)
        source = crop_source(as_image_source(X, warn_unit_range=True), self.crop)
        check_n_features(self, source, reset=False)
        check_adaptable(self, len(source))
        adapted = pickle.loads(pickle.dumps(self))  # a separate network: this estimator stays as it was
        with device_scope(self.device):
            done = adapt_networks(adapted.trunk_, adapted.head_, lambda: adapted.model_, source,
                                  image_size=self.image_size_, batch_size=self.batch_size, tent_steps=tent_steps,
                                  learning_rate=tent_learning_rate, seed=self.random_state,
                                  cache=estimator_cache(self))
        adapted.adapted_to_, adapted.adaptation_ = len(source), done
        return adapted

    # ------------------------------------------------------------------ saving
    def save(self, path):
        """Save to one ``.keras`` file (Keras model + parameters as JSON); see :func:`xrayest.load`."""
        from .persistence import write_model

        check_is_fitted(self, "head_")
        return write_model(path, self.model_, self.saved_meta())

    def saved_meta(self) -> dict:
        """What :meth:`save` writes beside the network: parameters, classes and fitted state, as plain data."""
        return classifier_meta(self)


def from_saved(model, meta: dict, path, device="auto") -> XrayCNNClassifier:
    """The fitted classifier of a network and the metadata :meth:`XrayCNNClassifier.saved_meta` wrote
    (:func:`xrayest.classifier_saving.restored_classifier`).

    ``path`` names the file in error messages; the network already lives on ``device``.
    """
    return restored_classifier(XrayCNNClassifier, model, meta, path, device)
