"""
Pipelines: frozen features into scikit-learn models, calibration, t-SNE, and devices
====================================================================================

``FeatureExtractor`` turns a backbone into the first step of a scikit-learn Pipeline: its features are
computed once per image and cached, so cross-validation over later steps never reruns it. Here Xception
features feed a StandardScaler and a LogisticRegression or an SVC, a ``CalibratedClassifierCV`` makes the
SVC's probabilities honest, ``TSNEEmbedding`` is a Pipeline step, and ``classification_report`` scores
the result. The reports timed their fits on CPUs and GPUs; ``device=`` picks one explicitly.

**Full run** (``python examples/plot_6_pipelines.py``, with ``--weights FILE`` offline: Xception
with ImageNet weights at 299 px, the 269 training and 36 test BU images, 4 classes; a 2-core
CPU, no GPU; 37 s for the whole script, of which 33 s compute the features of the 305 images
once):

==========================================  =============  ========  =====  ==========
model                                       test accuracy  macro-F1  fit s  published
==========================================  =============  ========  =====  ==========
Xception + scaler + LogisticRegression      0.806          0.807     1      0.56-0.75
Xception + scaler + SVC                     0.667          0.663     0      0.56-0.75
the SVC, calibrated (sigmoid)               0.750          0.758     0      0.56-0.75
==========================================  =============  ========  =====  ==========

The fits take a second because every model reuses the cached features; the reports' fits took
748-7453 s on CPUs and 127-497 s on GPUs. 36 test images: one image is 2.8 points.

The full run's t-SNE maps (``python docs/_ext/full_run.py examples/plot_6_pipelines.py --weights
FILE`` keeps an example's figures; in that run the calibrated SVC scored the same 0.750 / 0.758, in
144 s with other work on the two cores):

.. image:: /_static/full_runs/plot_6_pipelines_1.png
   :alt: t-SNE of the Xception features of the 269 training images, four classes, and of the 36
         test images placed into the same map
"""

# %%
# The data
# --------
# BU CS542's X-rays, one folder per class under ``train/`` and ``test/``: ``--data DIR``,
# by default ``../shared/data/bu_cs542`` (run from the repository's root). ``--quick``
# keeps the first few images of each class and trains for two epochs with random weights:
# it checks that the code runs, not how well it learns.
import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score

import matplotlib.pyplot as plt
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import classification_report
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from xrayest import (FeatureExtractor, TSNEEmbedding, available_devices, load_image_folder,
                     plot_embedding, resolve_device)

parser = argparse.ArgumentParser(description="Xception features in scikit-learn Pipelines")
parser.add_argument("--data", type=Path, default=Path("../shared/data/bu_cs542"),
                    help="a folder with train/ and test/ class sub-folders")
parser.add_argument("--quick", action="store_true", help="a few images, 2 epochs")
parser.add_argument("--weights", default="imagenet",
                    help="imagenet (through Keras; offline: XRAYEST_WEIGHTS_DIR), or a file")
args, _ = parser.parse_known_args()
print("quick mode: a few images, 2 epochs, random weights" if args.quick else "full run")


def load(split, classes=None, per_class=4):
    """Paths and labels of one split; in quick mode, the first ``per_class`` of each class."""
    paths, labels = load_image_folder(args.data / split, classes=classes, return_paths=True)
    if args.quick:
        keep = [np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)]
        paths, labels = paths[np.concatenate(keep)], labels[np.concatenate(keep)]
    return paths, labels


def score(name, clf, X_train, y_train, X_test, y_test, published):
    """Fit ``clf``, time the fit and score it on the test images: one row of the table."""
    start = time.perf_counter()
    clf.fit(X_train, y_train)
    seconds = time.perf_counter() - start
    pred = clf.predict(X_test)
    row = {"model": name, "test accuracy": f"{accuracy_score(y_test, pred):.3f}",
           "macro-F1": f"{f1_score(y_test, pred, average='macro'):.3f}",
           "fit s": f"{seconds:.0f}", "published": published}
    print(", ".join(f"{key} {value}" for key, value in row.items()))
    return row


# %%
# Features, scaled, into two linear models
# ----------------------------------------
size = 96 if args.quick else 299
weights = None if args.quick else args.weights
X_train, y_train = load("train", per_class=8)
X_test, y_test = load("test", per_class=3)
features = FeatureExtractor("xception", weights=weights, image_size=size, pooling="avg",
                            random_state=0)
start = time.perf_counter()
features.fit(X_train).transform(X_train)
features.transform(X_test)
print(f"Xception features of {len(X_train) + len(X_test)} images: "
      f"{time.perf_counter() - start:.0f} s (computed once; every model below reuses them)")
logistic = make_pipeline(features, StandardScaler(), LogisticRegression(C=0.1, max_iter=5000))
svc = make_pipeline(features, StandardScaler(), SVC(C=1.0, kernel="rbf"))
rows = [score("Xception + scaler + LogisticRegression", logistic,
              X_train, y_train, X_test, y_test, "0.56-0.75"),
        score("Xception + scaler + SVC", svc, X_train, y_train, X_test, y_test, "0.56-0.75")]

# %%
# Calibrated probabilities and a classification report
# ----------------------------------------------------
calibrated = CalibratedClassifierCV(svc, cv=2 if args.quick else 3, method="sigmoid")
rows.append(score("the SVC, calibrated (sigmoid)", calibrated,
                  X_train, y_train, X_test, y_test, "0.56-0.75"))
print(classification_report(y_test, calibrated.predict(X_test), digits=3, zero_division=0))
pd.DataFrame(rows).set_index("model")

# %%
# t-SNE as a Pipeline step: training images, and test images placed into the same map
# -------------------------------------------------------------------------------------
perplexity = min(30.0, len(X_train) / 4)
tsne = make_pipeline(features, StandardScaler(), TSNEEmbedding(perplexity=perplexity,
                                                               random_state=0))
train_map = tsne.fit_transform(X_train)
test_map = tsne.transform(X_test)
fig, axes = plt.subplots(1, 2, figsize=(9, 4), sharex=True, sharey=True)
plot_embedding(train_map, y_train, title="train (fitted map)", ax=axes[0])
plot_embedding(test_map, y_test, title="test (placed into it)", ax=axes[1])
fig.tight_layout()

# %%
# CPU or GPU
# ----------
# ``device="auto"`` takes a GPU when there is one; ``"gpu"`` or ``"gpu:N"`` where there is
# none is an error, never a silent CPU run. The reports measured their fits at 748-7453 s
# on CPUs and 127-497 s on GPUs.
print("devices here:", available_devices(), "| device='auto' runs on:", resolve_device("auto"))
try:
    resolve_device("gpu")
except RuntimeError as error:
    print(f"device='gpu' here: {type(error).__name__}: {error}")
