"""Evaluation numbers from one call: accuracy, macro-F1, per-class P/R/F1, confusion matrix, ROC AUC."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn import metrics as skm

__all__ = ["Evaluation", "evaluate"]


@dataclass
class Evaluation:
    """What :func:`evaluate` measured; ``str()`` gives a readable report."""

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


def evaluate(estimator, X, y) -> Evaluation:
    """Score a fitted classifier on ``(X, y)``.

    ROC AUC is binary AUC for two classes and one-vs-rest macro AUC for more; it is None
    when ``y`` holds a single class.
    """
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
