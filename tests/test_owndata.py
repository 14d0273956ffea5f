"""IFM on your own data, end to end: the encoding fitted on training rows only, the model bundle
(save, load, predict, factors, terms, explain) and the errors a new user meets, each checked on
constructed tables against what the equations and the training run say."""
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import ifm
from ifm.cli import main
from ifm.data.encoding import Encoding, EncodingError
from ifm.data.libfm import DataFormatError
from ifm.data.userdata import load_files
from ifm.runs import bundle as bundles

SMALL = {"epochs": 3, "embedding_size": 4}


def table(n=400, seed=0, price=False):
    """A CTR table whose clicks depend on user x item, with an id-like integer column."""
    rng = np.random.default_rng(seed)
    user, item = rng.integers(0, 12, n), rng.integers(0, 9, n)
    click = ((user + item) % 3 == 0).astype(int) ^ (rng.random(n) < 0.1)
    frame = pd.DataFrame({"user": [f"u{u}" for u in user], "item": [f"i{i}" for i in item],
                          "hour": rng.integers(0, 4, n).astype(str), "click": click})
    if price:
        frame.insert(3, "price", np.round(rng.random(n) * 10, 2).astype(str))
        frame.loc[::7, "price"] = ""
    return frame


def write(frame, path):
    frame.to_csv(path, index=False)
    return str(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """IFM trained from the command line on three files (train, valid, test), saved as a bundle."""
    d = tmp_path_factory.mktemp("own")
    full = table(600, seed=1)
    files = [write(full.iloc[a:b], d / f"{name}.csv") for name, a, b in (("tr", 0, 400), ("va", 400, 500),
                                                                           ("te", 500, 600))]
    out = d / "record.json"
    assert main(["train", "--data", ",".join(files), "--target", "click", "--model", "ifm", "--quiet",
                 "--epochs", "3", "--embedding-size", "4", "--save", str(d / "model"), "--out", str(out)]) == 0
    return d, files, json.loads(out.read_text())


# ------------------------------------------------------------------------------ the encoding
def test_the_vocabulary_is_fitted_on_the_training_rows_only_and_unseen_values_go_to_the_rare_bucket():
    train = pd.DataFrame({"a": ["x", "y", "x"], "b": ["1", "", "2"], "t": ["0", "1", "1"]})
    enc = Encoding.fit(train, "t", ["a", "b"])
    # a: x, y, missing, rare (ids 0-3); b: 1, 2, missing, rare (ids 4-7)
    assert enc.vocab == {"a": ["x", "y"], "b": ["1", "2"]} and enc.num_features == 8
    new = enc.transform(pd.DataFrame({"a": ["y", "z", "NA"], "b": ["3", "2", " "], "t": ["1", "0", "1"]}))
    assert new.x.tolist() == [[1, 7], [3, 5], [2, 6]]
    assert new.rare == {"a": 1, "b": 1} and new.missing == {"a": 1, "b": 1}
    assert new.y.tolist() == [1.0, 0.0, 1.0]


def test_columns_with_decimals_are_refused_or_cut_into_quantile_bins_of_the_training_rows():
    train = pd.DataFrame({"price": ["0.5", "1.5", "2.5", "3.5", ""], "id": ["10", "20", "30", "40", "50"],
                          "t": ["0", "1", "0", "1", "0"]})
    with pytest.raises(EncodingError, match="column price holds numbers with decimals.*--numeric-bins"):
        Encoding.fit(train, "t", ["price", "id"])
    enc = Encoding.fit(train, "t", ["price", "id"], numeric_bins=2)
    assert enc.kinds == {"price": "numeric", "id": "categorical"} and enc.edges["price"] == [2.0]
    x = enc.transform(pd.DataFrame({"price": ["0.1", "2.0", "99", ""], "id": ["10"] * 4, "t": ["0"] * 4})).x
    assert x[:, 0].tolist() == [0, 1, 1, 2]            # below the median, at or above it (twice), missing
    with pytest.raises(EncodingError, match=r"line 2: column price is numeric; 'cheap' is not a number"):
        enc.transform(pd.DataFrame({"price": ["cheap"], "id": ["10"], "t": ["0"]}))


@pytest.mark.parametrize("labels, task, outcome", [
    (["0", "1", "1"], None, "ctr"),
    (["-1", "1", "1"], None, r"takes 2 values \(-1, 1\), not 0/1: say --task regression.*or --task ctr"),
    (["1", "3", "5"], None, "takes 3 values"),
    (["-1", "1", "1"], "ctr", "ctr"),
    (["1", "3", "5"], "regression", "regression"),
    (["1", "3", "5"], "ctr", "--task ctr needs a target with two values"),
    (["1", "1", "1"], None, "has one value"),
])
def test_the_task_is_said_not_guessed(labels, task, outcome):
    frame = pd.DataFrame({"a": ["x", "y", "z"], "t": labels})
    if outcome in ("ctr", "regression"):
        enc = Encoding.fit(frame, "t", ["a"], task=task)
        assert enc.task == outcome
        if outcome == "ctr":               # the smaller value is no click, the larger a click
            assert enc.labels(frame["t"]).tolist() == [0.0, 1.0, 1.0]
    else:
        with pytest.raises(EncodingError, match=outcome):
            Encoding.fit(frame, "t", ["a"], task=task)


def test_an_encoding_survives_its_json():
    frame = table(50, price=True)
    enc = Encoding.fit(frame, "click", ["user", "price"], numeric_bins=3)
    again = Encoding.from_dict(json.loads(json.dumps(enc.to_dict())))
    assert np.array_equal(again.transform(frame).x, enc.transform(frame).x) and again.task == "ctr"


# ------------------------------------------------------------------------------ the bundle
def test_predict_on_the_test_file_reproduces_the_metrics_train_reported(trained, capsys):
    d, files, record = trained
    rc = main(["predict", "--model", str(d / "model"), "--data", files[2], "--out", str(d / "scores.csv")])
    err = capsys.readouterr().err
    assert rc == 0 and "predict: 100 rows of te.csv, task ctr (prediction: click probability)" in err
    bundle = ifm.load(d / "model")
    assert bundle.metrics(files[2]) == pytest.approx(record["test"], abs=1e-6)
    assert bundle.metrics(files[1]) == pytest.approx(record["valid"], abs=1e-6)
    scores = pd.read_csv(d / "scores.csv")
    logits = torch.logit(torch.tensor(scores["prediction"].to_numpy(), dtype=torch.float64))
    y = pd.read_csv(files[2])["click"].to_numpy()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor(y, dtype=torch.float64))
    assert loss.item() == pytest.approx(record["test"]["logloss"], abs=1e-4)     # the CSV's 6 digits


def test_a_bundle_loads_to_the_same_outputs_on_both_computation_paths(trained):
    d, files, _ = trained
    first, second = ifm.load(d / "model"), ifm.load(d / "model")
    encoded = first.encode(files[2])
    x = torch.as_tensor(encoded.x)
    assert first.model.layout is not None and first.model.layout.applies(x)      # per feature
    per_feature = first.outputs(encoded)
    second.model.use_feature_fields(None)                                         # stacked
    stacked = second.outputs(encoded)
    torch.testing.assert_close(per_feature, stacked, rtol=1e-5, atol=1e-5)
    m_pf, t_pf, _ = first.factors_and_terms(encoded)
    m_st, t_st, _ = second.factors_and_terms(encoded)
    torch.testing.assert_close(m_pf, m_st, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(t_pf, t_st, rtol=1e-5, atol=1e-5)


def test_factors_sum_to_h_and_the_terms_add_up_to_the_models_output(trained):
    d, files, _ = trained
    bundle = ifm.load(d / "model")
    scores = bundle.score(files[2], factors=True)
    fields = bundle.encoding.fields
    m = scores[[f"m_{f}" for f in fields]].to_numpy()
    np.testing.assert_allclose(m.sum(axis=1), len(fields), rtol=1e-5)
    logit = scores[[f"term_{f}" for f in fields]].sum(axis=1) + scores["constant"]
    np.testing.assert_allclose(1 / (1 + np.exp(-logit)), scores["prediction"], rtol=1e-4, atol=1e-6)
    # Eq. 7 written out for the first row: w0 + sum_i m_i w_i + sum_{i<j} <m_i v_i, m_j v_j>
    x = torch.as_tensor(bundle.encode(files[2]).x[:1])
    w0, w, v = bundle.model.linear.bias, bundle.model.linear(x)[0], bundle.model.embedding(x)[0]
    mi = torch.tensor(m[0], dtype=torch.float32)
    pairs = sum((mi[i] * v[i] * mi[j] * v[j]).sum() for i in range(len(fields)) for j in range(i + 1, len(fields)))
    assert (w0 + (mi * w).sum() + pairs).item() == pytest.approx(logit.iloc[0], abs=1e-4)


def test_an_fm_with_batch_norm_on_the_pooled_vector_splits_into_terms_too(tmp_path):
    model = ifm.fit(write(table(300), tmp_path / "t.csv"), target="click", model="fm", recipe="code", **SMALL)
    assert model.model.pool is not None                       # FM.py's batch norm and dropout (recipe code)
    with torch.no_grad():
        model.model.pool[0].running_mean.uniform_(-1, 1)
        model.model.pool[0].running_var.uniform_(0.5, 2)
    scores = model.score(tmp_path / "t.csv", factors=True)
    terms = scores[[c for c in scores if c.startswith("term_")]].sum(axis=1) + scores["constant"]
    np.testing.assert_allclose(1 / (1 + np.exp(-terms)), scores["prediction"], rtol=1e-4, atol=1e-6)
    assert (scores[[c for c in scores if c.startswith("m_")]] == 1).all().all()


def test_the_api_round_trip_gives_identical_predictions_and_says_the_fm_baseline(tmp_path):
    path = write(table(300, price=True), tmp_path / "t.csv")
    fitted = ifm.fit(path, target="click", numeric_bins=4, save=tmp_path / "m", **SMALL)
    loaded = ifm.load(tmp_path / "m")
    rows = pd.read_csv(path)            # pandas' own types: price floats with NaN, hour integers
    np.testing.assert_array_equal(fitted.predict(rows), loaded.predict(rows))
    np.testing.assert_allclose(loaded.predict(rows), loaded.predict(path), rtol=1e-6)
    assert loaded.last.missing["price"] == len(rows[rows["price"].isna()]) > 0
    assert set(loaded.manifest["fm_baseline"]["test"]) == {"auc", "logloss"}
    assert loaded.factors(rows).shape == (300, 4)
    table_, concentration = ifm.explain(loaded, rows)
    assert set(table_["field"]) == {"user", "item", "hour", "price"} and 0 <= concentration["entropy_median"] <= 1


def test_a_difm_bundle_gives_its_factors_and_terms_and_explain_says_they_are_not_normalised(tmp_path, capsys):
    path = write(table(300), tmp_path / "t.csv")
    ifm.fit(path, target="click", model="difm", save=tmp_path / "m", **SMALL)
    loaded = ifm.load(tmp_path / "m")
    scores = loaded.score(path, factors=True)
    fields = loaded.encoding.fields
    x = torch.as_tensor(loaded.encode(path).x)
    with torch.no_grad():
        np.testing.assert_allclose(scores[[f"m_{f}" for f in fields]].to_numpy(), loaded.model.factors(x).numpy(),
                                   rtol=1e-5, atol=1e-6)
        logit = scores[[f"term_{f}" for f in fields]].sum(axis=1) + scores["constant"]
        np.testing.assert_allclose(logit, loaded.model(x).numpy(), rtol=1e-4, atol=1e-5)
    assert main(["explain", "--model", str(tmp_path / "m"), "--data", path, "--png", str(tmp_path / "f.png")]) == 0
    out = capsys.readouterr().out
    ratio = (loaded.factors(path).quantile(0.05) > 0).all()
    assert ("p95 / p5" in out) == bool(ratio) and ("p95 - p5" in out) != bool(ratio)
    assert "not normalised to sum to h" in out and "entropy of m_x" not in out
    assert "DIFM" in open(tmp_path / "f.png", "rb").read().decode("latin-1") or (tmp_path / "f.png").stat().st_size > 5000


def test_only_positive_rows_that_sum_to_h_count_as_normalised_factors():
    from ifm.book.owndata import normalised

    assert normalised([[0.5, 1.5], [1.0, 1.0]])
    assert not normalised([[1.0, 1.5], [1.0, 1.0]])       # a row sums to 2.5, not h = 2
    assert not normalised([[-0.5, 2.5]])                   # sums to h, but one factor is negative (DIFM can)


def test_explain_prints_the_per_field_table_and_writes_the_figure(trained, capsys):
    d, files, _ = trained
    png = d / "f.png"
    assert main(["explain", "--model", str(d / "model"), "--data", files[2], "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "m median" in out and "p95 / p5" in out and "entropy of m_x / h" in out
    assert png.stat().st_size > 5000


def test_a_new_bundle_is_never_half_written_and_an_old_one_survives_a_failed_save(trained, tmp_path, monkeypatch):
    d, files, _ = trained
    old = ifm.load(d / "model")
    target = tmp_path / "copy"
    bundles.save(target, old.model, old.manifest)
    before = (target / "weights.pt").read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError):
        bundles.save(target, old.model, old.manifest)
    with pytest.raises(OSError):
        bundles.save(tmp_path / "new", old.model, old.manifest)
    assert (target / "weights.pt").read_bytes() == before and not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]


# ------------------------------------------------------------------------------ bad input
def test_bundle_errors_name_the_directory_and_the_problem(trained, tmp_path, capsys):
    d, files, _ = trained
    cases = []
    (tmp_path / "empty").mkdir()
    cases.append((tmp_path / "empty", "not a model bundle (no manifest.json"))
    newer = tmp_path / "newer"
    newer.mkdir()
    manifest = json.loads((d / "model" / "manifest.json").read_text())
    (newer / "manifest.json").write_text(json.dumps({**manifest, "ifm_bundle": bundles.FORMAT + 1}))
    cases.append((newer, f"bundle format {bundles.FORMAT + 1} was written by ifm"))
    cases.append((tmp_path / "nowhere", "no such directory"))
    for directory, words in cases:
        assert main(["predict", "--model", str(directory), "--data", files[2]]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --model ") and len(err.strip().splitlines()) == 1
        assert words in err, err


@pytest.mark.parametrize("text, words", [
    ("user,hour,click\nu1,1,0\n", "lacks column item"),
    ("", "empty file"),
    ("user,item,hour\n", "no rows below the header"),
    ("user,item,item,hour\nu1,i1,i2,1\n", "line 1: column name 'item' appears twice"),
])
def test_rows_to_score_are_checked_with_the_file_and_column_named(trained, tmp_path, capsys, text, words):
    d, _, _ = trained
    bad = tmp_path / "new.csv"
    bad.write_text(text)
    assert main(["predict", "--model", str(d / "model"), "--data", str(bad)]) == 2
    err = capsys.readouterr().err
    assert words in err and str(bad) in err and len(err.strip().splitlines()) == 1


def test_extra_columns_are_ignored_and_said(trained, tmp_path, capsys):
    d, files, _ = trained
    rows = pd.read_csv(files[2]).assign(note="x")
    assert main(["predict", "--model", str(d / "model"), "--data", write(rows, tmp_path / "x.csv")]) == 0
    assert "column note ignored" in capsys.readouterr().err


@pytest.mark.parametrize("argv, words", [
    (["--fields", "user,click"], "--fields names the target 'click' among the features"),
    (["--lr", "1e300"], "argument --lr: must be a number in (0, 100]"),
    (["--embedding-size", "1000000000000"], "argument --embedding-size: must be an integer from 1 to 65536"),
    (["--save", "{file}"], "is a file; give a directory"),
])
def test_train_refuses_bad_flags_in_one_line_before_any_work(tmp_path, capsys, argv, words):
    path = write(table(50), tmp_path / "t.csv")
    argv = [a.replace("{file}", path) for a in argv]
    assert main(["train", "--data", path, "--target", "click", "--model", "ifm", "--quiet", *argv]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1


def test_files_too_small_to_split_and_one_valued_targets_are_refused(tmp_path):
    two = write(table(2), tmp_path / "two.csv")
    with pytest.raises(DataFormatError, match="two.csv: 2 rows; one file is split 8:1:1.*at least 10 rows"):
        load_files(two, target="click")
    flat = write(table(40).assign(click=0), tmp_path / "flat.csv")
    with pytest.raises(EncodingError, match="target click has one value"):
        load_files(flat, target="click")


def test_an_embedding_table_past_the_machines_memory_is_refused_before_allocation(tmp_path, capsys, monkeypatch):
    from ifm.training import limits

    monkeypatch.setattr(limits, "TABLE_COPIES", 10**9)
    path = write(table(50), tmp_path / "t.csv")
    assert main(["train", "--data", path, "--target", "click", "--model", "fm", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "error: --embedding-size: " in err and "GiB" in err and "lower --embedding-size" in err


def test_a_libfm_file_trains_saves_and_predicts_the_same_way(tmp_path):
    rng = np.random.default_rng(0)
    lines = "".join(f"{rng.integers(0, 2)} {rng.integers(0, 5)}:1 {5 + rng.integers(0, 7)}:1\n" for _ in range(200))
    path = tmp_path / "mine.libfm"
    path.write_text(lines)
    model = ifm.fit(str(path), model="ifm", save=tmp_path / "m", **SMALL)
    assert model.encoding.fields == ["field_1", "field_2"] and model.task == "ctr"
    again = ifm.load(tmp_path / "m")
    np.testing.assert_array_equal(again.predict(path), model.predict(path))
    assert math.isfinite(again.metrics(path)["logloss"])
    assert Path(path).read_text() == lines
