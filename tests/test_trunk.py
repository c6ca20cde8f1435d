"""The frozen trunk: computed once per image, cached correctly, built only when needed, pickled cheaply."""

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

from conftest import tiny_classifier, tiny_extractor
from xrayest.backbones import get_backbone_spec
from xrayest.inputs import as_image_source
from xrayest.trunk import Trunk, WeightsChangedError


@pytest.fixture(autouse=True)
def empty_cache(clean_cache):
    return clean_cache


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
        from xrayest.backbones import get_backbone_spec
        from xrayest.weights import build_backbone

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
        from xrayest import trunk as T

        X, y = binary_images
        clf = tiny_classifier(epochs=2).fit(X, y)
        expected = clf.predict_proba(X)
        builds = []
        real = T.make_backbone
        monkeypatch.setattr(T, "make_backbone", lambda *a, **k: builds.append(a) or real(*a, **k))
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
        from xrayest.backbones import get_backbone_spec
        from xrayest.weights import build_backbone

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
        assert len(list(tmp_path.rglob("*.npz"))) == len(X)


class TestTrunk:
    def test_recipe_builds_on_demand_and_pickles_small(self, binary_images, empty_cache):
        X, _ = binary_images
        trunk = Trunk.frozen(get_backbone_spec("vgg16"), None, (32, 32), pooling="avg", seed=0)
        assert trunk.config is not None and not trunk.is_built
        feats = trunk.features(as_image_source(X), batch_size=8, cache=empty_cache)
        assert trunk.is_built and feats.shape == (len(X), 512)
        assert trunk.output_shape(empty_cache) == (512,)
        blob = pickle.dumps(trunk)
        assert len(blob) < 5_000 and trunk.is_built  # the original keeps its model
        again = pickle.loads(blob)
        assert not again.is_built
        np.testing.assert_allclose(again.features(as_image_source(X), batch_size=8), feats, rtol=1e-5, atol=1e-6)

    def test_unseeded_random_weights_are_built_now_and_never_cached(self):
        trunk = Trunk.frozen(get_backbone_spec("small_cnn"), None, (16, 16), pooling="avg", seed=None)
        assert trunk.config is None and trunk.is_built and trunk.cache_key is None

    def test_cache_key_follows_weights_precision_pooling_and_size(self):
        base = dict(pooling="avg", seed=0)
        key = Trunk.frozen(get_backbone_spec("vgg16"), None, (32, 32), **base).cache_key
        assert key == Trunk.frozen(get_backbone_spec("vgg16"), None, (32, 32), **base).cache_key
        assert key == Trunk.frozen(get_backbone_spec("vgg16"), None, (32, 32), fold_batch_norm=False, **base).cache_key
        others = [Trunk.frozen(get_backbone_spec("vgg16"), None, (32, 32), pooling="avg", seed=1),
                  Trunk.frozen(get_backbone_spec("vgg16"), None, (32, 32), pooling="max", seed=0),
                  Trunk.frozen(get_backbone_spec("vgg16"), None, (48, 48), **base),
                  Trunk.frozen(get_backbone_spec("vgg16"), None, (32, 32), precision="bfloat16", **base)]
        assert len({key, *(t.cache_key for t in others)}) == 5
        assert Trunk.frozen(get_backbone_spec("vgg16"), None, (32, 32), cache=False, **base).cache_key is None

    def test_unfrozen_keeps_weights_and_trains_the_named_layers(self):
        import keras

        trunk = Trunk.frozen(get_backbone_spec("mobilenetv2"), None, (32, 32), seed=0, fold_batch_norm=False)
        before = [w.copy() for w in trunk.model.get_weights()]
        tuned = trunk.unfrozen(4)
        assert not tuned.is_frozen and tuned.cache_key is None and tuned.model is trunk.model
        trainable = [layer for layer in tuned.backbone.layers if layer.trainable and layer.weights]
        assert trainable and not any(isinstance(layer, keras.layers.BatchNormalization) for layer in trainable)
        for a, b in zip(before, tuned.model.get_weights()):
            np.testing.assert_array_equal(a, b)

    def test_weights_changed_error_is_a_runtime_error(self):
        assert issubclass(WeightsChangedError, RuntimeError)

    def test_a_trunk_needs_a_model_or_a_recipe(self):
        with pytest.raises(ValueError, match="model or a TrunkConfig"):
            Trunk()


@pytest.fixture
def busy_random():
    """Another thread drawing from Python's global ``random`` all along (as a Dask worker's event loop does)."""
    import random
    import threading

    stop = threading.Event()

    def draw():
        while not stop.is_set():
            random.random()

    thread = threading.Thread(target=draw, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join()


def _random_trunk_weights(backbone, size):
    return Trunk.frozen(get_backbone_spec(backbone), None, size, pooling="avg", seed=3, cache=False).model.get_weights()


@pytest.mark.parametrize("backbone, size", [("small_cnn", (32, 32)), ("residual_cnn", (32, 32))])
def test_seeded_random_trunk_is_the_same_while_another_thread_draws_random(backbone, size, request):
    quiet = _random_trunk_weights(backbone, size)
    request.getfixturevalue("busy_random")
    busy = _random_trunk_weights(backbone, size)
    assert len(quiet) == len(busy)
    assert all(np.array_equal(a, b) for a, b in zip(quiet, busy))
    other = Trunk.frozen(get_backbone_spec(backbone), None, size, pooling="avg", seed=4, cache=False)
    other = other.model.get_weights()
    assert not np.array_equal(quiet[0], other[0])  # the seed still decides


def test_seeded_classifier_fit_is_the_same_while_another_thread_draws_random(request):
    from xrayest import XrayCNNClassifier

    rng = np.random.default_rng(0)
    X = rng.integers(0, 255, (12, 24, 24), dtype=np.uint8)
    y = np.array([0, 1] * 6)
    params = dict(backbone="small_cnn", weights=None, image_size=24, epochs=2, batch_size=4, random_state=5,
                  cache_features=False, validation_split=0)
    quiet = XrayCNNClassifier(**params).fit(X, y).predict_proba(X)
    request.getfixturevalue("busy_random")
    busy = XrayCNNClassifier(**params).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(quiet, busy)


def test_a_trunk_config_pickled_with_the_backbone_name_loads():
    """Fitted estimators pickled before TrunkConfig held the registry entry (it held the name) still load."""
    import pickle

    from xrayest.trunk import TrunkConfig

    config = TrunkConfig.for_backbone(get_backbone_spec("small_cnn"), None, (16, 16), "avg", 0)
    old = TrunkConfig.__new__(TrunkConfig)
    state = dict(vars(config))
    state["backbone"] = state.pop("spec").name
    old.__setstate__(state)
    assert old == config and old.cache_key == config.cache_key
    assert pickle.loads(pickle.dumps(config)) == config
