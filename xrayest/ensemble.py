"""EnsembleClassifier: several seeds of one classifier, or several classifiers, fitted with one call,
predicting their (weighted) mean.

A network trained from scratch on a few thousand X-rays lands somewhere different with every seed
(weights, batch order, augmentation): single models of one recipe differ by a few points of
accuracy on the same test images, and their errors only partly overlap.  Averaging the
probabilities of ``n_members`` seeds keeps what they agree on.  The members are clones of
``estimator`` that differ only in ``random_state``; the ensemble is one scikit-learn classifier
(``clone``, ``GridSearchCV`` over ``estimator__*`` parameters, pickling) and saves to one ``.keras``
file that :func:`xrayest.load` reads back.

Given a list of classifiers (say a CNN trained from scratch and a frozen ImageNet network, which make
different errors), it is a soft vote over them: each is fitted ``n_members`` times, and
``vote_weights`` weighs each classifier's members in the mean.  The members may be cascades.

Examples
--------
>>> import numpy as np
>>> from xrayest import EnsembleClassifier, XrayCNNClassifier
>>> X = np.random.default_rng(0).integers(0, 255, (20, 32, 32), dtype=np.uint8)
>>> y = np.array(["normal", "viral"] * 10)
>>> member = XrayCNNClassifier("small_cnn", weights=None, image_size=32, epochs=1, batch_size=8)
>>> ensemble = EnsembleClassifier(member, n_members=2, random_state=0).fit(X, y)
>>> [m.random_state for m in ensemble.estimators_] == list(ensemble.seeds_)
True
>>> ensemble.predict_proba(X[:3]).shape
(3, 2)
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.validation import check_is_fitted

from .atomic import all_or_nothing
from .adaptation import fit_then_adapt, is_adaptable
from .inputs import n_rows
from .params import constraints_for, validate_params
from .seeding import derive_seeds
from .targets import unlabeled_rows

__all__ = ["EnsembleClassifier", "member_seeds"]


def member_seeds(random_state, n_members: int) -> list[int]:
    """The ``random_state`` of each member: distinct, derived from ``random_state`` (fresh when None)."""
    return derive_seeds(random_state, n_members)


class EnsembleClassifier(ClassifierMixin, BaseEstimator):
    """The mean of ``n_members`` fits of ``estimator`` (or of each of a list of them), each with its own seed.

    Parameters
    ----------
    estimator : XrayCNNClassifier, CascadeClassifier, or a list of them
        The member recipe; cloned for each member with its ``random_state`` set (a cascade's: every
        stage's).  A list: a soft vote, ``n_members`` members of each.
    n_members : int, default=3
        Members per estimator (seeds).
    vote_weights : sequence of float, optional
        With a list of estimators: the weight of each one's members in the mean (default equal).
        Their probabilities are averaged with these weights, normalised to sum to one.
    random_state : int, optional
        Seeds the members' seeds (``xrayest.ensemble.member_seeds``): two fits with the same value train the
        same members.  None draws fresh seeds.

    Attributes
    ----------
    estimators_ : list of classifiers
        Estimator by estimator, seed by seed.
    seeds_ : list of int
        The ``random_state`` each estimator's members were fitted with.
    classes_ : ndarray
    class_prior_ : ndarray
        The share of each class among the labeled training images (single-label y).
    adapted_to_ : int
        Only on a copy returned by :meth:`adapt` (or after a fit with unlabeled images): the number of
        images it was adapted to.
    site_prior_ : ndarray
        Only where :meth:`adapt` estimated it (``priors=True``): the class mix of the new site's images,
        under which ``predict_proba`` answers.

    Examples
    --------
    A soft vote of a CNN from scratch and a frozen pretrained network (here with random weights):

    >>> import numpy as np
    >>> from xrayest import EnsembleClassifier, XrayCNNClassifier
    >>> X = np.random.default_rng(0).integers(0, 255, (12, 32, 32), dtype=np.uint8)
    >>> y = ["normal", "viral"] * 6
    >>> vote = EnsembleClassifier([XrayCNNClassifier("small_cnn", weights=None, image_size=32, epochs=1),
    ...                            XrayCNNClassifier("vgg16", weights=None, image_size=32, epochs=1)],
    ...                           n_members=1, vote_weights=[0.3, 0.7], random_state=0).fit(X, y)
    >>> len(vote.estimators_), vote.predict_proba(X[:2]).shape
    (2, (2, 2))
    """

    _parameter_constraints = constraints_for("estimator", "n_members", "vote_weights", "random_state")

    def __init__(self, estimator, *, n_members=3, vote_weights=None, random_state=None):
        self.estimator = estimator
        self.n_members = n_members
        self.vote_weights = vote_weights
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags

    def _estimators(self) -> list:
        """The estimators the members are clones of (one, or the list given)."""
        return list(self.estimator) if isinstance(self.estimator, (list, tuple)) else [self.estimator]

    def _member_weights(self) -> np.ndarray:
        """The weight of each member in the mean (sums to one; ``vote_weights`` was checked at fit)."""
        kinds = self._estimators()
        weights = np.ones(len(kinds)) if self.vote_weights is None else np.asarray(self.vote_weights, float)
        per_member = np.repeat(weights, len(self.estimators_) // len(kinds))
        return per_member / per_member.sum()

    @all_or_nothing
    def fit(self, X, y, **fit_params):
        """Fit each member on ``(X, y)`` in turn; ``fit_params`` (``groups``, ...) go to every member.

        Images labeled -1 (unlabeled films of the site the model is for, as scikit-learn's semi-supervised
        estimators take them) are left out of the members' training, and the fitted ensemble is then
        adapted to them (:meth:`adapt`, with its defaults)."""
        rows = unlabeled_rows(y)
        if rows is not None:
            return fit_then_adapt(self, X, y, rows, **fit_params)
        validate_params(self)
        kinds = self._estimators()
        if self.vote_weights is not None and len(self.vote_weights) != len(kinds):
            raise ValueError(f"EnsembleClassifier: vote_weights has {len(self.vote_weights)} weights for "
                             f"{len(kinds)} estimator(s)")
        if self.vote_weights is not None and sum(self.vote_weights) <= 0:
            raise ValueError(f"EnsembleClassifier: vote_weights are all zero ({list(self.vote_weights)}); give "
                             "some estimator a positive weight")
        seeds = member_seeds(self.random_state, self.n_members)
        estimators = [with_seed(clone(kind), seed).fit(X, y, **fit_params) for kind in kinds for seed in seeds]
        first = estimators[0].classes_
        for member in estimators[1:]:
            if not np.array_equal(member.classes_, first):
                raise ValueError(f"EnsembleClassifier: members learned other classes ({list(member.classes_)} "
                                 f"against {list(first)})")
        self.seeds_, self.estimators_, self.classes_ = seeds, estimators, first
        self.class_prior_ = _class_prior(y, first)
        return self

    def predict_proba(self, X):
        """The weighted mean of the members' probabilities, columns in ``classes_`` order (under the new site's
        class mix where :meth:`adapt` estimated one, ``site_prior_``)."""
        check_is_fitted(self, "estimators_")
        total = self._vote(X)
        site = getattr(self, "site_prior_", None)
        if site is not None:
            total = total * (site / self.class_prior_)
            total /= total.sum(axis=1, keepdims=True)
        return total

    def _vote(self, X):
        total = None
        for member, weight in zip(self.estimators_, self._member_weights()):
            proba = weight * np.asarray(member.predict_proba(X), dtype=np.float64)
            total = proba if total is None else total + proba
        return total

    def adapt(self, X, *, tent_steps=10, tent_learning_rate=1e-3, priors=False):
        """A copy adapted to the unlabeled images X of a new site, in one call.

        Each member is adapted (:meth:`XrayCNNClassifier.adapt <xrayest.XrayCNNClassifier.adapt>`: AdaBN of a
        trained trunk, ``tent_steps`` TENT steps on its BatchNorm scales and offsets, a frozen trunk's head
        included; cascades stage by stage); a member with no BatchNorm at all is kept as it is.  With
        ``priors=True`` the class mix of X is then estimated from the adapted vote's probabilities by EM
        (:func:`xrayest.label_shift.adapt_to_priors`, Saerens et al. 2002) and the copy's ``predict_proba``
        answers under it (``site_prior_``).  This ensemble is left as it was.

        Parameters
        ----------
        X : array of images or sequence of image paths
            Unlabeled images of the new site (a few hundred; at least 50 for ``priors=True``).
        tent_steps, tent_learning_rate
            As for :meth:`XrayCNNClassifier.adapt <xrayest.XrayCNNClassifier.adapt>`.
        priors : bool, default=False
            Also estimate the new site's class mix (single-label ensembles).
        """
        import copy

        from .label_shift import MIN_BATCH, adapt_to_priors

        check_is_fitted(self, "estimators_")
        if not is_adaptable(self) and not priors:
            raise ValueError("adapt re-estimates BatchNorm statistics and moves BatchNorm scales and offsets; no "
                             "member of this ensemble has BatchNorm (a trained trunk's, or a head's with "
                             "batch_norm=True)")
        if priors and getattr(self, "class_prior_", None) is None:
            raise ValueError("adapt(priors=True) re-estimates the class mix of a single-label ensemble; this one "
                             "has no training class mix (a multi-label y, or a file saved without it)")
        if priors and n_rows(X) < MIN_BATCH:
            raise ValueError(f"adapt(priors=True) estimates the new site's class mix from its images; {n_rows(X)} "
                             f"images are too few (at least {MIN_BATCH})")
        adapted = copy.copy(self)
        adapted.estimators_ = [member.adapt(X, tent_steps=tent_steps, tent_learning_rate=tent_learning_rate)
                               if is_adaptable(member) else member for member in self.estimators_]
        adapted.__dict__.pop("site_prior_", None)
        if priors:
            adapted.site_prior_ = adapt_to_priors(adapted._vote(X), self.class_prior_)[1]
        adapted.adapted_to_ = n_rows(X)
        return adapted

    def predict(self, X):
        """The class of highest mean probability."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def save(self, path):
        """Save every member (classifiers, cascades) into one ``.keras`` file; :func:`xrayest.load` returns the
        ensemble."""
        import keras

        from .persistence import plain_params, write_model

        check_is_fitted(self, "estimators_")
        images = keras.Input((None, None, 3), name="images")
        parts = [member_network(member) for member in self.estimators_]
        members = [keras.Model(images, network(images), name=f"member_{i}") for i, (network, _) in enumerate(parts)]
        outputs = [member(images) for member in members]
        if all(hasattr(member, "model_") for member in self.estimators_):  # classifiers: the plain mean
            outputs = keras.layers.Average(name="mean")(outputs) if len(outputs) > 1 else outputs[0]
        members_meta = [meta for _, meta in parts]
        first = members_meta[0]
        params = {k: v for k, v in self.get_params(deep=False).items() if k != "estimator"}
        meta = {"estimator": type(self).__name__, "params": plain_params(params),
                "classes": first["classes"], "classes_dtype": first["classes_dtype"],
                "state": {"image_size_": first["state"]["image_size_"], "seeds_": list(self.seeds_),
                          **{k: np.asarray(getattr(self, k)).tolist() for k in ("class_prior_", "site_prior_")
                             if getattr(self, k, None) is not None},
                          "n_estimators": len(self._estimators()), "members": members_meta}}
        return write_model(path, keras.Model(images, outputs, name="ensemble"), meta)


def _class_prior(y, classes):
    """The share of each of ``classes`` in a single-label ``y``; None for a multi-label one."""
    values = np.asarray(y)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values.reshape(-1)
    if values.ndim != 1:
        return None
    return np.array([np.mean(values == c) for c in np.asarray(classes).tolist()])


def with_seed(estimator, seed):
    """``estimator`` with ``random_state`` set to ``seed``: its own parameter, or every nested
    ``*__random_state`` (a cascade's stages) when it has none."""
    params = estimator.get_params(deep=True)
    if "random_state" in params:
        return estimator.set_params(random_state=seed)
    nested = {key: seed for key in params if key.endswith("__random_state")}
    return estimator.set_params(**nested) if nested else estimator


def member_network(member):
    """A fitted member's network (images in) and metadata, as its own ``save`` writes them."""
    if hasattr(member, "network_and_meta"):
        return member.network_and_meta()
    if hasattr(member, "model_"):
        return member.model_, member.saved_meta()
    raise TypeError(f"EnsembleClassifier.save stores XrayCNNClassifier and CascadeClassifier members; "
                    f"a member is a {type(member).__name__}")


def from_saved(model, meta: dict, path, device="auto") -> EnsembleClassifier:
    """The fitted ensemble of a network and metadata written by :meth:`EnsembleClassifier.save`."""
    from .classifier import from_saved as member_from_saved
    from .persistence import CorruptModelError, wrapped_network

    members_meta = meta["state"].get("members")
    if not isinstance(members_meta, list) or not members_meta:
        raise CorruptModelError(f"corrupt or incompatible model file {path}: the ensemble lists no members")
    from .cascade import from_saved as cascade_from_saved

    members = []
    for i, member_meta in enumerate(members_meta):
        network = wrapped_network(model, f"member_{i}", path, f"member {i}")
        reader = cascade_from_saved if member_meta.get("estimator") == "CascadeClassifier" else member_from_saved
        members.append(reader(network, member_meta, path, device))
    params = {k: v for k, v in meta["params"].items() if k in ("n_members", "vote_weights", "random_state")}
    n_estimators = int(meta["state"].get("n_estimators", 1))
    per = len(members) // n_estimators
    kinds = [clone(members[k * per]) for k in range(n_estimators)]
    ensemble = EnsembleClassifier(kinds if n_estimators > 1 else kinds[0], **params)
    ensemble.estimators_ = members
    seeds = meta["state"].get("seeds_")  # files written before seeds_ was saved: each member's own
    ensemble.seeds_ = list(seeds) if seeds is not None else [getattr(m, "random_state", None) for m in members]
    ensemble.classes_ = members[0].classes_
    for key in ("class_prior_", "site_prior_"):  # files written before the class mix was saved: none
        value = meta["state"].get(key)
        if value is not None:
            value = np.asarray(value, dtype=np.float64)
            if value.shape != (len(ensemble.classes_),) or not np.all(np.isfinite(value)) or np.any(value < 0):
                raise CorruptModelError(f"corrupt or incompatible model file {path}: {key} {value.tolist()} does not "
                                        f"fit {len(ensemble.classes_)} classes")
            setattr(ensemble, key, value)
    return ensemble
