"""Accuracy on the real BU CS542 test set with genuine ImageNet Xception weights, binary (covid vs
normal) and 4-class, printed next to the published results and appended to RESULTS.md.

Every choice is made on the training set only (cross-validation); the 36 test images are
touched once per model, at the end.

    python benchmarks/bench_accuracy.py [--precision float32 bfloat16]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from _common import append_results, load_split, markdown_table, record_result, xception_weights

PUBLISHED = {
    "binary": "0.89 (VGG19 + 256/256/64) – 1.00 (VGG16 + BN + 256)",
    "4-class": "0.56 – 0.75 (best: InceptionV3, first 300 layers frozen)",
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", nargs="+", default=["float32"], choices=["float32", "bfloat16"],
                        help="backbone precisions to evaluate (default: %(default)s)")
    args = parser.parse_args()

    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from xrayest import FeatureExtractor, XrayCNNClassifier

    weights = xception_weights()
    X_train, y_train = load_split("train", size=299)
    X_test, y_test = load_split("test", size=299)
    rows = []
    tasks = [(precision, task, classes) for precision in args.precision
             for task, classes in [("binary", ["covid", "normal"]), ("4-class", None)]]
    for precision, task, classes in tasks:
        tr = np.isin(y_train, classes) if classes else np.ones(len(y_train), bool)
        te = np.isin(y_test, classes) if classes else np.ones(len(y_test), bool)
        Xtr, ytr, Xte, yte = X_train[tr], y_train[tr], X_test[te], y_test[te]
        models = {
            "XrayCNNClassifier(xception, avg, 256 head, 40 epochs)": XrayCNNClassifier(
                "xception", weights=weights, hidden_units=(256,), dropout=0.5, epochs=40, batch_size=10,
                learning_rate=1e-3, precision=precision, random_state=0),
            "FeatureExtractor(xception) + StandardScaler + LogisticRegression (C by 5-fold CV)": GridSearchCV(
                make_pipeline(FeatureExtractor("xception", weights=weights, precision=precision), StandardScaler(),
                              LogisticRegression(max_iter=5000)),
                {"logisticregression__C": [0.01, 0.1, 1.0]}, cv=StratifiedKFold(5, shuffle=True, random_state=0)),
        }
        for name, model in models.items():
            start = time.perf_counter()
            model.fit(Xtr, ytr)
            pred = model.predict(Xte)
            secs = time.perf_counter() - start
            rows.append([task, precision, name, f"{accuracy_score(yte, pred):.3f}",
                         f"{f1_score(yte, pred, average='macro'):.3f}",
                         f"{secs:.0f}", PUBLISHED[task]])
            print(rows[-1], flush=True)
    table = markdown_table(["task", "precision", "model", "test accuracy", "test macro-F1", "fit+predict s",
                            "published"], rows)
    append_results("bench_accuracy: BU CS542 test set (36 images, 18 for binary)", table,
                   notes="Data: ../shared/data/bu_cs542. Train 269 (binary 129) images, test 36 (binary 18): one "
                         "test image is 2.8 points of 4-class accuracy. Known shortcut: covid films are adult, the "
                         "rest pediatric.")

    def span(task):
        accs = sorted(float(row[3]) for row in rows if row[0] == task)
        return f"{accs[0]:.3f}" if accs[0] == accs[-1] else f"{accs[0]:.3f}-{accs[-1]:.3f}"

    task_names = list(dict.fromkeys(row[0] for row in rows))
    record_result("accuracy_bu", "BU test accuracy, real ImageNet Xception (36 test images, 18 for binary)",
                  "; ".join(f"{task} {span(task)}" for task in task_names) + f" ({', '.join(args.precision)}); "
                  f"published 4-class {PUBLISHED['4-class']}")


if __name__ == "__main__":
    main()
