"""Fit time on the published protocol: BU 4-class train set, batch 10, 40 and 100 epochs.

xrayest (frozen backbone computed once, head trained on cached features) against the way the
reports did it: scikeras' KerasClassifier over the full Keras model (frozen backbone + the
same head), which runs the backbone over every image in every epoch.  Same backbone, weights,
head and images, side by side in one run.  The naive model is timed for --naive-epochs
epochs and its per-epoch time projected to 40/100 epochs (labelled as projected); pass
--naive-epochs 100 to time it in full.

Each xrayest fit starts from an empty feature cache, so it pays for building the backbone and
its one pass over the images; a clone refitted on the now-cached features gives the head's
share.  Both compute precisions are timed (bfloat16 uses AMX where the CPU has it).

    python benchmarks/bench_fit.py [--backbone xception] [--naive-epochs 2] [--precision float32 bfloat16]
                                   [--skip-naive]
"""

from __future__ import annotations

import argparse
import time


from _common import append_results, load_split, markdown_table, record_result, xception_weights


def naive_model(backbone_name, weights, size, n_classes, hidden, dropout, lr):
    """The published recipe: Sequential(frozen backbone, pooling, dense head), re-run every epoch."""
    import keras

    from xrayest.backbones import get_backbone_spec
    from xrayest.layers import ImagePreprocessing
    from xrayest.weights import load_backbone

    spec = get_backbone_spec(backbone_name)
    backbone = load_backbone(spec, (size, size, 3), weights)
    backbone.trainable = False
    model = keras.Sequential([
        keras.Input((size, size, 3)),
        ImagePreprocessing((size, size), spec.preprocess),
        backbone,
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(hidden, activation="relu"),
        keras.layers.Dropout(dropout),
        keras.layers.Dense(n_classes, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="xception")
    parser.add_argument("--naive-epochs", type=int, default=2)
    parser.add_argument("--epochs", type=int, nargs="+", default=[40, 100])
    parser.add_argument("--precision", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--skip-naive", action="store_true", help="time xrayest only")
    args = parser.parse_args()

    from sklearn.base import clone

    from xrayest import XrayCNNClassifier
    from xrayest.cache import default_cache

    weights = xception_weights() if args.backbone == "xception" else "imagenet"
    size = 299 if args.backbone in ("xception", "inceptionv3") else 224
    t0 = time.perf_counter()
    X, y = load_split("train", size=size)
    X_test, y_test = load_split("test", size=size)
    load_s = time.perf_counter() - t0
    print(f"loaded {len(X)} train / {len(X_test)} test images at {size}px in {load_s:.1f} s")
    rows = []
    hidden, dropout, lr = 256, 0.5, 1e-3
    for precision in args.precision:
        for epochs in args.epochs:
            default_cache().clear()  # every timed fit pays for its own backbone pass
            clf = XrayCNNClassifier(args.backbone, weights=weights, hidden_units=(hidden,), dropout=dropout,
                                    learning_rate=lr, epochs=epochs, batch_size=10, precision=precision,
                                    random_state=0)
            start = time.perf_counter()
            clf.fit(X, y)
            fit_s = time.perf_counter() - start
            start = time.perf_counter()
            clone(clf).fit(X, y)  # features cached now: the head's share of the fit
            head_s = time.perf_counter() - start
            acc = clf.score(X_test, y_test)
            rows.append([f"xrayest {args.backbone} {precision}", epochs, f"{fit_s:.1f}",
                         f"measured (head alone: {head_s:.1f} s)", f"{acc:.3f}"])
            print(rows[-1], flush=True)
    n_ours = len(rows)

    def record(naive_per_epoch=None):
        epochs = max(args.epochs)
        ours = ", ".join(f"{name.split()[-1]} {fit} s" for name, e, fit, _, _ in rows[:n_ours] if e == epochs)
        naive = (f"; naive scikeras over the full model {naive_per_epoch:.0f} s per epoch "
                 f"({naive_per_epoch * epochs:.0f} s projected)" if naive_per_epoch else "")
        record_result("fit_bu", f"BU 4-class fit, {args.backbone} {size} px, {epochs} epochs, batch 10", ours + naive)

    if args.skip_naive:
        table = markdown_table(["model", "epochs", "fit seconds", "how", "4-class test acc"], rows)
        append_results(f"bench_fit --skip-naive: BU 4-class, batch 10 ({args.backbone})", table,
                       notes=f"Images decoded and resized once before timing ({load_s:.1f} s). "
                             "'head alone': a clone refitted on the cached features.")
        record()
        return

    from scikeras.wrappers import KerasClassifier  # the [bench] extra

    labels = {c: i for i, c in enumerate(sorted(set(y)))}
    naive = KerasClassifier(model=lambda: naive_model(args.backbone, weights, size, len(labels), hidden, dropout, lr),
                            epochs=args.naive_epochs, batch_size=10, verbose=0, random_state=0)
    start = time.perf_counter()
    naive.fit(X, y)
    naive_s = time.perf_counter() - start
    per_epoch = naive_s / args.naive_epochs
    rows.append([f"naive scikeras {args.backbone}", args.naive_epochs, f"{naive_s:.1f}", "measured", "-"])
    for epochs in args.epochs:
        projected = per_epoch * epochs
        rows.append([f"naive scikeras {args.backbone}", epochs, f"{projected:.0f}", "projected from per-epoch time",
                     "-"])
        for (name, ours_epochs, fit_s, _, acc) in rows[:n_ours]:
            if ours_epochs == epochs:
                rows.append([f"speed-up (naive / {name})", epochs, f"{projected / float(fit_s):.0f}x", "", ""])
    table = markdown_table(["model", "epochs", "fit seconds", "how", "4-class test acc"], rows)
    append_results(f"bench_fit: BU 4-class, batch 10 ({args.backbone})", table,
                   notes=f"Images decoded and resized once before timing ({load_s:.1f} s, same input for both). "
                         f"Naive (float32): {per_epoch:.1f} s per epoch (backbone forward pass over all {len(X)} "
                         "images each epoch). 'head alone': a clone refitted on the cached features. "
                         "Published reports: 748-7453 s on CPU, 127-497 s on a GPU.")
    record(per_epoch)


if __name__ == "__main__":
    main()
