"""Saved models and the xrayest command, end to end in subprocesses on tiny data."""

import csv
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from conftest import make_images, require_bu_data, tiny_classifier
import xrayest


def run_cli(*args, check=True):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-m", "xrayest.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """root/<class>/<image>.png with a learnable signal, as grayscale PNG files."""
    root = tmp_path_factory.mktemp("xrays")
    X, y = make_images(24, 40, 2, seed=1)
    names = np.array(["covid", "normal"])[y]
    for i, (img, label) in enumerate(zip(X, names)):
        (root / label).mkdir(exist_ok=True)
        Image.fromarray(img).save(root / label / f"{i:03d}.png")
    return root


class TestSaveLoad:
    def test_round_trip_is_exact_and_keeps_params(self, binary_images, tmp_path):
        X, y = binary_images
        clf = tiny_classifier(epochs=1, hidden_units=(16, 8)).fit(X, np.array(["covid", "normal"])[y])
        path = clf.save(tmp_path / "m")
        assert path.name == "m.keras"
        again = xrayest.load(path)
        np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))
        assert again.get_params()["hidden_units"] == (16, 8)
        assert list(again.classes_) == ["covid", "normal"]
        with zipfile.ZipFile(path) as archive:
            meta = json.loads(archive.read("xrayest.json"))
        assert meta["params"]["backbone"] == "vgg16"

    def test_a_model_fitted_with_callbacks_and_an_optimizer_instance_loads(self, binary_images, tmp_path):
        # callbacks cannot be written as data: the file said so, and loading then refused the file
        import keras

        X, y = binary_images
        clf = tiny_classifier(epochs=1, callbacks=[keras.callbacks.TerminateOnNaN()],
                              optimizer=keras.optimizers.SGD(0.05, momentum=0.8), learning_rate=0.05).fit(X, y)
        again = xrayest.load(clf.save(tmp_path / "m.keras"))
        np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))
        assert again.callbacks is None  # not saved: the default
        optimizer = again.get_params()["optimizer"]
        assert type(optimizer) is keras.optimizers.SGD and optimizer.get_config()["momentum"] == 0.8
        assert again.fit(X, y).predict_proba(X).shape == (len(X), 2)  # refits with what it was given

    def test_an_optimizer_keras_does_not_know_is_refused_at_load_naming_it(self, binary_images, tmp_path):
        import zipfile

        from xrayest.persistence import CorruptModelError

        X, y = binary_images
        import keras

        path = tiny_classifier(epochs=1, optimizer=keras.optimizers.SGD(0.01), learning_rate=0.01).fit(X, y).save(
            tmp_path / "m.keras")
        with zipfile.ZipFile(path) as archive:
            entries = {name: archive.read(name) for name in archive.namelist()}
        meta = json.loads(entries["xrayest.json"])
        meta["params"]["optimizer"]["__keras_optimizer__"].update(class_name="LionX", module="mylab.optimizers")
        entries["xrayest.json"] = json.dumps(meta).encode()
        edited = tmp_path / "edited.keras"
        with zipfile.ZipFile(edited, "w") as archive:
            for name, data in entries.items():
                archive.writestr(name, data)
        with pytest.raises(CorruptModelError, match=r"edited.keras: its optimizer is of class 'LionX' \(module "
                                                      r"mylab.optimizers\), which Keras does not know"):
            xrayest.load(edited)

    def test_crash_mid_save_keeps_the_old_model(self, binary_images, tmp_path, monkeypatch):
        X, y = binary_images
        clf = tiny_classifier(epochs=1).fit(X, y)
        path = clf.save(tmp_path / "m.keras")
        before = path.read_bytes()

        def boom(*args, **kwargs):
            raise OSError("disk full")

        monkeypatch.setattr("zipfile.ZipFile.writestr", boom)
        with pytest.raises(OSError, match="disk full"):
            clf.save(path)
        assert path.read_bytes() == before
        assert [p.name for p in tmp_path.iterdir()] == ["m.keras"]  # no temporary files left

    def test_not_an_xrayest_file(self, tmp_path):
        bad = tmp_path / "x.keras"
        bad.write_bytes(b"not a zip")
        with pytest.raises(ValueError, match="not a readable xrayest model"):
            xrayest.load(bad)
        with pytest.raises(FileNotFoundError):
            xrayest.load(tmp_path / "missing.keras")


class TestCli:
    def test_help_reads_well(self):
        out = run_cli("--help").stdout
        for command in ("fit", "predict", "evaluate", "grid", "demo"):
            assert command in out
        assert "usage: xrayest fit" in run_cli("fit", "--help").stdout

    def test_help_lists_every_backbone_of_the_registry_and_every_precision(self):
        from xrayest.backbones import BACKBONES
        from xrayest.trunk_graph import PRECISIONS

        text = " ".join(run_cli("fit", "--help").stdout.split())
        assert f"a name from the registry: {', '.join(BACKBONES)} (default: vgg16)" in text
        assert all(precision in text for precision in PRECISIONS)

    def test_main_in_process_leaves_the_host_program_alone(self, tmp_path, capsys, monkeypatch):
        import warnings

        from xrayest.cli import main

        monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
        before = list(warnings.filters)
        assert main(["predict", str(tmp_path / "no_model.keras"), str(tmp_path)]) == 1
        assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ and warnings.filters == before

    def test_the_cli_takes_the_defaults_of_the_functions_it_calls(self):
        import inspect

        from xrayest import XrayCNNClassifier
        from xrayest.cli import CLASSIFIER_DEFAULTS, FEATURIZE_DEFAULTS, build_parser
        from xrayest.distributed import featurize

        for function, defaults in ((XrayCNNClassifier, CLASSIFIER_DEFAULTS), (featurize, FEATURIZE_DEFAULTS)):
            signature = inspect.signature(function).parameters
            assert {name: signature[name].default for name in defaults} == defaults, function
        fit = build_parser().parse_args(["fit", "data", "--out", "m.keras"])
        assert (fit.backbone, fit.epochs, fit.batch_size, fit.image_size) == ("vgg16", 20, 32, None)
        assert build_parser().parse_args(["featurize", "data", "--out", "f.zarr"]).backbone == "xception"

    def test_library_advice_is_given_in_cli_words(self, image_folder, tmp_path, capsys):
        from xrayest.cli import _cli_words, main

        assert main(["fit", str(image_folder), "--backbone", "small_cnn", "--weights", "imagenet", "-q",
                     "--out", str(tmp_path / "m.keras")]) == 1
        err = capsys.readouterr().err
        assert "use --weights none" in err and "weights=None" not in err
        assert _cli_words("pass weights='/path/to/x.weights.h5'; or use weights=None") == \
            "pass --weights /path/to/x.weights.h5; or use --weights none"

    def test_usage_error_exit_2(self):
        assert run_cli("fit", check=False).returncode == 2

    def test_user_error_exit_1_one_line(self, tmp_path):
        proc = run_cli("fit", tmp_path / "nowhere", "--out", tmp_path / "m.keras", check=False)
        assert proc.returncode == 1
        assert proc.stderr.strip().count("\n") == 0 and "image folder not found" in proc.stderr
        assert "Traceback" not in proc.stderr

    def test_fit_predict_evaluate(self, image_folder, tmp_path, capsys):
        model = tmp_path / "model.keras"
        run_cli("fit", image_folder, "--backbone", "vgg16", "--weights", "none", "--image-size", 32, "--epochs", 3,
                "--param", "hidden_units=16", "--out", model, "-q")
        preds = tmp_path / "preds.csv"
        run_cli("predict", model, image_folder / "covid", image_folder / "normal" / "001.png", "--output", preds)
        rows = list(csv.DictReader(preds.open()))
        assert rows[0].keys() == {"path", "label", "p_covid", "p_normal"}
        clf = xrayest.load(model)
        expected = clf.predict_proba([r["path"] for r in rows])
        got = np.array([[float(r["p_covid"]), float(r["p_normal"])] for r in rows])
        np.testing.assert_array_equal(got, expected)  # the CLI reproduces predict_proba exactly
        report = tmp_path / "report"
        out = run_cli("evaluate", model, image_folder, "--report", report).stdout
        assert "accuracy" in out and "confusion matrix" in out
        assert {"report.md", "confusion_matrix.png", "metrics.json"} <= {p.name for p in report.iterdir()}
        # a class the model never saw: an error naming it, not images dropped without a word
        import shutil

        from xrayest.cli import main

        extra = tmp_path / "with_viral"
        shutil.copytree(image_folder, extra)
        shutil.copytree(image_folder / "covid", extra / "viral")
        with pytest.warns(UserWarning, match="repeat another file"):  # the copies are byte-identical
            assert main(["evaluate", str(model), str(extra)]) == 1
        err = capsys.readouterr().err
        assert "12 images are labelled 'viral', which the model never saw (it knows covid, normal)" in err
        assert main(["evaluate", str(model), str(extra), "--classes", "covid,normal"]) == 0
        assert "accuracy" in capsys.readouterr().out

    @pytest.mark.slow
    def test_grid(self, image_folder):
        out = run_cli("grid", image_folder, "--backbone", "vgg16", "--weights", "none", "--image-size", 32,
                      "--epochs", 1, "--param", "dropout=0.0,0.5", "--cv", 2, "-q").stdout
        assert "best:" not in out  # quiet
        assert out.count("{'dropout'") == 2

    def test_demo_small(self, tmp_path):
        out = run_cli("demo", "--out", tmp_path, "--n-images", 60, "--image-size", 32, "--epochs", 2).stdout
        assert "synthetic" in out and "accuracy" in out
        assert (tmp_path / "model.keras").is_file() and (tmp_path / "report.md").is_file()
        report = (tmp_path / "report.md").read_text()
        assert "synthetic" in report and "not real X-rays" in report  # the report says what it measured
        assert "| parameter | value |" in report and "| epochs | `2` |" in report
        assert max(len(line) for line in report.splitlines()) < 250  # no 600-character settings line

    @pytest.mark.slow
    def test_demo_on_real_folder(self, tmp_path):
        data = require_bu_data()
        out = run_cli("demo", "--data", data, "--classes", "covid,normal", "--out", tmp_path, "--epochs", 10,
                      "--image-size", 96).stdout
        assert "train 129 images, test 18 images" in out
