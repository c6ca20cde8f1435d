import pickle

import numpy as np
import pytest
from sklearn.pipeline import make_pipeline

from conftest import make_images, tiny_classifier
from xrayest import FeatureExtractor
from xrayest.explain import feature_maps, gradcam, plot_feature_maps, plot_gradcam
from xrayest.manifold import TSNEEmbedding


class TestTSNE:
    def test_separates_clusters_and_places_new_points_nearby(self):
        rng = np.random.default_rng(0)
        X = np.vstack([rng.normal(0, 1, (30, 80)), rng.normal(6, 1, (30, 80))])
        tsne = TSNEEmbedding(random_state=0, perplexity=10)
        emb = tsne.fit_transform(X)
        assert emb.shape == (60, 2)
        centre_a, centre_b = emb[:30].mean(0), emb[30:].mean(0)
        new = tsne.transform(X[35:40] + rng.normal(0, 0.05, (5, 80)))
        # new points from cluster b land closer to cluster b's training points
        assert np.all(np.linalg.norm(new - centre_b, axis=1) < np.linalg.norm(new - centre_a, axis=1))
        np.testing.assert_array_equal(tsne.embedding_, emb)  # training map unchanged by transform
        assert pickle.loads(pickle.dumps(tsne)).transform(X[:2]).shape == (2, 2)

    def test_pipeline_last_step(self):
        X, y = make_images(24, 32, 2)
        pipe = make_pipeline(FeatureExtractor("vgg16", weights=None, image_size=32, random_state=0),
                             TSNEEmbedding(random_state=0))
        with pytest.warns(UserWarning, match="perplexity"):
            emb = pipe.fit_transform(X)
        assert emb.shape == (24, 2)
        assert pipe.transform(X[:3]).shape == (3, 2)


@pytest.fixture(scope="module")
def fitted():
    """A class-scoped fixture written as a method is deprecated in pytest 9 (an error in 10): a module one."""
    X, y = make_images(24, 48, 2)
    return tiny_classifier(image_size=48, epochs=2).fit(X, y), X


class TestExplain:
    def test_gradcam_shape_range_and_class(self, fitted):
        clf, X = fitted
        cam, label, layer = gradcam(clf, X[0])
        assert layer == "block5_conv3" and cam.shape == (3, 3)
        assert cam.min() >= 0 and cam.max() <= 1
        assert label == clf.predict(X[:1])[0]
        _, other, _ = gradcam(clf, X[0], class_index=1 - list(clf.classes_).index(label))
        assert other != label

    def test_feature_maps_default_first_conv(self, fitted):
        clf, X = fitted
        maps, layer = feature_maps(clf, X[0])
        assert layer == "block1_conv1" and maps.shape == (48, 48, 64)
        with pytest.raises(ValueError, match="not a spatial layer"):
            feature_maps(clf, X[0], layer="nope")

    def test_figures(self, fitted):
        clf, X = fitted
        fig = plot_gradcam(clf, X[0])
        assert "Grad-CAM" in fig.axes[1].get_title()
        fig = plot_feature_maps(clf, X[0], max_maps=4)
        assert "block1_conv1" in fig._suptitle.get_text()
