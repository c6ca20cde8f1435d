"""The training toolbox on synthetic X-rays (offline): a small CNN from scratch with augmentation,
early stopping and a stratified validation split, then a cascade of two classifiers.

    python examples/train_from_scratch.py
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from sklearn.model_selection import train_test_split  # noqa: E402

from xrayest import CascadeClassifier, XrayCNNClassifier, evaluate, make_synthetic_xrays  # noqa: E402

X, y = make_synthetic_xrays(300, 64, random_state=0)
X_train, X_test, y_train, y_test = train_test_split(X, y, stratify=y, test_size=0.25, random_state=0)

clf = XrayCNNClassifier("small_cnn", weights=None, image_size=64, augment="light", epochs=40, batch_size=16,
                        early_stopping=8, validation_split=0.15, hidden_units=(64,), dropout=0.3, random_state=0)
clf.fit(X_train, y_train)
print(f"small_cnn: stopped after {len(clf.history_['loss'])} epochs, "
      f"{sum(clf.history_['epoch_time']):.1f} s of training")
print(evaluate(clf, X_test, y_test))


def stage():
    # the same recipe as above: each stage keeps its best epoch on a stratified validation split
    return XrayCNNClassifier("small_cnn", weights=None, image_size=64, augment="light", epochs=40, batch_size=16,
                             early_stopping=8, validation_split=0.15, hidden_units=(64,), dropout=0.3, random_state=0)


cascade = CascadeClassifier([
    ("root", stage(), {"normal": ["normal"], "abnormal": ["covid", "pneumonia"]}),
    ("abnormal", stage(), None),
]).fit(X_train, y_train)
print(f"\ncascade (normal vs abnormal, then covid vs pneumonia): test accuracy {cascade.score(X_test, y_test):.3f}")
