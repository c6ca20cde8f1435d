"""Feature-extraction throughput: images/s per backbone and batch size, achieved GFLOP/s as a fraction
of a large float32 matmul measured in the same run (the machine's practical peak), and xrayest's
FeatureExtractor against a bare ``model.predict`` on the same backbone and batch (target: within 10%).

    python benchmarks/bench_features.py [--backbones xception vgg16] [--batch-sizes 8 32] [--n 64]

Random weights (weights=None) unless --xception-weights: speed does not depend on weight values.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from _common import append_results, markdown_table


def conv_flops(model) -> float:
    """Forward FLOPs (2 x multiply-adds) of one image through Conv/Dense layers (nested models walked)."""
    import keras

    total = 0.0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.Model):
            continue
        try:
            out = layer.output.shape
            inp = layer.input.shape
        except (AttributeError, ValueError):
            continue
        if isinstance(layer, keras.layers.SeparableConv2D):
            kh, kw = layer.kernel_size
            total += 2 * out[1] * out[2] * kh * kw * inp[-1] + 2 * out[1] * out[2] * inp[-1] * out[-1]
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw = layer.kernel_size
            total += 2 * out[1] * out[2] * kh * kw * inp[-1]
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            total += 2 * out[1] * out[2] * kh * kw * (inp[-1] // layer.groups) * out[-1]
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * inp[-1] * out[-1]
    return total


def matmul_peak(n=2048, repeats=10) -> float:
    """GFLOP/s of a float32 n x n matmul on this machine (TensorFlow, same threads as the models)."""
    import tensorflow as tf

    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    f = tf.function(lambda: tf.linalg.matmul(a, b))
    f().numpy()
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        f().numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def timed(fn, repeats):
    fn()  # warm-up: tracing, allocations
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", default=["xception", "vgg16", "resnet50", "mobilenetv2"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--n", type=int, default=64, help="images per timing")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from xrayest import FeatureExtractor
    from xrayest.backbones import get_backbone_spec

    peak = matmul_peak()
    print(f"matmul peak: {peak:.1f} GFLOP/s")
    rng = np.random.default_rng(0)
    rows = []
    for name in args.backbones:
        spec = get_backbone_spec(name)
        size = spec.default_size
        X = rng.integers(0, 255, (args.n, size, size, 3), dtype=np.uint8)
        X_float = X.astype(np.float32)
        for batch in args.batch_sizes:
            ext = FeatureExtractor(name, weights=None, random_state=0, batch_size=batch, cache_features=False).fit(X[:1])
            trunk = ext.trunk_
            flops = conv_flops(trunk)
            bare = timed(lambda: trunk.predict(X_float, batch_size=batch, verbose=0), args.repeats)
            ours = timed(lambda: ext.transform(X), args.repeats)
            gflops = flops * args.n / ours / 1e9
            rows.append([name, size, batch, f"{flops / 1e9:.2f}", f"{args.n / bare:.1f}", f"{args.n / ours:.1f}",
                         f"{ours / bare:.3f}", f"{gflops:.0f}", f"{gflops / peak:.0%}"])
            print(rows[-1], flush=True)
    table = markdown_table(["backbone", "px", "batch", "GFLOP/img", "bare predict img/s", "FeatureExtractor img/s",
                            "time ratio (ours/bare)", "GFLOP/s", "of matmul peak"], rows)
    append_results("bench_features: extraction throughput", table,
                   notes=f"Large-matmul peak in the same run: {peak:.0f} GFLOP/s (float32, 2048x2048). "
                         "FeatureExtractor includes the uint8->float RGB conversion and content hashing is off "
                         "(cache_features=False) to time the extraction itself; best of "
                         f"{args.repeats} runs after a warm-up, {args.n} images each.")


if __name__ == "__main__":
    main()
