"""Frozen ImageNet Xception features on the pediatric task: which layer, which scale, which preprocessing.

Every pediatric_cxr image (4,947) and the BU new-patient proxy (237 films, see bench_pediatric_cv.py) go
once through ImageNet Xception (bfloat16, weights from ../shared/tools), upsampled from 150 px to
--size; the average-pooled outputs of blocks 4, 8, 12, 13 and 14 are kept in an .npz per variant under
--cache-dir (reused when present).  A logistic regression (standardised features, C=0.01) is then
scored by the same 5-fold stratified CV (seed 0) over all images, and each fold's model on the BU
proxy; every row is paired with block 12 at 299 px (the ``xception_middle`` backbone).

Variants: the layer, the scale (150, 224, 299 px), a low-pass of every film (Gaussian, sigma 1 px:
one sharpness for all), CLAHE of every film, self-training with the BU films unlabeled (scikit-learn's
SelfTrainingClassifier, label -1), the BU features standardised by their own statistics (a
feature-level AdaBN), and augmented copies through the frozen network (a mirrored copy and one
random zoom 0.9-1.1 + shift up to 8% per film, each cached as its own variant) added to training,
with or without a test-time mean over the film and its copies.

    python benchmarks/bench_pediatric_features.py [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from _common import append_results, markdown_table, xception_weights

# block -> the key of its features in the .npz files (Keras' layer names in a process's first Xception)
LAYERS = {"block 4": "add_2", "block 8": "add_6", "block 12": "add_10", "block 13": "add_11",
          "block 14": "block14_sepconv2_act"}
# block -> the named layer whose residual sum is the block's output (Keras numbers "add" layers per process)
BLOCK_ENDS = {"block 4": "block4_pool", "block 8": "block8_sepconv3_bn", "block 12": "block12_sepconv3_bn",
              "block 13": "block13_pool", "block 14": None}


def block_output(model, block):
    """The output tensor of ``block`` in a Keras Xception."""
    from xrayest.weights import residual_sum_after

    end = BLOCK_ENDS[block]
    return model.output if end is None else residual_sum_after(model, end)


def preprocess(images, kind):
    import numpy as np
    from PIL import Image

    if kind == "plain":
        return images
    if kind == "blur":
        from scipy.ndimage import gaussian_filter

        return np.stack([gaussian_filter(i.astype(np.float32), 1.0) for i in images]).round().clip(0, 255).astype(
            np.uint8)
    if kind == "clahe":
        from skimage.exposure import equalize_adapthist  # scikit-image: only this benchmark needs it

        return np.stack([(equalize_adapthist(i, clip_limit=0.01) * 255).round().astype(np.uint8) for i in images])
    if kind == "lungs":  # the lung fields only (xrayest.lungs), resized back to the film's size
        from xrayest.lungs import crop_to_lungs

        return crop_to_lungs(images)
    if kind in ("zoom", "zoom+lungs"):  # tighter framing: the central 1/z of each side, z in 1.1-1.3, seeded
        rng = np.random.default_rng(1)
        side = images.shape[1]
        out = np.empty_like(images)
        for k, image in enumerate(images):
            keep = int(round(side / rng.uniform(1.1, 1.3)))
            start = (side - keep) // 2
            part = Image.fromarray(np.ascontiguousarray(image[start:start + keep, start:start + keep]))
            out[k] = np.asarray(part.resize((side, side), Image.BILINEAR))
        if kind == "zoom+lungs":
            from xrayest.lungs import crop_to_lungs

            return crop_to_lungs(out)
        return out
    if kind == "flip":
        return images[:, :, ::-1]
    if kind == "affine":  # one random zoom (0.9-1.1) and shift (up to 8% each way) per film, seeded
        from scipy.ndimage import affine_transform

        rng = np.random.default_rng(0)
        out = np.empty_like(images)
        side = images.shape[1]
        for k, image in enumerate(images):
            zoom, shift = rng.uniform(0.9, 1.1), rng.uniform(-0.08, 0.08, 2) * side
            centre = (side - 1) / 2
            offset = centre - (centre + shift) / zoom
            out[k] = affine_transform(image.astype(np.float32), [1 / zoom, 1 / zoom], offset=offset,
                                      order=1, mode="nearest").round().clip(0, 255).astype(np.uint8)
        return out
    raise ValueError(kind)


def extract(kind, size, cache_dir):
    """The variant's features, from the cache or computed (and cached)."""
    import numpy as np

    name = {"plain": "plain", "blur": "blur1.0", "clahe": "clahe", "flip": "flip", "affine": "affine",
            "lungs": "lungs", "zoom": "zoom", "zoom+lungs": "zoom_lungs"}[kind]
    path = Path(cache_dir) / f"feat_{name}_{size}.npz"
    if path.exists():
        return np.load(path)
    import keras

    import bench_pediatric_cv as cv

    X, y = cv.load_pediatric(0)
    X_bu, y_bu = cv.load_bu_proxy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    base = keras.applications.Xception(weights=xception_weights(), include_top=False, input_shape=(size, size, 3))
    inputs = keras.Input((150, 150, 1))
    x = keras.layers.Resizing(size, size, interpolation="bilinear")(keras.ops.cast(inputs, "float32"))
    x = keras.ops.concatenate([x, x, x], axis=-1) / 127.5 - 1.0
    inner = keras.Model(base.input, [block_output(base, block) for block in LAYERS])
    model = keras.Model(inputs, [keras.layers.GlobalAveragePooling2D(dtype="float32")(o) for o in inner(x)])
    out = {"y": y, "y_bu": y_bu}
    for part, images in (("ped", X), ("bu", X_bu)):
        start = time.perf_counter()
        images = preprocess(images.reshape(len(images), 150, 150), kind)
        feats = model.predict(images[..., None], batch_size=32, verbose=0)
        print(f"{kind} {size} px {part}: {len(images) / (time.perf_counter() - start):.1f} img/s", flush=True)
        out.update({f"{part}_{n}": f.astype(np.float32) for n, f in zip(LAYERS.values(), feats)})
    np.savez(path, **out)
    return np.load(path)


def score(data, layers, mode="plain", copies=(), tta=False):
    """Per fold: CV accuracy, CV viral recall, BU accuracy, BU normal recall.

    ``copies``: the features of augmented copies of every film (other variants' data), added to each
    fold's training rows; ``tta``: test and BU probabilities averaged over the film and its copies.
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, recall_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.semi_supervised import SelfTrainingClassifier

    classes = np.array(["bacterial", "normal", "viral"])
    X = np.concatenate([data[f"ped_{LAYERS[k]}"] for k in layers], 1)
    X_bu = np.concatenate([data[f"bu_{LAYERS[k]}"] for k in layers], 1)
    views = [tuple(np.concatenate([c[f"{part}_{LAYERS[k]}"] for k in layers], 1) for part in ("ped", "bu"))
             for c in copies]
    y, y_bu = data["y"], data["y_bu"]

    def head():
        return make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=3000))

    rows = []
    for train, test in StratifiedKFold(5, shuffle=True, random_state=0).split(X, y):
        if mode == "self-training":
            codes = np.searchsorted(classes, y)
            model = SelfTrainingClassifier(head(), threshold=0.9).fit(
                np.concatenate([X[train], X_bu]), np.concatenate([codes[train], -np.ones(len(X_bu), int)]))
        else:
            model = head().fit(np.concatenate([X[train], *[c[train] for c, _ in views]]),
                               np.concatenate([y[train]] * (1 + len(views))))
        bu_rows = StandardScaler().fit_transform(X_bu) if mode == "site statistics" else X_bu
        predict = model[-1].predict_proba if mode == "site statistics" else model.predict_proba
        looks = [(X, bu_rows), *(views if tta else [])]
        p_test = classes[np.mean([model.predict_proba(v[test]) for v, _ in looks], 0).argmax(1)]
        p_bu = classes[np.mean([predict(v) for _, v in looks], 0).argmax(1)]
        rows.append([accuracy_score(y[test], p_test), recall_score(y[test], p_test, labels=classes, average=None)[2],
                     accuracy_score(y_bu, p_bu), recall_score(y_bu, p_bu, labels=classes, average=None)[1]])
    return np.array(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "xrayest-bench-features"))
    args = parser.parse_args()
    import bench_pediatric_cv as cv

    if not cv.DATA.is_dir() or not cv.BU.is_dir():
        sys.exit(f"skipped: pediatric_cxr or bu_cs542 not found under {cv.DATA.parents[1]}")
    os.makedirs(args.cache_dir, exist_ok=True)
    variants = [
        ("299 px, block 12 (the xception_middle backbone)", "plain", 299, ["block 12"], "plain"),
        ("299 px, block 14 (the whole network's output)", "plain", 299, ["block 14"], "plain"),
        ("299 px, blocks 4, 8, 12, 13 and 14 concatenated", "plain", 299, list(LAYERS), "plain"),
        ("224 px, block 12", "plain", 224, ["block 12"], "plain"),
        ("224 px, block 14", "plain", 224, ["block 14"], "plain"),
        ("150 px, block 12", "plain", 150, ["block 12"], "plain"),
        ("150 px, block 14 (the xception_frozen recipe's features)", "plain", 150, ["block 14"], "plain"),
        ("block 12, every film low-passed (Gaussian, sigma 1 px)", "blur", 299, ["block 12"], "plain"),
        ("block 12, CLAHE on every film", "clahe", 299, ["block 12"], "plain"),
        ("block 12, self-training with the BU films unlabeled", "plain", 299, ["block 12"], "self-training"),
        ("block 12, BU features standardised by their own statistics", "plain", 299, ["block 12"],
         "site statistics"),
        ("block 12, + a mirrored copy of every training film", "plain", 299, ["block 12"], ("flip",)),
        ("block 12, + a mirrored copy, and test-time mean over film and mirror", "plain", 299, ["block 12"],
         ("flip", "tta")),
        ("block 12, + a randomly zoomed (0.9-1.1) and shifted (8%) copy", "plain", 299, ["block 12"], ("affine",)),
        ("block 12, + mirrored and zoomed/shifted copies", "plain", 299, ["block 12"], ("flip", "affine")),
        ("block 12, + mirrored and zoomed/shifted copies, test-time mean over the three", "plain", 299,
         ["block 12"], ("flip", "affine", "tta")),
    ]

    def run(kind, size, layers, mode):
        if isinstance(mode, tuple):  # augmented copies (their own cached variants), optionally test-time too
            copies = [extract(copy, size, args.cache_dir) for copy in mode if copy != "tta"]
            return score(extract(kind, size, args.cache_dir), layers, copies=copies, tta="tta" in mode)
        return score(extract(kind, size, args.cache_dir), layers, mode)

    results = {name: run(kind, size, layers, mode) for name, kind, size, layers, mode in variants}
    base = results[variants[0][0]]

    def cell(r, k, paired):
        if not paired:
            return f"{r[:, k].mean():.3f} ± {r[:, k].std(ddof=1):.3f}"
        d = r[:, k] - base[:, k]
        return f"{d.mean():+.3f} ± {d.std(ddof=1):.3f}"

    rows = [[name, cell(r, 0, False), "" if r is base else cell(r, 0, True), f"{r[:, 1].mean():.3f}",
             cell(r, 2, False), "" if r is base else cell(r, 2, True), f"{r[:, 3].mean():.3f}"]
            for name, r in results.items()]
    header = ["frozen ImageNet Xception + logistic regression", "CV accuracy", "paired", "CV viral recall",
              "BU proxy accuracy", "paired", "BU normal recall"]
    table = markdown_table(header, rows)
    append_results("bench_pediatric_features: frozen ImageNet Xception features, 5-fold CV over all 4,947 images",
                   table, notes="Mean ± sd over 5 folds; paired: the row minus block 12 at 299 px on the same fold. "
                                "BU proxy: each fold's model on the 237 BU non-COVID films.")


if __name__ == "__main__":
    main()
