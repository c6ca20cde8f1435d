"""Feature-extraction throughput: images/s per backbone and batch size, achieved GFLOP/s as a fraction
of a large matmul measured in the same run (the machine's practical peak, float32 and bfloat16), and
xrayest's FeatureExtractor against a bare ``model.predict`` of the same Keras application, as a user
would run it (BatchNorm unfolded, float32), on the same batch (target: within 10%, or faster).

    python benchmarks/bench_features.py [--backbones xception vgg16] [--batch-sizes 8 32] [--n 64]

Random weights (weights=None): speed does not depend on weight values.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from _common import append_results, markdown_table, record_result


def conv_flops(model) -> float:
    """Forward FLOPs (2 x multiply-adds) of one image through Conv/Dense layers (nested models walked)."""
    import keras

    total = 0.0
    def walk(m):  # every layer, nested models opened (public Model.layers only)
        for layer in m.layers:
            if isinstance(layer, keras.Model):
                yield from walk(layer)
            else:
                yield layer

    for layer in walk(model):
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


def matmul_peak(n=2048, repeats=10, dtype="float32") -> float:
    """GFLOP/s of an n x n matmul on this machine (TensorFlow, same threads as the models)."""
    import tensorflow as tf

    a = tf.cast(tf.random.normal((n, n)), dtype)
    b = tf.cast(tf.random.normal((n, n)), dtype)
    f = tf.function(lambda: tf.linalg.matmul(a, b))
    f().numpy()
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        f().numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def timed_round_robin(fns: dict, repeats) -> dict:
    """Best time of each function over ``repeats`` rounds that run them in turn.

    This host's speed drifts by up to 40% within seconds; interleaving gives every variant
    the same chances, where timing them one after the other would compare moments.
    """
    for fn in fns.values():
        fn()  # warm-up: tracing, allocations
    best = dict.fromkeys(fns, np.inf)
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", default=["xception", "vgg16", "resnet50", "mobilenetv2"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--n", type=int, default=64, help="images per timing")
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()

    from xrayest import FeatureExtractor
    from xrayest.backbones import get_backbone_spec
    from xrayest.trunk import Trunk

    peaks = {dtype: matmul_peak(dtype=dtype) for dtype in ("float32", "bfloat16")}
    print("matmul peak GFLOP/s:", {k: round(v) for k, v in peaks.items()})
    rng = np.random.default_rng(0)
    rows = []
    for name in args.backbones:
        spec = get_backbone_spec(name)
        size = spec.default_size
        X = rng.integers(0, 255, (args.n, size, size, 3), dtype=np.uint8)
        X_float = X.astype(np.float32)
        # What a user would run: the Keras application as it comes (BN unfolded), float32.
        bare_trunk = Trunk.frozen(spec, None, (size, size), pooling="avg", seed=0, fold_batch_norm=False).model
        flops = conv_flops(bare_trunk)
        for batch in args.batch_sizes:
            fns = {"keras": lambda: bare_trunk.predict(X_float, batch_size=batch, verbose=0)}
            for precision in ("float32", "bfloat16"):
                ext = FeatureExtractor(name, weights=None, random_state=0, batch_size=batch, cache_features=False,
                                       precision=precision).fit(X[:1])
                ext.trunk_.model  # built before timing, as bare_trunk was
                fns[precision] = lambda ext=ext: ext.transform(X)
            seconds = timed_round_robin(fns, args.repeats)
            bare = seconds.pop("keras")
            rate = {k: flops * args.n / v / 1e9 for k, v in seconds.items()}
            rows.append([name, size, batch, f"{flops / 1e9:.2f}", f"{args.n / bare:.1f}",
                         f"{args.n / seconds['float32']:.1f}", f"{seconds['float32'] / bare:.3f}",
                         f"{args.n / seconds['bfloat16']:.1f}", f"{seconds['bfloat16'] / bare:.3f}", rate])
            print(rows[-1], flush=True)
    # The peak again at the end, best of both: one slow moment at the start would inflate every fraction.
    peaks = {dtype: max(peak, matmul_peak(dtype=dtype)) for dtype, peak in peaks.items()}
    for row in rows:
        rate = row.pop()
        row += [f"{rate['float32']:.0f} ({rate['float32'] / peaks['float32']:.0%})",
                f"{rate['bfloat16']:.0f} ({rate['bfloat16'] / peaks['bfloat16']:.0%})"]
    table = markdown_table(["backbone", "px", "batch", "GFLOP/img", "Keras predict img/s",
                            "FeatureExtractor float32 img/s", "time ratio (ours/Keras)",
                            "FeatureExtractor bfloat16 img/s", "time ratio (bf16/Keras)",
                            "float32 GFLOP/s (of f32 matmul peak)", "bfloat16 GFLOP/s (of bf16 matmul peak)"], rows)
    append_results("bench_features: extraction throughput", table,
                   notes=f"Large-matmul peak in the same run (best of its start and end): "
                         f"{peaks['float32']:.0f} GFLOP/s float32, {peaks['bfloat16']:.0f} GFLOP/s bfloat16 "
                         "(2048x2048). 'Keras predict': "
                         "model.predict of the Keras application with its BatchNorm layers as they come, "
                         "float32 input; FeatureExtractor (BN folded) includes the uint8->float RGB conversion, "
                         "content hashing off (cache_features=False) to time the extraction itself; best of "
                         f"{args.repeats} rounds (the three variants in turn, each round) after a warm-up, "
                         f"{args.n} images each. Random weights: speed does not depend on their values.")
    f32, bf16 = ([float(row[k]) for row in rows] for k in (6, 8))
    record_result("features", "FeatureExtractor vs the Keras application's own `predict` (" +
                  ", ".join(dict.fromkeys(str(row[0]) for row in rows)) + ")",
                  f"float32 {min(f32):.2f}-{max(f32):.2f}x the time (BatchNorm folded), bfloat16 "
                  f"{min(bf16):.2f}-{max(bf16):.2f}x")


if __name__ == "__main__":
    main()
