"""Multi-label findings, label tables and patient-level splits."""

import csv

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold

from conftest import tiny_classifier
from xrayest import load_label_table
from xrayest.multilabel import MaskedBinaryCrossentropy
from xrayest.targets import check_multilabel
from xrayest.training import stratified_split


def findings_data(n=48, seed=0):
    """Images whose two findings are independent, learnable patterns: a bright top band, a bright left band."""
    rng = np.random.default_rng(seed)
    Y = np.stack([np.arange(n) % 2, (np.arange(n) // 2) % 2], axis=1)
    X = rng.integers(0, 60, (n, 32, 32), dtype=np.uint8)
    X[Y[:, 0] == 1, :10, :] += 150
    X[Y[:, 1] == 1, :, :10] += 150
    return X, Y


def test_multilabel_fit_predict_proba_and_learns():
    X, Y = findings_data()
    Y_before = Y.copy()
    clf = tiny_classifier(backbone="small_cnn", epochs=15, learning_rate=3e-3).fit(X, Y)
    np.testing.assert_array_equal(Y, Y_before)
    proba = clf.predict_proba(X)
    assert proba.shape == (48, 2) and clf.multilabel_ and [c.tolist() for c in clf.classes_] == [[0, 1], [0, 1]]
    assert not np.allclose(proba.sum(axis=1), 1.0)  # independent sigmoids, not a softmax
    pred = clf.predict(X)
    assert pred.shape == (48, 2) and set(np.unique(pred)) <= {0, 1}
    assert (pred == Y).mean() > 0.8
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(Y, proba, average="macro") > 0.9


def test_uncertain_entries_are_left_out_of_the_loss():
    """Masked (-1) entries weigh nothing, alike in the graph loop and in keras.Model.fit."""
    X, Y = findings_data(24)
    masked = Y.copy()
    masked[::3, 1] = -1
    # one batch per epoch: no shuffling difference between the loops, the same updates
    graph = tiny_classifier(epochs=3, batch_size=24, training_loop="graph").fit(X, masked)
    keras_fit = tiny_classifier(epochs=3, batch_size=24, training_loop="keras").fit(X, masked)
    np.testing.assert_allclose(graph.history_["loss"], keras_fit.history_["loss"], rtol=1e-4)
    np.testing.assert_allclose(graph.history_["accuracy"], keras_fit.history_["accuracy"], rtol=1e-4)
    np.testing.assert_allclose(graph.predict_proba(X), keras_fit.predict_proba(X), atol=1e-4)
    loss = MaskedBinaryCrossentropy()
    y_true = np.array([[1.0, -1.0]], np.float32)
    assert float(loss(y_true, np.array([[0.9, 0.01]], np.float32))) == pytest.approx(
        float(loss(y_true, np.array([[0.9, 0.99]], np.float32))), rel=1e-6)
    with pytest.raises(ValueError, match="only one value"):
        check_multilabel(np.array([[1, 0], [1, 1]]), 2)
    with pytest.raises(ValueError, match="found \\[2.0\\]"):
        check_multilabel(np.array([[1, 0], [0, 2]]), 2)


def test_multilabel_grid_search_save_load_and_clone(tmp_path):
    X, Y = findings_data()
    search = GridSearchCV(tiny_classifier(epochs=5), {"learning_rate": [1e-3, 3e-3]}, cv=2, scoring="roc_auc")
    search.fit(X, Y)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    clf = search.best_estimator_
    from xrayest import load

    path = clf.save(tmp_path / "m.keras")
    again = load(path)
    assert again.multilabel_
    np.testing.assert_allclose(again.predict_proba(X), clf.predict_proba(X), atol=1e-6)
    np.testing.assert_array_equal(again.predict(X), clf.predict(X))
    assert clone(clf).get_params() == clf.get_params()
    with pytest.raises(ValueError, match="class_weight"):
        tiny_classifier(class_weight="balanced").fit(X, Y)


def test_validation_split_with_groups_keeps_patients_apart():
    labels = np.array([0, 1] * 30)
    groups = np.repeat(np.arange(20), 3)
    train, val = stratified_split(labels, 0.2, random_state=0, groups=groups)
    assert set(groups[train]).isdisjoint(groups[val]) and len(train) + len(val) == 60
    assert 6 <= len(val) <= 18
    X, Y = findings_data(24)
    clf = tiny_classifier(epochs=2, validation_split=0.25).fit(X, Y[:, 0], groups=np.repeat(np.arange(8), 3))
    assert len(clf.history_["val_accuracy"]) == 2
    with pytest.raises(ValueError, match="one group"):
        tiny_classifier(epochs=1, validation_split=0.25).fit(X, Y[:, 0], groups=[1, 2])


def test_grid_search_with_patient_groups():
    """The documented patient-level search: no patient in both the training and the scoring folds."""
    X, Y = findings_data(24)
    y = Y[:, 0]
    patients = np.repeat(np.arange(12), 2)
    cv = StratifiedGroupKFold(3)
    for train, test in cv.split(X, y, patients):
        assert set(patients[train]).isdisjoint(patients[test])
    search = GridSearchCV(tiny_classifier(epochs=2), {"dropout": [0.0]}, cv=cv).fit(X, y, groups=patients)
    assert np.isfinite(search.best_score_)


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_nih_style_table(tmp_path):
    for name in ["a.png", "b.png", "c.png"]:
        (tmp_path / name).write_bytes(b"x")
    table = write_csv(tmp_path / "labels.csv", [
        {"Image Index": "a.png", "Finding Labels": "Effusion|Infiltration", "Patient ID": "7"},
        {"Image Index": "b.png", "Finding Labels": "No Finding", "Patient ID": "7"},
        {"Image Index": "c.png", "Finding Labels": "Mass", "Patient ID": "9"},
    ])
    t = load_label_table(table, "Image Index", label_column="Finding Labels", sep="|", none_label="No Finding",
                         patient_column="Patient ID")
    assert t.labels == ["Effusion", "Infiltration", "Mass"]
    assert t.y.tolist() == [[1, 1, 0], [0, 0, 0], [0, 0, 1]]
    assert t.groups.tolist() == ["7", "7", "9"] and t.paths[0] == str(tmp_path / "a.png")
    (tmp_path / "c.png").unlink()
    with pytest.raises(FileNotFoundError, match="c.png"):
        load_label_table(table, "Image Index", label_column="Finding Labels", sep="|")
    single = load_label_table(table, "Image Index", label_column="Finding Labels", check_files=False)
    assert single.y.tolist() == ["Effusion|Infiltration", "No Finding", "Mass"]


@pytest.mark.parametrize("uncertain, expected", [("zeros", 0), ("ones", 1), ("ignore", -1)])
def test_chexpert_style_table(tmp_path, uncertain, expected):
    table = write_csv(tmp_path / "train.csv", [
        {"Path": "p1/s1/view1.jpg", "Edema": "1.0", "Cardiomegaly": "-1.0", "Patient": "p1"},
        {"Path": "p1/s2/view1.jpg", "Edema": "", "Cardiomegaly": "0.0", "Patient": "p1"},
        {"Path": "p2/s1/view1.jpg", "Edema": "0", "Cardiomegaly": "1", "Patient": "p2"},
    ])
    t = load_label_table(table, "Path", label_columns=["Edema", "Cardiomegaly"], uncertain=uncertain,
                         patient_column="Patient", root="/data/chexpert", check_files=False)
    assert t.y.tolist() == [[1, expected], [0, 0], [0, 1]]
    assert t.paths[0] == "/data/chexpert/p1/s1/view1.jpg" and len(t) == 3


@pytest.mark.parametrize("kwargs, message", [
    (dict(label_column="Edema", label_columns=["Edema"]), "exactly one"),
    (dict(label_columns=["Nope"]), "no column"),
    (dict(label_columns=["Edema"], uncertain="maybe"), "uncertain must be"),
    (dict(label_columns="Edema"), "non-empty list"),
])
def test_label_table_errors_name_the_problem(kwargs, message):
    rows = [{"Path": "a.png", "Edema": "2"}]
    with pytest.raises(ValueError, match=message):
        load_label_table(rows, "Path", check_files=False, **kwargs)
    with pytest.raises(ValueError, match="row 2, column 'Edema': '2'"):
        load_label_table(rows, "Path", label_columns=["Edema"], check_files=False)


def test_evaluate_gives_per_finding_auc_with_intervals_and_report(tmp_path):
    from xrayest import evaluate, write_evaluation_report

    X, Y = findings_data()
    clf = tiny_classifier(backbone="small_cnn", epochs=10, learning_rate=3e-3).fit(X, Y)
    result = evaluate(clf, X, Y, findings=["top", "left"], n_bootstraps=200)
    for name in ("top", "left"):
        r = result.per_finding[name]
        assert r["auc_low"] <= r["auc"] <= r["auc_high"] and r["positives"] == 24
    text = str(result)
    assert "95% CI" in text and "top" in text and "macro ROC AUC" in text
    written = write_evaluation_report(clf, X, Y, tmp_path, findings=["top", "left"])
    assert written.macro_auc == pytest.approx(result.macro_auc)
    assert (tmp_path / "roc_curves.png").stat().st_size > 0 and "95% bootstrap" in (tmp_path / "report.md").read_text()


def test_cli_fit_grid_evaluate_predict_from_an_nih_style_table(tmp_path, capsys):
    from xrayest import make_synthetic_findings
    from xrayest.cli import main

    train = make_synthetic_findings(tmp_path / "train", n_patients=12, images_per_patient=2, image_size=32,
                                    random_state=0)
    test = make_synthetic_findings(tmp_path / "test", n_patients=4, images_per_patient=2, image_size=32,
                                   random_state=1)
    model = tmp_path / "m.keras"
    common = ["--backbone", "small_cnn", "--weights", "none", "--image-size", "32", "--epochs", "2", "-q"]
    assert main(["fit", "--labels", str(train), *common, "--param", "validation_split=0.25", "--out",
                 str(model)]) == 0
    assert main(["grid", "--labels", str(train), *common, "--param", "dropout=0.0,0.3", "--cv", "2"]) == 0
    out = capsys.readouterr().out
    assert "mean AUC" in out
    assert main(["evaluate", str(model), "--labels", str(test), "--report", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert "Cardiomegaly" in out and "95% CI" in out
    assert main(["predict", str(model), str(tmp_path / "test" / "images"), "-q"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "path,label,p_Cardiomegaly,p_Consolidation,p_Effusion" and len(lines) == 9
    assert main(["fit", *common, "--out", str(model)]) == 1
    assert "give DATA_DIR" in capsys.readouterr().err
    # a patient column the table lacks: an error listing its columns (grouping was dropped silently)
    before = model.read_bytes()
    assert main(["grid", "--labels", str(train), *common, "--patient-column", "Patient", "--param", "dropout=0.0",
                 "--cv", "2"]) == 1
    err = capsys.readouterr().err
    assert "--patient-column 'Patient' is not a column of" in err and "'Patient ID'" in err
    assert model.read_bytes() == before


def test_the_forms_of_multilabel_targets_users_have():
    import scipy.sparse
    from sklearn.model_selection import GridSearchCV

    from xrayest.multilabel import masked_roc_auc

    X, Y = findings_data()
    clf = tiny_classifier(backbone="small_cnn", epochs=2)
    names = [[f for f, on in zip(("top", "left"), row) if on] for row in Y]
    with pytest.raises(ValueError, match=r"lists of finding names; .*MultiLabelBinarizer\(\).fit_transform\(y\)"):
        clf.fit(X, names)
    sparse = scipy.sparse.csr_matrix(Y)
    dense = tiny_classifier(backbone="small_cnn", epochs=2).fit(X, Y).predict_proba(X)
    np.testing.assert_allclose(clf.fit(X, sparse).predict_proba(X), dense, atol=1e-6)
    # -1 (uncertain) entries are left out of score() and of the CLI's grid scorer, as in training
    uncertain = Y.copy()
    uncertain[::3, 1] = -1
    pred = clf.predict(X)
    expected = np.mean(np.all((pred == uncertain) | (uncertain == -1), axis=1))
    assert clf.score(X, uncertain) == pytest.approx(expected)
    assert 0.0 <= masked_roc_auc(clf, X, uncertain) <= 1.0
    search = GridSearchCV(tiny_classifier(backbone="small_cnn", epochs=1), {"dropout": [0.0]}, cv=2,
                          scoring=masked_roc_auc, error_score="raise").fit(X, uncertain)
    assert np.isfinite(search.best_score_)
