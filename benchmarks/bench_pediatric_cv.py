"""Cross-validated accuracy on the pediatric task, with a proxy for new patients.

Stratified K-fold CV (folds drawn with --split-seed, 0 by default) over ../shared/data/pediatric_cxr/train
(or a stratified --n subsample of it). Each fold trains one model per seed of --seeds; every model is scored on

- the fold's test images: accuracy, macro-F1, per-class recall (mean +- sd over folds);
- the same test images resampled to the class mix of the independent test set (38% normal, 39%
  bacterial, 23% viral), plain and with EM label-shift adaptation (xrayest.label_shift);
- a new-patient proxy: BU CS542's normal / pneumonia_bac / pneumonia_vir films (train and test, 237
  images of another resolution, resized to 150 px grayscale as the pediatric set was; same source
  hospital, so not fully independent);
- a framing proxy: the fold's test images framed tighter (each cut to its central 1/z, z drawn in
  1.1-1.3, resized back; ``tighter_framing``). The pediatric normal films show more of the body (neck,
  shoulders, arms) than its pneumonia films; a model that learned the framing calls a tightly framed
  normal film pneumonia, which is the error the independent test of new patients shows.

With several seeds, the mean of their probabilities is scored too (a seed ensemble). Appends a
table to RESULTS.md; --save writes every probability to an .npz for later analysis.

--snapshots keeps the weights after every epoch and scores each of them (BatchNorm recalibrated on
the fold's training images, as fit does at its end) and their means over the last 3, 5 and 10 epochs
(stochastic weight averaging, what ``callbacks.WeightAveraging`` does in one fit): the curve of CV and
BU-proxy accuracy over epochs, and SWA against the last epoch on the same runs.

    python benchmarks/bench_pediatric_cv.py --recipe sutd_cnn [--n 1500] [--folds 5] [--epochs 20]
        [--seeds 0,1] [--equalize] [--swa N] [--snapshots] [--set key=value ...] [--save out.npz]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from _common import SHARED, append_results, markdown_table, parse_overrides, record_result, xception_weights

DATA = SHARED / "data" / "pediatric_cxr" / "train"
BU = SHARED / "data" / "bu_cs542"
CLASSES = ["bacterial", "normal", "viral"]  # sorted: the estimators' classes_ order
NEW_MIX = {"normal": 0.38, "bacterial": 0.39, "viral": 0.23}
BU_NAMES = {"normal": "normal", "pneumonia_bac": "bacterial", "pneumonia_vir": "viral"}


def equalize(images):
    from xrayest.intensity import equalize_histogram

    return equalize_histogram(images)


def center_crop(images, fraction):
    """The central ``fraction`` of each side of every image, resized back to its size (borders, markers and
    text at the edges cut away: a crude lung-field crop)."""
    import numpy as np
    from PIL import Image

    n, h, w = images.shape[:3]
    top, left = int(round(h * (1 - fraction) / 2)), int(round(w * (1 - fraction) / 2))
    out = np.empty_like(images)
    for i, image in enumerate(images):
        part = np.asarray(image[top:h - top, left:w - left]).squeeze()
        resized = np.asarray(Image.fromarray(part.astype(np.uint8)).resize((w, h), Image.BILINEAR))
        out[i] = resized.reshape(out[i].shape)
    return out


def tighter_framing(images, seed=1):
    """Each image cut to its central ``1/z`` of each side (``z`` drawn in 1.1-1.3 per image, seeded) and
    resized back to its size: the same film framed tighter."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    n, h, w = images.shape[:3]
    out = np.empty_like(images)
    for k, image in enumerate(images):
        zoom = rng.uniform(1.1, 1.3)
        kh, kw = int(round(h / zoom)), int(round(w / zoom))
        top, left = (h - kh) // 2, (w - kw) // 2
        part = np.ascontiguousarray(np.asarray(image[top:top + kh, left:left + kw]).squeeze())
        out[k] = np.asarray(Image.fromarray(part).resize((w, h), Image.BILINEAR)).reshape(out[k].shape)
    return out


def load_pediatric(n):
    import numpy as np
    from sklearn.model_selection import train_test_split

    from xrayest import load_image_folder

    X, y = load_image_folder(DATA, classes=CLASSES, image_size=150, color="grayscale")
    if n and n < len(X):
        X, _, y, _ = train_test_split(X, y, train_size=n, stratify=y, random_state=0)
    return X, np.asarray(y)


def load_bu_proxy():
    import numpy as np

    from xrayest import load_image_folder

    if not BU.is_dir():
        return None, None
    parts = [load_image_folder(BU / split, classes=list(BU_NAMES), image_size=150, color="grayscale")
             for split in ("train", "test")]
    X = np.concatenate([p[0] for p in parts])
    y = np.array([BU_NAMES[v] for p in parts for v in p[1]])
    return X, y


def mix_indices(y, rng):
    """Rows of y resampled (without replacement) to NEW_MIX, as many as the scarcest class allows."""
    import numpy as np

    per = {c: np.flatnonzero(y == c) for c in NEW_MIX}
    total = int(min(len(per[c]) / NEW_MIX[c] for c in NEW_MIX))
    return np.concatenate([rng.choice(per[c], int(round(total * NEW_MIX[c])), replace=False) for c in NEW_MIX])


def scores(y, proba):
    import numpy as np
    from sklearn.metrics import accuracy_score, f1_score, recall_score

    pred = np.asarray(CLASSES)[np.argmax(proba, axis=1)]
    recall = recall_score(y, pred, labels=CLASSES, average=None)
    return {"acc": accuracy_score(y, pred), "f1": f1_score(y, pred, labels=CLASSES, average="macro"),
            **{f"recall_{c}": r for c, r in zip(CLASSES, recall)}}


def evaluate(y_test, p_test, prior, y_bu, p_bu, rng_seed, p_framed=None):
    import numpy as np

    from xrayest.label_shift import adapt_to_priors

    out = {f"cv_{k}": v for k, v in scores(y_test, p_test).items()}
    if p_framed is not None:
        framed = scores(y_test, p_framed)
        out["framed_acc"], out["framed_recall_normal"] = framed["acc"], framed["recall_normal"]
    rows = mix_indices(y_test, np.random.default_rng(rng_seed))
    out["mix_acc"] = scores(y_test[rows], p_test[rows])["acc"]
    adapted, _ = adapt_to_priors(p_test[rows], prior)
    out["mix_em_acc"] = scores(y_test[rows], adapted)["acc"]
    if p_bu is not None:
        bu = scores(y_bu, p_bu)
        out["bu_acc"], out["bu_recall_normal"] = bu["acc"], bu["recall_normal"]
        out["bu_em_acc"] = scores(y_bu, adapt_to_priors(p_bu, prior)[0])["acc"]
    return out


SWA_LAST = (3, 5, 10)


def snapshot_callback():
    """A Keras callback keeping the model's weights after every epoch in ``.weights``."""
    import keras

    class Snapshots(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.weights = []

        def on_epoch_end(self, epoch, logs=None):
            self.weights.append(self.model.get_weights())

    return Snapshots()


def snapshot_probas(clf, snapshots, X_train, targets):
    """Probabilities on each of ``targets`` for every epoch's weights, then for SWA over the last N epochs.

    Returns ``{name: [proba per target]}`` with names ``epoch1..epochE`` and ``swa3``, ``swa5``, ``swa10``;
    the estimator ends with its own fitted weights and BatchNorm statistics.
    """
    import numpy as np

    from xrayest.inputs import as_image_source
    from xrayest.pipeline import PackedImages
    from xrayest.training import recalibrate_batch_norm

    store = PackedImages.from_source(as_image_source(X_train), clf.image_size_)
    rows = np.random.default_rng(0).permutation(len(X_train))[:2048]
    model, final = clf.model_, clf.model_.get_weights()
    sets = {f"epoch{e + 1}": w for e, w in enumerate(snapshots)}
    for n in SWA_LAST:
        if n < len(snapshots):
            sets[f"swa{n}"] = [np.mean([s[i] for s in snapshots[-n:]], axis=0).astype(w.dtype)
                               for i, w in enumerate(snapshots[-1])]
    out = {}
    for name, weights in sets.items():
        model.set_weights(weights)
        recalibrate_batch_norm(clf.trunk_.model, store.batches(rows, clf.batch_size))
        out[name] = [None if X is None else clf.predict_proba(X) for X in targets]
    model.set_weights(final)
    return out


def pair(base_file, variant_file):
    """Paired differences (variant - base, mean ± sd over folds) of two ``--save`` files of the same folds:
    each file's first seed on each fold."""
    import numpy as np

    base, variant = np.load(base_file), np.load(variant_file)
    if not np.array_equal(base["y"], variant["y"]):
        sys.exit(f"{base_file} and {variant_file} hold other images: pair runs of the same --n")
    diffs, folds = {}, sorted({k.split("_")[0] for k in base.files if k.startswith("fold")})
    for fold in folds:
        test = base[f"{fold}_test"]
        if not np.array_equal(test, variant[f"{fold}_test"]):
            sys.exit(f"{fold} differs between the two files: pair runs of the same --folds")
        for name, run in (("base", base), ("variant", variant)):
            cv = scores(base["y"][test], run[f"{fold}_proba"][0])
            bu = scores(base["y_bu"], run[f"{fold}_bu_proba"][0]) if f"{fold}_bu_proba" in run.files else {}
            framed = (scores(base["y"][test], run[f"{fold}_framed_proba"][0])
                      if f"{fold}_framed_proba" in base.files and f"{fold}_framed_proba" in variant.files else {})
            for key, value in {"CV acc": cv["acc"], "macro-F1": cv["f1"], "recall viral": cv["recall_viral"],
                               "BU proxy acc": bu.get("acc"), "BU normal recall": bu.get("recall_normal"),
                               "framed acc": framed.get("acc"),
                               "framed normal recall": framed.get("recall_normal")}.items():
                if value is not None:
                    diffs.setdefault(key, {}).setdefault(name, []).append(value)
    cells = []
    for key, runs in diffs.items():
        d = np.subtract(runs["variant"], runs["base"])
        cells.append(f"{np.mean(runs['variant']):.3f} vs {np.mean(runs['base']):.3f}: "
                     f"{d.mean():+.3f} ± {d.std(ddof=1) if len(d) > 1 else 0:.3f}")
    table = markdown_table(["variant - base", *diffs], [[f"{Path(variant_file).stem} - {Path(base_file).stem}",
                                                          *cells]])
    append_results(f"bench_pediatric_cv --pair: paired differences over {len(folds)} folds", table,
                   notes="Each cell: variant mean vs base mean, then the paired difference (mean ± sd over folds).")


def vote(a_file, b_file, weights, save=None, record=False):
    """Soft votes of two ``--save`` files of the same folds (each file's first seed), paired against B;
    ``save``: the first weight's vote as a ``--save`` file of its own (for ``--pair``)."""
    import numpy as np

    a, b = np.load(a_file), np.load(b_file)
    if not np.array_equal(a["y"], b["y"]):
        sys.exit(f"{a_file} and {b_file} hold other images: vote runs of the same --n")
    folds = sorted({k.split("_")[0] for k in a.files if k.startswith("fold")})
    names = [Path(a_file).stem, Path(b_file).stem] + [f"{w:g} {Path(a_file).stem} + {1 - w:g} {Path(b_file).stem}"
                                                       for w in weights]
    runs = {name: [] for name in names}
    saved = {}
    for fold in folds:
        test = a[f"{fold}_test"]
        if not np.array_equal(test, b[f"{fold}_test"]):
            sys.exit(f"{fold} differs between the two files: vote runs of the same --folds")
        framed = f"{fold}_framed_proba" in a.files and f"{fold}_framed_proba" in b.files
        sets = [(f"{fold}_proba", a["y"][test]), (f"{fold}_bu_proba", a["y_bu"])]
        sets += [(f"{fold}_framed_proba", a["y"][test])] if framed else []
        pa, pb = [a[key][0] for key, _ in sets], [b[key][0] for key, _ in sets]
        mixes = [pa, pb] + [[w * x + (1 - w) * z for x, z in zip(pa, pb)] for w in weights]
        saved.update({f"{fold}_test": test, **{key: p[None] for (key, _), p in zip(sets, mixes[2])}})
        for name, probas in zip(names, mixes):
            cv, bu = scores(sets[0][1], probas[0]), scores(sets[1][1], probas[1])
            out = scores(sets[2][1], probas[2]) if framed else {"acc": np.nan, "recall_normal": np.nan}
            runs[name].append([cv["acc"], cv["f1"], cv["recall_viral"], bu["acc"], bu["recall_normal"], out["acc"],
                               out["recall_normal"]])
    base = np.array(runs[names[1]])
    rows = []
    for name in names:
        r = np.array(runs[name])
        d = r - base
        rows.append([name, *[f"{r[:, k].mean():.3f} ± {r[:, k].std(ddof=1):.3f}" for k in range(7)],
                     *[f"{d[:, k].mean():+.3f} ± {d[:, k].std(ddof=1):.3f}" for k in (0, 3, 5)]])
    table = markdown_table(["model", "CV acc", "macro-F1", "recall viral", "BU proxy acc", "BU normal recall",
                            "framed acc", "framed normal recall", f"CV acc - {names[1]}", f"BU acc - {names[1]}",
                            f"framed acc - {names[1]}"], rows)
    append_results(f"bench_pediatric_cv --vote: soft votes over {len(folds)} folds", table,
                   notes="Mean ± sd over folds; the last two columns are paired differences against the second file.")
    if save:
        np.savez_compressed(save, y=a["y"], y_bu=a["y_bu"], **saved)
    if record:  # the README's headline: the recipe's members and their vote
        means = {name: np.nanmean(np.array(runs[name]), 0) for name in names}
        record_result("pediatric_new_patients", "pediatric, new patients: 5-fold CV of 1,500 images, the BU proxy "
                                                "and the framing proxy (test films framed tighter): the members of "
                                                "`make_recipe(\"pediatric_pneumonia\")` and their soft vote",
                      "; ".join(f"{name}: CV {m[0]:.3f}, BU {m[3]:.3f}, framed {m[5]:.3f}"
                                for name, m in means.items()))


def adaptations(clf):
    """What --adapt scores: ``(name, adapt's arguments)``: the defaults (AdaBN and TENT), AdaBN alone where a trunk
    trains, and an ensemble's class mix on top of the defaults."""
    from xrayest import EnsembleClassifier
    from xrayest.classifier import is_adaptable

    out = [("adapted", {}), ("adabn", {"tent_steps": 0})] if is_adaptable(clf) else []
    if isinstance(clf, EnsembleClassifier):
        out.append(("priors", {"priors": True}))
    return out


def build(recipe, overrides):
    """``make_recipe(recipe, **overrides)``; a nested key (``infected__backbone``: one cascade stage's
    parameter) is set with ``set_params`` after the rest."""
    from xrayest import make_recipe

    nested = {k: v for k, v in overrides.items() if "__" in k}
    clf = make_recipe(recipe, **{k: v for k, v in overrides.items() if k not in nested})
    return clf.set_params(**nested) if nested else clf


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="sutd_cnn")
    parser.add_argument("--n", type=int, default=0, help="stratified subsample size (0: all 4,947)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=0, help="0: the recipe's own")
    parser.add_argument("--seeds", default="0", help="comma-separated random_state of each model per fold")
    parser.add_argument("--split-seed", type=int, default=0,
                        help="random_state of the fold split (the subsample stays the same): another seed gives "
                             "another set of folds for a second paired comparison")
    parser.add_argument("--equalize", action="store_true", help="histogram-equalise every image before fitting")
    parser.add_argument("--center-crop", type=float, default=0.0,
                        help="keep the central fraction of each side of every image (e.g. 0.8), resized back")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an estimator parameter over the recipe's (a Python literal, else a string); "
                             "STAGE__KEY=VALUE for one stage of a cascade")
    parser.add_argument("--swa", type=int, default=0,
                        help="stochastic weight averaging over the last N epochs (xrayest.callbacks.WeightAveraging)")
    parser.add_argument("--snapshots", action="store_true",
                        help="score every epoch's weights and SWA over the last 3/5/10 epochs (see above)")
    parser.add_argument("--adapt", action="store_true",
                        help="also score adapt (AdaBN and TENT; AdaBN alone; a vote's class mix) on each target set: "
                             "the unlabeled test images of each fold, the BU proxy's images and the framed test "
                             "images, each adapted to before it is predicted; --save then writes the default "
                             "adaptation's probabilities to a second file, NAME_adapted.npz")
    parser.add_argument("--label", default="", help="name of this variant in the table")
    parser.add_argument("--save", default="", help="write labels and probabilities to this .npz")
    parser.add_argument("--fit-all", action="store_true",
                        help="no CV: fit once on every image (--n of them) and time it; score the BU proxy only")
    parser.add_argument("--pair", nargs=2, metavar=("BASE.npz", "VARIANT.npz"),
                        help="no fit: paired differences of two --save files of the same folds")
    parser.add_argument("--vote", nargs=2, metavar=("A.npz", "B.npz"),
                        help="no fit: soft votes w*A + (1-w)*B of two --save files of the same folds, for each w "
                             "of --vote-weights, scored and paired against B; --save keeps the first w's vote")
    parser.add_argument("--vote-weights", default="0.3,0.5,0.7", help="weights w of A in --vote")
    parser.add_argument("--record", action="store_true",
                        help="with --vote: record the votes as the README's new-patient headline")
    args = parser.parse_args()
    if args.pair:
        return pair(*args.pair)
    if args.vote:
        return vote(*args.vote, [float(w) for w in args.vote_weights.split(",")], save=args.save, record=args.record)
    if not DATA.is_dir():
        sys.exit(f"skipped: pediatric_cxr not found at {DATA} (it lives in ../shared beside the repo)")

    import numpy as np
    from sklearn.model_selection import StratifiedKFold

    if "XRAYEST_WEIGHTS_DIR" not in os.environ:  # ImageNet Xception offline: ../shared/tools' weights file
        try:
            weights = Path(xception_weights())
        except SystemExit:  # no tool: recipes with ImageNet weights then need the network
            weights = Path()
        if weights.name == "xception_imagenet_notop.weights.h5":
            os.environ["XRAYEST_WEIGHTS_DIR"] = str(weights.parent)
    overrides = parse_overrides(args.set)
    if args.epochs:
        overrides["epochs"] = args.epochs
    if args.swa:
        from xrayest.callbacks import WeightAveraging

        overrides["callbacks"] = [WeightAveraging(args.swa)]
    seeds = [int(s) for s in args.seeds.split(",")]
    X, y = load_pediatric(args.n)
    X_bu, y_bu = load_bu_proxy()
    if args.equalize:
        X = equalize(X)
        X_bu = None if X_bu is None else equalize(X_bu)
    if args.center_crop:
        X = center_crop(X, args.center_crop)
        X_bu = None if X_bu is None else center_crop(X_bu, args.center_crop)
    if args.fit_all:
        return fit_all(args, overrides, seeds[0], X, y, X_bu, y_bu)
    folds = list(StratifiedKFold(args.folds, shuffle=True, random_state=args.split_seed).split(X, y))
    results, saved, fit_seconds = {"single": [], "ensemble": []}, {}, []
    adapted_saved = {}
    curves = {}  # snapshot name -> evaluations over folds x seeds
    for f, (train, test) in enumerate(folds):
        prior = np.array([np.mean(y[train] == c) for c in CLASSES])
        p_tests, p_bus, p_framed = [], [], []
        for seed in seeds:
            snapshots = snapshot_callback() if args.snapshots else None
            extra = {"callbacks": [*overrides.get("callbacks", []), snapshots]} if snapshots else {}
            clf = build(args.recipe, {**overrides, **extra, "random_state": seed})
            start = time.perf_counter()
            clf.fit(X[train], y[train])
            fit_seconds.append(time.perf_counter() - start)
            if snapshots:
                for name, (p_t, p_b) in snapshot_probas(clf, snapshots.weights, X[train], [X[test], X_bu]).items():
                    curves.setdefault(name, []).append(evaluate(y[test], p_t, prior, y_bu, p_b, f))
            assert list(clf.classes_) == CLASSES
            p_tests.append(clf.predict_proba(X[test]))
            p_bus.append(None if X_bu is None else clf.predict_proba(X_bu))
            framed = tighter_framing(X[test], seed=f)
            p_framed.append(clf.predict_proba(framed))
            results["single"].append(evaluate(y[test], p_tests[-1], prior, y_bu, p_bus[-1], f, p_framed[-1]))
            print(f"fold {f} seed {seed}: {results['single'][-1]} ({fit_seconds[-1]:.0f} s)", flush=True)
            for kind, how in adaptations(clf) if args.adapt else []:
                # each target set's own images, unlabeled, adapted to before it is predicted
                p_test_ad = clf.adapt(X[test], **how).predict_proba(X[test])
                p_bu_ad = None if X_bu is None else clf.adapt(X_bu, **how).predict_proba(X_bu)
                p_framed_ad = clf.adapt(framed, **how).predict_proba(framed)
                results.setdefault(kind, []).append(evaluate(y[test], p_test_ad, prior, y_bu, p_bu_ad, f,
                                                             p_framed_ad))
                print(f"fold {f} seed {seed} {kind}: {results[kind][-1]}", flush=True)
                if kind == "adapted":
                    adapted_saved.setdefault(f"fold{f}_proba", []).append(p_test_ad)
                    adapted_saved.setdefault(f"fold{f}_framed_proba", []).append(p_framed_ad)
                    adapted_saved[f"fold{f}_test"] = test
                    if p_bu_ad is not None:
                        adapted_saved.setdefault(f"fold{f}_bu_proba", []).append(p_bu_ad)
        if len(seeds) > 1:
            p_bu = None if X_bu is None else np.mean(p_bus, axis=0)
            results["ensemble"].append(evaluate(y[test], np.mean(p_tests, axis=0), prior, y_bu, p_bu, f))
            print(f"fold {f} ensemble: {results['ensemble'][-1]}", flush=True)
        saved[f"fold{f}_test"] = test
        saved[f"fold{f}_proba"] = np.stack(p_tests)
        saved[f"fold{f}_framed_proba"] = np.stack(p_framed)
        if X_bu is not None:
            saved[f"fold{f}_bu_proba"] = np.stack(p_bus)
    if args.save:
        np.savez_compressed(args.save, y=y, y_bu=y_bu if y_bu is not None else np.array([]), **saved)
        if adapted_saved:
            np.savez_compressed(str(Path(args.save).with_suffix("")) + "_adapted.npz", y=y,
                                y_bu=y_bu if y_bu is not None else np.array([]),
                                **{k: np.asarray(v) if isinstance(v, list) else v for k, v in adapted_saved.items()})

    keys = ["cv_acc", "cv_f1", "cv_recall_normal", "cv_recall_bacterial", "cv_recall_viral", "mix_acc",
            "mix_em_acc", "bu_acc", "bu_recall_normal", "bu_em_acc", "framed_acc", "framed_recall_normal"]
    name = args.label or args.recipe + (" +equalize" if args.equalize else "")
    rows = []
    for kind, runs in results.items():
        if not runs:
            continue
        cells = []
        for key in keys:
            values = np.array([r[key] for r in runs if key in r])
            cells.append(f"{values.mean():.3f} ± {values.std(ddof=1) if len(values) > 1 else 0:.3f}"
                         if len(values) else "-")
        kinds = {"single": "1 model", "adapted": "adapt() on each target set", "adabn": "AdaBN only",
                 "priors": "adapt(priors=True)"}
        label = f"{name} ({kinds.get(kind, f'{len(seeds)}-seed mean')})"
        rows.append([label, *cells])
    table = markdown_table(["model", "CV acc", "macro-F1", "recall normal", "recall bacterial", "recall viral",
                            "38/39/23 mix acc", "mix + EM", "BU proxy acc", "BU normal recall", "BU + EM",
                            "framed acc", "framed normal recall"], rows)
    if curves:
        table += "\n\n" + curve_table(curves, keys)
    print(table)
    append_results(f"bench_pediatric_cv: {args.folds}-fold CV, {len(X)} pediatric_cxr images",
                   table, notes=f"Overrides {overrides or 'none'}; seeds {seeds}; fold split seed {args.split_seed}; "
                                f"equalize={args.equalize}; "
                                f"center crop {args.center_crop or 'none'}; "
                                f"fit {np.mean(fit_seconds):.0f} s per model on "
                                f"{len(X) * (args.folds - 1) // args.folds}"
                                f" images. Mean ± sd over folds (single models: over folds x seeds). Mix: each "
                                f"fold's test images resampled to 38/39/23 normal/bacterial/viral; BU proxy: "
                                f"{0 if y_bu is None else len(y_bu)} BU non-COVID films at 150 px.")


def mean_sd(runs, key):
    import numpy as np

    values = np.array([r[key] for r in runs if key in r])
    if not len(values):
        return "-"
    return f"{values.mean():.3f} ± {values.std(ddof=1) if len(values) > 1 else 0:.3f}"


def curve_table(curves, keys):
    """Snapshot scores: SWA rows against the last epoch, paired differences, then the curve per epoch."""
    import numpy as np

    epochs = sorted((k for k in curves if k.startswith("epoch")), key=lambda k: int(k[5:]))
    last = curves[epochs[-1]]
    rows = [[f"{name} (snapshots)", *[mean_sd(curves[name], key) for key in keys]]
            for name in [epochs[-1], *[k for k in curves if k.startswith("swa")]]]
    paired = []
    for name in [k for k in curves if k.startswith("swa")]:
        cells = []
        for key in ("cv_acc", "cv_f1", "bu_acc", "bu_recall_normal"):
            d = np.array([r[key] - q[key] for r, q in zip(curves[name], last) if key in r])
            cells.append(f"{d.mean():+.3f} ± {d.std(ddof=1) if len(d) > 1 else 0:.3f}" if len(d) else "-")
        paired.append([f"{name} - {epochs[-1]}", *cells])
    per_epoch = [[k[5:], *[mean_sd(curves[k], key) for key in ("cv_acc", "cv_f1", "cv_recall_normal",
                                                                "cv_recall_viral", "bu_acc", "bu_recall_normal")]]
                 for k in epochs]
    return "\n\n".join([
        markdown_table(["weights", "CV acc", "macro-F1", "recall normal", "recall bacterial", "recall viral",
                        "38/39/23 mix acc", "mix + EM", "BU proxy acc", "BU normal recall", "BU + EM"], rows),
        markdown_table(["paired difference", "CV acc", "macro-F1", "BU proxy acc", "BU normal recall"], paired),
        markdown_table(["epoch", "CV acc", "macro-F1", "recall normal", "recall viral", "BU proxy acc",
                        "BU normal recall"], per_epoch)])


def fit_all(args, overrides, seed, X, y, X_bu, y_bu):
    """The recipe fitted on every image once: its fit time, and its score on the BU proxy."""
    import numpy as np

    from xrayest import EnsembleClassifier

    snapshots = snapshot_callback() if args.snapshots else None
    extra = {"callbacks": [*overrides.get("callbacks", []), snapshots]} if snapshots else {}
    clf = build(args.recipe, {**overrides, **extra, "random_state": seed})
    start = time.perf_counter()
    clf.fit(X, y)
    fit_s = time.perf_counter() - start
    row = [args.label or args.recipe, len(X), f"{fit_s:.0f}", f"{fit_s / 60:.1f}"]
    prior = np.array([np.mean(y == c) for c in CLASSES])
    header = ["model", "images", "fit s", "fit min", "BU proxy acc", "BU normal recall", "BU + EM"]
    if X_bu is not None:
        p_bu = clf.predict_proba(X_bu)
        out = evaluate(y_bu, p_bu, prior, y_bu, p_bu, 0)
        row += [f"{out['bu_acc']:.3f}", f"{out['bu_recall_normal']:.3f}", f"{out['bu_em_acc']:.3f}"]
        saved = {"y_bu": y_bu, "bu_proba": p_bu}
        members = clf.estimators_ if isinstance(clf, EnsembleClassifier) else []
        for i, member in enumerate(members):  # an ensemble's members, one by one
            saved[f"member{i}_bu_proba"] = member.predict_proba(X_bu)
        if args.adapt:  # AdaBN on the BU films, unlabeled
            saved["bu_proba_adapted"] = clf.adapt(X_bu).predict_proba(X_bu)
            adapted = scores(y_bu, saved["bu_proba_adapted"])
            header += ["BU AdaBN acc", "BU AdaBN normal recall"]
            row += [f"{adapted['acc']:.3f}", f"{adapted['recall_normal']:.3f}"]
        if args.save:
            np.savez_compressed(args.save, **saved)
    table = markdown_table(header, [row])
    if snapshots and X_bu is not None:
        rows = []
        for name, (p_bu,) in snapshot_probas(clf, snapshots.weights, X, [X_bu]).items():
            bu = scores(y_bu, p_bu)
            rows.append([name, *[f"{bu[k]:.3f}" for k in ("acc", "f1", "recall_normal", "recall_bacterial",
                                                           "recall_viral")]])
        table += "\n\n" + markdown_table(["weights", "BU proxy acc", "BU macro-F1", "BU recall normal",
                                           "BU recall bacterial", "BU recall viral"], rows)
    print(table)
    append_results(f"bench_pediatric_cv --fit-all: {args.label or args.recipe} on {len(X)} pediatric_cxr images",
                   table, notes=f"Overrides {overrides or 'none'}; random_state {seed}; equalize={args.equalize}.")
    if X_bu is not None and args.recipe == "pediatric_pneumonia" and not overrides and not args.label:
        record_result("pediatric_fit_all", f"`make_recipe(\"pediatric_pneumonia\")` fitted on all {len(X):,} images",
                      f"{fit_s / 60:.1f} min, BU proxy {out['bu_acc']:.3f} (normal recall "
                      f"{out['bu_recall_normal']:.3f})")


if __name__ == "__main__":
    main()
