import keras
import numpy as np
import pytest

from xrayest.backbones import BACKBONES, get_backbone_spec
from xrayest.layers import ImagePreprocessing

KERAS_PREPROCESS = {
    "vgg16": keras.applications.vgg16.preprocess_input,
    "resnet50": keras.applications.resnet50.preprocess_input,
    "densenet121": keras.applications.densenet.preprocess_input,
    "xception": keras.applications.xception.preprocess_input,
    "mobilenetv2": keras.applications.mobilenet_v2.preprocess_input,
    "efficientnetb0": keras.applications.efficientnet.preprocess_input,
}


@pytest.mark.parametrize("name", sorted(KERAS_PREPROCESS))
def test_matches_keras_preprocess_input_and_never_mutates(name):
    spec = get_backbone_spec(name)
    images = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype(np.float32)
    before = images.copy()
    ours = np.asarray(ImagePreprocessing((16, 16), spec.preprocess)(images))
    np.testing.assert_array_equal(images, before)
    theirs = KERAS_PREPROCESS[name](images.copy())
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-4)


def test_resizes():
    out = ImagePreprocessing((8, 12), "tf")(np.zeros((1, 30, 40, 3), np.float32))
    assert tuple(out.shape) == (1, 8, 12, 3)


def test_registry_is_complete_and_lookup_is_forgiving():
    for name in ["vgg16", "vgg19", "resnet50", "densenet121", "inceptionv3", "xception", "mobilenetv2",
                 "efficientnetb0", "small_cnn", "residual_cnn"]:
        assert name in BACKBONES
    assert get_backbone_spec("ResNet-50").name == "resnet50"
    with pytest.raises(ValueError, match="valid backbones: vgg16"):
        get_backbone_spec("alexnet")


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_builds_at_its_minimum_size(name):
    from xrayest.backbones import build_backbone

    spec = BACKBONES[name]
    size = max(spec.min_size, 32)
    model = build_backbone(spec, (size, size, 3), None)
    out = model(np.zeros((1, size, size, 3), np.float32))
    assert out.ndim == 4
