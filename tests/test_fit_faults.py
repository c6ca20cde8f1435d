"""A fit that fails or is interrupted leaves the estimator exactly as it was (xrayest.atomic).

The interruptions are real: a child process is sent SIGINT (what Ctrl-C sends) while it trains, and
the failures are real files that cannot be decoded half-way through a re-fit.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import make_images, tiny_classifier, tiny_extractor

TESTS = Path(__file__).resolve().parent

# The child fits each estimator, then re-fits it on other labels (or other rows); a callback prints
# "training" at the re-fit's second epoch and sleeps, and the parent answers with SIGINT.
CHILD = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, {tests!r})
    import keras
    import numpy as np
    from conftest import make_images, tiny_classifier
    from xrayest import CascadeClassifier, EnsembleClassifier

    class Stall(keras.callbacks.Callback):
        armed = False

        def on_epoch_begin(self, epoch, logs=None):
            if Stall.armed and epoch == 1:
                print("training", flush=True)
                time.sleep(120)

    X, codes = make_images(30, 32, 3)
    names = np.array(["normal", "bacterial", "viral"])
    y = names[codes]
    cases = {{
        "XrayCNNClassifier": (lambda: tiny_classifier(callbacks=[Stall()]), y, np.array(["x", "y", "z"])[codes]),
        "CascadeClassifier": (lambda: CascadeClassifier([
            ("root", tiny_classifier(), {{"normal": ["normal"], "pneumonia": ["bacterial", "viral"]}}),
            ("pneumonia", tiny_classifier(callbacks=[Stall()]), None)]), y, y[::-1]),
        "EnsembleClassifier": (lambda: EnsembleClassifier(tiny_classifier(callbacks=[Stall()]), n_members=2,
                                                          random_state=0), y, np.array(["x", "y", "z"])[codes]),
    }}
    for name, (make, first, second) in cases.items():
        Stall.armed = False
        model = make().fit(X, first)
        before = model.predict_proba(X), model.predict(X)
        Stall.armed = True
        try:
            model.fit(X, second)
            outcome = "finished"
        except KeyboardInterrupt:
            outcome = "interrupted"
        proba, labels = model.predict_proba(X), model.predict(X)
        print(json.dumps({{"estimator": name, "outcome": outcome, "classes": [str(c) for c in model.classes_],
                          "same_proba": bool(np.array_equal(proba, before[0])),
                          "same_labels": bool(np.array_equal(labels, before[1]))}}), flush=True)
""")


def _run_interrupting(script, marker, timeout=300):
    """Run ``script`` in a child Python; send SIGINT each time it prints ``marker``; return its JSON lines."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env)
    results = []
    try:
        for line in child.stdout:
            if line.strip() == marker:
                child.send_signal(signal.SIGINT)
            elif line.startswith("{"):
                results.append(json.loads(line))
        child.wait(timeout=timeout)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, child.stderr.read()[-3000:]
    return results


@pytest.mark.slow
def test_ctrl_c_during_a_refit_leaves_every_classifier_as_it_was():
    results = _run_interrupting(CHILD.format(tests=str(TESTS)), "training")
    assert [r["estimator"] for r in results] == ["XrayCNNClassifier", "CascadeClassifier", "EnsembleClassifier"]
    for r in results:
        assert r["outcome"] == "interrupted", r
        assert r["classes"] == ["bacterial", "normal", "viral"], r  # not the interrupted fit's labels
        assert r["same_proba"] and r["same_labels"], r


TSNE_CHILD = textwrap.dedent("""
    import json
    import numpy as np
    import openTSNE
    from xrayest import TSNEEmbedding

    openTSNE_fit = openTSNE.TSNE.fit

    def announced_fit(self, *args, **kwargs):  # says when the re-fit reaches the optimisation (after its PCA)
        if announce:
            print("fitting", flush=True)
        return openTSNE_fit(self, *args, **kwargs)

    openTSNE.TSNE.fit = announced_fit
    announce = False

    X = np.random.default_rng(0).normal(size=(400, 10))
    model = TSNEEmbedding(n_iter=250, pca_components=None, random_state=0).fit(X)
    before = model.transform(X[:5])
    model.set_params(pca_components=5, n_iter=100000)
    announce = True
    try:
        model.fit(X)
        outcome = "finished"
    except KeyboardInterrupt:
        outcome = "interrupted"
    print(json.dumps({"outcome": outcome, "pca": model.pca_ is None,
                      "same": bool(np.array_equal(model.transform(X[:5]), before))}), flush=True)
""")


@pytest.mark.slow
def test_ctrl_c_during_a_tsne_refit_leaves_the_map_as_it_was():
    [result] = _run_interrupting(TSNE_CHILD, "fitting")
    assert result == {"outcome": "interrupted", "pca": True, "same": True}


def _write_pngs(folder, images):
    from PIL import Image

    paths = []
    for i, image in enumerate(images):
        path = folder / f"{i:02d}.png"
        Image.fromarray(image).save(path)
        paths.append(str(path))
    return paths


def test_an_unreadable_file_half_way_through_a_refit_changes_nothing(tmp_path):
    X, codes = make_images(24, 32, 2)
    paths = _write_pngs(tmp_path, X)
    model = tiny_classifier(epochs=2).fit(paths, np.array(["normal", "pneumonia"])[codes])
    before = model.predict_proba(paths)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not a picture" * 10)
    refit_paths = paths[:12] + [str(broken)] + paths[13:]
    with pytest.raises(ValueError, match="broken.png"):
        model.fit(refit_paths, np.array(["x", "y"])[codes])
    assert list(model.classes_) == ["normal", "pneumonia"]
    np.testing.assert_array_equal(model.predict_proba(paths), before)


def test_an_unfitted_estimator_whose_fit_fails_stays_unfitted(tmp_path):
    from sklearn.exceptions import NotFittedError

    X, codes = make_images(24, 32, 2)
    paths = _write_pngs(tmp_path, X)
    (tmp_path / "05.png").write_bytes(b"garbage")
    model = tiny_classifier(epochs=1)
    with pytest.raises(ValueError, match="05.png"):
        model.fit(paths, codes)
    assert not [name for name in vars(model) if name.endswith("_") and not name.startswith("_")]
    with pytest.raises(NotFittedError):
        model.predict(X)


def test_a_failed_extractor_refit_keeps_the_fitted_trunk(tmp_path):
    X, _ = make_images(6, 32, 2)
    extractor = tiny_extractor().fit(X)
    before = extractor.transform(X)
    bad = tmp_path / "not_weights.weights.h5"
    bad.write_bytes(b"not an HDF5 file")
    extractor.set_params(image_size=48, weights=str(bad))
    with pytest.raises(Exception):
        extractor.fit(X)
    assert extractor.image_size_ == (32, 32)
    np.testing.assert_array_equal(extractor.transform(X), before)
