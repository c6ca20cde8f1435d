"""What augmentation and fine-tuning add over frozen features, on the real BU 4-class set
(ImageNet Xception, the same head, test accuracy on the 36 BU test images).

Augmentation and fine-tuning run the backbone on every image in every epoch, which on a 2-core
CPU is minutes per epoch at 299 px; the default --image-size 160 keeps the whole comparison to
about a quarter of an hour.  All three variants run at the same size, side by side.

    python benchmarks/bench_training.py [--image-size 160]
"""

from __future__ import annotations

import argparse
import time

from _common import append_results, load_split, markdown_table, xception_weights


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--epochs", type=int, default=40, help="head epochs on frozen features")
    parser.add_argument("--augment-epochs", type=int, default=12)
    parser.add_argument("--fine-tune-epochs", type=int, default=4)
    args = parser.parse_args()

    from sklearn.metrics import f1_score

    from xrayest import XrayCNNClassifier

    weights = xception_weights()
    size = args.image_size
    X, y = load_split("train", size=size)
    X_test, y_test = load_split("test", size=size)
    common = dict(weights=weights, image_size=size, hidden_units=(256,), dropout=0.5, batch_size=10, random_state=0)
    variants = {
        "frozen features (head only)": XrayCNNClassifier("xception", epochs=args.epochs, **common),
        "frozen + augment='light'": XrayCNNClassifier("xception", epochs=args.augment_epochs, augment="light",
                                                      **common),
        "two-phase fine-tune (last 2 blocks)": XrayCNNClassifier(
            "xception", epochs=args.epochs, fine_tune="block12_sepconv3_bn", fine_tune_epochs=args.fine_tune_epochs,
            fine_tune_learning_rate=1e-5, **common),
    }
    rows = []
    for name, clf in variants.items():
        start = time.perf_counter()
        clf.fit(X, y)
        secs = time.perf_counter() - start
        pred = clf.predict(X_test)
        rows.append([name, len(clf.history_["loss"]), f"{secs:.0f}", f"{(pred == y_test).mean():.3f}",
                     f"{f1_score(y_test, pred, average='macro'):.3f}"])
        print(rows[-1], flush=True)
    append_results(f"bench_training: augmentation and fine-tuning vs frozen features (BU 4-class, Xception {size}px)",
                   markdown_table(["variant", "epochs", "fit s", "test accuracy", "test macro-F1"], rows),
                   notes="36 test images: one image is 2.8 points. Same seed, head and data for every variant.")


if __name__ == "__main__":
    main()
