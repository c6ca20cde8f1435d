"""
VGG16 transfer learning: binary, then four classes
==================================================

The BU CS542 reports' first model: an ImageNet VGG16, frozen, with Flatten, Dropout 0.2, Dense 256 and a
sigmoid, trained with Adam at 5e-4, batch 10, for 40 epochs on COVID vs normal. Their learning-rate and
dropout sweeps become one ``GridSearchCV`` (the backbone runs once per image for every candidate and
fold), plotted against each parameter; then the 4-class task with VGG16, VGG19 and ResNet50 under a
GlobalMaxPooling + 2 x Dense 512 head, in one table next to the published figures.

**Full run**: ``python examples/plot_1_vgg16_transfer.py`` downloads the ImageNet weights of VGG16, VGG19 and
ResNet50 through Keras (or, offline, reads them from ``XRAYEST_WEIGHTS_DIR``). The machine this site was
measured on has no network and only Xception's ImageNet weights, so no full-run table of this example is
published yet; the run below is the quick one.
"""

# %%
# The data and the model
# ----------------------
import _gallery as g  # the examples' shared helpers: examples/_gallery.py

from xrayest import XrayCNNClassifier

args = g.parse_args(__doc__, epochs=40)
quick = args.quick
epochs = 2 if quick else args.epochs
size = 64 if quick else 224
g.mode_line(args)

if g.have_data(args):
    binary = ["covid", "normal"]
    X_train, y_train = g.load(args, "train", binary, per_class=8)
    X_test, y_test = g.load(args, "test", binary, per_class=4)
    vgg16 = XrayCNNClassifier("vgg16", weights=g.weights(args, "vgg16"), image_size=size, pooling="flatten",
                              hidden_units=(256,), dropout=0.2, learning_rate=5e-4, batch_size=10,
                              epochs=epochs, random_state=0)
    rows = [g.score("VGG16 + Dropout 0.2 + Dense 256, binary", vgg16, X_train, y_train, X_test, y_test,
                    g.PUBLISHED["binary"])]
    print(f"VGG16 + head: {vgg16.model_.count_params():,} parameters at {size} px")
    g.table(rows)

# %%
# The published sweeps as one grid search
# ---------------------------------------
# Each candidate and fold reuses the features of the first: the 3 x 3 grid costs little more than one fit.
if g.have_data(args):
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    grid = {"learning_rate": [1e-3, 5e-4] if quick else [1e-3, 5e-4, 1e-4],
            "dropout": [0.2, 0.5] if quick else [0.2, 0.5, 0.8]}
    search = GridSearchCV(vgg16, grid, cv=StratifiedKFold(2 if quick else 3, shuffle=True, random_state=0))
    search.fit(X_train, y_train)
    results = search.cv_results_
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for ax, name, other in ((axes[0], "learning_rate", "dropout"), (axes[1], "dropout", "learning_rate")):
        for value in grid[other]:
            keep = np.asarray(results[f"param_{other}"]) == value
            xs = np.asarray(results[f"param_{name}"])[keep].astype(float)
            order = np.argsort(xs)
            ax.errorbar(xs[order], results["mean_test_score"][keep][order], yerr=results["std_test_score"][keep][order],
                        marker="o", capsize=3, label=f"{other} = {value:g}")
        ax.set_xlabel(name)
        ax.legend(fontsize=8)
        if name == "learning_rate":
            ax.set_xscale("log")
    axes[0].set_ylabel("CV accuracy")
    fig.suptitle("VGG16 binary: CV accuracy against each swept parameter")
    fig.tight_layout()
    print("best:", search.best_params_, f"CV accuracy {search.best_score_:.3f}")

# %%
# Four classes: VGG16, VGG19 and ResNet50 heads compared
# ------------------------------------------------------
if g.have_data(args):
    X_train4, y_train4 = g.load(args, "train", per_class=6)
    X_test4, y_test4 = g.load(args, "test", per_class=3)
    rows = []
    for backbone in ("vgg16", "vgg19", "resnet50"):
        clf = XrayCNNClassifier(backbone, weights=g.weights(args, backbone), image_size=size, pooling="max",
                                hidden_units=(512, 512), dropout=0.2, learning_rate=5e-4, batch_size=10,
                                epochs=epochs, random_state=0)
        rows.append(g.score(f"{backbone} + GlobalMaxPooling + 2 x Dense 512, 4-class", clf, X_train4, y_train4,
                            X_test4, y_test4, g.PUBLISHED["4-class"]))
    g.table(rows)
