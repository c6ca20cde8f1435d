"""What the ``xrayest`` commands share: their inputs read and checked, the estimator built from the options,
outputs written whole.

A problem with what the user gave (a folder, a table, a column, a parameter, an output path) is a
:class:`UserError`: one line, exit code 1 (:mod:`xrayest.cli`).
"""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

__all__ = ["UserError", "DEFAULT_PATIENT_COLUMN", "parse_params", "make_estimator", "load_data", "expand_inputs",
           "check_output", "write_atomically"]


class UserError(Exception):
    """A problem with the user's input: reported as one line, exit code 1."""


DEFAULT_PATIENT_COLUMN = "Patient ID"  # the NIH table's


def parse_value(text):
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


def parse_params(items, grid=False):
    params = {}
    for item in items or []:
        if "=" not in item:
            raise UserError(f"--param expects NAME=VALUE, got {item!r}")
        name, value = item.split("=", 1)
        name = name.strip().replace("-", "_")
        if grid:
            params[name] = [parse_value(v) for v in value.split(",")]
        else:
            params[name] = parse_value(value)
    return params


def say(args, *text):
    if not args.quiet:
        print(*text, flush=True)


def keras_verbosity(args):
    """0 when quiet; Keras' live progress bar on a terminal, one line per epoch in logs and pipes."""
    if args.quiet:
        return 0
    return 1 if sys.stdout.isatty() else 2


def class_list(y):
    return ", ".join(sorted(set(map(str, y))))


def weights_option(value):
    return None if value is None or value.lower() == "none" else value


def class_names(value):
    return [c.strip() for c in value.split(",") if c.strip()] if value else None


def store_trunk(args):
    """With --features: the store's trunk settings replace the model options, so its features are used."""
    if not getattr(args, "features", None):
        return
    from .feature_store import FeatureStore

    config = FeatureStore.open(args.features).config
    refuse_other_trunk(args, config)
    args.backbone, args.weights = config["backbone"], config["weights"] or "none"
    args.image_size, args.precision = config["image_size"][0], config["precision"]
    if config["random_state"] is not None:
        args.random_state = config["random_state"]
    args.store_pooling = config["pooling"]


def refuse_other_trunk(args, config):
    """A trunk option given with --features that differs from the store's trunk is an error naming both."""
    given = getattr(args, "given", set())
    from .weights import recorded_weights

    mine = {"backbone": args.backbone, "weights": recorded_weights(weights_option(args.weights)),
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


def make_estimator(args, extra=None):
    from .classifier import XrayCNNClassifier

    store_trunk(args)
    params = dict(backbone=args.backbone, weights=weights_option(args.weights), image_size=args.image_size,
                  epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                  device=args.device, precision=args.precision, random_state=args.random_state,
                  verbose=keras_verbosity(args))
    if getattr(args, "store_pooling", None):
        params["pooling"] = args.store_pooling
    params.update(parse_params(args.param) if extra is None else extra)
    check_param_names(params)
    return XrayCNNClassifier(**params)


def check_param_names(names):
    from .classifier import XrayCNNClassifier

    valid = XrayCNNClassifier._parameter_constraints
    unknown = sorted(set(names) - set(valid))
    if unknown:
        raise UserError(f"unknown parameter {', '.join(map(repr, unknown))}; XrayCNNClassifier's parameters are: "
                        f"{', '.join(valid)}")


def check_grid_values(clf, grid_params):
    """Every candidate value is a valid parameter value, checked before any image is read."""
    from sklearn.base import clone

    from .params import validate_params

    check_param_names(grid_params)
    for name, values in grid_params.items():
        for value in values:
            try:
                validate_params(clone(clf).set_params(**{name: value}))
            except ValueError as exc:
                raise UserError(f"--param {name}: value {value!r} is not valid: {exc}") from None


def load_folder(path, classes):
    from .datasets import load_image_folder

    return load_image_folder(path, classes=classes, return_paths=True)


def load_data(args, classes=None):
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
        X, y = load_folder(args.data_dir, classes)
        return X, y, None, None
    from .labels import load_label_table, read_table

    frame = read_table(args.labels)  # once: its columns decide the default patient column
    header = [str(c) for c in frame.columns]
    multi = args.label_columns or (args.sep and args.sep.lower() != "none")
    table = load_label_table(
        frame, args.path_column,
        label_column=None if args.label_columns else args.label_column,
        label_columns=class_names(args.label_columns), sep=args.sep if multi and not args.label_columns else None,
        none_label=args.none_label, uncertain=args.uncertain,
        patient_column=patient_column(args, header),
        root=args.data_dir if args.data_dir is not None else Path(args.labels).parent)
    return list(table.paths), table.y, table.groups, table.labels if table.y.ndim == 2 else None


def patient_column(args, header):
    """The patient column of a table: the one named (it must exist), else the default one when present."""
    if args.patient_column is None:
        return DEFAULT_PATIENT_COLUMN if DEFAULT_PATIENT_COLUMN in header else None
    if args.patient_column not in header:
        raise UserError(f"--patient-column {args.patient_column!r} is not a column of {args.labels} "
                        f"(its columns: {', '.join(map(repr, header))})")
    return args.patient_column


def describe(y, findings, groups):
    what = f"findings {', '.join(findings)}" if findings else f"classes {class_list(y)}"
    return what + ("" if groups is None else f", {len(set(groups.tolist()))} patients")


def expand_inputs(inputs):
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


def check_output(output, protected):
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


def write_atomically(path, write):
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
