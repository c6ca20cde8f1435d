"""bench_peers' stacks: xrayest, plain Keras and PyTorch training the sutd_cnn network, each timed in its
own process; the float32 / bfloat16 matmul peak; the rate tables (see bench_peers.py)."""

from __future__ import annotations

import time

from _common import PEDIATRIC_DATA, pediatric_subsample

DATA = PEDIATRIC_DATA
FILTERS = (32, 64, 64, 128, 128)
BATCH = 64


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


# xrayest's estimator as the peers' network is trained: the sutd_cnn recipe's head and augmentation.
XRAYEST = dict(weights=None, image_size=150, augment="xray", pooling="flatten", hidden_units=(256, 128), dropout=0.2,
               batch_size=BATCH, learning_rate=1e-3, random_state=0)
# residual_cnn pools three times (an 18x18x64 map at 150 px): flattened, its first dense layer would hold
# 5.3 M weights, so it keeps the estimator's default head (global average pooling, 256 units).
HEADS = {"residual_cnn": dict(pooling="avg", hidden_units=(256,))}



def run_xrayest(n, epochs, backbone="sutd_cnn", precision="float32"):
    import keras

    from xrayest import XrayCNNClassifier

    paths, y = pediatric_subsample(n)
    times, marks = [], []
    timer = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: marks.append(time.perf_counter()),
                                           on_epoch_end=lambda e, logs: times.append(time.perf_counter() - marks[-1]))
    clf = XrayCNNClassifier(backbone, precision=precision, epochs=epochs, callbacks=[timer],
                            **{**XRAYEST, **HEADS.get(backbone, {})})
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


def run_keras(n, epochs, precision="float32"):
    import keras
    import numpy as np
    import tensorflow as tf

    paths, y = pediatric_subsample(n)
    X = gray_array(paths)[..., None]
    codes = np.unique(y, return_inverse=True)[1]
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
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


TORCH_LAYOUTS = ("channels_last", "contiguous")


def run_torch(n, epochs, workers, precision="float32", layout="channels_last"):
    """PyTorch on the same network and data; ``layout`` is the memory format of the model and its batches:
    "channels_last" (NHWC, what PyTorch's CPU convolutions are fastest in on most hosts) or "contiguous"
    (PyTorch's default, NCHW)."""
    import numpy as np
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, Dataset
    from torchvision.transforms import v2

    torch.set_num_threads(max(1, __import__("os").cpu_count()))
    torch.manual_seed(0)
    paths, y = pediatric_subsample(n)
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
    memory_format = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}[layout]
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(Images(), batch_size=BATCH, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        for images, targets in loader:
            images = images.contiguous(memory_format=memory_format)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
                loss = nn.functional.cross_entropy(model(images), targets)
            loss.backward()
            optimizer.step()
        times.append(time.perf_counter() - start)
    return {"img_per_s": epoch_rate(times, len(X))}


def run_peak(size=2048, repeats=10):
    import tensorflow as tf

    from xrayest.device import cpu_supports_bfloat16

    a = tf.random.normal((size, size), dtype=tf.float32)
    out = {}
    # bfloat16 only where the kernels have it (under ONEDNN_MAX_CPU_ISA=AVX2 oneDNN refuses a bfloat16 matmul)
    for dtype in ("bfloat16", "float32") if cpu_supports_bfloat16() else ("float32",):
        x = tf.cast(a, dtype)
        step = tf.function(lambda m: tf.linalg.matmul(m, m))
        step(x).numpy()
        start = time.perf_counter()
        for _ in range(repeats):
            result = step(x)
        result.numpy()
        out[dtype] = 2 * size ** 3 * repeats / (time.perf_counter() - start) / 1e9
    return out


def best_of(rates, prefix):
    """The fastest variant whose name starts with ``prefix`` (a peer's best way), or None."""
    return max((v for v in rates if v.startswith(prefix)), key=rates.get, default=None)


def best_round(runs) -> int:
    """The round (index into ``runs``) that gave a variant's best rate."""
    return max(range(len(runs)), key=lambda i: runs[i]["img_per_s"])


def rate_rows(results, rates, names, flops, peaks):
    """The peers table: one row per stack on the sutd_cnn network; ``peaks[i]`` is the matmul peak measured
    just before round ``i``, beside each row the peak of the round that gave its best rate."""
    xrayest = rates["xrayest:sutd_cnn"]
    marks = {best_of(rates, "torch"): " (faster PyTorch)", best_of(rates, "keras"): " (faster plain Keras)"}
    rows = []
    for variant, runs in results.items():
        if variant.startswith("xrayest:") and variant != "xrayest:sutd_cnn":
            continue
        rate = rates[variant]
        best = best_round(runs)
        rows.append([names[variant] + marks.get(variant, ""),
                     " / ".join(f"{r['img_per_s']:.0f}" for r in runs), f"{rate * flops / 1e9:.0f}",
                     f"{peaks[best]:.0f}", f"{100 * rate * flops / 1e9 / peaks[best]:.0f}%", f"{xrayest / rate:.2f}"])
    return rows


def backbone_rows(results, rates, peak):
    """xrayest's from-scratch backbones: speed and speed per FLOP, against sutd_cnn's."""
    base = rates["xrayest:sutd_cnn"] * results["xrayest:sutd_cnn"][0]["flops"]
    rows = []
    for variant, runs in results.items():
        if variant.startswith("xrayest:"):
            flops = runs[0]["flops"]
            rate = rates[variant]
            rows.append([f"`{variant.partition(':')[2]}`", f"{flops / 1e9:.2f}",
                         " / ".join(f"{r['img_per_s']:.0f}" for r in runs), f"{rate * flops / 1e9:.0f}",
                         f"{100 * rate * flops / 1e9 / peak:.0f}%", f"{rate * flops / base:.2f}",
                         f"{peak * 1e9 / flops:.0f}"])
    return rows
