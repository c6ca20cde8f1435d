"""The backbone registry: plain data naming each supported CNN trunk.

A backbone maps images (already resized and preprocessed by
:class:`xrayest.layers.ImagePreprocessing`: RGB for the ImageNet trunks, one gray channel for the
from-scratch CNNs) to a spatial feature map.  Pretrained
trunks come from ``keras.applications``; ``small_cnn`` and ``residual_cnn`` are built
here and trained from scratch; ``sutd_cnn`` and ``sutd_residual`` follow the two from-scratch
models of the published SUTD pediatric-pneumonia study (a 5-conv CNN and a residual CNN that, with
xrayest's two-dense-layer head, is 10 layers deep).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import keras

from .layers import FusedBatchNormalization

__all__ = ["BackboneSpec", "BACKBONES", "get_backbone_spec", "backbone_spec_or_model", "image_size_for"]


@dataclass(frozen=True)
class BackboneSpec:
    """What xrayest needs to know about one backbone.

    Attributes
    ----------
    name : str
        Registry key.
    builder : str or callable
        Attribute of ``keras.applications`` (str), or a function
        ``builder(input_shape) -> keras.Model`` for the from-scratch CNNs.
    preprocess : str
        Key of ``xrayest.layers.PREPROCESS_MODES``.
    default_size : int
        Input side length the published ImageNet weights were trained at.
    min_size : int
        Smallest input side the architecture accepts.
    pretrained : bool
        Whether ImageNet weights exist (``weights="imagenet"``).
    channels : int
        Input channels of the network: 3 (RGB, the ImageNet backbones) or 1 (grayscale: the
        from-scratch CNNs, whose first convolution then sees the X-ray's one channel, as in the
        published SUTD models; colour images are averaged to gray in the model).
    cut_after : str, optional
        Cut the network at the residual sum (``Add`` layer) that closes the block ending with this
        layer: that sum is the backbone's feature map.  Keras numbers ``Add`` layers per process, so
        the sum is found through the named layer it reads.  The weights are those of the whole
        network, loaded before the cut.  None: the whole network.
    weights_name : str, optional
        The backbone whose ImageNet weight files this one reads (default: ``name``), for a cut
        of another registry entry.
    """

    name: str
    builder: str | Callable[[tuple], keras.Model]
    preprocess: str
    default_size: int
    min_size: int
    pretrained: bool = True
    channels: int = 3
    cut_after: str | None = None
    weights_name: str | None = None

    @property
    def weights_key(self) -> str:
        """The name ImageNet weight files are looked up under (``<weights_key>_imagenet_notop.weights.h5``)."""
        return self.weights_name or self.name


def _conv_block(x, filters, name):
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    # BatchNorm makes from-scratch training robust to input scale; momentum 0.9 lets its moving
    # statistics settle within the few hundred steps a small X-ray set gives.  The fused layer is
    # Keras' BatchNormalization in TensorFlow's one-pass kernel (faster training: docs/design.md).
    x = FusedBatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return _pool_relu(x, f"{name}_pool", f"{name}_relu")


def _pool_relu(x, pool_name, relu_name):
    """ReLU then 2x2 max pooling, computed as pooling then ReLU.

    The two commute exactly (ReLU is monotone: the largest of four values, clipped at zero, is
    the largest of the four clipped values), forward and backward, so the network is the same
    function with the same gradients; ReLU and its gradient then run on a quarter of the values.
    """
    x = keras.layers.MaxPooling2D(2, name=pool_name)(x)
    return keras.layers.ReLU(name=relu_name)(x)


def small_cnn(input_shape, filters=(32, 64, 128), name="small_cnn"):
    """A VGG-like stack of conv-BN-ReLU-maxpool blocks, trained from scratch."""
    inputs = keras.Input(input_shape)
    x = inputs
    for i, f in enumerate(filters):
        x = _conv_block(x, f, name=f"block{i + 1}")
    return keras.Model(inputs, x, name=name)


def residual_cnn(input_shape, filters=(16, 32, 64), name="residual_cnn"):
    """A small residual CNN (conv-BN-ReLU pairs, each block's shortcut a 1x1 projection), trained from scratch."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(filters[0], 3, padding="same", name="stem_conv")(inputs)
    for i, f in enumerate(filters):
        shortcut = keras.layers.Conv2D(f, 1, padding="same", name=f"res{i + 1}_proj")(x)
        y = keras.layers.Conv2D(f, 3, padding="same", name=f"res{i + 1}_conv1")(x)
        y = FusedBatchNormalization(momentum=0.9, name=f"res{i + 1}_bn1")(y)
        y = keras.layers.ReLU(name=f"res{i + 1}_relu1")(y)
        y = keras.layers.Conv2D(f, 3, padding="same", name=f"res{i + 1}_conv2")(y)
        y = FusedBatchNormalization(momentum=0.9, name=f"res{i + 1}_bn2")(y)
        x = _pool_relu(keras.layers.Add(name=f"res{i + 1}_add")([shortcut, y]), f"res{i + 1}_pool", f"res{i + 1}_out")
    return keras.Model(inputs, x, name=name)


def sutd_cnn(input_shape, filters=(32, 64, 64, 128, 128), name="sutd_cnn"):
    """Five conv-BN-ReLU-maxpool blocks (the SUTD study's plain CNN); 150 px in, 4x4 map out."""
    return small_cnn(input_shape, filters=filters, name=name)


def sutd_residual(input_shape, filters=(32, 64, 128, 256), name="sutd_residual"):
    """A stem conv and four residual blocks of two 3x3 convs each (the SUTD study's residual CNN).

    The stem pools once, so the first block runs at half resolution: 150 px in, a 4x4 map out,
    about 0.35 GMAC per image.
    """
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(filters[0], 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = FusedBatchNormalization(momentum=0.9, name="stem_bn")(x)
    x = _pool_relu(x, "stem_pool", "stem_relu")
    for i, f in enumerate(filters):
        shortcut = x if x.shape[-1] == f else keras.layers.Conv2D(f, 1, use_bias=False, name=f"res{i + 1}_proj")(x)
        y = keras.layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"res{i + 1}_conv1")(x)
        y = FusedBatchNormalization(momentum=0.9, name=f"res{i + 1}_bn1")(y)
        y = keras.layers.ReLU(name=f"res{i + 1}_relu1")(y)
        y = keras.layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"res{i + 1}_conv2")(y)
        y = FusedBatchNormalization(momentum=0.9, name=f"res{i + 1}_bn2")(y)
        x = _pool_relu(keras.layers.Add(name=f"res{i + 1}_add")([shortcut, y]), f"res{i + 1}_pool", f"res{i + 1}_out")
    return keras.Model(inputs, x, name=name)


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in [
        BackboneSpec("vgg16", "VGG16", "caffe", 224, 32),
        BackboneSpec("vgg19", "VGG19", "caffe", 224, 32),
        BackboneSpec("resnet50", "ResNet50", "caffe", 224, 32),
        BackboneSpec("densenet121", "DenseNet121", "torch", 224, 32),
        BackboneSpec("inceptionv3", "InceptionV3", "tf", 299, 75),
        BackboneSpec("xception", "Xception", "tf", 299, 71),
        # Xception's entry and middle flow (blocks 1-12, 728 channels; 19x19 at 299 px): mid-level
        # ImageNet features, which transfer to X-rays better than the last block's (docs/training.md).
        BackboneSpec("xception_middle", "Xception", "tf", 299, 71, cut_after="block12_sepconv3_bn",
                     weights_name="xception"),
        BackboneSpec("mobilenetv2", "MobileNetV2", "tf", 224, 32),
        BackboneSpec("efficientnetb0", "EfficientNetB0", "none", 224, 32),
        BackboneSpec("small_cnn", small_cnn, "unit", 128, 8, pretrained=False, channels=1),
        BackboneSpec("residual_cnn", residual_cnn, "unit", 128, 8, pretrained=False, channels=1),
        BackboneSpec("sutd_cnn", sutd_cnn, "unit", 150, 32, pretrained=False, channels=1),
        BackboneSpec("sutd_residual", sutd_residual, "unit", 150, 32, pretrained=False, channels=1),
    ]
}


def get_backbone_spec(name: str) -> BackboneSpec:
    """Look a backbone up by name (case-insensitive); unknown names list the valid ones."""
    key = str(name).lower().replace("-", "").replace("_", "")
    for spec in BACKBONES.values():
        if spec.name.replace("_", "") == key:
            return spec
    raise ValueError(f"unknown backbone {name!r}; valid backbones: {', '.join(BACKBONES)}, or a keras.Model")


def backbone_spec_or_model(backbone):
    """The registry entry for a backbone name (a :class:`BackboneSpec` is its own entry), or the user's
    ``keras.Model`` itself: what an estimator resolves ``backbone`` to once and passes down."""
    if isinstance(backbone, (keras.Model, BackboneSpec)):
        return backbone
    return get_backbone_spec(backbone)


def image_size_for(spec_or_model, image_size) -> tuple:
    """``(height, width)`` the backbone runs at: ``image_size`` or the backbone's default."""
    from .inputs import check_image_size

    if image_size is None:
        if isinstance(spec_or_model, BackboneSpec):
            return (spec_or_model.default_size, spec_or_model.default_size)
        shape = spec_or_model.input_shape[1:3]
        if None in shape:
            raise ValueError("image_size is required with a keras.Model backbone whose input size is not fixed")
        return tuple(int(s) for s in shape)
    size = check_image_size(image_size)
    min_size = getattr(spec_or_model, "min_size", 1)
    if min(size) < min_size:
        raise ValueError(f"image_size {size} is below the smallest input backbone {spec_or_model.name!r} "
                         f"accepts ({min_size} px)")
    return size
