"""adapt: a new site's unlabeled images used without labels (AdaBN statistics, TENT steps, the class mix), and
fit with unlabeled images (label -1)."""

import numpy as np
import pytest
from sklearn.base import clone

from xrayest import XrayCNNClassifier


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 160, (24, 32, 32), dtype=np.uint8)
    y = np.array(["normal", "viral"] * 12)
    clf = XrayCNNClassifier("small_cnn", weights=None, image_size=32, epochs=2, batch_size=8, random_state=0)
    return clf.fit(X, y), X


def test_adapt_returns_an_adapted_copy_and_leaves_the_estimator(fitted):
    clf, X = fitted
    brighter = np.clip(X.astype(np.int16) + 90, 0, 255).astype(np.uint8)  # a site with other exposure
    before = clf.predict_proba(brighter)
    site = clf.adapt(brighter)
    assert site is not clf and site.adapted_to_ == len(brighter) and not hasattr(clf, "adapted_to_")
    np.testing.assert_array_equal(clf.predict_proba(brighter), before)  # the original is untouched
    assert np.abs(site.predict_proba(brighter) - before).max() > 1e-3  # the copy normalises otherwise
    # the copy's first BatchNorm layer now holds the new images' statistics: its moving mean moved
    def first_bn_mean(model):
        import keras

        from xrayest.seeding import all_layers

        norm = next(layer for layer in all_layers(model) if isinstance(layer, keras.layers.BatchNormalization))
        return np.asarray(norm.moving_mean)

    assert not np.allclose(first_bn_mean(site.trunk_.model), first_bn_mean(clf.trunk_.model))
    np.testing.assert_array_equal(site.classes_, clf.classes_)


def test_adapting_to_the_training_images_changes_nothing(fitted):
    """fit ends by setting the BatchNorm statistics to their average over the training images: adapting
    to those same images gives the same statistics, so the same probabilities."""
    clf, X = fitted
    np.testing.assert_allclose(clf.adapt(X, tent_steps=0).predict_proba(X), clf.predict_proba(X), atol=1e-4)


def test_adapt_refuses_what_it_cannot_do(fitted):
    clf, X = fitted
    with pytest.raises(ValueError, match="at least 2 images"):
        clf.adapt(X[:1])
    frozen = XrayCNNClassifier("vgg16", weights=None, image_size=32, epochs=1, random_state=0).fit(X, [0, 1] * 12)
    with pytest.raises(ValueError, match="frozen"):
        frozen.adapt(X)
    with pytest.raises(ValueError, match="tent_steps"):
        clf.adapt(X, tent_steps=-1)
    with pytest.raises(ValueError, match="tent_learning_rate"):
        clf.adapt(X, tent_learning_rate=0.0)
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        XrayCNNClassifier("small_cnn", weights=None).adapt(X)


def entropy(proba):
    p = np.clip(proba, 1e-7, 1)
    return float(-(p * np.log(p)).sum(1).mean())


def test_tent_lowers_the_entropy_on_the_new_site_and_moves_only_batch_norm(fitted):
    """TENT's steps move the BatchNorm scales and offsets (nothing else) and the predictions on the new site
    become more confident than AdaBN's alone."""
    clf, X = fitted
    brighter = np.clip(X.astype(np.int16) + 90, 0, 255).astype(np.uint8)
    adabn = clf.adapt(brighter, tent_steps=0)
    tent = clf.adapt(brighter, tent_steps=30, tent_learning_rate=1e-2)
    assert adabn.adaptation_ == {"batch_norm_statistics": True, "tent_steps": 0}
    assert tent.adaptation_ == {"batch_norm_statistics": True, "tent_steps": 30}
    assert entropy(tent.predict_proba(brighter)) < entropy(adabn.predict_proba(brighter))
    import keras

    from xrayest.seeding import all_layers

    def weights(model, norms):
        return [w for layer in all_layers(model) if not hasattr(layer, "layers")  # layers, not nested models
                and isinstance(layer, keras.layers.BatchNormalization) == norms
                for w in layer.get_weights()[:2 if norms else None]]

    for before, after in zip(weights(adabn.model_, False), weights(tent.model_, False)):
        np.testing.assert_array_equal(before, after)  # convolutions and dense layers: untouched
    assert any(not np.allclose(a, b) for a, b in zip(weights(adabn.model_, True), weights(tent.model_, True)))


def test_a_frozen_trunk_with_a_batch_norm_head_adapts_its_head():
    """xception_middle's kind of member: frozen features, a BatchNorm head. adapt moves the head's BatchNorm
    by TENT and leaves the trunk."""
    rng = np.random.default_rng(1)
    X = rng.integers(0, 160, (24, 32, 32), dtype=np.uint8)
    clf = XrayCNNClassifier("vgg16", weights=None, image_size=32, hidden_units=(), batch_norm=True, epochs=2,
                            random_state=0).fit(X, ["normal", "viral"] * 12)
    site = np.clip(X.astype(np.int16) + 60, 0, 255).astype(np.uint8)
    adapted = clf.adapt(site, tent_steps=20, tent_learning_rate=1e-2)
    assert adapted.adaptation_ == {"batch_norm_statistics": False, "tent_steps": 20}
    assert entropy(adapted.predict_proba(site)) < entropy(clf.predict_proba(site))
    for before, after in zip(clf.trunk_.model.get_weights(), adapted.trunk_.model.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_fit_with_unlabeled_images_trains_on_the_rest_and_adapts_to_them(fitted):
    """Label -1 (int or "-1") marks unlabeled films of the new site, as scikit-learn's semi-supervised
    estimators take them: fit on the labeled rows, then adapt to the unlabeled ones."""
    clf, X = fitted
    site = np.clip(X[:10].astype(np.int16) + 90, 0, 255).astype(np.uint8)
    X_all = np.concatenate([X, site])
    y = np.array(["normal", "viral"] * 12 + ["-1"] * 10)
    y_before = y.copy()
    semi = XrayCNNClassifier(**clf.get_params()).fit(X_all, y)
    assert semi.adapted_to_ == 10 and list(semi.classes_) == ["normal", "viral"]
    np.testing.assert_array_equal(y, y_before)
    expected = clf.adapt(site)  # the same seed: the same training, then the same adaptation
    np.testing.assert_allclose(semi.predict_proba(site), expected.predict_proba(site), atol=1e-4)
    with pytest.raises(ValueError, match="every label of y is -1"):
        XrayCNNClassifier(**clf.get_params()).fit(X, ["-1"] * len(X))
    numeric = XrayCNNClassifier(**clf.get_params()).fit(X, [-1, 1] * 12)  # numeric labels: -1 is a class
    assert list(numeric.classes_) == [-1, 1] and not hasattr(numeric, "adapted_to_")


def test_fit_with_unlabeled_images_on_a_classifier_without_batch_norm_warns():
    rng = np.random.default_rng(2)
    X = rng.integers(0, 160, (20, 32, 32), dtype=np.uint8)
    clf = XrayCNNClassifier("vgg16", weights=None, image_size=32, epochs=1, random_state=0)
    with pytest.warns(UserWarning, match="4 unlabeled images"):
        clf.fit(X, ["a", "b"] * 8 + [-1] * 4)
    assert list(clf.classes_) == ["a", "b"] and not hasattr(clf, "adapted_to_")


@pytest.mark.parametrize("kind", ["classifier", "cascade", "vote"])
def test_fit_with_unlabeled_images_where_nothing_adapts_warns_and_keeps_the_fit(kind):
    """One rule for every estimator (xrayest.adaptation.fit_then_adapt): no BatchNorm to adapt -> a warning
    naming the unlabeled images left out, and the model as trained on the labeled ones."""
    from xrayest import CascadeClassifier, EnsembleClassifier

    rng = np.random.default_rng(3)
    X = rng.integers(0, 160, (20, 32, 32), dtype=np.uint8)
    y = np.array(["a", "b"] * 8 + ["-1"] * 4)
    frozen = XrayCNNClassifier("vgg16", weights=None, image_size=32, epochs=1, random_state=0)
    estimator = {"classifier": frozen, "cascade": CascadeClassifier([("root", frozen, None)]),
                 "vote": EnsembleClassifier([frozen], n_members=1, random_state=0)}[kind]
    with pytest.warns(UserWarning, match=f"4 unlabeled images .* this {type(estimator).__name__} has no BatchNorm"):
        estimator.fit(X, y)
    assert list(estimator.classes_) == ["a", "b"] and not hasattr(estimator, "adapted_to_")
    trained = clone(estimator).fit(X[:16], y[:16])
    np.testing.assert_allclose(estimator.predict_proba(X), trained.predict_proba(X), atol=1e-5)
