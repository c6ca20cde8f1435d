"""Figures (matplotlib): each function returns its Figure and never calls ``plt.show``."""

from __future__ import annotations

import numpy as np

__all__ = ["new_figure", "plot_history", "plot_confusion_matrix", "plot_class_distribution", "plot_embedding",
           "plot_roc_curves"]


def new_figure(ncols=1, width=5.0, height=4.2):
    """A pyplot-free matplotlib Figure with ``ncols`` axes side by side, each ``width`` x ``height`` inches."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend needed

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    axes = fig.subplots(1, ncols)
    return fig, axes


def plot_history(history, title="Training history"):
    """Accuracy and loss per epoch, training and (when present) validation."""
    from matplotlib.ticker import MaxNLocator

    history = getattr(history, "history_", history)
    fig, (ax_acc, ax_loss) = new_figure(2)
    epochs = np.arange(1, len(history["loss"]) + 1)
    for ax, key, label in ((ax_acc, "accuracy", "Accuracy"), (ax_loss, "loss", "Loss")):
        if key in history:
            ax.plot(epochs, history[key], "o-", ms=3, label="train")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], "s--", ms=3, label="validation")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label.lower())
        ax.set_title(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return fig


def plot_confusion_matrix(confusion, classes, title="Confusion matrix", normalize=False):
    """Counts (and row percentages) per true/predicted class."""
    confusion = np.asarray(confusion)
    fig, ax = new_figure(1, 4.8 + 0.4 * len(classes), 4.2 + 0.4 * len(classes))
    rows = confusion.sum(axis=1, keepdims=True).clip(min=1)
    shown = confusion / rows if normalize else confusion
    image = ax.imshow(shown, cmap="Blues", vmin=0)
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of true class" if normalize else "images")
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, [str(c) for c in classes], rotation=30, ha="right")
    ax.set_yticks(ticks, [str(c) for c in classes])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    threshold = shown.max() / 2 if shown.size else 0
    for i in ticks:
        for j in ticks:
            pct = 100 * confusion[i, j] / rows[i, 0]
            ax.text(j, i, f"{confusion[i, j]}\n{pct:.0f}%", ha="center", va="center", fontsize=10,
                    color="white" if shown[i, j] > threshold else "black")
    ax.set_title(title)
    return fig


def plot_class_distribution(y, title="Images per class"):
    """Bar chart of how many images each class has."""
    labels, counts = np.unique(np.asarray(y), return_counts=True)
    fig, ax = new_figure(1, 1.5 + 0.9 * len(labels), 3.6)
    bars = ax.bar([str(c) for c in labels], counts, color="#4c72b0")
    ax.bar_label(bars)
    ax.set_ylabel("images")
    ax.set_title(title)
    ax.margins(y=0.15)
    return fig


def plot_embedding(embedding, y, title="Embedding", ax=None):
    """2-D scatter of an embedding (t-SNE, PCA...) coloured by class, with a legend."""
    embedding = np.asarray(embedding)
    if embedding.ndim != 2 or embedding.shape[1] < 2:
        raise ValueError(f"embedding must have shape (n, 2); got {embedding.shape}")
    fig, ax = new_figure(1, 5.6, 4.8) if ax is None else (ax.figure, ax)
    y = np.asarray(y)
    for label in np.unique(y):
        pts = embedding[y == label]
        ax.scatter(pts[:, 0], pts[:, 1], s=18, alpha=0.8, label=f"{label} ({len(pts)})")
    ax.legend(title="class", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    return fig


def plot_roc_curves(y_true, proba, findings, aucs=None, title="ROC curves (test)"):
    """One ROC curve per finding of a multi-label evaluation; entries of -1 in ``y_true`` are left out.

    ``aucs`` (optional) maps each finding to ``(auc, low, high)`` for the legend.
    """
    from sklearn.metrics import roc_curve

    fig, ax = new_figure(1, width=5.6, height=5.0)
    y_true, proba = np.asarray(y_true), np.asarray(proba)
    for j, name in enumerate(findings):
        known = y_true[:, j] != -1
        if len(np.unique(y_true[known, j])) < 2:
            continue
        fpr, tpr, _ = roc_curve(y_true[known, j], proba[known, j])
        label = str(name)
        if aucs is not None and str(name) in aucs:
            auc, low, high = aucs[str(name)]
            label += f" (AUC {auc:.2f}" + (f", {low:.2f}-{high:.2f})" if np.isfinite(low) else ")")
        ax.plot(fpr, tpr, lw=1.6, label=label)
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=1)
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return fig
