"""The saved-model file format: one ``.keras`` archive plus an ``xrayest.json`` entry.

The archive is Keras' own save of the composed model; ``xrayest.json`` holds the
estimator's parameters, classes and fitted state as plain JSON.  Reading uses Keras'
``safe_mode`` (no code from the file is run) and never unpickles anything.  Writing goes
to a temporary file beside the target, renamed over it at the end, so a crash mid-save
never leaves a truncated model behind.

This module knows the file, not the estimators: :meth:`xrayest.XrayCNNClassifier.save`
and :func:`xrayest.load` decide what goes into it.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["write_model", "read_model", "check_meta", "CorruptModelError", "plain_params", "restored_params",
           "NOT_SAVED", "FORMAT_VERSION", "wrapped_network"]

FORMAT_VERSION = 2  # 2: state holds "frozen" and "cache_key" (1 named them backbone_frozen_, _feature_config)
_META_ENTRY = "xrayest.json"


def _jsonable(value) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def plain_params(params: dict) -> dict:
    """Parameters as JSON: tuples become lists, a Keras optimizer instance its Keras config; what
    is not plain data is recorded by ``repr`` only (:func:`restored_params` reads both back).

    Callbacks and a custom ``keras.Model`` backbone cannot be written as data; the fitted
    network itself is saved whole, so predictions are unaffected.
    """
    import keras

    out = {}
    for key, value in params.items():
        value = list(value) if isinstance(value, tuple) else value
        if isinstance(value, keras.optimizers.Optimizer):
            out[key] = {"__keras_optimizer__": keras.optimizers.serialize(value)}
        else:
            out[key] = value if _jsonable(value) else {"__not_saved__": repr(value)[:200]}
    return out


# What a parameter :func:`plain_params` could not write becomes at load (any other: its default).
NOT_SAVED = {"callbacks": None, "backbone": "custom"}


def restored_params(params: dict, defaults: dict) -> dict:
    """:func:`plain_params`' output read back: an optimizer rebuilt from its config, a parameter
    written by ``repr`` only set to :data:`NOT_SAVED`'s value or else its entry in ``defaults``.

    An optimizer of a class Keras does not know (a custom one whose package is not imported) is a
    ``ValueError`` naming the class, here rather than at the next ``fit``.
    """
    import keras

    out = {}
    for key, value in params.items():
        if isinstance(value, dict) and "__keras_optimizer__" in value:
            config = value["__keras_optimizer__"]
            try:
                value = keras.optimizers.deserialize(config)
            except (ValueError, TypeError, KeyError) as exc:
                value = exc
            if not isinstance(value, keras.optimizers.Optimizer):  # Keras hands back the unknown name
                name = config.get("class_name") if isinstance(config, dict) else config
                module = config.get("module") if isinstance(config, dict) else None
                raise ValueError(f"its optimizer is of class {name!r}{f' (module {module})' if module else ''}, "
                                 "which Keras does not know: import the package that defines it (registered with "
                                 "keras.saving.register_keras_serializable) before loading")
        elif isinstance(value, dict) and "__not_saved__" in value:
            value = NOT_SAVED.get(key, defaults.get(key))
        out[key] = value
    return out


def write_model(path, model, meta: dict) -> Path:
    """Write ``model`` and ``meta`` to ``path`` (``.keras`` appended if missing), atomically."""
    path = Path(path)
    if path.suffix != ".keras":
        path = path.with_name(path.name + ".keras")
    meta = {"format_version": FORMAT_VERSION, **meta}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".keras.tmp")
    os.close(fd)
    try:
        model.save(tmp.removesuffix(".tmp"))  # keras insists on the .keras suffix
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


def read_model(path):
    """The Keras model (uncompiled) and the metadata written by :func:`write_model`.

    Call it inside the device scope the model should live on.
    """
    import keras

    from . import layers  # noqa: F401  (registers the custom layers for safe_mode loading)
    from . import multilabel  # noqa: F401  (the multi-label loss and metric, named in a head's config)
    from . import optimizers  # noqa: F401  (FusedAdam, named in the file's training config)

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    meta = _read_meta(path)
    check_meta(meta, path)
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except (ValueError, TypeError, KeyError, OSError) as exc:
        raise ValueError(f"corrupt or incompatible model file {path}: Keras cannot rebuild the network "
                         f"({exc})") from exc
    return model, meta


class CorruptModelError(ValueError):
    """A model file whose metadata or network is damaged, edited or from an incompatible version."""


def check_meta(meta, path) -> None:
    """Check the metadata's structure and types; raise :class:`CorruptModelError` naming the first problem."""
    def bad(problem):
        raise CorruptModelError(f"corrupt or incompatible model file {path}: {problem}")

    if not isinstance(meta, dict):
        bad("its metadata is not a JSON object")
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        bad(f"format_version must be an integer; got {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(f"{path} was written by a newer xrayest (format {version}); upgrade xrayest")
    if not isinstance(meta.get("params"), dict):
        bad("'params' is missing or not an object")
    classes = meta.get("classes")
    if not isinstance(classes, list) or len(classes) < 2 or len(set(map(str, classes))) != len(classes):
        bad(f"'classes' must list at least two distinct labels; got {classes!r}")
    try:
        np.asarray(classes, dtype=np.dtype(meta.get("classes_dtype")))
    except (TypeError, ValueError):
        bad(f"'classes_dtype' {meta.get('classes_dtype')!r} does not fit the classes {classes!r}")
    state = meta.get("state")
    if not isinstance(state, dict):
        bad("'state' is missing or not an object")
    size = state.get("image_size_")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                                              for v in size)):
        bad(f"state.image_size_ must be [height, width] of positive integers; got {size!r}")
    if not isinstance(state.get("frozen", state.get("backbone_frozen_", True)), bool):
        bad("state.frozen must be true or false")
    if not isinstance(state.get("history_", {}), dict):
        bad("state.history_ must be an object")


def wrapped_network(model, name: str, path, what: str):
    """The one network inside layer ``name`` of a file holding several (an ensemble's member, a cascade's
    stage); a missing or empty wrapper is a :class:`CorruptModelError` naming ``what`` and the file."""
    try:
        wrapper = model.get_layer(name)
    except ValueError:
        raise CorruptModelError(f"corrupt or incompatible model file {path}: {what} is missing "
                                "from the network") from None
    inner = [layer for layer in wrapper.layers if isinstance(layer, type(wrapper))]
    if len(inner) != 1:
        raise CorruptModelError(f"corrupt or incompatible model file {path}: {what} holds no network")
    return inner[0]
