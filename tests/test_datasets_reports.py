"""Image folders, synthetic X-rays, metrics, report and figures."""
import warnings

import json

import numpy as np
import pytest
from PIL import Image

from conftest import require_bu_data, tiny_classifier
from xrayest import evaluate, load_image_folder, make_synthetic_xrays, write_evaluation_report
from xrayest.plotting import plot_class_distribution, plot_confusion_matrix, plot_embedding, plot_history


@pytest.fixture
def messy_folder(tmp_path):
    """PNG/JPEG/BMP/TIFF in modes L, RGB, RGBA, I;16, with an EXIF-rotated JPEG."""
    rng = np.random.default_rng(0)
    (tmp_path / "covid").mkdir()
    (tmp_path / "normal").mkdir()
    gray = rng.integers(0, 255, (30, 20), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "covid" / "a.png")
    Image.fromarray(np.stack([gray] * 3, -1)).save(tmp_path / "covid" / "b.jpg")
    Image.fromarray(np.dstack([gray] * 3 + [np.full_like(gray, 255)]), "RGBA").save(tmp_path / "normal" / "c.png")
    Image.fromarray((gray.astype(np.uint16) * 257)).save(tmp_path / "normal" / "d.tif")
    Image.fromarray(gray).save(tmp_path / "normal" / "e.bmp")
    rotated = Image.fromarray(np.stack([gray] * 3, -1))
    exif = rotated.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise for display
    rotated.save(tmp_path / "normal" / "f.jpg", exif=exif)
    return tmp_path


class TestLoadImageFolder:
    def test_modes_sizes_and_exif(self, messy_folder):
        X, y = load_image_folder(messy_folder, image_size=16)
        assert X.shape == (6, 16, 16, 3) and X.dtype == np.uint8
        assert list(y) == ["covid"] * 2 + ["normal"] * 4
        gray, _ = load_image_folder(messy_folder, image_size=(12, 10), color="grayscale")
        assert gray.shape == (6, 12, 10)
        from xrayest.inputs import read_image

        assert read_image(messy_folder / "normal" / "f.jpg").shape == (20, 30, 3)  # EXIF rotation applied
        tif = read_image(messy_folder / "normal" / "d.tif")
        png = read_image(messy_folder / "covid" / "a.png")
        np.testing.assert_allclose(tif, png, atol=1)  # 16-bit scaled to the 0-255 range

    def test_class_subset_and_paths(self, messy_folder):
        paths, y = load_image_folder(messy_folder, classes=["normal"], return_paths=True)
        assert len(paths) == 4 and set(y) == {"normal"}
        with pytest.raises(ValueError, match=r"class folders \['pneumonia'\] not found"):
            load_image_folder(messy_folder, classes=["pneumonia"])

    def test_corrupt_files_named_or_skipped(self, messy_folder):
        bad = messy_folder / "covid" / "broken.png"
        bad.write_bytes(b"\x89PNG not really")
        with pytest.raises(ValueError, match="broken.png"):
            load_image_folder(messy_folder, image_size=16)
        with pytest.warns(UserWarning, match=r"skipped 1 unreadable file\(s\): .*broken.png"):
            X, y = load_image_folder(messy_folder, image_size=16, on_error="skip")
        assert len(X) == 6

    def test_missing_and_empty(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="image folder not found"):
            load_image_folder(tmp_path / "nope")
        (tmp_path / "covid").mkdir()
        with pytest.raises(ValueError, match="holds no images"):
            load_image_folder(tmp_path)
        with pytest.raises(ValueError, match="image_size"):
            (tmp_path / "covid" / "x.png").write_bytes(b"")
            load_image_folder(tmp_path)

    @pytest.mark.slow
    def test_real_bu_binary_subset(self):
        root = require_bu_data()
        paths, y = load_image_folder(root / "train", classes=["covid", "normal"], return_paths=True)
        assert len(paths) == 129 and sorted(set(y)) == ["covid", "normal"]
        X, y = load_image_folder(root / "test", image_size=64)
        assert X.shape == (36, 64, 64, 3)


class TestSyntheticXrays:
    def test_shapes_balance_and_reproducible(self):
        X, y = make_synthetic_xrays(30, 48, random_state=0)
        assert X.shape == (30, 48, 48) and X.dtype == np.uint8
        assert {c: int((y == c).sum()) for c in set(y)} == {"normal": 10, "pneumonia": 10, "covid": 10}
        X2, y2 = make_synthetic_xrays(30, 48, random_state=0)
        np.testing.assert_array_equal(X, X2)
        with pytest.raises(ValueError, match="subset"):
            make_synthetic_xrays(4, classes=("tuberculosis",))

    def test_labels_carry_signal(self):
        """A plain linear model on pixels beats chance clearly: the classes differ in the images."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import cross_val_score

        X, y = make_synthetic_xrays(150, 32, classes=("normal", "pneumonia"), random_state=0)
        score = cross_val_score(LogisticRegression(max_iter=3000), X.reshape(len(X), -1) / 255.0, y, cv=3).mean()
        assert score > 0.75


class TestEvaluation:
    def test_evaluate_and_report(self, multiclass_images, tmp_path):
        X, y = multiclass_images
        names = np.array(["covid", "normal", "pneumonia"])[y]
        clf = tiny_classifier(epochs=2, validation_split=0.2).fit(X, names)
        result = evaluate(clf, X, names)
        assert result.confusion.shape == (3, 3) and result.confusion.sum() == len(X)
        assert result.accuracy == pytest.approx(np.trace(result.confusion) / len(X))
        assert 0 <= result.roc_auc <= 1 and set(result.per_class) == {"covid", "normal", "pneumonia"}
        assert "confusion matrix" in str(result)
        write_evaluation_report(clf, X, names, tmp_path)
        written = {p.name for p in tmp_path.iterdir()}
        assert {"report.md", "metrics.json", "confusion_matrix.png", "class_distribution.png", "history.png",
                "tsne.png", "gradcam_true_covid.png", "gradcam_true_pneumonia.png"} <= written
        assert json.loads((tmp_path / "metrics.json").read_text())["accuracy"] == pytest.approx(result.accuracy)
        assert "![confusion matrix](confusion_matrix.png)" in (tmp_path / "report.md").read_text()

    def test_binary_auc(self, binary_images):
        X, y = binary_images
        clf = tiny_classifier(epochs=2).fit(X, y)
        result = evaluate(clf, X, y)
        from sklearn.metrics import roc_auc_score

        assert result.roc_auc == pytest.approx(roc_auc_score(y, clf.predict_proba(X)[:, 1]))


class TestFigures:
    def test_figures_have_titles_labels_legends(self):
        fig = plot_history({"loss": [1, 0.5], "accuracy": [0.5, 0.8], "val_loss": [1.1, 0.7],
                            "val_accuracy": [0.4, 0.7]})
        acc, loss = fig.axes
        assert acc.get_title() == "Accuracy" and acc.get_legend() is not None and acc.get_xlabel() == "epoch"
        fig = plot_confusion_matrix(np.array([[3, 1], [0, 4]]), ["covid", "normal"])
        assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["covid", "normal"]
        assert fig.axes[0].get_ylabel() == "true class"
        fig = plot_class_distribution(["a", "b", "b"])
        assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["a", "b"]
        fig = plot_embedding(np.random.rand(6, 2), ["a", "b"] * 3)
        assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["a (3)", "b (3)"]
        with pytest.raises(ValueError, match=r"\(n, 2\)"):
            plot_embedding(np.zeros(5), [0] * 5)


def test_load_image_folder_warns_about_repeated_files(tmp_path):
    """The same bytes under two labels (or twice) are named in a warning; distinct files are not."""
    from PIL import Image

    from xrayest import load_image_folder
    from xrayest.datasets import find_duplicates

    for label in ("a", "b"):
        (tmp_path / label).mkdir()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (8, 8), dtype=np.uint8) for _ in range(3)]
    Image.fromarray(images[0]).save(tmp_path / "a" / "0.png")
    Image.fromarray(images[1]).save(tmp_path / "a" / "1.png")
    Image.fromarray(images[2]).save(tmp_path / "b" / "2.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_image_folder(tmp_path, return_paths=True)
    (tmp_path / "b" / "copy.png").write_bytes((tmp_path / "a" / "0.png").read_bytes())
    with pytest.warns(UserWarning, match=r"1 file\(s\) repeat .*0.png = .*copy.png"):
        load_image_folder(tmp_path, return_paths=True)
    assert find_duplicates([tmp_path / "a" / "1.png"], [tmp_path / "b" / "2.png"]) == []
