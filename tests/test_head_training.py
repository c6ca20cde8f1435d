"""fit_head trains a head exactly as keras.Model.fit does, at a fraction of its fixed cost."""

import keras
import numpy as np
import pytest

from conftest import tiny_classifier
from xrayest import head_training
from xrayest.head_training import fit_head, predict_head
from xrayest.heads import build_head, head_loss


OPTIMIZERS = {  # plain Adam takes the fused kernel; the others Keras' apply_gradients
    "adam": lambda rate: keras.optimizers.Adam(rate),
    "adam_amsgrad_clipnorm": lambda rate: keras.optimizers.Adam(rate, amsgrad=True, clipnorm=1.0),
    "sgd_momentum": lambda rate: keras.optimizers.SGD(rate, momentum=0.9),
}


def compiled_head(n_outputs, *, batch_norm=False, l2=0.0, dropout=0.0, learning_rate=1e-2, seed=1,
                  optimizer="adam"):
    keras.utils.set_random_seed(seed)
    head = build_head((4, 4, 8), n_outputs, pooling="avg", hidden_units=(16,), dropout=dropout,
                      batch_norm=batch_norm, l2=l2)
    loss, metrics = head_loss(n_outputs, multilabel=False)  # what the estimator compiles heads with
    head.compile(optimizer=OPTIMIZERS[optimizer](learning_rate), loss=loss, metrics=metrics)
    return head


def features(n=53, n_classes=2, seed=0):
    """Feature maps, targets shaped as the estimator shapes them (one sigmoid: (n, 1) floats), weights."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    y = y.reshape(n, 1).astype(np.float32) if n_classes == 2 else y
    return rng.random((n, 4, 4, 8)).astype(np.float32), y, rng.random(n).astype(np.float32)


@pytest.mark.parametrize("n_outputs, batch_norm, l2, weighted, optimizer", [
    (1, False, 0.0, False, "adam"),
    (3, True, 0.01, True, "adam"),
    (3, False, 0.0, False, "adam_amsgrad_clipnorm"),
    (1, True, 0.01, True, "sgd_momentum"),
])
def test_same_weights_and_history_as_keras_fit(n_outputs, batch_norm, l2, weighted, optimizer):
    X, y, w = features(n_classes=max(n_outputs, 2))
    w = w if weighted else None
    ours, theirs = (compiled_head(n_outputs, batch_norm=batch_norm, l2=l2, optimizer=optimizer) for _ in range(2))
    validation = (X[:20], y[:20])
    expected = theirs.fit(X, y, batch_size=10, epochs=4, shuffle=False, sample_weight=w, validation_data=validation,
                          verbose=0).history
    got = fit_head(ours, X, y, batch_size=10, epochs=4, shuffle=False, sample_weight=w,
                   validation_data=validation).history
    expected["accuracy"] = expected.pop("compile_metrics", expected.get("accuracy"))
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, err_msg=key)
    for mine, keras_weights in zip(ours.get_weights(), theirs.get_weights()):  # BN moving stats included
        np.testing.assert_allclose(mine, keras_weights, rtol=1e-5, atol=1e-6)
    for mine, keras_slot in zip(ours.optimizer.variables, theirs.optimizer.variables):  # iterations, m, v
        np.testing.assert_allclose(np.asarray(mine), np.asarray(keras_slot), rtol=1e-5, atol=1e-7,
                                   err_msg=mine.path)


@pytest.mark.parametrize("n_outputs", [1, 3])
def test_fused_adam_equals_keras_adam_in_both_loops(n_outputs):
    from xrayest.optimizers import FusedAdam

    X, y, w = features(n_classes=max(n_outputs, 2))
    reference = compiled_head(n_outputs, batch_norm=True)
    expected = reference.fit(X, y, batch_size=10, epochs=3, shuffle=False, sample_weight=w, verbose=0).history["loss"]
    for loop in ("graph", "keras"):
        head = compiled_head(n_outputs, batch_norm=True)
        head.compile(optimizer=FusedAdam(1e-2), loss=head.loss, metrics=["accuracy"])
        if loop == "graph":
            got = fit_head(head, X, y, batch_size=10, epochs=3, shuffle=False, sample_weight=w).history["loss"]
        else:
            got = head.fit(X, y, batch_size=10, epochs=3, shuffle=False, sample_weight=w, verbose=0).history["loss"]
        np.testing.assert_allclose(got, expected, rtol=1e-5, err_msg=loop)
        for mine, keras_weights in zip(head.get_weights(), reference.get_weights()):
            np.testing.assert_allclose(mine, keras_weights, rtol=1e-5, atol=1e-6, err_msg=loop)


def test_build_optimizer_fuses_plain_adam_only():
    from xrayest.optimizers import FusedAdam, build_optimizer

    assert type(build_optimizer("adam", 1e-3)) is FusedAdam
    assert type(build_optimizer(keras.optimizers.Adam, 1e-3)) is FusedAdam
    assert type(build_optimizer(keras.optimizers.Adam(amsgrad=True), 1e-3)) is keras.optimizers.Adam
    assert type(build_optimizer(keras.optimizers.Adam(clipnorm=1.0), 1e-3)) is keras.optimizers.Adam
    assert type(build_optimizer("sgd", 1e-3)) is keras.optimizers.SGD
    fused = build_optimizer(keras.optimizers.Adam(beta_1=0.8, epsilon=1e-5), 0.05)
    assert (fused.beta_1, fused.epsilon, float(fused.learning_rate)) == (0.8, 1e-5, pytest.approx(0.05))
    with pytest.raises(ValueError, match="'adamm' is not a Keras optimizer name"):
        build_optimizer("adamm", 1e-3)
    with pytest.raises(ValueError, match="amsgrad"):
        FusedAdam(amsgrad=True)


def test_batch_hooks_are_detected():
    from xrayest.head_training import has_batch_hooks

    callbacks = keras.callbacks
    assert not any(has_batch_hooks(cb) for cb in [callbacks.EarlyStopping(), callbacks.ReduceLROnPlateau(),
                                                   callbacks.LambdaCallback(on_epoch_end=print)])
    assert all(has_batch_hooks(cb) for cb in [callbacks.TerminateOnNaN(), callbacks.ProgbarLogger(),
                                              callbacks.LambdaCallback(on_train_batch_end=print)])


def test_dropout_is_active_in_training_only():
    X, y, _ = features()
    plain = fit_head(compiled_head(1), X, y, batch_size=10, epochs=2, shuffle=False).history["loss"]
    dropped_head = compiled_head(1, dropout=0.5)
    dropped = fit_head(dropped_head, X, y, batch_size=10, epochs=2, shuffle=False).history["loss"]
    assert not np.allclose(plain, dropped)
    np.testing.assert_array_equal(predict_head(dropped_head, X), predict_head(dropped_head, X))


def test_epoch_callbacks_stop_restore_and_schedule():
    X, y, _ = features()
    one_epoch = compiled_head(1, learning_rate=5e-3)  # the schedule below halves 1e-2 before epoch 0
    fit_head(one_epoch, X, y, batch_size=10, epochs=1, shuffle=False)
    head = compiled_head(1)
    # min_delta so large that nothing after epoch 0 improves: stop after epoch 1, restore epoch 0.
    stop = keras.callbacks.EarlyStopping(monitor="loss", patience=1, min_delta=100.0, restore_best_weights=True)
    rates = []
    schedule = keras.callbacks.LearningRateScheduler(lambda epoch, lr: rates.append(lr) or lr * 0.5)
    history = fit_head(head, X, y, batch_size=10, epochs=50, callbacks=[stop, schedule], shuffle=False).history
    assert len(history["loss"]) == 2
    for restored, expected in zip(head.get_weights(), one_epoch.get_weights()):
        np.testing.assert_array_equal(restored, expected)
    assert rates == pytest.approx([1e-2, 5e-3])
    assert float(head.optimizer.learning_rate) == pytest.approx(2.5e-3)


def test_predict_head_equals_keras_predict():
    X, y, _ = features()
    head = compiled_head(3, batch_norm=True)
    fit_head(head, X, y, batch_size=10, epochs=2)
    np.testing.assert_allclose(predict_head(head, X, batch_size=4), head.predict(X, verbose=0), rtol=1e-5, atol=1e-6)
    assert predict_head(head, X[:0]).shape == (0, 3)


def test_rejects_a_loss_it_does_not_reproduce():
    X, y, _ = features()
    head = compiled_head(1)
    head.compile(optimizer="adam", loss="mse")
    with pytest.raises(ValueError, match="mse"):
        fit_head(head, X, y, batch_size=10, epochs=1)


class TestClassifierUsesIt:
    @pytest.fixture
    def calls(self, monkeypatch):
        calls = []
        real = head_training.fit_head
        monkeypatch.setattr(head_training, "fit_head", lambda *a, **k: calls.append(k) or real(*a, **k))
        return calls

    def test_frozen_fit_trains_the_head_with_it(self, binary_images, calls):
        X, y = binary_images
        clf = tiny_classifier(epochs=25, dropout=0.3, validation_split=0.25, early_stopping=30).fit(X, y)
        assert len(calls) == 1 and clf.training_loop_ == ["graph"]
        assert set(clf.history_) >= {"loss", "accuracy", "val_loss", "val_accuracy", "epoch_time"}
        assert len(clf.history_["loss"]) == 25
        assert clf.score(X, y) > 0.8  # the band signal is learnt
        again = tiny_classifier(epochs=25, dropout=0.3, validation_split=0.25, early_stopping=30).fit(X, y)
        np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))  # random_state reproduces

    def test_the_loop_is_chosen_explicitly(self, binary_images, calls, capsys):
        X, y = binary_images
        batch_hooks = keras.callbacks.TerminateOnNaN()
        assert tiny_classifier(epochs=1, callbacks=[batch_hooks]).fit(X, y).training_loop_ == ["keras"]
        assert tiny_classifier(epochs=1, training_loop="keras").fit(X, y).training_loop_ == ["keras"]
        assert calls == []
        with pytest.raises(ValueError, match="TerminateOnNaN has per-batch hooks"):
            tiny_classifier(epochs=1, training_loop="graph", callbacks=[batch_hooks]).fit(X, y)
        clf = tiny_classifier(epochs=2, verbose=1).fit(X, y)  # progress lines no longer switch loops
        assert clf.training_loop_ == ["graph"] and len(calls) == 1
        assert "epoch 2/2 - loss:" in capsys.readouterr().out
        assert tiny_classifier(epochs=1, augment="light").fit(X, y).training_loop_ == ["keras"]  # images

    def test_both_loops_learn_the_same_head(self, binary_images):
        X, y = binary_images
        graph = tiny_classifier(epochs=3, batch_size=24, training_loop="graph").fit(X, y)
        keras_loop = tiny_classifier(epochs=3, batch_size=24, training_loop="keras").fit(X, y)
        # one batch per epoch: no shuffling difference between the loops, the same updates
        np.testing.assert_allclose(graph.history_["loss"], keras_loop.history_["loss"], rtol=1e-4)
        np.testing.assert_allclose(graph.predict_proba(X), keras_loop.predict_proba(X), rtol=1e-4, atol=1e-5)
