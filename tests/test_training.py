"""Training toolbox: augmentation, fine-tuning, callbacks, validation, class weights, cascade, voting."""

import numpy as np
import pytest
from sklearn.ensemble import VotingClassifier
from sklearn.model_selection import GridSearchCV

from conftest import make_images, tiny_classifier
from xrayest.augmentation import AUGMENT_PRESETS, AugmentedCopies, augment_config, build_augmentation
from xrayest.backbones import get_backbone_spec
from xrayest.cascade import CascadeClassifier


def rgb(X):
    return np.repeat(X[..., None], 3, -1).astype(np.float32)


class TestAugmentation:
    def test_presets_and_dict_validation(self):
        assert augment_config("medium") == AUGMENT_PRESETS["medium"]
        assert augment_config(None) is None
        with pytest.raises(ValueError, match="presets: light, medium, strong, xray"):
            augment_config("wild")
        with pytest.raises(ValueError, match="valid keys"):
            augment_config({"shear": 0.1})
        with pytest.raises(ValueError, match=r"augment\['zoom'\]"):
            augment_config({"zoom": 2})
        with pytest.raises(ValueError, match=r"augment\['sharpness'\] must be a number in \[0, 0.5\]"):
            augment_config({"sharpness": 0.7})
        for text in ("no", "false", 1, None):  # a string or number would have turned flips on
            with pytest.raises(ValueError, match=r"augment\['horizontal_flip'\] must be True or False"):
                augment_config({"horizontal_flip": text})
        with pytest.raises(ValueError, match=r"augment\['zoom'\] must be a number"):
            augment_config({"zoom": True})
        assert augment_config({"horizontal_flip": np.bool_(False), "zoom": 0.1}) == {"horizontal_flip": False,
                                                                                      "zoom": 0.1}

    def test_sharpness_blurs_and_sharpens(self):
        # pediatric normals are twice as sharp as its pneumonia films and as other hospitals' normals:
        # a shortcut this augmentation takes away
        X, _ = make_images(16, 32, 2)
        layer = build_augmentation({"sharpness": 0.5}, seed=0)
        images = rgb(X)

        def edges(a):
            return np.var(np.diff(np.asarray(a)[..., 0], axis=1), axis=(1, 2))

        ratio = edges(layer(images, training=True)) / edges(images)
        assert ratio.min() < 0.7 and ratio.max() > 1.3
        np.testing.assert_array_equal(np.asarray(layer(images, training=False)), images)

    def test_random_in_training_identity_at_inference(self):
        X, _ = make_images(4, 32, 2)
        layer = build_augmentation(augment_config("strong"), seed=1)
        images = rgb(X)
        np.testing.assert_array_equal(np.asarray(layer(images, training=False)), images)
        assert not np.allclose(np.asarray(layer(images, training=True)), images)

    def test_seeded_layers_draw_independently(self):
        # One seed for every layer made the rotation, zoom, brightness and contrast of an image one draw:
        # a big rotation always came with a strong zoom-in and a bright, high-contrast image.
        layer = build_augmentation(augment_config("strong"), seed=0)
        images = np.zeros((256, 16, 16, 3), np.float32)
        keys = {"RandomBrightness": "rgb_delta", "RandomContrast": "contrast_factor"}
        draws = {}
        for sub in layer.layers:
            kind = type(sub).__name__
            t = sub.get_random_transformation(images, training=True)
            if kind == "RandomGeometry":  # one draw per image of angle, zoom, crop and the two shifts
                for column, name in enumerate(["angle", "zoom", "crop", "shift_y", "shift_x"]):
                    draws[name] = np.asarray(t)[:, column]
            elif kind in keys:
                draws[sub.name] = np.asarray(t[keys[kind]]).reshape(-1)[:256]
        assert len(draws) == 7  # rotation, zoom, crop (a zoom-in), two shifts, brightness, contrast
        names = sorted(draws)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                r = np.corrcoef(draws[a], draws[b])[0, 1]
                assert abs(r) < 0.3, f"{a} and {b} draw correlated numbers (r={r:.2f})"

    def test_geometry_is_the_keras_layers_in_one_resampling(self):
        """RandomGeometry with the draws of Keras' RandomRotation, RandomZoom (zoom, then crop) and
        RandomTranslation applied in turn gives their result, resampled once instead of four times."""
        import keras

        from xrayest.layers import RandomGeometry

        yy, xx = np.mgrid[0:64, 0:64]
        smooth = (128 + 60 * np.sin(xx / 9.0) + 50 * np.cos(yy / 7.0) + 0.3 * xx).astype("float32")
        images = np.stack([smooth, smooth.T, smooth[::-1]])[..., None]
        L = keras.layers
        chain = [L.RandomRotation(0.05, fill_mode="nearest", seed=1), L.RandomZoom(0.1, fill_mode="nearest", seed=2),
                 L.RandomZoom((-0.16, 0.0), fill_mode="nearest", seed=3),
                 L.RandomTranslation(0.08, 0.08, fill_mode="nearest", seed=4)]
        x, draws = images, []
        for layer in chain:
            draws.append(layer.get_random_transformation(x, training=True))
            x = layer.transform_images(x, draws[-1], training=True)
        shifts = np.asarray(draws[3]["translations"])  # pixels: (width, height)
        same = np.stack([np.deg2rad(np.asarray(draws[0]["angle"])), np.asarray(draws[1]["height_zoom"])[:, 0],
                         np.asarray(draws[2]["height_zoom"])[:, 0], shifts[:, 1] / 64, shifts[:, 0] / 64], axis=1)
        same = keras.ops.convert_to_tensor(same.astype("float32"))
        once = np.asarray(RandomGeometry().transform_images(images, same))
        inner = (slice(None), slice(12, -12), slice(12, -12))  # the edges: filled once here, four times there
        assert np.abs(once - np.asarray(x))[inner].max() < 1.5  # of 0-255: interpolating once, not four times
        assert np.abs(once - images)[inner].max() > 30  # it moved

    def test_geometry_draws_the_keras_layers_ranges(self):
        from xrayest.layers import RandomGeometry

        layer = RandomGeometry(rotation=0.028, zoom=0.1, crop=0.16, shift=0.05, seed=0)
        t = np.asarray(layer.get_random_transformation(np.zeros((4000, 8, 8, 1), "float32")))
        bounds = [(np.deg2rad(10.08), 0), (1.1, 0.9), (1.0, 0.84), (0.05, -0.05), (0.05, -0.05)]
        for column, (high, low) in enumerate(bounds):
            low = -high if low == 0 else low
            margin = 0.02 * (high - low)  # 4,000 draws reach within 2% of each end
            assert low <= t[:, column].min() < low + margin and high - margin < t[:, column].max() <= high
        restored = RandomGeometry.from_config(layer.get_config())
        assert restored.get_config() == layer.get_config() and restored.crop == 0.16

    def test_fit_with_augmentation_predicts_like_composed_model(self, binary_images):
        X, y = binary_images
        clf = tiny_classifier(augment={"rotation": 0.05, "brightness": 0.2}, epochs=2).fit(X, y)
        assert clf.training_plan_.phases[0].on_features is False  # augmented images go through the backbone every epoch
        full = clf.model_.predict(rgb(X), verbose=0)[:, 0]
        np.testing.assert_allclose(clf.predict_proba(X)[:, 1], full, atol=1e-6)

    def test_xray_preset_never_flips(self):
        assert "horizontal_flip" not in augment_config("xray") and augment_config("xray")["crop"] == 0.16

    def test_test_time_augmentation_averages_augmented_copies(self, binary_images):
        X, y = binary_images
        clf = tiny_classifier(augment="strong", epochs=1, random_state=0).fit(X, y)
        plain = clf.predict_proba(X)
        clf.set_params(tta=3)
        averaged = clf.predict_proba(X)
        assert averaged.shape == plain.shape and np.allclose(averaged.sum(1), 1)
        assert not np.allclose(averaged, plain, atol=1e-4)
        np.testing.assert_allclose(clf.predict_proba(X), averaged, rtol=1e-5)  # seeded: the same copies each call
        # the average is over the plain pass and 3 augmented ones: by hand with the same copies
        copies = AugmentedCopies(augment_config("strong"), seed=0)
        images = rgb(X)
        by_hand = clf.model_.predict(images, verbose=0)[:, 0].astype(np.float64)
        for k in range(3):
            by_hand += clf.model_.predict(copies(images, k), verbose=0)[:, 0]
        np.testing.assert_allclose(averaged[:, 1], by_hand / 4, atol=1e-5)
        # the same scan scores the same alone, or among other images in another order (was off by up to 0.075)
        alone = clf.predict_proba(X[5:6])
        reordered = clf.predict_proba(X[::-1])
        np.testing.assert_allclose(alone[0], averaged[5], atol=1e-6)
        np.testing.assert_allclose(reordered[::-1], averaged, atol=1e-6)
        # copy k is a real transformation, the same for every image
        one = copies(images[:1], 0)
        assert not np.allclose(one, images[:1]) and np.allclose(copies(images[:2], 0)[:1], one)
        np.testing.assert_allclose(clf.transform(X), clf.set_params(tta=0).transform(X))  # embeddings never augment


class TestFineTuning:
    def _trainable_layers(self, clf):
        backbone = clf.backbone_
        return [layer.name for layer in backbone.layers if layer.trainable and layer.weights]

    def test_last_n_layers(self, binary_images):
        X, y = binary_images
        clf = tiny_classifier(fine_tune=3, epochs=1).fit(X, y)
        assert self._trainable_layers(clf) == ["block5_conv2", "block5_conv3"]
        assert not clf.trunk_.is_frozen

    def test_after_named_layer_and_weights_change(self, binary_images):
        X, y = binary_images
        from xrayest.trunk import Trunk

        before = Trunk.trainable(get_backbone_spec("vgg16"), None, (32, 32), seed=0, fine_tune="block4_pool")
        before = before.backbone.get_layer("block5_conv1").get_weights()[0].copy()
        clf = tiny_classifier(fine_tune="block4_pool", epochs=1).fit(X, y)
        assert self._trainable_layers(clf) == ["block5_conv1", "block5_conv2", "block5_conv3"]
        after = clf.backbone_.get_layer("block5_conv1").get_weights()[0]
        assert not np.allclose(before, after)

    def test_batchnorm_stays_frozen(self, binary_images):
        from xrayest.trunk import unfreeze
        import keras

        backbone = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
        unfreeze(backbone, 20)
        tail = backbone.layers[-20:]
        assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in tail)
        assert all(not layer.trainable for layer in tail if isinstance(layer, keras.layers.BatchNormalization))
        assert any(layer.trainable for layer in tail if isinstance(layer, keras.layers.Conv2D))
        with pytest.raises(ValueError, match="not found"):
            unfreeze(backbone, "no_such_layer")

    def test_two_phase_schedule(self, binary_images):
        X, y = binary_images
        import keras

        rates = []
        seen = keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: rates.append(float(seen.model.optimizer.learning_rate)))
        clf = tiny_classifier(fine_tune=2, fine_tune_epochs=2, epochs=3, learning_rate=1e-3, callbacks=[seen]).fit(X, y)
        assert len(clf.history_["loss"]) == 5
        assert rates == pytest.approx([1e-3] * 3 + [1e-4] * 2)  # phase two at learning_rate / 10
        full = clf.model_.predict(rgb(X), verbose=0)[:, 0]
        np.testing.assert_allclose(clf.predict_proba(X)[:, 1], full, atol=1e-6)

    def test_fine_tuning_trains_on_the_cached_cut_like_on_images(self, binary_images, clean_cache):
        X, y = binary_images
        # one batch per epoch (batch_size >= n): the order of rows cannot differ between the two paths
        params = dict(fine_tune="block4_pool", fine_tune_epochs=2, epochs=2, batch_size=32)
        cut = tiny_classifier(**params).fit(X, y)
        full = tiny_classifier(cache_features=False, **params).fit(X, y)
        assert cut.training_inputs_ == ["features", "cut"] and full.training_inputs_ == ["features", "images"]
        np.testing.assert_allclose(cut.predict_proba(X), full.predict_proba(X), atol=2e-4)
        np.testing.assert_allclose(cut.predict_proba(X)[:, 1], cut.model_.predict(rgb(X), verbose=0)[:, 0], atol=1e-6)
        misses = clean_cache.misses
        tiny_classifier(**params).fit(X, y)  # a refit reads the cut activations from the cache
        assert clean_cache.misses == misses

    def test_augmentation_or_a_cut_inside_a_block_trains_on_images(self, binary_images):
        from xrayest.trunk import Trunk

        X, y = binary_images
        clf = tiny_classifier(fine_tune="block4_pool", fine_tune_epochs=1, epochs=1, augment="light").fit(X, y)
        assert clf.training_inputs_ == ["images", "images"]
        # residual_cnn: unfreezing after res3_conv1 leaves the block's shortcut reading an earlier tensor
        trunk = Trunk.trainable(get_backbone_spec("residual_cnn"), None, (32, 32), seed=0, fine_tune="res3_conv1")
        assert trunk.cut() is None
        trunk = Trunk.trainable(get_backbone_spec("residual_cnn"), None, (32, 32), seed=0, fine_tune="res2_pool")
        front, back = trunk.cut()
        images = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
        np.testing.assert_allclose(back.predict(front.model.predict(images, verbose=0), verbose=0),
                                   trunk.model.predict(images, verbose=0), atol=1e-5)

    def test_fine_tune_epochs_needs_fine_tune(self, binary_images):
        with pytest.raises(ValueError, match="fine_tune_epochs needs fine_tune"):
            tiny_classifier(fine_tune_epochs=2).fit(*binary_images)


class TestCallbacksAndValidation:
    def test_early_stopping_stops(self, binary_images):
        X, y = binary_images
        # learning_rate=1e-12: updates vanish below float32 resolution, so the loss stops improving
        clf = tiny_classifier(epochs=50, learning_rate=1e-12, early_stopping=2).fit(X, y)
        assert len(clf.history_["loss"]) < 10

    def test_reduce_lr_and_schedule(self, binary_images):
        X, y = binary_images
        clf = tiny_classifier(epochs=4, lr_schedule="cosine", learning_rate=1e-2).fit(X, y)
        rates = clf.history_["learning_rate"]
        assert rates[0] == pytest.approx(1e-2) and rates[-1] < rates[0]
        clf = tiny_classifier(epochs=6, learning_rate=1e-12, reduce_lr=1).fit(X, y)
        assert "learning_rate" in clf.history_

    def test_user_callback_is_called(self, binary_images):
        import keras

        seen = []
        callback = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(epoch))
        tiny_classifier(epochs=2, callbacks=[callback]).fit(*binary_images)
        assert seen == [0, 1]

    def test_explicit_validation_data(self, binary_images):
        X, y = binary_images
        clf = tiny_classifier(epochs=2).fit(X[:18], y[:18], validation_data=(X[18:], y[18:]))
        assert len(clf.history_["val_loss"]) == 2

    def test_validation_split_is_stratified(self):
        from xrayest.training import stratified_split

        y = np.array([0] * 20 + [1] * 20)  # sorted: Keras' own split would validate on class 1 only
        train, val = stratified_split(y, 0.25, random_state=0)
        assert sorted(np.bincount(y[val])) == [5, 5] and len(set(train) & set(val)) == 0

    def test_class_weight_balanced_changes_the_fit(self):
        X, y = make_images(24, 32, 2)
        keep = np.r_[np.flatnonzero(y == 0), np.flatnonzero(y == 1)[:4]]
        a = tiny_classifier(epochs=3).fit(X[keep], y[keep]).predict_proba(X)
        b = tiny_classifier(epochs=3, class_weight="balanced").fit(X[keep], y[keep]).predict_proba(X)
        assert not np.allclose(a, b)


class TestScratchCNNs:
    @pytest.mark.parametrize("backbone, depth", [("sutd_cnn", 5), ("sutd_residual", 9)])
    def test_sutd_recipes_map_150px_to_4x4(self, backbone, depth):
        from xrayest.trunk import Trunk

        model = Trunk.trainable(get_backbone_spec(backbone), None, (150, 150), seed=0).backbone
        assert model.output_shape[1:3] == (4, 4)
        convs = [layer for layer in model.layers if type(layer).__name__ == "Conv2D" and layer.kernel_size == (3, 3)]
        assert len(convs) == depth

    @pytest.mark.parametrize("backbone", ["sutd_cnn", "sutd_residual"])
    def test_pooling_before_relu_is_relu_before_pooling(self, backbone):
        """The backbones pool before their ReLU: the same function and gradients as ReLU then pooling."""
        import keras
        import tensorflow as tf

        from xrayest.backbones import get_backbone_spec
        from xrayest.weights import build_backbone

        model = build_backbone(get_backbone_spec(backbone), (40, 40, 1))
        rng = np.random.default_rng(0)
        for layer in model.layers:  # BatchNorm statistics and scales of both signs
            if layer.weights:
                layer.set_weights([rng.normal(0.5, 1.0, w.shape).astype("float32") for w in layer.get_weights()])
        def sources(node):  # names of the layers feeding a layer, from the model's (public) config
            if isinstance(node, dict):
                tensor = node.get("class_name") == "__keras_tensor__"
                history = node.get("config", {}).get("keras_history") if tensor else None
                return [history[0]] if history else [n for v in node.values() for n in sources(v)]
            return [n for v in node for n in sources(v)] if isinstance(node, (list, tuple)) else []

        inputs = {cfg["name"]: sources(cfg["inbound_nodes"]) for cfg in model.get_config()["layers"]}
        tensors = {model.layers[0].name: model.inputs[0]}
        reordered = 0
        for layer in model.layers[1:]:  # the original order: every ReLU back before its pooling
            args = [tensors[name] for name in inputs[layer.name]]
            if isinstance(layer, keras.layers.MaxPooling2D):
                tensors[layer.name] = keras.layers.MaxPooling2D(2)(keras.layers.ReLU()(args[0]))
            elif isinstance(layer, keras.layers.ReLU) and inputs[layer.name][0].endswith("_pool"):
                tensors[layer.name] = args[0]  # its ReLU already ran before the pooling
                reordered += 1
            else:
                tensors[layer.name] = layer(args if len(args) > 1 else args[0])
        reference = keras.Model(model.inputs, tensors[model.layers[-1].name])
        assert reordered == {"sutd_cnn": 5, "sutd_residual": 5}[backbone]
        images = tf.constant(rng.uniform(0, 1, (4, 40, 40, 1)).astype("float32"))
        grads = []
        for network in (model, reference):
            with tf.GradientTape() as tape:
                out = network(images, training=True)
                loss = tf.reduce_sum(out * tf.cast(tf.range(tf.size(out[0])), out.dtype)[None] / 100)
            grads.append(tape.gradient(loss, network.trainable_variables))
            if network is model:
                first = out
        np.testing.assert_allclose(first, out, rtol=1e-5, atol=1e-5)
        for a, b in zip(*grads):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)

    def test_sutd_cascade_recipe(self):
        from xrayest import make_recipe

        X, y_num = make_images(24, 32, 3)
        y = np.array(["normal", "bacterial", "viral"])[y_num]
        cascade = make_recipe("sutd_cascade", image_size=32, epochs=1, batch_size=8, validation_split=0.0,
                              precision="float32", random_state=0).fit(X, y)
        proba = cascade.predict_proba(X)
        assert list(cascade.classes_) == ["bacterial", "normal", "viral"] and np.allclose(proba.sum(1), 1)
        assert cascade.estimators_["root"].backbone == "sutd_cnn"
        assert list(cascade.estimators_["root"].classes_) == ["infected", "normal"]
        with pytest.raises(ValueError, match="unknown recipe 'vgg'"):
            make_recipe("vgg")

    @pytest.mark.slow
    @pytest.mark.parametrize("backbone", ["small_cnn", "residual_cnn", "sutd_cnn", "sutd_residual"])
    def test_train_from_scratch_on_grayscale(self, backbone):
        from xrayest import make_synthetic_xrays

        X, y = make_synthetic_xrays(90, 32, classes=("normal", "pneumonia"), random_state=0)
        clf = tiny_classifier(backbone=backbone, epochs=15, hidden_units=(32,), learning_rate=3e-3).fit(X, y)
        assert not clf.trunk_.is_frozen
        assert clf.score(X, y) > 0.8


class TestEnsembles:
    @pytest.mark.slow
    def test_cascade_probabilities_and_grid(self):
        X, y_num = make_images(36, 32, 3)
        y = np.array(["normal", "covid", "pneumonia"])[y_num]
        cascade = CascadeClassifier([
            ("root", tiny_classifier(epochs=25, learning_rate=3e-3, hidden_units=(32,)),
             {"normal": ["normal"], "infected": ["covid", "pneumonia"]}),
            ("infected", tiny_classifier(epochs=25, learning_rate=3e-3, hidden_units=(32,)), None),
        ])
        cascade.fit(X, y)
        proba = cascade.predict_proba(X)
        assert proba.shape == (36, 3) and np.allclose(proba.sum(1), 1)
        assert list(cascade.classes_) == ["covid", "normal", "pneumonia"]
        root = cascade.estimators_["root"].predict_proba(X)
        normal_col = list(cascade.estimators_["root"].classes_).index("normal")
        np.testing.assert_allclose(proba[:, 1], root[:, normal_col], atol=1e-6)
        assert cascade.score(X, y) > 0.8
        grid = GridSearchCV(cascade.set_params(root__epochs=2, infected__epochs=2),
                            {"infected__dropout": [0.0, 0.3]}, cv=2).fit(X, y)
        assert grid.best_params_["infected__dropout"] in (0.0, 0.3)

    def test_cascade_rejects_incomplete_plans(self):
        X, y_num = make_images(12, 32, 3)
        y = np.array(["normal", "covid", "pneumonia"])[y_num]
        bad = CascadeClassifier([("root", tiny_classifier(),
                                  {"normal": ["normal"], "infected": ["covid", "pneumonia"]})])
        with pytest.raises(ValueError, match="add a stage named 'infected'"):
            bad.fit(X, y)
        bad = CascadeClassifier([("root", tiny_classifier(), {"normal": ["normal"], "covid": ["covid"]})])
        with pytest.raises(ValueError, match="exactly one group"):
            bad.fit(X, y)
        # stages handing images to each other in a cycle: an error at once (fit never returned)
        cycle = CascadeClassifier([
            ("root", tiny_classifier(), {"normal": ["normal"], "infected": ["covid", "pneumonia"]}),
            ("infected", tiny_classifier(), {"covid": ["covid"], "again": ["pneumonia"]}),
            ("again", tiny_classifier(), {"infected": ["pneumonia"]})])
        with pytest.raises(ValueError, match="stages form a cycle: stage 'again' hands images to stage 'infected'"):
            cycle.fit(X, y)
        with pytest.raises(ValueError, match="cycle"):
            CascadeClassifier([("root", tiny_classifier(), {"root": ["normal", "covid", "pneumonia"]})]).fit(X, y)

    def test_soft_voting_over_repeated_runs(self, binary_images):
        X, y = binary_images
        vote = VotingClassifier([(f"run{i}", tiny_classifier(epochs=2, random_state=i)) for i in range(3)],
                                voting="soft").fit(X, y)
        members = np.mean([est.predict_proba(X) for est in vote.estimators_], axis=0)
        np.testing.assert_allclose(vote.predict_proba(X), members, atol=1e-6)


class TestBatchNormRecalibration:
    def test_moving_statistics_become_the_average_of_batch_statistics(self):
        import keras

        from xrayest.layers import FusedBatchNormalization
        from xrayest.training import recalibrate_batch_norm

        inputs = keras.Input((4, 4, 2))
        frozen = keras.layers.BatchNormalization(name="frozen")
        model = keras.Model(inputs, frozen(FusedBatchNormalization(momentum=0.99, name="trained")(inputs)))
        frozen.trainable = False
        batches = [np.random.default_rng(i).normal(i, 1 + i, (3, 4, 4, 2)).astype("float32") for i in range(4)]
        before = [w.copy() for w in frozen.get_weights()]
        assert recalibrate_batch_norm(model, batches) == 1
        trained = model.get_layer("trained")
        np.testing.assert_allclose(trained.moving_mean, np.mean([b.mean(axis=(0, 1, 2)) for b in batches], axis=0),
                                   rtol=1e-5)
        np.testing.assert_allclose(trained.moving_variance,
                                   np.mean([b.var(axis=(0, 1, 2)) for b in batches], axis=0), rtol=1e-4)
        assert trained.momentum == 0.99
        for a, b in zip(before, frozen.get_weights()):
            np.testing.assert_array_equal(a, b)

    def test_a_scratch_cnn_scores_on_its_training_images_as_it_trained(self):
        from xrayest import make_synthetic_xrays

        X, y = make_synthetic_xrays(90, 32, classes=("normal", "pneumonia"), random_state=0)
        # seed 0 ended with training loss 0.02 but 0.71 accuracy on the same images in inference mode
        # before recalibration (the moving averages lagged the weights)
        clf = tiny_classifier(backbone="residual_cnn", epochs=15, hidden_units=(32,), learning_rate=3e-3).fit(X, y)
        assert clf.score(X, y) >= 0.95

    def test_validation_is_scored_with_recalibrated_statistics(self):
        from xrayest import make_synthetic_xrays
        from xrayest.training import stratified_split

        X, y = make_synthetic_xrays(60, 32, classes=("normal", "pneumonia"), random_state=0)
        clf = tiny_classifier(backbone="residual_cnn", epochs=4, hidden_units=(32,), learning_rate=3e-3,
                              validation_split=0.25).fit(X, y)
        assert len(clf.history_["val_accuracy"]) == len(clf.history_["val_loss"]) == 4
        # the last epoch's score is the final model's (both recalibrated on all training rows)
        _, val = stratified_split(np.searchsorted(clf.classes_, y), 0.25, 0)
        assert clf.history_["val_accuracy"][-1] == pytest.approx(clf.score(X[val], y[val]))


def test_a_gray_backbone_is_augmented_on_one_channel_with_the_same_result():
    import tensorflow as tf

    from xrayest import XrayCNNClassifier
    from xrayest.augmentation import augment_config, build_augmentation
    from xrayest.layers import OnGray

    rng = np.random.default_rng(0)
    X, y = rng.integers(0, 255, (16, 32, 32)).astype(np.uint8), np.array(["a", "b"] * 8)
    gray = XrayCNNClassifier("sutd_cnn", weights=None, image_size=32, augment="xray", epochs=1, batch_size=8,
                             pooling="flatten", random_state=0).fit(X, y)
    assert "augment_gray" in [layer.name for layer in gray.model_.layers]
    rgb = XrayCNNClassifier("vgg16", weights=None, image_size=32, augment="xray", epochs=1, batch_size=8,
                            freeze_backbone=False, random_state=0)
    assert "augment_gray" not in [layer.name for layer in rgb.fit(X, y).model_.layers]
    images = tf.constant(np.repeat(X[..., None], 3, axis=-1).astype(np.float32))
    three = build_augmentation(augment_config("xray"), seed=3)(images, training=True).numpy()
    one = OnGray(build_augmentation(augment_config("xray"), seed=3))(images, training=True).numpy()
    assert one.shape == three.shape and np.abs(one - three).max() < 1e-3  # the same draws, a third of the work
    assert np.array_equal(OnGray(build_augmentation(augment_config("xray"), seed=3))(images), images)  # inference
