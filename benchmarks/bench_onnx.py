"""Frozen featurization against a real inference engine: ONNX Runtime, and Keras' own ``predict``.

The network: ImageNet-shaped Xception at --size px (random weights: speed does not depend on their
values), global average pooled, as ``FeatureExtractor("xception")`` computes it.  Timed side by side,
in turn, --rounds times after a warm-up, on the same --n float32 RGB images already in memory, batch
--batch:

- ``FeatureExtractor`` in float32 and in the host's best precision (``precision="auto"``: bfloat16 where
  the CPU has AMX-BF16 or AVX512-BF16), BatchNorm folded into the convolutions;
- ``keras.applications.Xception(pooling="avg").predict``: what a Keras user writes;
- ONNX Runtime (CPU execution provider, all graph optimisations, intra-op threads = cores) on the
  FeatureExtractor's float32 trunk exported with Keras' public ``model.export(format="onnx")`` (tf2onnx);
  its features are compared with the FeatureExtractor's (largest difference relative to the largest
  feature).

    pip install ".[bench]"       # onnxruntime, tf2onnx, onnx
``--isa avx2`` caps TensorFlow's kernels at AVX2 (``ONEDNN_MAX_CPU_ISA``; ONNX Runtime's MLAS picks its
kernels by the CPU's flags and has no such cap): an AVX2-only host's oneDNN kernels on this CPU, and the
host line says so.

    python benchmarks/bench_onnx.py [--n 64] [--batch 32] [--rounds 3] [--size 299] [--isa native]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from _common import ISA_SETTINGS, append_results, cap_isa, host, machine_info, markdown_table, record_result


def seconds(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=299)
    parser.add_argument("--isa", default="native", choices=sorted(ISA_SETTINGS),
                        help="avx2: cap TensorFlow's kernels at AVX2 before it is imported; the host line says so")
    args = parser.parse_args()
    cap_isa(args.isa)
    try:
        import onnxruntime as ort
    except ImportError:
        sys.exit('skipped: onnxruntime is not installed (pip install ".[bench]")')
    import keras
    import numpy as np

    from xrayest import FeatureExtractor
    from xrayest.device import resolve_precision

    print(f"host: {machine_info()}", flush=True)
    best = resolve_precision("auto", "cpu")
    X = np.random.default_rng(0).integers(0, 256, (args.n, args.size, args.size, 3)).astype(np.float32)
    extractors = {p: FeatureExtractor("xception", weights=None, image_size=args.size, random_state=0, precision=p,
                                      batch_size=args.batch, cache_features=False).fit(X[:1])
                  for p in dict.fromkeys(["float32", best])}
    for ext in extractors.values():
        ext.trunk_.model  # built before timing
    app = keras.applications.Xception(weights=None, include_top=False, pooling="avg",
                                      input_shape=(args.size, args.size, 3))
    app_input = keras.applications.xception.preprocess_input(X.copy())  # Keras' own preprocessing, outside

    path = os.path.join(tempfile.mkdtemp(), "xception.onnx")
    start = time.perf_counter()
    extractors["float32"].trunk_.model.export(path, format="onnx", verbose=False, input_signature=[
        keras.InputSpec(shape=(None, args.size, args.size, 3), dtype="float32")])
    export_s = time.perf_counter() - start
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = os.cpu_count()
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def onnx():
        return np.concatenate([session.run(None, {name: X[i:i + args.batch]})[0] for i in range(0, args.n, args.batch)])

    reference = extractors["float32"].transform(X)
    difference = float(np.abs(onnx() - reference).max() / np.abs(reference).max())
    variants = {f"FeatureExtractor, {p}": (lambda ext=ext: ext.transform(X)) for p, ext in extractors.items()}
    variants["Keras Xception(pooling='avg').predict, float32"] = lambda: app.predict(app_input, batch_size=args.batch,
                                                                                     verbose=0)
    variants["ONNX Runtime, float32 (the exported FeatureExtractor trunk)"] = onnx
    for fn in variants.values():  # warm-up: tracing, kernel selection, first allocations
        fn()
    times = {v: [] for v in variants}
    for _ in range(args.rounds):
        for v, fn in variants.items():
            times[v].append(seconds(fn))
    rates = {v: args.n / min(t) for v, t in times.items()}
    ours = f"FeatureExtractor, {best}"
    peers = [v for v in rates if not v.startswith("FeatureExtractor")]
    peer = max(peers, key=rates.get)
    rows = [[v, " / ".join(f"{args.n / t:.1f}" for t in times[v]), f"{rates[v]:.1f}", f"{rates[ours] / rates[v]:.2f}"]
            for v in variants]
    table = markdown_table(["variant", "img/s per round", "best img/s", f"{ours} / this"], rows)
    append_results(f"bench_onnx: frozen Xception features at {args.size} px against ONNX Runtime and Keras' predict, "
                   f"batch {args.batch}, {args.n} images", table,
                   notes=f"ONNX export (Keras model.export, tf2onnx) {export_s:.0f} s; ONNX Runtime's features differ "
                         f"from the FeatureExtractor's float32 ones by {difference:.1e} of the largest feature. "
                         f"Variants in turn within each round, after one warm-up call each. Host: {host()}.")
    record_result(f"onnx_{best}", f"frozen Xception features at {args.size} px, batch {args.batch}: FeatureExtractor "
                                  f"({best}) against ONNX Runtime and Keras' predict",
                  f"{rates[ours]:.1f} img/s; ONNX Runtime {rates[peers[-1]]:.1f}, Keras predict {rates[peers[0]]:.1f}: "
                  f"{rates[ours] / rates[peer]:.2f}x the faster ({peer.split(',')[0]})"
                  + ("; ONNX Runtime not capped (its MLAS kernels use every instruction set this CPU has)"
                     if args.isa != "native" else ""))


if __name__ == "__main__":
    main()
