import numpy as np
import pytest

from conftest import tiny_classifier
from xrayest import WeightsUnavailableError
from xrayest.backbones import get_backbone_spec
from xrayest.weights import build_backbone, load_backbone, weights_fingerprint


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


def test_cut_backbone_reads_the_whole_networks_weights(monkeypatch, tmp_path):
    """xception_middle is Xception cut after block 12: it reads Xception's weight files (a path, or
    xception_imagenet_notop in XRAYEST_WEIGHTS_DIR) and keeps exactly their first layers."""
    whole = build_backbone(get_backbone_spec("xception"), (71, 71, 3), None)
    path = tmp_path / "xception_imagenet_notop.weights.h5"
    whole.save_weights(path)
    spec = get_backbone_spec("xception_middle")
    monkeypatch.setenv("XRAYEST_WEIGHTS_DIR", str(tmp_path))
    for weights in (str(path), "imagenet"):
        cut = load_backbone(spec, (71, 71, 3), weights)
        assert cut.output_shape[-1] == 728 and cut.layers[-2].name == "block12_sepconv3_bn"
        assert len(cut.layers) < len(whole.layers)
        named = [layer for layer in cut.layers if layer.name.startswith("block") and layer.weights]
        assert named[-1].name == "block12_sepconv3_bn"
        for layer in named:  # Keras numbers the unnamed shortcut layers per process: compare the named ones
            for a, b in zip(layer.get_weights(), whole.get_layer(layer.name).get_weights()):
                np.testing.assert_array_equal(a, b)
    assert weights_fingerprint(spec, "imagenet") == weights_fingerprint(spec, str(path))


def test_cut_backbone_features_are_the_whole_networks_activation(tmp_path):
    """FeatureExtractor on xception_middle gives the average-pooled block-12 activation of Xception."""
    import keras

    from xrayest import FeatureExtractor

    whole = build_backbone(get_backbone_spec("xception"), (71, 71, 3), None)
    path = tmp_path / "x.weights.h5"
    whole.save_weights(path)
    X = np.random.default_rng(0).integers(0, 255, (3, 71, 71, 3)).astype(np.uint8)
    feats = FeatureExtractor("xception_middle", weights=str(path), image_size=71, cache_features=False).fit(X)
    inner = keras.Model(whole.input, whole.get_layer("block13_sepconv1_act").input)  # block 12's sum
    expected = np.asarray(inner(X.astype("float32") / 127.5 - 1.0)).mean(axis=(1, 2))
    np.testing.assert_allclose(feats.transform(X), expected, rtol=1e-3, atol=1e-3)
