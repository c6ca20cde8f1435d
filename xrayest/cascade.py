"""CascadeClassifier: a hierarchy of classifiers (e.g. normal vs infected, then covid vs other)."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.validation import check_is_fitted

from .atomic import all_or_nothing
from .adaptation import fit_then_adapt, is_adaptable
from .inputs import n_rows, take_rows
from .params import constraints_for, validate_params
from .targets import unlabeled_rows

__all__ = ["CascadeClassifier", "from_saved"]

ROOT = "root"


class CascadeClassifier(ClassifierMixin, BaseEstimator):
    """Hierarchical meta-classifier built from one classifier per decision.

    Parameters
    ----------
    stages : list of (name, estimator, groups)
        ``name`` is the group this stage splits (``"root"``: every image).  ``groups`` maps
        each outcome of the stage to the original labels it covers, or is None to
        predict that group's original labels directly.  An outcome that names another
        stage is split further by it; any other outcome must cover exactly one label.

    Attributes
    ----------
    classes_ : ndarray
        The original labels.
    estimators_ : dict
        Fitted clone of each stage's estimator, by stage name.

    Examples
    --------
    Normal vs infected, then covid vs other pneumonia within the infected, then bacterial vs
    viral within the other pneumonias::

        CascadeClassifier([
            ("root", XrayCNNClassifier(...), {"normal": ["normal"],
                                              "infected": ["covid", "pneumonia_bac", "pneumonia_vir"]}),
            ("infected", XrayCNNClassifier(...), {"covid": ["covid"],
                                                  "pneumonia": ["pneumonia_bac", "pneumonia_vir"]}),
            ("pneumonia", XrayCNNClassifier(...), None),
        ])

    ``predict_proba`` multiplies the probabilities along each path, so rows sum to one;
    ``GridSearchCV`` reaches a stage's parameters as ``<stage>__<param>`` (``infected__dropout``).
    """

    def __init__(self, stages):
        self.stages = stages

    # ----------------------------------------------------------- parameters
    def get_params(self, deep=True):
        """``stages``, and with ``deep`` each stage by name and its parameters as ``<stage>__<param>``."""
        params = {"stages": self.stages}
        if deep:
            for name, estimator, _ in self.stages:
                params[name] = estimator
                for key, value in estimator.get_params(deep=True).items():
                    params[f"{name}__{key}"] = value
        return params

    def set_params(self, **params):
        """Set ``stages``, a stage by name, or a stage's parameter as ``<stage>__<param>``; returns self."""
        stages = list(self.stages)
        if "stages" in params:
            stages = list(params.pop("stages"))
        index = {name: i for i, (name, _, _) in enumerate(stages)}
        nested = {}
        for key, value in params.items():
            name, _, sub = key.partition("__")
            if name not in index:
                raise ValueError(f"invalid parameter {key!r} for CascadeClassifier; stages are {list(index)}")
            if sub:
                nested.setdefault(name, {})[sub] = value
            else:
                stage = stages[index[name]]
                stages[index[name]] = (stage[0], value, stage[2])
        for name, sub_params in nested.items():
            stages[index[name]][1].set_params(**sub_params)
        self.stages = stages
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        return tags

    # ----------------------------------------------------------- structure
    def _plan(self, labels):
        """Check the stages against the labels; return {stage: {outcome: covered labels}}."""
        if not self.stages:
            raise ValueError("stages is empty")
        names = [name for name, _, _ in self.stages]
        if ROOT not in names or len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique and include {ROOT!r}; got {names}")
        covers = {ROOT: set(labels)}
        plan = {}
        pending = [ROOT]
        while pending:
            name = pending.pop()
            groups = dict(self.stages[names.index(name)][2] or {})
            if not groups:
                groups = {label: [label] for label in sorted(covers[name])}
            seen = [label for members in groups.values() for label in members]
            if sorted(seen) != sorted(covers[name]):
                raise ValueError(f"stage {name!r} groups cover {sorted(map(str, seen))}, but it receives "
                                 f"{sorted(map(str, covers[name]))}: each label must be in exactly one group")
            plan[name] = {outcome: list(members) for outcome, members in groups.items()}
            for outcome, members in groups.items():
                if outcome in names:
                    if outcome == name or outcome in plan or outcome in pending:
                        raise ValueError(f"stages form a cycle: stage {name!r} hands images to stage {outcome!r}, "
                                         f"which already receives images from another path; each stage must be "
                                         f"reached once, from {ROOT!r} down")
                    covers[outcome] = set(members)
                    pending.append(outcome)
                elif len(members) != 1:
                    raise ValueError(f"outcome {outcome!r} of stage {name!r} covers {members} but no stage splits it; "
                                     f"add a stage named {outcome!r}")
        unused = set(names) - set(plan)
        if unused:
            raise ValueError(f"stages {sorted(unused)} are never reached from {ROOT!r}")
        return plan

    _parameter_constraints = constraints_for("stages")

    @all_or_nothing
    def fit(self, X, y):
        """Fit each stage on the images that reach it, with the stage's own labels.

        Images labeled -1 (unlabeled films of the site the model is for, as scikit-learn's semi-supervised
        estimators take them) are left out of the stages' training and the fitted cascade is then
        adapted to them (:meth:`adapt`)."""
        rows = unlabeled_rows(y)
        if rows is not None:
            return fit_then_adapt(self, X, y, rows)
        validate_params(self)
        bad = [stage for stage in self.stages if len(stage) != 3 or not isinstance(stage[0], str)
               or not hasattr(stage[1], "fit")]
        if bad:
            raise ValueError(f"CascadeClassifier: each stage must be (name, estimator, groups); got {bad[0]!r}")
        y = np.asarray(y)
        if y.ndim != 1 and not (y.ndim == 2 and y.shape[1] == 1):
            raise ValueError(f"CascadeClassifier splits one class per image; y has shape {y.shape} (a multi-label "
                             "indicator matrix?): fit an XrayCNNClassifier on it instead")
        y = y.reshape(-1)
        if len(y) != n_rows(X):
            raise ValueError(f"X has {len(X)} images but y has {len(y)} labels")
        self.classes_ = np.unique(y)
        self.plan_ = self._plan(self.classes_.tolist())
        estimators = {name: est for name, est, _ in self.stages}
        self.estimators_ = {}
        for name, groups in self.plan_.items():
            to_outcome = {label: outcome for outcome, members in groups.items() for label in members}
            rows = np.flatnonzero(np.isin(y, list(to_outcome)))
            target = np.array([to_outcome[label] for label in y[rows]])
            if len(np.unique(target)) < 2:
                raise ValueError(f"stage {name!r} sees a single outcome in y ({target[:1]}); it needs two or more")
            self.estimators_[name] = clone(estimators[name]).fit(take_rows(X, rows), target)
        return self

    def predict_proba(self, X):
        """Probability of each original label: the product of stage probabilities along its path."""
        check_is_fitted(self, "estimators_")
        stage_proba = {name: (est.classes_, est.predict_proba(X)) for name, est in self.estimators_.items()}
        n = stage_proba[ROOT][1].shape[0]
        out = np.zeros((n, len(self.classes_)))
        column = {label: i for i, label in enumerate(self.classes_)}

        def descend(name, weight):
            classes, proba = stage_proba[name]
            for j, outcome in enumerate(classes):
                p = weight * proba[:, j]
                if outcome in self.plan_ and outcome != name:
                    descend(outcome, p)
                else:
                    out[:, column[self.plan_[name][outcome][0]]] += p

        descend(ROOT, np.ones(n))
        return out

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def adapt(self, X, *, tent_steps=10, tent_learning_rate=1e-3):
        """A copy of this cascade adapted to the unlabeled images X of a new site, stage by stage.

        The root stage is adapted to every image of X (:meth:`~xrayest.XrayCNNClassifier.adapt`: AdaBN and
        ``tent_steps`` TENT steps); each later stage to the images the adapted stages above it send to it,
        as in training, where a stage only sees the images of its group.  A stage that receives fewer than
        two images, or has no BatchNorm to adapt, is kept as it was.  This cascade is left as it was.
        """
        import copy

        check_is_fitted(self, "estimators_")
        adapted = copy.copy(self)
        adapted.estimators_ = dict(self.estimators_)
        pending = [(ROOT, np.arange(n_rows(X)))]
        while pending:
            name, rows = pending.pop()
            stage, images = self.estimators_[name], take_rows(X, rows)
            if is_adaptable(stage) and len(rows) >= 2:
                stage = stage.adapt(images, tent_steps=tent_steps, tent_learning_rate=tent_learning_rate)
            adapted.estimators_[name] = stage
            below = [outcome for outcome in self.plan_[name] if outcome in self.plan_ and outcome != name]
            if below and len(rows):  # route the images on; a last stage sends none further
                routed = stage.predict(images)
                pending += [(outcome, rows[routed == outcome]) for outcome in below]
        adapted.adapted_to_ = n_rows(X)
        return adapted

    def save(self, path):
        """Save every stage into one ``.keras`` file; :func:`xrayest.load` returns the cascade.

        Each fitted stage must be an :class:`~xrayest.XrayCNNClassifier` (their networks are stored
        side by side; the stages' groups and the classes go into the file's metadata).
        """
        from .persistence import write_model

        return write_model(path, *self.network_and_meta())

    def network_and_meta(self):
        """The stages' networks side by side (one ``keras.Model``, images in) and the metadata :meth:`save`
        writes beside them."""
        import keras

        from .classifier import XrayCNNClassifier

        check_is_fitted(self, "estimators_")
        other = [name for name, est in self.estimators_.items() if not isinstance(est, XrayCNNClassifier)]
        if other:
            raise TypeError(f"CascadeClassifier.save stores XrayCNNClassifier stages; stage {other[0]!r} is a "
                            f"{type(self.estimators_[other[0]]).__name__}")
        images = keras.Input((None, None, 3), name="images")
        outputs = [keras.Model(images, est.model_(images), name=f"stage_{i}")(images)
                   for i, est in enumerate(self.estimators_.values())]
        stages_meta = {name: est.saved_meta() for name, est in self.estimators_.items()}
        first = next(iter(stages_meta.values()))
        groups = {name: stage_groups for name, _, stage_groups in self.stages}
        classes = np.asarray(self.classes_)
        meta = {"estimator": type(self).__name__, "params": {},
                "classes": classes.tolist(), "classes_dtype": classes.dtype.str,
                "state": {"image_size_": first["state"]["image_size_"],
                          "plan_": [[name, [[outcome, _plain(members)] for outcome, members in groups.items()]]
                                    for name, groups in self.plan_.items()],
                          "stages": [{"name": name, "groups": _plain_groups(groups[name]), "meta": stage_meta}
                                     for name, stage_meta in stages_meta.items()]}}
        return keras.Model(images, outputs, name="cascade"), meta


def _plain(labels) -> list:
    return np.asarray(labels).tolist()


def _plain_groups(groups):
    return None if groups is None else [[outcome, _plain(members)] for outcome, members in dict(groups).items()]


def from_saved(model, meta: dict, path, device="auto") -> CascadeClassifier:
    """The fitted cascade of a network and metadata written by :meth:`CascadeClassifier.save`."""
    from .classifier import from_saved as stage_from_saved
    from .persistence import CorruptModelError, wrapped_network

    stages_meta = meta["state"].get("stages")
    if not isinstance(stages_meta, list) or not stages_meta:
        raise CorruptModelError(f"corrupt or incompatible model file {path}: the cascade lists no stages")
    stages, estimators = [], {}
    for i, stage in enumerate(stages_meta):
        network = wrapped_network(model, f"stage_{i}", path, f"stage {i}")
        estimator = stage_from_saved(network, stage["meta"], path, device)
        groups = None if stage["groups"] is None else {outcome: list(members) for outcome, members in stage["groups"]}
        stages.append((stage["name"], clone(estimator), groups))
        estimators[stage["name"]] = estimator
    cascade = CascadeClassifier(stages)
    cascade.estimators_ = estimators
    cascade.classes_ = np.asarray(meta["classes"], dtype=np.dtype(meta["classes_dtype"]))
    cascade.plan_ = {name: {outcome: list(members) for outcome, members in groups}
                     for name, groups in meta["state"]["plan_"]}
    return cascade
