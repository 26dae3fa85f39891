"""The seed §5 classifier: CSV or bundled data in, a model in the store, accuracy against scikit-learn."""
import json

import numpy as np
import pandas as pd
import pytest

import puhui
from puhui import store
from puhui.data.tabular import TabularEncoder
from puhui.errors import BadInput
from puhui.progress import messages_to
from puhui.tasks.classification import train_classifier

from conftest import run_cli


def test_default_breast_cancer_torch_beats_or_matches_sklearn(home):
    logs = []
    res = train_classifier(epochs=20, progress=messages_to(logs.append))
    assert res["model"] == "breast-cancer-classifier"
    assert res["test_accuracy"] >= 0.93
    assert res["test_accuracy"] >= res["baseline_test_accuracy"]
    assert sum(map(sum, res["confusion_matrix"])) == res["test_rows"]
    assert any(line.startswith("Epoch 20: Loss = ") for line in logs)
    m = store.get("breast-cancer-classifier")
    assert m.task == "classification" and m.extra["classes"] == ["benign", "malignant"]
    names = {f.name for f in m.files}
    assert {"model.safetensors", "loss_curve.png", "confusion_matrix.png", "metrics.json"} <= names
    for png in ("loss_curve.png", "confusion_matrix.png"):
        assert store.model_file(m.name, png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the stored model predicts what training measured
    from sklearn.datasets import load_breast_cancer
    d = load_breast_cancer(as_frame=True)
    clf = puhui.load("breast-cancer-classifier")
    pred = np.array(clf.predict(d.frame.drop(columns=["target"])))
    truth = np.asarray(d.target_names)[d.target]
    assert (pred == truth).mean() > 0.95


def test_numpy_engine_trains_the_same_network(home):
    res = train_classifier(epochs=15, engine="numpy", name="bc-numpy")
    assert res["engine"] == "numpy"
    assert res["test_accuracy"] >= 0.93
    assert puhui.load("bc-numpy").model.layers[0].weight.shape == (50, 30)


def _mixed_csv(path, n=400, seed=0):
    """A rule with a categorical column, a boolean, missing values and a numeric column that matters."""
    rng = np.random.default_rng(seed)
    colour = rng.choice(["red", "green", "blue"], n)
    x = rng.normal(size=n)
    noise = rng.normal(size=n)
    label = np.where((colour == "red") | (x > 0.8), "yes", "no")
    df = pd.DataFrame({"colour": colour, "x": x, "noise": noise, "flag": rng.random(n) > 0.5, "label": label})
    df.loc[rng.choice(n, 20, replace=False), "noise"] = np.nan
    df.loc[rng.choice(n, 10, replace=False), "colour"] = np.nan
    df.to_csv(path, index=False)
    return df


def test_csv_with_categories_and_missing_values(home, tmp_path):
    csv = tmp_path / "mixed.csv"
    _mixed_csv(csv)
    res = train_classifier(str(csv), "label", epochs=40, lr=1e-2)
    assert res["model"] == "mixed-classifier"
    assert res["classes"] == ["no", "yes"]
    assert res["test_accuracy"] >= 0.9
    # predictions for new rows, including an unseen category and a missing value
    new = tmp_path / "new.csv"
    pd.DataFrame({"colour": ["red", "purple", "green"], "x": [-1.0, 2.0, -1.0], "noise": [0, None, 0],
                  "flag": [True, False, True]}).to_csv(new, index=False)
    out = tmp_path / "pred.csv"
    puhui.load("mixed-classifier").predict_csv(str(new), str(out))
    pred = pd.read_csv(out)
    assert list(pred["prediction"]) == ["yes", "yes", "no"]
    assert np.allclose(pred["probability_no"] + pred["probability_yes"], 1, atol=1e-5)


def test_encoder_roundtrip_and_errors():
    df = pd.DataFrame({"a": [1.0, 2.0, None], "b": ["x", "y", "x"]})
    enc = TabularEncoder.fit(df)
    assert enc.feature_names == ["a", "b=x", "b=y"]
    again = TabularEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    assert np.array_equal(again.transform(df), enc.transform(df))
    with pytest.raises(BadInput, match="missing column"):
        enc.transform(df[["a"]])
    with pytest.raises(BadInput, match="'a' should be numeric"):
        enc.transform(pd.DataFrame({"a": ["oops"], "b": ["x"]}))
    ids = pd.DataFrame({"id": [f"user{i}" for i in range(100)]})
    with pytest.raises(BadInput, match="'id' is non-numeric with 100 distinct values"):
        TabularEncoder.fit(ids)


def test_cli_json_and_predict(home, tmp_path):
    r = run_cli("train", "classifier", "--epochs", "3", "--name", "cli-bc", "--json", home=home)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for key in ("test_accuracy", "baseline_test_accuracy", "model", "epochs"):
        assert key in out
    assert out["model"] == "cli-bc" and out["epochs"] == 3
    assert "Epoch 3: Loss = " in r.stderr
    from sklearn.datasets import load_breast_cancer
    d = load_breast_cancer(as_frame=True)
    csv = tmp_path / "rows.csv"
    d.frame.drop(columns=["target"]).head(4).to_csv(csv, index=False)
    r = run_cli("predict", "cli-bc", "--data", str(csv), home=home)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 5 and lines[0].endswith("prediction,probability_benign,probability_malignant")


@pytest.mark.parametrize("args, message", [
    (["--data", "/nonexistent/data.csv"], "data file not found: /nonexistent/data.csv"),
    (["--data", "{csv}", "--target", "nope"], "target column 'nope' not found"),
    (["--data", "{ids}", "--target", "label"], "column 'name' is non-numeric with 140 distinct values"),
])
def test_cli_bad_input_is_one_line_and_exit_2(home, tmp_path, args, message):
    csv = tmp_path / "ok.csv"
    _mixed_csv(csv, n=60)
    ids = tmp_path / "ids.csv"
    pd.DataFrame({"name": [f"n{i}" for i in range(200)], "label": ["a", "b"] * 100}).to_csv(ids, index=False)
    args = [a.format(csv=csv, ids=ids) for a in args]
    r = run_cli("train", "classifier", *args, home=home)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and message in err[0], r.stderr
