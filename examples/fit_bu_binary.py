"""Fit xrayest on the real BU CS542 X-rays (covid vs normal, then 4 classes) and print test metrics.

    python examples/fit_bu_binary.py [--weights PATH]

Needs ../shared/data/bu_cs542 beside the repository (skips with a message otherwise).  With no
--weights it uses ../shared/tools/xception-imagenet-weights when present, else "imagenet"
(downloads through Keras when online).
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "bu_cs542"
TOOL = DATA.parents[1] / "tools" / "xception-imagenet-weights"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--weights")
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"skipped: real BU CS542 images not found at {DATA}")
        return 0
    weights = args.weights
    if weights is None and TOOL.exists():
        weights = subprocess.run([str(TOOL), sys.executable], capture_output=True, text=True, check=True).stdout.split()[-1]
    from xrayest import XrayCNNClassifier, evaluate, load_image_folder

    for task, classes in [("binary", ["covid", "normal"]), ("4-class", None)]:
        X_train, y_train = load_image_folder(DATA / "train", classes=classes, return_paths=True)
        X_test, y_test = load_image_folder(DATA / "test", classes=classes, return_paths=True)
        clf = XrayCNNClassifier("xception", weights=weights or "imagenet", hidden_units=(256,), dropout=0.5,
                                epochs=args.epochs, batch_size=10, random_state=0, verbose=1)
        clf.fit(X_train, y_train)
        print(f"\n== {task}: {len(X_train)} train / {len(X_test)} test images ==")
        print(evaluate(clf, X_test, y_test))
    return 0


if __name__ == "__main__":
    sys.exit(main())
