"""Training speed against the peers a user would pick instead, on the same network and data, with the
machine's bfloat16 matmul peak measured in the same run.

The network is the sutd_cnn shape (five conv3x3-BN-ReLU-maxpool blocks 32-64-64-128-128, Flatten,
Dense 256, Dense 128, 3 classes), 150 px grayscale pediatric X-rays (--n of them, stratified), batch 64,
Adam 1e-3, random crop / rotation / shift augmentation, bfloat16 arithmetic:

- ``xrayest``: ``XrayCNNClassifier("sutd_cnn", precision="bfloat16", augment="xray", pooling="flatten",
  hidden_units=(256, 128))`` on the file paths;
- ``keras``: plain Keras 3 on the same layers under the ``mixed_bfloat16`` policy, ``tf.data`` from a
  uint8 array (shuffle, batch, prefetch), Keras' Random* layers in the model;
- ``torch_wN``: PyTorch, ``torch.autocast("cpu", torch.bfloat16)``, ``channels_last``, torchvision's
  RandomResizedCrop + RandomAffine on uint8 tensors in a ``DataLoader`` with N workers (each N of
  --torch-workers; the fastest is the peer).  PyTorch is not a dependency of xrayest (``pip install
  ".[peers]"``; from PyPI torch brings about 3 GB of CUDA libraries, CI does not install it): give
  --torch-python for an interpreter that has it; without torch the rows are skipped with the reason.

Each variant runs in its own process, in turn, --rounds times.  Images/s counts the epochs after the
first.  GFLOP/s = images/s x the network's training FLOPs per image (3x the forward FLOPs of its
convolution and dense layers, counted from the model); the bfloat16 peak is a 2048^3 matmul in
TensorFlow, timed before and after the variants.

    python benchmarks/bench_peers.py [--n 1024] [--epochs 3] [--rounds 2] [--torch-python PATH]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from _common import SHARED, append_results, markdown_table, report_result, run_child

DATA = SHARED / "data" / "pediatric_cxr" / "train"
FILTERS = (32, 64, 64, 128, 128)
BATCH = 64


def subsample(n, seed=0):
    import numpy as np
    from sklearn.model_selection import train_test_split

    from xrayest import load_image_folder

    paths, y = load_image_folder(DATA, return_paths=True)
    if n < len(paths):
        paths, _, y, _ = train_test_split(paths, y, train_size=n, stratify=y, random_state=seed)
    return list(paths), np.asarray(y)


def gray_array(paths):
    """The images as a uint8 (n, 150, 150) array, decoded as a user of the peers would."""
    import numpy as np
    from PIL import Image

    return np.stack([np.asarray(Image.open(p).convert("L").resize((150, 150))) for p in paths])


def forward_flops(model) -> float:
    """Multiply-adds x 2 of a Keras model's Conv2D and Dense layers for one image."""
    import keras
    import numpy as np

    from xrayest.seeding import all_layers

    total = 0.0
    for layer in all_layers(model):
        if isinstance(layer, keras.layers.Conv2D):
            h, w, c_out = layer.output.shape[1:]
            k = int(np.prod(layer.kernel_size))
            total += 2.0 * h * w * c_out * k * layer.input.shape[-1]
        elif isinstance(layer, keras.layers.Dense):
            total += 2.0 * layer.input.shape[-1] * layer.units
    return total


def epoch_rate(times, n_images):
    later = times[1:]  # epochs after the first
    return n_images * len(later) / sum(later) if later else float("nan")


def run_xrayest(n, epochs):
    import keras

    from xrayest import XrayCNNClassifier

    paths, y = subsample(n)
    times, marks = [], []
    timer = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: marks.append(time.perf_counter()),
                                           on_epoch_end=lambda e, logs: times.append(time.perf_counter() - marks[-1]))
    clf = XrayCNNClassifier("sutd_cnn", weights=None, image_size=150, precision="bfloat16", augment="xray",
                            pooling="flatten", hidden_units=(256, 128), dropout=0.2, batch_size=BATCH,
                            epochs=epochs, learning_rate=1e-3, random_state=0, callbacks=[timer])
    clf.fit(paths, y)
    return {"img_per_s": epoch_rate(times, len(paths)), "flops": 3 * forward_flops(clf.model_)}


def keras_network():
    import keras

    inputs = keras.Input((150, 150, 1))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.RandomZoom((-0.16, 0.0), seed=1)(x)  # zoom in: a random resized crop
    x = keras.layers.RandomRotation(0.028, seed=2)(x)
    x = keras.layers.RandomTranslation(0.05, 0.05, seed=3)(x)
    for filters in FILTERS:
        x = keras.layers.Conv2D(filters, 3, padding="same")(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    for units in (256, 128):
        x = keras.layers.Dense(units, activation="relu")(x)
        x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(3, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs)


def run_keras(n, epochs):
    import keras
    import numpy as np
    import tensorflow as tf

    paths, y = subsample(n)
    X = gray_array(paths)[..., None]
    codes = np.unique(y, return_inverse=True)[1]
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = keras_network()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    data = (tf.data.Dataset.from_tensor_slices((X, codes)).shuffle(len(X), seed=0).batch(BATCH)
            .map(lambda x, t: (tf.cast(x, tf.float32), t), num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))
    times, marks = [], []
    timer = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: marks.append(time.perf_counter()),
                                           on_epoch_end=lambda e, logs: times.append(time.perf_counter() - marks[-1]))
    model.fit(data, epochs=epochs, callbacks=[timer], verbose=0)
    return {"img_per_s": epoch_rate(times, len(X)), "flops": 3 * forward_flops(model)}


def run_torch(n, epochs, workers):
    import numpy as np
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, Dataset
    from torchvision.transforms import v2

    torch.set_num_threads(max(1, __import__("os").cpu_count()))
    torch.manual_seed(0)
    paths, y = subsample(n)
    X = torch.from_numpy(gray_array(paths)).unsqueeze(1)  # uint8 (n, 1, 150, 150)
    codes = torch.from_numpy(np.unique(y, return_inverse=True)[1])
    augment = v2.Compose([v2.RandomResizedCrop(150, scale=(0.7, 1.0), antialias=True),
                          v2.RandomAffine(degrees=10, translate=(0.05, 0.05)), v2.ToDtype(torch.float32, scale=True)])

    class Images(Dataset):
        def __len__(self):
            return len(X)

        def __getitem__(self, i):
            return augment(X[i]), codes[i]

    layers, c_in = [], 1
    for filters in FILTERS:
        layers += [nn.Conv2d(c_in, filters, 3, padding=1), nn.BatchNorm2d(filters), nn.ReLU(), nn.MaxPool2d(2)]
        c_in = filters
    model = nn.Sequential(*layers, nn.Flatten(), nn.Linear(128 * 4 * 4, 256), nn.ReLU(), nn.Dropout(0.2),
                          nn.Linear(256, 128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, 3))
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(Images(), batch_size=BATCH, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        for images, targets in loader:
            images = images.contiguous(memory_format=torch.channels_last)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = nn.functional.cross_entropy(model(images), targets)
            loss.backward()
            optimizer.step()
        times.append(time.perf_counter() - start)
    return {"img_per_s": epoch_rate(times, len(X))}


def run_profile(n, steps=20):
    """Where xrayest's training step spends its time: each part timed alone on one fixed batch.

    The composed model of a fitted classifier (augmentation -> trunk -> head) is timed as a whole
    train step (``train_on_batch``: forward, backward, Adam), without its augmentation layers, and
    forward only in training mode; the input pipeline (a shuffled epoch of ``image_dataset`` batches)
    and the augmentation layers are timed alone.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    from xrayest import XrayCNNClassifier
    from xrayest.inputs import as_image_source
    from xrayest.pipeline import PackedImages, image_dataset

    paths, y = subsample(n)
    clf = XrayCNNClassifier("sutd_cnn", weights=None, image_size=150, precision="bfloat16", augment="xray",
                            pooling="flatten", hidden_units=(256, 128), dropout=0.2, batch_size=BATCH, epochs=1,
                            learning_rate=1e-3, random_state=0).fit(paths, y)
    model = clf.model_
    packed = PackedImages.from_source(as_image_source(paths), (150, 150))
    codes = np.searchsorted(clf.classes_, y)
    x = tf.constant(packed.batch(np.arange(BATCH)))
    t = tf.constant(codes[:BATCH])
    augmentation = model.layers[1]
    plain = keras.Model(model.input, clf.head_(clf.trunk_.model(model.input)))
    plain.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    forward = tf.function(lambda images: model(images, training=True))
    augment = tf.function(lambda images: augmentation(images, training=True))

    def per_image(run):
        run()  # traced and warm
        start = time.perf_counter()
        for _ in range(steps):
            out = run()
        np.asarray(out)
        return (time.perf_counter() - start) / steps / BATCH * 1e3  # ms per image

    def pipeline():
        start = time.perf_counter()
        count = 0
        for images, _ in image_dataset(packed, np.arange(len(paths)), codes, batch_size=BATCH, shuffle=True, seed=0):
            count += int(images.shape[0])
        return (time.perf_counter() - start) / count * 1e3

    return {"train_step": per_image(lambda: model.train_on_batch(x, t)),
            "train_step_no_augmentation": per_image(lambda: plain.train_on_batch(x, t)),
            "forward_training_mode": per_image(lambda: forward(x)),
            "augmentation": per_image(lambda: augment(x)), "input_pipeline": pipeline(),
            "augmentation_layers": type(augmentation).__name__}


def run_peak(size=2048, repeats=10):
    import tensorflow as tf

    a = tf.random.normal((size, size), dtype=tf.float32)
    out = {}
    for dtype in ("bfloat16", "float32"):
        x = tf.cast(a, dtype)
        step = tf.function(lambda m: tf.linalg.matmul(m, m))
        step(x).numpy()
        start = time.perf_counter()
        for _ in range(repeats):
            result = step(x)
        result.numpy()
        out[dtype] = 2 * size ** 3 * repeats / (time.perf_counter() - start) / 1e9
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--torch-python", default=sys.executable,
                        help="a Python with torch and torchvision (default: this one)")
    parser.add_argument("--torch-workers", default="0,1,2", help="DataLoader worker counts to try")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        kind, _, arg = args.variant.partition(":")
        result = {"xrayest": lambda: run_xrayest(args.n, args.epochs), "keras": lambda: run_keras(args.n, args.epochs),
                  "torch": lambda: run_torch(args.n, args.epochs, int(arg or 0)), "peak": run_peak,
                  "profile": lambda: run_profile(args.n)}[kind]()
        report_result(result)
        return
    if not DATA.is_dir():
        sys.exit(f"skipped: pediatric_cxr not found at {DATA} (it lives in ../shared beside the repo)")
    probe = subprocess.run([args.torch_python, "-c", "import torch, torchvision"], capture_output=True)
    has_torch = probe.returncode == 0
    variants = ["xrayest", "keras"]
    if has_torch:
        variants += [f"torch:{w}" for w in args.torch_workers.split(",")]
    else:
        print(f"skipped the PyTorch rows: {args.torch_python} cannot import torch and torchvision "
              '(pip install ".[peers]", or give --torch-python)', file=sys.stderr)
    common = ["--n", args.n, "--epochs", args.epochs]
    peaks = [run_child(__file__, ["--variant", "peak"], "peak")]
    results = {v: [] for v in variants}
    for _ in range(args.rounds):
        for variant in variants:
            python = args.torch_python if variant.startswith("torch") else sys.executable
            results[variant].append(run_child(__file__, ["--variant", variant, *common], variant, python=python))
            print(variant, results[variant][-1], flush=True)
    peaks.append(run_child(__file__, ["--variant", "peak"], "peak"))
    profile = run_child(__file__, ["--variant", "profile", *common], "profile")
    peak_bf16 = max(p["bfloat16"] for p in peaks)
    flops = results["xrayest"][0]["flops"]
    rates = {v: max(r["img_per_s"] for r in runs) for v, runs in results.items()}
    torch_best = max((v for v in rates if v.startswith("torch")), key=rates.get, default=None)
    peer = max((v for v in rates if v != "xrayest"), key=rates.get)
    names = {"xrayest": "xrayest XrayCNNClassifier, bfloat16, file paths",
             "keras": "plain Keras, mixed_bfloat16, tf.data",
             **{v: f"PyTorch, bf16 autocast, channels_last, {v.partition(':')[2]} DataLoader workers"
                for v in results if v.startswith("torch")}}
    rows = []
    for variant, runs in results.items():
        name = names[variant]
        rate = rates[variant]
        rows.append([name + (" (fastest PyTorch)" if variant == torch_best else ""),
                     " / ".join(f"{r['img_per_s']:.0f}" for r in runs), f"{rate * flops / 1e9:.0f}",
                     f"{100 * rate * flops / 1e9 / peak_bf16:.0f}%", f"{rates['xrayest'] / rate:.2f}"])
    table = markdown_table(["stack", "img/s (epochs 2+), per round", "GFLOP/s (best round)", "of bf16 peak",
                            "xrayest / this"], rows)
    step = profile["train_step"]
    parts = [("input pipeline (packed uint8 -> float batches, tf.data)", profile["input_pipeline"]),
             ("augmentation layers alone", profile["augmentation"]),
             ("forward in training mode (augmentation included)", profile["forward_training_mode"]),
             ("whole train step without augmentation", profile["train_step_no_augmentation"]),
             ("whole train step (forward, backward, Adam)", step)]
    table += "\n\n" + markdown_table(["xrayest, one fixed batch of 64: part timed alone", "ms per image",
                                       "share of the train step"],
                                      [[name, f"{ms:.2f}", f"{100 * ms / step:.0f}%"] for name, ms in parts])
    print(table)
    bf16 = " / ".join(f"{p['bfloat16']:.0f}" for p in peaks)
    fp32 = " / ".join(f"{p['float32']:.0f}" for p in peaks)
    append_results(f"bench_peers: the sutd_cnn network, 150 px, batch 64, augmentation, bfloat16, "
                   f"{args.n} pediatric_cxr images, {args.epochs} epochs",
                   table, notes=f"Training FLOPs per image {flops / 1e9:.2f} GFLOP (3x forward, conv + dense). "
                                f"bf16 matmul peak (2048^3, TensorFlow) {bf16} GFLOP/s before / after, float32 "
                                f"{fp32}. Each variant in its own process, in turn, per round; the fastest peer "
                                f"here: {names.get(peer, peer)} (xrayest {rates['xrayest'] / rates[peer]:.2f}x it).")


if __name__ == "__main__":
    main()
