"""Training speed against the peers a user would pick instead, on the same network and data, with the
machine's matmul peak in that precision measured in the same run.

The network is the sutd_cnn shape (five conv3x3-BN-ReLU-maxpool blocks 32-64-64-128-128, Flatten,
Dense 256, Dense 128, 3 classes), 150 px grayscale pediatric X-rays (--n of them, stratified), batch 64,
Adam 1e-3, random crop / rotation / shift augmentation, every stack in the host's best precision
(--precision auto, what xrayest's ``precision="auto"`` picks: bfloat16 where the CPU has AMX-BF16 or
AVX512-BF16, float32 on AVX2-only CPUs, where bfloat16 is emulated):

- ``xrayest``: ``XrayCNNClassifier("sutd_cnn", precision=P, augment="xray", pooling="flatten",
  hidden_units=(256, 128))`` on the file paths (its blocks pool before their ReLU: the same function);
- ``keras``: plain Keras 3 on the same layers (the ``mixed_bfloat16`` policy in bfloat16), ``tf.data`` from a
  uint8 array (shuffle, batch, prefetch), Keras' Random* layers in the model, with TensorFlow's default
  kernels.  On an AVX2-only CPU TensorFlow's default leaves its oneDNN kernels off (``import xrayest`` turns
  them on); there plain Keras also runs with ``TF_ENABLE_ONEDNN_OPTS=1``, and xrayest again with
  TensorFlow's default (oneDNN off: what xrayest ran before it turned them on);
- ``torch_wN``: PyTorch (``torch.autocast("cpu", torch.bfloat16)`` in bfloat16), ``channels_last``, torchvision's
  RandomResizedCrop + RandomAffine on uint8 tensors in a ``DataLoader`` with N workers (each N of
  --torch-workers; the fastest is the peer).  PyTorch is not a dependency of xrayest (``pip install
  ".[peers]"``; from PyPI torch brings about 3 GB of CUDA libraries, CI does not install it): give
  --torch-python for an interpreter that has it; without torch the rows are skipped with the reason.

Each variant runs in its own process, in turn, --rounds times.  Images/s counts the epochs after the
first.  GFLOP/s = images/s x the network's training FLOPs per image (3x the forward FLOPs of its
convolution and dense layers, counted from the model); the peak is a 2048^3 matmul in TensorFlow in
that precision, timed before and after the variants.  The table's host line names the CPU model and
its bfloat16 kind (from its flags).  ``--isa avx2`` caps every stack's kernels at AVX2 (oneDNN's
``ONEDNN_MAX_CPU_ISA``, PyTorch's ``ATEN_CPU_CAPABILITY``): an AVX2-only host's kernels on a newer
CPU (its cores, caches and memory stay this host's), and the host line names the cap.

Then xrayest's from-scratch backbones (--backbones) are timed the same way, and each one's train step is
profiled: a ``tf.profiler`` trace of ``train_on_batch`` on one batch, its ops summed by part of the step,
and each convolution timed alone at its shapes (their sum is the floor of the step).  sutd_cnn's step is
also read from oneDNN's own log (``ONEDNN_VERBOSE=1``, one op at a time): each primitive's implementation
and time, the convolutions' rate by direction, and what the fit would reach if the weight gradients ran at
the forward passes' rate.  With --levers, sutd_cnn's train step is also timed with one thing changed at
a time (:data:`LEVERS`).

    python benchmarks/bench_peers.py [--n 1024] [--epochs 3] [--rounds 2] [--precision auto] [--isa native]
                                     [--torch-python PATH]
                                     [--backbones sutd_cnn,residual_cnn,sutd_residual] [--levers]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from _common import (ISA_SETTINGS, PEDIATRIC_DATA, append_results, cap_isa, machine_info, markdown_table,
                     pediatric_subsample, record_result, report_result, run_child)

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


PRECISION = "bfloat16"  # set from --precision in main (parent and each child)


def run_xrayest(n, epochs, backbone="sutd_cnn"):
    import keras

    from xrayest import XrayCNNClassifier

    paths, y = pediatric_subsample(n)
    times, marks = [], []
    timer = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: marks.append(time.perf_counter()),
                                           on_epoch_end=lambda e, logs: times.append(time.perf_counter() - marks[-1]))
    clf = XrayCNNClassifier(backbone, precision=PRECISION, epochs=epochs, callbacks=[timer],
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


def run_keras(n, epochs):
    import keras
    import numpy as np
    import tensorflow as tf

    paths, y = pediatric_subsample(n)
    X = gray_array(paths)[..., None]
    codes = np.unique(y, return_inverse=True)[1]
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if PRECISION == "bfloat16" else "float32")
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
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=PRECISION == "bfloat16"):
                loss = nn.functional.cross_entropy(model(images), targets)
            loss.backward()
            optimizer.step()
        times.append(time.perf_counter() - start)
    return {"img_per_s": epoch_rate(times, len(X))}


# Op types of a TensorFlow trace, by the part of the training step they belong to (first match wins).
PARTS = [
    ("augmentation (random geometry, exposure)", lambda op, kind: "augment" in op),
    ("convolutions, forward", lambda op, kind: "Conv2D" in kind and "Backprop" not in kind),
    ("convolutions, input gradient", lambda op, kind: "Conv2DBackpropInput" in kind),
    ("convolutions, weight gradient", lambda op, kind: "Conv2DBackpropFilter" in kind),
    ("BatchNorm, forward and backward", lambda op, kind: "BatchNorm" in kind),
    ("ReLU, max pooling, residual adds: forward and backward",
     lambda op, kind: kind in ("Relu", "ReluGrad", "AddN") or "MaxPool" in kind or op.endswith("_add/Add")),
    ("dense layers, loss", lambda op, kind: "MatMul" in kind or kind in ("BiasAddGrad", "_MklSoftmax")
     or "SoftmaxCrossEntropy" in kind or "dropout" in op),
    ("Adam update", lambda op, kind: "ApplyAdam" in kind or op.startswith(("adam", "fused_adam"))),
    ("other (casts, gray <-> RGB, variable reads, small ops)", lambda op, kind: True),
]


def trace_parts(logdir):
    """Per part of :data:`PARTS`: the summed duration (s) of the traced TensorFlow ops, and the time
    (s) at least one op ran, from the trace ``tf.profiler.experimental`` wrote into ``logdir``."""
    from pathlib import Path

    from tensorflow.tsl.profiler.protobuf import xplane_pb2  # the trace's format: no public reader

    space = xplane_pb2.XSpace()
    space.ParseFromString(next(Path(logdir).rglob("*.xplane.pb")).read_bytes())
    sums = {name: 0.0 for name, _ in PARTS}
    intervals = []
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):  # the executor's threads: one event per op run
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                op, _, kind = name.rpartition(":")
                if not op or "::" in name:  # an "op:Type" event, not the executor's own ("ExecutorState::Process")
                    continue
                part = next(part for part, match in PARTS if match(op, kind))
                sums[part] += event.duration_ps * 1e-12
                start = line.timestamp_ns * 1e-9 + event.offset_ps * 1e-12
                intervals.append((start, start + event.duration_ps * 1e-12))
    busy, reach = 0.0, float("-inf")
    for begin, finish in sorted(intervals):
        busy += max(0.0, finish - max(begin, reach))
        reach = max(reach, finish)
    return sums, busy


def conv_kernels(backbone, batch, dtype, repeats=5):
    """Each convolution of ``backbone`` timed alone at its shapes: seconds per batch for the forward
    pass, the input gradient (not for a convolution reading the image: training never asks for it)
    and the weight gradient, with the multiply-adds x 2 of one of them; in TensorFlow's NHWC layout
    and again in NCHW (keys ending ``_nchw``)."""
    import keras
    import tensorflow as tf

    from xrayest.seeding import all_layers

    def timed(fn, trials=3):  # the best of ``trials`` (the machine may be shared)
        fn()
        best = float("inf")
        for _ in range(trials):
            start = time.perf_counter()
            for _ in range(repeats):
                out = fn()
            out.numpy()
            best = min(best, (time.perf_counter() - start) / repeats)
        return best

    rows = []
    for layer in all_layers(backbone):
        if not isinstance(layer, keras.layers.Conv2D):
            continue
        (h, w, c_in), (ho, wo, c_out) = layer.input.shape[1:], layer.output.shape[1:]
        kh, kw = layer.kernel_size
        reads_image = any(layer.input is t for t in backbone.inputs)
        row = {"layer": layer.name, "shape": f"{h}x{w}x{c_in} -> {c_out}, {kh}x{kw}",
               "flops": 2.0 * batch * ho * wo * c_out * kh * kw * c_in}
        for layout in ("NHWC", "NCHW"):  # TensorFlow's layout, and oneDNN's own order, channels first
            def shaped(b, y, x, c, layout=layout):
                return (b, y, x, c) if layout == "NHWC" else (b, c, y, x)

            strides = list(shaped(1, *layer.strides, 1))
            padding = layer.padding.upper()
            x = tf.cast(tf.random.normal(shaped(batch, h, w, c_in)), dtype)
            kernel = tf.cast(tf.random.normal((kh, kw, c_in, c_out)), dtype)
            grad = tf.cast(tf.random.normal(shaped(batch, ho, wo, c_out)), dtype)
            forward = tf.function(lambda: tf.nn.conv2d(x, kernel, strides, padding, data_format=layout))
            wrt_input = tf.function(lambda: tf.raw_ops.Conv2DBackpropInput(
                input_sizes=list(shaped(batch, h, w, c_in)), filter=kernel, out_backprop=grad, strides=strides,
                padding=padding, data_format=layout))
            wrt_kernel = tf.function(lambda: tf.raw_ops.Conv2DBackpropFilter(
                input=x, filter_sizes=[kh, kw, c_in, c_out], out_backprop=grad, strides=strides, padding=padding,
                data_format=layout))
            suffix = "" if layout == "NHWC" else "_nchw"
            row["forward" + suffix] = timed(forward)
            row["input_grad" + suffix] = 0.0 if reads_image else timed(wrt_input)  # never needed for the image
            row["weight_grad" + suffix] = timed(wrt_kernel)
        rows.append(row)
    return rows


def fixed_batch(paths, y, classes, batch=BATCH):
    """The first ``batch`` films as a composed model takes them (raw uint8 pixels, 150 px) and their class
    codes among ``classes``: the one fixed batch a train step is timed on."""
    import numpy as np
    import tensorflow as tf

    from xrayest.inputs import as_image_source
    from xrayest.pipeline import PackedImages

    x = tf.constant(PackedImages.from_source(as_image_source(paths[:batch]), (150, 150)).batch(np.arange(batch)))
    return x, tf.constant(np.searchsorted(classes, y[:batch]))


def warm_train_step(model, x, targets, jit_compile="auto"):
    """Compile ``model`` as xrayest's fit does (Adam 1e-3, sparse cross-entropy) and run three steps on
    ``(x, targets)``: its train step traced and warm."""
    from xrayest.optimizers import build_optimizer

    model.compile(optimizer=build_optimizer("adam", 1e-3), loss="sparse_categorical_crossentropy",
                  jit_compile=jit_compile)
    for _ in range(3):
        model.train_on_batch(x, targets)


def run_profile(n, backbone="sutd_cnn", steps=10):
    """Where xrayest's training step spends its time, on one fixed batch.

    The composed model of a fitted classifier (augmentation -> trunk -> head) runs ``train_on_batch``
    (forward, backward, Adam) under TensorFlow's profiler; the trace's ops are summed by part of the
    step (:data:`PARTS`), and the time no op ran (Python, Keras and the executor between ops) is the
    step's wall time less the time at least one op ran.  The input pipeline (a shuffled epoch of
    ``image_dataset`` batches) is timed alone: in ``fit`` it overlaps with training.  Each convolution
    is then timed alone at its shapes (:func:`conv_kernels`): their sum is the step's floor.
    """
    import shutil
    import tempfile

    import keras
    import numpy as np
    import tensorflow as tf

    from xrayest import XrayCNNClassifier
    from xrayest.inputs import as_image_source
    from xrayest.pipeline import PackedImages, image_dataset

    paths, y = pediatric_subsample(n)
    clf = XrayCNNClassifier(backbone, precision=PRECISION, epochs=1,
                            **{**XRAYEST, **HEADS.get(backbone, {})}).fit(paths[:BATCH], y[:BATCH])
    model = clf.model_
    x, t = fixed_batch(paths, y, clf.classes_)
    warm_train_step(model, x, t)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, t)
    step = (time.perf_counter() - start) / steps
    logdir = tempfile.mkdtemp()
    try:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, t)
        traced_step = (time.perf_counter() - start) / steps
        tf.profiler.experimental.stop()
        sums, busy = trace_parts(logdir)
    finally:
        shutil.rmtree(logdir, ignore_errors=True)

    packed = PackedImages.from_source(as_image_source(paths), (150, 150))  # every film, decoded once
    codes = np.searchsorted(clf.classes_, y)
    start = time.perf_counter()
    count = 0
    for images, _ in image_dataset(packed, np.arange(len(paths)), codes, batch_size=BATCH, shuffle=True, seed=0):
        count += int(images.shape[0])
    pipeline = (time.perf_counter() - start) / count
    dtype = keras.mixed_precision.Policy("mixed_bfloat16" if PRECISION == "bfloat16" else "float32").compute_dtype
    return {"backbone": backbone, "step": step, "traced_step": traced_step,
            "op_seconds": {k: v / steps for k, v in sums.items()},
            "busy": busy / steps, "input_pipeline_per_image": pipeline, "flops": 3 * forward_flops(model),
            "kernels": conv_kernels(clf.backbone_, BATCH, dtype)}


LEVERS = {
    "as fitted (batch 64)": {},
    # XLA has no kernel for the augmentation's ImageProjectiveTransformV3: compared without augmentation
    "without augmentation": {"augment": False},
    "without augmentation, XLA: jit_compile=True": {"augment": False, "jit_compile": True},
    "batch 128": {"batch": 128},
    "one op at a time (inter-op threads 1)": {"inter_op": 1},
    "two models side by side in one graph": {"models": 2},
    # oneDNN's AVX2 weight-gradient kernel runs at about half its forward rate: the same gradient as
    # TensorFlow ops (a replacement kernel written in the framework's public ops), blocks 2-4
    "weight gradients of blocks 2-4 as shifted matrix products": {"weight_grad": "shifted"},
}


def shifted_weight_gradient(layer, chunk=8):
    """Make ``layer`` (a 3x3, stride-1, "same" Conv2D) compute its weight gradient as nine matrix
    products per chunk of ``chunk`` images (input shifted by each kernel offset, transposed, times
    the output gradient) instead of TensorFlow's Conv2DBackpropFilter; forward and input gradient
    unchanged.  The same gradient up to float rounding (checked by the lever before it is timed)."""
    import tensorflow as tf

    @tf.custom_gradient
    def convolution(x, kernel):
        def gradient(dy):
            n, h, w, c_in = x.shape
            c_out = kernel.shape[-1]
            dx = tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x), filter=kernel, out_backprop=dy,
                                                strides=[1, 1, 1, 1], padding="SAME")
            padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
            parts = []
            for s in range(0, n, chunk):
                d = tf.reshape(dy[s:s + chunk], (-1, c_out))
                parts.append(tf.stack([tf.matmul(tf.reshape(padded[s:s + chunk, i:i + h, j:j + w], (-1, c_in)), d,
                                                 transpose_a=True) for i in range(3) for j in range(3)]))
            return dx, tf.reshape(tf.add_n(parts), (3, 3, c_in, c_out))

        return tf.nn.conv2d(x, kernel, 1, "SAME"), gradient

    # the instance's op: Keras' Conv2D.call calls it with (inputs, kernel); the kernel read outside
    layer.convolution_op = lambda inputs, kernel: convolution(inputs, tf.convert_to_tensor(kernel))


def run_lever(n, lever, steps=8, rounds=3):
    """xrayest's sutd_cnn train step on one fixed batch with one lever of :data:`LEVERS` changed:
    images/s per model (``train_on_batch``, the best of ``rounds``).  Without augmentation the
    model is the fitted trunk and head alone.

    Two models side by side are two fitted classifiers' whole models (augmentation, trunk, head) on
    the same batch, each with its own loss: two ensemble members trained as one graph.
    """
    import tensorflow as tf

    settings = LEVERS[lever]
    if settings.get("inter_op"):
        tf.config.threading.set_inter_op_parallelism_threads(settings["inter_op"])
    import keras

    from xrayest import XrayCNNClassifier
    from xrayest.seeding import all_layers

    batch = settings.get("batch", BATCH)
    paths, y = pediatric_subsample(max(n, batch))
    members = [XrayCNNClassifier("sutd_cnn", precision=PRECISION, epochs=1, **{**XRAYEST, "random_state": seed})
               .fit(paths[:BATCH], y[:BATCH]) for seed in range(settings.get("models", 1))]
    x, t = fixed_batch(paths, y, members[0].classes_, batch)
    networks = [m.model_ if settings.get("augment", True) else keras.Sequential([m.trunk_.model, m.head_])
                for m in members]
    if settings.get("weight_grad") == "shifted":
        convs = [layer for layer in all_layers(members[0].backbone_) if isinstance(layer, keras.layers.Conv2D)]
        kernels = [layer.kernel for layer in convs[1:4]]
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(members[0].trunk_.model(x[:16], training=True) ** 2)
        before = tape.gradient(loss, kernels)
        for layer in convs[1:4]:
            shifted_weight_gradient(layer)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(members[0].trunk_.model(x[:16], training=True) ** 2)
        for a, b in zip(before, tape.gradient(loss, kernels)):
            error = float(tf.reduce_max(tf.abs(a - b)) / tf.reduce_max(tf.abs(a)))
            if error > 1e-3:
                raise AssertionError(f"the shifted weight gradient differs from TensorFlow's by {error:.1e}")
    if len(members) == 1:
        model, targets = networks[0], t
    else:
        images = keras.Input(members[0].model_.input_shape[1:])
        model = keras.Model(images, [keras.Sequential([network], name=f"member{i}")(images)
                                     for i, network in enumerate(networks)])
        targets = [t] * len(members)
    warm_train_step(model, x, targets, jit_compile=settings.get("jit_compile", False))
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, targets)
        best = max(best, len(members) * batch * steps / (time.perf_counter() - start))
    return {"img_per_s": best}


def run_primitives(n, steps=5):
    """oneDNN's own account of sutd_cnn's train step: run in a child with ``ONEDNN_VERBOSE=1`` (oneDNN
    logs each primitive it executes: its kind, the implementation it chose, its shapes and its time)
    and one op at a time (``TF_NUM_INTEROP_THREADS=1``, so no two primitives share the cores).  The
    log of ``steps`` steps on one fixed batch, after three warm ones, is summed per primitive."""
    import os
    import tempfile

    log = tempfile.NamedTemporaryFile("w+", suffix=".log")
    stdout = os.dup(1)
    os.dup2(log.fileno(), 1)  # oneDNN writes its log to the process's standard output
    try:
        from xrayest import XrayCNNClassifier

        paths, y = pediatric_subsample(n)
        clf = XrayCNNClassifier("sutd_cnn", precision=PRECISION, epochs=1, **XRAYEST).fit(paths[:BATCH], y[:BATCH])
        x, t = fixed_batch(paths, y, clf.classes_)
        model = clf.model_
        warm_train_step(model, x, t)
        sys.stdout.flush()
        print("TIMED STEPS", flush=True)
        start = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, t)
        step = (time.perf_counter() - start) / steps
        sys.stdout.flush()
    finally:
        os.dup2(stdout, 1)
    log.seek(0)
    text = log.read().partition("TIMED STEPS")[2]
    sums = {}
    for line in text.splitlines():
        fields = line.split(",")
        if not line.startswith("onednn_verbose") or "exec" not in fields:
            continue
        at = fields.index("exec")
        key = f"{fields[at + 2]}|{fields[at + 4]}|{fields[-2]}|{fields[at + 3]}"  # kind|direction|shape|implementation
        sums[key] = sums.get(key, 0.0) + float(fields[-1]) / 1e3 / steps
    return {"step": step, "primitives": sums}


def _conv_problem(shape: str) -> dict:
    """The sizes in oneDNN's problem string of a convolution ("mb64_ic32oc64_ih75oh75kh3...": mb, ic, oc, ...)."""
    import re

    return {name: int(value) for name, value in re.findall(r"([a-z]{2})(\d+)", shape)}


def conv_problem_flops(shape: str) -> float:
    """Multiply-adds x 2 of a convolution from oneDNN's problem string."""
    p = _conv_problem(shape)
    return 2.0 * p["mb"] * p["ic"] * p["oc"] * p["oh"] * p["ow"] * p["kh"] * p["kw"]


def conv_directions(primitives) -> dict:
    """Per direction of the convolutions in oneDNN's log (:func:`run_primitives`): (FLOPs, seconds) per step."""
    out = {}
    for direction in ("forward_training", "backward_data", "backward_weights"):
        parts = [(key.split("|")[2], seconds) for key, seconds in primitives["primitives"].items()
                 if key.startswith(f"convolution|{direction}|")]
        out[direction] = (sum(conv_problem_flops(shape) for shape, _ in parts), sum(t for _, t in parts))
    return out


def primitive_rows(primitives, top=12):
    """The ``top`` primitives by time, each direction of the convolutions summed, then the rest and the
    total, for :func:`run_primitives`' result."""
    sums = primitives["primitives"]
    ranked = sorted(sums.items(), key=lambda item: -item[1])
    rows = []
    for key, seconds in ranked[:top]:
        kind, direction, shape, implementation = key.split("|")
        if kind == "convolution":
            p = _conv_problem(shape)
            shown, rate = (f"{p['ih']}x{p['iw']}x{p['ic']} -> {p['oc']}, {p['kh']}x{p['kw']}",
                           f"{conv_problem_flops(shape) / seconds / 1e9:.0f}")
        else:
            shown, rate = f"`{shape}`", ""
        rows.append([f"{kind}, {direction}", shown, f"`{implementation}`", f"{1e3 * seconds:.1f}", rate])
    rest = sum(seconds for _, seconds in ranked[top:])
    rows.append([f"the other {len(ranked[top:])} primitives", "", "", f"{1e3 * rest:.1f}", ""])
    for direction, (flops, seconds) in conv_directions(primitives).items():
        rows.append([f"all convolutions, {direction}", "", "", f"{1e3 * seconds:.1f}", f"{flops / seconds / 1e9:.0f}"])
    rows.append(["**all oneDNN primitives** / the step's wall time", "", "",
                 f"**{1e3 * sum(sums.values()):.1f}** / {1e3 * primitives['step']:.1f}", ""])
    return rows


def weight_gradient_note(primitives, flops, peak, rate) -> str:
    """What xrayest's fit (``rate`` img/s) would reach if its convolutions' weight gradients ran at their
    forward passes' rate: the step's time shrunk by the share oneDNN's log (:func:`run_primitives`) says."""
    directions = conv_directions(primitives)
    forward_flops_, forward_s = directions["forward_training"]
    weight_flops, weight_s = directions["backward_weights"]
    saved = (weight_s - weight_flops * forward_s / forward_flops_) / primitives["step"]
    faster = rate / (1 - saved)
    return (f"In oneDNN's log (one op at a time) the weight gradients take {1e3 * weight_s:.0f} of the step's "
            f"{1e3 * primitives['step']:.0f} ms at {weight_flops / weight_s / 1e9:.0f} GFLOP/s, the forward passes "
            f"run at {forward_flops_ / forward_s / 1e9:.0f}: at that rate the step would take {100 * saved:.0f}% "
            f"less time, xrayest's fit {faster:.0f} img/s, {100 * faster * flops / 1e9 / peak:.0f}% of the peak.")


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


def rate_rows(results, rates, names, flops, peak):
    """The peers table: one row per stack on the sutd_cnn network."""
    xrayest = rates["xrayest:sutd_cnn"]
    torch_best = max((v for v in rates if v.startswith("torch")), key=rates.get, default=None)
    rows = []
    for variant, runs in results.items():
        if variant.startswith("xrayest:") and variant != "xrayest:sutd_cnn":
            continue
        rate = rates[variant]
        rows.append([names[variant] + (" (fastest PyTorch)" if variant == torch_best else ""),
                     " / ".join(f"{r['img_per_s']:.0f}" for r in runs), f"{rate * flops / 1e9:.0f}",
                     f"{100 * rate * flops / 1e9 / peak:.0f}%", f"{xrayest / rate:.2f}"])
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


def profile_rows(profiles):
    """Milliseconds per image of each part of the step, one column per backbone."""
    rows = []
    for name, _ in PARTS:
        rows.append([name, *(f"{1e3 * p['op_seconds'][name] / BATCH:.2f} "
                             f"({100 * p['op_seconds'][name] / sum(p['op_seconds'].values()):.0f}%)"
                             for p in profiles)])
    rows.append(["all ops, summed (two ops run at once at times)",
                 *(f"{1e3 * sum(p['op_seconds'].values()) / BATCH:.2f}" for p in profiles)])
    rows.append(["time at least one op ran", *(f"{1e3 * p['busy'] / BATCH:.2f}" for p in profiles)])
    rows.append(["time no op ran (Python, Keras, executor)",
                 *(f"{1e3 * max(0.0, p['traced_step'] - p['busy']) / BATCH:.2f}" for p in profiles)])
    rows.append(["**train step, wall** (untraced / traced)",
                 *(f"**{1e3 * p['step'] / BATCH:.2f}** / {1e3 * p['traced_step'] / BATCH:.2f}" for p in profiles)])
    rows.append(["input pipeline, timed alone (overlaps in fit)",
                 *(f"{1e3 * p['input_pipeline_per_image']:.2f}" for p in profiles)])
    return rows


def kernel_rows(profile, peak):
    """Each convolution of the network timed alone, and their sum: the step's floor."""
    rows = []
    total = {"forward": 0.0, "input_grad": 0.0, "weight_grad": 0.0}
    flops = 0.0
    for k in profile["kernels"]:
        cells = []
        for part in total:
            total[part] += k[part]
            cells.append(f"{k['flops'] / k[part] / 1e9:.0f}" if k[part] else "not needed")
        flops += k["flops"] * (3 if k["input_grad"] else 2)
        rows.append([k["layer"], k["shape"], *cells])
    floor = sum(total.values())
    rows.append(["**all convolutions**", f"{1e3 * floor / BATCH:.2f} ms per image",
                 *(f"{sum(k['flops'] for k in profile['kernels'] if k[part]) / total[part] / 1e9:.0f}"
                   for part in total)])
    nchw = {part: sum(k[part + "_nchw"] for k in profile["kernels"]) for part in total}
    rows.append(["all convolutions in NCHW", f"{1e3 * sum(nchw.values()) / BATCH:.2f} ms per image",
                 *(f"{sum(k['flops'] for k in profile['kernels'] if k[part]) / nchw[part] / 1e9:.0f}"
                   for part in total)])
    return rows, floor, flops


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--torch-python", default=sys.executable,
                        help="a Python with torch and torchvision (default: this one)")
    parser.add_argument("--torch-workers", default="0,1,2", help="DataLoader worker counts to try")
    parser.add_argument("--backbones", default="sutd_cnn,residual_cnn,sutd_residual",
                        help="xrayest's from-scratch backbones to time and profile (sutd_cnn always)")
    parser.add_argument("--levers", action="store_true",
                        help="also time sutd_cnn's train step with each lever of LEVERS changed, in turn")
    parser.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16"],
                        help="every stack's precision; auto: the host's best (what xrayest's precision='auto' picks)")
    parser.add_argument("--isa", default="native", choices=sorted(ISA_SETTINGS),
                        help="avx2: cap TensorFlow's and PyTorch's kernels at AVX2 (ONEDNN_MAX_CPU_ISA, "
                             "ATEN_CPU_CAPABILITY), an AVX2-only host's kernels on this CPU; the host line says so")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    cap_isa(args.isa)  # before TensorFlow is imported; the children inherit it
    global PRECISION
    from xrayest.device import resolve_precision

    PRECISION = resolve_precision(args.precision, "cpu")
    if args.variant:
        kind, _, arg = args.variant.partition(":")
        result = {"xrayest": lambda: run_xrayest(args.n, args.epochs, arg),
                  "xrayest-tf-default": lambda: run_xrayest(args.n, args.epochs, arg),
                  "keras": lambda: run_keras(args.n, args.epochs),
                  "torch": lambda: run_torch(args.n, args.epochs, int(arg or 0)), "peak": run_peak,
                  "profile": lambda: run_profile(args.n, arg), "lever": lambda: run_lever(args.n, arg),
                  "primitives": lambda: run_primitives(args.n)}[kind]()
        report_result(result)
        return
    if not DATA.is_dir():
        sys.exit(f"skipped: pediatric_cxr not found at {DATA} (it lives in ../shared beside the repo)")
    probe = subprocess.run([args.torch_python, "-c", "import torch, torchvision"], capture_output=True)
    has_torch = probe.returncode == 0
    backbones = ["sutd_cnn", *(b for b in args.backbones.split(",") if b and b != "sutd_cnn")]
    from xrayest.device import cpu_flags, onednn_off_by_default

    # TensorFlow's default leaves its oneDNN kernels off on AVX2-only CPUs (xrayest turns them on when it is
    # imported): there plain Keras runs as TensorFlow's default has it, and again with TF_ENABLE_ONEDNN_OPTS=1
    # (a Keras user who knows the variable), and xrayest once more with TensorFlow's default
    tf_default_off = onednn_off_by_default(cpu_flags())
    envs = {"keras": {"TF_ENABLE_ONEDNN_OPTS": "0" if tf_default_off else None}}
    variants = ["xrayest:sutd_cnn", "keras"]
    if tf_default_off:
        envs.update({"keras:onednn": {"TF_ENABLE_ONEDNN_OPTS": "1"},
                     "xrayest-tf-default:sutd_cnn": {"TF_ENABLE_ONEDNN_OPTS": "0"}})
        variants += ["keras:onednn", "xrayest-tf-default:sutd_cnn"]
    if has_torch:
        variants += [f"torch:{w}" for w in args.torch_workers.split(",")]
    else:
        print(f"skipped the PyTorch rows: {args.torch_python} cannot import torch and torchvision "
              '(pip install ".[peers]", or give --torch-python)', file=sys.stderr)
    variants += [f"xrayest:{b}" for b in backbones[1:]]
    print(f"host: {machine_info()}; every stack in {PRECISION}", flush=True)
    common = ["--n", args.n, "--epochs", args.epochs, "--precision", PRECISION]
    peaks = [run_child(__file__, ["--variant", "peak"], "peak")]
    results = {v: [] for v in variants}
    for _ in range(args.rounds):
        for variant in variants:
            python = args.torch_python if variant.startswith("torch") else sys.executable
            results[variant].append(run_child(__file__, ["--variant", variant, *common], variant, python=python,
                                              env=envs.get(variant)))
            print(variant, results[variant][-1], flush=True)
    levers = {lever: [] for lever in (LEVERS if args.levers else [])}
    for _ in range(args.rounds):
        for lever in levers:
            levers[lever].append(run_child(__file__, ["--variant", f"lever:{lever}", *common], lever)["img_per_s"])
            print(lever, levers[lever][-1], flush=True)
    profiles = [run_child(__file__, ["--variant", f"profile:{b}", *common], f"profile {b}") for b in backbones]
    primitives = run_child(__file__, ["--variant", "primitives", *common], "oneDNN's log of the step",
                           env={"ONEDNN_VERBOSE": "1", "TF_NUM_INTEROP_THREADS": "1"})
    peaks.append(run_child(__file__, ["--variant", "peak"], "peak"))
    peak = max(p[PRECISION] for p in peaks)
    short = {"bfloat16": "bf16", "float32": "float32"}[PRECISION]
    flops = results["xrayest:sutd_cnn"][0]["flops"]
    rates = {v: max(r["img_per_s"] for r in runs) for v, runs in results.items()}
    peer = max((v for v in rates if not v.startswith("xrayest")), key=rates.get)
    keras_name = f"plain Keras, {'mixed_bfloat16' if PRECISION == 'bfloat16' else 'float32'}, tf.data"
    names = {"xrayest:sutd_cnn": f"xrayest XrayCNNClassifier, {PRECISION}, file paths",
             "keras": keras_name + (", TensorFlow's default (oneDNN off)" if tf_default_off else ""),
             "keras:onednn": keras_name + ", TF_ENABLE_ONEDNN_OPTS=1",
             "xrayest-tf-default:sutd_cnn": f"xrayest with TensorFlow's default kernels (oneDNN off), {PRECISION}",
             **{v: f"PyTorch, {'bf16 autocast' if PRECISION == 'bfloat16' else 'float32'}, channels_last, "
                   f"{v.partition(':')[2]} DataLoader workers"
                for v in results if v.startswith("torch")}}
    table = markdown_table(["stack (the sutd_cnn network)", "img/s (epochs 2+), per round", "GFLOP/s (best round)",
                            f"of {short} peak", "xrayest / this"], rate_rows(results, rates, names, flops, peak))
    table += "\n\n" + markdown_table(
        ["xrayest backbone", "training GFLOP per image", "img/s, per round", "GFLOP/s", f"of {short} peak",
         "per FLOP vs sutd_cnn", "img/s at 100% of the peak"], backbone_rows(results, rates, peak))
    table += "\n\n" + markdown_table(["part of the train step (batch 64, traced), ms per image",
                                        *(f"`{p['backbone']}`" for p in profiles)], profile_rows(profiles))
    if levers:
        base = max(next(iter(levers.values())))
        table += "\n\n" + markdown_table(
            ["lever on sutd_cnn's train step (one fixed batch, train_on_batch)", "img/s per model, per round",
             "vs as fitted"], [[lever, " / ".join(f"{r:.0f}" for r in runs), f"{max(runs) / base:.2f}"]
                               for lever, runs in levers.items()])
    rows, floor, conv_flops = kernel_rows(profiles[0], peak)
    table += "\n\n" + markdown_table(["`sutd_cnn` convolution, timed alone (batch 64)", "shape", "forward GFLOP/s",
                                        "input gradient GFLOP/s", "weight gradient GFLOP/s"], rows)
    table += "\n\n" + markdown_table(
        ["oneDNN primitive in `sutd_cnn`'s train step (ONEDNN_VERBOSE=1, one op at a time, batch 64)", "shape",
         "implementation", "ms per step", "GFLOP/s"], primitive_rows(primitives))
    print(table)
    step = profiles[0]["step"]
    bf16 = " / ".join(f"{p['bfloat16']:.0f}" for p in peaks) if "bfloat16" in peaks[0] else "not native here"
    fp32 = " / ".join(f"{p['float32']:.0f}" for p in peaks)
    append_results(
        f"bench_peers: the sutd_cnn network against its peers; xrayest's from-scratch backbones profiled, 150 px, "
        f"batch 64, augmentation, {PRECISION}, {args.n} pediatric_cxr images, {args.epochs} epochs",
        table, notes=f"Training FLOPs per image of sutd_cnn {flops / 1e9:.2f} GFLOP (3x forward, conv + dense). "
                     f"bf16 matmul peak (2048^3, TensorFlow) {bf16} GFLOP/s before / after, float32 {fp32}. "
                     f"Each variant in its own process, in turn, per round; the fastest peer here: "
                     f"{names.get(peer, peer)} (xrayest {rates['xrayest:sutd_cnn'] / rates[peer]:.2f}x it). "
                     f"The sutd_cnn convolutions alone take {1e3 * floor / BATCH:.2f} ms per image "
                     f"({conv_flops / floor / 1e9:.0f} GFLOP/s, {100 * conv_flops / floor / 1e9 / peak:.0f}% of the "
                     f"peak) of its {1e3 * step / BATCH:.2f} ms train step: a step of convolutions only would "
                     f"train at {BATCH / floor:.0f} img/s. "
                     + weight_gradient_note(primitives, flops, peak, rates["xrayest:sutd_cnn"]))
    ours = rates["xrayest:sutd_cnn"]
    record_result(f"peers_{PRECISION}", f"training the sutd_cnn network against the peers, 150 px, augmented, "
                                       f"batch 64, {PRECISION}",
                  f"xrayest {span(results['xrayest:sutd_cnn'])} img/s, the fastest peer ({names.get(peer, peer)}) "
                  f"{span(results[peer])}: {ours / rates[peer]:.1f}x; {100 * ours * flops / 1e9 / peak:.0f}% of the "
                  f"{short} matmul peak measured in the same run"
                  + (f"; with TensorFlow's default kernels (oneDNN off) xrayest "
                     f"{span(results['xrayest-tf-default:sutd_cnn'])}, plain Keras {span(results['keras'])}"
                     if tf_default_off else ""))


def span(runs) -> str:
    """Images/s of the rounds of one variant, as "low-high" (or one number)."""
    low, high = (round(f(r["img_per_s"] for r in runs)) for f in (min, max))
    return f"{low}" if low == high else f"{low}-{high}"


if __name__ == "__main__":
    main()
