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
    from xrayest.weights import build_backbone

    spec = BACKBONES[name]
    size = max(spec.min_size, 32)
    model = build_backbone(spec, (size, size, spec.channels), None)
    out = model(np.zeros((1, size, size, spec.channels), np.float32))
    assert out.ndim == 4


def test_grayscale_preprocessing_is_the_channel_mean():
    images = np.random.default_rng(1).uniform(0, 255, (2, 10, 10, 3)).astype(np.float32)
    gray = np.asarray(ImagePreprocessing((10, 10), "unit", channels=1)(images))
    assert gray.shape == (2, 10, 10, 1)
    np.testing.assert_allclose(gray[..., 0], images.mean(axis=-1) / 255.0, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        ImagePreprocessing((10, 10), "unit", channels=2)


def test_from_scratch_cnns_take_one_gray_channel():
    """The first convolution of a from-scratch trunk sees one channel; a colour image is read as its gray mean."""
    from conftest import tiny_classifier

    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    y = np.array([0, 1] * 6)
    clf = tiny_classifier(backbone="sutd_cnn", epochs=1, cache_features=False).fit(X, y)
    first_conv = next(layer for layer in clf.backbone_.layers if "conv" in layer.name)
    assert first_conv.kernel.shape[2] == 1
    gray = np.repeat(np.rint(X.mean(axis=-1, keepdims=True)), 3, axis=-1).astype(np.float32)
    np.testing.assert_allclose(clf.predict_proba(X), clf.predict_proba(gray), atol=2e-2)


class TestFusedBatchNormalization:
    @pytest.mark.parametrize("kwargs", [{}, {"momentum": 0.9, "center": False}, {"scale": False, "epsilon": 1e-5}])
    def test_same_as_keras_batch_normalization(self, kwargs):
        import keras
        import tensorflow as tf

        from xrayest.layers import FusedBatchNormalization

        x = tf.constant(np.random.default_rng(0).normal(2, 3, (8, 6, 5, 4)).astype("float32"))
        ours, theirs = FusedBatchNormalization(**kwargs), keras.layers.BatchNormalization(**kwargs)
        for layer in (ours, theirs):
            layer.build(x.shape)
        ours.set_weights(theirs.get_weights())
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            outputs = [layer(x, training=True) for layer in (ours, theirs)]
            losses = [tf.reduce_sum(out ** 2 * tf.range(4.0)) for out in outputs]
        np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-5)
        for a, b in zip(ours.get_weights(), theirs.get_weights()):  # moving statistics updated alike
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(tape.gradient(losses[0], x), tape.gradient(losses[1], x), rtol=1e-4, atol=1e-4)
        for a, b in zip(tape.gradient(losses[0], ours.trainable_variables),
                        tape.gradient(losses[1], theirs.trainable_variables)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)  # beta's gradient is ~0 +- float noise
        np.testing.assert_allclose(ours(x, training=False), theirs(x, training=False), atol=1e-5)

    def test_bfloat16_input_float32_statistics_and_fallbacks(self):
        import keras
        import tensorflow as tf

        from xrayest.layers import FusedBatchNormalization

        layer = FusedBatchNormalization(dtype="mixed_bfloat16")
        out = layer(tf.ones((2, 4, 4, 3)), training=True)
        assert out.dtype == "bfloat16" and layer.moving_mean.dtype == "float32"
        flat = FusedBatchNormalization()  # 2-D input: Keras' own computation
        np.testing.assert_allclose(flat(tf.ones((5, 3)) * 2.0, training=False), 2.0 / np.sqrt(1 + 1e-3), rtol=1e-5)
        frozen = FusedBatchNormalization()
        frozen.build((2, 4, 4, 3))
        frozen.trainable = False  # a frozen layer runs in inference mode, as in Keras
        np.testing.assert_allclose(frozen(tf.fill((2, 4, 4, 3), 3.0), training=True), 3.0 / np.sqrt(1 + 1e-3),
                                   rtol=1e-5)
        assert isinstance(layer, keras.layers.BatchNormalization)

    def test_saved_models_load_it_in_safe_mode(self, tmp_path):
        import keras

        from xrayest.layers import FusedBatchNormalization

        model = keras.Sequential([keras.Input((4, 4, 2)), FusedBatchNormalization(momentum=0.9)])
        model.save(tmp_path / "m.keras")
        loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
        assert type(loaded.layers[0]) is FusedBatchNormalization and loaded.layers[0].momentum == 0.9
