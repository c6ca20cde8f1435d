"""FeatureExtractor: frozen-backbone features in Pipelines, cheap pickles, nothing built twice."""

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from conftest import tiny_extractor
from xrayest.cache import default_cache


@pytest.fixture(autouse=True)
def empty_cache(clean_cache):
    return clean_cache


class TestFeatureExtractor:
    def test_pipeline_cv_and_grid(self, multiclass_images):
        X, y = multiclass_images
        pipe = make_pipeline(tiny_extractor(), StandardScaler(), LogisticRegression(max_iter=500))
        assert cross_val_score(pipe, X, y, cv=3).mean() > 0.5
        grid = GridSearchCV(pipe, {"logisticregression__C": [0.1, 1.0]}, cv=3).fit(X, y)
        assert grid.best_estimator_.predict(X).shape == (len(X),)

    def test_feature_shapes_and_names(self, binary_images):
        X, _ = binary_images
        for pooling, width in [("avg", 512), ("max", 512), ("flatten", 512)]:  # VGG16 at 32 px -> 1x1x512
            ext = tiny_extractor(pooling=pooling).fit(X)
            feats = ext.transform(X)
            assert feats.shape == (len(X), width) and feats.dtype == np.float32
            names = ext.get_feature_names_out()
            assert len(names) == width and names[0] == f"vgg16_{pooling}_0"

    def test_equals_bare_model_predict(self, binary_images):
        X, _ = binary_images
        ext = tiny_extractor().fit(X)
        bare = ext.trunk_.model.predict(np.repeat(X[..., None], 3, -1).astype(np.float32), verbose=0)
        np.testing.assert_allclose(ext.transform(X), bare, rtol=1e-5, atol=1e-6)

    def test_clone_and_cheap_pickle_round_trip(self, binary_images):
        X, _ = binary_images
        ext = tiny_extractor().fit(X)
        expected = ext.transform(X)
        trunk = ext.trunk_.model
        blob = pickle.dumps(ext)
        assert len(blob) < 10_000  # the 15M-parameter backbone is rebuilt, not shipped
        assert ext.trunk_.model is trunk  # pickling left the original untouched
        default_cache().clear()
        np.testing.assert_allclose(pickle.loads(blob).transform(X), expected, rtol=1e-6)
        assert clone(ext).get_params() == ext.get_params()

    def test_fit_of_a_known_backbone_builds_nothing(self, binary_images, monkeypatch):
        from xrayest import trunk as T

        X, _ = binary_images
        expected = tiny_extractor().fit(X).transform(X)
        builds = []
        real = T.make_backbone
        monkeypatch.setattr(T, "make_backbone", lambda *a, **k: builds.append(a) or real(*a, **k))
        ext = tiny_extractor().fit(X)
        assert builds == [] and ext.n_features_out_ == expected.shape[1]
        np.testing.assert_array_equal(ext.transform(X), expected)  # from the cache
        assert builds == []

    def test_n_features_in_follows_the_last_fit(self, binary_images):
        X, _ = binary_images
        rows = X.reshape(len(X), -1)[:, :64].astype(np.float32)
        ext = tiny_extractor().fit(rows)
        assert ext.n_features_in_ == 64
        with pytest.raises(ValueError, match="X has 63 features, but FeatureExtractor is expecting 64"):
            ext.transform(rows[:, :63])
        assert not hasattr(ext.fit(X), "n_features_in_")  # images have no feature count

    def test_pickle_refuses_changed_weights(self, binary_images, tmp_path):
        from xrayest.backbones import get_backbone_spec
        from xrayest.weights import build_backbone

        X, _ = binary_images
        model = build_backbone(get_backbone_spec("vgg16"), (32, 32, 3), None)
        path = tmp_path / "w.weights.h5"
        model.save_weights(path)
        blob = pickle.dumps(tiny_extractor(weights=str(path)).fit(X))
        model.set_weights([w * 2 for w in model.get_weights()])
        model.save_weights(path)
        with pytest.raises(RuntimeError, match="changed since"):
            pickle.loads(blob).transform(X)

    def test_paths_and_arrays_stream_in_batches(self, binary_images, tmp_path):
        from PIL import Image

        X, _ = binary_images
        paths = []
        for i, img in enumerate(X):
            paths.append(str(tmp_path / f"{i}.png"))
            Image.fromarray(img).save(paths[-1])
        ext = tiny_extractor(batch_size=4).fit(paths)
        np.testing.assert_allclose(ext.transform(paths), ext.transform(X), rtol=1e-4, atol=1e-4)

    def test_not_fitted(self, binary_images):
        from sklearn.exceptions import NotFittedError

        with pytest.raises(NotFittedError):
            tiny_extractor().transform(binary_images[0])


def test_progress_bar_only_when_verbose(binary_images, capfd):
    X, _ = binary_images
    tiny_extractor(batch_size=4, verbose=1).fit(X).transform(X)
    assert "backbone features" in capfd.readouterr().err
    default_cache().clear()
    tiny_extractor(batch_size=4, verbose=0).fit(X).transform(X)
    assert "backbone features" not in capfd.readouterr().err


def test_unlabeled_images_through_scikit_learns_self_training():
    """Unlabeled films (label -1, scikit-learn's semi-supervised convention) in one Pipeline: FeatureExtractor,
    then SelfTrainingClassifier over a linear model (it needs 2-D rows, so it comes after the features)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.semi_supervised import SelfTrainingClassifier

    from conftest import make_images
    from xrayest import FeatureExtractor

    X, y = make_images(24, 32, 2)
    y_partial = np.where(np.arange(24) < 12, y, -1)  # half the films unlabeled
    extractor = FeatureExtractor("small_cnn", weights=None, image_size=32, random_state=0)
    model = make_pipeline(extractor, SelfTrainingClassifier(LogisticRegression(max_iter=500), criterion="k_best",
                                                              k_best=4))
    model.fit(X, y_partial)
    self_training = model[-1]
    assert (self_training.transduction_[12:] != -1).any()  # some unlabeled films were pseudo-labelled
    np.testing.assert_array_equal(self_training.transduction_[:12], y[:12])  # the labelled ones kept theirs
    assert model.predict(X).shape == (24,) and set(model.classes_) == {0, 1}
