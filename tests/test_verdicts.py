"""The pages' "What we got" sentences on constructed frames: each must say what the numbers say."""
from types import SimpleNamespace

import pandas as pd

from ifm.book import verdicts


def test_components_names_the_largest_improvement_and_ifms_when_it_is_not_the_largest():
    df = pd.DataFrame([{"dataset_label": d, "model": m.lower(), "model_name": m, "ri_rmse": ri}
                       for d, rows in {"Frappe": {"IFM": 0.30, "NFM": 0.10},
                                       "MovieLens": {"IFM": 0.05, "NFM": 0.20}}.items()
                       for m, ri in rows.items()] + [{"dataset_label": "Frappe", "model": "fm", "model_name": "FM",
                                                      "ri_rmse": 9.0}])       # FM itself never counts
    text = verdicts.components(df).data
    assert "on Frappe the largest improvement is IFM's (30.0%)" in text
    assert "on MovieLens the largest improvement is NFM's (20.0%), IFM's is 5.0%" in text


def test_convergence_says_lower_or_not_lower():
    summary = pd.DataFrame([
        {"dataset_label": "Frappe", "model": "fm", "valid_rmse": 0.34, "best_epoch": 90},
        {"dataset_label": "Frappe", "model": "ifm", "valid_rmse": 0.30, "best_epoch": 40},
        {"dataset_label": "MovieLens", "model": "fm", "valid_rmse": 0.40, "best_epoch": 10},
        {"dataset_label": "MovieLens", "model": "ifm", "valid_rmse": 0.41, "best_epoch": 12}])
    text = verdicts.convergence(summary).data
    assert "On Frappe IFM's best validation RMSE is 0.3000 against FM's 0.3400 (lower, reached at epoch 40 vs 90). " in text
    assert "On MovieLens IFM's best validation RMSE is 0.4100 against FM's 0.4000 (not lower" in text


def test_regression_counts_significant_comparisons_both_ways():
    df = pd.DataFrame([{"dataset_label": "Frappe", "model_name": m, "test_rmse": v}
                       for m, v in (("IFM", 0.30), ("NFM", 0.29), ("LibFM", 0.33))])
    sig = pd.DataFrame([{"significant": True, "verdict": "IFM better", "p_value": 0.01},
                        {"significant": False, "verdict": "IFM significantly worse", "p_value": 0.02},
                        {"significant": False, "verdict": "no difference", "p_value": None}])
    text = verdicts.regression(df, sig).data
    assert "the lowest mean test RMSE is NFM's (0.2900; IFM 0.3000)" in text
    assert "Of 2 tested comparisons (of 3" in text and "better in 1 and significantly worse in 1" in text


def test_factors_counts_wins_and_quotes_the_spread():
    table = pd.DataFrame({"ifm_error": [0.1, 0.5, 0.2], "fm_error": [0.2, 0.3, 0.4], "candidates": [120] * 3,
                          "fm_test_mae": [0.15] * 3, "ifm_test_mae": [0.07] * 3})
    summary = pd.DataFrame({"field": [3, 9], "p05": [0.01, 0.2], "p95": [9.5, 1.3]})
    fs = SimpleNamespace(table=table, summary=summary,
                         attrs={"fields": [2, 8], "field_names": ["daytime", "country"], "common_pair": (5041, 5100)})
    text = verdicts.factors(fs).data
    assert "below FM's in 2 of our 3 instances" in text
    assert "x3 ranges from 0.01 to 9.50" in text and "x9 from 0.20 to 1.30" in text
    caption = verdicts.factors_caption(fs)
    assert "x3 = daytime, x9 = country" in caption and "0.1500 for FM and 0.0700 for IFM" in caption
    assert "trained again" not in caption


def test_the_factor_caption_averages_the_seeds_and_names_a_seed_whose_model_is_not_the_recorded_run():
    rows = [{"seed": seed, "recipe": "code", "candidates": 120, "fm_test_mae": fm, "ifm_test_mae": ifm,
             "record_test_mae": record, "ifm_error": 0.1, "fm_error": 0.2}
            for seed, fm, ifm, record in ((0, 0.15, 0.07, 0.07 + 4e-9), (1, 0.17, 0.09, 0.09), (2, 0.16, 0.0692, 0.0670))
            for _ in range(3)]
    rows += [{**rows[0], "recipe": "paper", "fm_test_mae": 0.2, "ifm_test_mae": 0.3, "record_test_mae": 0.3}]
    fs = SimpleNamespace(table=pd.DataFrame(rows), attrs={"fields": [2, 8], "field_names": ["daytime", "country"],
                                                          "common_pair": (5041, 5100)})
    caption = verdicts.factors_caption(fs)
    assert "0.1600 for FM and 0.0764 for IFM, the mean over 3 seeds (0, 1, 2)" in caption
    assert "seed 2 under recipe `code` (test MAE 0.0692, the record's 0.0670) come from an IFM trained again" in caption
    assert "seed 0 " not in caption and "seed 1 " not in caption
    assert "Under recipe `paper`, 120 test instances" in caption and "0.2000 for FM and 0.3000 for IFM." in caption


def test_rankings_agree_disagree_and_sweeps():
    ranks = pd.DataFrame([
        {"item": "Table 3", "dataset_label": "Frappe", "metric": "RMSE", "seeds": 3, "models": 6,
         "kendall_tau": 1.0, "same_best": True, "paper_best": "IFM", "our_best": "IFM"},
        {"item": "Table 3", "dataset_label": "MovieLens", "metric": "RMSE", "seeds": 1, "models": 6,
         "kendall_tau": 0.2, "same_best": False, "paper_best": "IFM", "our_best": "NFM"}])
    ov = pd.DataFrame([{"item": "Fig. 3a", "dataset_label": "Frappe", "quantity": "best depth", "paper": 2,
                        "ours": 3, "n_seeds": 3}, {"item": "Table 3", "dataset_label": "Frappe",
                                                    "quantity": "x", "paper": 1, "ours": 1, "n_seeds": 3}])
    text = verdicts.rankings(ranks, ov).data
    assert "Table 3, Frappe, RMSE (3 seeds, 6 models): our ranking **agrees**" in text
    assert "(1 seed, 6 models): our ranking **disagrees**: the paper's best is IFM, ours is NFM" in text
    assert "Fig. 3a, Frappe, best depth: paper 2, ours 3 (**different**; 3 seeds shared by every setting)" in text
    assert "Table 3, Frappe, x" not in text
    assert verdicts.rankings(ranks.iloc[:0], ov.iloc[:0]).data.startswith("No table")


def test_scaling_margin_and_the_earlier_records():
    rows = [{"recipe": "code", "model": m, "model_name": m.upper(), "train_instances": n, "train_fraction": f,
             "seed": 0, "test_rmse": v}
            for n, f, fm, ifm in ((28865, 0.125, 0.40, 0.39), (115462, 0.5, 0.35, 0.32), (230925, 1.0, 0.32, 0.29))
            for m, v in (("fm", fm), ("ifm", ifm))]
    rows += [{"recipe": "legacy", "model": "fm", "model_name": "FM", "train_instances": 69266, "train_fraction": 0.3,
              "seed": 0, "test_rmse": 0.47}]
    text = verdicts.scaling(pd.DataFrame(rows)).data
    # 0.01 of FM's 0.40 is 2.5%; 0.03 of 0.32 is 9.4%
    assert "goes from 0.0100 (2.5% of FM's) at 28,865 training instances to 0.0300 (9.4%) at 230,925: it grows" in text
    assert ". The earlier records on the 30% pool (recipe `legacy`, their own test set) have test RMSE FM 0.4700" in text
    assert "FM 0.3200 (recipe code)" in text
    shrinking = pd.DataFrame(rows[:6]).assign(test_rmse=[0.40, 0.37, 0.35, 0.34, 0.32, 0.31])
    assert "does not grow steadily" in verdicts.scaling(shrinking).data


def test_still_improving_names_runs_whose_best_epoch_is_the_last_one_run():
    rows = [("AFM", "paper", 100, 100), ("AFM", "paper", 99, 100), ("AFM", "code", 100, 100),
            ("IFM", "paper", 40, 44), ("IFM", "code", 61, 65),          # stopped by the rule: never the last epoch
            ("NFM", "paper", 30, 30), ("NFM", "code", 12, 16)]          # a short run that ended on its best epoch
    df = pd.DataFrame([{"model_name": m, "recipe": r, "best_epoch": b, "epochs_run": e, "dataset_label": "Frappe"}
                       for m, r, b, e in rows])
    text = verdicts.still_improving(df)
    assert "AFM on Frappe: 1 of 2 runs under recipe paper, 1 of 1 runs under recipe code" in text
    assert "NFM on Frappe: 1 of 1 runs under recipe paper, 0 of 1 runs under recipe code" in text
    assert "IFM" not in text
    assert verdicts.still_improving(df[df.model_name == "IFM"]) == ""
    one_recipe = df[df.recipe == "paper"].drop(columns=["recipe", "dataset_label"])
    assert "AFM: 1 of 2 runs;" in verdicts.still_improving(one_recipe)
    # the pages' verdicts carry the sentence
    df["test_rmse"] = 0.3
    sig = pd.DataFrame(columns=["recipe", "significant", "verdict", "p_value"])
    assert "Still improving when the epoch limit stopped them" in verdicts.regression(df, sig).data
    df["model"], df["ri_rmse"] = df.model_name.str.lower(), 0.1
    text = verdicts.components(df).data
    assert "Under recipe `paper`, on Frappe the largest improvement is" in text
    assert "Still improving when the epoch limit stopped them" in text


def test_a_smoke_rerun_says_it_is_a_check_in_its_verdicts_and_titles():
    from ifm.book import words

    df = pd.DataFrame({"dataset_label": ["Synthetic"], "model_name": ["IFM"], "dataset": ["synthetic"],
                       "ri_rmse": [0.1], "model": ["ifm"], "recipe": ["paper"]})
    df.attrs.update(profile="smoke", recipe="paper")
    assert verdicts.components(df).data.startswith("**Smoke check, not a reproduction**")
    assert words.stamp(df).startswith("SMOKE CHECK, not a reproduction")
    df.attrs["profile"] = "paper"
    assert verdicts.components(df).data.startswith("**What we got:**") and "SMOKE" not in words.stamp(df)
