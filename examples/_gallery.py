"""What the gallery examples share: their command line, the BU data, the published figures, tables.

Not an example itself (the gallery skips files starting with ``_``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]
BU = REPO.parent / "shared" / "data" / "bu_cs542"
XCEPTION_TOOL = REPO.parent / "shared" / "tools" / "xception-imagenet-weights"

# what the reports published (quoted, not measured here)
PUBLISHED = {
    "binary": "0.89-1.00",
    "4-class": "0.56-0.75",
    "cpu_seconds": "748-7453 s (CPU)",
    "gpu_seconds": "127-497 s (GPU)",
    "sutd": "0.894 single CNN, 0.901 cascade (pediatric test set)",
}


def parse_args(description: str, **extra):
    """``--quick`` (a few images, 2 epochs, random weights), ``--data DIR``, ``--weights W`` and ``extra``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a few images and epochs, random weights: checks the code")
    parser.add_argument("--data", type=Path, default=BU, help="a folder with train/ and test/ class sub-folders")
    parser.add_argument("--weights", default=None,
                        help="imagenet (default in full runs), none, or a .weights.h5 file "
                             "(examples with one backbone)")
    for name, default in extra.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    args, _ = parser.parse_known_args()
    return args


def have_data(args) -> bool:
    if (args.data / "train").is_dir() and (args.data / "test").is_dir():
        return True
    print(f"skipped: no train/ and test/ folders under {args.data} (pass --data DIR)")
    return False


def weights(args, backbone: str):
    """Random weights in quick mode; else --weights, the local Xception file for xception, or "imagenet"."""
    if args.quick:
        return None
    if args.weights is not None:
        return None if args.weights.lower() == "none" else args.weights
    if backbone == "xception" and XCEPTION_TOOL.exists():
        out = subprocess.run([str(XCEPTION_TOOL), sys.executable], capture_output=True, text=True, check=True)
        return out.stdout.split()[-1]
    return "imagenet"


def load(args, split: str, classes=None, per_class: int | None = None):
    """Paths and labels of ``split``; in quick mode the first ``per_class`` images of each class."""
    import numpy as np

    from xrayest import load_image_folder

    X, y = load_image_folder(args.data / split, classes=classes, return_paths=True)
    if args.quick and per_class:
        keep = np.concatenate([np.flatnonzero(y == c)[:per_class] for c in np.unique(y)])
        X, y = X[keep], y[keep]
    return X, y


def score(name, clf, X_train, y_train, X_test, y_test, published="") -> list:
    """Fit, time, and one table row: name, test accuracy, macro-F1, fit seconds, published."""
    from sklearn.metrics import accuracy_score, f1_score

    start = time.perf_counter()
    clf.fit(X_train, y_train)
    seconds = time.perf_counter() - start
    pred = clf.predict(X_test)
    return [name, f"{accuracy_score(y_test, pred):.3f}", f"{f1_score(y_test, pred, average='macro'):.3f}",
            f"{seconds:.0f}", published]


def table(rows, headers=("model", "test accuracy", "macro-F1", "fit s", "published")) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    text = "\n".join(lines)
    print(text)
    return text


def mode_line(args) -> str:
    line = ("quick mode: a few images, 2 epochs, random weights; the numbers check the code, not the accuracy"
            if args.quick else "full run")
    print(line)
    return line
