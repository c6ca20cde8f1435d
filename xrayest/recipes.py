"""Named training recipes: plain-data parameter sets for :class:`~xrayest.XrayCNNClassifier`.

A recipe is a row of :data:`~xrayest.recipes.RECIPES` (a dict of estimator parameters); :func:`make_recipe` builds
the estimator, with any parameter overridden.  A row of :data:`~xrayest.recipes.CASCADES` (the
parameters of its stages) builds a two-stage :class:`~xrayest.CascadeClassifier`, normal vs infected,
then the infected classes among themselves: ``"sutd_cascade"`` is the published study's, and
``"pediatric_cascade"`` that cascade trained on every image it is given.  A row of
:data:`~xrayest.recipes.VOTES` builds a soft vote (:class:`~xrayest.EnsembleClassifier` over other
recipes' estimators): ``"pediatric_pneumonia"``, for normal / bacterial / viral pediatric films, is a
from-scratch sutd_cnn at 112 px (``"pediatric_cnn"``) and frozen ImageNet Xception features of the lung
fields at 150 px (``"xception_middle"``, ``crop="lungs"``): 24-29 minutes on a 2-core AVX2 CPU (projected).
``"pediatric_pneumonia_full"`` is the slower vote that scores higher in cross-validation: the pediatric
cascade and the Xception member at 299 px (about two hours on such a CPU).
``EnsembleClassifier(make_recipe(name), n_members=3)`` averages seeds of any recipe.

Measured on pediatric_cxr (stratified 15% hold-out, ``benchmarks/bench_pediatric.py``, numbers in
``benchmarks/RESULTS.md``); the hold-out accuracies are listed in the docs, not promised here.

Examples
--------
>>> from xrayest.recipes import CASCADES, RECIPES, VOTES, make_recipe
>>> sorted(RECIPES)
['pediatric_cnn', 'sutd_cnn', 'sutd_residual', 'xception_finetune', 'xception_frozen', 'xception_middle']
>>> sorted(CASCADES), sorted(VOTES)
(['pediatric_cascade', 'sutd_cascade'], ['pediatric_pneumonia', 'pediatric_pneumonia_full'])
>>> make_recipe("sutd_cnn", epochs=2).get_params()["backbone"]
'sutd_cnn'
>>> cascade = make_recipe("sutd_cascade", epochs=1, classes=("normal", "bacterial", "viral"))
>>> [name for name, _, _ in cascade.stages]
['root', 'infected']
>>> vote = make_recipe("pediatric_pneumonia")
>>> cnn, xception = vote.estimator
>>> vote.vote_weights, (cnn.backbone, cnn.image_size, cnn.epochs), (xception.image_size, xception.crop)
([0.5, 0.5], ('sutd_cnn', 112, 26), (150, 'lungs'))
>>> full = make_recipe("pediatric_pneumonia_full")
>>> [type(est).__name__ for est in full.estimator], full.estimator[1].image_size
(['CascadeClassifier', 'XrayCNNClassifier'], 299)
"""

from __future__ import annotations

__all__ = ["RECIPES", "CASCADES", "VOTES", "make_recipe"]

_SCRATCH = dict(weights=None, image_size=150, augment="xray", epochs=35, batch_size=64, learning_rate=1e-3,
                lr_schedule="cosine", pooling="flatten", hidden_units=(256, 128),
                validation_split=0.1)

_SUTD_CNN = {"backbone": "sutd_cnn", **_SCRATCH, "dropout": 0.2}

RECIPES: dict[str, dict] = {
    # The SUTD study's from-scratch CNNs: 150 px grayscale X-rays, random resized crop + rotation,
    # Adam 1e-3, batch 64, 35 epochs (cosine decay added), two dense layers.  Every recipe runs in the
    # estimator's default precision="auto": bfloat16 where the device has it natively, float32 elsewhere.
    "sutd_cnn": _SUTD_CNN,
    "sutd_residual": {"backbone": "sutd_residual", **_SCRATCH, "dropout": 0.3},
    # sutd_cnn trained on every film given, at 112 px (a 3x3 map after its five poolings) for 26 epochs, the
    # cosine schedule spanning them: the from-scratch member of the pediatric_pneumonia vote, about a quarter
    # of the pediatric cascade's training work (docs/training.md: the 30-minute budget).
    "pediatric_cnn": {**_SUTD_CNN, "validation_split": 0.0, "image_size": 112, "epochs": 26},
    # Pretrained ImageNet Xception: frozen (features cached), or its blocks 13-14 fine-tuned on the
    # cached block-12 activation after the head has trained.
    "xception_frozen": dict(backbone="xception", weights="imagenet", image_size=150,
                            hidden_units=(256,), dropout=0.5, epochs=40, batch_size=32, learning_rate=1e-3),
    "xception_finetune": dict(backbone="xception", weights="imagenet", image_size=150,
                              hidden_units=(256,), dropout=0.5, epochs=20, batch_size=32, learning_rate=1e-3,
                              fine_tune=16, fine_tune_epochs=10, fine_tune_learning_rate=1e-4),
    # ImageNet transfer as the literature does it: the films upsampled to Xception's own 299 px, its
    # mid-level features (blocks 1-12, frozen, computed once per image and cached), standardised by
    # BatchNorm, and an L2-penalised linear softmax on them (a logistic regression).
    "xception_middle": dict(backbone="xception_middle", weights="imagenet", image_size=299,
                            hidden_units=(), batch_norm=True, l2=0.01, epochs=20, batch_size=32,
                            learning_rate=1e-3),
}
# Two-stage cascades (normal vs infected, then the infected classes): the parameters of both stages.
CASCADES: dict[str, dict] = {
    "sutd_cascade": RECIPES["sutd_cnn"],
    # The best estimator found for normal / bacterial / viral pediatric X-rays at 150 px, by 5-fold CV
    # (docs/training.md: what each candidate gave): the sutd_cnn cascade trained on every image given.
    # Single sutd_cnn models, seed ensembles, SWA, histogram equalisation, crops and stronger
    # augmentation measured no better.  Part of the pediatric_pneumonia vote below.
    "pediatric_cascade": {**RECIPES["sutd_cnn"], "validation_split": 0.0},
}
# Soft votes: an EnsembleClassifier over the estimators of other recipes (one member each), their
# probabilities averaged with ``vote_weights``.
VOTES: dict[str, dict] = {
    # Normal / bacterial / viral pediatric X-rays in about 30 minutes on a 2-core AVX2 CPU (docs/training.md:
    # what each candidate gave, and the budget): a from-scratch CNN and frozen ImageNet Xception features
    # make different errors; the Xception member sees the lung fields only (crop="lungs": frozen features
    # learned the films' framing, which new patients' films do not share), at the films' own 150 px.
    "pediatric_pneumonia": {"recipes": ["pediatric_cnn", "xception_middle"],
                            "overrides": [{}, {"crop": "lungs", "image_size": 150}], "vote_weights": [0.5, 0.5]},
    # The same idea at about four times the work: the two-stage cascade for 35 epochs at 150 px and the
    # Xception member at its own 299 px; the best 5-fold CV found, about two hours on such a CPU.
    "pediatric_pneumonia_full": {"recipes": ["pediatric_cascade", "xception_middle"],
                                 "overrides": [{}, {"crop": "lungs"}], "vote_weights": [0.5, 0.5]},
}


def make_recipe(name: str, classes=None, normal: str = "normal", **overrides):
    """The estimator of recipe ``name`` with ``overrides`` applied.

    Parameters
    ----------
    name : str
        A key of :data:`~xrayest.recipes.RECIPES`, :data:`~xrayest.recipes.CASCADES` or
        :data:`~xrayest.recipes.VOTES`.
    classes : sequence of str, optional
        For a cascade (alone or in a vote): every label of the task (default normal, bacterial, viral).
    normal : str, default="normal"
        For a cascade: the label of the normal class; the first stage separates it from the
        rest, the second splits the rest.
    **overrides
        Estimator parameters replacing the recipe's (for a cascade: applied to both stages; for a
        vote: to every estimator, except ``random_state``, which seeds the vote's members).
    """
    from .classifier import XrayCNNClassifier

    if not isinstance(name, str):
        raise TypeError(f"make_recipe takes a recipe name (a str); got {type(name).__name__} {name!r}; "
                        f"recipes: {', '.join(_NAMES)}")
    if name in VOTES:
        from .ensemble import EnsembleClassifier

        vote = VOTES[name]
        if not set(vote["recipes"]) & set(CASCADES):
            _no_classes(name, classes, normal)
        seed = overrides.pop("random_state", None)
        own = vote.get("overrides", [{}] * len(vote["recipes"]))  # each member's settings over its recipe's
        members = [make_recipe(recipe, classes=classes, normal=normal, **{**mine, **overrides}) if recipe in CASCADES
                   else make_recipe(recipe, **{**mine, **overrides}) for recipe, mine in zip(vote["recipes"], own)]
        return EnsembleClassifier(members, n_members=1, vote_weights=list(vote["vote_weights"]), random_state=seed)

    if name in CASCADES:
        from .cascade import CascadeClassifier

        labels = list(classes or ("normal", "bacterial", "viral"))
        if normal not in labels or len(labels) < 3:
            raise ValueError(f"{name} needs the normal label {normal!r} and at least two others; got {labels}")
        infected = [label for label in labels if label != normal]
        stage = {**CASCADES[name], **_checked(overrides)}
        return CascadeClassifier([
            ("root", XrayCNNClassifier(**stage), {normal: [normal], "infected": infected}),
            ("infected", XrayCNNClassifier(**stage), None),
        ])
    _no_classes(name, classes, normal)
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; recipes: {', '.join(_NAMES)}")
    return XrayCNNClassifier(**{**RECIPES[name], **_checked(overrides)})


_NAMES = [*RECIPES, *CASCADES, *VOTES]


def _no_classes(name, classes, normal):
    """``classes`` and ``normal`` given for a recipe without a cascade: an error, not a silent no-op."""
    if classes is not None or normal != "normal":
        raise ValueError(f"classes and normal are for the cascade recipes ({', '.join(CASCADES)}) and the votes "
                         f"holding one; recipe {name!r} learns its classes from the labels it is fitted on")


def _checked(overrides: dict) -> dict:
    """``overrides`` when every key is an estimator parameter; else an error listing the valid ones."""
    from .classifier import XrayCNNClassifier

    valid = XrayCNNClassifier().get_params(deep=False)
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(f"make_recipe got {unknown}, which are not XrayCNNClassifier parameters; valid: "
                         f"{', '.join(sorted(valid))}")
    return overrides
