"""Named training recipes: plain-data parameter sets for :class:`~xrayest.XrayCNNClassifier`.

A recipe is a row of :data:`RECIPES` (a dict of estimator parameters); :func:`make_recipe` builds
the estimator, with any parameter overridden.  ``"sutd_cascade"`` builds the published study's
two-stage :class:`~xrayest.CascadeClassifier` (normal vs infected, then bacterial vs viral) from
two ``sutd_cnn`` classifiers.  ``"pediatric_pneumonia"`` builds the best estimator found for that
task, an :class:`~xrayest.EnsembleClassifier` described by :data:`PEDIATRIC_PNEUMONIA`.

Measured on pediatric_cxr (stratified 15% hold-out, ``benchmarks/bench_pediatric.py``, numbers in
``benchmarks/RESULTS.md``); the hold-out accuracies are listed in the docs, not promised here.

Examples
--------
>>> from xrayest.recipes import RECIPES, make_recipe
>>> sorted(RECIPES)
['sutd_cnn', 'sutd_residual', 'xception_finetune', 'xception_frozen']
>>> make_recipe("sutd_cnn", epochs=2).get_params()["backbone"]
'sutd_cnn'
>>> cascade = make_recipe("sutd_cascade", epochs=1, classes=("normal", "bacterial", "viral"))
>>> [name for name, _, _ in cascade.stages]
['root', 'infected']
>>> best = make_recipe("pediatric_pneumonia", random_state=0)
>>> type(best).__name__, best.n_members, best.estimator.get_params()["backbone"]
('EnsembleClassifier', 2, 'sutd_cnn')
"""

from __future__ import annotations

from .augmentation import AUGMENT_PRESETS

__all__ = ["RECIPES", "PEDIATRIC_PNEUMONIA", "make_recipe"]

AUGMENT_XRAY = AUGMENT_PRESETS["xray"]

_SCRATCH = dict(weights=None, image_size=150, augment="xray", epochs=35, batch_size=64, learning_rate=1e-3,
                lr_schedule="cosine", pooling="flatten", hidden_units=(256, 128), precision="bfloat16",
                validation_split=0.1)

RECIPES: dict[str, dict] = {
    # The SUTD study's from-scratch CNNs: 150 px grayscale X-rays, random resized crop + rotation,
    # Adam 1e-3, batch 64, 35 epochs (cosine decay added), two dense layers.
    "sutd_cnn": {"backbone": "sutd_cnn", **_SCRATCH, "dropout": 0.2},
    "sutd_residual": {"backbone": "sutd_residual", **_SCRATCH, "dropout": 0.3},
    # Pretrained ImageNet Xception: frozen (features cached), or its blocks 13-14 fine-tuned on the
    # cached block-12 activation after the head has trained.
    "xception_frozen": dict(backbone="xception", weights="imagenet", image_size=150, precision="bfloat16",
                            hidden_units=(256,), dropout=0.5, epochs=40, batch_size=32, learning_rate=1e-3),
    "xception_finetune": dict(backbone="xception", weights="imagenet", image_size=150, precision="bfloat16",
                              hidden_units=(256,), dropout=0.5, epochs=20, batch_size=32, learning_rate=1e-3,
                              fine_tune=16, fine_tune_epochs=10, fine_tune_learning_rate=1e-4),
}

# The best estimator found for normal / bacterial / viral pediatric X-rays at 150 px (docs/training.md has
# its cross-validation and fit time): an EnsembleClassifier of ``members`` fits of ``member``.
PEDIATRIC_PNEUMONIA = {
    "member": {**RECIPES["sutd_cnn"], "validation_split": 0.0, "epochs": 30,
               "augment": {**AUGMENT_XRAY, "sharpness": 0.3}},
    "n_members": 2,
}


def make_recipe(name: str, classes=None, normal: str = "normal", **overrides):
    """The estimator of recipe ``name`` with ``overrides`` applied.

    Parameters
    ----------
    name : str
        A key of :data:`RECIPES`, ``"sutd_cascade"`` or ``"pediatric_pneumonia"``.
    classes : sequence of str, optional
        For ``"sutd_cascade"``: every label of the task (default normal, bacterial, viral).
    normal : str, default="normal"
        For ``"sutd_cascade"``: the label of the normal class; the first stage separates it
        from the rest, the second splits the rest.
    **overrides
        Estimator parameters replacing the recipe's (for a cascade: applied to both stages; for
        ``"pediatric_pneumonia"``: ``n_members`` and ``random_state`` go to the ensemble, the rest to
        every member).
    """
    from .classifier import XrayCNNClassifier

    if name == "sutd_cascade":
        from .cascade import CascadeClassifier

        labels = list(classes or ("normal", "bacterial", "viral"))
        if normal not in labels or len(labels) < 3:
            raise ValueError(f"sutd_cascade needs the normal label {normal!r} and at least two others; got {labels}")
        infected = [label for label in labels if label != normal]
        stage = {**RECIPES["sutd_cnn"], **_checked(overrides)}
        return CascadeClassifier([
            ("root", XrayCNNClassifier(**stage), {normal: [normal], "infected": infected}),
            ("infected", XrayCNNClassifier(**stage), None),
        ])
    if classes is not None or normal != "normal":
        raise ValueError(f"classes and normal are for the cascade recipe; recipe {name!r} learns its classes from "
                         "the labels it is fitted on")
    if name == "pediatric_pneumonia":
        from .ensemble import EnsembleClassifier

        overrides = dict(overrides)
        ensemble = {key: overrides.pop(key) for key in ("n_members", "random_state") if key in overrides}
        member = XrayCNNClassifier(**{**PEDIATRIC_PNEUMONIA["member"], **_checked(overrides)})
        return EnsembleClassifier(member, **{"n_members": PEDIATRIC_PNEUMONIA["n_members"], **ensemble})
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; recipes: {', '.join(_NAMES)}")
    return XrayCNNClassifier(**{**RECIPES[name], **_checked(overrides)})


_NAMES = [*RECIPES, "sutd_cascade", "pediatric_pneumonia"]


def _checked(overrides: dict) -> dict:
    """``overrides`` when every key is an estimator parameter; else an error listing the valid ones."""
    from .classifier import XrayCNNClassifier

    valid = XrayCNNClassifier().get_params(deep=False)
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(f"make_recipe got {unknown}, which are not XrayCNNClassifier parameters; valid: "
                         f"{', '.join(sorted(valid))}")
    return overrides
