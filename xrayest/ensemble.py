"""EnsembleClassifier: several seeds of one classifier, fitted with one call, predicting their mean.

A network trained from scratch on a few thousand X-rays lands somewhere different with every seed
(weights, batch order, augmentation): single models of one recipe differ by a few points of
accuracy on the same test images, and their errors only partly overlap.  Averaging the
probabilities of ``n_members`` seeds keeps what they agree on.  The members are clones of
``estimator`` that differ only in ``random_state``; the ensemble is one scikit-learn classifier
(``clone``, ``GridSearchCV`` over ``estimator__*`` parameters, pickling) and saves to one ``.keras``
file that :func:`xrayest.load` reads back.

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

from .params import constraints_for, validate_params
from .seeding import derive_seeds

__all__ = ["EnsembleClassifier", "member_seeds"]


def member_seeds(random_state, n_members: int) -> list[int]:
    """The ``random_state`` of each member: distinct, derived from ``random_state`` (fresh when None)."""
    return derive_seeds(random_state, n_members)


class EnsembleClassifier(ClassifierMixin, BaseEstimator):
    """The mean of ``n_members`` fits of ``estimator``, each with its own ``random_state``.

    Parameters
    ----------
    estimator : XrayCNNClassifier
        The member recipe; cloned for each member with ``random_state`` set (its own
        ``random_state`` is ignored).
    n_members : int, default=3
    random_state : int, optional
        Seeds the members' seeds (``xrayest.ensemble.member_seeds``): two fits with the same value train the
        same members.  None draws fresh seeds.

    Attributes
    ----------
    estimators_ : list of XrayCNNClassifier
    seeds_ : list of int
        The ``random_state`` each member was fitted with.
    classes_ : ndarray
    """

    _parameter_constraints = constraints_for("estimator", "n_members", "random_state")

    def __init__(self, estimator, *, n_members=3, random_state=None):
        self.estimator = estimator
        self.n_members = n_members
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags

    def fit(self, X, y, **fit_params):
        """Fit each member on ``(X, y)`` in turn; ``fit_params`` (``groups``, ...) go to every member."""
        validate_params(self)
        self.seeds_ = member_seeds(self.random_state, self.n_members)
        self.estimators_ = [clone(self.estimator).set_params(random_state=seed).fit(X, y, **fit_params)
                            for seed in self.seeds_]
        self.classes_ = self.estimators_[0].classes_
        return self

    def predict_proba(self, X):
        """The mean of the members' probabilities, columns in ``classes_`` order."""
        check_is_fitted(self, "estimators_")
        total = None
        for member in self.estimators_:
            proba = np.asarray(member.predict_proba(X), dtype=np.float64)
            total = proba if total is None else total + proba
        return total / len(self.estimators_)

    def predict(self, X):
        """The class of highest mean probability."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def save(self, path):
        """Save every member into one ``.keras`` file; :func:`xrayest.load` returns the ensemble."""
        import keras

        from .persistence import plain_params, write_model

        check_is_fitted(self, "estimators_")
        images = keras.Input((None, None, 3), name="images")
        members = [keras.Model(images, member.model_(images), name=f"member_{i}")
                   for i, member in enumerate(self.estimators_)]
        outputs = [member(images) for member in members]
        mean = keras.layers.Average(name="mean")(outputs) if len(outputs) > 1 else outputs[0]
        members_meta = [member.saved_meta() for member in self.estimators_]
        first = members_meta[0]
        meta = {"estimator": type(self).__name__,
                "params": plain_params({k: v for k, v in self.get_params(deep=False).items() if k != "estimator"}),
                "classes": first["classes"], "classes_dtype": first["classes_dtype"],
                "state": {"image_size_": first["state"]["image_size_"], "seeds_": list(self.seeds_),
                          "members": members_meta}}
        return write_model(path, keras.Model(images, mean, name="ensemble"), meta)


def from_saved(model, meta: dict, path, device="auto") -> EnsembleClassifier:
    """The fitted ensemble of a network and metadata written by :meth:`EnsembleClassifier.save`."""
    from .classifier import from_saved as member_from_saved
    from .persistence import CorruptModelError, wrapped_network

    members_meta = meta["state"].get("members")
    if not isinstance(members_meta, list) or not members_meta:
        raise CorruptModelError(f"corrupt or incompatible model file {path}: the ensemble lists no members")
    members = []
    for i, member_meta in enumerate(members_meta):
        network = wrapped_network(model, f"member_{i}", path, f"member {i}")
        members.append(member_from_saved(network, member_meta, path, device))
    params = {k: v for k, v in meta["params"].items() if k in ("n_members", "random_state")}
    ensemble = EnsembleClassifier(clone(members[0]), **params)
    ensemble.estimators_ = members
    ensemble.seeds_ = list(meta["state"].get("seeds_", [m.random_state for m in members]))
    ensemble.classes_ = members[0].classes_
    return ensemble
