"""TSNEEmbedding: t-SNE as a Pipeline step that can also place new points (openTSNE)."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.utils.validation import check_is_fitted, validate_data

from .atomic import all_or_nothing
from .params import constraints_for, validate_params

__all__ = ["TSNEEmbedding"]


class TSNEEmbedding(TransformerMixin, BaseEstimator):
    """2-D (or 3-D) t-SNE map of features, usable as the last step of a Pipeline.

    ``make_pipeline(FeatureExtractor(...), TSNEEmbedding()).fit_transform(X)`` gives the map of
    the training images; ``transform(X_new)`` then places new images into that same map.

    New points are placed by openTSNE's ``TSNEEmbedding.transform``: each new point starts at
    the median position of its nearest training neighbours and is optimised against the fixed
    training embedding (Poličar, Stražar & Zupan, "openTSNE", JMLR 2024), so the training
    points never move.

    Parameters
    ----------
    n_components : int, default=2
    perplexity : float, default=30.0
        Lowered to ``(n_samples - 1) / 3`` (with a warning) for small sets.
    pca_components : int or None, default=50
        PCA pre-reduction applied first when the features are wider than this (speed, and
        less noise); None to skip.
    n_iter : int, default=500
        Optimisation iterations after the early-exaggeration phase.
    metric : str, default="euclidean"
    random_state : int, optional
    n_jobs : int, default=1

    Attributes
    ----------
    embedding_ : ndarray of shape (n_samples, n_components)
        The map of the training points.
    pca_ : PCA or None
    """

    def __init__(self, n_components=2, *, perplexity=30.0, pca_components=50, n_iter=500, metric="euclidean",
                 random_state=None, n_jobs=1):
        self.n_components = n_components
        self.perplexity = perplexity
        self.pca_components = pca_components
        self.n_iter = n_iter
        self.metric = metric
        self.random_state = random_state
        self.n_jobs = n_jobs

    def _reduce(self, X, fit):
        if fit:
            use_pca = self.pca_components is not None and X.shape[1] > self.pca_components
            self.pca_ = (PCA(min(self.pca_components, *X.shape), random_state=self.random_state).fit(X)
                         if use_pca else None)
        return X if self.pca_ is None else self.pca_.transform(X)

    _parameter_constraints = constraints_for("n_components", "perplexity", "pca_components", "n_iter", "metric",
                                             "random_state", "n_jobs")

    @all_or_nothing
    def fit(self, X, y=None):
        from openTSNE import TSNE

        validate_params(self)
        X = validate_data(self, X, dtype=np.float64, ensure_min_samples=4)
        Z = self._reduce(X, fit=True)
        perplexity = float(self.perplexity)
        limit = (len(X) - 1) / 3
        if perplexity > limit:
            warnings.warn(f"perplexity {perplexity} is too large for {len(X)} samples; using {limit:.1f}",
                          UserWarning, stacklevel=2)
            perplexity = limit
        tsne = TSNE(n_components=self.n_components, perplexity=perplexity, n_iter=self.n_iter, metric=self.metric,
                    random_state=self.random_state, n_jobs=self.n_jobs, neighbors="exact", verbose=False)
        self._tsne = tsne.fit(Z)
        self.embedding_ = np.array(self._tsne, dtype=np.float64, copy=True)  # openTSNE may move its own array
        return self

    def fit_transform(self, X, y=None):
        return self.fit(X, y).embedding_.copy()

    def transform(self, X):
        """Place new points into the training map (training points stay where they are)."""
        check_is_fitted(self, "embedding_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return np.asarray(self._tsne.transform(self._reduce(X, fit=False)))
