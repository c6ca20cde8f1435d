"""Data in: image folders on disk, and synthetic chest-X-ray-like images for offline demos."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .inputs import check_image_size, read_image

__all__ = ["make_synthetic_xrays", "make_synthetic_findings", "load_image_folder", "find_duplicates",
           "IMAGE_SUFFIXES", "list_images", "SYNTHETIC_CLASSES", "SYNTHETIC_FINDINGS"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".dcm", ".dicom")
SYNTHETIC_CLASSES = ("normal", "pneumonia", "covid")


def _blob(yy, xx, cy, cx, ry, rx):
    return np.exp(-(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2))


def _one_xray(rng, size, label, findings=()):
    yy, xx = np.mgrid[0:size, 0:size] / size
    # Soft tissue: a bright torso fading to the dark background at the edges.
    img = 0.55 * _blob(yy, xx, 0.55, 0.5, 0.65, 0.48) ** 0.5
    # Lungs: two dark ellipses, slightly different per patient.
    lungs = []
    for side in (-1, 1):
        cx = 0.5 + side * rng.uniform(0.17, 0.21)
        lung = _blob(yy, xx, rng.uniform(0.48, 0.53), cx, rng.uniform(0.26, 0.3), rng.uniform(0.12, 0.15))
        lungs.append((cx, lung))
        img -= 0.4 * np.clip(lung * 1.6, 0, 1)
    # Ribs: bright curved bands across the lungs; spine and heart shadow.
    rib_phase = rng.uniform(0, 2 * np.pi)
    ribs = 0.5 + 0.5 * np.sin(2 * np.pi * (yy * 9 + 2.2 * (xx - 0.5) ** 2) + rib_phase)
    img += 0.12 * ribs ** 6 * sum(np.clip(lung * 1.6, 0, 1) for _, lung in lungs)
    img += 0.3 * np.exp(-((xx - 0.5) / 0.045) ** 2) * (yy > 0.12)
    img += 0.22 * _blob(yy, xx, 0.62, 0.55, 0.14, 0.11)
    # Pathology with real signal.
    if label == "pneumonia":  # one or two dense lobar consolidations, usually one-sided
        cx, _ = lungs[rng.integers(2)]
        for _ in range(rng.integers(1, 3)):
            img += rng.uniform(0.28, 0.4) * _blob(yy, xx, rng.uniform(0.45, 0.68), cx + rng.uniform(-0.04, 0.04),
                                                  rng.uniform(0.07, 0.11), rng.uniform(0.06, 0.09))
    elif label == "covid":  # bilateral, peripheral, lower-zone ground-glass haze
        for cx, lung in lungs:
            periphery = cx + np.sign(cx - 0.5) * 0.07
            for _ in range(rng.integers(3, 6)):
                img += rng.uniform(0.08, 0.14) * _blob(yy, xx, rng.uniform(0.55, 0.72), periphery + rng.normal(0, 0.02),
                                                       rng.uniform(0.05, 0.08), rng.uniform(0.03, 0.05))
    if "Consolidation" in findings:  # as pneumonia: a dense patch in one lung
        cx, _ = lungs[rng.integers(2)]
        img += rng.uniform(0.28, 0.4) * _blob(yy, xx, rng.uniform(0.45, 0.62), cx, 0.09, 0.07)
    if "Effusion" in findings:  # fluid: the lower part of one lung turns white, a flat meniscus above
        cx, lung = lungs[rng.integers(2)]
        level = rng.uniform(0.54, 0.6)
        img += 0.6 * np.clip(lung * 2.5, 0, 1) * (1 / (1 + np.exp(-(yy - level) * 60)))
    if "Cardiomegaly" in findings:  # an enlarged heart shadow
        img += 0.25 * _blob(yy, xx, 0.63, 0.55, 0.2, rng.uniform(0.2, 0.24))
    img += rng.normal(0, 0.025, img.shape)  # quantum noise
    img = img * rng.uniform(0.85, 1.15) + rng.uniform(-0.05, 0.05)  # exposure differences
    return np.clip(img * 255, 0, 255).astype(np.uint8)


def make_synthetic_xrays(n_samples=120, image_size=64, classes=SYNTHETIC_CLASSES, random_state=None):
    """Generate grayscale chest-X-ray-like images with a learnable label.

    Each image has a torso, two dark lungs, ribs, spine and heart shadow, exposure changes
    and noise.  ``"normal"`` has nothing else; ``"pneumonia"`` adds one or two dense
    consolidations in one lung; ``"covid"`` adds faint bilateral peripheral lower-zone
    haze.  Meant for offline demos and tests, not as a stand-in for clinical data.

    Parameters
    ----------
    n_samples : int, default=120
    image_size : int, default=64
    classes : sequence of str, default=("normal", "pneumonia", "covid")
        Any subset of these three names, e.g. ``("normal", "covid")`` for a binary task.
    random_state : int, optional

    Returns
    -------
    X : ndarray of shape (n_samples, image_size, image_size), uint8
    y : ndarray of shape (n_samples,), str
        Classes balanced, in shuffled order.
    """
    unknown = set(classes) - set(SYNTHETIC_CLASSES)
    if unknown or not classes:
        raise ValueError(f"classes must be a non-empty subset of {SYNTHETIC_CLASSES}; got {classes!r}")
    rng = np.random.default_rng(random_state)
    y = np.array([classes[i % len(classes)] for i in range(n_samples)])
    rng.shuffle(y)
    X = np.stack([_one_xray(rng, int(image_size), label) for label in y]) if n_samples else np.zeros(
        (0, image_size, image_size), np.uint8)
    return X, y


SYNTHETIC_FINDINGS = ("Cardiomegaly", "Consolidation", "Effusion")


def make_synthetic_findings(out_dir, n_patients=24, images_per_patient=3, image_size=64, random_state=None):
    """Write an NIH-style multi-label set offline: PNGs, and a ``labels.csv`` naming findings and patients.

    Like NIH ChestX-ray14: columns ``Image Index``, ``Finding Labels`` (findings joined by ``|``,
    or ``No Finding``) and ``Patient ID``; several images per patient, whose findings mostly
    persist from one image to the next (each image is drawn anew, so the pixels themselves do
    not reveal the patient).  Findings (:data:`~xrayest.datasets.SYNTHETIC_FINDINGS`): an enlarged heart, a dense patch
    in one lung, fluid in the bottom of one lung.  For docs, tests and demos, not clinical use.

    Returns
    -------
    pathlib.Path
        The CSV (read it with :func:`xrayest.load_label_table`).

    Examples
    --------
    >>> import tempfile
    >>> from xrayest import load_label_table
    >>> csv_path = make_synthetic_findings(tempfile.mkdtemp(), n_patients=4, image_size=32, random_state=0)
    >>> table = load_label_table(csv_path, "Image Index", label_column="Finding Labels", sep="|",
    ...                          none_label="No Finding", patient_column="Patient ID")
    >>> table.labels, table.y.shape, len(set(table.groups))
    (['Cardiomegaly', 'Consolidation', 'Effusion'], (12, 3), 4)
    """
    import csv

    from PIL import Image

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(random_state)
    rows = []
    for patient in range(1, int(n_patients) + 1):
        tendency = rng.random(len(SYNTHETIC_FINDINGS)) < 0.4  # the patient's own findings
        for view in range(int(images_per_patient)):
            flip = rng.random(len(SYNTHETIC_FINDINGS)) < 0.15  # resolved or new on this image
            present = [f for f, has in zip(SYNTHETIC_FINDINGS, tendency ^ flip) if has]
            name = f"{patient:05d}_{view:03d}.png"
            Image.fromarray(_one_xray(rng, int(image_size), "normal", set(present))).save(out / "images" / name)
            rows.append({"Image Index": f"images/{name}", "Finding Labels": "|".join(present) or "No Finding",
                         "Patient ID": str(patient)})
    path = out / "labels.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["Image Index", "Finding Labels", "Patient ID"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def list_images(folder) -> list[Path]:
    """Every image file under ``folder`` (sub-folders too, by :data:`IMAGE_SUFFIXES`), sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_image_folder(root, classes=None, image_size=None, color="rgb", return_paths=False, on_error="raise"):
    """Load a ``root/<class>/<image>`` folder (e.g. ``bu_cs542/train``).

    Parameters
    ----------
    root : path
    classes : sequence of str, optional
        Class folders to read, in this order (e.g. ``["covid", "normal"]`` for the binary
        task); default every sub-folder, sorted.
    image_size : int or (int, int), optional
        Resize every image to this size.  Without it, images of different sizes cannot be
        stacked, so ``return_paths=True`` is needed (the estimators take paths too).
    color : {"rgb", "grayscale"}, default="rgb"
    return_paths : bool, default=False
        Return file paths instead of pixels (the estimators read them in batches).
    on_error : {"raise", "skip"}, default="raise"
        A file that cannot be read as an image raises an error naming it, or, with
        "skip", is left out with one warning listing every skipped file.

    Returns
    -------
    X : ndarray ``(n, h, w, 3)`` or ``(n, h, w)`` uint8, or ndarray of str paths
    y : ndarray of str
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    if color not in ("rgb", "grayscale"):
        raise ValueError(f"color must be 'rgb' or 'grayscale'; got {color!r}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip'; got {on_error!r}")
    size = None if image_size is None else check_image_size(image_size)
    if isinstance(classes, (str, bytes, Path)):
        raise ValueError(f"classes must be a list of class folder names; got the single string {classes!r} "
                         f"(pass [{str(classes)!r}] for one folder)")
    available = sorted(p.name for p in root.iterdir() if p.is_dir())
    classes = list(classes) if classes is not None else available
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        raise ValueError(f"classes names {repeated} more than once; each class folder is read once")
    missing = [c for c in classes if c not in available]
    if missing:
        raise ValueError(f"class folders {missing} not found in {root}; it has {available}")
    if not classes:
        raise ValueError(f"{root} has no class sub-folders (expected root/<class>/<image>)")
    files, labels = [], []
    for label in classes:
        found = list_images(root / label)
        if not found:
            raise ValueError(f"class folder {root / label} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        files += found
        labels += [label] * len(found)
    _warn_duplicates(files)
    if return_paths:
        kept = files
        if on_error == "skip":
            kept, labels = _readable(files, labels, on_error)
        return np.array([str(p) for p in kept]), np.array(labels)
    if size is None:
        raise ValueError("images of different sizes cannot be stacked: pass image_size=..., or return_paths=True")
    images, kept_labels, skipped = [], [], []
    for path, label in zip(files, labels):
        try:
            img = read_image(path, size)
        except ValueError as exc:
            if on_error == "raise":
                raise
            skipped.append(f"{path} ({exc.__cause__ or exc})")
            continue
        images.append(img)
        kept_labels.append(label)
    _warn_skipped(skipped)
    if not images:
        raise ValueError(f"no readable images under {root}")
    X = np.stack(images)
    X = X.mean(axis=-1) if color == "grayscale" else X
    return np.round(X).astype(np.uint8), np.array(kept_labels)


def _readable(files, labels, on_error):
    kept, kept_labels, skipped = [], [], []
    for path, label in zip(files, labels):
        try:
            read_image(path)  # decodes every pixel (a truncated JPEG fails here; verify() alone passes it)
        except ValueError as exc:
            if on_error == "raise":
                raise
            skipped.append(f"{path} ({exc.__cause__ or exc})")
            continue
        kept.append(path)
        kept_labels.append(label)
    _warn_skipped(skipped)
    return kept, kept_labels


def find_duplicates(paths, other=None) -> list[tuple[str, str]]:
    """Pairs of files with the same bytes: within ``paths``, or between ``paths`` and ``other``.

    The same X-ray in a training and a test folder (or under two labels) inflates every score;
    :func:`load_image_folder` warns about repeats within one folder with this.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> for name, data in [("a.png", b"1"), ("b.png", b"2"), ("c.png", b"1")]:
    ...     _ = (d / name).write_bytes(data)
    >>> pairs = find_duplicates([d / "a.png", d / "b.png"], [d / "c.png"])
    >>> [(pathlib.Path(a).name, pathlib.Path(b).name) for a, b in pairs]
    [('a.png', 'c.png')]
    """
    import hashlib

    def digests(files):
        out = {}
        for f in files:
            out.setdefault(hashlib.blake2b(Path(f).read_bytes(), digest_size=16).hexdigest(), []).append(str(f))
        return out

    first = digests(paths)
    if other is None:
        return [(group[0], dup) for group in first.values() for dup in group[1:]]
    second = digests(other)
    return [(a, b) for key, group in first.items() for a in group for b in second.get(key, [])]


def _warn_duplicates(files):
    pairs = find_duplicates(files)
    if pairs:
        shown = "; ".join(f"{a} = {b}" for a, b in pairs[:5]) + (" ..." if len(pairs) > 5 else "")
        warnings.warn(f"{len(pairs)} file(s) repeat another file's content byte for byte ({shown}); a repeated "
                      "image on both sides of a split inflates scores", UserWarning, stacklevel=3)


def _warn_skipped(skipped):
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable file(s): " + "; ".join(skipped), UserWarning, stacklevel=3)
