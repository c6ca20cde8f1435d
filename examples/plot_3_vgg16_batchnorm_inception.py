"""
VGG16 with BatchNorm and L2, and InceptionV3 fine-tuned past layer 300
======================================================================

Two more BU report models. VGG16 frozen, BatchNormalization on its output, Flatten, Dense 256 with an L2
penalty, Dropout 0.3 and a sigmoid: 21,139,777 parameters at 224 px. InceptionV3 with its first 300
layers frozen and the rest fine-tuned, with ReduceLROnPlateau and early stopping, as the report trained
it; xrayest trains the unfrozen layers on the cached activation where the frozen part ends.

**Full run**: ``python examples/plot_3_vgg16_batchnorm_inception.py`` downloads the ImageNet weights of VGG16
and InceptionV3 through Keras (or, offline, reads them from ``XRAYEST_WEIGHTS_DIR``). The machine this site
was measured on has no network and only Xception's ImageNet weights, so no full-run table of this example is
published yet; the run below is the quick one, and the parameter count it checks is the full model's.
"""

# %%
# VGG16 + BatchNorm + Dense 256 (L2) + Dropout 0.3
# ------------------------------------------------
import _gallery as g  # the examples' shared helpers: examples/_gallery.py

from xrayest import XrayCNNClassifier

args = g.parse_args(__doc__, epochs=40)
epochs = 2 if args.quick else args.epochs
g.mode_line(args)

if g.have_data(args):
    binary = ["covid", "normal"]
    X_train, y_train = g.load(args, "train", binary, per_class=8)
    X_test, y_test = g.load(args, "test", binary, per_class=4)
    vgg16 = XrayCNNClassifier("vgg16", weights=g.weights(args, "vgg16"), image_size=224, pooling="flatten",
                              batch_norm=True, hidden_units=(256,), l2=1e-3, dropout=0.3, learning_rate=1e-4,
                              batch_size=10, epochs=epochs, random_state=0)
    rows = [g.score("VGG16 + BN + Dense 256 (L2) + Dropout 0.3, binary", vgg16, X_train, y_train, X_test, y_test,
                    g.PUBLISHED["binary"])]
    n = vgg16.model_.count_params()
    print(f"VGG16 + BN + Dense 256: {n:,} parameters (published: 21,139,777)")
    assert n == 21_139_777

# %%
# InceptionV3, the first 300 layers frozen
# ----------------------------------------
# ``fine_tune=N`` unfreezes the backbone's last N layers; the report froze ``layers[:300]``.
if g.have_data(args):
    import keras

    size = 150 if args.quick else 299
    n_layers = len(keras.applications.InceptionV3(include_top=False, weights=None,
                                                   input_shape=(size, size, 3)).layers)
    inception = XrayCNNClassifier("inceptionv3", weights=g.weights(args, "inceptionv3"), image_size=size,
                                  pooling="avg", hidden_units=(256,), dropout=0.3, learning_rate=1e-4,
                                  fine_tune=n_layers - 300, reduce_lr=3, early_stopping=6, validation_split=0.2,
                                  batch_size=10, epochs=1 if args.quick else 20, random_state=0)
    rows.append(g.score(f"InceptionV3, layers 300-{n_layers - 1} fine-tuned, binary", inception, X_train, y_train,
                        X_test, y_test, g.PUBLISHED["binary"]))
    print(f"InceptionV3: {n_layers} layers, the last {n_layers - 300} trained; plan: {inception.training_plan_}")
    g.table(rows)

# %%
# The fine-tuning history
# -----------------------
if g.have_data(args):
    from xrayest import plot_history

    history_figure = plot_history(inception.history_, title="InceptionV3 fine-tuned: loss and accuracy per epoch")
