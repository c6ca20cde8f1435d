"""What a fitted classifier's network outputs for images: from the frozen trunk's cached features, or
through the composed model, with test-time augmentation.

:func:`network_outputs` is what ``XrayCNNClassifier`` ``predict_proba`` and ``transform`` call; a
frozen trunk without TTA reads the feature cache (:mod:`xrayest.cache`) and runs only the head, which
gives what the composed model gives.  Images are read a chunk at a time, so memory stays bounded for
any number of files.
"""

from __future__ import annotations

import warnings

import numpy as np

from .augmentation import AugmentedCopies, augment_config
from .cache import estimator_cache
from .head_training import predict_head
from .heads import EMBEDDING_LAYER
from .inputs import chunk_size

__all__ = ["network_outputs", "embedding_head", "two_columns"]


def network_outputs(est, source, head, tta: int = 0) -> np.ndarray:
    """``head`` applied to the trunk's features of the images of ``source`` (``est``: a fitted classifier,
    read only): from the cache for a frozen trunk, else through ``est.model_``.

    ``tta`` > 0 averages the outputs over the images and ``tta`` augmented copies (full forward passes).
    Call inside the estimator's device scope.
    """
    import keras

    trunk = est.trunk_
    if trunk.is_frozen and not tta:
        feats = trunk.features(source, batch_size=est.batch_size, cache=estimator_cache(est), verbose=est.verbose)
        if feats.shape[1:] != tuple(head.input_shape[1:]):  # cached entries of another shape: recompute
            warnings.warn(f"cached features of shape {feats.shape[1:]} do not fit the head "
                          f"{tuple(head.input_shape[1:])}; recomputing them", RuntimeWarning, stacklevel=4)
            feats = trunk.features(source, batch_size=est.batch_size, cache=None)
        return predict_head(head, feats, est.batch_size)
    model = est.model_ if head is est.head_ else keras.Model(est.model_.input, head(trunk.model(est.model_.input)))
    copies = tta and AugmentedCopies(augment_config(est.augment) or augment_config("xray"), seed=est.random_state)
    chunk = chunk_size(est.batch_size)  # files are read a chunk at a time: bounded memory
    out = []
    for i in range(0, len(source), chunk):
        images = source.batch(i, i + chunk, est.image_size_)
        total = np.asarray(model.predict(images, batch_size=est.batch_size, verbose=0), np.float64 if tta else None)
        for k in range(tta):  # test-time augmentation: the mean over the image and its augmented copies
            total = total + model.predict(copies(images, k), batch_size=est.batch_size, verbose=0)
        out.append(total / (tta + 1) if tta else total)
    return np.concatenate(out) if out else np.zeros((0, *model.output_shape[1:]), np.float32)


def embedding_head(head):
    """The part of ``head`` up to its last hidden layer (the embedding), or its pooled input when it has none."""
    import keras

    names = [layer.name for layer in head.layers]
    layer = EMBEDDING_LAYER if EMBEDDING_LAYER in names else names[-2]
    return keras.Model(head.input, head.get_layer(layer).output)


def two_columns(raw: np.ndarray, multilabel: bool) -> np.ndarray:
    """Probabilities as float64 columns per class: one sigmoid output of a binary head becomes two columns."""
    raw = raw.astype(np.float64)
    if raw.shape[1] == 1 and not multilabel:
        raw = np.column_stack([1.0 - raw[:, 0], raw[:, 0]])
    return raw
