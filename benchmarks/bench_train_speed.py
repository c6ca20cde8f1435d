"""Training on images: speed (images/s) and peak memory, xrayest's streaming pipeline vs a plain Keras fit.

(Against the peers a user would pick instead, plain Keras in mixed_bfloat16 and PyTorch: bench_peers.py.)

The pediatric pneumonia images (../shared/data/pediatric_cxr, 150 px grayscale), a stratified subsample
of --n images, a from-scratch CNN (--backbone, default residual_cnn) at 150 px with an augmentation
preset (--augment, default "light"), batch 64, Adam 1e-3:

- ``keras.Model.fit`` on the set decoded as a user would (``load_image_folder`` -> uint8 RGB array ->
  float32), with the same model (xrayest's trunk + head + augmentation layers);
- ``XrayCNNClassifier.fit`` on the file paths: images decoded once into packed uint8 images, streamed;
- the same in ``precision="bfloat16"`` (AMX where the CPU has it).

Each variant runs in its own process (peak resident memory is per process), one after the other, twice.
Images/s counts the epochs after the first (the first pays for tracing and, for xrayest, decoding).

    python benchmarks/bench_train_speed.py [--n 1024] [--epochs 3] [--rounds 2] [--backbone residual_cnn]
                                           [--augment light] [--variants xrayest_stream_bfloat16,...]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

from _common import SHARED, append_results, markdown_table, record_result, report_result, run_child

DATA = SHARED / "data" / "pediatric_cxr" / "train"
VARIANTS = ("keras_float32_array", "xrayest_stream_float32", "xrayest_stream_bfloat16")


def subsample(n, seed=0):
    import numpy as np
    from sklearn.model_selection import train_test_split

    from xrayest import load_image_folder

    paths, y = load_image_folder(DATA, return_paths=True)
    if n < len(paths):
        paths, _, y, _ = train_test_split(paths, y, train_size=n, stratify=y, random_state=seed)
    return list(paths), np.asarray(y)


def run_variant(variant, n, epochs, batch, backbone, augment):
    import keras
    import numpy as np

    from xrayest import XrayCNNClassifier
    from xrayest.inputs import read_image

    paths, y = subsample(n)
    times = []
    timer = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: times.append(time.perf_counter()),
                                           on_epoch_end=lambda e, logs: times.append(time.perf_counter()))
    params = dict(weights=None, image_size=150, augment=augment, batch_size=batch, epochs=epochs,
                  learning_rate=1e-3, random_state=0, callbacks=[timer])
    start = time.perf_counter()
    if variant == "keras_float32_array":
        from xrayest.augmentation import augment_config, build_augmentation
        from xrayest.heads import build_head
        from xrayest.backbones import get_backbone_spec
        from xrayest.trunk import Trunk

        classes, codes = np.unique(y, return_inverse=True)
        X = np.stack([read_image(p, (150, 150)) for p in paths])  # float32 RGB, as decoded by a user
        trunk = Trunk.trainable(get_backbone_spec(backbone), None, (150, 150), seed=0)
        head = build_head(trunk.model.output_shape[1:], len(classes), pooling="avg", hidden_units=(256,),
                          dropout=0.5)
        images = keras.Input((None, None, 3))
        model = keras.Model(images, head(trunk.model(build_augmentation(augment_config(augment), seed=0)(images))))
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        model.fit(X, codes, batch_size=batch, epochs=epochs, callbacks=[timer], verbose=0)
        held = f"float32 array {X.nbytes / 2**20:.0f}"
    else:
        precision = variant.rsplit("_", 1)[1]
        XrayCNNClassifier(backbone, precision=precision, **params).fit(paths, y)
        held = f"packed uint8 {len(paths) * 150 * 150 / 2**20:.0f}"  # grayscale X-rays: one channel
    total = time.perf_counter() - start
    later = [times[i + 1] - times[i] for i in range(2, len(times) - 1, 2)]  # epochs 2..E
    rate = len(paths) * len(later) / sum(later) if later else float("nan")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"variant": variant, "images": len(paths), "epochs": epochs, "total_s": total, "img_per_s": rate,
            "peak_rss_mb": peak_mb, "images_held_mb": held}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--backbone", default="residual_cnn")
    parser.add_argument("--augment", default="light")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated subset of " + ", ".join(VARIANTS))
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        report_result(run_variant(args.variant, args.n, args.epochs, args.batch, args.backbone, args.augment))
        return
    if not DATA.is_dir():
        sys.exit(f"skipped: pediatric_cxr not found at {DATA} (it lives in ../shared beside the repo)")
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        sys.exit(f"unknown variants {sorted(unknown)}; valid: {', '.join(VARIANTS)}")
    results = {v: [] for v in variants}
    for _ in range(args.rounds):
        for variant in variants:
            results[variant].append(run_child(__file__, ["--variant", variant, "--n", args.n, "--epochs", args.epochs,
                                                         "--batch", args.batch, "--backbone", args.backbone,
                                                         "--augment", args.augment], variant))
            print(results[variant][-1], flush=True)
    rows = []
    for variant, runs in results.items():
        rows.append([variant, " / ".join(f"{r['img_per_s']:.0f}" for r in runs),
                     " / ".join(f"{r['total_s']:.0f}" for r in runs),
                     " / ".join(f"{r['peak_rss_mb']:.0f}" for r in runs), runs[0]["images_held_mb"]])
    append_results(f"bench_train_speed: {args.backbone} from scratch, 150 px, augment={args.augment!r}, "
                   f"batch {args.batch}, {args.n} pediatric_cxr images, {args.epochs} epochs",
                   markdown_table(["variant", "img/s (epochs 2+)", "fit s", "peak RSS MB",
                                   "training images held as, MB"], rows),
                   notes="Each variant in its own process, in turn, per round. Peak RSS includes TensorFlow "
                         "itself (~0.6-0.8 GB).")
    rates = {variant: " / ".join(f"{r['img_per_s']:.0f}" for r in runs) for variant, runs in results.items()}
    record_result(f"train_speed_{args.backbone}", f"training {args.backbone} from scratch, 150 px, "
                                                  f"augment={args.augment!r}, batch {args.batch}",
                  ", ".join(f"{variant.replace('_', ' ')} {rate} img/s" for variant, rate in rates.items()))


if __name__ == "__main__":
    main()
