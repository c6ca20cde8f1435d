"""
VGG16 with BatchNorm and L2, and InceptionV3 fine-tuned past layer 300
======================================================================

Two more BU report models. VGG16 frozen, BatchNormalization on its output, Flatten, Dense 256 with an L2
penalty, Dropout 0.3 and a sigmoid: 21,139,777 parameters at 224 px. InceptionV3 with its first 300
layers frozen and the rest fine-tuned, with ReduceLROnPlateau and early stopping, as the report trained
it; xrayest trains the unfrozen layers on the cached activation where the frozen part ends.

**Full run**: ``python examples/plot_3_vgg16_batchnorm_inception.py`` downloads the ImageNet weights of VGG16
and InceptionV3 through Keras (or, offline, reads them from ``XRAYEST_WEIGHTS_DIR``). The machine this site
was measured on has no network and only Xception's ImageNet weights, so no full-run table of this example is
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

from xrayest import XrayCNNClassifier, load_image_folder, plot_history

import keras  # after xrayest, which picks TensorFlow's kernels before it loads

parser = argparse.ArgumentParser(description='VGG16 + BatchNorm and InceptionV3 on BU CS542')
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
# VGG16 + BatchNorm + Dense 256 (L2) + Dropout 0.3
# ------------------------------------------------
epochs = 2 if args.quick else 40
weights = None if args.quick else args.weights
X_train, y_train = load("train", ["covid", "normal"], per_class=8)
X_test, y_test = load("test", ["covid", "normal"], per_class=4)
vgg16 = XrayCNNClassifier("vgg16", weights=weights, image_size=224, pooling="flatten",
                          batch_norm=True, hidden_units=(256,), l2=1e-3, dropout=0.3,
                          learning_rate=1e-4, batch_size=10, epochs=epochs, random_state=0)
rows = [score("VGG16 + BN + Dense 256 (L2) + Dropout 0.3, binary", vgg16,
              X_train, y_train, X_test, y_test, "0.89-1.00")]
n = vgg16.model_.count_params()
print(f"VGG16 + BN + Dense 256: {n:,} parameters (published: 21,139,777)")
assert n == 21_139_777

# %%
# InceptionV3, the first 300 layers frozen
# ----------------------------------------
# ``fine_tune=N`` unfreezes the backbone's last N layers; the report froze ``layers[:300]``.
size = 150 if args.quick else 299
n_layers = len(keras.applications.InceptionV3(include_top=False, weights=None,
                                               input_shape=(size, size, 3)).layers)
inception = XrayCNNClassifier("inceptionv3", weights=weights, image_size=size, pooling="avg",
                              hidden_units=(256,), dropout=0.3, learning_rate=1e-4,
                              fine_tune=n_layers - 300, reduce_lr=3, early_stopping=6,
                              validation_split=0.2, batch_size=10,
                              epochs=1 if args.quick else 20, random_state=0)
rows.append(score(f"InceptionV3, layers 300-{n_layers - 1} fine-tuned, binary", inception,
                  X_train, y_train, X_test, y_test, "0.89-1.00"))
print(f"InceptionV3: {n_layers} layers, the last {n_layers - 300} trained")
print("plan:", inception.training_plan_)
pd.DataFrame(rows).set_index("model")

# %%
# The fine-tuning history
# -----------------------
history_figure = plot_history(inception.history_,
                              title="InceptionV3 fine-tuned: loss and accuracy per epoch")
