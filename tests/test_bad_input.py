"""Bad input never gives a silent wrong answer: each case of issue 13 ends in a correct result or a
clear error naming the input. See docs/reliability.md for what xrayest promises."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import make_images, require_bu_data, tiny_classifier
from xrayest import load_image_folder
from xrayest.cache import FeatureCache, default_max_bytes
from xrayest.inputs import as_image_source, pixel_scale, read_image


@pytest.fixture(scope="module")
def fitted():
    X, y = make_images(24, 32, 2)
    return tiny_classifier(epochs=2).fit(X, np.array(["covid", "normal"])[y]), X


def save_png(path, array, mode=None):
    from PIL import Image

    Image.fromarray(array, mode=mode).save(path)
    return str(path)


# --------------------------------------------------------------------- silent wrong answers
class TestOneImageIsNotABatch:
    @pytest.mark.parametrize("shape", [(32, 32), (32, 32, 1), (32, 32, 3)])
    def test_single_image_refused_with_the_fix(self, fitted, shape):
        clf, X = fitted
        image = np.zeros(shape, np.uint8)
        with pytest.raises(ValueError, match=r"ONE .*image.*X\[None\]"):
            clf.predict(image)

    def test_the_suggested_fix_works(self, fitted):
        clf, X = fitted
        assert clf.predict(X[0][None]).shape == (1,)
        np.testing.assert_allclose(clf.predict_proba(X[0][None]), clf.predict_proba(X)[:1], atol=1e-6)


class TestBitDepth:
    @pytest.mark.parametrize("peak, expected", [(255, 1.0), (1023, 255 / 1023), (4095, 255 / 4095),
                                                (16383, 255 / 16383), (65535, 255 / 65535)])
    def test_scale_by_bit_depth(self, peak, expected):
        assert pixel_scale(peak) == pytest.approx(expected)

    @pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.int64])
    def test_12_bit_arrays_predict_like_8_bit(self, fitted, dtype):
        clf, X = fitted
        twelve = (X.astype(np.int64) * 4095 // 255).astype(dtype)
        twelve[:, 0, 0] = 4095  # every image reaches its bit depth's peak, as real 12-bit X-rays do
        eight = X.copy()
        eight[:, 0, 0] = 255
        np.testing.assert_allclose(clf.predict_proba(twelve), clf.predict_proba(eight), atol=2e-3)

    def test_bit_depth_is_per_image_not_per_batch(self, fitted):
        clf, X = fitted
        mixed = X.astype(np.uint16)
        mixed[0] = (X[0].astype(np.uint32) * 257).astype(np.uint16)  # one 16-bit image among 8-bit ones
        np.testing.assert_allclose(clf.predict_proba(mixed)[0], clf.predict_proba(X[:1])[0], atol=2e-3)
        np.testing.assert_allclose(clf.predict_proba(mixed)[1:], clf.predict_proba(X[1:]), atol=1e-6)

    def test_16_bit_png_holding_12_bits(self, tmp_path):
        rng = np.random.default_rng(0)
        eight = rng.integers(0, 256, (20, 30), dtype=np.uint8)
        eight[0, 0] = 255
        twelve = (eight.astype(np.uint16) * 16 + eight // 16).astype(np.uint16)  # 0..4095
        path = save_png(tmp_path / "twelve.png", twelve)
        np.testing.assert_allclose(read_image(path)[..., 0], eight, atol=1)

    @pytest.mark.slow
    def test_real_bu_xrays_as_12_and_16_bit_pngs(self, tmp_path):
        from PIL import Image

        files = sorted((require_bu_data() / "test" / "normal").glob("*"))[:3]
        for i, file in enumerate(files):
            with Image.open(file) as img:
                eight = np.asarray(img.convert("L"))
            for bits in (12, 16):
                wide = np.round(eight.astype(np.float64) * (2**bits - 1) / 255).astype(np.uint16)
                wide[0, 0] = 2**bits - 1  # the bit depth's own peak
                path = save_png(tmp_path / f"{i}_{bits}.png", wide)
                read = read_image(path)[..., 0]
                assert np.abs(read[1:] - eight[1:]).max() <= 1, (file.name, bits)


class TestFeatureCacheIntegrity:
    def _fit_with_disk_cache(self, tmp_path):
        X, y = make_images(12, 32, 2)
        clf = tiny_classifier(epochs=2, cache_dir=tmp_path).fit(X, y)
        return clf, X

    @pytest.mark.parametrize("garbage", ["random", "nan", "truncated", "wrong_shape", "not_npz"])
    def test_bad_disk_entries_are_recomputed_with_one_warning(self, tmp_path, garbage):
        from xrayest.cache import FeatureCache

        clf, X = self._fit_with_disk_cache(tmp_path)
        expected = clf.predict_proba(X)
        entries = sorted(tmp_path.rglob("*.npz"))
        assert len(entries) == len(X)
        for path in entries:
            with np.load(path) as entry:
                features, checksum = entry["features"], entry["checksum"]
            if garbage == "random":
                np.savez(path, features=np.random.default_rng(0).normal(size=features.shape).astype(features.dtype),
                         checksum=checksum)
            elif garbage == "nan":
                np.savez(path, features=np.full_like(features, np.nan), checksum=checksum)
            elif garbage == "truncated":
                path.write_bytes(path.read_bytes()[:40])
            elif garbage == "wrong_shape":  # even with a matching checksum
                FeatureCache._write_disk(path, np.zeros(features.size + 3, features.dtype))
            else:
                path.write_bytes(b"not a feature file")
        fresh = FeatureCache(directory=tmp_path)
        from xrayest import cache as cache_module

        cache_module._DISK_CACHES[str(Path(tmp_path).resolve())] = fresh  # a new process reading the folder
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            np.testing.assert_allclose(clf.predict_proba(X), expected, atol=1e-6)
        messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        assert 1 <= len(messages) <= 2, messages  # once per cache (and once more for a wrong shape)
        assert fresh.rejected == len(X) or garbage == "wrong_shape"

    def test_read_only_cache_dir_falls_back_to_memory(self, tmp_path):
        blocker = tmp_path / "a_file"
        blocker.write_text("x")
        X, y = make_images(12, 32, 2)
        with pytest.warns(RuntimeWarning, match="cannot write the feature cache"):
            clf = tiny_classifier(epochs=2, cache_dir=blocker / "cache").fit(X, y)
        np.testing.assert_allclose(clf.predict_proba(X), tiny_classifier(epochs=2).fit(X, y).predict_proba(X),
                                   atol=1e-6)

    def test_concurrent_writers_leave_whole_entries(self, tmp_path):
        from concurrent.futures import ThreadPoolExecutor

        values = [np.full(1000, i, np.float32) for i in range(8)]

        def write(i):
            FeatureCache(directory=tmp_path).put("cfg", "same", values[i])

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(write, range(8)))
        got = FeatureCache(directory=tmp_path).get("cfg", "same")
        assert any(np.array_equal(got, v) for v in values)
        assert not list(tmp_path.rglob("*.tmp"))

    @pytest.mark.parametrize("value, ok", [("garbage", False), ("-5", False), ("nan", False), ("0", True),
                                           ("12.5", True)])
    def test_cache_size_variable(self, monkeypatch, value, ok):
        monkeypatch.setenv("XRAYEST_FEATURE_CACHE_MB", value)
        if ok:
            assert default_max_bytes() == int(float(value) * 2**20)
        else:
            with pytest.raises(ValueError, match="XRAYEST_FEATURE_CACHE_MB"):
                default_max_bytes()

    def test_bad_cache_size_variable_does_not_break_import(self):
        env = {**os.environ, "XRAYEST_FEATURE_CACHE_MB": "garbage"}
        out = subprocess.run([sys.executable, "-c", "import xrayest"], env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-2000:]


class TestCommandLineOutput:
    def _model(self, tmp_path, fitted):
        clf, X = fitted
        return Path(clf.save(tmp_path / "m.keras"))

    def test_predict_output_over_the_model_is_refused(self, tmp_path, fitted):
        from xrayest.cli import main

        model = self._model(tmp_path, fitted)
        images = tmp_path / "images"
        images.mkdir()
        save_png(images / "a.png", fitted[1][0])
        before = model.read_bytes()
        assert main(["predict", str(model), str(images), "--output", str(model), "-q"]) == 1
        assert model.read_bytes() == before
        assert main(["predict", str(model), str(images), "--output", str(images / "a.png"), "-q"]) == 1
        assert main(["predict", str(model), str(images), "--output", str(tmp_path / "p.csv"), "-q"]) == 0
        assert (tmp_path / "p.csv").read_text().startswith("path,label")

    def test_folder_named_like_an_image_is_skipped(self, tmp_path, fitted, capsys):
        from xrayest.cli import main

        model = self._model(tmp_path, fitted)
        images = tmp_path / "images"
        (images / "x.png").mkdir(parents=True)
        save_png(images / "a.png", fitted[1][0])
        assert main(["predict", str(model), str(images), "-q"]) == 0
        assert "a.png" in capsys.readouterr().out

    @pytest.mark.parametrize("argv, message", [
        (["grid", "DATA", "--param", "nonexistent=1,2"], "unknown parameter 'nonexistent'"),
        (["grid", "DATA", "--param", "dropout=abc,1.5"], "--param dropout: value 'abc' is not valid"),
        (["grid", "DATA", "--param", "dropout=0.2,1.5"], "--param dropout: value 1.5 is not valid"),
        (["fit", "DATA", "--out", "m.keras", "--param", "colour=red"], "unknown parameter 'colour'"),
        (["demo", "--n-images", "-5"], "--n-images must be at least 8"),
    ])
    def test_misleading_messages_now_name_the_problem(self, tmp_path, capsys, argv, message):
        from xrayest.cli import main

        data = tmp_path / "data"
        for label in ("a", "b"):
            (data / label).mkdir(parents=True)
            for i in range(3):
                save_png(data / label / f"{i}.png", np.full((16, 16), 40 * i, np.uint8))
        argv = [str(data) if a == "DATA" else a for a in argv]
        os.chdir(tmp_path)
        assert main(argv + ["-q"]) == 1
        assert message in capsys.readouterr().err


# --------------------------------------------------------------------- weak errors, now clear
class TestClearErrors:
    @pytest.mark.parametrize("X, message", [
        ([], "X is empty"),
        (np.zeros((0, 32, 32)), "X is empty"),
        (np.arange(5.0), "X is 1-D"),
        (b"\x89PNG...", "X is bytes"),
        ([np.zeros((32, 32)), np.zeros((40, 40))], "different shapes"),
        (["a.png", np.zeros((32, 32))], "different shapes|mixes image paths"),
        (np.full((2, 32, 32), 300.0), "image 0 has float pixel values up to 300"),
        (np.full((2, 32, 32), -1, np.int16), "image 0 has negative pixel values"),
        (np.full((2, 8, 8), 70000, np.int32), "more than 16 bits"),
        (np.zeros((2, 8, 8, 2)), "2 channels"),
        ("images/", "not a single path"),
    ])
    def test_bad_X_named(self, fitted, X, message):
        clf, _ = fitted
        with pytest.raises(ValueError, match=message):
            clf.predict(X)

    @pytest.mark.parametrize("tta", [-1, 1.5, 10**6])
    def test_tta_set_after_fit_is_checked_at_predict(self, fitted, tta):
        clf, X = fitted
        clf.set_params(tta=tta)
        try:
            with pytest.raises(ValueError, match="tta must be an int in"):
                clf.predict_proba(X)
        finally:
            clf.set_params(tta=0)

    def test_unit_floats_warned_at_predict(self, fitted):
        clf, X = fitted
        with pytest.warns(UserWarning, match=r"floats in \[0, 1\]"):
            clf.predict(X.astype(np.float32) / 255)

    @pytest.mark.parametrize("y, message", [
        (["covid", 1] * 6, "mixes text and numeric"),
        (["covid", None] * 6, "missing labels"),
        # a NaN among strings: numpy would turn it into the class "nan"
        (["covid", "normal"] * 5 + ["covid", float("nan")], r"1 missing labels \(None or NaN\) at positions 11"),
        (["covid"] * 12, "1 class"),
        (["covid", "normal"] * 5, "12 images but y has 10"),
    ])
    def test_bad_labels_named(self, y, message):
        X, _ = make_images(12, 32, 2)
        with pytest.raises(ValueError, match=message):
            tiny_classifier(epochs=1).fit(X, y)

    def test_groups_with_missing_patients_are_named(self):
        X, y = make_images(12, 32, 2)
        groups = [1, 1, 2, 2, None, 3, 3, 4, 4, 5, float("nan"), 6]
        with pytest.raises(ValueError, match=r"groups has 2 missing entries \(None or NaN\) at positions 4, 10"):
            tiny_classifier(epochs=1, validation_split=0.25).fit(X, y, groups=groups)

    def test_cascade_refuses_a_multilabel_y(self):
        from xrayest import CascadeClassifier

        X, _ = make_images(12, 32, 2)
        Y = np.tile([[1, 0], [0, 1], [1, 1]], (4, 1))
        cascade = CascadeClassifier([("root", tiny_classifier(), None)])
        with pytest.raises(ValueError, match=r"one class per image; y has shape \(12, 2\)"):
            cascade.fit(X, Y)

    def test_make_recipe_refuses_arguments_it_would_ignore(self):
        from xrayest import make_recipe

        with pytest.raises(ValueError, match="classes and normal are for the cascade recipe"):
            make_recipe("sutd_cnn", classes=("normal", "viral"))
        with pytest.raises(ValueError, match=r"make_recipe got \['epoch'\], which are not XrayCNNClassifier"):
            make_recipe("sutd_cnn", epoch=3)
        with pytest.raises(ValueError, match="not XrayCNNClassifier parameters"):
            make_recipe("sutd_cascade", learnin_rate=1e-3)

    def test_class_weight_names_the_unknown_class(self):
        X, y = make_images(12, 32, 2)
        labels = np.array(["covid", "normal"])[y]
        with pytest.raises(ValueError, match=r"class_weight names \['covdi'\], which are not classes of y"):
            tiny_classifier(epochs=1, class_weight={"covid": 2.0, "covdi": 1.0}).fit(X, labels)
        # a class left out of the dict weighs 1, as in scikit-learn
        tiny_classifier(epochs=1, class_weight={"covid": 2.0}).fit(X, labels)

    @pytest.mark.parametrize("param, value", [("image_size", 0), ("learning_rate", float("nan")),
                                              ("tta", -1), ("epochs", 0)])
    def test_parameters_named(self, param, value):
        X, y = make_images(12, 32, 2)
        with pytest.raises(ValueError, match=param):
            tiny_classifier(**{param: value}).fit(X, y)


class TestImageFolders:
    @pytest.fixture
    def folder(self, tmp_path):
        for label in ("covid", "normal"):
            (tmp_path / label).mkdir()
            for i in range(2):
                save_png(tmp_path / label / f"{i}.png", np.full((16, 16), 60 * i, np.uint8))
        return tmp_path

    def test_classes_as_a_string(self, folder):
        with pytest.raises(ValueError, match=r"single string 'covid'.*\['covid'\]"):
            load_image_folder(folder, classes="covid", return_paths=True)

    def test_repeated_classes(self, folder):
        with pytest.raises(ValueError, match=r"\['covid'\] more than once"):
            load_image_folder(folder, classes=["covid", "normal", "covid"], return_paths=True)

    @pytest.mark.parametrize("size", [0, -3, (16,), 2.5])
    def test_bad_image_size_names_image_size(self, folder, size):
        with pytest.raises(ValueError, match="image_size must be"):
            load_image_folder(folder, image_size=size)

    def test_truncated_jpeg_is_skipped_when_asked(self, folder):
        from PIL import Image

        path = folder / "covid" / "cut.jpg"
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(path, quality=95)
        path.write_bytes(path.read_bytes()[:600])
        with pytest.warns(UserWarning, match="cut.jpg"):
            X, y = load_image_folder(folder, return_paths=True, on_error="skip")
        assert not any(p.endswith("cut.jpg") for p in X) and len(X) == 4

    def test_decompression_bomb_names_the_file(self, folder, monkeypatch):
        from PIL import Image

        path = save_png(folder / "covid" / "bomb.png", np.zeros((100, 100), np.uint8))
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # the 100x100 file is now a "bomb" (> 2x the limit)
        with pytest.raises(ValueError, match="bomb.png"):
            read_image(path)


class TestModelFiles:
    def _edit(self, path, edit):
        import json
        import zipfile

        with zipfile.ZipFile(path) as archive:
            entries = {name: archive.read(name) for name in archive.namelist()}
        meta = json.loads(entries["xrayest.json"])
        edit(meta)
        entries["xrayest.json"] = json.dumps(meta).encode()
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in entries.items():
                archive.writestr(name, data)

    @pytest.mark.parametrize("edit, message", [
        (lambda m: m.update(format_version="2"), "format_version must be an integer"),
        (lambda m: m["params"].update(colour="red"), r"unknown parameters \['colour'\]"),
        (lambda m: m["params"].update(dropout=7), "dropout must be"),
        (lambda m: m.pop("state"), "'state' is missing"),
        (lambda m: m["state"].update(image_size_=[32]), "image_size_"),
        (lambda m: m.update(classes=["a", "b", "c"]), "3 classes but the network has 1 outputs"),
        (lambda m: m.update(classes=["a"]), "at least two distinct labels"),
        (lambda m: m.update(classes_dtype="<i8"), "classes_dtype"),
    ])
    def test_edited_metadata_is_refused(self, tmp_path, fitted, edit, message):
        from xrayest import load

        clf, _ = fitted
        path = clf.save(tmp_path / "m.keras")
        self._edit(path, edit)
        with pytest.raises(ValueError, match=f"corrupt or incompatible model file .*{message}"):
            load(path)

    def test_crash_mid_save_leaves_the_old_file(self, tmp_path, fitted, monkeypatch):
        import zipfile

        from xrayest import load

        clf, X = fitted
        path = clf.save(tmp_path / "m.keras")
        before = path.read_bytes()

        def crash(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(zipfile.ZipFile, "writestr", crash)
        with pytest.raises(KeyboardInterrupt):
            clf.save(path)
        monkeypatch.undo()
        assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["m.keras"]
        np.testing.assert_allclose(load(path).predict_proba(X), clf.predict_proba(X), atol=1e-6)


class TestBoundedMemory:
    def test_large_arrays_are_resized_one_at_a_time(self, fitted):
        """Two 2000x2000 images: a batch at the model's size, equal to the model resizing them itself."""
        clf, X = fitted
        big = np.kron(X[:2], np.ones((1, 63, 63), np.uint8))[:, :2000, :2000]
        source = as_image_source(big)
        batch = source.batch(0, 2, (32, 32))
        assert batch.shape == (2, 32, 32, 3) and batch.dtype == np.float32
        full = clf.model_.predict(np.repeat(big[..., None], 3, -1).astype(np.float32), verbose=0)[:, 0]
        np.testing.assert_allclose(clf.predict_proba(big)[:, 1], full, atol=1e-5)


def test_mutation_free(fitted):
    clf, X = fitted
    for array in (X.copy(), X.astype(np.uint16) * 16, X.astype(np.float32)):
        before = array.copy()
        clf.predict_proba(array)
        np.testing.assert_array_equal(array, before)


@pytest.mark.parametrize("make, match", [
    (lambda: __import__("xrayest").TSNEEmbedding(perplexity=-1), "TSNEEmbedding: perplexity"),
    (lambda: __import__("xrayest").TSNEEmbedding(n_components=5), "TSNEEmbedding: n_components"),
    (lambda: __import__("xrayest").CascadeClassifier("root"), "CascadeClassifier: stages"),
    (lambda: __import__("xrayest").CascadeClassifier([("root", "vgg16", None)]), "each stage must be"),
])
def test_meta_estimators_validate_their_parameters_at_fit(make, match):
    X, y = make_images(12, 32, 2)
    with pytest.raises(ValueError, match=match):
        make().fit(X.reshape(12, -1).astype(float) if "TSNE" in match else X, y)


def test_pandas_paths_and_object_arrays_are_read_by_position(tmp_path):
    """A Series of paths with a shuffled index (and a one-column DataFrame) is read by position, as
    scikit-learn does, in the classifier and in the cascade's per-stage row selection; an object
    ndarray of images is the list it holds."""
    import pandas as pd
    from PIL import Image

    from conftest import make_images
    from xrayest import CascadeClassifier, XrayCNNClassifier

    X, y = make_images(18, 32, 3)
    paths = []
    for i, image in enumerate(X):
        Image.fromarray(image).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    labels = np.array(["bacterial", "normal", "viral"])[y]
    index = np.random.default_rng(0).permutation(len(paths)) + 100  # shuffled, and not 0..n-1

    def stage():
        return XrayCNNClassifier("small_cnn", weights=None, image_size=32, epochs=1, batch_size=6, random_state=0)

    def cascade():
        return CascadeClassifier([("root", stage(), {"normal": ["normal"], "infected": ["bacterial", "viral"]}),
                                  ("infected", stage(), None)])

    expected = cascade().fit(paths, labels).predict_proba(paths)
    series = pd.Series(paths, index=index)
    got = cascade().fit(series, pd.Series(labels, index=index)).predict_proba(series)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    frame = pd.DataFrame({"path": paths}, index=index)
    np.testing.assert_allclose(stage().fit(frame, labels).predict_proba(frame),
                               stage().fit(paths, labels).predict_proba(paths), atol=1e-6)
    images = np.empty(len(X), dtype=object)
    images[:] = list(X)
    np.testing.assert_allclose(stage().fit(images, labels).predict_proba(images),
                               stage().fit(X, labels).predict_proba(X), atol=1e-6)


class TestRareClassWithValidationSplit:
    """A class with one image is never held out for validation: a model that never sees a class gives it
    no probability, silently."""

    def test_every_class_keeps_an_image_in_training_for_every_seed(self):
        from xrayest.training import stratified_split

        y = np.array([0] * 10 + [1] * 10 + [2])
        patients = np.arange(21) // 2
        for seed in range(40):
            with pytest.warns(UserWarning, match=r"\['rare'\] have a single image"):
                train, val = stratified_split(y, 0.2, seed, class_names=np.array(["a", "b", "rare"]))
            assert 20 in train and len(val) and not set(train) & set(val)
            with pytest.warns(UserWarning, match="single image"):
                train, val = stratified_split(y, 0.2, seed, groups=patients)
            assert 20 in train and not set(patients[train]) & set(patients[val])  # its patient moved whole

    def test_fit_warns_naming_the_class_and_trains_on_it(self):
        X, codes = make_images(21, 32, 2)
        y = np.array(["normal", "pneumonia"])[codes].astype(object)
        y[-1] = "covid"
        for seed in range(3):
            with pytest.warns(UserWarning, match=r"\['covid'\] have a single image, kept in training"):
                model = tiny_classifier(epochs=1, validation_split=0.2, random_state=seed).fit(X, y)
            assert list(model.classes_) == ["covid", "normal", "pneumonia"] and "val_loss" in model.history_

    def test_a_two_phase_fit_draws_the_split_once(self):
        import warnings

        X, codes = make_images(21, 32, 2)
        y = np.array(["normal", "pneumonia"])[codes].astype(object)
        y[-1] = "covid"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = tiny_classifier(fine_tune=2, fine_tune_epochs=1, epochs=1, validation_split=0.2).fit(X, y)
        assert len(model.training_plan_.phases) == 2 and len(model.history_["val_loss"]) == 2
        assert sum("have a single image" in str(w.message) for w in caught) == 1

    def test_nothing_left_to_validate_is_an_error(self):
        from xrayest.training import stratified_split

        with pytest.warns(UserWarning), pytest.raises(ValueError, match="nothing to validate on"):
            stratified_split(np.array([0, 1, 2]), 0.3, 0)


def test_an_optimizer_instance_with_another_learning_rate_is_refused_naming_both(binary_images):
    import keras

    X, y = binary_images
    with pytest.raises(ValueError, match=r"optimizer=SGD\(...\) has its own learning rate \(0.05\) but "
                                         r"learning_rate=0.001.*pass learning_rate=0.05"):
        tiny_classifier(optimizer=keras.optimizers.SGD(0.05)).fit(X, y)
    schedule = keras.optimizers.schedules.ExponentialDecay(0.01, 10, 0.9)
    with pytest.raises(ValueError, match="has its own learning rate \\(a schedule\\).*lr_schedule"):
        tiny_classifier(optimizer=keras.optimizers.SGD(schedule)).fit(X, y)
    model = tiny_classifier(epochs=1, optimizer=keras.optimizers.SGD(0.05), learning_rate=0.05).fit(X, y)
    assert model.predict_proba(X).shape == (len(X), 2)  # the same rate twice agrees
