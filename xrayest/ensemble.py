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
from .inputs import n_rows
from .params import constraints_for, validate_params
from .seeding import derive_seeds

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
    adapted_to_ : int
        Only on a copy returned by :meth:`adapt`: the number of images it was adapted to.

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
        """Fit each member on ``(X, y)`` in turn; ``fit_params`` (``groups``, ...) go to every member."""
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
        return self

    def predict_proba(self, X):
        """The weighted mean of the members' probabilities, columns in ``classes_`` order."""
        check_is_fitted(self, "estimators_")
        total = None
        for member, weight in zip(self.estimators_, self._member_weights()):
            proba = weight * np.asarray(member.predict_proba(X), dtype=np.float64)
            total = proba if total is None else total + proba
        return total

    def adapt(self, X):
        """A copy adapted to the unlabeled images X of a new site: each member that can be
        (:meth:`~xrayest.XrayCNNClassifier.adapt`, AdaBN: a trained trunk with BatchNorm) is adapted, the others
        (frozen pretrained trunks) kept as they are.  This ensemble is left as it was."""
        import copy

        from .classifier import is_adaptable

        check_is_fitted(self, "estimators_")
        if not is_adaptable(self):
            raise ValueError("adapt re-estimates the BatchNorm statistics of trained trunks; no member of this "
                             "ensemble has one (every trunk is frozen or has no BatchNorm)")
        adapted = copy.copy(self)
        adapted.estimators_ = [member.adapt(X) if is_adaptable(member) else member for member in self.estimators_]
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
                          "n_estimators": len(self._estimators()), "members": members_meta}}
        return write_model(path, keras.Model(images, outputs, name="ensemble"), meta)


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
    return ensemble
