import numpy as np
import pytest

from conftest import tiny_classifier
from xrayest import WeightsUnavailableError
from xrayest.backbones import build_backbone, get_backbone_spec
from xrayest.weights import load_backbone, weights_fingerprint


@pytest.fixture
def vgg_weights_file(tmp_path):
    model = build_backbone(get_backbone_spec("vgg16"), (32, 32, 3), None)
    path = tmp_path / "vgg16_imagenet_notop.weights.h5"
    model.save_weights(path)
    return model, path


def test_weights_file_is_loaded(vgg_weights_file):
    model, path = vgg_weights_file
    loaded = load_backbone(get_backbone_spec("vgg16"), (32, 32, 3), str(path))
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_missing_or_wrong_file_named(tmp_path, vgg_weights_file):
    with pytest.raises(FileNotFoundError, match="nowhere.weights.h5"):
        load_backbone(get_backbone_spec("vgg16"), (32, 32, 3), str(tmp_path / "nowhere.weights.h5"))
    _, path = vgg_weights_file
    with pytest.raises(ValueError, match=r"could not load weights file .*vgg16_imagenet.* into backbone 'vgg19'"):
        load_backbone(get_backbone_spec("vgg19"), (32, 32, 3), str(path))


def test_weights_dir_serves_imagenet_offline(monkeypatch, vgg_weights_file):
    model, path = vgg_weights_file
    monkeypatch.setenv("XRAYEST_WEIGHTS_DIR", str(path.parent))
    loaded = load_backbone(get_backbone_spec("vgg16"), (32, 32, 3), "imagenet")
    np.testing.assert_array_equal(model.get_weights()[0], loaded.get_weights()[0])
    assert weights_fingerprint(get_backbone_spec("vgg16"), "imagenet").startswith("file:")


def test_imagenet_unreachable_is_a_clear_error(monkeypatch, tmp_path):
    import keras

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://example.invalid: None -- [Errno -3] no network")

    monkeypatch.delenv("XRAYEST_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(keras.utils, "get_file", offline)
    monkeypatch.setattr("keras.src.applications.vgg16.file_utils.get_file", offline)
    with pytest.raises(WeightsUnavailableError, match="XRAYEST_WEIGHTS_DIR.*weights=None"):
        load_backbone(get_backbone_spec("vgg16"), (32, 32, 3), "imagenet")


def test_scratch_backbone_has_no_imagenet():
    with pytest.raises(ValueError, match="no ImageNet weights"):
        load_backbone(get_backbone_spec("small_cnn"), (32, 32, 3), "imagenet")


def test_changed_weight_file_changes_fingerprint(vgg_weights_file):
    model, path = vgg_weights_file
    spec = get_backbone_spec("vgg16")
    before = weights_fingerprint(spec, str(path))
    model.set_weights([w + 1 for w in model.get_weights()])
    model.save_weights(path)
    assert weights_fingerprint(spec, str(path)) != before


def test_classifier_with_weights_file(binary_images, vgg_weights_file):
    X, y = binary_images
    _, path = vgg_weights_file
    clf = tiny_classifier(weights=str(path), random_state=None, epochs=1).fit(X, y)
    assert clf.predict(X).shape == (len(X),)
