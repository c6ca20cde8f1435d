"""A backbone network with its weights: the one place a registry entry becomes a Keras model.

Weights are ``"imagenet"``, ``None`` (random) or a local weights file.

For air-gapped sites, put ``<backbone>_imagenet_notop.weights.h5`` files in the folder
named by the ``XRAYEST_WEIGHTS_DIR`` environment variable (or Keras' own cache files
in ``$KERAS_HOME/models``); ``weights="imagenet"`` then reads them instead of
downloading.  When nothing can be found or fetched the error says so: xrayest never
falls back to random weights silently.

``load_backbone`` is the pipeline, read top to bottom:

1. where the weights come from (``weights_source``: random, a file, the offline directory
   ``XRAYEST_WEIGHTS_DIR``, or Keras' ImageNet store);
2. the architecture of the registry entry (``xrayest.backbones``, plain data: a
   ``keras.applications`` class or a from-scratch builder), with Keras' ImageNet weights when that
   is the source (``build_backbone``);
3. a weights file loaded into the whole network;
4. the cut (``BackboneSpec.cut_after``): the whole network's layers and weights up to a block's
   residual sum (``cut_backbone``).

Everything here takes a :class:`~xrayest.backbones.BackboneSpec`, never a name: names are resolved
once, where a user's ``backbone`` enters (an estimator's ``fit``, ``featurize``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import keras

from .backbones import BackboneSpec

__all__ = ["WeightsUnavailableError", "load_backbone", "fingerprinted_backbone", "build_backbone", "cut_backbone",
           "residual_sum_after", "weights_source", "weights_fingerprint", "weights_dir_file", "recorded_weights"]

WEIGHTS_DIR_ENV = "XRAYEST_WEIGHTS_DIR"


class WeightsUnavailableError(RuntimeError):
    """ImageNet weights could not be found locally nor downloaded."""


def load_backbone(spec: BackboneSpec, input_shape: tuple, weights) -> keras.Model:
    """Build the backbone ``spec`` at ``input_shape`` carrying ``weights``, cut where ``spec.cut_after`` says.

    Parameters
    ----------
    spec : BackboneSpec
    input_shape : tuple
        ``(height, width, channels)``.
    weights : {"imagenet", None} or path-like
        ``None`` gives random initial weights.  A file holds the whole network's weights.
    """
    return _built(spec, input_shape, weights_source(spec, weights))


def fingerprinted_backbone(spec: BackboneSpec, input_shape: tuple, weights) -> tuple:
    """:func:`load_backbone` and :func:`weights_fingerprint` of the same weights, in one call:
    ``(model, fingerprint)``, both from one look-up of where the weights come from."""
    source = weights_source(spec, weights)
    return _built(spec, input_shape, source), _fingerprint(source)


def _built(spec: BackboneSpec, input_shape: tuple, source) -> keras.Model:
    """The network of ``spec`` with the weights of ``source`` (:func:`weights_source`), cut."""
    if source == "download":
        whole = _downloaded(spec, input_shape)
    else:
        whole = build_backbone(spec, input_shape)
        if source is not None:
            _load_file(whole, source, spec.name)
    return cut_backbone(spec, whole)


def build_backbone(spec: BackboneSpec, input_shape: tuple, keras_weights=None) -> keras.Model:
    """The architecture of ``spec`` without its classification top (the whole network, before any cut).

    ``keras_weights`` is passed to ``keras.applications`` as is (``"imagenet"`` or None); weight
    files and the cut are :func:`load_backbone`'s steps.
    """
    if callable(spec.builder):
        return spec.builder(input_shape)
    constructor = getattr(keras.applications, spec.builder)
    return constructor(include_top=False, weights=keras_weights, input_shape=input_shape)


def _downloaded(spec: BackboneSpec, input_shape: tuple) -> keras.Model:
    """The backbone with ImageNet weights from Keras' store, or :class:`WeightsUnavailableError` with the offline
    options."""
    try:
        return build_backbone(spec, input_shape, "imagenet")
    except Exception as exc:
        if "URL fetch failure" not in str(exc) and not isinstance(exc, OSError):
            raise
        raise WeightsUnavailableError(
            f"ImageNet weights for backbone {spec.name!r} could not be downloaded ({exc}). "
            f"Offline options: pass weights='/path/to/{spec.weights_key}_notop.weights.h5'; or set "
            f"{WEIGHTS_DIR_ENV} to a folder holding {spec.weights_key}_imagenet_notop.weights.h5; or copy Keras' "
            "own weight file into $KERAS_HOME/models (default ~/.keras/models); or use weights=None "
            "for random weights."
        ) from exc


def _load_file(model: keras.Model, path: Path, name: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"weights file for backbone {name!r} not found: {path}")
    try:
        model.load_weights(str(path))
    except Exception as exc:  # keras raises ValueError/KeyError/OSError depending on the mismatch
        raise ValueError(
            f"could not load weights file {path} into backbone {name!r} "
            f"(input {model.input_shape[1:]}): {exc}"
        ) from exc


def residual_sum_after(model: keras.Model, layer_name: str):
    """The output of the residual sum (``Add`` layer) of ``model`` that reads layer ``layer_name``.

    Keras numbers unnamed ``Add`` layers per process (``add``, ``add_1``, ...), so a block's output is
    found through the named layer that ends the block, not by the sum's own name.
    """
    block_end = model.get_layer(layer_name).output
    for layer in model.layers:
        if isinstance(layer, keras.layers.Add) and any(t is block_end for t in layer.input):
            return layer.output
    raise ValueError(f"no residual sum of {model.name!r} reads layer {layer_name!r}")


def cut_backbone(spec: BackboneSpec, model: keras.Model) -> keras.Model:
    """``model`` ending at the residual sum after ``spec.cut_after`` (the same layers and weights up to it);
    ``model`` itself when the spec names no cut."""
    if spec.cut_after is None:
        return model
    return keras.Model(model.input, residual_sum_after(model, spec.cut_after), name=spec.name)


def weights_dir_file(name: str) -> Path | None:
    """The local ImageNet weights file for backbone ``name`` in ``$XRAYEST_WEIGHTS_DIR``, if any."""
    folder = os.environ.get(WEIGHTS_DIR_ENV)
    if not folder:
        return None
    for candidate in (f"{name}_imagenet_notop.weights.h5", f"{name}.weights.h5"):
        path = Path(folder) / candidate
        if path.is_file():
            return path
    return None


def recorded_weights(weights):
    """``weights`` as a feature store records them: None, ``"imagenet"``, or a file's absolute path
    (so workers, and a later command in another folder, read the same file).  A file that is not
    there is a ``FileNotFoundError`` naming it."""
    if weights is None or weights == "imagenet":
        return weights
    if not Path(weights).is_file():
        raise FileNotFoundError(f"weights file not found: {weights}")
    return str(Path(weights).resolve())


_FILE_DIGESTS: dict[tuple, str] = {}


def _file_digest(path: Path) -> str:
    """Content hash of a weights file; memoised on (path, size, mtime) so a changed file rehashes."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        _FILE_DIGESTS[key] = digest.hexdigest()
    return _FILE_DIGESTS[key]


def weights_fingerprint(spec: BackboneSpec, weights) -> str | None:
    """A string that changes whenever the backbone's weights would; None if they are random."""
    return _fingerprint(weights_source(spec, weights))


def _fingerprint(source) -> str | None:
    """The fingerprint of weights from ``source`` (:func:`weights_source`)."""
    if source is None:
        return None
    if source == "download":
        return f"imagenet:keras-{keras.__version__}"
    return f"file:{_file_digest(source)}"


def weights_source(spec: BackboneSpec, weights):
    """Where ``weights`` come from: None (random), a file, or "download" (Keras' ImageNet store)."""
    if weights is None:
        return None
    if isinstance(weights, (str, os.PathLike)) and str(weights) != "imagenet":
        return Path(weights)
    if weights != "imagenet":
        raise ValueError(f"weights must be 'imagenet', None or a path to a weights file; got {weights!r}")
    if not spec.pretrained:
        raise ValueError(
            f"backbone {spec.name!r} is trained from scratch and has no ImageNet weights; use weights=None"
        )
    local = weights_dir_file(spec.weights_key)
    return local if local is not None else "download"
