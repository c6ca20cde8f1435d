"""GridSearchCV speed: dropout {0.2, 0.5, 0.8} x learning_rate {1e-3, 5e-4, 1e-4} x 3 folds on the BU
4-class train set, xrayest against a naive scikeras KerasClassifier over the full Keras model (frozen
backbone + the same head), side by side in one run.  Reports seconds, the ratio and both best CV
scores (they should agree within noise: the models are the same, only the work differs).

    python benchmarks/bench_grid.py [--image-size 128] [--epochs 10] [--skip-naive]

The naive search runs the backbone over every training image in every epoch of each of the 27
fits; on a 2-core CPU at full 299 px that is hours, so the default image size is reduced (the
ratio grows with image size and epochs, since only the naive side pays for them repeatedly).
"""

from __future__ import annotations

import argparse
import time

from _common import append_results, load_split, markdown_table, record_result, xception_weights
from bench_fit import naive_model

GRID = {"dropout": [0.2, 0.5, 0.8], "learning_rate": [1e-3, 5e-4, 1e-4]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args()

    from scikeras.wrappers import KerasClassifier
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    from xrayest import XrayCNNClassifier
    from xrayest.cache import default_cache

    weights = xception_weights()
    size = args.image_size
    X, y = load_split("train", size=size)
    cv = StratifiedKFold(3, shuffle=True, random_state=0)  # identical folds for both searches
    rows = []

    default_cache().clear()
    ours = GridSearchCV(XrayCNNClassifier("xception", weights=weights, image_size=size, hidden_units=(256,),
                                          epochs=args.epochs, batch_size=args.batch_size, random_state=0),
                        GRID, cv=cv, refit=False)
    start = time.perf_counter()
    ours.fit(X, y)
    ours_s = time.perf_counter() - start
    rows.append(["xrayest", f"{ours_s:.1f}", f"{ours.best_score_:.3f}", ours.best_params_])
    print(rows[-1], flush=True)

    if not args.skip_naive:
        n_classes = len(set(y))

        def build(dropout, learning_rate):
            return naive_model("xception", weights, size, n_classes, 256, dropout, learning_rate)

        naive = GridSearchCV(
            KerasClassifier(model=build, model__dropout=0.5, model__learning_rate=1e-3, epochs=args.epochs,
                            batch_size=args.batch_size, verbose=0, random_state=0),
            {f"model__{k}": v for k, v in GRID.items()}, cv=cv, refit=False)
        start = time.perf_counter()
        naive.fit(X, y)
        naive_s = time.perf_counter() - start
        rows.append(["naive scikeras", f"{naive_s:.1f}", f"{naive.best_score_:.3f}", naive.best_params_])
        rows.append(["speed-up (naive / xrayest)", f"{naive_s / ours_s:.1f}x", "", ""])
    table = markdown_table(["search", "seconds", "best mean CV accuracy", "best params"], rows)
    append_results(f"bench_grid: 3x3 grid x 3 folds, BU 4-class train, Xception {size}px, "
                   f"{args.epochs} epochs, batch {args.batch_size}", table,
                   notes="Same folds (StratifiedKFold, shuffled, seed 0), same ImageNet Xception weights, same head. "
                         "xrayest's time includes computing the backbone features (cache cleared first).")
    what = f"3x3 grid x 3 folds, Xception {size} px, {args.epochs} epochs"
    if args.skip_naive:
        record_result("grid", what, f"{ours_s:.0f} s, best CV {ours.best_score_:.3f}")
    else:
        record_result("grid_naive", what + ", against naive scikeras over the full model",
                      f"{ours_s:.0f} s vs {naive_s:.0f} s side by side ({naive_s / ours_s:.0f}x), best CV "
                      f"{ours.best_score_:.3f} vs {naive.best_score_:.3f}")


if __name__ == "__main__":
    main()
