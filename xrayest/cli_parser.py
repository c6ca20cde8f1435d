"""The ``xrayest`` command line's parser: its commands, their options and the defaults they show.

Building it (``xrayest --help``) imports no TensorFlow.
"""

from __future__ import annotations

import argparse

from .cli_inputs import DEFAULT_PATIENT_COLUMN
from .trunk_graph import PRECISIONS

__all__ = ["build_parser", "CLASSIFIER_DEFAULTS", "FEATURIZE_DEFAULTS"]

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
