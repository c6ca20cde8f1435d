"""What xrayest accepts as X, validated and turned into float RGB batches.

Accepted forms (never modified in place; every batch handed on is a fresh array):

* ``(n, h, w)`` grayscale images, or ``(n, h, w, c)`` with ``c`` in 1 (grayscale),
  3 (RGB) or 4 (RGBA: alpha dropped); any numeric dtype.  How pixel values are scaled
  to xrayest's 0-255 scale (see :func:`pixel_scale`):

  - ``uint8``/``int8``/``bool``: as they are;
  - wider integers (``uint16``, ``int32``...), per image, by the bit depth its brightest
    pixel needs, rounded up to 8, 10, 12, 14 or 16 bits: a 12-bit X-ray holding 0..4095
    becomes 0..255 whatever its container.  Negative values and values above 16 bits
    are errors;
  - floats: taken to be on the 0-255 scale; values outside [0, 255] are an error, and
    floats that all lie in [0, 1] give a warning (probably images scaled to [0, 1]).
* a 1-D sequence of image file paths (JPEG/PNG/BMP/TIFF...), read in batches; 16-bit
  PNG/TIFF files are scaled by the same bit-depth rule.
* ``(n, p)`` rows: each row is read as a 1-pixel-high grayscale strip.  This exists so that
  tabular tools (scikit-learn's own estimator checks) can drive the estimators; images
  should be passed with their height and width.  A fitted model that was trained on
  images refuses 2-D X (one image, not a batch: pass ``X[None]``), and a 3-D array whose
  last axis is 1, 3 or 4 is always refused as ambiguous (one ``(h, w, c)`` image?).

Arrays are resized one image at a time to the model's input size, so the memory of a
prediction is set by the batch, not by the size of the caller's images.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
from sklearn.utils import check_array

__all__ = ["ImageSource", "ArrayImages", "PathImages", "as_image_source", "read_image", "to_rgb", "take_rows",
           "check_image_size", "check_n_features"]


BIT_DEPTHS = (8, 10, 12, 14, 16)


def pixel_scale(peak) -> float:
    """The factor taking integer pixels whose brightest value is ``peak`` to the 0-255 scale.

    The bit depth is the smallest of 8, 10, 12, 14 and 16 bits that holds ``peak``: 255 (or
    less) -> 1.0, 1023 -> 255/1023, 4095 -> 255/4095, 65535 -> 255/65535.  A 12-bit image whose
    brightest pixel is below 256 is therefore read as 8-bit (no real X-ray is that dark).

    >>> pixel_scale(200), round(pixel_scale(4095) * 4095, 6), round(pixel_scale(4096) * 16383, 6)
    (1.0, 255.0, 255.0)
    """
    peak = float(peak)
    for bits in BIT_DEPTHS:
        if peak <= 2**bits - 1:
            return 1.0 if bits == 8 else 255.0 / (2**bits - 1)
    raise ValueError(f"pixel values up to {peak:g} need more than 16 bits; X-ray pixels are 8 to 16 bit")


def _is_wide_int(dtype) -> bool:
    return dtype.kind in "iu" and dtype.itemsize > 1


def to_float(images: np.ndarray) -> np.ndarray:
    """A new float32 array of ``images`` ``(..., h, w, c)`` on the 0-255 scale, alpha dropped, channels kept."""
    out = (images[..., :3] if images.shape[-1] == 4 else images).astype(np.float32, copy=True)
    if _is_wide_int(images.dtype) and images.ndim >= 3 and images.size:
        flat = images.reshape(-1, *images.shape[-3:]) if images.ndim > 3 else images[None]
        scales = np.array([pixel_scale(img.max()) for img in flat], np.float32)
        out.reshape(-1, *out.shape[-3:])[...] *= scales[:, None, None, None]
    return out


def to_rgb(images: np.ndarray) -> np.ndarray:
    """Return a new float32 ``(..., h, w, 3)`` array on the 0-255 scale (wide integers scaled per image)."""
    out = to_float(images)
    return np.repeat(out, 3, axis=-1) if out.shape[-1] == 1 else out


def read_image(path, size=None) -> np.ndarray:
    """Read one image file as float32 ``(h, w, 3)`` RGB on the 0-255 scale.

    EXIF orientation is applied; modes L, RGB, RGBA, P, I;16 and I are handled.  DICOM files
    (``.dcm``, or the DICOM preamble) are read by :func:`xrayest.dicom.read_dicom`.
    ``size=(height, width)`` resizes with bilinear filtering.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    from .dicom import is_dicom, read_dicom

    if is_dicom(path):
        gray = Image.fromarray(read_dicom(path), mode="F")  # float: a 12-bit X-ray keeps its grey levels here
        if size is not None:
            gray = gray.resize((int(size[1]), int(size[0])), Image.BILINEAR)
        return np.repeat(np.asarray(gray, dtype=np.float32)[..., None], 3, axis=-1)
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                arr = np.asarray(img, dtype=np.float32)
                if arr.size and (arr.min() < 0 or not np.isfinite(arr).all()):
                    raise ValueError(f"pixel values must be finite and non-negative; found {arr.min():g}")
                scale = pixel_scale(arr.max()) if arr.size else 1.0  # 16-bit files holding 12-bit X-rays: by bit depth
                img = Image.fromarray(np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8), mode="L")
            img = img.convert("RGB")
            if size is not None:
                img = img.resize((int(size[1]), int(size[0])), Image.BILINEAR)
            return np.asarray(img, dtype=np.float32).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot read image file {os.fspath(path)}: {exc}") from exc


class ImageSource:
    """A validated X: ``len()``, ``batch(start, stop, size)`` and per-image content ``keys()``."""

    kind = "abstract"

    def __len__(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def batch(self, start: int, stop: int, size=None) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def keys(self, size=None) -> list[str]:  # pragma: no cover
        raise NotImplementedError

    def all(self, size=None) -> np.ndarray:
        return self.batch(0, len(self), size)

    def subset(self, indices) -> "ImageSource":  # pragma: no cover
        raise NotImplementedError

    def __getitem__(self, key) -> "ImageSource":
        # Row selection (``source[mask, ...]`` or ``source[indices]``), as numpy does for X.
        if isinstance(key, tuple):
            key = key[0]
        return self.subset(np.arange(len(self))[key])


class ArrayImages(ImageSource):
    """Images held in a numeric array of shape ``(n, h, w, c)`` (a read-only view of the caller's)."""

    kind = "array"

    def __init__(self, array: np.ndarray, tabular: bool = False):
        self.array = array
        self.tabular = tabular  # built from 2-D (n, p) rows; p is then "n_features"

    def __len__(self):
        return self.array.shape[0]

    @property
    def image_shape(self):
        return self.array.shape[1:]

    def batch(self, start, stop, size=None):
        images = self.array[start:stop]
        if size is None or self.tabular or tuple(images.shape[1:3]) == (int(size[0]), int(size[1])):
            return to_rgb(images)
        # one image at a time to the model's size (the resize the model itself would do, so the same
        # result): memory is set by the batch, not by the size of the caller's images
        import keras

        size = (int(size[0]), int(size[1]))
        out = np.empty((len(images), *size, 3), np.float32)
        for i in range(len(images)):
            small = np.asarray(keras.ops.image.resize(to_float(images[i:i + 1]), size, interpolation="bilinear"))
            out[i] = small[0]  # broadcasts one gray channel to three
        return out

    def keys(self, size=None):
        prefix = f"{self.array.dtype.str}{self.array.shape[1:]}".encode()
        return [hashlib.blake2b(prefix + np.ascontiguousarray(img).tobytes(), digest_size=16).hexdigest()
                for img in self.array]

    def subset(self, indices):
        return ArrayImages(self.array[indices], self.tabular)


class PathImages(ImageSource):
    """Image files, read (and resized to the model's input size) one batch at a time."""

    kind = "paths"

    def __init__(self, paths):
        self.paths = [Path(p) for p in paths]

    def __len__(self):
        return len(self.paths)

    def batch(self, start, stop, size=None):
        if size is None:
            raise ValueError("image files need a target size to be stacked into a batch")
        paths = self.paths[start:stop]
        if not paths:
            return np.zeros((0, int(size[0]), int(size[1]), 3), np.float32)
        return np.stack([read_image(p, size) for p in paths])

    def keys(self, size=None):
        out = []
        for p in self.paths:
            try:
                data = p.read_bytes()
            except OSError as exc:
                raise ValueError(f"cannot read image file {p}: {exc}") from exc
            out.append(hashlib.blake2b(data + f"@{size}".encode(), digest_size=16).hexdigest())
        return out

    def subset(self, indices):
        return PathImages(np.asarray(self.paths, dtype=object)[indices])


def _is_one_column(X) -> bool:
    """Whether X is a pandas Series, or a DataFrame of one column (of paths or images), read by position."""
    kind = type(X).__name__
    module = type(X).__module__ or ""
    if not module.startswith("pandas"):
        return False
    if kind == "Series":
        return True
    # one column of paths or images (object or string dtype); numeric columns are tabular rows
    return kind == "DataFrame" and X.shape[1] == 1 and getattr(X.dtypes.iloc[0], "kind", "O") not in "iufcb"


def _is_path_list(X) -> bool:
    if isinstance(X, (str, os.PathLike)):
        return False
    if isinstance(X, np.ndarray):
        return (X.ndim == 1 and X.dtype.kind in "USO" and len(X) > 0
                and all(isinstance(v, (str, os.PathLike)) for v in X))
    if isinstance(X, (list, tuple)):
        return len(X) > 0 and all(isinstance(v, (str, os.PathLike)) for v in X)
    return False


def _row_adapter(X):
    """``type(row).image_source`` when every element of a 1-D list/object array is a row type that provides one.

    Lets other modules (the feature store) offer their rows as estimator input without this module
    importing them.
    """
    object_vector = isinstance(X, np.ndarray) and X.ndim == 1 and X.dtype == object
    if not isinstance(X, (list, tuple)) and not object_vector:
        return None
    if len(X) == 0:
        return None
    kinds = {type(x) for x in X}
    if len(kinds) != 1:
        return None
    return getattr(kinds.pop(), "image_source", None)


PREDICT_CHUNK_BATCHES = 8  # images are read (and run) this many batches at a time: bounded memory


def chunk_size(batch_size: int) -> int:
    """How many rows inference reads at a time: :data:`PREDICT_CHUNK_BATCHES` batches."""
    return PREDICT_CHUNK_BATCHES * int(batch_size)


def as_image_source(X, *, warn_unit_range: bool = False) -> ImageSource:
    """Validate X (see module docstring) and wrap it as an :class:`ImageSource`.

    Raises
    ------
    ValueError
        Naming the problem: wrong number of dimensions, channels, empty input, NaN/inf...
    """
    if isinstance(X, ImageSource):
        return X
    if isinstance(X, (str, os.PathLike)):
        raise ValueError(f"X must be a collection of images or image paths, not a single path ({X!r}); "
                         "wrap it in a list")
    if isinstance(X, (bytes, bytearray, memoryview)):
        raise ValueError(f"X is {type(X).__name__} ({len(X)} bytes); pass decoded image arrays or a list of image "
                         "file paths")
    if _is_one_column(X):  # a pandas Series / one-column DataFrame: its values by position, never its index
        X = list(np.asarray(X).reshape(-1))
    elif isinstance(X, np.ndarray) and X.ndim == 1 and X.dtype == object and len(X) and all(
            isinstance(v, np.ndarray) for v in X):  # np.array(list_of_images, dtype=object): the list it holds
        X = list(X)
    if _is_path_list(X):
        return PathImages(list(X))
    adapter = _row_adapter(X)
    if adapter is not None:  # rows of a feature store (xrayest.feature_store.StoreRow), or similar
        return adapter(list(X))
    if isinstance(X, (list, tuple)):
        if len(X) == 0:
            raise ValueError("X is empty (0 images); pass at least one image")
        shapes = {np.shape(x) for x in X}
        if len(shapes) > 1:
            listed = ", ".join(map(str, sorted(shapes)[:3])) + (", ..." if len(shapes) > 3 else "")
            raise ValueError(f"X is a list of {len(X)} images of different shapes ({listed}); resize them to one "
                             "shape, or pass image file paths")
        kinds = {type(x).__name__ for x in X if isinstance(x, (str, bytes, os.PathLike))}
        if kinds:
            raise ValueError(f"X mixes image paths with other values ({', '.join(sorted(kinds))} and arrays or "
                             "numbers); pass only paths or only arrays")
    try:
        shape = np.asarray(X).shape
    except (TypeError, ValueError) as exc:
        raise ValueError(f"X cannot be read as an array of images ({type(X).__name__}: {exc})") from exc
    if len(shape) >= 1 and shape[0] == 0:
        raise ValueError(f"X is empty (0 images, shape {shape}); pass at least one image")
    if len(shape) == 2 and shape[1] == 0:
        raise ValueError(f"X holds empty rows: 0 feature(s) (shape={shape}) while a minimum of 1 is required.")
    if len(shape) >= 3 and 0 in shape[1:]:
        raise ValueError(f"X holds images of zero height, width or channels (shape {shape})")
    if len(shape) == 1:
        raise ValueError(f"X is 1-D (shape {shape}), neither images nor image paths. Reshape your data: images are "
                         "(n, h, w[, c]) arrays or a list of image file paths")
    if len(shape) == 3 and shape[-1] in (1, 3, 4):
        raise ValueError(
            f"X has shape {shape}, which reads as ONE image (height, width, channels), not a batch; pass X[None] "
            f"(shape {(1, *shape)}) or [X] for a single image, and (n, h, w) or (n, h, w, c) for n images"
        )
    array = check_array(X, allow_nd=True, dtype="numeric", ensure_2d=True, ensure_min_features=1,
                        input_name="X", copy=False)
    image_like = array.ndim >= 3
    if array.ndim == 2:  # tabular rows -> (n, 1, p, 1) strips; a view, nothing copied
        array = array.reshape(array.shape[0], 1, array.shape[1], 1)
    elif array.ndim == 3:
        array = array[..., np.newaxis]
    elif array.ndim != 4:
        raise ValueError(f"X must be images of shape (n, h, w) or (n, h, w, c); got an array of shape {array.shape}")
    if array.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"X has {array.shape[-1]} channels (shape {array.shape}); images need 1 (grayscale), 3 (RGB) or 4 (RGBA) "
            "channels, channels last"
        )
    if array.size:
        _check_pixel_range(array, image_like)
    if (warn_unit_range and image_like and array.dtype.kind == "f" and array.size
            and float(np.max(array)) <= 1.0 and float(np.min(array)) >= 0.0):
        warnings.warn(
            "X holds floats in [0, 1]; xrayest reads pixel values on the 0-255 scale. "
            "Multiply by 255 if these are images scaled to [0, 1].",
            UserWarning,
            stacklevel=3,
        )
    return ArrayImages(array, tabular=not image_like)


def _check_pixel_range(array: np.ndarray, image_like: bool = True) -> None:
    """Pixel values xrayest can put on its 0-255 scale (see the module docstring), or an error naming the image.

    Tabular rows (``image_like=False``, scikit-learn's checks) may hold any finite values, except wide
    integers beyond 16 bits (they are scaled by bit depth like images).
    """
    if array.dtype.kind == "b" or array.dtype == np.uint8 or (not image_like and not _is_wide_int(array.dtype)):
        return
    flat = array.reshape(len(array), -1)
    low, high = flat.min(axis=1), flat.max(axis=1)
    bad = np.flatnonzero(low < 0) if image_like else []
    if len(bad):
        raise ValueError(f"X image {bad[0]} has negative pixel values (min {low[bad[0]]:g}); {len(bad)} image(s) do. "
                         "Pixels must be on the 0-255 scale (floats) or non-negative integers of 8-16 bits")
    if array.dtype.kind == "f":
        bad = np.flatnonzero(high > 255)
        if len(bad):
            raise ValueError(f"X image {bad[0]} has float pixel values up to {high[bad[0]]:g}; floats are read on the "
                             "0-255 scale. Pass 12/16-bit images as integer arrays (uint16: scaled by their bit depth) "
                             "or rescale them to 0-255")
    else:
        bad = np.flatnonzero(high > 65535)
        if len(bad):
            raise ValueError(f"X image {bad[0]} has pixel values up to {high[bad[0]]:g}: more than 16 bits")


def check_image_size(image_size) -> tuple:
    """``image_size`` as ``(height, width)`` of positive ints (an int means a square), or an error naming it."""
    size = (image_size, image_size) if np.isscalar(image_size) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in size):
        raise ValueError(f"image_size must be a positive int or (height, width) of positive ints; got {image_size!r}")
    return tuple(int(s) for s in size)


def check_n_features(estimator, source: ImageSource, reset: bool) -> None:
    """scikit-learn's ``n_features_in_`` contract for 2-D ``(n, p)`` input rows.

    Images have no "number of features"; rows (as scikit-learn's estimator checks send)
    do.  ``reset=True`` (in ``fit``) records ``p``, or forgets an earlier one when X is
    images; ``reset=False`` raises if rows of another width arrive.
    """
    tabular = getattr(source, "tabular", False)
    n_features = source.image_shape[1] if tabular else None
    if reset:
        if tabular:
            estimator.n_features_in_ = n_features
        else:
            estimator.__dict__.pop("n_features_in_", None)
        return
    expected = getattr(estimator, "n_features_in_", None)
    if tabular and expected is None:
        raise ValueError(
            f"{type(estimator).__name__} was fitted on images, and a 2-D X reads as ONE grayscale image, not a batch; "
            "pass X[None] (shape (1, h, w)) or [X] for a single image, and (n, h, w[, c]) for n images")
    if tabular and expected is not None and n_features != expected:
        raise ValueError(f"X has {n_features} features, but {type(estimator).__name__} "
                         f"is expecting {expected} features as input")


def n_rows(X) -> int:
    """How many images X holds (its first dimension, or its length), without reading any."""
    return X.shape[0] if hasattr(X, "shape") else len(X)


def take_rows(X, rows):
    """The images of X at positions ``rows``: an array indexed, or a list of the paths (X is not copied
    otherwise).  A pandas Series or DataFrame is taken by position, never by its index (scikit-learn's rule)."""
    rows = np.asarray(rows, dtype=np.intp)
    if isinstance(X, ImageSource):
        return X.subset(rows)
    if hasattr(X, "iloc"):
        return X.iloc[rows]
    if isinstance(X, np.ndarray):
        return X[rows]
    return [X[int(i)] for i in rows]
