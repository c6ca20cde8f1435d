"""A fitted XrayCNNClassifier as a file's contents, and back: the metadata beside its network, and its
pickled state.

:func:`classifier_meta` is what ``XrayCNNClassifier.save`` writes beside the Keras network (parameters,
classes and fitted state, as plain data); :func:`restored_classifier` rebuilds the fitted estimator from
a loaded network and that metadata, checking each part (:class:`xrayest.persistence.CorruptModelError`
names the file and what is wrong).  The file format itself is :mod:`xrayest.persistence`'s.
"""

from __future__ import annotations

import inspect

import numpy as np
from sklearn.utils.validation import check_is_fitted

from .params import validate_params
from .persistence import CorruptModelError, plain_params, restored_params
from .targets import output_count
from .trunk import Trunk

__all__ = ["classifier_meta", "restored_classifier", "pickled_state", "unpickled_state"]


def classifier_meta(est) -> dict:
    """What ``est.save`` writes beside the network: parameters, classes and fitted state, as plain data."""
    check_is_fitted(est, "head_")
    multilabel = bool(getattr(est, "multilabel_", False))
    # multi-label: the file lists the findings' column numbers; classes_ is rebuilt at load
    classes = np.arange(len(est.classes_)) if multilabel else np.asarray(est.classes_)
    return {
        "estimator": type(est).__name__,
        "params": plain_params(est.get_params(deep=False)),
        "classes": classes.tolist(),
        "classes_dtype": classes.dtype.str,
        "state": {"image_size_": list(est.image_size_), "history_": est.history_,
                  "frozen": est.trunk_.is_frozen, "cache_key": est.trunk_.cache_key,
                  "training_loop_": est.training_loop_, "training_inputs_": est.training_inputs_,
                  "multilabel_": multilabel, "precision_": getattr(est, "precision_", est.precision),
                  **({"findings_": list(est.findings_)} if multilabel else {})},
    }


def restored_classifier(cls, model, meta: dict, path, device="auto"):
    """The fitted ``cls`` (XrayCNNClassifier) of a network and the metadata :func:`classifier_meta` wrote.

    ``path`` names the file in error messages; the network already lives on ``device``.
    """
    def bad(problem):
        raise CorruptModelError(f"corrupt or incompatible model file {path}: {problem}")

    defaults = {k: p.default for k, p in inspect.signature(cls).parameters.items()}
    try:
        params = restored_params(meta["params"], defaults)
    except ValueError as exc:
        bad(str(exc))
    unknown = sorted(set(params) - set(cls._parameter_constraints))
    if unknown:
        bad(f"unknown parameters {unknown}")
    for key in ("hidden_units", "image_size", "dropout"):
        if isinstance(params.get(key), list):
            params[key] = tuple(params[key])
    if params.get("backbone") is None:
        params["backbone"] = "custom"
    params["device"] = device
    estimator = cls(**params)
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


def pickled_state(state: dict) -> dict:
    """A classifier's ``__dict__`` as it pickles: a trunk that can be rebuilt from its config drops the
    composed model (recomposed from the rebuilt trunk and the head); otherwise trunk and head are layers
    of the model, which is pickled once and the two found in it again (:func:`unpickled_state`)."""
    state = dict(state)
    model, trunk = state.get("_model"), state.get("trunk_")
    if model is not None and trunk is not None:
        if trunk.config is not None:
            state["_model"] = None
        else:
            state["trunk_"] = ("layer of _model", trunk.is_frozen, trunk.cache_key)
            state["head_"] = None
    return state


def unpickled_state(state: dict) -> dict:
    """The ``__dict__`` of a classifier from what :func:`pickled_state` made."""
    trunk = state.get("trunk_")
    if isinstance(trunk, tuple):
        _, is_frozen, cache_key = trunk
        state = {**state, "trunk_": Trunk.from_model(state["_model"].get_layer("trunk"), is_frozen=is_frozen,
                                                      cache_key=cache_key),
                 "head_": state["_model"].get_layer("head")}
    return state
