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
"""

from __future__ import annotations

import numpy as np

__all__ = ["equalize_histogram"]


def equalize_histogram(images) -> np.ndarray:
    """Each gray image of ``images`` (``(h, w)`` or ``(n, h, w[, 1])``, 0-255) equalised, as a new uint8 array.

    The grey level ``v`` of an image becomes ``255 * (cdf(v) - cdf_min) / (n_pixels - cdf_min)``
    (rounded), where ``cdf`` counts the image's pixels at or below a level and ``cdf_min`` is the
    count of its darkest level; a flat image stays as it is.  Colour images are refused: equalise
    their gray version.
    """
    array = np.asarray(images)
    if array.ndim not in (2, 3, 4) or (array.ndim == 4 and array.shape[-1] != 1):
        raise ValueError(f"equalize_histogram takes gray images (h, w), (n, h, w) or (n, h, w, 1); "
                         f"got shape {array.shape}")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise ValueError("equalize_histogram: the images hold NaN or infinite values")
    levels = np.clip(np.rint(array), 0, 255).astype(np.uint8) if array.dtype != np.uint8 else array
    flat = levels.reshape(1 if array.ndim == 2 else len(levels), -1)
    out = np.empty_like(flat)
    for i, pixels in enumerate(flat):
        cdf = np.cumsum(np.bincount(pixels, minlength=256))
        low, total = cdf[pixels.min()], cdf[-1]
        if total == low:  # one grey level only
            out[i] = pixels
            continue
        table = np.rint(255.0 * np.clip(cdf - low, 0, None) / (total - low)).astype(np.uint8)
        out[i] = table[pixels]
    return out.reshape(levels.shape)
