"""
Small CNNs, a soft-voting ensemble and a randomized search
==========================================================

One BU report trained several small CNNs from scratch with ReduceLROnPlateau, then averaged the
probabilities of 30 repeated runs. Here: ``small_cnn`` on the four classes, a soft-voting ensemble of
runs that differ only in their seed (scikit-learn's ``VotingClassifier``), and a ``RandomizedSearchCV``
over the head's architecture and the learning rate, compared in one table.

**Full run** (``python examples/plot_5_small_cnn_ensemble.py``: 128 px, 40 epochs, 5 seeds, 8 candidates
x 3 folds; the 269 training and 36 test BU images, 4 classes; a 2-core CPU, 51 minutes for the
whole script):

===========================  =============  ========  =====
model                        test accuracy  macro-F1  fit s
===========================  =============  ========  =====
small_cnn, one run           0.583          0.577     149
soft vote of 5 seeds         0.583          0.576     715
best of a randomized search  0.556          0.539     2190
===========================  =============  ========  =====

The best search candidate's training history in that run (``python docs/_ext/full_run.py
examples/plot_5_small_cnn_ensemble.py`` keeps an example's figures):

.. image:: /_static/full_runs/plot_5_small_cnn_ensemble_1.png
   :alt: loss and accuracy per epoch, training and validation, of the best small_cnn of the search

Published: 0.56-0.75 (4 classes; the report's vote was over 30 runs). 36 test images: one is 2.8 points;
an earlier full run on another 2-core host gave 0.667, 0.611 and 0.639 for the three rows.
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

from scipy.stats import loguniform, uniform
from sklearn.ensemble import VotingClassifier
from sklearn.model_selection import RandomizedSearchCV, StratifiedKFold
from xrayest import XrayCNNClassifier, load_image_folder, plot_history

parser = argparse.ArgumentParser(description="Small CNNs, an ensemble and a search")
parser.add_argument("--data", type=Path, default=Path("../shared/data/bu_cs542"),
                    help="a folder with train/ and test/ class sub-folders")
parser.add_argument("--quick", action="store_true", help="a few images, 2 epochs")
parser.add_argument("--runs", type=int, default=5, help="seeds in the ensemble")
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
# One small CNN, then an ensemble of seeds
# ----------------------------------------
epochs = 2 if args.quick else 40
runs = 2 if args.quick else args.runs
size = 64 if args.quick else 128


def small_cnn(seed=0, **params):
    return XrayCNNClassifier("small_cnn", weights=None, image_size=size, augment="light",
                             reduce_lr=4, validation_split=0.15, hidden_units=(128,),
                             dropout=0.3, learning_rate=1e-3, batch_size=16, epochs=epochs,
                             random_state=seed, **params)


X_train, y_train = load("train", per_class=6)
X_test, y_test = load("test", per_class=3)
rows = [score("small_cnn, one run", small_cnn(), X_train, y_train, X_test, y_test,
              "0.56-0.75")]
ensemble = VotingClassifier([(f"seed{i}", small_cnn(i)) for i in range(runs)], voting="soft")
rows.append(score(f"soft vote of {runs} seeds", ensemble, X_train, y_train, X_test, y_test,
                  "0.56-0.75 (30-run vote)"))

# %%
# A randomized search over the architecture
# -----------------------------------------
space = {"hidden_units": [(64,), (128,), (256,), (128, 64)], "dropout": uniform(0.1, 0.5),
         "learning_rate": loguniform(1e-4, 3e-3)}
folds = StratifiedKFold(2 if args.quick else 3, shuffle=True, random_state=0)
search = RandomizedSearchCV(small_cnn(), space, n_iter=2 if args.quick else 8, cv=folds,
                            random_state=0)
rows.append(score("best of a randomized search", search, X_train, y_train, X_test, y_test,
                  "0.56-0.75"))
print("best:", {k: round(v, 5) if isinstance(v, float) else v
                for k, v in search.best_params_.items()})
pd.DataFrame(rows).set_index("model")

# %%
# The best run's training history
# -------------------------------
history_figure = plot_history(search.best_estimator_.history_,
                              title="best small_cnn: loss and accuracy per epoch")
