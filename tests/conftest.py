"""Tiny shared fixtures: a few small images with real class signal, and a tiny classifier."""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

import xrayest  # noqa: F401  before any test module imports TensorFlow: its kernels as a user's script gets them

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
BU_DATA = SHARED / "data" / "bu_cs542"


def make_images(n=24, size=32, n_classes=2, seed=0, channels=None):
    """uint8 images whose class is a bright band at a class-specific height (learnable signal)."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 120, (n, size, size), dtype=np.uint8)
    y = np.arange(n) % n_classes
    band = size // n_classes
    for i, label in enumerate(y):
        X[i, label * band:(label + 1) * band, :] += 120
    if channels:
        X = np.repeat(X[..., None], channels, axis=-1)
    return X, y


@pytest.fixture
def binary_images():
    return make_images(24, 32, 2)


@pytest.fixture
def multiclass_images():
    return make_images(30, 32, 3)


def tiny_classifier(**overrides):
    from xrayest import XrayCNNClassifier

    params = dict(backbone="vgg16", weights=None, image_size=32, hidden_units=(16,), dropout=0.0,
                  epochs=3, batch_size=8, learning_rate=1e-3, random_state=0)
    params.update(overrides)
    return XrayCNNClassifier(**params)


def tiny_extractor(**overrides):
    from xrayest import FeatureExtractor

    params = dict(backbone="vgg16", weights=None, image_size=32, random_state=0, batch_size=8)
    params.update(overrides)
    return FeatureExtractor(**params)


@pytest.fixture
def clean_cache():
    """The process-wide feature cache, emptied before and after the test."""
    from xrayest.cache import default_cache

    cache = default_cache()
    cache.clear()
    cache.hits = cache.misses = 0
    yield cache
    cache.clear()


def require_bu_data():
    if not BU_DATA.is_dir():
        pytest.skip(f"real BU CS542 X-rays not found at {BU_DATA} (they live in ../shared beside the repo)")
    return BU_DATA


def xception_weights():
    """Genuine ImageNet Xception (no top) weights from ../shared/tools, or skip with the reason."""
    import subprocess
    import sys

    tool = SHARED / "tools" / "xception-imagenet-weights"
    if not tool.exists():
        pytest.skip(f"real Xception weights tool not found at {tool} (it lives in ../shared beside the repo)")
    out = subprocess.run([str(tool), sys.executable], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"{tool} failed: {out.stderr.strip()[-300:]}")
    return out.stdout.strip().splitlines()[-1]


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true",
                     help="also run the tests marked slow (real X-rays from ../shared, long end-to-end runs)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
