"""Prediction memory on very large arrays: peak resident memory and time of ``predict_proba`` on
--count images of --side x --side pixels (uint8), with a small_cnn fitted at 64 px.

Arrays are resized to the model's input one image at a time, so the peak is set by one image and
the batch, not by the caller's image size. Runs in a fresh process (peak RSS is per process).

    python benchmarks/bench_predict_memory.py [--side 8000] [--count 2]
"""

from __future__ import annotations

import argparse
import resource
import time

from _common import append_results, markdown_table, record_result, report_result, run_child


def measure(side, count):
    import numpy as np

    from xrayest import XrayCNNClassifier

    X = np.random.default_rng(0).integers(0, 255, (8, 64, 64), dtype=np.uint8)
    clf = XrayCNNClassifier("small_cnn", weights=None, image_size=64, epochs=1, random_state=0).fit(X, np.arange(8) % 2)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    big = np.random.default_rng(1).integers(0, 255, (count, side, side), dtype=np.uint8)
    start = time.perf_counter()
    clf.predict_proba(big)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"input_mb": big.nbytes / 2**20, "rss_before_mb": before, "peak_rss_mb": peak, "seconds": seconds}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=8000)
    parser.add_argument("--count", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        report_result(measure(args.side, args.count))
        return
    r = run_child(__file__, ["--child", "--side", args.side, "--count", args.count], "the measurement")
    print(r)
    row = [f"{args.count} x {args.side}x{args.side} uint8", f"{r['input_mb']:.0f}", f"{r['rss_before_mb']:.0f}",
           f"{r['peak_rss_mb']:.0f}", f"{r['seconds']:.1f}"]
    append_results("bench_predict_memory: predict_proba on very large arrays (small_cnn at 64 px)",
                   markdown_table(["input", "input MB", "RSS before predict MB", "peak RSS MB", "predict s"], [row]),
                   notes="Peak RSS includes TensorFlow and the fitted model (the 'before' column).")
    record_result("predict_memory", f"`predict_proba` on {args.count} uint8 images of {args.side}x{args.side}",
                  f"peak {r['peak_rss_mb'] / 1024:.1f} GB ({r['input_mb'] / 1024:.2f} GB of input), "
                  f"{r['seconds']:.1f} s (resized one image at a time)")


if __name__ == "__main__":
    main()
