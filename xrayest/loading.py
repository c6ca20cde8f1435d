"""xrayest.load: read any model file xrayest writes (a classifier, a cascade or an ensemble)."""

from __future__ import annotations

from . import cascade, classifier, ensemble
from .device import device_scope

__all__ = ["load"]

_READERS = {"XrayCNNClassifier": classifier.from_saved, "EnsembleClassifier": ensemble.from_saved,
            "CascadeClassifier": cascade.from_saved}


def load(path, device="auto"):
    """Load a model written by the ``save`` of XrayCNNClassifier, EnsembleClassifier or CascadeClassifier.

    It runs on ``device``; a GPU-saved model loads on a CPU.  Loading uses Keras' ``safe_mode`` (no
    code from the file runs) and never unpickles anything (:mod:`xrayest.persistence`).

    Returns
    -------
    XrayCNNClassifier, EnsembleClassifier or CascadeClassifier
        Fitted, ready to ``predict``; ``fit`` retrains from its saved parameters.
    """
    from .persistence import CorruptModelError, read_model

    with device_scope(device):
        model, meta = read_model(path)
    kind = meta.get("estimator", "XrayCNNClassifier")
    if kind not in _READERS:
        raise CorruptModelError(f"corrupt or incompatible model file {path}: unknown estimator {kind!r}")
    return _READERS[kind](model, meta, path, device)
