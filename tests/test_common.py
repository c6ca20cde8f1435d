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


AVX2_CHECKS = """
from sklearn.utils.estimator_checks import check_methods_sample_order_invariance, check_methods_subset_invariance
from xrayest import FeatureExtractor, XrayCNNClassifier
for est in [XrayCNNClassifier("small_cnn", weights=None, image_size=8, hidden_units=(32,), dropout=0.0,
                              freeze_backbone=True, epochs=40, batch_size=16, learning_rate=1e-2, random_state=0,
                              precision="float32"),
            FeatureExtractor("small_cnn", weights=None, image_size=8, random_state=0, precision="float32")]:
    check_methods_sample_order_invariance(type(est).__name__, est)
    check_methods_subset_invariance(type(est).__name__, est)
print("invariant")
"""


def test_outputs_do_not_depend_on_row_order_with_avx2_kernels():
    """On a CPU with AVX2 only, oneDNN's kernels rounded a row's embedding differently by its place in the
    batch (scikit-learn's sample-order check failed there).  ONEDNN_MAX_CPU_ISA=AVX2 gives this host
    those kernels, in float32 (what precision="auto" picks on such a CPU)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX2", TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", AVX2_CHECKS], capture_output=True, text=True, env=env,
                            timeout=600)
    assert result.returncode == 0 and "invariant" in result.stdout, result.stderr[-3000:]
