"""
VGG19 with a deep head, and the t-SNE of its last hidden layer
==============================================================

The BU report's VGG19 model: the frozen ImageNet VGG19, Flatten, then Dense 256, 256 and 64 before the
sigmoid: 26,529,473 parameters at 224 px, counted from the model xrayest builds. The 64-unit layer is the
estimator's ``transform``; its t-SNE for the training and test images, coloured by class, shows what the
head separates. A DenseNet121 backbone under the same deep head is the report's variant.

**Full run**: ``python examples/plot_2_vgg19_deep_head_tsne.py`` downloads the ImageNet weights of VGG19 and
DenseNet121 through Keras (or, offline, reads them from ``XRAYEST_WEIGHTS_DIR``). The machine this site was
measured on has no network and only Xception's ImageNet weights, so no full-run table of this example is
published yet; the run below is the quick one, and the parameter count it checks is the full model's.
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
from xrayest import TSNEEmbedding, XrayCNNClassifier, load_image_folder, plot_embedding

parser = argparse.ArgumentParser(description='VGG19 with a deep head on BU CS542')
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
# The model, counted
# ------------------
epochs = 2 if args.quick else 40
weights = None if args.quick else args.weights
X_train, y_train = load("train", ["covid", "normal"], per_class=8)
X_test, y_test = load("test", ["covid", "normal"], per_class=4)
vgg19 = XrayCNNClassifier("vgg19", weights=weights, image_size=224, pooling="flatten",
                          hidden_units=(256, 256, 64), dropout=0.25, learning_rate=1e-4,
                          batch_size=10, epochs=epochs, random_state=0)
rows = [score("VGG19 + 256/256/64, binary", vgg19, X_train, y_train, X_test, y_test,
              "0.89-1.00")]
n = vgg19.model_.count_params()
print(f"VGG19 + 256/256/64 head: {n:,} parameters (published: 26,529,473)")
assert n == 26_529_473

# %%
# t-SNE of the 64-unit layer, train and test
# ------------------------------------------
embedded = vgg19.transform(np.concatenate([X_train, X_test]))
perplexity = min(30.0, (len(embedded) - 1) / 3)
points = TSNEEmbedding(perplexity=perplexity, random_state=0).fit_transform(embedded)
fig, axes = plt.subplots(1, 2, figsize=(9, 4))
plot_embedding(points[: len(X_train)], y_train, title="train", ax=axes[0])
plot_embedding(points[len(X_train):], y_test, title="test", ax=axes[1])
fig.suptitle("t-SNE of VGG19's 64-unit layer")
fig.tight_layout()

# %%
# DenseNet121 under the same deep head
# ------------------------------------
densenet = XrayCNNClassifier("densenet121", weights=weights, image_size=224, pooling="avg",
                             hidden_units=(256, 256, 64), dropout=0.25, learning_rate=1e-4,
                             batch_size=10, epochs=epochs, random_state=0)
rows.append(score("DenseNet121 + 256/256/64, binary", densenet,
                  X_train, y_train, X_test, y_test, "0.89-1.00"))
pd.DataFrame(rows).set_index("model")
