"""XrayCNNClassifier.adapt: BatchNorm statistics re-estimated on a new site's unlabeled images (AdaBN)."""

import numpy as np
import pytest

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
    np.testing.assert_allclose(clf.adapt(X).predict_proba(X), clf.predict_proba(X), atol=1e-4)


def test_adapt_refuses_what_it_cannot_do(fitted):
    clf, X = fitted
    with pytest.raises(ValueError, match="at least 2 images"):
        clf.adapt(X[:1])
    frozen = XrayCNNClassifier("vgg16", weights=None, image_size=32, epochs=1, random_state=0).fit(X, [0, 1] * 12)
    with pytest.raises(ValueError, match="frozen"):
        frozen.adapt(X)
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        XrayCNNClassifier("small_cnn", weights=None).adapt(X)
