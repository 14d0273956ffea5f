"""The open-benchmark page (ifm.book.benchmark) on constructed studies: the verdict follows the
comparison rule over the seeds every model shares, the table puts our mean beside BARS's number
with the difference, the tuning curve keeps the best so far, and nothing is judged before IFM
and every baseline have their runs."""
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from ifm.book import bars, benchmark
from ifm.book.rules import CONSISTENT, NOT, NOT_RUN, REPRODUCED, TOO_FEW
from ifm.runs import tuning
from ifm.runs.tuning import StudyRun

SEEDS = (2021, 2022, 2023, 2024, 2025)


def frame(aucs: dict, seeds=SEEDS, trials=16) -> pd.DataFrame:
    """Rows of each model's chosen setting: aucs[model] is its test AUC per seed (a list), or a
    number that every seed gets plus a small seed effect shared by all models."""
    rows = []
    effect = dict(zip(SEEDS, (0.0, 2e-4, -1e-4, 1e-4, -2e-4)))
    for model, values in aucs.items():
        per_seed = values if isinstance(values, list) else [values + effect[s] for s in seeds]
        for seed, auc in zip(seeds, per_seed):
            rows.append({"model": model, "model_name": model, "seed": seed, "test_auc": auc,
                         "test_logloss": 1 - auc, "dataset_label": "Frappe_x1 (BARS split, reconstructed)",
                         "device": "cpu", "device_name": "x86_64"})
    df = pd.DataFrame(rows)
    runs = {m: StudyRun(m, study=SimpleNamespace(trials=[]), trials=[(i, {}, {"valid": {"auc": 0.9}}) for i in range(trials)],
                        complete=True) for m in aucs}
    df.attrs.update(tuning=runs, trials=trials, seeds=list(seeds), curves=pd.DataFrame(), cost={"runs": 0, "seconds": 0})
    return df


BASE = {"lr": 0.935, "fm": 0.968, "afm": 0.970, "nfm": 0.980, "deepfm": 0.9840, "wide_deep": 0.9835}


def test_ifm_clearly_above_every_baseline_is_reproduced_and_the_row_names_each_difference():
    df = frame({**BASE, "ifm": 0.9860, "difm": 0.9850})
    judgement, wide = benchmark.verdict(df)
    assert judgement.verdict == REPRODUCED and list(wide.index) == list(SEEDS)
    assert set(judgement.rows.rival) == {"LR", "FM", "AFM", "NFM", "DeepFM", "Wide&Deep"}     # DIFM is no rival
    row = benchmark.verdict_row(df)
    assert row["verdict"] == REPRODUCED and row["seeds"] == 5
    assert "best baseline DeepFM" in row["ours"] and "DeepFM +0.0020 ± 0.0000" in row["details"]
    assert "IFM beats every baseline under equal tuning: reproduced" in benchmark.headline(df)


def test_a_baseline_significantly_above_ifm_refutes_the_claim():
    noisy = [0.9841, 0.9839, 0.9842, 0.9838, 0.9840]
    df = frame({**BASE, "deepfm": [v + 0.001 for v in noisy], "ifm": noisy})
    assert benchmark.verdict(df)[0].verdict == NOT
    # The scorecard's row reads like the paper's claims above it: verdict with its seeds, coloured.
    table = benchmark.verdict_table(df)
    assert table.data.loc[0, "verdict"] == "not reproduced (5 seeds)"
    assert "background-color: #f6d0cc" in table.to_html()


def test_a_tie_within_seed_noise_is_consistent_not_separated():
    rng = np.random.default_rng(0)
    ifm = list(0.984 + rng.normal(0, 4e-4, 5))
    df = frame({**BASE, "deepfm": list(0.984 + rng.normal(0, 4e-4, 5)), "wide_deep": list(0.984 + rng.normal(0, 4e-4, 5)),
                "ifm": ifm})
    assert benchmark.verdict(df)[0].verdict == CONSISTENT


def test_only_the_seeds_every_model_shares_are_compared_and_two_are_too_few():
    df = frame({**BASE, "ifm": 0.9860})
    df = df[~((df.model == "nfm") & (df.seed > 2022))]         # NFM has seeds 2021-2022 only
    judgement, wide = benchmark.verdict(df)
    assert list(wide.index) == [2021, 2022] and judgement.verdict == TOO_FEW
    assert "at least 3 shared seeds are needed" in benchmark.headline(df)


def test_nothing_is_judged_before_ifm_and_every_baseline_have_runs():
    df = frame({m: v for m, v in BASE.items() if m != "afm"} | {"ifm": 0.99, "difm": 0.98})
    assert benchmark.verdict(df)[0].verdict == NOT_RUN
    row = benchmark.verdict_row(df)
    assert row["verdict"] == NOT_RUN
    # DIFM's runs do not count towards the comparison: AFM is the one missing, and named.
    assert row["ours"] == "6 of 7 compared models have their chosen setting's runs (AFM not yet)"
    assert benchmark.headline(df).startswith("**Not run yet.**")


def test_the_table_puts_our_mean_and_interval_beside_bars_and_their_difference():
    df = frame({**BASE, "ifm": 0.9860})
    table = benchmark.results_table(df)
    fm = table.loc["FM"]
    assert fm[("test AUC", "BARS")] == "0.9671" and fm[("test AUC", "ours − BARS")] == f"{0.968 - 0.9671:+.4f}"
    mean, half = 0.968, float(np.std([0, 2e-4, -1e-4, 1e-4, -2e-4], ddof=1) / math.sqrt(5) * 2.7764451)
    assert fm[("test AUC", "ours")] == f"{mean:.4f} ± {half:.4f}" and fm[("", "seeds")] == 5
    assert table.loc["IFM", ("test AUC", "BARS")] == "none" and table.loc["IFM", ("test AUC", "ours − BARS")] == ""
    df.attrs["curves"] = benchmark._curves(df.attrs["tuning"])
    tuned = benchmark.tuning_table(df)
    assert tuned.loc["IFM"].tolist() == ["16 of 16", 1, "0.9000", "not chosen yet", "none published"]
    assert tuned.loc["FM", "BARS's setting"] == "λ_e 5e-06, lr 0.001"


def test_the_tuning_table_counts_a_setting_asked_twice_as_two_trials_but_one_distinct_setting():
    df = frame({**BASE, "ifm": 0.9860}, trials=4)
    asked = [{"lr": 0.002, "l2_embedding": 1e-5}, {"lr": 0.005, "l2_embedding": 1e-5},
             {"l2_embedding": 1e-5, "lr": 0.002}, {"lr": 0.002, "l2_embedding": 1e-6}]
    df.attrs["tuning"]["lr"].trials = [(i, p, {"valid": {"auc": 0.93 + i / 1000}}) for i, p in enumerate(asked)]
    df.attrs["curves"] = benchmark._curves(df.attrs["tuning"])
    lr = benchmark.tuning_table(df).loc["LR"]
    assert lr["trials"] == "4 of 4" and lr["distinct settings"] == 3


def test_the_tuning_curve_keeps_the_best_so_far_through_failed_trials():
    runs = {"ifm": StudyRun("ifm", None, trials=[(0, {}, {"valid": {"auc": 0.95}}), (1, {}, {"valid": {"auc": float("nan")}}),
                                                 (2, {}, {"valid": {"auc": 0.96}}), (3, {}, {"valid": {"auc": 0.955}})])}
    curves = benchmark._curves(runs)
    assert curves.trial.tolist() == [1, 2, 3, 4]
    assert curves.best_valid_auc.tolist() == pytest.approx([0.95, 0.95, 0.96, 0.96])
    assert math.isnan(curves.valid_auc[1])


def test_the_calibration_compares_each_baseline_at_bars_own_setting_with_bars_run():
    df = frame({**BASE, "ifm": 0.9860})
    assert "not yet calibrated" in bars.calibration_sentence(df)
    df.attrs["tuning"]["fm"].calibration = {"valid": {"auc": 0.9690}, "test": {"auc": 0.9675, "logloss": 0.2050}}
    df.attrs["tuning"]["deepfm"].calibration = {"valid": {"auc": 0.9850}, "test": {"auc": 0.9840, "logloss": 0.1500}}
    text = bars.calibration_sentence(df)
    assert f"FM {0.9675 - 0.967108:+.4f}, DeepFM {0.9840 - 0.984243:+.4f}" in text and "2 of 6 baselines" in text
    table = bars.calibration_table(df)
    assert list(table.index) == ["LR", "FM", "AFM", "NFM", "DeepFM", "Wide&Deep"]          # no IFM: BARS has none
    assert table.loc["FM", ("validation AUC", "ours − BARS")] == f"{0.9690 - 0.968650:+.4f}"
    assert table.loc["LR", ("test AUC", "ours")] == "not run"


def test_the_headline_names_the_baselines_ifm_is_above_below_and_not_separated_from():
    rng = np.random.default_rng(1)
    ifm = list(0.975 + rng.normal(0, 4e-4, 5))
    df = frame({**BASE, "fm": list(0.975 + rng.normal(0, 4e-4, 5)), "ifm": ifm})
    text = benchmark.headline(df)
    assert "not reproduced" in text
    assert ("significantly above LR and AFM; significantly below NFM, DeepFM and Wide&Deep; not separated from FM "
            "(paired over seeds, Holm-corrected)") in text
    df = frame({**BASE, "ifm": 0.9860})
    assert ": significantly above LR, FM, AFM, NFM, DeepFM and Wide&Deep (paired" in benchmark.headline(df)


def test_a_baseline_whose_bars_setting_beats_all_its_trials_on_validation_is_named_with_its_test_auc():
    df = frame({**BASE, "ifm": 0.9860})
    df.attrs["tuning"]["afm"].trials = [(0, {}, {"valid": {"auc": 0.9650}}), (1, {}, {"valid": {"auc": float("nan")}}),
                                        (2, {}, {"valid": {"auc": 0.9676}})]
    df.attrs["tuning"]["afm"].calibration = {"valid": {"auc": 0.9697}, "test": {"auc": 0.9692, "logloss": 0.2185}}
    df.attrs["tuning"]["fm"].calibration = {"valid": {"auc": 0.8}, "test": {"auc": 0.8, "logloss": 0.3}}   # below its trials
    text = bars.shortfall_sentence(df)
    assert text.startswith("**Where the search fell short.**") and " FM (" not in text
    assert ("AFM (validation AUC 0.9697 at BARS's setting against 0.9676 for the best of its 3 trials; at BARS's "
            "setting its test AUC is 0.9692, against IFM's 0.9860 ± ") in text
    assert text in bars.calibration_sentence(df)
    df.attrs["tuning"]["afm"].calibration["valid"]["auc"] = 0.9676         # a tie is no shortfall
    assert bars.shortfall_sentence(df) == "" and "fell short" not in bars.calibration_sentence(df)


def test_the_page_rule_is_the_comparison_rule_under_its_own_heading():
    from ifm.book.benchmark import RULE
    from ifm.book.rules import COMPARISON_RULE

    assert RULE.startswith("**How the claim is judged**, by the rule of the paper's model-against-model claims.")
    assert COMPARISON_RULE.split("**", 2)[2] in RULE     # the rule's words, unchanged after its heading
    assert "six baselines (LR, FM, AFM, NFM, DeepFM, Wide&Deep)" in RULE


def test_the_start_check_table_shows_each_start_and_says_which_is_not_run():
    def rec(auc, test, epochs, median, p95):
        return {"valid": {"auc": auc}, "test": {"auc": test}, "epochs_run": epochs,
                "factors_test": {"median": median, "p95": p95}}
    checks = {"from scratch, lr 1e-3": rec(0.96871, 0.9673, 11, 2.1e-4, 6.52),
              "from scratch, lr 1e-4": None,
              "from BARS's FM, lr 1e-3": rec(0.97774, 0.9771, 11, 0.55, 3.6)}
    df = pd.DataFrame()
    df.attrs.update(tuning={"ifm": StudyRun("ifm", None, checks=checks)})
    table = benchmark.start_check_table(df)
    assert list(table.index) == list(tuning.START_RUNS)
    assert table.loc["from scratch, lr 1e-3"].to_dict() == {"epochs": "11", "validation AUC": "0.9687", "test AUC": "0.9673",
                                                          "factors: median": "0.00021", "factors: p95": "6.5"}
    assert table.loc["from scratch, lr 1e-4", "epochs"] == "not run yet"
    assert table.loc["from scratch, lr 1e-4", "test AUC"] == ""
    assert table.loc["from BARS's FM, lr 1e-3", "factors: median"] == "0.55"
    df.attrs.update(tuning={"fm": StudyRun("fm", None)})        # a study without IFM: every run not run
    assert set(benchmark.start_check_table(df)["epochs"]) == {"not run yet"}


def test_the_afm_curve_check_compares_the_calibration_run_with_bars_log_epoch_by_epoch():
    curve = bars.BARS_AFM_CURVE
    history = [{"valid_auc": v} for v in (curve[0] + 0.0023, curve[1] - 0.001, curve[2], curve[3], curve[4], curve[5], 0.95)]
    df = pd.DataFrame()
    df.attrs.update(tuning={"afm": StudyRun("afm", None, calibration={"history": history})})
    text = bars.afm_curve_sentence(df)
    assert "first 6 epochs is within 0.0023 of BARS's log" in text
    assert "+0.0023, -0.0010, +0.0000, +0.0000, +0.0000, +0.0000)" in text
    df.attrs.update(tuning={"afm": StudyRun("afm", None, calibration={"history": history[:2]})})
    assert "first 2 epochs is within 0.0023" in bars.afm_curve_sentence(df)
    df.attrs.update(tuning={"afm": StudyRun("afm", None)})
    assert "not run yet" in bars.afm_curve_sentence(df)


def test_the_start_table_splits_each_pretrain_models_trials_by_their_start():
    """Best validation AUC per start among told trials (a diverged one is counted, never best), the
    factors of that best trial where the model has them, and no row for a model that never searches it."""
    def rec(auc, median=None, p95=None):
        return {"valid": {"auc": auc}, **({"factors_test": {"median": median, "p95": p95}} if median is not None else {})}
    runs = {"ifm": StudyRun("ifm", None, trials=[(0, {"pretrain": False}, rec(0.968, 2e-4, 10.0)),
                                                 (1, {"pretrain": True}, rec(0.9777, 0.55, 3.6)),
                                                 (2, {"pretrain": True}, rec(float("nan"))),
                                                 (3, {"pretrain": False}, rec(0.9229, 1e-6, 10.0))]),
            "deepfm": StudyRun("deepfm", None, trials=[(0, {"pretrain": True}, rec(0.985))]),
            "nfm": StudyRun("nfm", None, trials=[(0, {}, rec(0.98))])}
    df = pd.DataFrame()
    df.attrs.update(tuning=runs)
    table = benchmark.start_table(df)
    assert list(table.index) == ["IFM", "DeepFM"]
    assert table.loc["IFM", ("from scratch", "trials")] == 2 and table.loc["IFM", ("from BARS's FM", "trials")] == 2
    assert table.loc["IFM", ("from scratch", "best validation AUC")] == "0.9680"
    assert table.loc["IFM", ("from scratch", "factors: median, p95")] == "0.0002, 10"
    assert table.loc["IFM", ("from BARS's FM", "factors: median, p95")] == "0.55, 3.6"
    assert table.loc["DeepFM", ("from scratch", "best validation AUC")] == ""
    assert table.loc["DeepFM", ("from BARS's FM", "factors: median, p95")] == ""
