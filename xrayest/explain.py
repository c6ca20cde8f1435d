"""What the network looked at: feature maps and Grad-CAM heatmaps over the X-ray."""

from __future__ import annotations

import numpy as np

from .inputs import as_image_source

__all__ = ["feature_maps", "gradcam", "plot_feature_maps", "plot_gradcam"]


def _parts(clf):
    return clf.trunk_.model, clf.trunk_.backbone


def _spatial_layers(backbone):
    return [layer.name for layer in backbone.layers if len(getattr(layer, "output", np.zeros(0)).shape) == 4
            and layer.name != backbone.layers[0].name]


def _one_image(clf, image):
    source = as_image_source(np.asarray(image)[None] if not isinstance(image, (str,)) else [image])
    return source.batch(0, 1, clf.image_size_)


def feature_maps(clf, image, layer=None):
    """Activations ``(h, w, channels)`` of one backbone layer (default: its first convolution)."""
    import keras

    trunk, backbone = _parts(clf)
    names = _spatial_layers(backbone)
    layer = layer or next(n for n in names if "conv" in n.lower())
    if layer not in names:
        raise ValueError(f"layer {layer!r} is not a spatial layer of {backbone.name}; choose from {names[:8]}...")
    probe = keras.Model(backbone.input, backbone.get_layer(layer).output)
    pre = trunk.get_layer("preprocess")(_one_image(clf, image))
    return np.asarray(probe(pre))[0], layer


def gradcam(clf, image, class_index=None, layer=None):
    """Grad-CAM heatmap in [0, 1] at the layer's resolution, and the class it explains.

    The gradient of the class score with respect to the last spatial backbone layer (or
    ``layer``) weights its channels (Selvaraju et al., 2017).
    """
    import keras
    import tensorflow as tf

    trunk, backbone = _parts(clf)
    names = _spatial_layers(backbone)
    if layer is None:  # the last spatial layer that is not a pooling layer: finest "what" before pooling
        layer = [n for n in names if "pool" not in n.lower()][-1]
    multi = keras.Model(backbone.input, [backbone.get_layer(layer).output, backbone.output])
    pool = next((lyr for lyr in trunk.layers if lyr.name == "trunk_pool"), None)
    pre = trunk.get_layer("preprocess")(_one_image(clf, image))
    with tf.GradientTape() as tape:
        conv, feats = multi(pre)
        tape.watch(conv)
        out = clf.head_(pool(feats) if pool is not None else feats)
        probs = tf.concat([1 - out, out], axis=1) if out.shape[1] == 1 else out
        if class_index is None:
            class_index = int(tf.argmax(probs[0]))
        score = probs[:, class_index]
    grads = tape.gradient(score, conv)
    weights = tf.reduce_mean(grads, axis=(1, 2))
    cam = tf.nn.relu(tf.reduce_sum(conv * weights[:, None, None, :], axis=-1))[0].numpy()
    cam = cam / cam.max() if cam.max() > 0 else cam
    return cam, clf.classes_[class_index], layer


def plot_feature_maps(clf, image, layer=None, max_maps=16):
    """A grid of the first ``max_maps`` channels of one backbone layer for one image."""
    from .plotting import new_figure

    maps, layer = feature_maps(clf, image, layer)
    n = min(max_maps, maps.shape[-1])
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    fig, axes = new_figure(cols, 2.0, 2.0 * rows + 0.4)
    fig.clear()
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i < n:
            ax.imshow(maps[..., i], cmap="viridis")
            ax.set_title(f"channel {i}", fontsize=8)
    fig.suptitle(f"Feature maps of layer '{layer}'")
    return fig


def plot_gradcam(clf, image, class_index=None, layer=None, alpha=0.35, true_label=None):
    """The X-ray beside the same film with its Grad-CAM heatmap overlaid.

    The titles say the true class (``true_label``, when given), the predicted one and the class whose
    evidence the map shows; the colour scale is relative to the image's own maximum (1 = where
    the model looked most), not comparable between images.  The overlay is translucent and drawn
    only where the map is above a tenth of its maximum, so the film stays visible under it.
    """
    from PIL import Image

    from .plotting import new_figure

    cam, label, layer = gradcam(clf, image, class_index, layer)
    rgb = _one_image(clf, image)[0]
    gray = rgb.mean(axis=-1)
    h, w = gray.shape
    heat = np.asarray(Image.fromarray((cam * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)) / 255.0
    proba = clf.predict_proba(np.asarray(rgb[None], dtype=np.float32))[0]
    idx = list(clf.classes_).index(label)
    predicted = clf.classes_[int(np.argmax(proba))]
    fig, (ax_img, ax_cam) = new_figure(2, 4.2, 4.6)
    ax_img.imshow(gray, cmap="gray")
    ax_img.set_title("X-ray" + (f" (true: {true_label})" if true_label is not None else ""))
    ax_cam.imshow(gray, cmap="gray")
    overlay = ax_cam.imshow(np.ma.masked_less(heat, 0.1), cmap="jet", alpha=alpha, vmin=0, vmax=1)
    ax_cam.set_title(f"predicted: {predicted} (p={proba[int(np.argmax(proba))]:.2f})\n"
                     f"Grad-CAM evidence for {label} (p={proba[idx]:.2f})", fontsize=9)
    fig.colorbar(overlay, ax=ax_cam, shrink=0.8, label="relative to this image's maximum")
    for ax in (ax_img, ax_cam):
        ax.axis("off")
    fig.suptitle(f"What the model looked at (layer '{layer}')")
    return fig
