import numpy as np
import pytest

from conftest import tiny_classifier
from xrayest.device import available_devices, resolve_device

HAS_GPU = available_devices()["gpu"] > 0


def test_cpu_and_auto():
    assert resolve_device("cpu") == "cpu:0"
    assert resolve_device("auto") == ("gpu:0" if HAS_GPU else "cpu:0")


@pytest.mark.parametrize("bad", ["tpu", "gpu:x", "auto:1", 3, ""])
def test_malformed_device_strings(bad):
    with pytest.raises(ValueError, match="device"):
        resolve_device(bad)


@pytest.mark.skipif(HAS_GPU, reason="this machine has a GPU")
def test_missing_gpu_is_an_error_listing_devices(binary_images):
    with pytest.raises(RuntimeError, match=r"asks for GPU 0, but TensorFlow found 1 CPU, 0 GPU"):
        resolve_device("gpu")
    X, y = binary_images
    with pytest.raises(RuntimeError, match="GPU"):
        tiny_classifier(device="gpu", epochs=1).fit(X, y)


def test_gpu_index_beyond_count():
    n = available_devices()["gpu"]
    with pytest.raises(RuntimeError, match=f"asks for GPU {n + 3}"):
        resolve_device(f"gpu:{n + 3}")


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="no GPU on this machine")
def test_fit_on_gpu_matches_cpu_predictions(binary_images):
    X, y = binary_images
    clf = tiny_classifier(device="gpu", epochs=1).fit(X, y)
    gpu = clf.predict_proba(X)
    clf.set_params(device="cpu")
    np.testing.assert_allclose(clf.predict_proba(X), gpu, atol=1e-4)


def test_cpu_device_fits(binary_images):
    X, y = binary_images
    assert tiny_classifier(device="cpu", epochs=1).fit(X, y).predict(X).shape == (len(X),)
