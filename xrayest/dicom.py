"""DICOM X-rays in: one grayscale image per file, displayed the way radiology viewers show it.

Needs the ``[dicom]`` extra (``pip install "xrayest[dicom]"``): ``pydicom`` reads the file and
applies the look-up tables; ``pylibjpeg`` with its ``libjpeg`` and ``openjpeg`` plugins decodes
JPEG-lossless, JPEG-LS and JPEG 2000 compressed pixel data.

:func:`read_dicom` follows the DICOM grayscale pipeline (PS3.3 C.11): the Modality LUT (Rescale
Slope/Intercept, or the Modality LUT Sequence), then the VOI LUT (the first Window Center/Width, or
the VOI LUT Sequence) when the file has one, mapped onto 0-255 from the full output range those
steps can give (the real bit depth, ``BitsStored``, not the 16 bits a container holds);
MONOCHROME1 (white is zero) is inverted so bone is bright.  Files without pixel data (reports,
presentation states), multi-frame files and colour files are refused naming the file.  Any path
ending ``.dcm``/``.dicom``, or whose bytes start with the ``DICM`` preamble, is read this way
wherever xrayest takes image paths.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

__all__ = ["DICOM_SUFFIXES", "is_dicom", "read_dicom"]

DICOM_SUFFIXES = (".dcm", ".dicom")


def is_dicom(path) -> bool:
    """True for a ``.dcm``/``.dicom`` path, or a file with the DICOM preamble (``DICM`` at byte 128)."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _pydicom():
    try:
        import pydicom
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError('reading DICOM files needs pydicom: pip install "xrayest[dicom]"') from exc
    return pydicom


def _lut_bits(item) -> int:
    """Output bits of a LUT item: the third value of its LUT Descriptor."""
    return int(item.LUTDescriptor[2])


def _output_range(ds, voi_lut_used: bool) -> tuple[float, float]:
    """The range the Modality (and VOI) LUT steps can give for this file, as pydicom maps windows onto it."""
    if voi_lut_used:
        return 0.0, float(2 ** _lut_bits(ds.VOILUTSequence[0]) - 1)
    if ds.get("ModalityLUTSequence"):
        return 0.0, float(2 ** _lut_bits(ds.ModalityLUTSequence[0]) - 1)
    bits = int(ds.BitsStored)
    low, high = (0, 2**bits - 1) if int(ds.PixelRepresentation) == 0 else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        low, high = low * float(slope) + float(intercept), high * float(slope) + float(intercept)
    return float(min(low, high)), float(max(low, high))


def read_dicom(path) -> np.ndarray:
    """One DICOM image as float32 ``(h, w)`` on the 0-255 scale, as a viewer displays it.

    Parameters
    ----------
    path : path-like

    Returns
    -------
    ndarray of float32, shape (rows, columns)

    Raises
    ------
    ValueError
        Naming the file: not DICOM, no pixel data, several frames, not grayscale, or pixel data that
        cannot be decoded (a compressed transfer syntax whose decoder is not installed).

    Examples
    --------
    >>> from pydicom.data import get_testdata_file
    >>> image = read_dicom(get_testdata_file("CT_small.dcm"))
    >>> image.shape, image.dtype, bool(0 <= image.min() <= image.max() <= 255)
    ((128, 128), dtype('float32'), True)
    """
    pydicom = _pydicom()
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    name = os.fspath(path)
    try:
        ds = pydicom.dcmread(name)
    except (pydicom.errors.InvalidDicomError, OSError, EOFError, ValueError) as exc:
        raise ValueError(f"cannot read DICOM file {name}: {exc}") from exc
    if "PixelData" not in ds and "Rows" in ds and "Columns" in ds:
        raise ValueError(f"DICOM file {name} describes a {ds.Rows}x{ds.Columns} image but holds no pixel data: "
                         "the file is probably cut short (copy it again)")
    if "PixelData" not in ds:
        kind = ds.get("SOPClassUID")
        kind = getattr(kind, "name", None) or str(kind or "unknown SOP class")
        raise ValueError(f"DICOM file {name} holds no image (no Pixel Data; it is a {kind})")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise ValueError(f"DICOM file {name} has {frames} frames; xrayest reads single-frame X-rays (one image a file)")
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"DICOM file {name} is {photometric or 'of unknown photometric interpretation'}; "
                         "X-rays are grayscale (MONOCHROME1 or MONOCHROME2)")
    try:
        with warnings.catch_warnings():  # pydicom warns of excess bytes, then returns them as frames: refused below
            warnings.filterwarnings("ignore", message=".*sufficient to contain", category=UserWarning)
            stored = ds.pixel_array
    except Exception as exc:  # pydicom raises RuntimeError/NotImplementedError/ValueError by decoder
        syntax = ds.file_meta.get("TransferSyntaxUID", "?")
        hint = ('; compressed files need pip install "xrayest[dicom]"' if getattr(syntax, "is_compressed", False)
                else "")
        raise ValueError(f"cannot decode the pixel data of DICOM file {name} (transfer syntax {syntax}): "
                         f"{exc}{hint}") from exc
    if stored.shape != (ds.Rows, ds.Columns):
        length = len(ds.PixelData) if "PixelData" in ds else "?"
        raise ValueError(f"DICOM file {name} describes a {ds.Rows}x{ds.Columns} image but its pixel data "
                         f"({length} bytes) hold {stored.size // max(ds.Rows * ds.Columns, 1)} such images: Rows, "
                         "Columns or the pixel data are wrong")
    voi_lut_used = bool(ds.get("VOILUTSequence"))
    has_window = "WindowCenter" in ds and "WindowWidth" in ds
    if has_window and not voi_lut_used:
        widths = ds.WindowWidth if isinstance(ds.WindowWidth, pydicom.multival.MultiValue) else [ds.WindowWidth]
        if float(widths[0]) < 1:
            raise ValueError(f"DICOM file {name} has Window Width {widths[0]}; the standard requires at least 1")
    try:
        values = apply_modality_lut(stored, ds)
        if voi_lut_used or has_window:
            values = apply_voi_lut(values, ds, index=0, prefer_lut=True)
        low, high = _output_range(ds, voi_lut_used)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise ValueError(f"DICOM file {name}: its Modality/VOI LUT or window cannot be applied: {exc}") from exc
    image = (np.asarray(values, np.float64) - low) * (255.0 / max(high - low, 1e-12))
    image = np.clip(image, 0.0, 255.0)
    if photometric == "MONOCHROME1":  # white is zero in MONOCHROME1
        image = 255.0 - image
    return image.astype(np.float32)
