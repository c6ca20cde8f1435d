"""Intensity standardisation of X-rays: per-image histogram equalisation.

Films from another hospital, scanner or exposure differ in brightness, contrast and the shape of
their grey-level histogram.  Histogram equalisation maps each image's grey levels through its own
cumulative histogram, so every image uses the whole 0-255 range with a roughly flat histogram,
whatever its exposure: any monotonic change of the grey levels (brighter, darker, another gamma)
gives the same equalised image.

Examples
--------
>>> import numpy as np
>>> from xrayest.intensity import equalize_histogram
>>> image = np.array([[10, 10], [20, 40]], np.uint8)
>>> equalize_histogram(image).tolist()
[[0, 0], [128, 255]]
>>> bool(np.array_equal(equalize_histogram(image), equalize_histogram(image * 2 + 5)))
True
>>> ramp = np.arange(4096, dtype=np.uint16).reshape(64, 64)   # a 12-bit ramp keeps all its levels
>>> out = equalize_histogram(ramp)
>>> int(out.min()), int(out.max()), float((out == 255).mean()) < 0.01
(0, 255, True)
"""

from __future__ import annotations

import numpy as np

__all__ = ["equalize_histogram"]


def equalize_histogram(images) -> np.ndarray:
    """Each gray image of ``images`` (``(h, w)`` or ``(n, h, w[, 1])``) equalised, as a new uint8 array (0-255).

    The grey level ``v`` of an image becomes ``255 * (cdf(v) - cdf_min) / (n_pixels - cdf_min)``
    (rounded), where ``cdf`` counts the image's pixels at or below a level and ``cdf_min`` is the
    count of its darkest level.  Integer images are equalised on their own levels, whatever their bit
    depth (a 12-bit X-ray's 4,096 levels, not clipped to 8 bits first); float images are read on the
    0-255 scale.  A flat image stays flat (wide integers scaled by their bit depth, as image inputs
    are).  Colour images are refused: equalise their gray version.  An empty batch gives an empty one.
    """
    from .inputs import pixel_scale

    array = np.asarray(images)
    if array.ndim not in (2, 3, 4) or (array.ndim == 4 and array.shape[-1] != 1):
        raise ValueError(f"equalize_histogram takes gray images (h, w), (n, h, w) or (n, h, w, 1); "
                         f"got shape {array.shape}")
    if array.dtype.kind not in "iufb":
        raise ValueError(f"equalize_histogram takes numeric images; got dtype {array.dtype}")
    if array.size == 0:
        if array.ndim > 2 and len(array) == 0:
            return np.zeros(array.shape, np.uint8)
        raise ValueError(f"equalize_histogram: the images have no pixels (shape {array.shape})")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise ValueError("equalize_histogram: the images hold NaN or infinite values")
    levels = array if array.dtype.kind in "iub" else np.clip(np.rint(array), 0, 255).astype(np.uint8)
    flat = levels.reshape(1 if array.ndim == 2 else len(levels), -1)
    out = np.empty(flat.shape, np.uint8)
    for i, pixels in enumerate(flat):
        values, index, counts = np.unique(pixels, return_inverse=True, return_counts=True)
        cdf = np.cumsum(counts)
        low, total = cdf[0], cdf[-1]
        if total == low:  # one grey level only
            value = int(values[0])
            out[i] = value if 0 <= value <= 255 else int(np.clip(np.rint(value * pixel_scale(abs(value))), 0, 255))
            continue
        table = np.rint(255.0 * (cdf - low) / (total - low)).astype(np.uint8)
        out[i] = table[index.reshape(-1)]
    return out.reshape(array.shape)
