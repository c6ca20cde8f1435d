"""The lung fields of a chest X-ray, found by image processing: a crop that drops the film's borders.

Films of one hospital are framed differently from class to class and from site to site: some show
the neck, the shoulders and the arms, others only the chest, and markers and text sit at the edges.
A network trained on whole films can learn the framing instead of the lungs.  :func:`lung_box` finds
the lung fields without any trained model (no segmentation weights are needed): the film is
smoothed at a working size of 128 px, the pixels darker than its Otsu threshold are split into
connected regions after a morphological opening, the regions that touch the film's edge (the air
around the body) are dropped, and the two largest of the rest inside the chest area are the lungs.
Their bounding box, widened by ``margin`` of its size on each side, is the crop.  A film in which
no such pair of regions is found (an unusual exposure, a lateral view) keeps its central 80%.

:func:`crop_to_lungs` crops a batch and resizes each crop back to the film's own size, so every
film shows its lungs at the same scale; ``XrayCNNClassifier(crop="lungs")`` does it to every image
it trains on or predicts (the crop is part of the model, and of the cached features' keys).

Examples
--------
>>> import numpy as np
>>> from xrayest.lungs import crop_to_lungs, lung_box
>>> film = np.full((150, 150), 200, np.uint8)          # the body: bright
>>> film[:, :15] = film[:, -15:] = 5                     # air at both sides
>>> film[30:110, 30:68] = film[30:110, 82:120] = 70      # two dark lung fields
>>> top, bottom, left, right = lung_box(film)
>>> 20 <= top < 30 and 110 < bottom <= 120 and 20 <= left < 30 and 120 < right <= 130
True
>>> crop_to_lungs(film[None]).shape
(1, 150, 150)
"""

from __future__ import annotations

import hashlib

import numpy as np

from .inputs import ArrayImages, ImageSource, PathImages, read_image, to_rgb

__all__ = ["CROPS", "LungCroppedImages", "crop_source", "crop_to_lungs", "lung_box"]

CROPS = ("lungs",)  # the named crops of XrayCNNClassifier(crop=...)

_WORK = 128  # the working size at which the lung fields are found
_FALLBACK = 0.8  # the central fraction of each side kept where no lung fields are found


def lung_box(image, margin: float = 0.05) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` of the lung fields of one gray film (rows and columns, end excluded).

    ``image`` is ``(h, w)`` or ``(h, w, 1)``, any numeric dtype; the box is in its own pixels.  Where a
    lung field is found on one side only, it is mirrored about the film's middle; where none is, the box
    is the whole film.
    """
    from PIL import Image
    from scipy import ndimage

    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2 or min(array.shape) < 8:
        raise ValueError(f"lung_box takes one gray image (h, w) of at least 8x8 pixels; got shape {array.shape}")
    h, w = array.shape
    gray = array.astype(np.float32)
    low, high = float(gray.min()), float(gray.max())
    if not np.isfinite(low + high) or high - low < 1e-6:
        return 0, h, 0, w
    n = _WORK
    gray = (gray - low) * (255.0 / (high - low))
    small = np.asarray(Image.fromarray(gray).resize((n, n), Image.BILINEAR), np.float32)
    small = ndimage.gaussian_filter(small, 1.5)
    a, b = int(0.15 * n), int(0.85 * n)
    threshold = _otsu(small[a:b, a:b])  # the chest's threshold, not the air's around it
    dark = small < threshold
    # the air around the body: darker still (the dark pixels' own threshold), and reaching the film's edge
    air, _ = ndimage.label(small < _otsu(small[dark]))
    edge = np.unique(np.concatenate([air[0], air[-1], air[:, 0], air[:, -1]]))
    air = ndimage.binary_dilation(np.isin(air, edge[edge > 0]), iterations=2)
    dark &= ~air
    band = int(0.03 * n)
    dark[:band], dark[-band:], dark[:, :band], dark[:, -band:] = False, False, False, False
    dark = ndimage.binary_opening(dark, structure=np.ones((3, 3), bool), iterations=2)
    labels, count = ndimage.label(dark)
    sides = {}
    if count:
        index = np.arange(1, count + 1)
        areas = ndimage.sum_labels(dark, labels, index=index)
        centres = ndimage.center_of_mass(dark, labels, index=index)
        for k, area, (cy, cx) in zip(index, areas, centres):
            if area < 0.01 * n * n or not (0.12 * n < cx < 0.88 * n and 0.1 * n < cy < 0.8 * n):
                continue  # too small, or air beside or below the chest
            side = "left" if cx < n / 2 else "right"
            if area > sides.get(side, (0, 0))[0]:
                sides[side] = (area, k)
    if not sides:
        return 0, h, 0, w
    rows, cols = np.nonzero(np.isin(labels, [k for _, k in sides.values()]))
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    if len(sides) == 1:  # one field found: the other mirrored about the middle
        left, right = min(left, n - right), max(right, n - left)
    top, bottom = _at_least(top, bottom, 0.4 * n, n)
    left, right = _at_least(left, right, 0.5 * n, n)
    dy, dx = margin * (bottom - top), margin * (right - left)
    scale_y, scale_x = h / n, w / n
    return (max(0, int(np.floor((top - dy) * scale_y))), min(h, int(np.ceil((bottom + dy) * scale_y))),
            max(0, int(np.floor((left - dx) * scale_x))), min(w, int(np.ceil((right + dx) * scale_x))))


def _at_least(low: int, high: int, size: float, n: int) -> tuple[int, int]:
    """``(low, high)`` widened about its centre to at least ``size``, within ``[0, n]``."""
    if high - low >= size:
        return low, high
    centre = (low + high) / 2
    low = int(max(0, min(n - size, centre - size / 2)))
    return low, int(min(n, low + size))


def crop_to_lungs(images, margin: float = 0.05) -> np.ndarray:
    """Each gray film of ``images`` (``(n, h, w)`` or ``(n, h, w, 1)``) cut to
    :func:`~xrayest.lungs.lung_box` and resized back to ``(h, w)`` (bilinear), as a new array
    of the same shape and dtype."""
    from PIL import Image

    array = np.asarray(images)
    if array.ndim not in (3, 4) or (array.ndim == 4 and array.shape[-1] != 1):
        raise ValueError(f"crop_to_lungs takes gray images (n, h, w) or (n, h, w, 1); got shape {array.shape}")
    if array.dtype.kind not in "iuf":
        raise ValueError(f"crop_to_lungs takes numeric images; got dtype {array.dtype}")
    out = np.empty_like(array)
    h, w = array.shape[1:3]
    for i, image in enumerate(array):
        film = image[..., 0] if array.ndim == 4 else image
        top, bottom, left, right = lung_box(film, margin)
        part = Image.fromarray(np.ascontiguousarray(film[top:bottom, left:right]).astype(np.float32))
        resized = np.asarray(part.resize((w, h), Image.BILINEAR), np.float32)
        if array.dtype.kind in "iu":
            info = np.iinfo(array.dtype)
            resized = np.clip(np.rint(resized), info.min, info.max)
        out[i] = resized.astype(array.dtype).reshape(out[i].shape)
    return out


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold of ``values`` (0-255 floats): the level that best splits them into two classes."""
    hist, edges = np.histogram(values, bins=256, range=(0.0, 255.0))
    hist = hist.astype(np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    below = np.cumsum(hist)[:-1]
    above = hist.sum() - below
    sums = np.cumsum(hist * centres)[:-1]
    total = float((hist * centres).sum())
    valid = (below > 0) & (above > 0)
    between = np.zeros_like(below)
    between[valid] = below[valid] * above[valid] * (
        sums[valid] / below[valid] - (total - sums[valid]) / above[valid]) ** 2
    return float(edges[1:-1][np.argmax(between)])


class LungCroppedImages(ImageSource):
    """The images of another :class:`~xrayest.inputs.ImageSource`, each cut to its lung fields
    (:func:`~xrayest.lungs.lung_box` on the image at its own resolution) and resized to the size asked for.

    Its keys are the source's keys marked as cropped, so cached features of a cropped image never
    stand for the whole film's.
    """

    def __init__(self, source: ImageSource, margin: float = 0.05):
        if not isinstance(source, (ArrayImages, PathImages)):
            raise ValueError(f"crop='lungs' needs images (arrays or files); got {source.kind} rows, whose "
                             "features were computed from whole films")
        if isinstance(source, ArrayImages) and source.tabular:
            raise ValueError("crop='lungs' needs images (n, h, w[, c]); got 2-D rows of numbers")
        self.source, self.margin = source, margin
        self.kind = source.kind

    def __len__(self):
        return len(self.source)

    def _native(self, i: int) -> np.ndarray:
        if isinstance(self.source, PathImages):
            return read_image(self.source.paths[i])
        return to_rgb(self.source.array[i:i + 1])[0]

    def batch(self, start, stop, size=None):
        from PIL import Image

        if start >= min(stop, len(self)):  # nothing to crop: the source's own empty batch
            return self.source.batch(start, stop, size)
        images = []
        for i in range(start, min(stop, len(self))):
            image = self._native(i)
            top, bottom, left, right = lung_box(image.mean(-1), self.margin)
            part = image[top:bottom, left:right]
            height, width = (image.shape[:2] if size is None else (int(size[0]), int(size[1])))
            images.append(np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(part[..., c]), mode="F")
                                               .resize((width, height), Image.BILINEAR)) for c in range(3)], -1))
        if len({im.shape for im in images}) > 1:
            raise ValueError("image files need a target size to be stacked into a batch")
        return np.stack(images).astype(np.float32)

    def keys(self, size=None):
        mark = f"|lungs:{self.margin}".encode()
        return [hashlib.blake2b(key.encode() + mark, digest_size=16).hexdigest() for key in self.source.keys(size)]

    def subset(self, indices):
        return LungCroppedImages(self.source.subset(indices), self.margin)


def crop_source(source: ImageSource, crop) -> ImageSource:
    """``source`` itself (``crop=None``), or its images cut to the lung fields (``crop="lungs"``)."""
    if crop is None:
        return source
    if crop == "lungs":
        return source if isinstance(source, LungCroppedImages) else LungCroppedImages(source)
    raise ValueError(f"crop must be one of {CROPS} or None; got {crop!r}")
