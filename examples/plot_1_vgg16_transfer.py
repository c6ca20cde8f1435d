"""
VGG16 transfer learning: binary, then four classes
==================================================

The BU CS542 reports' first model: an ImageNet VGG16, frozen, with Flatten, Dropout 0.2, Dense 256 and a
sigmoid, trained with Adam at 5e-4, batch 10, for 40 epochs on COVID vs normal. Their learning-rate and
dropout sweeps become one ``GridSearchCV`` (the backbone runs once per image for every candidate and
fold), plotted against each parameter; then the 4-class task with VGG16, VGG19 and ResNet50 under a
GlobalMaxPooling + 2 x Dense 512 head, in one table next to the published figures.

**Full run**: ``python examples/plot_1_vgg16_transfer.py`` downloads the ImageNet weights of VGG16, VGG19 and
ResNet50 through Keras (or, offline, reads them from ``XRAYEST_WEIGHTS_DIR``). The machine this site was
measured on has no network and only Xception's ImageNet weights, so no full-run table of this example is
published yet; the run below is the quick one.
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
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from xrayest import XrayCNNClassifier, load_image_folder

parser = argparse.ArgumentParser(description='VGG16 transfer learning on BU CS542')
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
# VGG16, frozen, under the report's head: COVID vs normal
# --------------------------------------------------------
epochs = 2 if args.quick else 40
size = 64 if args.quick else 224
weights = None if args.quick else args.weights
X_train, y_train = load("train", ["covid", "normal"], per_class=8)
X_test, y_test = load("test", ["covid", "normal"], per_class=4)
vgg16 = XrayCNNClassifier("vgg16", weights=weights, image_size=size, pooling="flatten",
                          hidden_units=(256,), dropout=0.2, learning_rate=5e-4,
                          batch_size=10, epochs=epochs, random_state=0)
rows = [score("VGG16 + Dropout 0.2 + Dense 256, binary", vgg16,
              X_train, y_train, X_test, y_test, "0.89-1.00")]
print(f"VGG16 + head: {vgg16.model_.count_params():,} parameters at {size} px")
pd.DataFrame(rows).set_index("model")

# %%
# The published sweeps as one grid search
# ---------------------------------------
# Each candidate and fold reuses the features of the first: the 3 x 3 grid costs little
# more than one fit.
grid = {"learning_rate": [1e-3, 5e-4] if args.quick else [1e-3, 5e-4, 1e-4],
        "dropout": [0.2, 0.5] if args.quick else [0.2, 0.5, 0.8]}
folds = StratifiedKFold(2 if args.quick else 3, shuffle=True, random_state=0)
search = GridSearchCV(vgg16, grid, cv=folds).fit(X_train, y_train)
results = pd.DataFrame(search.cv_results_)
fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
for ax, name, other in ((axes[0], "learning_rate", "dropout"),
                        (axes[1], "dropout", "learning_rate")):
    for value, part in results.groupby(f"param_{other}"):
        part = part.sort_values(f"param_{name}")
        ax.errorbar(part[f"param_{name}"].astype(float), part["mean_test_score"],
                    yerr=part["std_test_score"], marker="o", capsize=3,
                    label=f"{other} = {value:g}")
    ax.set_xlabel(name)
    ax.legend(fontsize=8)
axes[0].set_xscale("log")
axes[0].set_ylabel("CV accuracy")
fig.suptitle("VGG16 binary: CV accuracy against each swept parameter")
fig.tight_layout()
print("best:", search.best_params_, f"CV accuracy {search.best_score_:.3f}")

# %%
# Four classes: VGG16, VGG19 and ResNet50 heads compared
# ------------------------------------------------------
X_train4, y_train4 = load("train", per_class=6)
X_test4, y_test4 = load("test", per_class=3)
rows = []
for backbone in ("vgg16", "vgg19", "resnet50"):
    clf = XrayCNNClassifier(backbone, weights=weights, image_size=size, pooling="max",
                            hidden_units=(512, 512), dropout=0.2, learning_rate=5e-4,
                            batch_size=10, epochs=epochs, random_state=0)
    rows.append(score(f"{backbone} + GlobalMaxPooling + 2 x Dense 512, 4-class", clf,
                      X_train4, y_train4, X_test4, y_test4, "0.56-0.75"))
pd.DataFrame(rows).set_index("model")
