"""Label-shift adaptation at prediction time: re-estimate the class priors of a batch of new images.

A classifier's probabilities carry the class mix of its training set.  When a new hospital's mix
differs (pediatric pneumonia: trained on 26% normal, tested on 38%), the posteriors can be corrected
without retraining if the images of each class look the same in both places (label shift):
:func:`adapt_to_priors` runs the EM procedure of Saerens, Latinne and Decaestecker (2002,
"Adjusting the outputs of a classifier to new a priori probabilities") over the probabilities of a
batch of new images, estimating the new priors and the posteriors under them together.

When to use it: on a batch of a few hundred images or more from one new place, predicted together,
when the class mix there is expected to differ from the training set's and the classifier's
probabilities are reasonably calibrated.  Not for one image at a time (nothing to estimate from),
and not as a fix for images that look different (covariate shift: other scanners, other exposure),
which it cannot see.  The answer for an image depends on the other images of its batch, by design.

Examples
--------
>>> import numpy as np
>>> from xrayest.label_shift import adapt_to_priors
>>> proba = np.array([[0.9, 0.1], [0.6, 0.4], [0.4, 0.6], [0.2, 0.8]])
>>> adapted, priors = adapt_to_priors(np.repeat(proba, 25, axis=0), train_priors=[0.5, 0.5])
>>> adapted.shape, bool(np.allclose(adapted.sum(axis=1), 1.0)), priors.round(2).tolist()
((100, 2), True, [0.6, 0.4])
"""

from __future__ import annotations

import numpy as np

__all__ = ["adapt_to_priors", "MIN_BATCH"]

# Below this many images the estimated class mix is mostly noise, and EM drives posteriors toward certainty.
MIN_BATCH = 50


def adapt_to_priors(proba, train_priors, *, max_iter: int = 1000, tol: float = 1e-8):
    """Posteriors and class priors of a batch under label shift, by EM (Saerens et al. 2002).

    Parameters
    ----------
    proba : array-like of shape (n_images, n_classes)
        The classifier's ``predict_proba`` on the new batch (rows sum to 1).
    train_priors : array-like of shape (n_classes,)
        The class frequencies the classifier was trained with (e.g. ``np.bincount`` of its ``y``),
        in the columns' order; normalised to sum to 1.
    max_iter : int, default=1000
    tol : float, default=1e-8
        Stop when no prior moves by more than this.

    Returns
    -------
    adapted : ndarray of shape (n_images, n_classes)
        Posteriors under the estimated priors.
    priors : ndarray of shape (n_classes,)
        The estimated class mix of the batch.

    Raises
    ------
    ValueError
        For a batch of one image (its "class mix" is its own prediction, which EM turns into
        certainty).  A batch of fewer than ``MIN_BATCH`` (50) images gets a ``RuntimeWarning``.
    """
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] < 1 or p.shape[1] < 2:
        raise ValueError(f"proba must be (n_images, n_classes) with at least 2 classes; got shape {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0) or not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError("proba must hold finite, non-negative rows that sum to 1 (predict_proba's output)")
    base = np.asarray(train_priors, dtype=np.float64).reshape(-1)
    if base.shape != (p.shape[1],) or not np.all(np.isfinite(base)) or np.any(base <= 0):
        raise ValueError(f"train_priors must be {p.shape[1]} positive numbers, one per column of proba; "
                         f"got {np.asarray(train_priors).tolist()!r}")
    if p.shape[0] < 2:
        raise ValueError("adapt_to_priors estimates the class mix of a batch: one image has none (EM would turn "
                         "its probabilities into certainty); pass a batch of a few hundred images of one site")
    if p.shape[0] < MIN_BATCH:
        import warnings

        warnings.warn(f"adapt_to_priors on {p.shape[0]} images: a class mix estimated from fewer than {MIN_BATCH} "
                      "images is mostly noise, and EM pushes the posteriors toward it", RuntimeWarning, stacklevel=2)
    base = base / base.sum()
    priors, adapted = base.copy(), p
    for _ in range(int(max_iter)):
        weighted = p * (priors / base)
        adapted = weighted / np.maximum(weighted.sum(axis=1, keepdims=True), np.finfo(np.float64).tiny)
        new = adapted.mean(axis=0)
        converged = np.max(np.abs(new - priors)) <= tol
        priors = new
        if converged:
            break
    weighted = p * (priors / base)
    adapted = weighted / np.maximum(weighted.sum(axis=1, keepdims=True), np.finfo(np.float64).tiny)
    return adapted, priors
