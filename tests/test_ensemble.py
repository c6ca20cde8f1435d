"""Seed ensembles, label-shift adaptation and histogram equalisation."""

import pickle

import numpy as np
import pytest
from sklearn.base import clone, is_classifier
from sklearn.model_selection import GridSearchCV

import xrayest
from conftest import make_images
from xrayest import EnsembleClassifier, XrayCNNClassifier
from xrayest.ensemble import member_seeds
from xrayest.intensity import equalize_histogram
from xrayest.label_shift import adapt_to_priors


def member(**overrides):
    params = dict(backbone="small_cnn", weights=None, image_size=32, hidden_units=(8,), dropout=0.0, epochs=2,
                  batch_size=8)
    return XrayCNNClassifier(**{**params, **overrides})


class TestEnsemble:
    def test_members_differ_by_seed_and_the_ensemble_is_their_mean(self, multiclass_images):
        X, y = multiclass_images
        ensemble = EnsembleClassifier(member(), n_members=3, random_state=0).fit(X, y)
        assert is_classifier(ensemble) and len(ensemble.estimators_) == 3
        assert [m.random_state for m in ensemble.estimators_] == ensemble.seeds_ == member_seeds(0, 3)
        probas = [m.predict_proba(X) for m in ensemble.estimators_]
        assert not np.allclose(probas[0], probas[1])  # other seeds, other networks
        np.testing.assert_allclose(ensemble.predict_proba(X), np.mean(probas, axis=0), rtol=1e-6)
        np.testing.assert_array_equal(ensemble.predict(X), ensemble.classes_[np.argmax(np.mean(probas, 0), 1)])
        assert list(ensemble.classes_) == [0, 1, 2]

    def test_seeded_fits_repeat(self, binary_images):
        X, y = binary_images
        a = EnsembleClassifier(member(), n_members=2, random_state=5).fit(X, y).predict_proba(X)
        b = EnsembleClassifier(member(), n_members=2, random_state=5).fit(X, y).predict_proba(X)
        np.testing.assert_allclose(a, b, rtol=1e-6)

    def test_save_load_and_pickle_predict_the_same(self, multiclass_images, tmp_path):
        X, y = multiclass_images
        labels = np.array(["normal", "bacterial", "viral"])[y]
        ensemble = EnsembleClassifier(member(), n_members=2, random_state=0).fit(X, labels)
        expected = ensemble.predict_proba(X)
        loaded = xrayest.load(ensemble.save(tmp_path / "ensemble.keras"))
        assert isinstance(loaded, EnsembleClassifier) and loaded.seeds_ == ensemble.seeds_
        np.testing.assert_allclose(loaded.predict_proba(X), expected, atol=1e-6)
        np.testing.assert_array_equal(loaded.predict(X), ensemble.predict(X))
        assert loaded.classes_.tolist() == ["bacterial", "normal", "viral"]
        again = pickle.loads(pickle.dumps(ensemble))
        np.testing.assert_allclose(again.predict_proba(X), expected, atol=1e-6)
        # a single classifier still loads as one
        single = ensemble.estimators_[0]
        assert isinstance(xrayest.load(single.save(tmp_path / "one.keras")), XrayCNNClassifier)

    def test_grid_search_reaches_the_members_and_clone_keeps_params(self, binary_images):
        X, y = binary_images
        ensemble = EnsembleClassifier(member(epochs=1), n_members=2, random_state=0)
        assert clone(ensemble).get_params()["estimator__epochs"] == 1
        search = GridSearchCV(ensemble, {"estimator__learning_rate": [1e-3, 1e-2]}, cv=2).fit(X, y)
        assert search.best_estimator_.estimators_[0].learning_rate in (1e-3, 1e-2)

    @pytest.mark.parametrize("params, match", [({"n_members": 0}, "n_members"), ({"estimator": "vgg16"}, "estimator"),
                                               ({"random_state": -1}, "random_state")])
    def test_bad_parameters_are_named_at_fit(self, binary_images, params, match):
        X, y = binary_images
        with pytest.raises(ValueError, match=f"EnsembleClassifier: {match}"):
            EnsembleClassifier(**{"estimator": member(), **params}).fit(X, y)


class TestSoftVote:
    """EnsembleClassifier over a list of classifiers: a weighted soft vote, cascades included, one file."""

    def test_weighted_vote_of_a_cnn_and_a_cascade_saves_loads_and_adapts(self, tmp_path):
        from xrayest import CascadeClassifier, make_recipe

        X, y = make_images(30, 32, 3)
        labels = np.array(["bacterial", "normal", "viral"])[y]
        cascade = make_recipe("sutd_cascade", image_size=32, epochs=1, batch_size=8, validation_split=0.0)
        vote = EnsembleClassifier([member(), cascade], n_members=1, vote_weights=[1, 3], random_state=0)
        vote.fit(X, labels)
        cnn, fitted_cascade = vote.estimators_
        assert isinstance(fitted_cascade, CascadeClassifier)
        # every stage of the cascade got the member's seed (a cascade has no random_state of its own)
        assert {est.random_state for est in fitted_cascade.estimators_.values()} == {vote.seeds_[0]}
        expected = 0.25 * cnn.predict_proba(X) + 0.75 * fitted_cascade.predict_proba(X)
        np.testing.assert_allclose(vote.predict_proba(X), expected, rtol=1e-6)
        loaded = xrayest.load(vote.save(tmp_path / "vote.keras"))
        assert isinstance(loaded, EnsembleClassifier) and isinstance(loaded.estimators_[1], CascadeClassifier)
        assert loaded.vote_weights == [1, 3] and isinstance(loaded.estimator, list)
        np.testing.assert_allclose(loaded.predict_proba(X), vote.predict_proba(X), atol=1e-6)
        again = pickle.loads(pickle.dumps(vote))
        np.testing.assert_allclose(again.predict_proba(X), vote.predict_proba(X), atol=1e-6)
        site = np.clip(X.astype(np.int16) + 70, 0, 255).astype(np.uint8)
        before = vote.predict_proba(site)
        adapted = vote.adapt(site)
        assert adapted.adapted_to_ == len(site) and not hasattr(vote, "adapted_to_")
        np.testing.assert_array_equal(vote.predict_proba(site), before)
        assert np.abs(adapted.predict_proba(site) - before).max() > 1e-4

    def test_frozen_members_are_kept_and_an_all_frozen_vote_refuses_to_adapt(self, binary_images):
        X, y = binary_images
        frozen = XrayCNNClassifier("vgg16", weights=None, image_size=32, epochs=1)
        vote = EnsembleClassifier([member(), frozen], n_members=1, random_state=0).fit(X, y)
        adapted = vote.adapt(X)
        assert adapted.estimators_[1] is vote.estimators_[1] and adapted.estimators_[0] is not vote.estimators_[0]
        with pytest.raises(ValueError, match="no member of this ensemble"):
            EnsembleClassifier([frozen], n_members=1, random_state=0).fit(X, y).adapt(X)

    def test_adapt_estimates_the_site_class_mix_and_saves_it(self, tmp_path):
        """adapt(priors=True): the vote's probabilities on the site's films re-weighted by the class mix EM
        finds there (label_shift.adapt_to_priors on the adapted vote), kept in the saved file."""
        X, y = make_images(100, 32, 2, seed=3)
        vote = EnsembleClassifier([member(), member(backbone="vgg16", hidden_units=(), batch_norm=True)],
                                  n_members=1, random_state=0).fit(X, y)
        np.testing.assert_allclose(vote.class_prior_, [0.5, 0.5])
        site = X[np.r_[np.flatnonzero(y == 1), np.flatnonzero(y == 0)[:10]]]  # a site of mostly class 1
        adapted = vote.adapt(site, priors=True, tent_steps=0)
        members = vote.adapt(site, tent_steps=0)  # the same members, without the class mix
        raw = members.predict_proba(site)
        expected = adapt_to_priors(raw, vote.class_prior_)[1]
        np.testing.assert_allclose(adapted.site_prior_, expected)
        shifted = raw * adapted.site_prior_ / vote.class_prior_
        np.testing.assert_allclose(adapted.predict_proba(site), shifted / shifted.sum(1, keepdims=True), rtol=1e-6)
        assert adapted.site_prior_[1] > 0.5 and not hasattr(vote, "site_prior_")
        loaded = xrayest.load(adapted.save(tmp_path / "site.keras"))
        np.testing.assert_allclose(loaded.site_prior_, adapted.site_prior_)
        np.testing.assert_allclose(loaded.predict_proba(site), adapted.predict_proba(site), atol=1e-5)
        with pytest.raises(ValueError, match="at least 50"):
            vote.adapt(site[:20], priors=True)

    def test_fit_with_unlabeled_images_adapts_every_member(self):
        """Label -1 rows: the members train on the labeled rows, then the vote is adapted to the unlabeled ones
        (a cascade stage by stage, a frozen trunk through its BatchNorm head)."""
        from xrayest import CascadeClassifier, make_recipe

        X, y = make_images(36, 32, 3, seed=4)
        labels = np.array(["bacterial", "normal", "viral"])[y].astype(object)
        labels[:6] = -1
        cascade = make_recipe("pediatric_cascade", image_size=32, epochs=1, batch_size=8)
        frozen_bn = member(backbone="vgg16", hidden_units=(), batch_norm=True)
        vote = EnsembleClassifier([member(), cascade, frozen_bn], n_members=1, random_state=0).fit(X, labels)
        assert vote.adapted_to_ == 6 and list(vote.classes_) == ["bacterial", "normal", "viral"]
        cnn, fitted_cascade, frozen = vote.estimators_
        assert isinstance(fitted_cascade, CascadeClassifier) and fitted_cascade.adapted_to_ == 6
        assert cnn.adapted_to_ == 6 and frozen.adapted_to_ == 6
        assert frozen.adaptation_ == {"batch_norm_statistics": False, "tent_steps": 10}
        np.testing.assert_allclose(vote.class_prior_, [1 / 3] * 3)

    @pytest.mark.parametrize("params, match", [({"vote_weights": [1.0]}, "vote_weights has 1 weights for 2"),
                                               ({"vote_weights": [1.0, -1.0]}, "vote_weights"),
                                               ({"vote_weights": [0.0, 0.0]}, "vote_weights are all zero"),
                                               ({"estimator": []}, "estimator")])
    def test_bad_votes_are_named_at_fit(self, binary_images, params, match):
        X, y = binary_images
        with pytest.raises(ValueError, match=match):
            EnsembleClassifier(**{"estimator": [member(), member()], "n_members": 1, **params}).fit(X, y)


class TestLabelShift:
    def test_em_recovers_a_shifted_class_mix(self):
        # Calibrated posteriors of a 50/50 training set; the new batch is 80/20.
        rng = np.random.default_rng(0)
        y = (rng.random(4000) < 0.2).astype(int)
        score = rng.normal(np.where(y == 1, 1.0, -1.0), 1.0)
        p1 = 1 / (1 + np.exp(-2 * score))  # the exact posterior for equal priors and unit variances
        proba = np.column_stack([1 - p1, p1])
        adapted, priors = adapt_to_priors(proba, [0.5, 0.5])
        assert abs(priors[1] - 0.2) < 0.03
        accuracy_before = np.mean(proba.argmax(1) == y)
        accuracy_after = np.mean(adapted.argmax(1) == y)
        assert accuracy_after > accuracy_before + 0.02
        assert np.allclose(adapted.sum(1), 1)

    def test_unshifted_batch_stays_close(self):
        proba = np.array([[0.7, 0.3], [0.3, 0.7]] * 50)
        adapted, priors = adapt_to_priors(proba, [0.5, 0.5])
        np.testing.assert_allclose(priors, [0.5, 0.5], atol=1e-6)
        np.testing.assert_allclose(adapted, proba, atol=1e-6)

    def test_one_image_is_refused_and_a_small_batch_warned(self):
        """EM on one image would turn [0.6, 0.4] into certainty: refused; below MIN_BATCH images, a warning."""
        from xrayest.label_shift import MIN_BATCH

        with pytest.raises(ValueError, match="one image has none"):
            adapt_to_priors(np.array([[0.6, 0.4]]), [0.5, 0.5])
        with pytest.warns(RuntimeWarning, match=f"on 4 images: .* fewer than {MIN_BATCH}"):
            adapt_to_priors(np.array([[0.9, 0.1], [0.6, 0.4], [0.4, 0.6], [0.2, 0.8]]), [0.5, 0.5])

    @pytest.mark.parametrize("proba, priors, match", [
        (np.ones((3, 2)), [0.5, 0.5], "sum to 1"),
        (np.array([[0.5, 0.5]]), [0.5, 0.2, 0.3], "one per column"),
        (np.array([[0.5, 0.5]]), [1.0, 0.0], "positive"),
        (np.array([0.5, 0.5]), [0.5, 0.5], "shape"),
    ])
    def test_bad_input_is_named(self, proba, priors, match):
        with pytest.raises(ValueError, match=match):
            adapt_to_priors(proba, priors)


class TestEqualize:
    def test_any_monotonic_exposure_change_gives_the_same_image(self):
        X, _ = make_images(4, 32, 2)
        assert X.max() < 240
        # another exposure: any increasing map of the grey levels that merges none of them
        exposure = np.sort(np.random.default_rng(1).choice(256, 240, replace=False)).astype(np.uint8)
        darker = exposure[X]
        gamma = (255 * (X / 255.0) ** 2.2).round().astype(np.uint8)
        out = equalize_histogram(X)
        np.testing.assert_array_equal(equalize_histogram(darker), out)
        assert out.dtype == np.uint8 and out.shape == X.shape
        assert all(img.min() == 0 and img.max() == 255 for img in out)
        # gamma merges a few dark levels: nearly, not exactly, the same image
        assert np.mean(np.abs(equalize_histogram(gamma).astype(int) - out)) < 8

    def test_input_is_not_changed_and_colour_is_refused(self):
        X, _ = make_images(2, 16, 2)
        before = X.copy()
        equalize_histogram(X)
        np.testing.assert_array_equal(X, before)
        np.testing.assert_array_equal(equalize_histogram(np.full((8, 8), 7, np.uint8)), np.full((8, 8), 7))
        with pytest.raises(ValueError, match="gray images"):
            equalize_histogram(np.zeros((2, 8, 8, 3), np.uint8))

    def test_twelve_bit_images_keep_their_levels(self):
        """A 12-bit film is equalised on its own 4,096 levels: the same image as its 8-bit version whenever
        the two hold the same order of levels, and a 0-4095 ramp is not 94% white (it was clipped to 8 bits)."""
        ramp = np.arange(4096, dtype=np.uint16).reshape(64, 64)
        out = equalize_histogram(ramp)
        assert out.dtype == np.uint8 and (out == 255).mean() < 0.01 and len(np.unique(out)) == 256
        X, _ = make_images(3, 32, 2)
        twelve_bit = X.astype(np.uint16) * 16 + 3  # the same levels, 16 times apart
        np.testing.assert_array_equal(equalize_histogram(twelve_bit), equalize_histogram(X))
        flat = np.full((1, 8, 8), 4095, np.uint16)  # a flat 12-bit image: scaled by its bit depth
        np.testing.assert_array_equal(equalize_histogram(flat), np.full((1, 8, 8), 255))

    def test_empty_batch_and_empty_images(self):
        empty = equalize_histogram(np.zeros((0, 8, 8), np.uint16))
        assert empty.shape == (0, 8, 8) and empty.dtype == np.uint8
        with pytest.raises(ValueError, match=r"no pixels \(shape \(2, 0, 8\)\)"):
            equalize_histogram(np.zeros((2, 0, 8), np.uint8))


def test_pediatric_pneumonia_recipe_is_a_vote_of_a_112px_cnn_and_xception_of_the_lungs_at_150px(tmp_path):
    from xrayest import load, make_recipe

    vote = make_recipe("pediatric_pneumonia", random_state=0)
    cnn, xception = vote.estimator
    assert isinstance(vote, EnsembleClassifier) and vote.vote_weights == [0.5, 0.5] and vote.random_state == 0
    assert (cnn.backbone, cnn.weights, cnn.image_size, cnn.epochs, cnn.validation_split) == ("sutd_cnn", None, 112,
                                                                                              26, 0.0)
    assert (cnn.lr_schedule, cnn.augment, cnn.crop) == ("cosine", "xray", None)
    assert (xception.backbone, xception.image_size, xception.crop) == ("xception_middle", 150, "lungs")
    X, y = make_images(24, 32, 3)
    labels = np.array(["bacterial", "normal", "viral"])[y]
    # offline: random weights stand in for ImageNet's; 75 px is above Xception's smallest input
    model = make_recipe("pediatric_pneumonia", weights=None, epochs=1, image_size=75, batch_size=8, random_state=0)
    model.fit(X, labels)
    again = load(model.save(tmp_path / "pediatric.keras"))
    np.testing.assert_allclose(again.predict_proba(X), model.predict_proba(X), atol=1e-5)
    with pytest.raises(ValueError, match="classes and normal are for the cascade recipes"):
        make_recipe("pediatric_pneumonia", classes=("healthy", "viral", "bacterial"))  # no cascade to take them


def test_pediatric_pneumonia_full_recipe_is_a_vote_of_the_cascade_and_xception_and_saves_as_one_file(tmp_path):
    from xrayest import CascadeClassifier, load, make_recipe

    X, y = make_images(24, 32, 3)
    labels = np.array(["bacterial", "normal", "viral"])[y]
    # offline: random weights stand in for ImageNet's; 75 px is above Xception's smallest input
    model = make_recipe("pediatric_pneumonia_full", weights=None, epochs=1, image_size=75, batch_size=8,
                        random_state=0)
    cascade, xception = model.estimator
    params = cascade.get_params()
    assert isinstance(model, EnsembleClassifier) and model.vote_weights == [0.5, 0.5] and model.random_state == 0
    assert isinstance(cascade, CascadeClassifier) and [name for name, _, _ in cascade.stages] == ["root", "infected"]
    assert params["root__backbone"] == params["infected__backbone"] == "sutd_cnn"
    assert params["root__validation_split"] == params["infected__validation_split"] == 0.0  # every image given
    assert xception.backbone == "xception_middle" and xception.get_params()["batch_norm"] is True
    assert xception.crop == "lungs" and cascade.get_params()["root__crop"] is None
    model.fit(X, labels)
    model.save(tmp_path / "pediatric.keras")
    again = load(tmp_path / "pediatric.keras")
    assert isinstance(again, EnsembleClassifier) and list(again.classes_) == ["bacterial", "normal", "viral"]
    assert isinstance(again.estimators_[0], CascadeClassifier)
    assert again.estimators_[0].plan_ == model.estimators_[0].plan_
    np.testing.assert_allclose(again.predict_proba(X), model.predict_proba(X), atol=1e-5)
    with pytest.raises(ValueError, match="needs the normal label 'normal'"):
        make_recipe("pediatric_pneumonia_full", classes=("healthy", "viral", "bacterial"))
    with pytest.raises(ValueError, match="classes and normal are for the cascade recipe"):
        make_recipe("sutd_cnn", normal="healthy")
    with pytest.raises(TypeError, match="takes a recipe name"):
        make_recipe(["sutd_cnn"])


def test_weight_averaging_ends_with_the_mean_of_the_last_epochs_weights(multiclass_images):
    import keras

    from xrayest.callbacks import WeightAveraging

    class Recorder(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.kernels = []

        def on_epoch_end(self, epoch, logs=None):
            self.kernels.append(self.model.get_layer("head").get_layer("output").get_weights()[0])

    X, y = multiclass_images
    recorder = Recorder()
    clf = member(epochs=4, augment="light", random_state=0, callbacks=[recorder, WeightAveraging(last_epochs=3)])
    clf.fit(X, y)
    assert len(recorder.kernels) == 4
    np.testing.assert_allclose(clf.head_.get_layer("output").get_weights()[0], np.mean(recorder.kernels[1:], 0),
                               rtol=1e-5, atol=1e-6)
    assert clf.predict_proba(X).shape == (30, 3)
    with pytest.raises(ValueError, match="last_epochs must be a positive int"):
        WeightAveraging(0)
