"""
VGG19 with a deep head, and the t-SNE of its last hidden layer
==============================================================

The BU report's VGG19 model: the frozen ImageNet VGG19, Flatten, then Dense 256, 256 and 64 before the
sigmoid: 26,529,473 parameters at 224 px, counted from the model xrayest builds. The 64-unit layer is the
estimator's ``transform``; its t-SNE for the training and test images, coloured by class, shows what the
head separates. A DenseNet121 backbone under the same deep head is the report's variant.

**Full run**: ``python examples/plot_2_vgg19_deep_head_tsne.py`` downloads the ImageNet weights of VGG19 and
DenseNet121 through Keras (or, offline, reads them from ``XRAYEST_WEIGHTS_DIR``). The machine this site was
measured on has no network and only Xception's ImageNet weights, so no full-run table of this example is
published yet; the run below is the quick one, and the parameter count it checks is the full model's.
"""

# %%
# The model, counted
# ------------------
import _gallery as g  # the examples' shared helpers: examples/_gallery.py

from xrayest import XrayCNNClassifier

args = g.parse_args(__doc__, epochs=40)
epochs = 2 if args.quick else args.epochs
g.mode_line(args)

if g.have_data(args):
    binary = ["covid", "normal"]
    X_train, y_train = g.load(args, "train", binary, per_class=8)
    X_test, y_test = g.load(args, "test", binary, per_class=4)
    vgg19 = XrayCNNClassifier("vgg19", weights=g.weights(args, "vgg19"), image_size=224, pooling="flatten",
                              hidden_units=(256, 256, 64), dropout=0.25, learning_rate=1e-4, batch_size=10,
                              epochs=epochs, random_state=0)
    rows = [g.score("VGG19 + 256/256/64, binary", vgg19, X_train, y_train, X_test, y_test, g.PUBLISHED["binary"])]
    n = vgg19.model_.count_params()
    print(f"VGG19 + 256/256/64 head: {n:,} parameters (published: 26,529,473)")
    assert n == 26_529_473

# %%
# t-SNE of the 64-unit layer, train and test
# ------------------------------------------
if g.have_data(args):
    import matplotlib.pyplot as plt
    import numpy as np

    from xrayest import TSNEEmbedding, plot_embedding

    embedded = vgg19.transform(np.concatenate([X_train, X_test]))
    points = TSNEEmbedding(perplexity=min(30.0, (len(embedded) - 1) / 3), random_state=0).fit_transform(embedded)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    plot_embedding(points[: len(X_train)], y_train, title="train", ax=axes[0])
    plot_embedding(points[len(X_train):], y_test, title="test", ax=axes[1])
    fig.suptitle("t-SNE of VGG19's 64-unit layer")
    fig.tight_layout()

# %%
# DenseNet121 under the same deep head
# ------------------------------------
if g.have_data(args):
    densenet = XrayCNNClassifier("densenet121", weights=g.weights(args, "densenet121"), image_size=224,
                                 pooling="avg", hidden_units=(256, 256, 64), dropout=0.25, learning_rate=1e-4,
                                 batch_size=10, epochs=epochs, random_state=0)
    rows.append(g.score("DenseNet121 + 256/256/64, binary", densenet, X_train, y_train, X_test, y_test,
                        g.PUBLISHED["binary"]))
    g.table(rows)
