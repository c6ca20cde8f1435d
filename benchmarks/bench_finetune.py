"""Fine-tuning speed and memory: training on the cached cut vs the full forward pass every epoch.

Genuine ImageNet Xception (../shared/tools), 150 px, a stratified subsample of --n pediatric_cxr
images, blocks 13-14 unfrozen (``fine_tune=16``: the 16 layers after block 12's output), batch
32, Adam 1e-4, no augmentation, in --precision (default bfloat16):

- ``cut``: xrayest's default: block 12's output is computed once per image, then each epoch runs
  blocks 13-14 and the head only;
- ``full_forward``: ``cache_features=False``: every epoch runs the whole network on the images.

Each variant runs in its own process (peak resident memory is per process), in turn, per round.
Images/s counts the epochs after the first (the first pays for tracing and, for ``cut``, for
computing the activations: its time is reported separately).

    python benchmarks/bench_finetune.py [--n 1024] [--epochs 3] [--rounds 2] [--precision bfloat16]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

from _common import (PEDIATRIC_DATA, append_results, markdown_table, pediatric_subsample, record_result,
                     report_result, run_child, xception_weights)

DATA = PEDIATRIC_DATA
VARIANTS = ("cut", "full_forward")


def run_variant(variant, n, epochs, precision, weights):
    import keras

    from xrayest import XrayCNNClassifier

    paths, y = pediatric_subsample(n)
    times = []
    timer = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: times.append(time.perf_counter()),
                                           on_epoch_end=lambda e, logs: times.append(time.perf_counter()))
    clf = XrayCNNClassifier("xception", weights=weights, image_size=150, fine_tune=16, epochs=epochs,
                            batch_size=32, learning_rate=1e-4, precision=precision, random_state=0,
                            cache_features=variant == "cut", callbacks=[timer])
    start = time.perf_counter()
    clf.fit(paths, y)
    total = time.perf_counter() - start
    later = [times[i + 1] - times[i] for i in range(2, len(times) - 1, 2)]
    return {"variant": variant, "inputs": clf.training_inputs_, "total_s": total,
            "before_epoch_1_s": times[0] - start, "epoch_1_s": times[1] - times[0],
            "img_per_s": len(paths) * len(later) / sum(later) if later else float("nan"),
            "train_accuracy": clf.history_["accuracy"][-1],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--precision", default="auto", help="auto: the host's best (xrayest's precision='auto')")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        report_result(run_variant(args.variant, args.n, args.epochs, args.precision, args.weights))
        return
    if not DATA.is_dir():
        sys.exit(f"skipped: pediatric_cxr not found at {DATA} (it lives in ../shared beside the repo)")
    from xrayest.device import resolve_precision

    args.precision = resolve_precision(args.precision, "cpu")
    weights = xception_weights()
    results = {v: [] for v in VARIANTS}
    for _ in range(args.rounds):
        for variant in VARIANTS:
            results[variant].append(run_child(__file__, ["--variant", variant, "--n", args.n, "--epochs", args.epochs,
                                                         "--precision", args.precision, "--weights", weights], variant))
            print(results[variant][-1], flush=True)

    def joined(runs, key, fmt="{:.0f}"):
        return " / ".join(fmt.format(r[key]) for r in runs)

    rows = [[variant, "+".join(runs[0]["inputs"]), joined(runs, "img_per_s"), joined(runs, "before_epoch_1_s"),
             joined(runs, "epoch_1_s"), joined(runs, "total_s"), joined(runs, "peak_rss_mb"),
             joined(runs, "train_accuracy", "{:.3f}")] for variant, runs in results.items()]
    append_results(f"bench_finetune: Xception (ImageNet) blocks 13-14 fine-tuned, 150 px, {args.precision}, batch 32, "
                   f"{args.n} pediatric_cxr images, {args.epochs} epochs",
                   markdown_table(["variant", "trained on", "img/s (epochs 2+)", "s before epoch 1", "epoch 1 s",
                                   "fit s", "peak RSS MB", "final training accuracy"], rows),
                   notes="Each variant in its own process, in turn, per round. 'cut' computes block 12's output "
                         "once per image (before epoch 1), then trains blocks 13-14 and the head on it.")
    rates = {variant: " / ".join(f"{r['img_per_s']:.0f}" for r in runs) for variant, runs in results.items()}
    record_result(f"finetune_cut_{args.precision}", f"fine-tuning Xception's blocks 13-14, 150 px, {args.precision}",
                  f"{rates['cut']} img/s on the cached cut (blocks 1-12 run once per image) vs {rates['full_forward']} "
                  "img/s through the whole network every epoch")


if __name__ == "__main__":
    main()
