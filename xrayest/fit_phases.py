"""The phases of a classifier's fit: what each trains on, the Keras model it trains, and the run.

:func:`train_plan` walks a fit's training plan (:mod:`xrayest.training`) phase by phase, from the
trunk the plan starts with (:func:`make_trunk`); for each phase

1. :func:`phase_inputs`: what the phase trains on (:class:`PhaseInputs`): the frozen trunk's cached
   features, the cached output of a fine-tuned trunk's frozen front (the cut), or the images;
2. :func:`trainee`: the Keras model that trains: the head, the cut's back part + head, or
   augmentation + trunk + head (:func:`compose`);
3. :func:`train_phase`: compile it and run the phase's epochs on the split's rows
   (:func:`phase_data`), with the callbacks the estimator's parameters ask for.

Each function reads the estimator's parameters (``est``) and changes nothing on it; what a phase
learned comes back as return values, which ``fit`` records.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .augmentation import build_augmentation
from .callbacks import EpochTimer, RecalibratedValidation, fit_callbacks
from .heads import build_head, head_loss
from .inputs import as_image_source
from .layers import OnGray
from .lungs import crop_source
from .optimizers import build_optimizer
from .pipeline import PackedImages, image_dataset
from .seeding import seeded
from .training import (choose_loop, has_trainable_batch_norm, plan_training, recalibrate_batch_norm, run_phase,
                       stratified_split)
from .trunk import Trunk, pooling_in_trunk

__all__ = ["PhaseInputs", "PhaseData", "Fitted", "training_plan", "train_plan", "make_trunk", "phase_inputs",
           "make_head", "trainee", "validation_split", "train_phase", "phase_data", "compose", "validation_source"]


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
class PhaseData:
    """What one phase's run reads: arrays (features) or ``tf.data`` datasets (images, targets inside)."""

    x: object
    y: object
    sample_weight: object
    validation: object
    train_rows: np.ndarray


@dataclass(frozen=True)
class Fitted:
    """What :func:`train_plan` trained: the trunk, the head and, when a phase trained on images, the composed
    model; the epochs' metrics (``history_``), each phase's loop and what it trained on."""

    trunk: Trunk
    head: object
    model: object
    history: dict
    loops: list
    inputs: list


def training_plan(est, spec, augment):
    """The phases ``est``'s parameters ask for (:func:`xrayest.training.plan_training`), for the backbone ``spec``."""
    return plan_training(pretrained=getattr(spec, "pretrained", True), freeze_backbone=est.freeze_backbone,
                         fine_tune=est.fine_tune, fine_tune_epochs=est.fine_tune_epochs, augmented=augment is not None,
                         epochs=est.epochs, learning_rate=est.learning_rate,
                         fine_tune_learning_rate=est.fine_tune_learning_rate)


def train_plan(est, plan, spec, image_size, source, validation, augment, targets, split, cache) -> Fitted:
    """Train every phase of ``plan`` in turn on ``source`` (``split``'s rows), from the trunk of ``spec``.

    A phase that trains on images ends with the moving BatchNorm statistics of the trained trunk made
    exact on the training images (:func:`xrayest.training.recalibrate_batch_norm`).  Call inside the
    estimator's device scope.
    """
    trunk = make_trunk(est, plan, spec, image_size)
    frozen_key = trunk.cache_key if cache is not None else None
    head = model = packed = None
    history, loops, kinds = {}, [], []
    for phase in plan.phases:
        if phase.unfreeze:
            trunk = trunk.unfrozen(est.fine_tune)
        inputs = phase_inputs(est, phase, trunk, frozen_key, source, validation, image_size, augment, cache, packed)
        packed = inputs.data if inputs.kind == "images" else packed
        head = make_head(est, inputs.feature_shape, targets) if head is None else head
        trained = trainee(est, inputs, head, augment)
        model = trained if inputs.kind == "images" else model
        epochs, loop, train_rows = train_phase(est, trained, phase, inputs, targets, split,
                                               len(history.get("loss", [])))
        for key, values in epochs.items():
            history.setdefault(key, []).extend(values)
        if inputs.kind == "images":
            recalibrate_batch_norm(trunk.model, packed.batches(train_rows, est.batch_size))
        loops.append(loop)
        kinds.append(inputs.kind)
    return Fitted(trunk, head, model, history, loops, kinds)


def make_trunk(est, plan, spec, image_size) -> Trunk:
    """The trunk ``plan`` starts from, for the backbone ``spec`` (resolved once, at the start of fit)."""
    if plan.trunk == "frozen":
        return Trunk.frozen(spec, est.weights, image_size, pooling=pooling_in_trunk(est.pooling, est.batch_norm),
                            seed=est.random_state, precision=est.precision_, fold_batch_norm=plan.fold_batch_norm,
                            cache=est.cache_features)
    fine_tune = est.fine_tune if plan.trunk == "fine_tune" else None
    return Trunk.trainable(spec, est.weights, image_size, seed=est.random_state, precision=est.precision_,
                           fine_tune=fine_tune)


def phase_inputs(est, phase, trunk, frozen_key, source, validation, image_size, augment, cache,
                 packed) -> PhaseInputs:
    """What ``phase`` trains on (:class:`PhaseInputs`): the trunk's cached features, the output of a
    fine-tuned trunk's frozen front (the cut), or the images themselves (``packed`` once an earlier
    phase decoded them)."""
    # Fine-tuning without augmentation: the frozen part's output at the cut is as fixed as frozen
    # features, so it is computed once (and cached) and each epoch runs the rest only.
    cut = trunk.cut(frozen_key) if (est.fine_tune is not None and not phase.on_features
                                    and augment is None and est.cache_features) else None
    if phase.on_features or cut:
        front = trunk if phase.on_features else cut[0]
        data = front.features(source, batch_size=est.batch_size, cache=cache, verbose=est.verbose)
        val = validation and (front.features(validation[0], batch_size=est.batch_size, cache=cache),
                              validation[1])
        if phase.on_features:
            return PhaseInputs("features", data, val, None, data.shape[1:])
        return PhaseInputs("cut", data, val, cut[1], trunk.model.output_shape[1:])
    # images decoded once into uint8 (PackedImages), streamed in batches
    packed = packed if packed is not None else PackedImages.from_source(source, image_size)
    val = validation and (PackedImages.from_source(validation[0], image_size), validation[1])
    return PhaseInputs("images", packed, val, trunk.model, trunk.model.output_shape[1:])


def make_head(est, feature_shape, targets):
    """The head for ``targets`` on inputs of ``feature_shape``, its weights drawn from ``random_state``."""
    with seeded(est.random_state):  # the head's weights do not depend on what was built before
        return build_head(feature_shape, targets.n_outputs, pooling=est.pooling, hidden_units=est.hidden_units,
                          dropout=est.dropout, batch_norm=est.batch_norm, l2=est.l2, multilabel=targets.multilabel,
                          seed=est.random_state)


def trainee(est, inputs: PhaseInputs, head, augment):
    """The Keras model a phase trains: the head, the cut's back part + head, or augmentation + trunk + head."""
    if inputs.kind == "features":
        return head
    if inputs.kind == "cut":
        return _stack(inputs.below, head)
    with seeded(est.random_state):
        return compose(inputs.below, head, augment, est.random_state)


def validation_split(est, targets, groups, validation):
    """The rows every phase trains and validates on, drawn once per fit: ``(train_rows, val_rows)``.

    ``validation_split`` holds rows out, stratified (whole ``groups`` when given; a class with one
    image stays in training, with a warning), unless validation data was given (``val_rows`` None).
    """
    if validation is not None or not est.validation_split:
        return np.arange(len(targets.encoded)), None
    return stratified_split(targets.encoded, float(est.validation_split), est.random_state, groups=groups,
                            class_names=targets.classes)


def train_phase(est, model, phase, inputs: PhaseInputs, targets, split, initial_epoch: int):
    """Compile ``model`` for ``phase`` and train it on ``split``'s rows from epoch ``initial_epoch``.

    Returns ``(history, loop, train_rows)``: the epochs' metrics, the training loop that ran, and the
    rows trained on.
    """
    loss, metrics = head_loss(targets.n_outputs, targets.multilabel)
    # float16 gradients of the backbone underflow without loss scaling; a head on features is float32
    loss_scaling = est.precision_ == "float16" and inputs.kind != "features"
    model.compile(optimizer=build_optimizer(est.optimizer, phase.learning_rate, loss_scaling=loss_scaling),
                  loss=loss, metrics=metrics, jit_compile=False)
    data = phase_data(est, inputs, targets, split)
    validation = data.validation
    scored = []
    if validation is not None and inputs.kind == "images" and has_trainable_batch_norm(inputs.below):
        # validation scored after recalibrating BatchNorm on up to 1,024 training images, not by Keras
        rows = data.train_rows
        sample = rows[np.random.default_rng(est.random_state).permutation(len(rows))[:1024]]
        scored = [RecalibratedValidation(inputs.below, lambda: inputs.data.batches(sample, est.batch_size),
                                         validation)]
        has_validation, validation = True, None
    else:
        has_validation = validation is not None
    callbacks = [EpochTimer(), *scored,
                 *fit_callbacks(early_stopping=est.early_stopping, reduce_lr=est.reduce_lr,
                                lr_schedule=est.lr_schedule, has_validation=has_validation,
                                epochs=initial_epoch + phase.epochs),
                 *(est.callbacks or [])]
    loop = choose_loop(est.training_loop, phase, callbacks)
    history = run_phase(model, data.x, data.y, loop=loop, epochs=phase.epochs, initial_epoch=initial_epoch,
                        batch_size=est.batch_size, sample_weight=data.sample_weight, validation=validation,
                        callbacks=callbacks, seed=est.random_state, verbose=est.verbose)
    return history, loop, data.train_rows


def phase_data(est, inputs: PhaseInputs, targets, split) -> PhaseData:
    """What one phase trains and validates on: feature arrays, or image batches streamed from PackedImages.

    ``split``: the training and held-out rows (:func:`validation_split`); held-out rows None when
    validation data was given.  For images, ``x`` and ``validation`` are ``tf.data`` datasets
    (targets and weights inside) and ``y``, ``sample_weight`` are None.
    """
    shaped = targets.shaped
    y, weights, validation = targets.encoded, targets.weights, inputs.validation
    train_rows, val_rows = split
    if inputs.kind == "images":
        stream = dict(batch_size=est.batch_size, seed=est.random_state)
        x = image_dataset(inputs.data, train_rows, shaped(y), weights, shuffle=True, **stream)
        if val_rows is not None:
            validation = image_dataset(inputs.data, val_rows, shaped(y), weights, shuffle=False, **stream)
        elif validation is not None:
            val_images, val_y = validation
            validation = image_dataset(val_images, np.arange(len(val_y)), shaped(val_y), shuffle=False, **stream)
        return PhaseData(x, None, None, validation, train_rows)
    features = inputs.data
    if val_rows is not None:
        validation = (features[val_rows], shaped(y[val_rows]), *(() if weights is None else (weights[val_rows],)))
    elif validation is not None:
        validation = (validation[0], shaped(validation[1]))
    return PhaseData(features[train_rows], shaped(y[train_rows]), None if weights is None else weights[train_rows],
                     validation, train_rows)


def validation_source(validation_data, targets, crop):
    """``validation_data`` as ``(image source, labels encoded as y's)``, or None."""
    if validation_data is None:
        return None
    source = crop_source(as_image_source(validation_data[0]), crop)
    return source, targets.encode(validation_data[1], len(source))


def _stack(bottom, head):
    """``head`` on top of ``bottom`` as one Keras model."""
    import keras

    return keras.Model(bottom.input, head(bottom.output), name="cut_and_head")


def compose(trunk_model, head, augment=None, seed=None):
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
