"""The published SUTD recipe in plain PyTorch beside xrayest, on the same cross-validation folds.

The reference is written from the SUTD report alone, as a PyTorch user would write it: five
conv3x3-BatchNorm-ReLU-maxpool blocks (32-64-64-128-128) on 150 px grayscale, Flatten, Dense 256 and
128 with dropout, 3 outputs; torchvision's RandomResizedCrop(150, scale=(0.7, 1.0)) and
RandomRotation(10) on the training images; Adam 1e-3, batch 64, cross-entropy, a DataLoader with
shuffling, model.eval() to score. No learning-rate schedule (the report has none) unless --cosine.
Each fold's test images are scored after every epoch, so the table shows the last epoch (what a user
gets) beside the best epoch (what a curve read after the fact shows).  Every model is also scored on
bench_pediatric_cv's new-patient proxy (BU CS542's normal / bacterial / viral films at 150 px): the
reference after every epoch, so its proxy curve shows whether an early epoch holds more for new patients.

xrayest runs ``make_recipe(--recipe)`` on the same folds (bench_pediatric_cv's: StratifiedKFold(5,
shuffle, seed 0) over the same stratified --n subsample). Each stack runs in its own process.

PyTorch is not a dependency of xrayest: ``pip install ".[peers]"`` (from PyPI torch brings about 3 GB
of CUDA libraries; CI does not install it). Without torch the PyTorch rows are skipped with the reason.

    python benchmarks/bench_replica.py [--n 1500] [--folds 5] [--epochs 20] [--recipe sutd_cnn]
                                       [--stacks torch,xrayest] [--cosine] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from _common import ROOT, append_results, markdown_table, parse_overrides, record_result, report_result, run_child

CLASSES = ["bacterial", "normal", "viral"]


def folds_and_data(n, n_folds):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from sklearn.model_selection import StratifiedKFold

    from bench_pediatric_cv import load_pediatric

    X, y = load_pediatric(n)
    return X, y, list(StratifiedKFold(n_folds, shuffle=True, random_state=0).split(X, y))


def bu_proxy():
    """bench_pediatric_cv's new-patient proxy: ``(images, labels)``, or ``(None, None)`` without BU CS542."""
    from bench_pediatric_cv import load_bu_proxy

    return load_bu_proxy()


def fold_scores(y, pred):
    from sklearn.metrics import accuracy_score, f1_score, recall_score

    recall = recall_score(y, pred, labels=CLASSES, average=None)
    return {"acc": accuracy_score(y, pred), "f1": f1_score(y, pred, labels=CLASSES, average="macro"),
            **{f"recall_{c}": float(r) for c, r in zip(CLASSES, recall)}}


def run_torch(args):
    """One process: the PyTorch reference on every fold; reports per-fold scores, last and best epoch."""
    import numpy as np
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    torch.set_num_threads(max(1, __import__("os").cpu_count()))
    X, y, folds = folds_and_data(args.n, args.folds)
    X_bu, y_bu = bu_proxy()
    labels = np.searchsorted(CLASSES, y)
    train_tf = transforms.Compose([transforms.ToPILImage(), transforms.RandomResizedCrop(150, scale=(0.7, 1.0)),
                                   transforms.RandomRotation(10), transforms.ToTensor()])
    test_tf = transforms.Compose([transforms.ToPILImage(), transforms.ToTensor()])

    class Images(Dataset):
        def __init__(self, rows, transform, images=X, targets=labels):
            self.rows, self.transform, self.images, self.targets = rows, transform, images, targets

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, i):
            r = self.rows[i]
            return self.transform(self.images[r]), int(self.targets[r])

    def block(c_in, c_out):
        return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]

    def network():
        chans = [1, 32, 64, 64, 128, 128]
        layers = [m for a, b in zip(chans, chans[1:]) for m in block(a, b)]
        return nn.Sequential(*layers, nn.Flatten(), nn.Linear(128 * 4 * 4, 256), nn.ReLU(), nn.Dropout(0.2),
                             nn.Linear(256, 128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, 3))

    results = []
    for f, (train, test) in enumerate(folds):
        torch.manual_seed(f)
        model = network()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.epochs) if args.cosine else None
        loader = DataLoader(Images(train, train_tf), batch_size=64, shuffle=True, num_workers=args.workers,
                            persistent_workers=args.workers > 0)
        test_loader = DataLoader(Images(test, test_tf), batch_size=256)
        bu_loader = (None if X_bu is None else
                     DataLoader(Images(np.arange(len(X_bu)), test_tf, X_bu, np.searchsorted(CLASSES, y_bu)),
                                batch_size=256))
        curve, start = [], time.perf_counter()
        fit_s = 0.0
        for epoch in range(args.epochs):
            model.train()
            t0 = time.perf_counter()
            for images, targets in loader:
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(model(images), targets)
                loss.backward()
                optimizer.step()
            if schedule:
                schedule.step()
            fit_s += time.perf_counter() - t0
            model.eval()

            def predict(loader):
                with torch.no_grad():
                    return np.asarray(CLASSES)[np.concatenate([model(x).argmax(1).numpy() for x, _ in loader])]

            curve.append(fold_scores(y[test], predict(test_loader)))
            if bu_loader is not None:
                bu = fold_scores(y_bu, predict(bu_loader))
                curve[-1].update(bu_acc=bu["acc"], bu_recall_normal=bu["recall_normal"])
        best = max(range(len(curve)), key=lambda e: curve[e]["acc"])
        results.append({"last": curve[-1], "best": curve[best], "best_epoch": best + 1, "fit_s": fit_s,
                        "curve": [round(c["acc"], 3) for c in curve],
                        "bu_curve": [round(c.get("bu_acc", float("nan")), 3) for c in curve]})
        print(f"fold {f}: last {curve[-1]['acc']:.3f} best {curve[best]['acc']:.3f} at epoch {best + 1} "
              f"({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    report_result({"folds": results})


def run_xrayest(args):
    import numpy as np

    from xrayest import make_recipe

    X, y, folds = folds_and_data(args.n, args.folds)
    X_bu, y_bu = bu_proxy()
    overrides = {**json.loads(args.overrides), **({"epochs": args.epochs} if args.epochs else {})}
    results = []
    for f, (train, test) in enumerate(folds):
        clf = make_recipe(args.recipe, random_state=f, **overrides)
        start = time.perf_counter()
        clf.fit(X[train], y[train])
        fit_s = time.perf_counter() - start
        scores = fold_scores(y[test], np.asarray(clf.predict(X[test])))
        if X_bu is not None:
            bu = fold_scores(y_bu, np.asarray(clf.predict(X_bu)))
            scores.update(bu_acc=bu["acc"], bu_recall_normal=bu["recall_normal"])
        results.append({"last": scores, "fit_s": fit_s})
        print(f"fold {f}: {scores['acc']:.3f} ({fit_s:.0f} s)", file=sys.stderr, flush=True)
    report_result({"folds": results})


def summary(values):
    import numpy as np

    values = np.asarray(values, dtype=float)
    return f"{values.mean():.3f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.3f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=0, help="stratified subsample (0: all 4,947)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=35)
    parser.add_argument("--recipe", default="sutd_cnn", help="the xrayest recipe to run on the same folds")
    parser.add_argument("--stacks", default="torch,xrayest")
    parser.add_argument("--cosine", action="store_true", help="cosine learning-rate decay in the PyTorch reference")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader worker processes of the reference")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an xrayest estimator parameter over the recipe's (a Python literal, else a string)")
    parser.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "torch":
        return run_torch(args)
    if args.child == "xrayest":
        return run_xrayest(args)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_pediatric_cv import DATA

    if not DATA.is_dir():
        sys.exit(f"skipped: pediatric_cxr not found at {DATA} (it lives in ../shared beside the repo)")
    overrides = parse_overrides(args.set)
    common = ["--overrides", json.dumps(overrides), "--n", args.n,
              "--folds", args.folds, "--epochs", args.epochs, "--recipe", args.recipe,
              "--workers", args.workers, *(["--cosine"] if args.cosine else [])]
    rows, notes = [], []
    for stack in args.stacks.split(","):
        if stack == "torch":
            try:
                import torch  # noqa: F401
                import torchvision  # noqa: F401
            except ImportError as exc:
                notes.append(f"PyTorch reference skipped: {exc} (pip install '.[peers]')")
                continue
        result = run_child(__file__, [*common, "--child", stack], f"the {stack} run")
        folds = result["folds"]
        name = (f"PyTorch reference{' + cosine' if args.cosine else ''}" if stack == "torch"
                else f"xrayest make_recipe({args.recipe!r}{''.join(f', {k}={v!r}' for k, v in overrides.items())})")
        kinds = ["last", "best"] if stack == "torch" else ["last"]
        for kind in kinds:
            label = name + (", last epoch" if kind == "last" and stack == "torch" else
                            ", best epoch (read off the test curve)" if kind == "best" else "")
            rows.append([label, summary([r[kind]["acc"] for r in folds]), summary([r[kind]["f1"] for r in folds]),
                         *(summary([r[kind][f"recall_{c}"] for r in folds]) for c in ("normal", "bacterial", "viral")),
                         *((summary([r[kind][k] for r in folds]) if k in folds[0][kind] else "-")
                           for k in ("bu_acc", "bu_recall_normal")),
                         f"{sum(r['fit_s'] for r in folds) / len(folds):.0f}"])
        if stack == "torch":
            notes.append("PyTorch test accuracy per epoch, per fold: "
                         + "; ".join(" ".join(map(str, r["curve"])) for r in folds) + ".")
            if "bu_acc" in folds[0]["last"]:
                import numpy as np

                mean = np.mean([r["bu_curve"] for r in folds], axis=0)
                notes.append("PyTorch BU proxy accuracy per epoch, mean over folds: "
                             + " ".join(f"{v:.3f}" for v in mean) + ".")
    table = markdown_table(["model", "CV acc", "macro-F1", "recall normal", "recall bacterial", "recall viral",
                            "BU proxy acc", "BU normal recall", "fit s per fold"], rows)
    append_results(f"bench_replica: the SUTD recipe in PyTorch vs xrayest, {args.folds}-fold CV, "
                   f"{args.n or 4947} pediatric_cxr images, {args.epochs} epochs", table, notes=" ".join(notes))
    if len({row[0].split(",")[0].split(" + ")[0] for row in rows}) > 1:  # both stacks, side by side
        record_result("pediatric_replica", f"pediatric, {args.folds}-fold CV of {args.n or 4947} images, "
                                           f"{args.epochs} epochs, against the published recipe in PyTorch",
                      "; ".join(f"{row[0]}: CV {row[1]}, BU proxy {row[6]}, {row[8]} s per fold" for row in rows))
    print(json.dumps({"rows": len(rows)}))


if __name__ == "__main__":
    main()
