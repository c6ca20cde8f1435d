"""
Small CNNs, a soft-voting ensemble and a randomized search
==========================================================

One BU report trained several small CNNs from scratch with ReduceLROnPlateau, then averaged the
probabilities of 30 repeated runs. Here: ``small_cnn`` on the four classes, a soft-voting ensemble of
runs that differ only in their seed (scikit-learn's ``VotingClassifier``), and a ``RandomizedSearchCV``
over the head's architecture and the learning rate, compared in one table.

**Full run** (``python examples/plot_5_small_cnn_ensemble.py``: 128 px, 40 epochs, 5 seeds, 8 candidates
x 3 folds; the 269 training and 36 test BU images, 4 classes; a 2-core CPU):

=================================  =============  ========  =====
model                              test accuracy  macro-F1  fit s
=================================  =============  ========  =====
small_cnn, one run                 0.667          0.650     87
soft vote of 5 seeds               0.611          0.605     406
best of a randomized search        0.639          0.626     1810
=================================  =============  ========  =====

Published: 0.56-0.75 (4 classes; the report's vote was over 30 runs). 36 test images: one is 2.8 points.
"""

# %%
# One small CNN, then an ensemble of seeds
# ----------------------------------------
import _gallery as g  # the examples' shared helpers: examples/_gallery.py

from xrayest import XrayCNNClassifier

args = g.parse_args(__doc__, epochs=40, runs=5)
epochs = 2 if args.quick else args.epochs
runs = 2 if args.quick else args.runs
size = 64 if args.quick else 128
g.mode_line(args)


def small_cnn(seed=0, **params):
    return XrayCNNClassifier("small_cnn", weights=None, image_size=size, augment="light", reduce_lr=4,
                             validation_split=0.15, hidden_units=(128,), dropout=0.3, learning_rate=1e-3,
                             batch_size=16, epochs=epochs, random_state=seed, **params)


if g.have_data(args):
    from sklearn.ensemble import VotingClassifier

    X_train, y_train = g.load(args, "train", per_class=6)
    X_test, y_test = g.load(args, "test", per_class=3)
    rows = [g.score("small_cnn, one run", small_cnn(), X_train, y_train, X_test, y_test, g.PUBLISHED["4-class"])]
    ensemble = VotingClassifier([(f"seed{i}", small_cnn(i)) for i in range(runs)], voting="soft")
    rows.append(g.score(f"soft vote of {runs} seeds", ensemble, X_train, y_train, X_test, y_test,
                        g.PUBLISHED["4-class"] + " (30-run vote)"))

# %%
# A randomized search over the architecture
# -----------------------------------------
if g.have_data(args):
    from scipy.stats import loguniform, uniform
    from sklearn.model_selection import RandomizedSearchCV, StratifiedKFold

    space = {"hidden_units": [(64,), (128,), (256,), (128, 64)], "dropout": uniform(0.1, 0.5),
             "learning_rate": loguniform(1e-4, 3e-3)}
    search = RandomizedSearchCV(small_cnn(), space, n_iter=2 if args.quick else 8, random_state=0,
                                cv=StratifiedKFold(2 if args.quick else 3, shuffle=True, random_state=0))
    rows.append(g.score("best of a randomized search", search, X_train, y_train, X_test, y_test,
                        g.PUBLISHED["4-class"]))
    print("best:", {k: (float(round(v, 5)) if isinstance(v, float) else v) for k, v in search.best_params_.items()})
    g.table(rows)

# %%
# The single run's training history
# ---------------------------------
if g.have_data(args):
    from xrayest import plot_history

    history_figure = plot_history(search.best_estimator_.history_, title="best small_cnn: loss and accuracy per epoch")
