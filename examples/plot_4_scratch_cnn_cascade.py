"""
From-scratch CNNs, augmentation and a two-stage cascade
=======================================================

The SUTD study trained small CNNs from scratch on 150 px grayscale pediatric X-rays: a 5-conv CNN and a
residual CNN, with rotation / zoom / shift augmentation and class balancing, and a cascade that first
separates normal from infected lungs, then bacterial from viral pneumonia. Here the same recipes run on
BU's normal, bacterial and viral images (the study's classes; BU's COVID images left out), then the
feature maps of the first convolution are drawn for one image.

**Full run** (``python examples/plot_4_scratch_cnn_cascade.py``: 150 px grayscale, 35 epochs, the 208
training and 27 test BU images of the three classes; a 2-core CPU):

==============================================  =============  ========  =====
model                                           test accuracy  macro-F1  fit s
==============================================  =============  ========  =====
sutd_cnn, augment="xray", class-balanced        0.519          0.451     87
sutd_residual, augment="xray", class-balanced   0.593          0.520     147
cascade of two sutd_cnn                         0.741          0.729     81
==============================================  =============  ========  =====

The study's 0.894 (one CNN) and 0.901 (cascade) were trained on 5,000 pediatric images; 208 are far
too few for a CNN from scratch, and the cascade's easier first question (normal or not) helps most.
On the pediatric task itself (``benchmarks/bench_pediatric.py``, 4,204 training images, a 15% hold-out)
the same recipes reach 0.791-0.809 for one CNN and 0.830 for the cascade. 27 test images: one image
is 3.7 points.
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

from xrayest import XrayCNNClassifier, load_image_folder, make_recipe, plot_feature_maps

parser = argparse.ArgumentParser(description='From-scratch CNNs and a cascade on BU CS542')
parser.add_argument("--data", type=Path, default=Path("../shared/data/bu_cs542"),
                    help="a folder with train/ and test/ class sub-folders")
parser.add_argument("--quick", action="store_true", help="a few images, 2 epochs")
args, _ = parser.parse_known_args()
print("quick mode: a few images, 2 epochs, random weights" if args.quick else "full run")

PUBLISHED = "0.894 single CNN, 0.901 cascade (pediatric test set)"


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
# Two CNNs from scratch, grayscale, augmented, class-balanced
# -----------------------------------------------------------
epochs = 2 if args.quick else 35
size = 64 if args.quick else 150
classes = ["normal", "pneumonia_bac", "pneumonia_vir"]
X_train, y_train = load("train", classes, per_class=8)
X_test, y_test = load("test", classes, per_class=4)
rows = []
for backbone in ("sutd_cnn", "sutd_residual"):
    clf = XrayCNNClassifier(backbone, weights=None, image_size=size, augment="xray",
                            class_weight="balanced", pooling="flatten",
                            hidden_units=(256, 128),
                            dropout=0.2, learning_rate=1e-3, batch_size=16, epochs=epochs,
                            lr_schedule="cosine", random_state=0)
    rows.append(score(f"{backbone}, {size} px grayscale, augment='xray'", clf,
                      X_train, y_train, X_test, y_test, PUBLISHED))
    print(f"{backbone}: input {clf.backbone_.input_shape}, "
          f"{clf.model_.count_params():,} parameters")

# %%
# The cascade: normal vs infected, then bacterial vs viral
# --------------------------------------------------------
cascade = make_recipe("sutd_cascade", classes=classes, image_size=size, epochs=epochs,
                      batch_size=16, class_weight="balanced", random_state=0)
rows.append(score("cascade of two sutd_cnn", cascade, X_train, y_train, X_test, y_test,
                  PUBLISHED))
pd.DataFrame(rows).set_index("model")

# %%
# What the first convolution sees
# -------------------------------
maps_figure = plot_feature_maps(clf, X_test[0], max_maps=16)
