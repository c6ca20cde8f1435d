"""xrayest.lungs: the lung fields found by image processing, and XrayCNNClassifier(crop="lungs")."""

import numpy as np
import pytest

from xrayest import XrayCNNClassifier
from xrayest.lungs import crop_to_lungs, lung_box


def chest(size=150, framing=0.0, seed=0):
    """A synthetic frontal film: bright body, two dark lung fields, air at the sides; ``framing`` widens the
    view (more body and air around the same lungs)."""
    rng = np.random.default_rng(seed)
    n = int(round(size * (1 + framing)))
    film = np.full((n, n), 190.0)
    air = int(0.08 * n + framing * size / 2)
    film[:, :air] = film[:, n - air:] = 8
    off = (n - size) // 2
    top, bottom = off + int(0.22 * size), off + int(0.78 * size)
    film[top:bottom, off + int(0.18 * size):off + int(0.44 * size)] = 70
    film[top:bottom, off + int(0.56 * size):off + int(0.82 * size)] = 70
    film += rng.normal(0, 6, film.shape)
    film = np.clip(film, 0, 255).astype(np.uint8)
    from PIL import Image

    return np.asarray(Image.fromarray(film).resize((size, size), Image.BILINEAR))


def test_the_box_holds_both_lung_fields_and_little_else():
    top, bottom, left, right = lung_box(chest())
    # the fields span rows 33-117 and columns 27-123 of 150
    assert 20 <= top <= 33 and 117 <= bottom <= 130
    assert 15 <= left <= 27 and 123 <= right <= 135


def test_the_crop_removes_the_framing():
    """The same lungs framed tight and framed wide (more body and air around them) crop to nearly the same
    image; uncropped they differ far more."""
    tight, wide = chest(framing=0.0, seed=1), chest(framing=0.4, seed=1)
    cropped = crop_to_lungs(np.stack([tight, wide]))
    plain_gap = np.abs(tight.astype(float) - wide.astype(float)).mean()
    crop_gap = np.abs(cropped[0].astype(float) - cropped[1].astype(float)).mean()
    assert crop_gap < plain_gap / 3


def test_crop_keeps_shape_dtype_and_the_callers_array():
    films = np.stack([chest(seed=s) for s in range(3)])[..., None]
    before = films.copy()
    out = crop_to_lungs(films)
    assert out.shape == films.shape and out.dtype == films.dtype and out is not films
    np.testing.assert_array_equal(films, before)
    wide = (films.astype(np.uint16) * 16)[..., 0]  # 12-bit films: the box is found on their own levels
    assert crop_to_lungs(wide).dtype == np.uint16


def test_any_resolution_gives_the_same_box_in_its_own_pixels():
    from PIL import Image

    small = chest(150)
    large = np.asarray(Image.fromarray(small).resize((600, 600), Image.BILINEAR))
    assert np.allclose(np.array(lung_box(large)) / 4, lung_box(small), atol=3)


@pytest.mark.parametrize("image", [np.zeros((64, 64), np.uint8), np.full((40, 50), 255, np.uint8)])
def test_a_flat_film_keeps_its_whole_frame(image):
    assert lung_box(image) == (0, image.shape[0], 0, image.shape[1])


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="one gray image"):
        lung_box(np.zeros((4, 64, 64)))
    with pytest.raises(ValueError, match="gray images"):
        crop_to_lungs(np.zeros((2, 32, 32, 3), np.uint8))


class TestClassifierCrop:
    @pytest.fixture(scope="class")
    @classmethod
    def films(cls):
        X = np.stack([chest(64, framing=0.3 * (i % 2), seed=i) for i in range(16)])
        return X, np.array(["normal", "viral"] * 8)

    def test_crop_lungs_trains_predicts_saves_and_loads(self, films, tmp_path):
        from PIL import Image

        import xrayest

        X, y = films
        clf = XrayCNNClassifier("small_cnn", weights=None, image_size=32, epochs=1, batch_size=8, crop="lungs",
                                random_state=0).fit(X, y)
        # what the network sees is each film's lung box resized to the input size: the same as fitting the
        # uncropped classifier on those crops
        crops = np.stack([np.asarray(Image.fromarray(film[t:b, lo:hi]).resize((32, 32), Image.BILINEAR))
                          for film, (t, b, lo, hi) in zip(X, map(lung_box, X))])
        plain = XrayCNNClassifier("small_cnn", weights=None, image_size=32, epochs=1, batch_size=8,
                                  random_state=0).fit(crops, y)
        np.testing.assert_allclose(clf.predict_proba(X), plain.predict_proba(crops), atol=5e-3)  # uint8 rounding
        loaded = xrayest.load(clf.save(tmp_path / "crop.keras"))
        assert loaded.crop == "lungs"
        np.testing.assert_allclose(loaded.predict_proba(X), clf.predict_proba(X), atol=1e-5)

    def test_cached_features_of_a_crop_are_not_the_whole_films(self, films):
        """A frozen trunk caches features by image: the cropped films' entries must not answer for the
        uncropped classifier (or the other way round)."""
        X, y = films
        common = dict(weights=None, image_size=32, epochs=1, batch_size=8, random_state=0)
        whole = XrayCNNClassifier("vgg16", **common).fit(X, y)
        cropped = XrayCNNClassifier("vgg16", crop="lungs", **common).fit(X, y)
        assert not np.allclose(whole.transform(X), cropped.transform(X))
        fresh = XrayCNNClassifier("vgg16", crop="lungs", cache_features=False, **common).fit(X, y)
        np.testing.assert_allclose(cropped.transform(X), fresh.transform(X), atol=1e-4)

    def test_crop_files_like_arrays(self, films, tmp_path):
        from PIL import Image

        X, y = films
        paths = []
        for i, film in enumerate(X):
            paths.append(tmp_path / f"{i}.png")
            Image.fromarray(film).save(paths[-1])
        clf = XrayCNNClassifier("vgg16", weights=None, image_size=32, epochs=1, crop="lungs", random_state=0)
        clf.fit(X, y)
        np.testing.assert_allclose(clf.transform([str(p) for p in paths]), clf.transform(X), atol=1e-4)

    def test_a_bad_crop_is_named_at_fit(self, films):
        X, y = films
        with pytest.raises(ValueError, match="crop"):
            XrayCNNClassifier("small_cnn", weights=None, image_size=32, epochs=1, crop="heart").fit(X, y)
