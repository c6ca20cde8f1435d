"""Property-based tests: over shapes, dtypes, value ranges, label types, parameter values and files,
the only outcomes are a correct result or a ValueError whose message names the input."""

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="the fuzz suite needs hypothesis (pip install '.[test]')")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from conftest import make_images, tiny_classifier  # noqa: E402
from xrayest.inputs import as_image_source  # noqa: E402
from xrayest.targets import check_labels  # noqa: E402
from xrayest.params import PARAMETERS, validate_params  # noqa: E402

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.function_scoped_fixture])
DTYPES = st.sampled_from([np.uint8, np.uint16, np.int16, np.int32, np.int64, np.float32, np.float64, np.bool_])


def arrays():
    shapes = hnp.array_shapes(min_dims=1, max_dims=5, min_side=0, max_side=6)
    return DTYPES.flatmap(lambda dtype: hnp.arrays(dtype, shapes, elements=_elements(dtype)))


def _elements(dtype):
    if np.dtype(dtype).kind == "f":
        finite = st.floats(-1e6, 1e6, width=np.dtype(dtype).itemsize * 8)
        return st.one_of(finite, finite.map(abs), st.sampled_from([np.nan, np.inf, 255.0, 0.0]))
    if np.dtype(dtype).kind == "b":
        return st.booleans()
    info = np.iinfo(dtype)
    return st.integers(max(info.min, -2**40), min(info.max, 2**40))


@pytest.fixture(scope="module")
def fitted():
    X, y = make_images(12, 8, 2)
    return tiny_classifier(backbone="small_cnn", image_size=8, epochs=1, hidden_units=(4,)).fit(X, y)


@FAST
@given(X=arrays())
def test_any_array_is_accepted_onto_the_0_255_scale_or_named(X):
    before = X.copy()
    try:
        source = as_image_source(X)
    except ValueError as exc:
        assert "X" in str(exc) or "pixel" in str(exc), str(exc)
        return
    finally:
        np.testing.assert_array_equal(X, before)  # never modified
    batch = source.batch(0, len(source), None)
    assert batch.dtype == np.float32 and batch.shape[-1] == 3 and len(batch) == len(X)
    if X.ndim >= 3:  # images (2-D rows are scikit-learn's tabular checks, any finite value)
        assert np.isfinite(batch).all() and batch.min() >= 0 and batch.max() <= 255.0 + 1e-3


@FAST
@given(X=arrays())
def test_predict_answers_one_row_per_image_or_names_the_input(fitted, X):
    try:
        proba = fitted.predict_proba(X)
    except ValueError as exc:
        assert "X" in str(exc) or "pixel" in str(exc) or "image" in str(exc), str(exc)
        return
    assert proba.shape == (len(X), 2) and np.allclose(proba.sum(1), 1) and np.isfinite(proba).all()


LABEL = st.one_of(st.text(max_size=4), st.integers(-3, 3), st.floats(allow_nan=True), st.none(), st.booleans())


@FAST
@given(y=st.lists(LABEL, min_size=0, max_size=12))
def test_labels_give_classes_or_a_named_error(y):
    try:
        classes, encoded = check_labels(y, len(y))
    except ValueError as exc:
        assert "y" in str(exc) or "label" in str(exc) or "class" in str(exc), str(exc)
        return
    assert len(classes) >= 2 and len(encoded) == len(y) and (classes[encoded] == np.asarray(y)).all()


VALUES = st.one_of(st.none(), st.booleans(), st.integers(-5, 300), st.floats(allow_nan=True, allow_infinity=True),
                   st.text(max_size=6), st.tuples(st.integers(-2, 64)), st.tuples(st.floats(-1, 2)),
                   st.just("imagenet"), st.just("balanced"), st.just("xray"),
                   st.dictionaries(st.text(max_size=2), st.floats(), max_size=2))


@FAST
@given(name=st.sampled_from(sorted(PARAMETERS)), value=VALUES)
def test_every_parameter_value_is_accepted_or_named(name, value):
    from xrayest import XrayCNNClassifier

    if name not in XrayCNNClassifier._parameter_constraints:
        return
    clf = XrayCNNClassifier().set_params(**{name: value})
    try:
        validate_params(clf)
    except ValueError as exc:
        assert f": {name} must be" in str(exc), str(exc)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=300), suffix=st.sampled_from([".png", ".jpg", ".bmp", ".tif"]))
def test_any_file_reads_or_names_the_file(tmp_path, content, suffix):
    from xrayest.inputs import read_image

    path = tmp_path / f"fuzzed{suffix}"
    path.write_bytes(content)
    try:
        image = read_image(path, (8, 8))
    except ValueError as exc:
        assert "fuzzed" in str(exc), str(exc)
        return
    assert image.shape == (8, 8, 3) and np.isfinite(image).all()


CSV_TEXT = st.text(alphabet=st.sampled_from(list("ab,|\n\"\r 01-x.é/")), max_size=80)


@FAST
@given(body=st.one_of(CSV_TEXT.map(lambda t: ("path,label\n" + t).encode("utf-8")), st.binary(max_size=120)),
       gz=st.booleans())
def test_label_tables_from_random_bytes_read_or_are_refused(tmp_path_factory, body, gz):
    import gzip

    from xrayest import load_label_table

    folder = tmp_path_factory.mktemp("tables")
    path = folder / ("t.csv.gz" if gz else "t.csv")
    path.write_bytes(gzip.compress(body) if gz else body)
    try:
        table = load_label_table(path, "path", label_column="label", check_files=False)
    except ValueError as exc:
        assert not isinstance(exc, UnicodeDecodeError)  # a raw decoding error names nothing
        assert any(word in str(exc) for word in ("row", "column", str(path))), str(exc)
        return
    assert len(table.paths) == len(table.y) > 0
    assert all(str(p).startswith(str(folder)) or str(p).startswith("/") for p in table.paths)


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    pytest.importorskip("zarr", reason="the [distributed] extra (zarr) is not installed")
    from PIL import Image

    from xrayest.distributed import featurize

    root = tmp_path_factory.mktemp("store_images")
    for i in range(6):
        Image.fromarray(np.full((16, 16), 30 * i, np.uint8)).save(root / f"{i}.png")
    featurize(root, root / "f.zarr", backbone="small_cnn", weights=None, image_size=16, random_state=0, chunk=2)
    return root / "f.zarr"


@FAST
@given(edit=st.sampled_from(["nan_row", "inf_row", "drop_attr", "truncate_keys", "truncate_features",
                             "bad_chunk", "drop_done"]),
       row=st.integers(0, 5), attr=st.sampled_from(["fingerprint", "config", "chunk", "image_size"]))
def test_stores_edited_at_random_are_refused_or_read_finite(small_store, tmp_path_factory, edit, row, attr):
    import shutil

    import zarr

    from xrayest.feature_store import FeatureStore

    copy = tmp_path_factory.mktemp("edited") / "f.zarr"
    shutil.copytree(small_store, copy)
    group = zarr.open_group(str(copy), mode="r+")
    if edit in ("nan_row", "inf_row"):
        group["features"][row] = np.nan if edit == "nan_row" else np.inf
    elif edit == "drop_attr":
        del group.attrs[attr]
    elif edit == "truncate_keys":
        group["keys"].resize((row,))
    elif edit == "truncate_features":
        group["features"].resize((row, *group["features"].shape[1:]))
    elif edit == "bad_chunk":
        group.attrs["chunk"] = 0
    else:
        del group["done"]
    try:
        store = FeatureStore.open(copy)
        features = store.read(np.arange(len(store)))
    except ValueError as exc:
        assert str(copy) in str(exc)
        return
    assert np.isfinite(features).all()


# ---------------------------------------------------------------- pandas inputs with random indexes
# scikit-learn's rule: a Series or DataFrame is read by position, never by its index.  Every estimator
# fitted on pandas X, y, groups, sample_weight and validation data with a random index (shuffled,
# repeated, strings, floats) must give what the same values as lists give.

def _indexes(n):
    numbers = st.lists(st.integers(-10**6, 10**6), min_size=n, max_size=n)
    return st.one_of(st.permutations(list(range(n))), numbers,  # shuffled; random, repeats allowed
                     st.lists(st.text(min_size=1, max_size=4), min_size=n, max_size=n),
                     st.lists(st.floats(allow_nan=False), min_size=n, max_size=n))


N_PANDAS = 18


@pytest.fixture(scope="module")
def pandas_case(tmp_path_factory):
    """18 image files, 3 classes, patients, weights; and what every estimator gives on them as lists."""
    from PIL import Image

    from xrayest import CascadeClassifier, EnsembleClassifier, FeatureExtractor

    folder = tmp_path_factory.mktemp("pandas_images")
    X, codes = make_images(N_PANDAS, 16, 3)
    paths = []
    for i, image in enumerate(X):
        Image.fromarray(image).save(folder / f"{i}.png")
        paths.append(str(folder / f"{i}.png"))
    case = dict(paths=paths, y=np.array(["normal", "bacterial", "viral"])[codes], groups=np.arange(N_PANDAS) // 2,
                weights=np.linspace(0.5, 2.0, N_PANDAS))

    def classifier(**kw):
        return tiny_classifier(**{"backbone": "small_cnn", "image_size": 16, "epochs": 1, "hidden_units": (4,), **kw})

    case["make"] = {
        "classifier": lambda: classifier(validation_split=0.25),
        "cascade": lambda: CascadeClassifier([
            ("root", classifier(), {"normal": ["normal"], "pneumonia": ["bacterial", "viral"]}),
            ("pneumonia", classifier(), None)]),
        "ensemble": lambda: EnsembleClassifier([classifier(), classifier(hidden_units=(3,))], random_state=0),
        "extractor": lambda: FeatureExtractor("small_cnn", weights=None, image_size=16, random_state=0),
    }
    case["expected"] = {name: _pandas_fit(name, make(), lambda v: list(v), case)
                        for name, make in case["make"].items()}
    return case


def _pandas_fit(name, model, wrap, case):
    """What ``model`` gives when every input goes through ``wrap`` (a list, or a Series with some index)."""
    paths, y, groups, weights = (wrap(case[k]) for k in ("paths", "y", "groups", "weights"))
    if name == "extractor":
        return model.fit(paths).transform(paths)
    if name == "classifier":
        model.fit(paths, y, groups=groups, sample_weight=weights)
        with_validation = case["make"]["classifier"]().set_params(validation_split=0.0)
        with_validation.fit(wrap(case["paths"][:12]), wrap(case["y"][:12]),
                            validation_data=(wrap(case["paths"][12:]), wrap(case["y"][12:])))
        return np.concatenate([model.predict_proba(paths), with_validation.predict_proba(paths),
                               np.asarray(with_validation.history_["val_loss"])[None].repeat(len(case["y"]), 0)], 1)
    if name == "ensemble":
        return model.fit(paths, y, groups=groups).predict_proba(paths)
    return model.fit(paths, y).predict_proba(paths)


@pytest.mark.slow
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(data=st.data(), name=st.sampled_from(["classifier", "cascade", "ensemble", "extractor"]),
       frame=st.booleans())
def test_pandas_inputs_are_read_by_position_whatever_their_index(pandas_case, data, name, frame):
    import pandas as pd

    def wrap(values):
        index = data.draw(_indexes(len(values)))
        series = pd.Series(list(values), index=index)
        return series.to_frame("value") if frame and isinstance(values[0], str) and "/" in values[0] else series

    got = _pandas_fit(name, pandas_case["make"][name](), wrap, pandas_case)
    np.testing.assert_array_equal(got, pandas_case["expected"][name])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), kind=st.sampled_from(["single", "findings", "nih"]))
def test_label_tables_from_dataframes_are_read_by_position_whatever_their_index(tmp_path_factory, data, kind):
    import pandas as pd

    from xrayest import load_label_table

    n = 6
    paths = [f"{i}.png" for i in range(n)]
    columns = {"single": {"label": ["a", "b", "a", "b", "c", "c"]},
               "findings": {"A": [1, 0, -1, 1, 0, 1], "B": [0, 1, 1, 0, np.nan, 1]},
               "nih": {"label": ["A|B", "No Finding", "A", "B", "A|B", "B"]}}[kind]
    options = {"single": dict(label_column="label"), "findings": dict(label_columns=["A", "B"]),
               "nih": dict(label_column="label", sep="|", none_label="No Finding")}[kind]
    table = pd.DataFrame({"path": paths, **columns, "patient": [7, 7, 3, 3, 9, 9]})
    shuffled = table.set_axis(data.draw(_indexes(n)), axis=0)
    a = load_label_table(table, "path", patient_column="patient", root="/images", check_files=False, **options)
    b = load_label_table(shuffled, "path", patient_column="patient", root="/images", check_files=False, **options)
    assert list(a.paths) == list(b.paths)
    np.testing.assert_array_equal(np.asarray(a.y), np.asarray(b.y))
    np.testing.assert_array_equal(np.asarray(a.groups), np.asarray(b.groups))
