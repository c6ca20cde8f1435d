"""Accuracy on the pediatric pneumonia task (normal / bacterial / viral, 150 px grayscale X-rays).

A fixed stratified hold-out of --holdout (default 15%) of ../shared/data/pediatric_cxr/train is the
score (seed 0); the classifier trains on the rest, with its own stratified 10% validation split for
the per-epoch curve. Prints test accuracy, macro-F1, fit seconds and the validation accuracy of
every epoch (how steadily it converges), and appends them to RESULTS.md. --n subsamples the set
(stratified) for a quick look first; the full set decides. The published SUTD CNNs reached 0.894
(one 3-class CNN) and 0.901 (a cascade), on their own test split.

    python benchmarks/bench_pediatric.py [--recipe residual_cnn] [--epochs 30] [--n 4947]
                                         [--precision bfloat16] [--augment medium] [--batch 64]
                                         [--tta 8] [--cascade]
"""

from __future__ import annotations

import argparse
import sys
import time

from _common import SHARED, append_results, markdown_table, record_result

DATA = SHARED / "data" / "pediatric_cxr" / "train"
PUBLISHED = "0.894 single CNN, 0.901 cascade (SUTD report, own test split)"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="residual_cnn", help="a backbone name of the registry")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--n", type=int, default=0, help="stratified subsample size (0: all)")
    parser.add_argument("--holdout", type=float, default=0.15)
    parser.add_argument("--precision", default="bfloat16")
    parser.add_argument("--augment", default="medium")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--lr-schedule", default="cosine")
    parser.add_argument("--pooling", default="avg")
    parser.add_argument("--hidden", default="256", help="comma-separated hidden layer widths of the head")
    parser.add_argument("--dropout", type=float, default=0.5)
    parser.add_argument("--class-weight", default="", help="'balanced' or empty")
    parser.add_argument("--tta", type=int, default=0,
                        help="also score with test-time augmentation: the mean over each image and N augmented copies")
    parser.add_argument("--cascade", action="store_true",
                        help="the SUTD cascade: normal vs infected, then bacterial vs viral, each a classifier with "
                             "these settings")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"skipped: pediatric_cxr not found at {DATA} (it lives in ../shared beside the repo)")

    import numpy as np
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
    from sklearn.model_selection import train_test_split

    from xrayest import XrayCNNClassifier, load_image_folder

    paths, y = load_image_folder(DATA, return_paths=True)
    paths, y = np.asarray(paths), np.asarray(y)
    if args.n and args.n < len(paths):
        paths, _, y, _ = train_test_split(paths, y, train_size=args.n, stratify=y, random_state=0)
    train_p, test_p, train_y, test_y = train_test_split(paths, y, test_size=args.holdout, stratify=y, random_state=0)
    clf = XrayCNNClassifier(args.recipe, weights=None, image_size=150, augment=args.augment or None,
                            epochs=args.epochs, batch_size=args.batch, learning_rate=args.learning_rate,
                            lr_schedule=args.lr_schedule or None, validation_split=0.1, precision=args.precision,
                            pooling=args.pooling, hidden_units=tuple(int(u) for u in args.hidden.split(",")),
                            dropout=args.dropout, class_weight=args.class_weight or None, random_state=0, verbose=1)
    if args.cascade:
        from sklearn.base import clone

        from xrayest import CascadeClassifier

        clf = CascadeClassifier([("root", clf, {"normal": ["normal"], "infected": ["bacterial", "viral"]}),
                                 ("infected", clone(clf), None)])
    start = time.perf_counter()
    clf.fit(list(train_p), train_y)
    fit_s = time.perf_counter() - start
    stages = list(clf.estimators_.values()) if args.cascade else [clf]
    name = args.recipe + (" cascade" if args.cascade else "")
    rows, matrices = [], []
    for tta in sorted({0, args.tta}):
        for stage in stages:
            stage.set_params(tta=tta)
        start = time.perf_counter()
        pred = clf.predict(list(test_p))
        predict_s = time.perf_counter() - start
        acc, f1 = accuracy_score(test_y, pred), f1_score(test_y, pred, average="macro")
        labels = sorted(set(y))
        matrix = confusion_matrix(test_y, pred, labels=labels)
        matrices.append(f"tta={tta}: rows true, columns predicted ({', '.join(labels)}): "
                        + " / ".join(" ".join(str(v) for v in r) for r in matrix))
        rows.append([name, len(train_p), len(test_p), args.epochs, args.augment, args.precision, tta, f"{acc:.3f}",
                     f"{f1:.3f}", f"{fit_s:.0f}", f"{len(train_p) * args.epochs / fit_s:.0f}", f"{predict_s:.0f}"])
    curve = "; ".join(" ".join(f"{v:.2f}" for v in stage.history_.get("val_accuracy", [])) for stage in stages)
    table = markdown_table(["recipe", "train", "held out", "epochs", "augment", "precision", "tta", "accuracy",
                            "macro-F1", "fit s", "img/s", "predict s"], rows)
    append_results("bench_pediatric: pediatric_cxr, stratified hold-out", table,
                   notes=f"Validation accuracy per epoch (10% of the training part): {curve}. "
                         f"Batch {args.batch}, Adam {args.learning_rate:g}, lr_schedule={args.lr_schedule!r}, "
                         f"head: pooling={args.pooling!r}, hidden_units=({args.hidden}), dropout={args.dropout}, "
                         f"class_weight={args.class_weight or None!r}, seed 0. "
                         f"Confusion matrices: {'; '.join(matrices)}. "
                         f"Published: {PUBLISHED}.")
    plain = rows[0]  # tta 0
    record_result("pediatric_holdout", f"pediatric pneumonia (normal / bacterial / viral), {args.holdout:.0%} hold-out "
                                       f"of {len(paths):,}",
                  f"{name} {plain[7]} (macro-F1 {plain[8]}; published, own split: 0.894 single, 0.901 cascade)")


if __name__ == "__main__":
    main()
