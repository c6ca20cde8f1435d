"""Featurization into a resumable Zarr store, on a Dask LocalCluster and in-process, and fitting from it."""

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("zarr", reason="the [distributed] extra (zarr) is not installed")

from xrayest import distributed  # noqa: E402
from xrayest.cache import default_cache  # noqa: E402
from xrayest.distributed import featurize  # noqa: E402
from xrayest.feature_store import FeatureStore, StoreMismatchError  # noqa: E402

TRUNK = dict(backbone="small_cnn", weights=None, image_size=32, random_state=0)


@pytest.fixture
def folder(tmp_path):
    """19 synthetic X-rays in two class folders (chunks of 4: five chunks, the last one short)."""
    from PIL import Image

    from xrayest import make_synthetic_xrays

    X, y = make_synthetic_xrays(19, 32, classes=("normal", "pneumonia"), random_state=0)
    for i, (image, label) in enumerate(zip(X, y)):
        (tmp_path / "images" / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(tmp_path / "images" / label / f"{i:03d}.png")
    return tmp_path / "images"


def store_bytes(location):
    store = FeatureStore.open(location)
    return np.asarray(store.features[:]).tobytes(), [str(k) for k in store.group["keys"][:]]


def test_serial_store_then_fit_without_reading_images(folder, tmp_path):
    """Rows of the store give the same predictions as the images; after featurizing, the images are not read."""
    from conftest import tiny_classifier

    from xrayest import load_image_folder

    report = featurize(folder, tmp_path / "f.zarr", chunk=4, **TRUNK)
    assert report["chunks_computed"] == 5 and report["n_images"] == 19
    store = FeatureStore.open(tmp_path / "f.zarr")
    assert store.is_complete() and store.features.shape == (19, 128)
    paths, y = load_image_folder(folder, return_paths=True)
    assert list(store.paths) == list(paths) and list(store.labels) == list(y)
    rows = store.rows()
    params = dict(backbone="small_cnn", freeze_backbone=True, epochs=3)
    from_images = tiny_classifier(**params, cache_features=False).fit(list(paths), y)
    expected = from_images.predict_proba(list(paths))
    for path in paths:  # the images are gone: rows fit and predict from the store alone
        Path(path).unlink()
    default_cache().clear()
    from_rows = tiny_classifier(**params).fit(rows, store.labels)
    np.testing.assert_allclose(from_rows.predict_proba(rows), expected, atol=1e-5)
    again = tiny_classifier(**params).fit(rows[::2], store.labels[::2])
    assert again.predict(rows).shape == (19,)
    with pytest.raises(ValueError, match="cannot read image file"):  # the same rows as paths need the images
        tiny_classifier(**params, cache_features=False).fit(list(paths), y)


def test_ctrl_c_then_resume_computes_only_the_missing_chunks(folder, tmp_path, monkeypatch):
    calls = []
    run_chunk = distributed._run_chunk

    def interrupted_after_two(location, i, config):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(i)
        return run_chunk(location, i, config)

    monkeypatch.setattr(distributed, "_run_chunk", interrupted_after_two)
    with pytest.raises(KeyboardInterrupt):
        featurize(folder, tmp_path / "f.zarr", chunk=4, **TRUNK)
    store = FeatureStore.open(tmp_path / "f.zarr")
    assert store.done().tolist() == [True, True, False, False, False]
    with pytest.raises(ValueError, match="incomplete"):
        store.rows()
    monkeypatch.setattr(distributed, "_run_chunk", run_chunk)
    report = featurize(folder, tmp_path / "f.zarr", chunk=4, **TRUNK)
    assert report["chunks_computed"] == 3
    featurize(folder, tmp_path / "whole.zarr", chunk=4, **TRUNK)
    assert store_bytes(tmp_path / "f.zarr") == store_bytes(tmp_path / "whole.zarr")


def test_another_trunk_or_other_images_refused(folder, tmp_path):
    featurize(folder, tmp_path / "f.zarr", chunk=4, **TRUNK)
    with pytest.raises(StoreMismatchError, match="another trunk"):
        featurize(folder, tmp_path / "f.zarr", chunk=4, **{**TRUNK, "random_state": 1})
    with pytest.raises(StoreMismatchError, match="other images"):
        featurize(sorted(map(str, folder.rglob("*.png")))[:5], tmp_path / "f.zarr", chunk=4, **TRUNK)
    report = featurize(folder, tmp_path / "f.zarr", chunk=4, overwrite=True, **{**TRUNK, "random_state": 1})
    assert report["chunks_computed"] == 5


@pytest.mark.parametrize("what", ["results folder", "the image folder", "a file"])
def test_overwrite_never_deletes_what_is_not_a_store(folder, tmp_path, what):
    if what == "results folder":
        target = tmp_path / "results"
        target.mkdir()
        (target / "report.md").write_text("mine")
        (target / "sub").mkdir()
        (target / "sub" / "model.keras").write_bytes(b"weights")
    elif what == "a file":
        target = tmp_path / "notes.txt"
        target.write_text("mine")
    else:
        target = folder
    def tree_bytes(path):
        if not path.is_dir():
            return {"": path.read_bytes()}
        return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}

    before = tree_bytes(target)
    with pytest.raises(ValueError, match="is not an xrayest feature store: overwrite replaces only a feature store"):
        featurize(folder, target, chunk=4, overwrite=True, **TRUNK)
    assert tree_bytes(target) == before and len(before) >= 1
    # an empty folder, or a store, may be replaced
    (tmp_path / "empty").mkdir()
    assert featurize(folder, tmp_path / "empty", chunk=4, overwrite=True, **TRUNK)["chunks_computed"] == 5


def test_an_image_edited_after_featurize_is_computed_again(folder, tmp_path):
    featurize(folder, tmp_path / "f.zarr", chunk=4, **TRUNK)
    from PIL import Image

    edited = sorted(folder.rglob("*.png"))[6]  # chunk 1
    Image.fromarray(255 - np.asarray(Image.open(edited))).save(edited)
    report = featurize(folder, tmp_path / "f.zarr", chunk=4, **TRUNK)
    assert report["chunks_stale"] == 1 and report["chunks_computed"] == 1
    featurize(folder, tmp_path / "fresh.zarr", chunk=4, **TRUNK)
    assert store_bytes(tmp_path / "f.zarr") == store_bytes(tmp_path / "fresh.zarr")
    assert featurize(folder, tmp_path / "f.zarr", chunk=4, **TRUNK)["chunks_computed"] == 0


@pytest.mark.parametrize("damage, message", [
    (lambda g: g.attrs.__delitem__("fingerprint"), r"damaged: attribute\(s\) \['fingerprint'\] missing"),
    (lambda g: g["keys"].resize((10,)), "damaged: 19 feature rows but 10 keys"),
    (lambda g: g["done"].resize((2,)), "damaged: 2 done flags for 5 chunks of 4"),
])
def test_a_store_damaged_by_hand_is_refused_naming_it(folder, tmp_path, damage, message):
    import zarr

    featurize(folder, tmp_path / "f.zarr", chunk=4, **TRUNK)
    damage(zarr.open_group(str(tmp_path / "f.zarr"), mode="r+"))
    with pytest.raises(ValueError, match=message):
        featurize(folder, tmp_path / "f.zarr", chunk=4, **TRUNK)
    with pytest.raises(ValueError, match=f"feature store {tmp_path / 'f.zarr'} is damaged"):
        FeatureStore.open(tmp_path / "f.zarr").rows()
    report = featurize(folder, tmp_path / "f.zarr", chunk=4, overwrite=True, **TRUNK)  # as the error advises
    assert report["chunks_computed"] == 5 and FeatureStore.open(tmp_path / "f.zarr").is_complete()


def test_non_finite_features_in_a_store_are_named_not_predicted(folder, tmp_path):
    import zarr

    featurize(folder, tmp_path / "f.zarr", chunk=4, **TRUNK)
    rows = FeatureStore.open(tmp_path / "f.zarr").rows()
    group = zarr.open_group(str(tmp_path / "f.zarr"), mode="r+")
    group["features"][3] = np.nan
    with pytest.raises(ValueError, match="holds non-finite features in rows 3 "):
        FeatureStore.open(tmp_path / "f.zarr").read(np.arange(8))
    from conftest import tiny_classifier

    default_cache().clear()
    with pytest.raises(ValueError, match="non-finite features in rows 3 "):  # a model fitted on them predicted NaN
        tiny_classifier(backbone="small_cnn", freeze_backbone=True, epochs=1).fit(rows, FeatureStore.open(
            tmp_path / "f.zarr").labels)


def test_resume_keeps_the_stores_own_chunks(folder, tmp_path):
    featurize(folder, tmp_path / "f.zarr", chunk=4, **TRUNK)
    report = featurize(folder, tmp_path / "f.zarr", chunk=256, **TRUNK)  # e.g. the CLI's default chunk
    assert report["chunks_computed"] == 0 and report["chunks_total"] == 5
    assert FeatureStore.open(tmp_path / "f.zarr").chunk == 4


def test_rows_of_another_trunk_fall_back_to_the_images_with_a_warning(folder, tmp_path):
    from conftest import tiny_classifier

    featurize(folder, tmp_path / "f.zarr", chunk=8, pooling="max", **TRUNK)  # the estimator pools "avg"
    store = FeatureStore.open(tmp_path / "f.zarr")
    default_cache().clear()  # features of these images from earlier tests would answer first
    with pytest.warns(UserWarning, match="another trunk configuration"):
        tiny_classifier(backbone="small_cnn", freeze_backbone=True, epochs=1).fit(store.rows(), store.labels)


def kill_once_plugin(folder):
    """A worker plugin that kills its worker process when the third task starts executing (once per run)."""
    from distributed import WorkerPlugin

    class KillOnce(WorkerPlugin):
        def transition(self, key, start, finish, **kwargs):
            if finish != "executing":
                return
            marks = Path(folder)
            (marks / f"exec-{os.getpid()}-{abs(hash(key))}").touch()
            if len(list(marks.glob("exec-*"))) >= 3:
                try:
                    fd = os.open(marks / "killed", os.O_CREAT | os.O_EXCL)
                except FileExistsError:
                    return
                os.close(fd)
                os._exit(1)

    return KillOnce()


@pytest.mark.slow
def test_local_cluster_with_a_killed_worker_equals_the_serial_run(folder, tmp_path):
    distributed_ = pytest.importorskip("distributed")
    featurize(folder, tmp_path / "serial.zarr", chunk=4, **TRUNK)
    marks = tmp_path / "marks"
    marks.mkdir()
    with distributed_.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                   worker_class=distributed_.Nanny) as cluster, distributed_.Client(cluster) as client:
        client.register_plugin(kill_once_plugin(marks))
        report = featurize(folder, tmp_path / "cluster.zarr", chunk=4, client=client, **TRUNK)
    assert (marks / "killed").exists()  # a worker died mid-run and Dask rescheduled its task
    assert report["chunks_computed"] == 5
    store = FeatureStore.open(tmp_path / "cluster.zarr")
    assert store.is_complete() and len(set(str(k) for k in store.group["keys"][:])) == 19  # no row missing or twice
    assert store_bytes(tmp_path / "cluster.zarr") == store_bytes(tmp_path / "serial.zarr")


@pytest.mark.slow
def test_grid_search_on_dask_equals_serial(folder, tmp_path):
    distributed_ = pytest.importorskip("distributed")
    from joblib import parallel_backend
    from sklearn.model_selection import GridSearchCV

    from conftest import tiny_classifier

    featurize(folder, tmp_path / "f.zarr", chunk=8, **TRUNK)
    store = FeatureStore.open(tmp_path / "f.zarr")
    rows, y = store.rows(), store.labels
    grid = {"learning_rate": [1e-3, 1e-2], "dropout": [0.0, 0.3]}
    default_cache().clear()  # every fit reads the store, here and on the workers
    estimator = tiny_classifier(backbone="small_cnn", freeze_backbone=True, epochs=3)
    serial = GridSearchCV(estimator, grid, cv=3).fit(rows, y)
    with distributed_.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                   dashboard_address=None) as cluster, distributed_.Client(cluster):
        with parallel_backend("dask"):
            parallel = GridSearchCV(estimator, grid, cv=3, n_jobs=-1).fit(rows, y)
    np.testing.assert_allclose(parallel.cv_results_["mean_test_score"], serial.cv_results_["mean_test_score"])
    np.testing.assert_allclose(parallel.cv_results_["split0_test_score"], serial.cv_results_["split0_test_score"])


def test_cli_featurize_then_fit_and_grid_from_the_store(folder, tmp_path, capsys):
    from xrayest.cli import main

    store = tmp_path / "f.zarr"
    trunk = ["--backbone", "small_cnn", "--weights", "none", "--image-size", "32"]
    assert main(["featurize", str(folder), "--out", str(store), *trunk, "--chunk", "8", "-q"]) == 0
    out = capsys.readouterr().out
    assert "19 images" in out and "3 chunks" in out
    assert main(["featurize", str(folder), "--out", str(store), *trunk, "--chunk", "8"]) == 0
    assert "0 of 3 chunks computed" in capsys.readouterr().out
    model = tmp_path / "m.keras"
    assert main(["fit", "--features", str(store), *trunk, "--epochs", "2", "--out", str(model), "-q",
                 "--param", "freeze_backbone=true"]) == 0
    assert main(["grid", "--features", str(store), *trunk, "--epochs", "2", "--param", "dropout=0.0,0.3",
                 "--param", "freeze_backbone=true", "--cv", "2"]) == 0
    assert "rank" in capsys.readouterr().out
    assert main(["featurize", str(folder), "--out", str(store), "--backbone", "small_cnn", "--weights", "none",
                 "--image-size", "16", "-q"]) == 1
    assert "another trunk" in capsys.readouterr().err


@pytest.mark.parametrize("option, value, store_value", [("--backbone", "vgg16", "small_cnn"),
                                                        ("--image-size", "48", "32"),
                                                        ("--precision", "bfloat16", "float32")])
def test_cli_fit_from_a_store_refuses_a_trunk_option_that_conflicts(folder, tmp_path, capsys, option, value,
                                                                    store_value):
    from xrayest.cli import main

    store = tmp_path / "f.zarr"
    trunk = ["--backbone", "small_cnn", "--weights", "none", "--image-size", "32", "--precision", "float32"]
    assert main(["featurize", str(folder), "--out", str(store), *trunk, "--chunk", "8", "-q"]) == 0
    model = tmp_path / "m.keras"
    assert main(["fit", "--features", str(store), option, value, "--epochs", "1", "--out", str(model), "-q"]) == 1
    err = capsys.readouterr().err
    assert f"{option} {value} conflicts with the feature store {store}" in err, err
    assert f"come from {option} {store_value}" in err and not model.exists()
    assert main(["fit", "--features", str(store), "--epochs", "1", "--out", str(model), "-q"]) == 0  # left out: ok


def test_cli_fit_from_a_store_reads_its_weights_file_by_any_path(folder, tmp_path, capsys, monkeypatch):
    import shutil

    from xrayest.backbones import get_backbone_spec
    from xrayest.weights import build_backbone
    from xrayest.cli import main

    spec = get_backbone_spec("small_cnn")
    weights = tmp_path / "w" / "small.weights.h5"
    weights.parent.mkdir()
    build_backbone(spec, (32, 32, spec.channels), None).save_weights(weights)
    store = tmp_path / "f.zarr"
    monkeypatch.chdir(tmp_path)
    assert main(["featurize", str(folder), "--out", str(store), "--backbone", "small_cnn", "--weights",
                 "w/small.weights.h5", "--image-size", "32", "--precision", "float32", "--chunk", "8", "-q"]) == 0
    monkeypatch.chdir(weights.parent)  # the same file by another relative path: the store's trunk
    fit = ["fit", "--features", str(store), "--epochs", "1", "-q", "--weights"]
    assert main([*fit, "small.weights.h5", "--out", str(tmp_path / "m.keras")]) == 0
    assert main([*fit, "gone.weights.h5", "--out", str(tmp_path / "n.keras")]) == 1
    assert "weights file not found: gone.weights.h5" in capsys.readouterr().err
    shutil.copy(weights, tmp_path / "other.weights.h5")  # equal bytes, another file: not the store's
    assert main([*fit, str(tmp_path / "other.weights.h5"), "--out", str(tmp_path / "n.keras")]) == 1
    assert "conflicts with the feature store" in capsys.readouterr().err
    assert not (tmp_path / "n.keras").exists()


def _cli(*args):
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-m", "xrayest.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))


@pytest.fixture
def many_images(tmp_path):
    """160 small X-rays: 40 chunks of 4, so that two featurize runs overlap in time."""
    from PIL import Image

    from xrayest import make_synthetic_xrays

    X, _ = make_synthetic_xrays(160, 48, classes=("normal", "pneumonia"), random_state=0)
    (tmp_path / "many").mkdir()
    for i, image in enumerate(X):
        Image.fromarray(image).save(tmp_path / "many" / f"{i:03d}.png")
    return tmp_path / "many"


@pytest.mark.slow
def test_two_featurize_processes_on_one_new_store_never_mix_it(many_images, tmp_path):
    """Started at once with different trunks (32 and 48 px): one writes the store, the other is refused."""
    store = tmp_path / "f.zarr"
    trunk = ["--backbone", "small_cnn", "--weights", "none", "--chunk", "4", "-q"]
    runs = {size: _cli("featurize", many_images, "--out", store, "--image-size", size, *trunk) for size in (32, 48)}
    outcomes = {size: (run.wait(timeout=300), run.stderr.read()) for size, run in runs.items()}
    assert sorted(code for code, _ in outcomes.values()) == [0, 1], outcomes
    [winner] = [size for size, (code, _) in outcomes.items() if code == 0]
    [(_, refusal)] = [outcome for size, outcome in outcomes.items() if size != winner]
    assert "being written by another featurize" in refusal or "another trunk" in refusal, refusal
    assert _cli("featurize", many_images, "--out", tmp_path / "alone.zarr", "--image-size", winner,
                *trunk).wait(timeout=300) == 0
    mixed, alone = FeatureStore.open(store), FeatureStore.open(tmp_path / "alone.zarr")
    assert mixed.is_complete() and mixed.fingerprint == alone.fingerprint
    assert store_bytes(store) == store_bytes(tmp_path / "alone.zarr")  # every row is the winner's


@pytest.mark.slow
def test_featurize_refuses_a_store_another_process_is_writing(folder, tmp_path):
    from filelock import FileLock

    store = tmp_path / "f.zarr"
    with FileLock(str(tmp_path / "f.zarr.lock")):  # held by this process while the CLI runs in another
        run = _cli("featurize", folder, "--out", store, "--backbone", "small_cnn", "--weights", "none",
                   "--image-size", "32", "-q")
        code, err = run.wait(timeout=300), run.stderr.read()
    assert code == 1 and "is being written by another featurize" in err and "f.zarr.lock" in err, err
    assert not store.exists()
    assert featurize(folder, store, chunk=4, **TRUNK)["chunks_computed"] == 5  # the lock is free again


def test_a_chunk_is_written_only_into_the_store_of_its_trunk(folder, tmp_path):
    """A store replaced by another trunk's while a chunk was computed (no lock across some shared file
    systems) refuses the chunk: it is never written under the other trunk's fingerprint."""
    store = tmp_path / "f.zarr"
    featurize(folder, store, chunk=4, **TRUNK)
    before = store_bytes(store)
    other = distributed._trunk_config(distributed._backbone_spec("small_cnn"), None, 16, "avg", "float32", 0, 32,
                                      "cpu")
    FeatureStore.open(store, mode="r+").redo([2])
    with pytest.raises(StoreMismatchError, match="replaced by another trunk"):
        distributed._run_chunk(str(store), 2, other)
    assert store_bytes(store) == before and not FeatureStore.open(store).done()[2]


@pytest.mark.parametrize("argument, value, message", [
    ("chunk", 0, r"featurize: chunk must be an int in \[1, inf\); got 0"),
    ("pooling", "mean", "featurize: pooling must be one of"),
    ("overwrite", "yes", "featurize: overwrite must be a bool; got 'yes'"),
    ("precision", "fp8", "featurize: precision must be one of"),
    ("random_state", -1, "featurize: random_state must be"),
])
def test_featurize_checks_its_arguments_through_the_parameter_table(folder, tmp_path, argument, value, message):
    with pytest.raises(ValueError, match=message):
        featurize(folder, tmp_path / "f.zarr", **{**TRUNK, argument: value})
    assert not (tmp_path / "f.zarr").exists()
