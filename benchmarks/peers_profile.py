"""bench_peers' profile of xrayest's train step: a TensorFlow trace summed by part of the step, and each
convolution timed alone at its shapes (see bench_peers.py)."""

from __future__ import annotations

import time

from _common import pediatric_subsample
from peers_stacks import BATCH, HEADS, XRAYEST, forward_flops


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


def run_profile(n, backbone="sutd_cnn", precision="float32", steps=10):
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
    clf = XrayCNNClassifier(backbone, precision=precision, epochs=1,
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
    dtype = keras.mixed_precision.Policy("mixed_bfloat16" if precision == "bfloat16" else "float32").compute_dtype
    return {"backbone": backbone, "step": step, "traced_step": traced_step,
            "op_seconds": {k: v / steps for k, v in sums.items()},
            "busy": busy / steps, "input_pipeline_per_image": pipeline, "flops": 3 * forward_flops(model),
            "kernels": conv_kernels(clf.backbone_, BATCH, dtype)}


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
