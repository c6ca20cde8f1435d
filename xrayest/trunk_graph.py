"""Inference rewrites of a frozen backbone's Keras graph: folded BatchNorm, compute precision.

A frozen backbone is a fixed function, so two rewrites make it cheaper without changing
what it computes:

* **BatchNorm folding.**  In inference a ``BatchNormalization`` right after a convolution
  is a per-channel affine map, ``y = s * conv(x) + b`` with ``s = gamma / sqrt(var + eps)``
  and ``b = beta - mean * s``; multiplying the convolution's output-channel weights by
  ``s`` and adding ``b`` to its bias gives the same function in one pass instead of two
  or three (Keras 3 applies BN as separate elementwise ops).  Xception, ResNet50,
  InceptionV3, MobileNetV2 and EfficientNetB0 put a BN after almost every convolution.
  The folded trunk differs from the original by float rounding only (tested).
* **Compute precision.**  ``precision="bfloat16"`` rebuilds every layer with Keras'
  ``mixed_bfloat16`` policy (weights stay float32, arithmetic runs in bfloat16), which
  uses AMX / AVX512-BF16 on recent Intel CPUs and tensor cores on GPUs; ``"float16"``
  likewise with ``mixed_float16`` (the tensor cores of GPUs without bfloat16).  Features
  change at the level of that rounding (~1e-2 relative for bfloat16), so precision is part
  of the feature-cache key.

Both are done in one :func:`keras.models.clone_model` pass; the caller's model is never
modified.
"""

from __future__ import annotations

import numpy as np

__all__ = ["split_at_trainable", "PRECISIONS", "rewrite_backbone", "foldable_batch_norms", "layer_graph"]

# Estimator ``precision=`` values -> Keras dtype policy of the rewritten backbone.
PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def _conv_types():
    import keras

    # Layers whose last kernel axis (or depthwise channel x multiplier) is the output
    # channel; transposed convolutions lay their kernel out differently and are left alone.
    return (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
            keras.layers.SeparableConv1D, keras.layers.SeparableConv2D,
            keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)


def _keras_histories(node):
    """``(layer name, node index, tensor index)`` of every tensor a serialized call node takes."""
    if isinstance(node, dict):
        history = node.get("keras_history")
        if history is not None:
            return [tuple(history)]
        return [h for value in node.values() for h in _keras_histories(value)]
    if isinstance(node, (list, tuple)):
        return [h for value in node for h in _keras_histories(value)]
    return []


def layer_graph(model):
    """The call graph of a functional ``model``, read from its public ``get_config()``.

    Returns
    -------
    calls : dict
        ``{layer name: [[input layer names] per call]}``.
    uses : collections.Counter
        How many times each layer's output is consumed (by layers or as a model output).
    Both are None for a model that is not functional (Sequential, subclassed).
    """
    import collections

    import keras

    if isinstance(model, keras.Sequential):
        return None, None
    try:
        config = model.get_config()
    except NotImplementedError:
        return None, None
    layers = config.get("layers") if isinstance(config, dict) else None
    if not layers or not all(isinstance(layer, dict) and "inbound_nodes" in layer for layer in layers):
        return None, None
    calls, uses = {}, collections.Counter()
    for layer in layers:
        nodes = [[h[0] for h in _keras_histories(node)] for node in layer["inbound_nodes"]]
        calls[layer["config"]["name"] if "name" not in layer else layer["name"]] = nodes
        for names in nodes:
            uses.update(names)
    uses.update(_output_layer_names(config.get("output_layers", [])))
    return calls, uses


def _output_layer_names(outputs):
    """Layer names in a config's ``output_layers``: one ``[name, node, tensor]`` triple, or a list or dict of them."""
    if isinstance(outputs, dict):
        return [name for value in outputs.values() for name in _output_layer_names(value)]
    if isinstance(outputs, (list, tuple)):
        if len(outputs) == 3 and isinstance(outputs[0], str) and not isinstance(outputs[1], (list, tuple, dict)):
            return [outputs[0]]
        return [name for value in outputs for name in _output_layer_names(value)]
    return []


def foldable_batch_norms(model) -> dict[str, str]:
    """``{batch-norm layer name: convolution layer name}`` for every BN that can be folded.

    A BN folds into the convolution feeding it when that convolution has no activation,
    is channels-last, is called once and feeds nothing else, and the BN normalises the
    last axis.  The graph is read from the model's config (:func:`layer_graph`); anything
    unexpected there means "do not fold", never an error.
    """
    import keras

    calls, uses = layer_graph(model)
    if calls is None:
        return {}
    pairs = {}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization) or layer.renorm or layer.synchronized:
            continue
        nodes = calls.get(layer.name, [])
        if len(nodes) != 1 or len(nodes[0]) != 1:
            continue
        axis = layer.axis if isinstance(layer.axis, int) else None
        rank = len(layer.input.shape)
        if axis not in (-1, rank - 1):
            continue
        producer_name = nodes[0][0]
        try:
            producer = model.get_layer(producer_name)
        except ValueError:
            continue
        if type(producer) not in _conv_types() or len(calls.get(producer_name, [])) != 1:
            continue
        config = producer.get_config()
        if config.get("activation") != "linear" or config.get("data_format", "channels_last") != "channels_last":
            continue
        if uses[producer_name] != 1:
            continue
        pairs[layer.name] = producer.name
    return pairs


def _folded_weights(conv, bn) -> list[np.ndarray]:
    """Weights of ``conv`` with ``bn`` folded in, in the order a ``use_bias=True`` clone expects."""
    import keras

    variance = np.asarray(bn.moving_variance, np.float64)
    scale = 1.0 / np.sqrt(variance + bn.epsilon)
    if bn.gamma is not None:
        scale = scale * np.asarray(bn.gamma, np.float64)
    shift = -np.asarray(bn.moving_mean, np.float64) * scale
    if bn.beta is not None:
        shift = shift + np.asarray(bn.beta, np.float64)
    bias = np.asarray(conv.bias, np.float64) if conv.use_bias else 0.0
    new_bias = (bias * scale + shift).astype(np.float32)
    if isinstance(conv, (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)):
        pointwise = np.asarray(conv.pointwise_kernel, np.float64) * scale
        return [np.asarray(conv.depthwise_kernel), pointwise.astype(np.float32), new_bias]
    kernel = np.asarray(conv.kernel, np.float64)
    if isinstance(conv, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)):
        # Output channel c * multiplier + m comes from kernel[..., c, m].
        kernel = kernel * scale.reshape(kernel.shape[-2:])
    else:
        kernel = kernel * scale
    return [kernel.astype(np.float32), new_bias]


def _identity(x, *args, **kwargs):
    return x


def rewrite_backbone(model, *, fold_batch_norm: bool = True, precision: str = "float32"):
    """A rewritten copy of a frozen ``model`` for inference (the input model is untouched).

    Parameters
    ----------
    model : keras.Model
    fold_batch_norm : bool
        Fold each BatchNormalization into the convolution before it
        (:func:`foldable_batch_norms`); only valid while the model stays frozen.
    precision : {"float32", "bfloat16", "float16"}
        Compute precision of every layer; outputs are in that precision.

    Returns
    -------
    keras.Model
        ``model`` itself when there is nothing to rewrite.
    """
    import keras

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}; got {precision!r}")
    policy = PRECISIONS[precision]
    folds = foldable_batch_norms(model) if fold_batch_norm else {}
    if not folds and policy == "float32":
        return model
    folded_convs = {conv: bn for bn, conv in folds.items()}
    cloned = {}

    def clone_layer(layer):
        if layer.name in folds:
            return _identity  # its arithmetic now lives in the convolution's weights
        if isinstance(layer, keras.Model) and not isinstance(layer, keras.Sequential):
            # A nested model is rewritten on its own (weights included); unchanged, it is shared.
            return rewrite_backbone(layer, fold_batch_norm=fold_batch_norm, precision=precision)
        config = layer.get_config()
        if layer.name in folded_convs:
            config["use_bias"] = True
        if policy != "float32" and not isinstance(layer, keras.layers.InputLayer):
            config["dtype"] = policy
        new = layer.__class__.from_config(config)
        cloned[layer.name] = new
        return new

    new_model = keras.models.clone_model(model, clone_function=clone_layer)
    for layer in model.layers:
        new = cloned.get(layer.name)
        if new is None or not layer.weights:
            continue
        if layer.name in folded_convs:
            new.set_weights(_folded_weights(layer, model.get_layer(folded_convs[layer.name])))
        else:
            new.set_weights(layer.get_weights())
    new_model.trainable = model.trainable
    return new_model


def split_at_trainable(model):
    """``(front, back)``: ``model`` cut before its first trainable layer, or None where it cannot be.

    ``front`` maps the model's input to the one tensor every later layer depends on (e.g. the output
    of Xception's block 12 when blocks 13-14 are unfrozen); ``back`` maps that tensor to the model's
    output.  Both share their layers (and weights) with ``model``, so training ``back`` trains
    ``model``.  None when nothing trains, when everything trains, when the later layers read more
    than one earlier tensor (a cut inside a residual block) or when ``model`` is not functional.

    Uses the public functional API only: the graph is read from ``get_config()``
    (:func:`layer_graph`), and ``keras.Model`` accepts intermediate tensors as inputs.
    """
    import keras

    calls, _ = layer_graph(model)
    if calls is None:
        return None
    names = [layer.name for layer in model.layers]
    first = next((i for i, layer in enumerate(model.layers) if layer.trainable and layer.weights), None)
    if first is None or first <= 1:
        return None
    # Weightless layers just before the first trainable one (an activation, say) may sit on either
    # side: take the latest start whose later layers read a single earlier tensor.
    start = first
    while True:
        later = set(names[start:])
        frontier = {src for name in later for node in calls.get(name, []) for src in node if src not in later}
        if len(frontier) == 1:
            break
        start -= 1
        if start <= 1 or model.layers[start].weights:
            return None
    cut = model.get_layer(frontier.pop()).output
    return (keras.Model(model.inputs, cut, name=f"{model.name}_front"),
            keras.Model(cut, model.output, name=f"{model.name}_back"))
