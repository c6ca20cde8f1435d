"""xrayest: pretrained-backbone CNN classifiers for chest X-rays, as scikit-learn estimators.

Names are imported lazily, so ``import xrayest`` and ``xrayest --help`` stay fast and
TensorFlow loads only when an estimator is first used.
"""

import importlib as _importlib

from .device import use_onednn_kernels as _use_onednn_kernels

__version__ = "0.1.0"

# Before TensorFlow loads: its oneDNN kernels on AVX2-only CPUs, where its default leaves them off
# (xrayest.device.use_onednn_kernels).
_use_onednn_kernels()

_EXPORTS = {
    "XrayCNNClassifier": "classifier",
    "FeatureExtractor": "extractor",
    "BACKBONES": "backbones",
    "WeightsUnavailableError": "weights",
    "available_devices": "device",
    "resolve_device": "device",
    "load": "loading",
    "EnsembleClassifier": "ensemble",
    "load_image_folder": "datasets",
    "make_synthetic_xrays": "datasets",
    "find_duplicates": "datasets",
    "make_synthetic_findings": "datasets",
    "load_label_table": "labels",
    "read_table": "labels",
    "LabelTable": "labels",
    "read_dicom": "dicom",
    "featurize": "distributed",
    "FeatureStore": "feature_store",
    "CascadeClassifier": "cascade",
    "RECIPES": "recipes",
    "make_recipe": "recipes",
    "TSNEEmbedding": "manifold",
    "plot_gradcam": "explain",
    "plot_feature_maps": "explain",
    "evaluate": "metrics",
    "write_evaluation_report": "report",
    "plot_history": "plotting",
    "plot_confusion_matrix": "plotting",
    "plot_class_distribution": "plotting",
    "plot_embedding": "plotting",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(_importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'xrayest' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
