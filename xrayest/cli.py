"""The ``xrayest`` command: fit, predict, evaluate, grid, featurize and demo, for folders of X-rays.

Exit codes: 0 success, 1 a user error (one line on stderr, no traceback), 2 bad usage.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import csv
import os
import sys
import time
from pathlib import Path

from .trunk_graph import PRECISIONS

__all__ = ["main", "build_parser"]

DESCRIPTION = """\
Chest X-ray classifiers from the command line.

A data folder holds one sub-folder per class:  DATA_DIR/<class>/<image>.{png,jpg,dcm,...}
(for example ../shared/data/bu_cs542/train with covid, normal, pneumonia_bac, pneumonia_vir).
Or a label table names the images: --labels table.csv (NIH-style "Finding Labels" A|B, or one column
per finding with --label-columns); several findings per image train a multi-label classifier, and a
patient column keeps each patient on one side of every split.
"""

EXAMPLES = """\
examples:
  xrayest demo                                   # offline: synthetic X-rays, fit, evaluate, report
  xrayest fit data/train --backbone xception --weights imagenet --epochs 40 --out model.keras
  xrayest fit data/train --classes covid,normal --param hidden_units=256,64 --out binary.keras
  xrayest predict model.keras data/test/covid scan1.png --output preds.csv
  xrayest evaluate model.keras data/test --report report/
  xrayest grid data/train --param dropout=0.2,0.5,0.8 --param learning_rate=1e-3,1e-4 --cv 3
  xrayest featurize data/train --out train.zarr --workers 2   # features once, resumable, on Dask
  xrayest grid --features train.zarr --param dropout=0.2,0.5 --cv 5
  xrayest fit --labels nih/labels.csv --param validation_split=0.2 --out findings.keras
  xrayest evaluate findings.keras --labels nih/test.csv --report report/
"""


class UserError(Exception):
    """A problem with the user's input: reported as one line, exit code 1."""


DEFAULT_PATIENT_COLUMN = "Patient ID"  # the NIH table's

def _parse_value(text):
    """'0.2' -> 0.2, '256,64' -> (256, 64), 'none' -> None, 'adam' -> 'adam'."""
    if text.lower() in ("none", "null"):
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return tuple(value) if isinstance(value, list) else value


def _parse_params(items, grid=False):
    params = {}
    for item in items or []:
        if "=" not in item:
            raise UserError(f"--param expects NAME=VALUE, got {item!r}")
        name, value = item.split("=", 1)
        name = name.strip().replace("-", "_")
        if grid:
            params[name] = [_parse_value(v) for v in value.split(",")]
        else:
            params[name] = _parse_value(value)
    return params


# The options that set a model, each a (type, help) pair.  Their defaults are those of the function they
# feed (XrayCNNClassifier for fit/grid, featurize for featurize), written out here so that building the
# parser (--help) imports no TensorFlow; tests/test_persistence_cli.py checks they equal the signatures.
_MODEL_OPTIONS = {
    "backbone": (str, "a name from the registry: %(registry)s"),
    "weights": (str, "imagenet, none, or a .weights.h5 file (offline: set XRAYEST_WEIGHTS_DIR or pass a file)"),
    "image_size": (int, "side in pixels images are resized to"),
    "pooling": (str, "avg or max"),
    "epochs": (int, "training epochs"),
    "batch_size": (int, "images per step"),
    "learning_rate": (float, "Adam's learning rate"),
    "device": (str, "auto, cpu, gpu or gpu:N"),
    "precision": (str, "auto (the fastest the device runs natively), float32, bfloat16 (CPUs with AMX-BF16 or "
                       "AVX512-BF16, Ampere and newer GPUs) or float16 (GPUs without bfloat16: V100, T4)"),
    "random_state": (int, "seed of weights, shuffling and augmentation"),
}
_CHOICES = {"precision": ["auto", *PRECISIONS], "pooling": ["avg", "max"]}
CLASSIFIER_DEFAULTS = dict(backbone="vgg16", weights="imagenet", image_size=None, epochs=20, batch_size=32,
                           learning_rate=1e-3, device="auto", precision="auto", random_state=None)
FEATURIZE_DEFAULTS = dict(backbone="xception", weights="imagenet", image_size=None, pooling="avg",
                          precision="auto", batch_size=32, device="cpu", random_state=None)
# A command line run repeats by default; XrayCNNClassifier's own random_state=None draws anew each fit.
_CLI_OVERRIDES = {"random_state": 0}


class _Given(argparse.Action):
    """Stores an option's value and records that the user gave it (``args.given``): a feature store's
    trunk settings may fill in options left out, never replace one given."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.given = getattr(namespace, "given", set()) | {self.dest}


class _RegistryNames:
    """The backbone registry's names, read when ``--help`` is printed (building the parser imports no Keras)."""

    def __str__(self):
        from .backbones import BACKBONES

        return ", ".join(BACKBONES)


def _add_options(group, defaults, names, helps=None):
    """``--name`` options for ``names`` of :data:`_MODEL_OPTIONS`, with ``defaults`` shown as the CLI spells them."""
    for name in names:
        kind, text = _MODEL_OPTIONS[name]
        default = _CLI_OVERRIDES.get(name, defaults[name])
        shown = ("the backbone's" if name == "image_size" else "none") if default is None else default
        action = group.add_argument("--" + name.replace("_", "-"), type=kind, choices=_CHOICES.get(name),
                                    default=default, action=_Given,
                                    help=f"{(helps or {}).get(name, text)} (default: {shown})")
        action.registry = _RegistryNames()  # argparse fills %(registry)s from the action's attributes


def _add_model_options(p):
    g = p.add_argument_group("model (defaults: XrayCNNClassifier's)")
    _add_options(g, CLASSIFIER_DEFAULTS, ["backbone", "weights", "image_size", "epochs", "batch_size",
                                                       "learning_rate", "device", "precision", "random_state"])
    g.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="any other XrayCNNClassifier parameter, e.g. --param dropout=0.3 --param hidden_units=256,64")
    p.add_argument("--classes", help="comma-separated class folders to use, e.g. covid,normal (default: all)")


def _add_table_options(p):
    p.add_argument("data_dir", metavar="DATA_DIR", nargs="?",
                   help="folder with one sub-folder of images per class (or, with --labels, the folder the "
                        "table's relative paths start from; default: the table's folder)")
    g = p.add_argument_group("label table (instead of class folders)")
    g.add_argument("--labels", metavar="CSV", help="a table of image paths and labels")
    g.add_argument("--path-column", default="Image Index", help="default: %(default)s")
    g.add_argument("--label-column", default="Finding Labels",
                   help="labels, findings joined by --sep (default: %(default)s)")
    g.add_argument("--label-columns", help="comma-separated columns of 1/0/-1/blank, one per finding (CheXpert)")
    g.add_argument("--sep", default="|", help="separator of findings in --label-column (default: %(default)s); "
                                             "'none' for one class per image")
    g.add_argument("--none-label", default="No Finding", help="default: %(default)s")
    g.add_argument("--uncertain", default="zeros", choices=["zeros", "ones", "ignore"],
                   help="what -1 in --label-columns becomes (default: %(default)s)")
    g.add_argument("--patient-column", default=None,
                   help=f"patient IDs for group splits; a column you name must exist (default: "
                        f"{DEFAULT_PATIENT_COLUMN!r} when the table has it)")
    g.add_argument("--features", metavar="STORE",
                   help="a feature store written by 'xrayest featurize' (its images, labels and trunk settings)")


def build_parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars or training logs")
    parser = argparse.ArgumentParser(prog="xrayest", description=DESCRIPTION, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("fit", parents=[common], help="train a classifier on DATA_DIR/<class>/<image>",
                       description="Train a classifier on a folder of class sub-folders and save it.")
    _add_table_options(p)
    _add_model_options(p)
    p.add_argument("--out", required=True, metavar="MODEL", help="where to save the model (.keras)")

    p = sub.add_parser("predict", parents=[common], help="predict images or folders with a saved model",
                       description="Predict each image (files, or folders searched recursively).")
    p.add_argument("model", metavar="MODEL", help="a model saved by 'xrayest fit' (.keras)")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files and/or folders")
    p.add_argument("--output", metavar="CSV", help="write path,label,p(class)... here instead of stdout")
    p.add_argument("--device", default="auto", help="auto, cpu, gpu or gpu:N (default: %(default)s)")

    p = sub.add_parser("evaluate", parents=[common], help="score a saved model on a labelled folder",
                       description="Accuracy, per-class report, confusion matrix; --report writes Markdown + PNGs.")
    p.add_argument("model", metavar="MODEL", help="a model saved by 'xrayest fit' (.keras)")
    _add_table_options(p)
    p.add_argument("--report", metavar="DIR", help="write report.md, metrics.json and PNGs here")
    p.add_argument("--classes", help="comma-separated class folders (default: the model's classes)")
    p.add_argument("--device", default="auto", help="auto, cpu, gpu or gpu:N (default: %(default)s)")

    p = sub.add_parser("grid", parents=[common], help="grid-search parameters with cross-validation",
                       description="GridSearchCV over --param NAME=V1,V2,... (backbone features computed once).")
    _add_table_options(p)
    _add_model_options(p)
    p.add_argument("--cv", type=int, default=3,
                   help="folds (stratified; by patient with a patient column; default: %(default)s)")
    p.add_argument("--out", metavar="MODEL", help="save the refitted best model here")

    p = sub.add_parser("featurize", parents=[common], help="compute backbone features into a Zarr store (Dask)",
                       description="Frozen-backbone features of every image under FOLDER, written to a resumable "
                                   "Zarr store: rerun to finish an interrupted run. --workers N starts a local Dask "
                                   "cluster, --scheduler ADDRESS uses a running one; neither: this process.")
    p.add_argument("folder", metavar="FOLDER", help="images (class sub-folders give labels)")
    p.add_argument("--out", required=True, metavar="STORE", help="the Zarr store (e.g. features.zarr)")
    _add_options(p.add_argument_group("trunk (defaults: xrayest.distributed.featurize's)"), FEATURIZE_DEFAULTS,
                 ["backbone", "weights", "image_size", "pooling", "precision", "batch_size", "device", "random_state"],
                 helps={"device": "device of each task: cpu, gpu or gpu:N",
                        "random_state": "seed of random weights"})
    p.add_argument("--chunk", type=int, default=256, help="images per task and per Zarr chunk (default: %(default)s)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, metavar="N", help="start a local Dask cluster of N worker processes")
    where.add_argument("--scheduler", metavar="ADDRESS", help="a running Dask scheduler, e.g. tcp://10.0.0.5:8786")
    p.add_argument("--overwrite", action="store_true", help="replace a store made by another trunk or for other images")

    p = sub.add_parser("demo", parents=[common], help="fit + evaluate end to end (offline, synthetic X-rays)",
                       description="Generate synthetic chest-X-ray-like images (make_synthetic_xrays), fit a "
                                   "small CNN, evaluate on held-out images and write a report. With --data, "
                                   "run the same on DATA_DIR/{train,test}/<class>/ or DATA_DIR/<class>/.")
    p.add_argument("--data", metavar="DIR", help="a real folder instead of synthetic images")
    p.add_argument("--out", default="xrayest-demo", metavar="DIR", help="output folder (default: %(default)s)")
    p.add_argument("--n-images", type=int, default=360, help="synthetic images (default: %(default)s)")
    p.add_argument("--image-size", type=int, default=64, help="default: %(default)s")
    p.add_argument("--epochs", type=int, default=30, help="default: %(default)s")
    p.add_argument("--backbone", default="small_cnn", help="default: %(default)s (trained from scratch)")
    p.add_argument("--weights", default="none", help="default: %(default)s")
    p.add_argument("--classes", help="comma-separated class folders, with --data")
    p.add_argument("--random-state", type=int, default=0)
    return parser


def _version():
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("xrayest")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "dev"


def _say(args, *text):
    if not args.quiet:
        print(*text, flush=True)


def _keras_verbosity(args):
    """0 when quiet; Keras' live progress bar on a terminal, one line per epoch in logs and pipes."""
    if args.quiet:
        return 0
    return 1 if sys.stdout.isatty() else 2


def _class_list(y):
    return ", ".join(sorted(set(map(str, y))))


def _weights(value):
    return None if value is None or value.lower() == "none" else value


def _classes(value):
    return [c.strip() for c in value.split(",") if c.strip()] if value else None


def _store_trunk(args):
    """With --features: the store's trunk settings replace the model options, so its features are used."""
    if not getattr(args, "features", None):
        return
    from .feature_store import FeatureStore

    config = FeatureStore.open(args.features).config
    _refuse_other_trunk(args, config)
    args.backbone, args.weights = config["backbone"], config["weights"] or "none"
    args.image_size, args.precision = config["image_size"][0], config["precision"]
    if config["random_state"] is not None:
        args.random_state = config["random_state"]
    args.store_pooling = config["pooling"]


def _refuse_other_trunk(args, config):
    """A trunk option given with --features that differs from the store's trunk is an error naming both."""
    given = getattr(args, "given", set())
    from .weights import recorded_weights

    mine = {"backbone": args.backbone, "weights": recorded_weights(_weights(args.weights)),
            "image_size": args.image_size,
            "precision": None if args.precision == "auto" else args.precision,
            "random_state": args.random_state if config["random_state"] is not None else None}
    store = {"backbone": config["backbone"], "weights": config["weights"], "image_size": config["image_size"][0],
             "precision": config["precision"], "random_state": config["random_state"]}
    for name in mine:
        if name in given and mine[name] is not None and mine[name] != store[name]:
            option = "--" + name.replace("_", "-")
            raise UserError(f"{option} {getattr(args, name)} conflicts with the feature store {args.features}, whose "
                            f"features come from {option} {store[name] if store[name] is not None else 'none'}: leave "
                            f"{option} out to train on the store's trunk, or featurize a store with "
                            f"{option} {getattr(args, name)}")


def _estimator(args, extra=None):
    from .classifier import XrayCNNClassifier

    _store_trunk(args)
    params = dict(backbone=args.backbone, weights=_weights(args.weights), image_size=args.image_size,
                  epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                  device=args.device, precision=args.precision, random_state=args.random_state,
                  verbose=_keras_verbosity(args))
    if getattr(args, "store_pooling", None):
        params["pooling"] = args.store_pooling
    params.update(_parse_params(args.param) if extra is None else extra)
    _check_param_names(params)
    return XrayCNNClassifier(**params)


def _check_param_names(names):
    from .classifier import XrayCNNClassifier

    valid = XrayCNNClassifier._parameter_constraints
    unknown = sorted(set(names) - set(valid))
    if unknown:
        raise UserError(f"unknown parameter {', '.join(map(repr, unknown))}; XrayCNNClassifier's parameters are: "
                        f"{', '.join(valid)}")


def _check_grid_values(clf, grid_params):
    """Every candidate value is a valid parameter value, checked before any image is read."""
    from sklearn.base import clone

    from .params import validate_params

    _check_param_names(grid_params)
    for name, values in grid_params.items():
        for value in values:
            try:
                validate_params(clone(clf).set_params(**{name: value}))
            except ValueError as exc:
                raise UserError(f"--param {name}: value {value!r} is not valid: {exc}") from None


def _load_folder(path, classes):
    from .datasets import load_image_folder

    return load_image_folder(path, classes=classes, return_paths=True)


def _load_data(args, classes=None):
    """``(X, y, groups, findings)`` from DATA_DIR's class folders, the --labels table, or a --features store."""
    if getattr(args, "features", None):
        from .feature_store import FeatureStore

        store = FeatureStore.open(args.features)
        if store.labels is None:
            raise UserError(f"feature store {args.features} has no labels (featurize a folder of class sub-folders)")
        return store.rows(), store.labels, None, None
    if not args.labels:
        if args.data_dir is None:
            raise UserError("give DATA_DIR (class sub-folders) or --labels TABLE.csv")
        X, y = _load_folder(args.data_dir, classes)
        return X, y, None, None
    from .labels import load_label_table, read_table

    frame = read_table(args.labels)  # once: its columns decide the default patient column
    header = [str(c) for c in frame.columns]
    multi = args.label_columns or (args.sep and args.sep.lower() != "none")
    table = load_label_table(
        frame, args.path_column,
        label_column=None if args.label_columns else args.label_column,
        label_columns=_classes(args.label_columns), sep=args.sep if multi and not args.label_columns else None,
        none_label=args.none_label, uncertain=args.uncertain,
        patient_column=_patient_column(args, header),
        root=args.data_dir if args.data_dir is not None else Path(args.labels).parent)
    return list(table.paths), table.y, table.groups, table.labels if table.y.ndim == 2 else None


def _patient_column(args, header):
    """The patient column of a table: the one named (it must exist), else the default one when present."""
    if args.patient_column is None:
        return DEFAULT_PATIENT_COLUMN if DEFAULT_PATIENT_COLUMN in header else None
    if args.patient_column not in header:
        raise UserError(f"--patient-column {args.patient_column!r} is not a column of {args.labels} "
                        f"(its columns: {', '.join(map(repr, header))})")
    return args.patient_column


def _describe(y, findings, groups):
    what = f"findings {', '.join(findings)}" if findings else f"classes {_class_list(y)}"
    return what + ("" if groups is None else f", {len(set(groups.tolist()))} patients")


def cmd_fit(args):
    X, y, groups, findings = _load_data(args, _classes(args.classes))
    _check_output(args.out, X)
    clf = _estimator(args)
    source = f" (features from {args.features})" if getattr(args, "features", None) else ""
    _say(args, f"fitting {clf.backbone} on {len(X)} images{source}, {_describe(y, findings, groups)}")
    start = time.perf_counter()
    clf.fit(X, y, groups=groups)
    if findings:
        clf.findings_ = findings
    path = clf.save(args.out)
    acc = clf.history_.get("accuracy", [float("nan")])[-1]
    _say(args, f"done in {time.perf_counter() - start:.1f} s ({clf.precision_}); final training accuracy {acc:.3f}; "
               f"saved {path}")
    return 0


def _expand_inputs(inputs):
    from .datasets import list_images

    files = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = list_images(path)
            if not found:
                raise UserError(f"no images found in folder {path}")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"no such file or folder: {path}")
    return [str(p) for p in files]


def _check_output(output, protected):
    """Refuse an output path that is one of the files being read (the model, an input image)."""
    if output is None:
        return
    target = Path(output).resolve()
    for path in protected:
        path = getattr(path, "path", path)  # rows of a feature store name their image file
        if Path(path).resolve() == target:
            raise UserError(f"--output {output} is one of the files being read ({path}); choose another path")
    if target.is_dir():
        raise UserError(f"--output {output} is a folder; give a file path such as predictions.csv")


def _write_atomically(path, write):
    """Write through ``write(fh)`` to a temporary file beside ``path``, renamed over it when complete."""
    import tempfile

    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cmd_predict(args):
    from .loading import load

    files = _expand_inputs(args.inputs)
    _check_output(args.output, [args.model, *files])
    clf = load(args.model, device=args.device)
    proba = clf.predict_proba(files)
    if clf.multilabel_:  # the findings at p >= 0.5, joined as in NIH tables
        names = clf.findings_
        labels = ["|".join(n for n, hit in zip(names, row >= 0.5) if hit) or "none" for row in proba]
    else:
        names = clf.classes_
        labels = clf.classes_[proba.argmax(axis=1)]
    header = ["path", "label", *[f"p_{c}" for c in names]]
    rows = [[f, str(label), *[repr(float(p)) for p in row]] for f, label, row in zip(files, labels, proba)]

    def write(fh):
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)

    if args.output:
        _write_atomically(args.output, write)
        _say(args, f"wrote {len(rows)} predictions to {args.output}")
    else:
        write(sys.stdout)
    return 0


def cmd_evaluate(args):
    import numpy as np

    from .metrics import evaluate
    from .loading import load
    from .report import write_evaluation_report

    clf = load(args.model, device=args.device)
    if clf.multilabel_:
        X, y, _, findings = _load_data(args)
        if findings is None or list(findings) != list(clf.findings_):
            raise UserError(f"the table's findings {findings} are not the model's {clf.findings_}")
        result = (write_evaluation_report(clf, X, y, args.report, findings=findings) if args.report
                  else evaluate(clf, X, y, findings=findings))
    else:
        asked = _classes(args.classes)
        X, y, _, _ = _load_data(args, asked)  # every class there unless --classes picks some
        known = {str(c) for c in clf.classes_}
        unseen = sorted({str(v) for v in np.asarray(y).tolist()} - known)
        if unseen:
            n = int(np.isin(np.asarray(y).astype(str), unseen).sum())
            raise UserError(f"{n} images are labelled {', '.join(map(repr, unseen))}, which the model never saw "
                            f"(it knows {', '.join(sorted(known))}); pass --classes to evaluate a subset")
        y = y.astype(clf.classes_.dtype) if clf.classes_.dtype.kind != "U" else y
        result = write_evaluation_report(clf, X, y, args.report) if args.report else evaluate(clf, X, y)
    print(result)
    if args.report:
        _say(args, f"\nreport written to {Path(args.report) / 'report.md'}")
    return 0


def cmd_grid(args):
    from sklearn.model_selection import GridSearchCV

    grid_params = _parse_params(args.param, grid=True)
    if not grid_params:
        raise UserError("give at least one --param NAME=V1,V2,... to search over")
    clf = _estimator(args, extra={})
    clf.set_params(verbose=0)
    _check_grid_values(clf, grid_params)
    X, y, groups, findings = _load_data(args, _classes(args.classes))
    cv = args.cv
    if groups is not None:  # whole patients per fold
        from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

        cv = GroupKFold(args.cv) if findings else StratifiedGroupKFold(args.cv)
    if findings:  # multi-label: macro ROC AUC over the findings, -1 (uncertain) entries left out
        from .multilabel import masked_roc_auc as scoring
    else:
        scoring = None
    try:
        search = GridSearchCV(clf, grid_params, cv=cv, scoring=scoring, refit=bool(args.out), error_score="raise")
    except ValueError as exc:
        raise UserError(str(exc)) from None
    n = 1
    for values in grid_params.values():
        n *= len(values)
    _say(args, f"searching {n} candidates x {args.cv} folds on {len(X)} images")
    start = time.perf_counter()
    search.fit(X, y, groups=groups)
    results = search.cv_results_
    order = sorted(range(len(results["params"])), key=lambda i: results["rank_test_score"][i])
    metric = "mean AUC" if findings else "mean acc"
    print(f"{'rank':>4}  {metric:>8}  {'std':>6}  params")
    for i in order:
        print(f"{results['rank_test_score'][i]:>4}  {results['mean_test_score'][i]:>8.3f}  "
              f"{results['std_test_score'][i]:>6.3f}  {results['params'][i]}")
    _say(args, f"\nbest: {search.best_params_} ({'mean ROC AUC' if findings else 'mean accuracy'} "
               f"{search.best_score_:.3f}) "
               f"in {time.perf_counter() - start:.1f} s")
    if args.out:
        if findings:
            search.best_estimator_.findings_ = findings
        _say(args, f"saved best model to {search.best_estimator_.save(args.out)}")
    return 0


def cmd_demo(args):
    from sklearn.model_selection import train_test_split

    from .classifier import XrayCNNClassifier
    from .datasets import load_image_folder, make_synthetic_xrays
    from .report import write_evaluation_report

    start = time.perf_counter()
    size = args.image_size
    for name, low in (("n_images", 8), ("image_size", 8), ("epochs", 1)):
        if getattr(args, name) < low:
            raise UserError(f"--{name.replace('_', '-')} must be at least {low}; got {getattr(args, name)}")
    if args.data:
        root = Path(args.data)
        classes = _classes(args.classes)
        if (root / "train").is_dir() and (root / "test").is_dir():
            X_train, y_train = load_image_folder(root / "train", classes=classes, return_paths=True)
            X_test, y_test = load_image_folder(root / "test", classes=classes, return_paths=True)
            from .datasets import find_duplicates

            shared = find_duplicates(X_train, X_test)
            if shared:
                print(f"xrayest demo: warning: {len(shared)} test image(s) are byte-identical to training images "
                      f"(e.g. {shared[0][1]} = {shared[0][0]}); the test score will be too high", file=sys.stderr)
        else:
            X, y = load_image_folder(root, classes=classes, return_paths=True)
            X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, stratify=y,
                                                                random_state=args.random_state)
        source = f"folder {root}"
    else:
        X, y = make_synthetic_xrays(args.n_images, size, random_state=args.random_state)
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, stratify=y,
                                                            random_state=args.random_state)
        source = (f"{args.n_images} synthetic {size}x{size} chest-X-ray-like images (make_synthetic_xrays), not "
                  "real X-rays: the scores show that the pipeline works, not how well it diagnoses")
    _say(args, f"xrayest demo: {source}\n  train {len(X_train)} images, test {len(X_test)} images, "
               f"classes {_class_list(y_train)}")
    clf = XrayCNNClassifier(args.backbone, weights=_weights(args.weights), image_size=size, epochs=args.epochs,
                            batch_size=16, learning_rate=1e-3, hidden_units=(64,), dropout=0.3,
                            validation_split=0.15, random_state=args.random_state, verbose=_keras_verbosity(args))
    _say(args, f"  fitting {args.backbone} (weights={args.weights}) for {args.epochs} epochs ...")
    clf.fit(X_train, y_train)
    _say(args, f"  trained in {clf.precision_} (precision={clf.precision!r})")
    out = Path(args.out)
    model_path = clf.save(out / "model.keras")
    result = write_evaluation_report(clf, X_test, y_test, out, title="xrayest demo: held-out evaluation",
                                     data=f"{source}; training {len(X_train)} images, held out {len(X_test)}")
    print()
    print(result)
    _say(args, f"\nmodel:  {model_path}\nreport: {out / 'report.md'}\n"
               f"total {time.perf_counter() - start:.1f} s")
    return 0


def cmd_featurize(args):
    from .distributed import featurize

    client, cluster = None, None
    if args.workers is not None or args.scheduler:
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise UserError('--workers and --scheduler need Dask: pip install "xrayest[distributed]"') from None
        if args.scheduler:
            client = Client(args.scheduler)
        else:
            if args.workers < 1:
                raise UserError(f"--workers must be at least 1; got {args.workers}")
            cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                                   dashboard_address=None)
            client = Client(cluster)
    where = ("this process" if client is None else f"Dask scheduler {args.scheduler}" if args.scheduler
             else f"a local Dask cluster of {args.workers} worker(s)")
    from .device import resolve_precision

    _say(args, f"featurizing {args.folder} with {args.backbone} ({resolve_precision(args.precision, args.device)}) "
               f"on {where}")
    try:
        report = featurize(args.folder, args.out, backbone=args.backbone, weights=_weights(args.weights),
                           image_size=args.image_size, pooling=args.pooling, precision=args.precision,
                           client=client, chunk=args.chunk, batch_size=args.batch_size, device=args.device,
                           random_state=args.random_state, overwrite=args.overwrite, progress=not args.quiet)
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    from .feature_store import FeatureStore

    print(f"{args.out}: {FeatureStore.open(args.out).describe()}")
    print(f"{report['chunks_computed']} of {report['chunks_total']} chunks computed in {report['seconds']:.1f} s"
          + (f" ({report['images_per_second']:.1f} images/s)" if report["chunks_computed"] else " (already complete)")
          + (f"; {report['chunks_stale']} of them again because images changed since" if report["chunks_stale"]
             else ""))
    return 0


COMMANDS = {"featurize": cmd_featurize, "fit": cmd_fit, "predict": cmd_predict, "evaluate": cmd_evaluate,
            "grid": cmd_grid, "demo": cmd_demo}


@contextlib.contextmanager
def _quiet_native_stderr():
    """Silence TensorFlow's C++ start-up lines (CUDA probing) while it is imported."""
    try:
        saved = os.dup(2)
    except OSError:  # pragma: no cover - no stderr
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    sys.stderr.flush()
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)


def console():
    """The ``xrayest`` command (the console entry point): quiets TensorFlow's start-up chatter for this
    process, then runs :func:`main`.  Called in-process, :func:`main` leaves the environment alone."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2") == "2":  # xrayest's own default: go quieter still
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return main()


def main(argv=None):
    """Run one ``xrayest`` command (``argv`` as on the command line); returns the exit code.

    Changes no process-wide state: Keras' warnings are silenced only while the command runs.
    """
    import warnings

    parser = build_parser()
    args = parser.parse_args(argv)
    with _quiet_native_stderr():
        import tensorflow  # noqa: F401

        from . import classifier  # noqa: F401
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="keras")
        return _run(args)


def _run(args) -> int:
    from .device import DeviceUnavailableError
    from .feature_store import StoreBusyError
    from .trunk import WeightsChangedError
    from .weights import WeightsUnavailableError

    # What a user can cause and fix: bad values, files, a missing GPU or weights.  Anything
    # else (TypeError, RuntimeError from deeper down) is a bug and keeps its traceback.
    try:
        return COMMANDS[args.command](args)
    except (UserError, ValueError, OSError, WeightsUnavailableError, DeviceUnavailableError,
            WeightsChangedError, StoreBusyError) as exc:
        print(f"xrayest {args.command}: error: {_cli_words(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("xrayest: interrupted", file=sys.stderr)
        return 130


def _cli_words(message: str) -> str:
    """A library message in the command line's words: ``weights=...`` advice becomes ``--weights ...``."""
    import re

    message = re.sub(r"weights='([^']*)'", r"--weights \1", message)
    return message.replace("weights=None", "--weights none")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(console())
