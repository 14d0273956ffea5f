"""The experiments layer: cache keys, record reuse, atomic writes, resumable sweeps, statistics.

Everything runs on tiny synthetic data (a few hundred instances, embedding 4, two epochs), so
the whole file takes seconds; `train` is wrapped to count how often it really runs.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest

from ifm.runs import experiment as ex, profiles, records
from ifm.book import factors, overview, paper, stats, studies, verdicts
from ifm.book.rows import data_kind, data_note, dataset_label
from ifm.training import loop as train_mod
from ifm.data import load_dataset

TINY = {"dataset_options": {"synthetic": {"n": 400}}, "embedding_size": 4, "epochs": 2, "batch_size": 128,
        "model_options": {"ifm": {"fen_width": 8}, "wide_deep": {"hidden": [8]}, "deepfm": {"hidden": [8]},
                          "nfm": {"hidden": [8]}},
        "depth_grid": [0, 1, 2], "dropout_grid": [0.0, 0.5], "activation_grid": ["relu", "tanh"]}


@pytest.fixture
def trains(monkeypatch):
    """Counts the real trainings (FM pre-trainings included) as (model, seed) pairs."""
    calls = []
    real = ex.train

    def counting(config, dataset, **kwargs):
        calls.append((config.model, config.seed))
        return real(config, dataset, **kwargs)

    monkeypatch.setattr(ex, "train", counting)
    return calls


def experiment(tmp_path, **kwargs):
    kwargs.setdefault("datasets", ["synthetic"])
    return ex.Experiment("smoke", overrides=TINY, results_dir=tmp_path, log=None, **kwargs)


def files(path):
    return sorted(p.name for p in (path / "smoke").iterdir()) if (path / "smoke").exists() else []


# --------------------------------------------------------------------------- cache keys
def test_key_changes_with_config_data_and_version(tmp_path, monkeypatch):
    exp = experiment(tmp_path)
    data = exp.dataset("synthetic")
    config = exp.config("synthetic", "ifm", 0)
    key, material = records.run_key(config, data)
    assert len(key) == 20 and material["training_version"] == train_mod.TRAINING_VERSION
    assert records.run_key(config, data)[0] == key                                 # deterministic

    changed = [
        dataclasses.replace(config, epochs=3),
        dataclasses.replace(config, seed=1),
        dataclasses.replace(config, learning_rate=0.02),
        dataclasses.replace(config, model_options={**config.model_options, "dropout": 0.5}),
        dataclasses.replace(config, device="cuda"),
    ]
    for other in changed:
        assert records.run_key(other, data)[0] != key, other

    # different data: other generator options, other split, edited provenance (e.g. file hashes)
    assert records.run_key(config, load_dataset("synthetic", n=401))[0] != key
    assert records.run_key(config, load_dataset("synthetic", n=400, seed=1))[0] != key
    assert records.run_key(config, load_dataset("synthetic", n=400, split_seed=1))[0] != key
    assert records.run_key(config, data, {"n": 400})[0] != key                    # dataset options count
    edited = copy.copy(data)
    edited.provenance = {**data.provenance, "files": [{"role": "train", "sha256": "ab" * 32, "path": "/x"}]}
    assert records.run_key(config, edited)[0] != key

    monkeypatch.setattr(records, "TRAINING_VERSION", train_mod.TRAINING_VERSION + 1)
    assert records.run_key(config, data)[0] != key


def test_key_ignores_where_the_data_lives_and_number_spelling(tmp_path):
    exp = experiment(tmp_path)
    data = exp.dataset("synthetic")
    config = exp.config("synthetic", "ifm", 0)
    key = records.run_key(config, data)[0]
    moved = copy.copy(data)
    moved.provenance = {**data.provenance, "source": "mirror:/somewhere/else", "built_from_cache": True,
                        "files": [{**f, "path": "/other/path"} for f in data.provenance.get("files", [])]}
    assert records.run_key(config, moved)[0] == key
    as_int = dataclasses.replace(config, model_options={**config.model_options, "dropout": 0})
    as_float = dataclasses.replace(config, model_options={**config.model_options, "dropout": 0.0})
    assert records.run_key(as_int, data)[0] == records.run_key(as_float, data)[0]


def test_fm_baseline_and_fm_pretraining_share_one_record(tmp_path):
    exp = experiment(tmp_path)
    data = exp.dataset("synthetic")
    fm = exp.config("synthetic", "fm", 0)
    assert fm.pretrain_fm is None
    for model in ("ifm", "afm", "deepfm", "wide_deep"):
        assert records.run_key(exp.config("synthetic", model, 0).pretrain_config(), data)[0] == records.run_key(fm, data)[0]


# --------------------------------------------------------------------------- reuse, retrain, force
def test_record_is_reused_not_retrained(tmp_path, trains):
    exp = experiment(tmp_path)
    config = exp.config("synthetic", "ifm", 0)
    first = exp.run(config, "synthetic")
    assert trains == [("fm", 0), ("ifm", 0)]                  # FM pre-training first, then IFM
    assert first["pretrain"]["model"] == "fm" and first["cache"]["key"] == records.run_key(config, exp.dataset("synthetic"), {"n": 400})[0]
    again = experiment(tmp_path).run(config, "synthetic")     # a new process would see the same
    assert trains == [("fm", 0), ("ifm", 0)]
    assert again == json.loads(json.dumps(first))
    # the FM pre-training is cached on its own, with its weights beside it
    names = files(tmp_path)
    assert any(n.startswith("fm-synthetic-") and n.endswith(".pt") for n in names)
    # IFM keeps its weights as well (Table 1's factors are computed from them); no other model does
    assert any(n.startswith("ifm-") and n.endswith(".pt") for n in names)


def test_a_changed_config_trains_again(tmp_path, trains):
    exp = experiment(tmp_path)
    exp.run(exp.config("synthetic", "fm", 0), "synthetic")
    exp.run(exp.config("synthetic", "fm", 0, epochs=1), "synthetic")
    assert trains == [("fm", 0), ("fm", 0)]
    assert len([n for n in files(tmp_path) if n.endswith(".json")]) == 2


def test_force_retrains_once_per_session(tmp_path, trains):
    exp = experiment(tmp_path)
    config = exp.config("synthetic", "fm", 0)
    exp.run(config, "synthetic")
    forced = experiment(tmp_path, force=True)
    forced.run(config, "synthetic")
    forced.run(config, "synthetic")                           # retrained once, then reused
    assert trains == [("fm", 0), ("fm", 0)]
    # a timestamp: records written before it are stale
    experiment(tmp_path, force=1e12).run(config, "synthetic")
    assert len(trains) == 3


def test_stale_version_or_foreign_record_is_not_reused(tmp_path, trains, monkeypatch):
    exp = experiment(tmp_path)
    config = exp.config("synthetic", "fm", 0)
    record = exp.run(config, "synthetic")
    path = tmp_path / "smoke" / f"{record['cache']['stem']}.json"
    stale = {**record, "training_version": record["training_version"] - 1}
    path.write_text(json.dumps(stale))
    experiment(tmp_path).run(config, "synthetic")
    assert len(trains) == 2
    path.write_text("{ not json")                             # unreadable: warn and retrain
    with pytest.warns(UserWarning, match="unreadable"):
        experiment(tmp_path).run(config, "synthetic")
    assert len(trains) == 3


def test_results_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("IFM_RESULTS_DIR", str(tmp_path / "elsewhere"))
    assert records.results_root() == tmp_path / "elsewhere"
    exp = ex.Experiment("smoke", overrides=TINY, log=None)
    assert exp.cache.directory == tmp_path / "elsewhere" / "smoke"
    monkeypatch.delenv("IFM_RESULTS_DIR")
    assert records.results_root() == records.REPO_ROOT / "results"


# --------------------------------------------------------------------------- atomic writes
def test_writes_leave_no_temporary_files(tmp_path):
    exp = experiment(tmp_path)
    exp.run(exp.config("synthetic", "ifm", 0), "synthetic", save_state=True)
    names = files(tmp_path)
    assert names and not [n for n in names if n.startswith(".") or n.endswith((".tmp", ".part"))]
    assert len([n for n in names if n.endswith(".pt")]) == 2          # the FM and, as asked, the IFM


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    exp = experiment(tmp_path)

    def broken_dump(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr("ifm.runs.records.json.dump", broken_dump)
    with pytest.raises(KeyboardInterrupt):
        exp.run(exp.config("synthetic", "libfm", 0), "synthetic")
    assert files(tmp_path) == []


# --------------------------------------------------------------------------- sweeps
def test_an_interrupted_sweep_resumes_with_only_the_missing_runs(tmp_path, trains, monkeypatch):
    real = ex.train
    budget = {"left": 3}

    def dies_after_three(config, dataset, **kwargs):
        if budget["left"] == 0:
            raise KeyboardInterrupt("power cut")
        budget["left"] -= 1
        return real(config, dataset, **kwargs)

    monkeypatch.setattr(ex, "train", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        studies.depth_study(ex.Experiment("smoke", datasets=["synthetic"], overrides=TINY, results_dir=tmp_path, log=None))
    done = [n for n in files(tmp_path) if n.endswith(".json")]
    assert len(done) == 3                                     # FM + depths 0 and 1

    calls = []
    monkeypatch.setattr(ex, "train", lambda c, d, **k: calls.append(c.model_options["fen_layers"]) or real(c, d, **k))
    df = studies.depth_study(ex.Experiment("smoke", datasets=["synthetic"], overrides=TINY, results_dir=tmp_path, log=None))
    assert calls == [2]                                       # only the missing depth
    assert list(df.fen_layers) == [0, 1, 2]
    assert "1 trained now" in df.attrs["report"] and "2 reused" in df.attrs["report"]


def test_sweep_rows_carry_profile_data_device_and_seeds(tmp_path):
    df = studies.dropout_study(ex.Experiment("smoke", datasets=["synthetic"], seeds=[0, 1], overrides=TINY, results_dir=tmp_path,
                          log=None))
    assert len(df) == 2 * 2
    for column in ("profile", "dataset", "dataset_label", "train_instances", "device", "device_name", "seed",
                   "seeds", "n_seeds", "valid_rmse", "valid_mae", "dropout", "key"):
        assert column in df, column
    assert set(df.profile) == {"smoke"} and set(df.seeds) == {"0,1"} and set(df.n_seeds) == {2}
    assert set(df.train_instances) == {320}
    assert df.attrs["profile"] == "smoke" and df.attrs["seeds"] == [0, 1]


def test_tables_and_factors_on_synthetic(tmp_path, trains):
    common = dict(datasets=["synthetic"], seeds=[0, 1], overrides=TINY, results_dir=tmp_path, log=None)
    reg = studies.regression_study(ex.Experiment("smoke", **common))
    assert set(reg.model) == {"libfm", "wide_deep", "deepfm", "nfm", "afm", "ifm"} and len(reg) == 12
    sig = stats.significance(reg)
    assert len(sig) == 5 * 2 and set(sig.n_pairs) == {2}
    comp = studies.component_study(ex.Experiment("smoke", **common))
    fm = comp[comp.model == "fm"].set_index("seed").test_rmse
    for row in comp[comp.model != "fm"].itertuples():
        assert row.ri_rmse == pytest.approx((fm[row.seed] - row.test_rmse) / fm[row.seed])
    assert not comp[comp.model != "fm"].fm_batch_norm.any()     # recipe paper: the FM has no batch norm
    n = len(trains)
    fs = factors.factor_study(ex.Experiment("smoke", seeds=[0], overrides=TINY,
                         results_dir=tmp_path, log=None), dataset="synthetic", fields=(0, 1))
    assert len(trains) == n                                    # IFM and FM reused: both kept their weights
    assert 1 <= len(fs.table) <= 3
    per_instance = fs.distribution.groupby("test_index").factor.sum()
    # factors of an instance sum to h (kept at 5 significant digits in the derived record)
    assert np.allclose(per_instance, 5, atol=5e-4)
    again = factors.factor_study(ex.Experiment("smoke", seeds=[0], overrides=TINY,
                            results_dir=tmp_path, log=None), dataset="synthetic", fields=(0, 1))
    assert len(trains) == n                                    # everything is cached
    pd.testing.assert_frame_equal(again.table, fs.table)

    # The book's mode: read the records only, train nothing, say what is missing.
    for path in tmp_path.glob("smoke/*.pt"):
        path.unlink()                                          # weights are not committed
    read = dict(common, train_missing=False)
    assert_frame_equal_runs(studies.regression_study(ex.Experiment("smoke", **read)), reg)
    ro = factors.factor_study(ex.Experiment("smoke", seeds=[0], overrides=TINY,
                         results_dir=tmp_path, log=None, train_missing=False), dataset="synthetic", fields=(0, 1))
    pd.testing.assert_frame_equal(ro.table, fs.table)
    more = studies.regression_study(ex.Experiment("smoke", **dict(read, seeds=[0, 1, 5])))
    assert len(trains) == n and len(more) == 12
    assert len(more.attrs["missing"]) == 6 and not more.attrs["complete"]
    assert "IFM on synthetic, seed 5, recipe paper" in more.attrs["missing"]
    empty = studies.regression_study(ex.Experiment("smoke", **dict(read, results_dir=tmp_path / "nothing")))
    assert empty.empty and len(empty.attrs["missing"]) == 12 and len(trains) == n


def assert_frame_equal_runs(a, b):
    cols = ["dataset", "model", "seed", "test_rmse", "test_mae", "key"]
    pd.testing.assert_frame_equal(a[cols].reset_index(drop=True), b[cols].reset_index(drop=True))


# --------------------------------------------------------------------------- profiles and parameters
def test_profile_overrides_field_by_field():
    p = profiles.get_profile("smoke", {"epochs": 7, "seeds": [3, 4], "model_options": {"ifm": {"fen_layers": 1}}})
    config = p.config("frappe", "ifm", 3)
    assert config.epochs == 7 and p.seeds == (3, 4)
    assert config.model_options["fen_layers"] == 1 and config.model_options["fen_width"] == 64
    assert p.config("frappe", "nfm", 0).model_options == {"hidden": [64]}    # IFM options stay on IFM
    assert profiles.get_profile("smoke", '{"epochs": 2}').train["epochs"] == 2      # papermill passes strings
    with pytest.raises(ValueError, match="unknown override"):
        profiles.get_profile("smoke", {"epoch": 2})
    with pytest.raises(ValueError, match="unknown profile"):
        profiles.get_profile("fast")
    paper = profiles.get_profile("paper")
    assert paper.config("frappe", "ifm", 0).embedding_size == 256 and paper.differences() == []
    smoke = profiles.get_profile("smoke").differences()
    assert "Frappe: a seeded 0.2 of the training split (validation and test whole)" in smoke
    assert "Synthetic: n=400" in profiles.get_profile("smoke", TINY).differences()


@pytest.mark.parametrize("value, expected", [
    (None, None), ("[0]", [0]), ("[0, 1, 2]", [0, 1, 2]), ("0,1", [0, 1]), ([2], [2]), (3, [3]),
    ('["frappe"]', ["frappe"]), ("frappe,movielens", ["frappe", "movielens"]), ("None", None)])
def test_list_parameters_as_papermill_passes_them(value, expected):
    assert profiles.parse_list(value) == expected


# --------------------------------------------------------------------------- statistics
def test_t_interval_on_known_values():
    mean, half = stats.t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert half == pytest.approx(4.302652729911275 / math.sqrt(3))          # t(0.975, 2) * s / sqrt(n), s = 1
    assert stats.t_interval([5.0])[0] == 5.0 and math.isnan(stats.t_interval([5.0])[1])
    assert stats.t_interval([1.0, float("nan"), 3.0])[0] == 2.0


def test_paired_test_on_known_values():
    from ifm.book.rules import paired

    got = paired([1, 2, 3, 4], [2, 3, 5, 5])       # differences -1 -1 -2 -1: mean -1.25, sd 0.5
    assert got.t == pytest.approx(-5.0) and got.difference == -1.25
    assert got.p == pytest.approx(0.015392, abs=1e-5)             # two-sided, 3 degrees of freedom
    assert math.isnan(paired([1.0], [2.0]).p)
    with pytest.raises(ValueError):
        paired([1, 2], [1, 2, 3])


def test_significance_marks_only_better_and_significant():
    rows = []
    for seed, (a, b, c) in enumerate([(0.30, 0.40, 0.29), (0.31, 0.42, 0.33), (0.29, 0.41, 0.28),
                                      (0.30, 0.43, 0.32)]):
        rows += [{"dataset": "d", "model": "ifm", "seed": seed, "test_rmse": a},
                 {"dataset": "d", "model": "nfm", "seed": seed, "test_rmse": b},
                 {"dataset": "d", "model": "afm", "seed": seed, "test_rmse": c}]
    sig = stats.significance(pd.DataFrame(rows), metrics=("test_rmse",)).set_index("baseline")
    assert bool(sig.loc["nfm", "significant"]) and sig.loc["nfm", "p_value"] < 0.001
    assert sig.loc["nfm", "p_holm"] == pytest.approx(min(1.0, 2 * sig.loc["nfm", "p_value"]))   # the smaller of 2
    assert sig.loc["nfm", "mean_difference"] == pytest.approx(-0.115) and sig.loc["nfm", "ci_half"] > 0
    assert not bool(sig.loc["afm", "significant"])           # differences of both signs
    reversed_rows = [{**r, "test_rmse": -r["test_rmse"]} for r in rows]
    worse = stats.significance(pd.DataFrame(reversed_rows), metrics=("test_rmse",)).set_index("baseline")
    assert not bool(worse.loc["nfm", "significant"])         # significant, but IFM is the worse one


def test_summarize_gives_mean_and_interval_per_group():
    df = pd.DataFrame({"model": ["a", "a", "a", "b"], "x": [1.0, 2.0, 3.0, 5.0]})
    s = stats.summarize(df, ["model"], ["x"]).set_index("model")
    assert s.loc["a", "x_mean"] == 2.0 and s.loc["a", "x_n"] == 3
    assert s.loc["a", "x_low"] == pytest.approx(2.0 - 4.302652729911275 / math.sqrt(3))
    assert s.loc["b", "x_n"] == 1 and math.isnan(s.loc["b", "x_half"])


def test_paper_numbers_are_the_published_ones():
    t3 = paper.paper_table("table3").set_index(["dataset", "model"])
    assert t3.loc[("frappe", "ifm"), "RMSE"] == 0.2872 and t3.loc[("movielens", "libfm"), "MAE"] == 0.2604
    assert paper.paper_table("table4").set_index("model").loc["ifm", "AUC"] == 78.48
    assert paper.paper_table("table2").set_index(["dataset", "model"]).loc[("frappe", "ifm"), "RI"] == 0.30
    assert list(paper.paper_table("table1").ifm_factor_x3) == [3.12, 0.67, 2.29]
    assert paper.paper_best("fen_layers") == {"frappe": 2, "movielens": 3}
    assert paper.paper_best("dropout") == {"frappe": 0.3, "movielens": 0.4}


# --------------------------------------------------------------------------- the book's tables
def test_side_by_side_puts_paper_and_ours_in_adjacent_columns():
    from ifm.book import tables

    ours = pd.DataFrame({"dataset": ["frappe"] * 4, "model": ["ifm", "ifm", "nfm", "nfm"], "seed": [0, 1, 0, 1],
                         "test_rmse": [0.30, 0.32, 0.40, float("nan")]})
    table = tables.side_by_side(ours, paper.paper_table("table3"), ["dataset", "model"], {"RMSE": ("test_rmse", "RMSE")})
    assert list(table.columns) == [("RMSE", "paper"), ("RMSE", "ours"), ("seeds", "")]
    assert table.loc[("frappe", "ifm"), ("RMSE", "paper")] == "0.2872"
    half = 12.706204736174705 * np.std([0.30, 0.32], ddof=1) / math.sqrt(2)
    assert table.loc[("frappe", "ifm"), ("RMSE", "ours")] == f"0.3100 ± {half:.4f}"
    assert table.loc[("frappe", "nfm"), ("RMSE", "ours")] == "0.4000"        # one finite seed: no interval
    assert table.loc[("frappe", "nfm"), ("seeds", "")] == 1
    assert table.loc[("frappe", "afm"), ("RMSE", "ours")] == "n/a"          # the paper's rows we lack show as such
    assert table.loc[("frappe", "afm"), ("seeds", "")] == 0
    assert ("movielens", "ifm") not in table.index                          # only the datasets we ran
    # two recipes: the paper's value once, then ours under each
    both = pd.concat([ours.assign(recipe="paper"), ours.assign(recipe="code", test_rmse=ours.test_rmse - 0.1)])
    table = tables.side_by_side(both, paper.paper_table("table3"), ["dataset", "model"], {"RMSE": ("test_rmse", "RMSE")})
    assert list(table.columns) == [("RMSE", "paper"), ("RMSE", "ours, recipe paper"), ("RMSE", "ours, recipe code"),
                                   ("seeds", "paper"), ("seeds", "code")]
    assert table.loc[("frappe", "nfm"), ("RMSE", "ours, recipe code")] == "0.3000"


def test_ranking_agreement_orders_best_first_and_knows_which_metrics_are_higher_is_better():
    def rows(item, metric, paper, ours):
        return [{"item": item, "dataset": "frappe", "dataset_label": "Frappe", "metric": metric, "model": m,
                 "paper": p, "ours": o, "n_seeds": 3} for m, p, o in zip(("nfm", "afm", "ifm"), paper, ours)]
    ov = pd.DataFrame(rows("Table 3", "RMSE", [0.31, 0.32, 0.29], [0.45, 0.46, 0.44])
                      + rows("Table 4", "AUC", [80.0, 79.0, 81.0], [70.0, 71.0, 69.0])
                      + rows("Table 2", "RI", [0.1, 0.2, 0.3], [float("nan")] * 3))
    ranks = overview.ranking_agreement(ov).set_index("item")
    assert list(ranks.index) == ["Table 3", "Table 4"]          # no numbers of ours: no ranking
    assert ranks.loc["Table 3", "paper_order"] == "IFM > NFM > AFM" and ranks.loc["Table 3", "kendall_tau"] == 1
    assert ranks.loc["Table 3", "same_best"]
    assert ranks.loc["Table 4", "paper_order"] == "IFM > NFM > AFM"
    assert ranks.loc["Table 4", "our_order"] == "AFM > NFM > IFM" and ranks.loc["Table 4", "kendall_tau"] == -1
    assert not ranks.loc["Table 4", "same_best"] and ranks.loc["Table 4", "our_best"] == "AFM"


def test_a_page_without_any_recorded_run_says_so_with_the_command_that_fills_it(tmp_path):
    from ifm.book import figures, tables

    df = studies.regression_study(ex.Experiment("smoke", datasets=["synthetic"], overrides=TINY, results_dir=tmp_path, log=None,
                             train_missing=False))
    assert df.empty and "dataset" in df and len(stats.significance(df)) == 0
    note = tables.require_runs(df, "regression").data
    assert "No run of this page is in the records yet" in note and "6 needed" in note
    assert "`python -m ifm fill --profile smoke --recipe paper --study table3`" in note
    assert "reproduce --profile smoke --only regression" in note
    # the page's tables then show the paper's numbers alone, its figures and verdicts say there is nothing
    table = tables.side_by_side(df, paper.paper_table("table3"), ["dataset", "model"], {"RMSE": ("test_rmse", "RMSE")})
    assert len(table) == 12 and set(table[("RMSE", "ours")]) == {"n/a"}          # the paper's rows, all of them
    assert "no run" in figures.comparison_figure(df, paper.paper_table("table3"), {"RMSE": ("test_rmse", "RMSE")}).data
    assert "nothing yet" in verdicts.regression(df, stats.significance(df)).data
    # an empty page with nothing missing is a study that asked for nothing: an error
    df.attrs["missing"] = []
    with pytest.raises(RuntimeError, match="asked for no runs"):
        tables.require_runs(df, "regression")


def test_overview_trains_once_then_reads_the_same_numbers_back_without_training(tmp_path, trains):
    over = {**TINY, "ctr_datasets": []}
    common = dict(datasets=["synthetic"], seeds=[0, 1], overrides=over, results_dir=tmp_path, log=None)
    trained = overview.overview(ex.Experiment("smoke", **common))
    n = len(trains)
    read = overview.overview(ex.Experiment("smoke", **common, train_missing=False))
    assert len(trains) == n and read.attrs["complete"] and not read.attrs["missing"]
    cols = ["item", "dataset", "quantity", "paper", "ours", "n_seeds"]
    pd.testing.assert_frame_equal(read[cols], trained[cols])
    assert {"Fig. 3a / 4a", "Fig. 6", "Table 2", "Table 3"} <= set(read["item"])
    assert {c["study"] for c in read.attrs["coverage"]} >= {"depth", "convergence", "components", "regression"}
    assert all(c["missing"] == 0 for c in read.attrs["coverage"])


def sweep_frame(valid_rmse: dict) -> pd.DataFrame:
    """A depth sweep on one dataset: {fen_layers: [valid RMSE of seed 0, 1, ...]}."""
    return pd.DataFrame([{"dataset": "frappe", "dataset_label": "Frappe", "fen_layers": depth, "seed": seed,
                          "valid_rmse": v, "valid_mae": v / 2}
                         for depth, values in valid_rmse.items() for seed, v in enumerate(values)])


def test_the_best_setting_table_and_sentence_lay_out_the_rules_judgement():
    from ifm.book import tables, verdicts

    # Depth 3 beats the paper's depth 2 by 0.010 on every seed: the paper's setting is outside S.
    clear = tables.best_setting_table(sweep_frame({2: [0.470, 0.475, 0.480], 3: [0.460, 0.4655, 0.470]}),
                                     "fen_layers", {"frappe": 2})
    row = clear.loc["Frappe"]
    assert row["our best"] == 3 and row["shared seeds"] == 3 and row["verdict"] == "not reproduced"
    assert row["S: not worse than our best"] == "3" and row["seed SD at the paper's"].endswith("(3 seeds)")
    assert "the verdict is ***not reproduced***" in verdicts.best_setting(clear, "depth").data
    assert clear.attrs["separating_t"]["Frappe"] == pytest.approx(4.303, abs=1e-3)   # 3 seeds, 1 rival: t_0.975(2)
    assert "a rival is told apart only when its paired |t| exceeds 4.3" in verdicts.best_setting(clear, "depth").data
    # Depth 3 wins on average but loses on one seed: not separated.
    noisy = tables.best_setting_table(sweep_frame({2: [0.470, 0.460, 0.480], 3: [0.462, 0.468, 0.470]}),
                                     "fen_layers", {"frappe": 2})
    assert noisy.loc["Frappe", "verdict"] == "consistent, not separated"
    # A 3-seed point against single runs: one shared seed, no verdict.
    single = tables.best_setting_table(sweep_frame({2: [0.47, 0.44, 0.45], 3: [0.46]}), "fen_layers", {"frappe": 2})
    assert single.loc["Frappe", "shared seeds"] == 1 and single.loc["Frappe", "our best"] == 3
    assert "***too few seeds***" in verdicts.best_setting(single, "depth").data
    assert "Frappe" not in single.attrs["separating_t"]


def test_data_labels_come_from_the_structured_kind_and_old_records_from_their_notes():
    sizes = {"train": 8, "valid": 1, "test": 1, "total": 10}
    new = {"dataset": "frappe", "data_kind": "reconstructed", "sizes": sizes, "paper_instances": 10,
           "fraction_of_paper": 1.0, "split_rule": "the IFM authors' 8:1:1 split, reconstructed: ...", "notes": []}
    assert dataset_label(new) == "Frappe (paper split, reconstructed)"
    assert data_note(new).endswith("the IFM authors' 8:1:1 split, reconstructed: ...")
    old_ml = {"dataset": "movielens", "sizes": sizes, "notes": ["MovieLens stand-in (25,758-tag subset ...)"]}
    assert data_kind(old_ml) == "stand-in" and dataset_label(old_ml) == "MovieLens stand-in"
    old_pool = {"dataset": "frappe", "sizes": sizes, "fraction_of_paper": 0.3, "paper_instances": 33,
                "notes": ["partial data: only NFM's validation, test file(s) present"]}
    assert data_kind(old_pool) == "partial" and dataset_label(old_pool) == "Frappe (30% of the paper's data)"
    assert "partial data" in data_note(old_pool)
    head = {"dataset": "avazu", "data_kind": "sample", "sizes": {**sizes, "total": 9999}, "notes": ["Avazu head"]}
    assert dataset_label(head) == "Avazu 9,999-row sample" and data_note(head).endswith("Avazu head")


def test_scaling_study_trains_on_seeded_shares_and_reads_them_back(tmp_path):
    common = dict(overrides=TINY, results_dir=tmp_path, log=None, datasets=["synthetic"], seeds=[0])
    df = studies.scaling_study(ex.Experiment("smoke", **common), fractions=(0.25, 1.0), models=("fm", "ifm"))
    sizes = df.groupby("train_fraction").train_instances.first()
    assert len(df) == 4 and sizes[0.25] == round(0.25 * sizes[1.0])
    assert (df.groupby("train_fraction").test_instances.nunique() == 1).all()     # the same test set
    read = studies.scaling_study(ex.Experiment("smoke", **common, train_missing=False), fractions=(0.25, 1.0),
                                 models=("fm", "ifm"))
    assert not read.attrs["missing"] and sorted(read.key) == sorted(df.key)
    with pytest.raises(ValueError, match=r"train_fraction must be a number in \(0, 1\]"):
        load_dataset("synthetic", n=400, train_fraction=1.5)
    # a profile that itself trains on a share (smoke): the shares are of that share, 1 is the profile's own runs
    half = {**TINY, "dataset_options": {"synthetic": {**TINY["dataset_options"]["synthetic"], "train_fraction": 0.5}}}
    small = studies.scaling_study(ex.Experiment("smoke", **{**common, "overrides": half}), fractions=(0.5, 1.0),
                                  models=("fm",))
    whole = sizes[1.0]
    assert small.groupby("train_fraction").train_instances.first().to_dict() == {0.5: round(0.25 * whole),
                                                                                  1.0: round(0.5 * whole)}
    same = ex.Experiment("smoke", **{**common, "overrides": half}, train_missing=False)
    record = same.run(same.config("synthetic", "fm", 0), "synthetic")        # read back, not trained
    assert record is not None and record["dataset"]["provenance"]["sizes"]["train"] == round(0.5 * whole)
