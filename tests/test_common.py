"""scikit-learn's own estimator checks on a tiny configuration."""

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from xrayest import FeatureExtractor, XrayCNNClassifier

EXPECTED_FAILURES = {
    "check_sample_weight_equivalence_on_dense_data": (
        "minibatch gradient descent: weighting a row by 2 is not the same optimisation path as repeating "
        "it, so the fitted networks differ (as for every SGD-trained network)"
    ),
}


def _estimators():
    # A frozen, seeded small_cnn at 8 px: its features are cached and only the head trains (one graph
    # per epoch), which keeps the ~110 checks to about 30 s instead of about 140 s with a trainable one.
    return [XrayCNNClassifier("small_cnn", weights=None, image_size=8, hidden_units=(32,), dropout=0.0,
                              freeze_backbone=True, epochs=40, batch_size=16, learning_rate=1e-2, random_state=0),
            FeatureExtractor("small_cnn", weights=None, image_size=8, random_state=0)]


@pytest.mark.filterwarnings("ignore::UserWarning")
@parametrize_with_checks(_estimators(), expected_failed_checks=lambda est: (
    EXPECTED_FAILURES if isinstance(est, XrayCNNClassifier) else {}))
def test_sklearn_compatible(estimator, check):
    check(estimator)
