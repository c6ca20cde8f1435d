"""Evaluation numbers from one call: accuracy, macro-F1, per-class P/R/F1, confusion matrix, ROC AUC.

A multi-label classifier (several findings per image) gets :class:`~xrayest.metrics.MultilabelEvaluation`: per-finding
ROC AUC with a bootstrap 95% confidence interval (the field's standard), precision/recall/F1 at 0.5,
and the subset accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn import metrics as skm

__all__ = ["Evaluation", "MultilabelEvaluation", "evaluate", "bootstrap_auc"]


@dataclass
class Evaluation:
    """What :func:`~xrayest.evaluate` measured; ``str()`` gives a readable report."""

    classes: list
    accuracy: float
    macro_f1: float
    roc_auc: float | None
    confusion: np.ndarray
    per_class: dict = field(default_factory=dict)
    report: str = ""
    y_true: np.ndarray | None = None
    y_pred: np.ndarray | None = None
    proba: np.ndarray | None = None

    def as_dict(self) -> dict:
        return {"accuracy": self.accuracy, "macro_f1": self.macro_f1, "roc_auc": self.roc_auc,
                "classes": [str(c) for c in self.classes], "confusion": self.confusion.tolist(),
                "per_class": self.per_class}

    def __str__(self):
        auc = "n/a" if self.roc_auc is None else f"{self.roc_auc:.3f}"
        width = max(len(str(c)) for c in self.classes)
        header = " " * (width + 8) + " ".join(f"{str(c):>{width}}" for c in self.classes)
        rows = [f"{'true ' + str(c):>{width + 7}} " + " ".join(f"{v:>{width}d}" for v in row)
                for c, row in zip(self.classes, self.confusion)]
        return (f"accuracy {self.accuracy:.3f}   macro-F1 {self.macro_f1:.3f}   ROC AUC {auc}\n\n"
                f"{self.report}\nconfusion matrix (rows: true, columns: predicted)\n{header}\n" + "\n".join(rows))


def bootstrap_auc(y_true, score, n_bootstraps=1000, random_state=0, level=0.95):
    """ROC AUC and its percentile bootstrap confidence interval ``(auc, low, high)``.

    Images are resampled with replacement ``n_bootstraps`` times; resamples holding one class
    only are skipped.  ``(nan, nan, nan)`` when ``y_true`` holds one class.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = np.array([0, 1] * 100)
    >>> auc, low, high = bootstrap_auc(y, y + rng.normal(0, 1, 200), n_bootstraps=200)
    >>> bool(low < auc < high), round(auc, 2)
    (True, 0.8)
    """
    y_true, score = np.asarray(y_true), np.asarray(score, dtype=np.float64)
    if len(np.unique(y_true)) < 2:
        return float("nan"), float("nan"), float("nan")
    auc = float(skm.roc_auc_score(y_true, score))
    rng = np.random.default_rng(random_state)
    samples = []
    for _ in range(n_bootstraps):
        rows = rng.integers(0, len(y_true), len(y_true))
        if y_true[rows].min() != y_true[rows].max():
            samples.append(skm.roc_auc_score(y_true[rows], score[rows]))
    if not samples:
        return auc, float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return auc, float(low), float(high)


@dataclass
class MultilabelEvaluation:
    """What :func:`~xrayest.evaluate` measured for a multi-label classifier; ``str()`` gives a readable report."""

    findings: list
    per_finding: dict
    macro_auc: float
    subset_accuracy: float
    y_true: np.ndarray | None = None
    y_pred: np.ndarray | None = None
    proba: np.ndarray | None = None

    def as_dict(self) -> dict:
        return {"findings": [str(f) for f in self.findings], "macro_auc": self.macro_auc,
                "subset_accuracy": self.subset_accuracy, "per_finding": self.per_finding}

    def __str__(self):
        width = max(8, *(len(str(f)) for f in self.findings))
        lines = [f"macro ROC AUC {self.macro_auc:.3f}   subset accuracy {self.subset_accuracy:.3f}", "",
                 f"{'finding':<{width}}  {'AUC':>6}  {'95% CI':>15}  {'precision':>9}  {'recall':>6}  {'F1':>5}  "
                 f"{'positives':>9}"]
        for name in self.findings:
            r = self.per_finding[str(name)]
            ci = f"{r['auc_low']:.3f}-{r['auc_high']:.3f}" if np.isfinite(r["auc_low"]) else "n/a"
            lines.append(f"{str(name):<{width}}  {r['auc']:>6.3f}  {ci:>15}  {r['precision']:>9.3f}  "
                         f"{r['recall']:>6.3f}  {r['f1']:>5.3f}  {r['positives']:>9d}")
        return "\n".join(lines)


def _evaluate_multilabel(estimator, X, y, findings, n_bootstraps, random_state) -> MultilabelEvaluation:
    from .multilabel import masked_subset_accuracy

    y = np.asarray(y)
    proba = estimator.predict_proba(X)
    if y.shape != proba.shape:
        raise ValueError(f"y has shape {y.shape} but the classifier predicts {proba.shape[1]} findings")
    findings = list(findings) if findings is not None else list(range(y.shape[1]))
    if len(findings) != y.shape[1]:
        raise ValueError(f"{len(findings)} finding names for {y.shape[1]} columns of y")
    pred = (proba >= 0.5).astype(np.int64)
    per_finding, aucs = {}, []
    for j, name in enumerate(findings):
        known = y[:, j] != -1  # uncertain entries left out, as in training
        truth, score, guess = y[known, j], proba[known, j], pred[known, j]
        auc, low, high = bootstrap_auc(truth, score, n_bootstraps=n_bootstraps, random_state=random_state)
        p, r, f, _ = skm.precision_recall_fscore_support(truth, guess, average="binary", zero_division=0)
        per_finding[str(name)] = {"auc": auc, "auc_low": low, "auc_high": high, "precision": float(p),
                                  "recall": float(r), "f1": float(f), "positives": int((truth == 1).sum())}
        if np.isfinite(auc):
            aucs.append(auc)
    subset = masked_subset_accuracy(y, pred)
    return MultilabelEvaluation(findings=findings, per_finding=per_finding,
                                macro_auc=float(np.mean(aucs)) if aucs else float("nan"), subset_accuracy=subset,
                                y_true=y, y_pred=pred, proba=proba)


def evaluate(estimator, X, y, findings=None, n_bootstraps=1000, random_state=0):
    """Score a fitted classifier on ``(X, y)``.

    ROC AUC is binary AUC for two classes and one-vs-rest macro AUC for more; it is None
    when ``y`` holds a single class.  A multi-label classifier returns a
    :class:`~xrayest.metrics.MultilabelEvaluation` instead: per-finding ROC AUC with a bootstrap 95% confidence
    interval over ``n_bootstraps`` resamples (``findings`` names the columns of ``y``).
    """
    if getattr(estimator, "multilabel_", False):
        return _evaluate_multilabel(estimator, X, y, findings, n_bootstraps, random_state)
    y = np.asarray(y)
    classes = list(estimator.classes_)
    proba = estimator.predict_proba(X)
    y_pred = np.asarray(classes, dtype=object)[np.argmax(proba, axis=1)].astype(np.asarray(estimator.classes_).dtype)
    labels = np.asarray(estimator.classes_)
    present = np.unique(y)
    roc_auc = None
    if len(present) > 1 and set(present) <= set(labels):
        if len(labels) == 2:
            roc_auc = float(skm.roc_auc_score(y == labels[1], proba[:, 1]))
        else:
            roc_auc = float(skm.roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=labels))
    p, r, f, s = skm.precision_recall_fscore_support(y, y_pred, labels=labels, zero_division=0)
    per_class = {str(c): {"precision": float(pi), "recall": float(ri), "f1": float(fi), "support": int(si)}
                 for c, pi, ri, fi, si in zip(labels, p, r, f, s)}
    return Evaluation(
        classes=classes,
        accuracy=float(skm.accuracy_score(y, y_pred)),
        macro_f1=float(skm.f1_score(y, y_pred, labels=labels, average="macro", zero_division=0)),
        roc_auc=roc_auc,
        confusion=skm.confusion_matrix(y, y_pred, labels=labels),
        per_class=per_class,
        report=skm.classification_report(y, y_pred, labels=labels, target_names=[str(c) for c in labels],
                                         zero_division=0, digits=3),
        y_true=y, y_pred=y_pred, proba=proba,
    )
