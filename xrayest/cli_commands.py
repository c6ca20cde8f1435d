"""The ``xrayest`` commands, one function each: fit, predict, evaluate, grid, demo and featurize.

Each takes the parsed options and returns the exit code; :mod:`xrayest.cli_inputs` reads and checks
what they are given.
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

from .cli_inputs import (UserError, check_grid_values, check_output, class_list, class_names, describe, expand_inputs,
                         keras_verbosity, load_data, make_estimator, parse_params, say, weights_option,
                         write_atomically)

__all__ = ["COMMANDS"]


def cmd_fit(args):
    X, y, groups, findings = load_data(args, class_names(args.classes))
    check_output(args.out, X)
    clf = make_estimator(args)
    source = f" (features from {args.features})" if getattr(args, "features", None) else ""
    say(args, f"fitting {clf.backbone} on {len(X)} images{source}, {describe(y, findings, groups)}")
    start = time.perf_counter()
    clf.fit(X, y, groups=groups)
    if findings:
        clf.findings_ = findings
    path = clf.save(args.out)
    acc = clf.history_.get("accuracy", [float("nan")])[-1]
    say(args, f"done in {time.perf_counter() - start:.1f} s ({clf.precision_}); final training accuracy {acc:.3f}; "
               f"saved {path}")
    return 0


def cmd_predict(args):
    from .loading import load

    files = expand_inputs(args.inputs)
    check_output(args.output, [args.model, *files])
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
        write_atomically(args.output, write)
        say(args, f"wrote {len(rows)} predictions to {args.output}")
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
        X, y, _, findings = load_data(args)
        if findings is None or list(findings) != list(clf.findings_):
            raise UserError(f"the table's findings {findings} are not the model's {clf.findings_}")
        result = (write_evaluation_report(clf, X, y, args.report, findings=findings) if args.report
                  else evaluate(clf, X, y, findings=findings))
    else:
        asked = class_names(args.classes)
        X, y, _, _ = load_data(args, asked)  # every class there unless --classes picks some
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
        say(args, f"\nreport written to {Path(args.report) / 'report.md'}")
    return 0


def cmd_grid(args):
    from sklearn.model_selection import GridSearchCV

    grid_params = parse_params(args.param, grid=True)
    if not grid_params:
        raise UserError("give at least one --param NAME=V1,V2,... to search over")
    clf = make_estimator(args, extra={})
    clf.set_params(verbose=0)
    check_grid_values(clf, grid_params)
    X, y, groups, findings = load_data(args, class_names(args.classes))
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
    say(args, f"searching {n} candidates x {args.cv} folds on {len(X)} images")
    start = time.perf_counter()
    search.fit(X, y, groups=groups)
    results = search.cv_results_
    order = sorted(range(len(results["params"])), key=lambda i: results["rank_test_score"][i])
    metric = "mean AUC" if findings else "mean acc"
    print(f"{'rank':>4}  {metric:>8}  {'std':>6}  params")
    for i in order:
        print(f"{results['rank_test_score'][i]:>4}  {results['mean_test_score'][i]:>8.3f}  "
              f"{results['std_test_score'][i]:>6.3f}  {results['params'][i]}")
    say(args, f"\nbest: {search.best_params_} ({'mean ROC AUC' if findings else 'mean accuracy'} "
               f"{search.best_score_:.3f}) "
               f"in {time.perf_counter() - start:.1f} s")
    if args.out:
        if findings:
            search.best_estimator_.findings_ = findings
        say(args, f"saved best model to {search.best_estimator_.save(args.out)}")
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
        classes = class_names(args.classes)
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
    say(args, f"xrayest demo: {source}\n  train {len(X_train)} images, test {len(X_test)} images, "
               f"classes {class_list(y_train)}")
    clf = XrayCNNClassifier(args.backbone, weights=weights_option(args.weights), image_size=size, epochs=args.epochs,
                            batch_size=16, learning_rate=1e-3, hidden_units=(64,), dropout=0.3,
                            validation_split=0.15, random_state=args.random_state, verbose=keras_verbosity(args))
    say(args, f"  fitting {args.backbone} (weights={args.weights}) for {args.epochs} epochs ...")
    clf.fit(X_train, y_train)
    say(args, f"  trained in {clf.precision_} (precision={clf.precision!r})")
    out = Path(args.out)
    model_path = clf.save(out / "model.keras")
    result = write_evaluation_report(clf, X_test, y_test, out, title="xrayest demo: held-out evaluation",
                                     data=f"{source}; training {len(X_train)} images, held out {len(X_test)}")
    print()
    print(result)
    say(args, f"\nmodel:  {model_path}\nreport: {out / 'report.md'}\n"
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

    say(args, f"featurizing {args.folder} with {args.backbone} ({resolve_precision(args.precision, args.device)}) "
               f"on {where}")
    try:
        report = featurize(args.folder, args.out, backbone=args.backbone, weights=weights_option(args.weights),
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
