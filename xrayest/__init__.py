"""xrayest: pretrained-backbone CNN classifiers for chest X-rays, as scikit-learn estimators."""

import os as _os

# TensorFlow's C++ start-up chatter (CUDA probing on CPU machines) drowns user output.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import logging as _logging  # noqa: E402

_logging.getLogger("tensorflow").setLevel(_logging.ERROR)

from .backbones import BACKBONES  # noqa: E402
from .classifier import XrayCNNClassifier  # noqa: E402
from .device import available_devices, resolve_device  # noqa: E402
from .weights import WeightsUnavailableError  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "BACKBONES",
    "XrayCNNClassifier",
    "WeightsUnavailableError",
    "available_devices",
    "resolve_device",
]
