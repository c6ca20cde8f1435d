"""Frozen-trunk rewrites: BatchNorm folding (same function) and bfloat16 compute precision."""

import numpy as np
import pytest
from sklearn.base import clone

from conftest import make_images, require_bu_data, tiny_classifier, xception_weights
from xrayest import FeatureExtractor
from xrayest.backbones import get_backbone_spec
from xrayest.cache import default_cache
from xrayest.trunk_graph import foldable_batch_norms, layer_graph, rewrite_backbone


def _count(model, cls):
    return sum(isinstance(layer, cls) for layer in model.layers)


def _randomize_batch_norms(model, seed=0):
    """Non-trivial moving statistics, so that a wrong fold cannot go unnoticed."""
    import keras

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.moving_mean.shape
            values = []
            if layer.gamma is not None:
                values.append(rng.uniform(0.5, 1.5, shape))
            if layer.beta is not None:
                values.append(rng.normal(0, 0.3, shape))
            values += [rng.normal(0, 0.3, shape), rng.uniform(0.5, 1.5, shape)]
            layer.set_weights([v.astype(np.float32) for v in values])


def conv_zoo():
    """Every convolution kind followed by BN, plus the cases that must not be folded."""
    import keras
    from keras import layers

    inputs = keras.Input((12, 12, 3))
    x = layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv_nobias")(inputs)
    x = layers.BatchNormalization(name="bn_conv_nobias")(x)
    x = layers.Conv2D(6, 3, padding="same", name="conv_bias")(x)
    x = layers.BatchNormalization(scale=False, name="bn_noscale")(x)
    x = layers.SeparableConv2D(8, 3, padding="same", depth_multiplier=2, name="sep")(x)
    x = layers.BatchNormalization(center=False, name="bn_sep")(x)
    x = layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(x)
    x = layers.BatchNormalization(name="bn_dw")(x)
    x = layers.Conv2D(8, 1, activation="relu", name="conv_relu")(x)  # activation before BN: not linear
    x = layers.BatchNormalization(name="bn_after_relu")(x)
    branch = layers.Conv2D(8, 1, name="conv_shared")(x)  # output used twice: not foldable
    x = layers.Add()([layers.BatchNormalization(name="bn_shared")(branch), branch])
    x = layers.BatchNormalization(name="bn_after_add")(x)  # no convolution before it
    model = keras.Model(inputs, layers.GlobalAveragePooling2D()(x))
    _randomize_batch_norms(model)
    rng = np.random.default_rng(1)
    for layer in model.layers:  # non-zero biases too
        if getattr(layer, "use_bias", False) and getattr(layer, "bias", None) is not None:
            layer.bias.assign(rng.normal(0, 0.3, layer.bias.shape).astype(np.float32))
    model.trainable = False
    return model


class TestBatchNormFolding:
    def test_folds_exactly_the_foldable_pairs(self):
        model = conv_zoo()
        assert foldable_batch_norms(model) == {"bn_conv_nobias": "conv_nobias", "bn_noscale": "conv_bias",
                                               "bn_sep": "sep", "bn_dw": "dw"}

    def test_same_function_and_caller_model_untouched(self):
        import keras

        model = conv_zoo()
        before = [w.copy() for w in model.get_weights()]
        x = np.random.default_rng(2).normal(size=(5, 12, 12, 3)).astype(np.float32)
        expected = np.asarray(model(x, training=False))
        folded = rewrite_backbone(model)
        np.testing.assert_allclose(np.asarray(folded(x, training=False)), expected, rtol=1e-5, atol=1e-5)
        assert _count(folded, keras.layers.BatchNormalization) == 3  # 7 - 4 folded
        assert _count(model, keras.layers.BatchNormalization) == 7
        for old, now in zip(before, model.get_weights()):
            np.testing.assert_array_equal(old, now)
        assert folded.get_layer("conv_nobias").use_bias and not model.get_layer("conv_nobias").use_bias

    @pytest.mark.parametrize("name,size", [("MobileNetV2", 32), ("ResNet50", 32), ("InceptionV3", 75),
                                           ("EfficientNetB0", 32), ("DenseNet121", 32), ("Xception", 71)])
    def test_registry_architectures_keep_their_function(self, name, size):
        import keras

        model = getattr(keras.applications, name)(include_top=False, weights=None, input_shape=(size, size, 3))
        _randomize_batch_norms(model)
        model.trainable = False
        n_bn = _count(model, keras.layers.BatchNormalization)
        folded = rewrite_backbone(model)
        x = np.random.default_rng(3).uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
        expected = np.asarray(model(x, training=False))
        got = np.asarray(folded(x, training=False))
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
        remaining = _count(folded, keras.layers.BatchNormalization)
        # DenseNet puts BN after concatenations (pre-activation): only its conv->BN pairs fold.
        assert remaining == 0 if name != "DenseNet121" else 0 < remaining < n_bn

    def test_nothing_to_rewrite_returns_the_model(self):
        import keras

        model = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
        assert rewrite_backbone(model) is model


    def test_graph_is_read_from_the_public_config(self):
        import keras

        inputs = keras.Input((8, 8, 3))
        a = keras.layers.Conv2D(2, 3, name="a")(inputs)
        b = keras.layers.BatchNormalization(name="b")(a)
        c = keras.layers.Add(name="c")([a, b])
        model = keras.Model(inputs, [c, b])
        calls, uses = layer_graph(model)
        assert calls["a"] == [[model.layers[0].name]] and calls["c"] == [["a", "b"]]
        assert uses["a"] == 2 and uses["b"] == 2 and uses["c"] == 1  # b feeds c and is an output
        assert foldable_batch_norms(model) == {}  # a's output is used twice
        conv_also_an_output = keras.Model(inputs, {"features": a, "normed": b})
        assert layer_graph(conv_also_an_output)[1]["a"] == 2
        assert foldable_batch_norms(conv_also_an_output) == {}  # folding would change the "features" output
        assert foldable_batch_norms(keras.Model(inputs, b)) == {"b": "a"}
        assert layer_graph(keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])) == (None, None)


class TestBfloat16:
    def test_rewritten_layers_compute_in_bfloat16(self):
        import keras

        model = conv_zoo()
        low = rewrite_backbone(model, precision="bfloat16")
        assert all(layer.dtype_policy.name == "mixed_bfloat16" for layer in low.layers
                   if not isinstance(layer, keras.layers.InputLayer))
        assert all(w.dtype == "float32" for w in low.weights)  # weights stay float32
        x = np.random.default_rng(2).normal(size=(5, 12, 12, 3)).astype(np.float32)
        expected = np.asarray(model(x, training=False))
        got = np.asarray(low(x, training=False)).astype(np.float32)
        assert 0 < np.abs(got - expected).max() <= 0.05 * np.abs(expected).max()

    def test_bad_precision_is_named(self, binary_images):
        X, y = binary_images
        with pytest.raises(ValueError, match="precision must be one of.*'float16'"):
            tiny_classifier(precision="fp16").fit(X, y)
        with pytest.raises(ValueError, match="precision must be one of"):
            FeatureExtractor("vgg16", weights=None, image_size=32, precision="fp8").fit(X)

    def test_extractor_features_are_float32_close_and_cached_apart(self, binary_images):
        X, _ = binary_images
        default_cache().clear()
        params = dict(backbone="mobilenetv2", weights=None, image_size=32, random_state=0, precision="float32")
        full = FeatureExtractor(**params).fit(X)
        low = clone(full).set_params(precision="bfloat16").fit(X)
        assert low.trunk_.cache_key != full.trunk_.cache_key
        a, b = full.transform(X), low.transform(X)
        assert b.dtype == np.float32 and a.shape == b.shape
        assert not np.array_equal(a, b)
        assert np.abs(a - b).mean() <= 0.05 * np.abs(a).mean()

    def test_classifier_cached_path_equals_composed_model(self, multiclass_images):
        X, y = multiclass_images
        clf = tiny_classifier(backbone="mobilenetv2", precision="bfloat16", epochs=2).fit(X, y)
        cached = clf.predict_proba(X)
        composed = clf.model_.predict(np.repeat(X[..., None], 3, -1).astype(np.float32), verbose=0)
        np.testing.assert_allclose(cached, composed, rtol=1e-5, atol=1e-6)
        assert clf.trunk_.model.output.dtype == "float32"

    def test_saved_and_loaded_with_its_precision(self, binary_images, tmp_path):
        import xrayest

        X, y = binary_images
        clf = tiny_classifier(backbone="mobilenetv2", precision="bfloat16", epochs=1).fit(X, y)
        loaded = xrayest.load(clf.save(tmp_path / "m.keras"))
        assert loaded.precision == "bfloat16"
        np.testing.assert_allclose(loaded.predict_proba(X), clf.predict_proba(X), rtol=1e-5, atol=1e-6)

    def test_unfrozen_backbone_trains_in_bfloat16(self):
        X, y = make_images(16, 32, 2)
        clf = tiny_classifier(backbone="small_cnn", precision="bfloat16", epochs=2).fit(X, y)
        assert clf.backbone_.layers[-1].dtype_policy.name == "mixed_bfloat16"
        proba = clf.predict_proba(X)
        assert proba.shape == (16, 2) and np.isfinite(proba).all() and np.isfinite(clf.history_["loss"]).all()

    def test_warns_when_the_cpu_would_emulate_it(self, binary_images, monkeypatch):
        from xrayest import device

        X, _ = binary_images
        monkeypatch.setattr(device, "cpu_supports_bfloat16", lambda: False)
        with pytest.warns(RuntimeWarning, match="emulated"):
            FeatureExtractor("vgg16", weights=None, image_size=32, random_state=0, precision="bfloat16",
                             device="cpu").fit(X)


class TestFloat16:
    """float16 (for GPUs without bfloat16) runs on the CPU too, emulated: the same code path."""

    def test_trains_the_backbone_with_loss_scaling_and_is_saved(self, tmp_path):
        import warnings

        import keras

        import xrayest

        seen = []

        class Optimizers(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                seen.append(type(self.model.optimizer).__name__)

        X, y = make_images(16, 32, 2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # emulated on the CPU: said by the next test
            clf = tiny_classifier(backbone="small_cnn", precision="float16", epochs=2,
                                  callbacks=[Optimizers()]).fit(X, y)
            head_only = tiny_classifier(precision="float16", epochs=1, callbacks=[Optimizers()]).fit(X, y)
        assert seen == ["LossScaleOptimizer", "FusedAdam"]  # the backbone's phase scaled, the head's not
        assert clf.backbone_.layers[-1].dtype_policy.name == "mixed_float16"
        assert all(w.dtype == "float32" for w in clf.backbone_.weights)
        proba = clf.predict_proba(X)
        assert proba.shape == (16, 2) and np.isfinite(proba).all() and np.isfinite(clf.history_["loss"]).all()
        assert head_only.trunk_.model.output.dtype == "float32"
        loaded = xrayest.load(clf.save(tmp_path / "half.keras"))
        assert loaded.precision == "float16"
        np.testing.assert_allclose(loaded.predict_proba(X), proba, rtol=1e-5, atol=1e-6)

    def test_features_close_to_float32_cached_apart_and_a_warning_on_the_cpu(self, binary_images):
        X, _ = binary_images
        # vgg16: random MobileNetV2 features are ~1e-12, below float16's range (its smallest is 6e-8)
        params = dict(backbone="vgg16", weights=None, image_size=32, random_state=0, device="cpu")
        full = FeatureExtractor(**params).fit(X)
        with pytest.warns(RuntimeWarning, match="float16' is for GPUs without bfloat16"):
            half = FeatureExtractor(**params, precision="float16").fit(X)
        assert half.trunk_.cache_key != full.trunk_.cache_key
        a, b = full.transform(X), half.transform(X)
        assert b.dtype == np.float32 and not np.array_equal(a, b)
        assert np.abs(a - b).mean() <= 0.01 * np.abs(a).mean()


class TestEstimatorsFoldFrozenTrunks:
    def test_frozen_trunk_is_folded_and_equals_the_unfolded_one(self, binary_images):
        import keras

        from xrayest.trunk import Trunk

        X, _ = binary_images
        ext = FeatureExtractor("mobilenetv2", weights=None, image_size=32, random_state=0,
                               precision="float32").fit(X)
        assert _count(ext.trunk_.model.get_layer("mobilenetv2_1.00_32"), keras.layers.BatchNormalization) == 0
        unfolded = Trunk.frozen(get_backbone_spec("mobilenetv2"), None, (32, 32), pooling="avg", seed=0,
                                fold_batch_norm=False).model
        rgb = np.repeat(X[..., None], 3, -1).astype(np.float32)
        expected = unfolded.predict(rgb, verbose=0)
        np.testing.assert_allclose(ext.transform(X), expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())

    def test_two_phase_fine_tune_keeps_batch_norm(self, binary_images):
        import keras

        X, y = binary_images
        clf = tiny_classifier(backbone="mobilenetv2", epochs=1, fine_tune=5, fine_tune_epochs=1).fit(X, y)
        assert _count(clf.backbone_, keras.layers.BatchNormalization) > 0
        assert _count(tiny_classifier(backbone="mobilenetv2", epochs=1).fit(X, y).backbone_,
                      keras.layers.BatchNormalization) == 0


@pytest.mark.slow
def test_bfloat16_xception_on_real_xrays_keeps_accuracy():
    """Real ImageNet Xception at 299 px on the BU covid-vs-normal task: bfloat16 features stay close
    to float32 ones and a linear model on them is as accurate on the held-out test images."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from xrayest import load_image_folder

    root = require_bu_data()
    weights = xception_weights()
    classes = ["covid", "normal"]
    X, y = load_image_folder(root / "train", classes=classes, image_size=299)
    X_test, y_test = load_image_folder(root / "test", classes=classes, image_size=299)
    features, scores = {}, {}
    for precision in ("float32", "bfloat16"):
        ext = FeatureExtractor("xception", weights=weights, precision=precision, batch_size=16)
        model = make_pipeline(ext, StandardScaler(), LogisticRegression(C=0.1, max_iter=5000)).fit(X, y)
        features[precision] = ext.transform(X_test)
        scores[precision] = model.score(X_test, y_test)
    f32, bf16 = features["float32"], features["bfloat16"]
    assert 0 < np.abs(bf16 - f32).mean() <= 0.08 * np.abs(f32).mean()
    assert scores["float32"] >= 0.85 and scores["bfloat16"] >= scores["float32"] - 1 / len(y_test)
