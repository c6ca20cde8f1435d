"""One parameter table: every bad value is refused at fit with the parameter named, nothing at __init__."""

from numbers import Integral, Real

import numpy as np
import pytest

from conftest import tiny_classifier, tiny_extractor
from xrayest import FeatureExtractor, XrayCNNClassifier
from xrayest.params import PARAMETERS, Interval, Options, SequenceOf, validate_params

BAD_CLASSIFIER_VALUES = [
    ("learning_rate", 0.0), ("learning_rate", -0.1), ("learning_rate", float("nan")), ("learning_rate", "fast"),
    ("hidden_units", (2.7,)), ("hidden_units", (16, 0)), ("early_stopping", -2), ("epochs", 0), ("epochs", 2.0),
    ("batch_size", True), ("dropout", 1.0), ("dropout", (0.1, -0.1)), ("validation_split", 1.0), ("l2", -1e-3),
    ("pooling", "median"), ("freeze_backbone", "yes"), ("fine_tune", 0), ("fine_tune_epochs", -1),
    ("fine_tune_learning_rate", 0), ("reduce_lr", 0.5), ("lr_schedule", "linear"), ("training_loop", "fast"),
    ("precision", "fp16"), ("random_state", -1), ("class_weight", "auto"), ("image_size", 0),
    ("weights", 3), ("optimizer", 3), ("cache_features", 1), ("callbacks", "early"), ("verbose", -1),
]


@pytest.mark.parametrize("name, value", BAD_CLASSIFIER_VALUES, ids=[f"{n}={v!r}" for n, v in BAD_CLASSIFIER_VALUES])
def test_bad_values_are_named_at_fit_not_init(name, value, binary_images):
    clf = tiny_classifier(**{name: value})  # __init__ only stores
    assert clf.get_params()[name] is value
    with pytest.raises(ValueError, match=rf"^XrayCNNClassifier: {name} must be "):
        clf.fit(*binary_images)


def test_every_estimator_parameter_has_a_row_and_defaults_pass():
    for estimator in (XrayCNNClassifier(), FeatureExtractor()):
        assert set(type(estimator)._parameter_constraints) == set(estimator.get_params())
        validate_params(estimator)
    assert set(XrayCNNClassifier._parameter_constraints) <= set(PARAMETERS)


def test_good_values_pass():
    validate_params(XrayCNNClassifier(hidden_units=(), dropout=(0.2,), image_size=(64, 48), fine_tune="block5",
                                      lr_schedule=lambda epoch, lr: lr, class_weight={0: 1.0, 1: 2.0},
                                      random_state=np.int64(3), epochs=np.int32(2)))
    validate_params(XrayCNNClassifier(hidden_units=64, verbose=True, weights="/some/file.weights.h5"))


def test_extractor_validates_from_the_same_table(binary_images):
    X, _ = binary_images
    with pytest.raises(ValueError, match="^FeatureExtractor: batch_size must be an int in"):
        tiny_extractor(batch_size=0).fit(X)


def test_constraint_types():
    assert Interval(Real, 0, 1, "left").accepts(0.0) and not Interval(Real, 0, 1, "left").accepts(1.0)
    assert not Interval(Integral, 1, None).accepts(True) and not Interval(Real, 0, None).accepts(float("nan"))
    assert str(Interval(Integral, 1, None)) == "an int in [1, inf)"
    assert Options("a", True).accepts(True) and not Options(1).accepts(True)
    assert SequenceOf(Interval(Integral, 1, None), allow_empty=True).accepts(())
    assert not SequenceOf(Interval(Integral, 1, None)).accepts(())


def test_cross_parameter_checks_still_name_the_problem(binary_images):
    X, y = binary_images
    with pytest.raises(ValueError, match="dropout has 2 rates for 1 hidden layers"):
        tiny_classifier(dropout=(0.1, 0.2)).fit(X, y)
    with pytest.raises(ValueError, match="fine_tune_epochs needs fine_tune"):
        tiny_classifier(fine_tune_epochs=2).fit(X, y)


def test_sample_and_class_weights_are_checked(binary_images):
    X, y = binary_images
    with pytest.raises(ValueError, match="sample_weight must hold finite, non-negative"):
        tiny_classifier().fit(X, y, sample_weight=-np.ones(len(y)))
    with pytest.raises(ValueError, match="class_weight values must be finite, non-negative"):
        tiny_classifier(class_weight={0: 1.0, 1: -2.0}).fit(X, y)


def test_labels_are_checked(binary_images):
    X, y = binary_images
    with pytest.raises(ValueError, match="1 class"):
        tiny_classifier().fit(X, np.zeros(len(y)))
    labels = np.array(["covid", "normal"] * 12, dtype=object)
    labels[[3, 7]] = None
    with pytest.raises(ValueError, match="2 missing labels .* at positions 3, 7"):
        tiny_classifier().fit(X, labels)
    with pytest.raises(ValueError, match="Unknown label type"):
        tiny_classifier().fit(X, np.linspace(0, 1, len(y)))
