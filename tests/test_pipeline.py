"""The image pipeline of phases on images: a compact uint8 store, streamed in shuffled batches."""

import numpy as np
import pytest
from PIL import Image

from conftest import make_images, tiny_classifier
from xrayest.inputs import as_image_source, read_image
from xrayest.pipeline import PackedImages, image_dataset


@pytest.fixture
def png_paths(tmp_path):
    X, y = make_images(10, 40, 2)
    paths = []
    for i, img in enumerate(X):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(img).save(paths[-1])
    return paths, y


def test_files_are_stored_once_as_one_uint8_channel(png_paths):
    paths, _ = png_paths
    store = PackedImages.from_source(as_image_source(paths), (32, 24), chunk=3)
    assert store.array.dtype == np.uint8 and store.array.shape == (10, 32, 24, 1)
    expected = np.stack([read_image(p, (32, 24)) for p in paths[:4]])
    np.testing.assert_array_equal(store.batch([0, 1, 2, 3]), expected)  # exactly what reading gives


def test_a_colour_image_keeps_three_channels(png_paths, tmp_path):
    paths, _ = png_paths
    colour = np.zeros((40, 40, 3), np.uint8)
    colour[..., 0] = 200
    Image.fromarray(colour).save(tmp_path / "red.png")
    store = PackedImages.from_source(as_image_source([*paths, str(tmp_path / "red.png")]), (16, 16), chunk=4)
    assert store.array.shape[-1] == 3
    np.testing.assert_array_equal(store.batch([0]), read_image(paths[0], (16, 16))[None])
    assert store.batch([10])[0, 0, 0].tolist() == [200.0, 0.0, 0.0]


def test_arrays_are_used_as_they_are():
    X, _ = make_images(6, 16, 2)
    store = PackedImages.from_source(as_image_source(X), (32, 32))
    assert np.shares_memory(store.array, X)
    batch = store.batch([5, 0])
    assert batch.dtype == np.float32 and batch.shape == (2, 16, 16, 3)
    batch[:] = 0  # batches are new arrays
    assert X.any()


def test_dataset_covers_every_row_once_per_epoch_reshuffled_and_seeded():
    X, y = make_images(23, 8, 2)
    store = PackedImages.from_source(as_image_source(X), (8, 8))
    rows = np.arange(3, 23)
    weights = np.linspace(0.5, 1.5, 23)

    def epochs(seed):
        ds = image_dataset(store, rows, y, weights, batch_size=6, shuffle=True, seed=seed)
        out = []
        for _ in range(2):
            images, targets, w = zip(*[(a.numpy(), b.numpy(), c.numpy()) for a, b, c in ds])
            out.append((np.concatenate(images), np.concatenate(targets), np.concatenate(w)))
        return out

    first, second = epochs(0)
    for images, targets, w in (first, second):
        assert images.shape == (20, 8, 8, 3)
        order = [int(np.flatnonzero((X[:, :, :, None] == img[..., :1]).all(axis=(1, 2, 3)))[0]) for img in images]
        assert sorted(order) == list(rows)  # each row once
        np.testing.assert_array_equal(targets, y[order])
        np.testing.assert_allclose(w, weights[order])
    assert not np.array_equal(first[0], second[0])  # reshuffled each epoch
    np.testing.assert_array_equal(epochs(0)[0][0], first[0])  # and reproducibly


def test_fit_on_image_files_streams_and_matches_the_composed_model(png_paths):
    paths, y = png_paths
    clf = tiny_classifier(backbone="small_cnn", image_size=16, epochs=2, batch_size=4, validation_split=0.3)
    clf.fit(paths, y)
    assert clf.training_plan_.phases[0].on_features is False and len(clf.history_["val_loss"]) == 2
    images = np.stack([read_image(p, (16, 16)) for p in paths])
    np.testing.assert_allclose(clf.predict_proba(paths)[:, 1], clf.model_.predict(images, verbose=0)[:, 0],
                               rtol=1e-5, atol=1e-6)
