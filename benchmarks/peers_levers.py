"""bench_peers' levers: sutd_cnn's train step timed with one thing changed at a time (see bench_peers.py)."""

from __future__ import annotations

import time

from _common import pediatric_subsample
from peers_profile import fixed_batch, warm_train_step
from peers_stacks import BATCH, XRAYEST


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


def run_lever(n, lever, precision="float32", steps=8, rounds=3):
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
    members = [XrayCNNClassifier("sutd_cnn", precision=precision, epochs=1, **{**XRAYEST, "random_state": seed})
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
