"""Saving and loading fitted estimators safely.

A saved model is one ``.keras`` file: the Keras archive of ``model_`` plus an
``xrayest.json`` entry holding the estimator's parameters, classes and fitted state as
plain JSON.  Loading uses Keras' ``safe_mode`` (no code from the file is run) and never
unpickles anything.  Saving writes a temporary file beside the target and renames it
over the old one, so a crash mid-save never leaves a truncated model behind.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["save", "load", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_META_ENTRY = "xrayest.json"
_STATE = ("image_size_", "backbone_frozen_", "n_classes_", "n_outputs_", "n_outputs_expected_",
          "target_type_", "history_", "_feature_config", "_random_state", "_train_on_features")


def _jsonable(value):
    try:
        json.dumps(value)
        return True
    except TypeError:
        return False


def save(estimator, path) -> Path:
    """Save a fitted :class:`~xrayest.XrayCNNClassifier` to ``path`` (``.keras`` is appended if missing).

    Parameters that are not plain data (callbacks, a custom ``keras.Model`` backbone,
    an optimizer instance) are recorded by name only; the fitted network itself is
    saved whole, so predictions are unaffected.
    """
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(estimator, "model_")
    path = Path(path)
    if path.suffix != ".keras":
        path = path.with_name(path.name + ".keras")
    params = {}
    for key, value in estimator.get_params(deep=False).items():
        value = list(value) if isinstance(value, tuple) else value
        params[key] = value if _jsonable(value) else {"__not_saved__": repr(value)[:200]}
    classes = np.asarray(estimator.classes_)
    meta = {
        "format_version": FORMAT_VERSION,
        "estimator": type(estimator).__name__,
        "params": params,
        "classes": classes.tolist(),
        "classes_dtype": classes.dtype.str,
        "state": {k: (list(v) if isinstance(v, tuple) else v) for k in _STATE
                  if (v := getattr(estimator, k, None)) is not None and _jsonable(list(v) if isinstance(v, tuple) else v)},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".keras.tmp")
    os.close(fd)
    try:
        estimator.model_.save(tmp.removesuffix(".tmp"))  # keras insists on the .keras suffix
        os.replace(tmp.removesuffix(".tmp"), tmp)
        with zipfile.ZipFile(tmp, "a") as archive:
            archive.writestr(_META_ENTRY, json.dumps(meta, indent=1))
        os.replace(tmp, path)
    except BaseException:
        for leftover in (tmp, tmp.removesuffix(".tmp")):
            Path(leftover).unlink(missing_ok=True)
        raise
    return path


def _read_meta(path: Path) -> dict:
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read(_META_ENTRY))
    except FileNotFoundError:
        raise
    except KeyError:
        raise ValueError(f"{path} is a Keras file but not an xrayest model (no {_META_ENTRY} inside)") from None
    except (zipfile.BadZipFile, OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a readable xrayest model file: {exc}") from exc


def load(path, device="auto"):
    """Load a model written by :func:`save`; it runs on ``device`` (a GPU-saved model loads on CPU).

    Returns
    -------
    XrayCNNClassifier
        Fitted, ready to ``predict``; ``fit`` retrains from its saved parameters.
    """
    import keras
    from scikeras.utils.transformers import ClassifierLabelEncoder

    from . import layers  # noqa: F401  (registers the custom layers for safe_mode loading)
    from .classifier import XrayCNNClassifier
    from .device import device_scope

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    meta = _read_meta(path)
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path} was written by a newer xrayest (format {meta['format_version']}); upgrade xrayest")
    params = {k: (None if isinstance(v, dict) and "__not_saved__" in v else v) for k, v in meta["params"].items()}
    for key in ("hidden_units", "image_size", "dropout"):
        if isinstance(params.get(key), list):
            params[key] = tuple(params[key])
    if params.get("backbone") is None:
        params["backbone"] = "custom"
    params["device"] = device
    estimator = XrayCNNClassifier(**params)
    with device_scope(device):
        estimator.model_ = keras.saving.load_model(path, compile=False, safe_mode=True)
    estimator.classes_ = np.asarray(meta["classes"], dtype=np.dtype(meta["classes_dtype"]))
    for key, value in meta["state"].items():
        setattr(estimator, key, tuple(value) if key == "image_size_" else value)
    estimator.y_dtype_, estimator.y_ndim_ = estimator.classes_.dtype, 1
    estimator.target_encoder_ = ClassifierLabelEncoder(loss=None).fit(estimator.classes_)
    estimator.feature_encoder_ = estimator.feature_encoder.fit(None)
    estimator._initialize_callbacks()
    return estimator
