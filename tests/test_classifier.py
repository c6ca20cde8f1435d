"""XrayCNNClassifier behaviour: the sklearn contract, labels, inputs, parity, persistence."""

import pickle

import joblib
import keras
import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin, clone, is_classifier
from sklearn.calibration import CalibratedClassifierCV
from sklearn.model_selection import GridSearchCV, StratifiedKFold, check_cv

from conftest import tiny_classifier
from xrayest import XrayCNNClassifier


class TestSklearnContract:
    def test_is_classifier_and_tags(self):
        clf = XrayCNNClassifier()
        assert is_classifier(clf)
        assert type(clf).__mro__.index(ClassifierMixin) < type(clf).__mro__.index(BaseEstimator)

    def test_cv_3_is_stratified(self, binary_images):
        X, y = binary_images
        assert isinstance(check_cv(3, y, classifier=is_classifier(tiny_classifier())), StratifiedKFold)

    def test_gridsearch_runs_stratified(self, binary_images):
        X, y = binary_images
        y_sorted = np.sort(y)  # sorted labels: plain KFold would leave single-class test folds
        grid = GridSearchCV(tiny_classifier(epochs=1), {"dropout": [0.0, 0.2]}, cv=3, error_score="raise")
        grid.fit(X, y_sorted)
        assert set(grid.cv_results_) >= {"mean_test_score", "param_dropout"}
        for _, test in StratifiedKFold(3).split(X, y_sorted):
            assert len(np.unique(y_sorted[test])) == 2

    def test_init_stores_only_and_clone_keeps_every_parameter(self):
        clf = XrayCNNClassifier("vgg19", weights=None, hidden_units=(256, 256, 64), dropout=(0.25, 0.25, 0.0),
                                learning_rate=1e-4, epochs=40, batch_size=10, validation_split=0.2, device="cpu")
        params = clf.get_params()
        assert params["backbone"] == "vgg19" and params["dropout"] == (0.25, 0.25, 0.0)
        assert clone(clf).get_params() == params
        assert not any(k.endswith("_") for k in vars(clf))

    def test_invalid_parameters_raise_at_fit(self, binary_images):
        X, y = binary_images
        with pytest.raises(ValueError, match="pooling"):
            tiny_classifier(pooling="median").fit(X, y)
        with pytest.raises(ValueError, match="unknown backbone 'vgg99'.*vgg16, vgg19"):
            tiny_classifier(backbone="vgg99").fit(X, y)
        with pytest.raises(ValueError, match="image_size"):
            tiny_classifier(backbone="xception", image_size=32).fit(X, y)


class TestLabelsAndOutputs:
    def test_string_labels_round_trip_binary_sigmoid(self, binary_images):
        X, y = binary_images
        labels = np.array(["covid", "normal"])[y]
        clf = tiny_classifier().fit(X, labels)
        assert list(clf.classes_) == ["covid", "normal"]
        assert clf.head_.output_shape == (None, 1)
        assert clf.head_.layers[-1].activation.__name__ == "sigmoid"
        assert set(clf.predict(X)) <= {"covid", "normal"}
        proba = clf.predict_proba(X[:1])
        assert proba.shape == (1, 2) and np.allclose(proba.sum(1), 1)

    def test_multiclass_softmax(self, multiclass_images):
        X, y = multiclass_images
        clf = tiny_classifier().fit(X, y + 10)
        assert list(clf.classes_) == [10, 11, 12]
        assert clf.head_.output_shape == (None, 3)
        assert clf.head_.layers[-1].activation.__name__ == "softmax"
        assert np.allclose(clf.predict_proba(X).sum(1), 1, atol=1e-5)

    def test_learns_a_real_signal(self, multiclass_images):
        X, y = multiclass_images
        clf = tiny_classifier(epochs=30, learning_rate=3e-3, hidden_units=(32,)).fit(X, y)
        assert clf.score(X, y) >= 0.9

    def test_history_and_transform(self, binary_images):
        X, y = binary_images
        clf = tiny_classifier(epochs=2, validation_split=0.25, hidden_units=(16, 8)).fit(X, y)
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_time"):
            assert len(clf.history_[key]) == 2, key
        assert clf.transform(X).shape == (len(X), 8)


class TestInputs:
    def test_grayscale_rgb_rgba_and_channels_last_agree(self, binary_images):
        X, y = binary_images
        clf = tiny_classifier(epochs=1).fit(X, y)
        p_gray = clf.predict_proba(X)
        p_1 = clf.predict_proba(X[..., None])
        p_rgb = clf.predict_proba(np.repeat(X[..., None], 3, -1))
        rgba = np.concatenate([np.repeat(X[..., None], 3, -1), np.full(X.shape + (1,), 7, np.uint8)], -1)
        p_rgba = clf.predict_proba(rgba)
        np.testing.assert_allclose(p_gray, p_1, rtol=0, atol=1e-6)
        np.testing.assert_allclose(p_gray, p_rgb, rtol=0, atol=1e-6)
        np.testing.assert_allclose(p_gray, p_rgba, rtol=0, atol=1e-6)

    @pytest.mark.parametrize("backbone", ["vgg16", "small_cnn"])
    def test_never_mutates_callers_float_array(self, binary_images, backbone):
        X, y = binary_images
        Xf = X.astype(np.float32) + 0.5
        before = Xf.copy()
        clf = tiny_classifier(backbone=backbone, epochs=1).fit(Xf, y)
        clf.predict(Xf)
        clf.transform(Xf)
        np.testing.assert_array_equal(Xf, before)

    def test_bad_shapes_name_the_problem(self, binary_images):
        X, y = binary_images
        clf = tiny_classifier(epochs=1)
        with pytest.raises(ValueError, match="5 channels"):
            clf.fit(np.zeros((4, 8, 8, 5)), [0, 1, 0, 1])
        with pytest.raises(ValueError, match="24 images but y has 23 labels"):
            clf.fit(X, y[:-1])
        with pytest.raises(ValueError, match="NaN"):
            clf.fit(np.full((4, 8, 8), np.nan), [0, 1, 0, 1])

    def test_unit_range_floats_warn(self, binary_images):
        X, y = binary_images
        with pytest.warns(UserWarning, match="0-255"):
            tiny_classifier(epochs=1).fit(X / 255.0, y)

    def test_image_paths(self, binary_images, tmp_path):
        from PIL import Image

        X, y = binary_images
        paths = []
        for i, img in enumerate(X):
            path = tmp_path / f"img{i}.png"
            Image.fromarray(img).save(path)
            paths.append(str(path))
        clf = tiny_classifier(epochs=1).fit(paths, y)
        np.testing.assert_allclose(clf.predict_proba(paths), clf.predict_proba(X), atol=1e-5)


class TestReproducibilityAndPersistence:
    def test_random_state_gives_identical_predictions(self, binary_images):
        X, y = binary_images
        a = tiny_classifier(backbone="small_cnn", image_size=16, epochs=2).fit(X, y).predict_proba(X)
        b = tiny_classifier(backbone="small_cnn", image_size=16, epochs=2).fit(X, y).predict_proba(X)
        np.testing.assert_array_equal(a, b)

    def test_pickle_and_joblib_round_trip_exactly(self, binary_images, tmp_path):
        X, y = binary_images
        clf = tiny_classifier(epochs=1).fit(X, np.array(["a", "b"])[y])
        expected = clf.predict_proba(X)
        again = pickle.loads(pickle.dumps(clf))
        np.testing.assert_array_equal(again.predict_proba(X), expected)
        joblib.dump(clf, tmp_path / "clf.joblib")
        np.testing.assert_array_equal(joblib.load(tmp_path / "clf.joblib").predict_proba(X), expected)
        assert list(again.classes_) == ["a", "b"]

    def test_unfitted_pickles_cheaply(self):
        assert len(pickle.dumps(XrayCNNClassifier())) < 2000

    def test_calibrated_classifier(self, binary_images):
        X, y = binary_images
        cal = CalibratedClassifierCV(tiny_classifier(epochs=1), cv=2).fit(X, y)
        assert cal.predict_proba(X).shape == (len(X), 2)

    def test_class_weight_does_not_touch_callers_sample_weight(self, binary_images):
        X, y = binary_images
        sw = np.ones(len(y))
        tiny_classifier(epochs=1, class_weight="balanced").fit(X[:-3], y[:-3], sample_weight=sw[:-3])
        np.testing.assert_array_equal(sw, 1.0)


class TestModelStructure:
    def _build(self, **params):
        # One epoch on two blank images: the network is built at its full published size.
        clf = XrayCNNClassifier(weights=None, image_size=224, epochs=1, batch_size=2, random_state=0, **params)
        return clf.fit(np.zeros((2, 8, 8), np.uint8), np.array([0, 1])).model_

    @staticmethod
    def _trainable(model):
        return sum(int(np.prod(w.shape)) for w in model.trainable_weights)

    def test_published_vgg19_head(self):
        model = self._build(backbone="vgg19", pooling="flatten", hidden_units=(256, 256, 64),
                            dropout=(0.25, 0.25, 0.0))
        assert model.count_params() == 26_529_473
        assert self._trainable(model) == 6_505_089

    def test_published_vgg16_batchnorm_head(self):
        model = self._build(backbone="vgg16", pooling="flatten", batch_norm=True, hidden_units=(256,), dropout=0.5)
        assert model.count_params() == 21_139_777
        assert self._trainable(model) == 6_424_065

    def test_custom_keras_model_backbone_is_copied_not_mutated(self, binary_images):
        X, y = binary_images
        inputs = keras.Input((32, 32, 3))
        outputs = keras.layers.Conv2D(4, 3, strides=4, activation="relu")(inputs)
        mine = keras.Model(inputs, outputs)
        clf = tiny_classifier(backbone=mine, image_size=None, epochs=1).fit(X, y)
        assert mine.trainable and clf.trunk_.is_frozen
        assert clf.image_size_ == (32, 32)
        assert clf.predict(X).shape == (len(X),)


def test_seeding_leaves_no_global_determinism_behind(binary_images):
    from tensorflow.python.framework import config  # TF has no public read of this switch

    X, y = binary_images
    tiny_classifier(epochs=1, random_state=3).fit(X, y)
    assert not config.is_op_determinism_enabled()
    # a later unseeded fit (random ops without a seed) still works
    tiny_classifier(epochs=1, random_state=None, dropout=0.3).fit(X, y)
