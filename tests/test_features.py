"""Frozen-backbone features: computed once per image, cached correctly, usable in Pipelines."""

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from conftest import make_images, tiny_classifier
from xrayest import FeatureExtractor
from xrayest.features import FeatureCache, default_cache
from xrayest.inputs import as_image_source


@pytest.fixture(autouse=True)
def empty_cache():
    cache = default_cache()
    cache.clear()
    cache.hits = cache.misses = 0
    yield cache
    cache.clear()


def tiny_extractor(**overrides):
    params = dict(backbone="vgg16", weights=None, image_size=32, random_state=0, batch_size=8)
    params.update(overrides)
    return FeatureExtractor(**params)


class TestFeatureCache:
    def test_lru_bound(self):
        cache = FeatureCache(max_bytes=3 * 400)
        for i in range(5):
            cache.put("cfg", str(i), np.zeros(100, np.float32))
        assert len(cache) == 3 and cache.nbytes <= 1200
        assert cache.get("cfg", "0") is None and cache.get("cfg", "4") is not None

    def test_disk_entries_are_shared_between_instances(self, tmp_path):
        FeatureCache(directory=tmp_path).put("cfg", "k", np.arange(3.0))
        np.testing.assert_array_equal(FeatureCache(directory=tmp_path).get("cfg", "k"), np.arange(3.0))
        assert not list(tmp_path.rglob("*.tmp"))

    def test_damaged_disk_entry_is_recomputed(self, tmp_path):
        cache = FeatureCache(directory=tmp_path)
        cache.put("cfg", "k", np.arange(3.0))
        next(tmp_path.rglob("*.npy")).write_bytes(b"garbage")
        assert FeatureCache(directory=tmp_path).get("cfg", "k") is None

    def test_cached_features_are_read_only(self):
        cache = FeatureCache()
        cache.put("cfg", "k", np.arange(3.0))
        with pytest.raises(ValueError):
            cache.get("cfg", "k")[0] = 5


class TestClassifierComputesOnce:
    def test_fit_runs_backbone_once_per_distinct_image(self, binary_images, empty_cache):
        X, y = binary_images
        X = np.concatenate([X, X[:4]])  # repeated images are computed once
        y = np.concatenate([y, y[:4]])
        clf = tiny_classifier(epochs=5).fit(X, y)
        assert empty_cache.misses == 24 and len(empty_cache) == 24
        clone(clf).fit(X, y)  # a clone shares the cache: no new backbone work
        assert empty_cache.misses == 24

    def test_gridsearch_runs_backbone_once_per_image(self, binary_images, empty_cache):
        X, y = binary_images
        grid = GridSearchCV(tiny_classifier(epochs=1), {"dropout": [0.0, 0.5], "learning_rate": [1e-3, 1e-2]}, cv=3)
        grid.fit(X, y)
        assert len(empty_cache) == len(X)
        assert empty_cache.misses == len(X)

    def test_cached_path_equals_composed_model(self, multiclass_images):
        X, y = multiclass_images
        clf = tiny_classifier(epochs=2, batch_norm=True, pooling="max").fit(X, y)
        cached = clf.predict_proba(X)
        composed = clf.model_.predict(np.repeat(X[..., None], 3, -1).astype(np.float32), verbose=0)
        np.testing.assert_allclose(cached, composed, rtol=1e-5, atol=1e-6)

    def test_changed_weights_file_never_serves_stale_features(self, binary_images, tmp_path, empty_cache):
        from xrayest.backbones import build_backbone, get_backbone_spec

        X, y = binary_images
        model = build_backbone(get_backbone_spec("vgg16"), (32, 32, 3), None)
        path = tmp_path / "w.weights.h5"
        model.save_weights(path)
        before = tiny_extractor(weights=str(path)).fit(X).transform(X)
        model.set_weights([w * 0.5 for w in model.get_weights()])
        model.save_weights(path)
        after = tiny_extractor(weights=str(path)).fit(X).transform(X)
        assert not np.allclose(before, after)

    def test_random_weights_without_seed_are_not_cached(self, binary_images, empty_cache):
        X, y = binary_images
        tiny_classifier(random_state=None, epochs=1).fit(X, y)
        assert len(empty_cache) == 0

    def test_fits_on_cached_features_never_build_the_backbone(self, binary_images, monkeypatch):
        from xrayest import features as F

        X, y = binary_images
        clf = tiny_classifier(epochs=2).fit(X, y)
        expected = clf.predict_proba(X)
        builds = []
        real = F.make_backbone
        monkeypatch.setattr(F, "make_backbone", lambda *a, **k: builds.append(a) or real(*a, **k))
        again = clone(clf).fit(X, y)  # features cached, head shape known: no backbone at all
        np.testing.assert_array_equal(again.predict_proba(X), expected)
        assert builds == []
        composed = again.model_.predict(np.repeat(X[..., None], 3, -1).astype(np.float32), verbose=0)
        assert len(builds) == 1  # model_ is composed on demand, with the trunk rebuilt once
        np.testing.assert_allclose(composed[:, 0], expected[:, 1], rtol=1e-5, atol=1e-6)

    def test_pickle_omits_the_backbone_and_rebuilds_it(self, binary_images, empty_cache):
        X, y = binary_images
        clf = tiny_classifier(epochs=2).fit(X, y)
        expected = clf.predict_proba(X)
        blob = pickle.dumps(clf)
        # VGG16's 14.7M weights are 59 MB; the head (512 -> 16 -> 1) and its optimizer state are not.
        assert len(blob) < 1_000_000
        empty_cache.clear()  # force the unpickled copy to run its rebuilt backbone
        empty_cache.misses = 0
        np.testing.assert_allclose(pickle.loads(blob).predict_proba(X), expected, rtol=1e-5, atol=1e-6)
        assert empty_cache.misses == len(X)

    def test_pickle_refuses_a_changed_weights_file(self, binary_images, tmp_path, empty_cache):
        from xrayest.backbones import build_backbone, get_backbone_spec

        X, y = binary_images
        model = build_backbone(get_backbone_spec("vgg16"), (32, 32, 3), None)
        path = tmp_path / "w.weights.h5"
        model.save_weights(path)
        blob = pickle.dumps(tiny_classifier(weights=str(path), epochs=1).fit(X, y))
        model.set_weights([w * 2 for w in model.get_weights()])
        model.save_weights(path)
        empty_cache.clear()
        with pytest.raises(RuntimeError, match="changed since"):
            pickle.loads(blob).predict(X)

    def test_unseeded_random_backbone_is_kept_whole(self, binary_images):
        X, y = binary_images
        clf = tiny_classifier(random_state=None, epochs=1).fit(X, y)
        expected = clf.predict_proba(X)
        # Nothing could rebuild these random weights, so the pickle carries them.
        np.testing.assert_array_equal(pickle.loads(pickle.dumps(clf)).predict_proba(X), expected)

    @pytest.mark.slow
    def test_disk_cache_shared_by_parallel_workers(self, binary_images, tmp_path):
        X, y = binary_images
        grid = GridSearchCV(tiny_classifier(epochs=1, cache_dir=str(tmp_path)), {"dropout": [0.0, 0.5]}, cv=2,
                            n_jobs=2)
        grid.fit(X, y)
        assert len(list(tmp_path.rglob("*.npy"))) == len(X)


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
        bare = ext.trunk_.predict(np.repeat(X[..., None], 3, -1).astype(np.float32), verbose=0)
        np.testing.assert_allclose(ext.transform(X), bare, rtol=1e-5, atol=1e-6)

    def test_clone_and_cheap_pickle_round_trip(self, binary_images):
        X, _ = binary_images
        ext = tiny_extractor().fit(X)
        expected = ext.transform(X)
        trunk = ext.trunk_
        blob = pickle.dumps(ext)
        assert len(blob) < 10_000  # the 15M-parameter backbone is rebuilt, not shipped
        assert ext.trunk_ is trunk  # pickling left the original untouched
        default_cache().clear()
        np.testing.assert_allclose(pickle.loads(blob).transform(X), expected, rtol=1e-6)
        assert clone(ext).get_params() == ext.get_params()

    def test_fit_of_a_known_backbone_builds_nothing(self, binary_images, monkeypatch):
        from xrayest import features as F

        X, _ = binary_images
        expected = tiny_extractor().fit(X).transform(X)
        builds = []
        real = F.make_backbone
        monkeypatch.setattr(F, "make_backbone", lambda *a, **k: builds.append(a) or real(*a, **k))
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
        from xrayest.backbones import build_backbone, get_backbone_spec

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


def test_image_keys_depend_on_content_only():
    X, _ = make_images(4)
    a = as_image_source(X).keys()
    b = as_image_source(X.copy()).keys()
    assert a == b and len(set(a)) == 4


def test_progress_bar_only_when_verbose(binary_images, capfd):
    X, _ = binary_images
    tiny_extractor(batch_size=4, verbose=1).fit(X).transform(X)
    assert "backbone features" in capfd.readouterr().err
    default_cache().clear()
    tiny_extractor(batch_size=4, verbose=0).fit(X).transform(X)
    assert "backbone features" not in capfd.readouterr().err
