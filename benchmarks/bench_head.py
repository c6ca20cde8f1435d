"""Head training on cached features: the two training loops and the two Adam updates, side by side.

100 epochs, batch 10, of the default head (Dense 256 + Dropout 0.5 + softmax) on 269 rows of 2048
features (the size of Xception's pooled output on the BU 4-class train set; random values, since only
the time matters here). Each variant is timed in turn, round after round:

- ``fit_head`` (one graph per epoch) with :class:`xrayest.optimizers.FusedAdam` (the default) and with
  Keras' own Adam;
- ``keras.Model.fit`` with FusedAdam, and with Keras' Adam and ``steps_per_execution`` = one epoch.

    python benchmarks/bench_head.py [--rounds 2] [--epochs 100]
"""

from __future__ import annotations

import argparse
import time

from _common import append_results, markdown_table, record_result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=100)
    args = parser.parse_args()

    import keras
    import numpy as np

    from xrayest.head_training import fit_head
    from xrayest.heads import build_head
    from xrayest.optimizers import FusedAdam

    rng = np.random.default_rng(0)
    X, y = rng.random((269, 2048)).astype("float32"), rng.integers(0, 4, 269)
    steps = -(-len(X) // 10)

    def head(optimizer, steps_per_execution=1):
        keras.utils.set_random_seed(0)
        model = build_head((2048,), 4, pooling="avg", hidden_units=(256,), dropout=0.5)
        model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"],
                      jit_compile=False, steps_per_execution=steps_per_execution)
        return model

    variants = {
        "fit_head + FusedAdam (default)": lambda: fit_head(head(FusedAdam(1e-3)), X, y, batch_size=10,
                                                           epochs=args.epochs, seed=0),
        "fit_head + keras Adam": lambda: fit_head(head(keras.optimizers.Adam(1e-3)), X, y, batch_size=10,
                                                  epochs=args.epochs, seed=0),
        "keras.Model.fit + FusedAdam": lambda: head(FusedAdam(1e-3)).fit(X, y, batch_size=10, epochs=args.epochs,
                                                                         verbose=0),
        f"keras.Model.fit + keras Adam, steps_per_execution={steps}":
            lambda: head(keras.optimizers.Adam(1e-3), steps).fit(X, y, batch_size=10, epochs=args.epochs, verbose=0),
    }
    seconds = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    best = min(seconds["fit_head + FusedAdam (default)"])
    rows = [[name, " / ".join(f"{s:.1f}" for s in times), f"{min(times) / best:.2f}x"]
            for name, times in seconds.items()]
    append_results(f"bench_head: {args.epochs} head epochs on 269 x 2048 features, batch 10",
                   markdown_table(["loop + optimizer", "seconds (each round)", "best vs default"], rows),
                   notes="Variants timed in turn within each round; the fixed cost of each fit (tracing) included.")
    slow = min(min(times) for name, times in seconds.items() if name.startswith("keras.Model.fit"))
    record_result("head", f"a head's {args.epochs} epochs on 269 cached Xception vectors",
                  f"{best:.1f} s (`fit_head` + fused Adam) vs {slow:.1f} s with `keras.Model.fit`")


if __name__ == "__main__":
    main()
