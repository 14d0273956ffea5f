"""A runner holding both recipes (what the book shows): each study runs once per recipe and stacks
the rows; tables put ours under each recipe beside the paper's value; the scorecard judges every
claim under each recipe and lists the claims without runs as *not run yet*."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from ifm.runs import experiment as ex
from ifm.book import overview, paper, rules, scorecard as sc, stats, studies, tables, verdicts, words

TINY = {"dataset_options": {"synthetic": {"n": 400}}, "embedding_size": 4, "epochs": 2, "batch_size": 128,
        "model_options": {"ifm": {"fen_width": 8}, "wide_deep": {"hidden": [8]}, "deepfm": {"hidden": [8]},
                          "nfm": {"hidden": [8]}},
        "regression_models": ["libfm", "nfm", "ifm"], "seeds": [0, 1]}


def runner(tmp_path, recipe="paper,code", **kwargs):
    return ex.Experiment("smoke", recipe=recipe, datasets=["synthetic"], overrides=TINY, results_dir=tmp_path,
                         log=None, **kwargs)


def test_recipes_are_parsed_and_refused_by_name():
    assert ex.parse_recipes("paper,code") == ("paper", "code")
    assert ex.parse_recipes(["code"]) == ("code",) and ex.parse_recipes(None) == ()
    for bad in ("paper,paper", "paper,texts", "", " "):      # an empty recipe never falls back to paper alone
        with pytest.raises(ValueError, match="recipe"):
            ex.parse_recipes(bad)
    exp = ex.Experiment("smoke", recipe="code,paper", log=None)
    assert exp.recipes == ("code", "paper") and exp.profile.recipe == "code"
    one = exp.for_recipe("paper")
    assert one.recipes == ("paper",) and one.profile.recipe == "paper" and one.cache is exp.cache


def test_each_study_runs_each_recipe_and_the_table_shows_both(tmp_path, monkeypatch):
    trained = []
    real = ex.train
    monkeypatch.setattr(ex, "train", lambda config, data, **kw: trained.append((config.model, config.recipe))
                        or real(config, data, **kw))
    exp = runner(tmp_path)
    reg = studies.regression_study(exp)
    assert list(dict.fromkeys(reg.recipe)) == ["paper", "code"] and len(reg) == 2 * 3 * 2
    assert reg.attrs["recipe"] == "paper, code" and reg.attrs["complete"]
    # NFM and IFM train different configurations under the two recipes (loss scale, L2, ...); the
    # libFM-style FM has the same settings under both, so its run is made once and serves both
    keys = reg.groupby(["recipe", "model"]).key.apply(set)
    for model in ("nfm", "ifm"):
        assert not keys["paper", model] & keys["code", model]
    assert keys["paper", "libfm"] == keys["code", "libfm"]
    assert trained.count(("libfm", "paper")) == 2 and ("libfm", "code") not in trained     # 2 seeds, once each
    assert trained.count(("ifm", "code")) == 2
    # one recipe alone reads the same records back, without training
    alone = studies.regression_study(runner(tmp_path, "code", train_missing=False))
    pd.testing.assert_frame_equal(alone[["model", "seed", "test_rmse"]].reset_index(drop=True),
                                  reg[reg.recipe == "code"][["model", "seed", "test_rmse"]].reset_index(drop=True))

    table = tables.side_by_side(reg, paper.paper_table("table3"), ["dataset", "model"], {"RMSE": ("test_rmse", "RMSE")})
    assert [c for c in table.columns if c[0] == "RMSE"] == [("RMSE", "paper"), ("RMSE", "ours, recipe paper"),
                                                          ("RMSE", "ours, recipe code")]
    for recipe in ("paper", "code"):
        values = reg[(reg.recipe == recipe) & (reg.model == "ifm")].test_rmse
        mean, half = stats.t_interval(values)
        assert table.loc[("synthetic", "ifm"), ("RMSE", f"ours, recipe {recipe}")] == words.fmt(mean, half)

    sig = stats.significance(reg)
    assert len(sig) == 2 * 2 * 2 and set(sig.recipe) == {"paper", "code"}      # per recipe: 2 baselines x 2 metrics
    text = verdicts.regression(reg, sig).data
    assert "Under recipe `paper`" in text and "Under recipe `code`" in text

    # the overview and the rankings keep the recipes apart
    rows = overview.compare_means("Table 3", reg, paper.paper_table("table3"), [("RMSE", "test_rmse", "")])
    assert {r["recipe"] for r in rows} == {"paper", "code"} and len(rows) == 6


def test_convergence_reuses_the_table_runs_and_derives_the_running_training_error(tmp_path, monkeypatch):
    exp = runner(tmp_path)
    conv = studies.convergence_study(exp)
    reg = studies.regression_study(ex.Experiment("smoke", recipe="paper,code", datasets=["synthetic"], log=None,
                                                 overrides={**TINY, "regression_models": ["ifm"]},
                                                 results_dir=tmp_path, train_missing=False))
    assert reg.attrs["complete"]                                   # Fig. 6's IFM runs are Table 3's
    assert set(conv.train_error) == {"running over the epoch, dropout on"}
    # recipe code halves the squared error (loss_scale 0.5): the running RMSE undoes it
    code = conv[conv.recipe == "code"].iloc[0]
    assert code.train_rmse == pytest.approx(math.sqrt(code.train_loss / 0.5))
    assert studies.train_rmse({"train_loss": 0.08}, {"loss_scale": 0.5}) == pytest.approx(0.4)
    assert studies.train_rmse({"train_loss": 0.08, "train_rmse": 0.3}, {"loss_scale": 0.5}) == 0.3
    assert math.isnan(studies.train_rmse({"train_loss": 0.4}, {"loss_scale": 1.0}, "binary"))
    summary = studies.convergence_summary(conv)
    assert len(summary) == 4 and set(summary.recipe) == {"paper", "code"}


def test_the_scorecard_judges_each_recipe_and_lists_what_is_not_run(tmp_path):
    exp = runner(tmp_path, train_missing=False)          # nothing recorded: every claim is not run yet
    card = sc.scorecard(exp)
    assert set(card["verdict (paper)"]) == set(card["verdict (code)"]) == {rules.NOT_RUN}
    # synthetic: the regression claims, no Table 1 (Frappe only); Table 4 falls back to the profile's Avazu
    assert len(card) == len([c for c in sc.CLAIMS if c[2] == "regression"]) + 1
    assert card.data.iloc[-1] == "Avazu" and card.claim.iloc[-1] == "IFM is best on Avazu"
    assert {"verdict (paper)", "verdict (code)", "ours (paper)", "ours (code)", "testable"} <= set(card.columns)
    assert "verdict" not in card.columns and "by" not in card.columns     # never one merged verdict
    assert not card.attrs["complete"] and card.attrs["recipe"] == "paper, code"


def test_wide_rows_keep_each_readings_verdict_and_the_summary_counts_per_reading():
    rows = [{"claim": "IFM beats FM", "paper": "Fig. 6", "dataset": "frappe", "data": "Frappe", "ours": "x",
             "seeds": 3, "verdict": rules.CONSISTENT, "recipe": "paper"},
            {"claim": "IFM beats FM", "paper": "Fig. 6", "dataset": "frappe", "data": "Frappe", "ours": "y",
             "seeds": 3, "verdict": rules.REPRODUCED, "recipe": "code"},
            {"claim": "IFM beats FM", "paper": "Fig. 6", "dataset": "movielens", "data": "MovieLens stand-in",
             "ours": "z", "seeds": 3, "verdict": rules.UNTESTABLE, "recipe": "code"}]
    expected = [("IFM beats FM", "Fig. 6", "frappe", "Frappe"), ("IFM beats FM", "Fig. 6", "movielens", "MovieLens"),
                ("ReLU is the best FEN activation", "Fig. 5", "frappe", "Frappe")]
    card = sc.wide(rows, ("paper", "code"), expected)
    frappe = card[(card.claim == "IFM beats FM") & (card.dataset == "frappe")].iloc[0]
    assert frappe["verdict (paper)"] == rules.CONSISTENT and frappe["verdict (code)"] == rules.REPRODUCED
    assert frappe["ours (paper)"] == "x" and frappe["seeds (code)"] == 3 and frappe.testable
    stand_in = card[card.dataset == "movielens"].iloc[0]
    assert stand_in["verdict (paper)"] == rules.NOT_RUN and stand_in["seeds (paper)"] == 0 and not stand_in.testable
    text = sc.summary(card, ("paper", "code"))
    assert text == ("Of the 2 claims that the paper's data can test here (Frappe), under the paper's text (recipe paper): "
                    "1 consistent, not separated, 1 not run yet; under the released code (recipe code): "
                    "1 reproduced, 1 not run yet.")


def test_a_best_setting_needs_the_whole_grid_and_three_shared_seeds():
    rows = [{"dataset": "frappe", "dataset_label": "Frappe", "fen_layers": depth, "seed": seed,
             "valid_rmse": 0.3 + 0.01 * abs(depth - 2) + 0.001 * seed + 0.0003 * (seed * depth % 3), "valid_mae": 0.1}
            for depth in (1, 2, 3) for seed in (0, 1, 2)]
    df = pd.DataFrame(rows)
    row, = sc.best_settings(df, "fen_layers", *sc.CLAIMS[3][:2], grid=(0, 1, 2, 3, 4))
    assert row["verdict"] == rules.NOT_RUN and row["ours"].startswith("3 of 5 settings run")
    row, = sc.best_settings(df, "fen_layers", *sc.CLAIMS[3][:2], grid=(1, 2, 3))
    assert row["verdict"] == rules.REPRODUCED and row["seeds"] == 3 and "seed SD at 2" in row["details"]
    row, = sc.best_settings(df[df.seed < 2], "fen_layers", *sc.CLAIMS[3][:2], grid=(1, 2, 3))
    assert row["verdict"] == rules.TOO_FEW and row["seeds"] == 2


def test_the_scaling_page_keeps_the_earlier_30_percent_records_as_their_own_points():
    from ifm.runs.records import REPO_ROOT

    exp = ex.Experiment("paper", recipe="paper,code", results_dir=REPO_ROOT / "results", train_missing=False, log=None)
    rows = studies.earlier_pool_rows(exp, ("fm", "ifm", "nfm"))
    if not rows:
        pytest.skip("no legacy records in results/paper")
    assert {r["recipe"] for r in rows} == {"legacy"} and {r["model"] for r in rows} == {"fm", "ifm", "nfm"}
    assert {r["train_instances"] for r in rows} == {69266}                  # 30% of Frappe, re-split 8:1:1
    assert all(0.29 < r["train_fraction"] < 0.31 for r in rows)
    # never when training (the legacy recipe only reads), nor under recipe legacy itself
    assert studies.earlier_pool_rows(ex.Experiment("smoke", recipe="paper", log=None), ("fm",)) == []


def test_a_claim_over_several_models_waits_for_all_of_them_unless_already_refuted():
    rows = [{"dataset": "frappe", "dataset_label": "Frappe", "model": m, "model_name": m.upper(), "seed": s,
             "test_rmse": v} for m, vs in (("ifm", (0.29, 0.30, 0.28)), ("nfm", (0.32, 0.33, 0.31)))
            for s, v in enumerate(vs)]
    reg = pd.DataFrame(rows)
    row, = sc.beats_every_baseline(reg, baselines=5)
    assert row["verdict"] == rules.NOT_RUN and row["ours"].startswith("1 of 5 baselines run")
    assert sc.beats_every_baseline(reg)[0]["verdict"] == rules.REPRODUCED       # all the baselines there are
    reg.loc[reg.model == "nfm", "test_rmse"] -= 0.05                         # one run baseline beats IFM
    row, = sc.beats_every_baseline(reg, baselines=5)
    assert row["verdict"] == rules.NOT and "(of 5; refuted already)" in row["ours"]
