"""write_evaluation_report: the metrics and pictures of one evaluation, as Markdown with PNGs beside it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .metrics import evaluate
from .inputs import take_rows
from .plotting import plot_class_distribution, plot_confusion_matrix, plot_history

__all__ = ["write_evaluation_report"]


def write_evaluation_report(estimator, X, y, out_dir, title="xrayest evaluation", tsne=True, gradcam=True,
                            findings=None, data=None):
    """Evaluate a fitted classifier and write ``report.md``, ``metrics.json`` and PNGs to ``out_dir``.

    Pictures: confusion matrix, class distribution, training history, a t-SNE map of the
    classifier's embeddings (``tsne``, 12 images or more) and a Grad-CAM heatmap for the first
    image of each class (``gradcam``, XrayCNNClassifier only).  A multi-label classifier gets
    per-finding ROC AUC with 95% bootstrap intervals, ROC curves and the training history
    (``findings`` names the columns of ``y``).  ``data`` says where the images come from (a line
    of the report, e.g. that they are synthetic).  The model's settings are a table of the
    parameters that differ from the estimator's defaults.

    Returns
    -------
    Evaluation
        The numbers written (see :func:`xrayest.evaluate`).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if getattr(estimator, "multilabel_", False):
        return _multilabel_report(estimator, X, y, out, title, findings)
    result = evaluate(estimator, X, y)
    pictures = {
        "confusion_matrix.png": plot_confusion_matrix(result.confusion, result.classes,
                                                      title="Confusion matrix (test)"),
        "class_distribution.png": plot_class_distribution(y, title="Test images per class"),
    }
    if getattr(estimator, "history_", None):
        pictures["history.png"] = plot_history(estimator.history_)
    if tsne and hasattr(estimator, "transform") and len(result.y_true) >= 12:
        import warnings

        from .manifold import TSNEEmbedding
        from .plotting import plot_embedding

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # perplexity lowered for small test sets
            emb = TSNEEmbedding(random_state=0).fit_transform(estimator.transform(X))
        pictures["tsne.png"] = plot_embedding(emb, result.y_true, title="t-SNE of the head's embeddings (test)")
    if gradcam and hasattr(estimator, "trunk_"):
        from .explain import plot_gradcam

        for label in estimator.classes_:
            rows = np.flatnonzero(result.y_true == label)
            if len(rows):
                image = take_rows(X, [int(rows[0])])[0]
                pictures[f"gradcam_true_{label}.png"] = plot_gradcam(estimator, image, true_label=label)
    for name, fig in pictures.items():
        fig.savefig(out / name, dpi=110)
    (out / "metrics.json").write_text(json.dumps(result.as_dict(), indent=1))
    lines = [
        f"# {title}",
        "",
        *([f"- data: {data}"] if data else []),
        f"- images evaluated: {len(result.y_true)}",
        f"- accuracy: **{result.accuracy:.3f}**, macro-F1: **{result.macro_f1:.3f}**, ROC AUC: "
        + ("n/a" if result.roc_auc is None else f"**{result.roc_auc:.3f}**"),
        "",
        *_settings_table(estimator),
        "",
        "## Per-class report",
        "",
        "```",
        result.report.rstrip(),
        "```",
        "",
        *[f"![{name[:-4].replace('_', ' ')}]({name})\n" for name in pictures],
    ]
    (out / "report.md").write_text("\n".join(lines))
    return result


def _multilabel_report(estimator, X, y, out, title, findings):
    from .plotting import plot_roc_curves

    result = evaluate(estimator, X, y, findings=findings)
    aucs = {name: (r["auc"], r["auc_low"], r["auc_high"]) for name, r in result.per_finding.items()}
    pictures = {"roc_curves.png": plot_roc_curves(result.y_true, result.proba, result.findings, aucs)}
    if getattr(estimator, "history_", None):
        pictures["history.png"] = plot_history(estimator.history_)
    for name, fig in pictures.items():
        fig.savefig(out / name, dpi=110)
    (out / "metrics.json").write_text(json.dumps(result.as_dict(), indent=1))
    lines = [f"# {title}", "", f"- images evaluated: {len(result.y_true)}",
             f"- macro ROC AUC: **{result.macro_auc:.3f}**, subset accuracy: **{result.subset_accuracy:.3f}**",
             "", "## Per finding (AUC with a 95% bootstrap interval; precision/recall at 0.5)", "", "```",
             str(result).split("\n\n", 1)[1], "```", "",
             *[f"![{name[:-4].replace('_', ' ')}]({name})\n" for name in pictures]]
    (out / "report.md").write_text("\n".join(lines))
    return result


def _settings_table(estimator) -> list[str]:
    """The estimator's parameters that differ from its class defaults, as markdown table lines."""
    import inspect

    defaults = {name: p.default for name, p in inspect.signature(type(estimator).__init__).parameters.items()
                if p.default is not inspect.Parameter.empty}
    rows = [(k, v) for k, v in estimator.get_params(deep=False).items()
            if k in defaults and not _same(v, defaults[k])]
    lines = [f"## Model: {type(estimator).__name__}", ""]
    chosen = getattr(estimator, "precision_", None)
    if chosen is not None:  # what precision="auto" (or the parameter) ran as on this machine
        lines += [f"Computed in {chosen} (precision={getattr(estimator, 'precision', chosen)!r}).", ""]
    if not rows:
        return [*lines, "Every parameter at its default."]
    return [*lines, "| parameter | value |", "|---|---|", *(f"| {k} | `{v!r}` |" for k, v in rows), "",
            "Every other parameter at its default."]


def _same(a, b) -> bool:
    try:
        return bool(a == b) and type(a) is type(b)
    except (TypeError, ValueError):
        return a is b
