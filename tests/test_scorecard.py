"""The scorecard's verdict rules on constructed numbers, and each claim's function on constructed frames."""
import math

import pandas as pd

from ifm import scorecard as sc


def test_comparison_rule():
    assert sc.comparison_verdict(True, 0.01) == sc.REPRODUCED
    assert sc.comparison_verdict(True, 0.2) == sc.PARTLY
    assert sc.comparison_verdict(True, math.nan) == sc.PARTLY          # one seed: no test
    assert sc.comparison_verdict(False, 0.001) == sc.NOT
    assert sc.comparison_verdict(True, 0.01, testable=False) == sc.UNTESTABLE


def test_setting_rule():
    assert sc.setting_verdict(True, math.nan) == sc.REPRODUCED
    assert sc.setting_verdict(False, 0.3) == sc.PARTLY
    assert sc.setting_verdict(False, math.nan) == sc.PARTLY
    assert sc.setting_verdict(False, 0.01) == sc.NOT
    assert sc.setting_verdict(False, 0.01, testable=False) == sc.UNTESTABLE


def test_spread_rule():
    x3, x9 = sc.PAPER_FACTOR_RANGES[3], sc.PAPER_FACTOR_RANGES[9]
    assert sc.spread_verdict(0.3, 2.9, x3) == sc.REPRODUCED              # width 2.6 >= the paper's 2.45
    assert sc.spread_verdict(0.5, 1.8, x3) == sc.PARTLY                  # 1.3: at least half of 2.45
    assert sc.spread_verdict(0.84, 0.98, x3) == sc.NOT
    assert sc.spread_verdict(0.0, 1.2, x9) == sc.REPRODUCED              # 1.2 >= 1.14
    # near zero everywhere: a huge ratio of tiny values is no spread on the factor's scale
    assert sc.spread_verdict(2e-7, 0.02, x3) == sc.NOT
    assert sc.spread_verdict(float("nan"), 1.0, x3) == sc.UNTESTABLE


def runs(label, values):
    """Rows of a study: {model: [value per seed]} for one dataset."""
    return pd.DataFrame([{"dataset": "frappe", "dataset_label": label, "model": m, "model_name": m.upper(),
                          "seed": s, "value": v} for m, vs in values.items() for s, v in enumerate(vs)])


def test_ifm_beats_fm_on_paired_seeds_and_not_on_a_stand_in():
    conv = runs("Frappe (paper split, reconstructed)", {"ifm": [0.30, 0.31, 0.29], "fm": [0.34, 0.36, 0.33]})
    conv["valid_rmse"] = conv.pop("value")
    row, = sc.beats_fm(conv)
    assert row["verdict"] == sc.REPRODUCED and row["seeds"] == 3 and "IFM 0.3000 ± 0.0248 vs FM 0.3433 ± 0.0379" in row["ours"]
    conv["dataset_label"] = "MovieLens stand-in"
    assert sc.beats_fm(conv)[0]["verdict"] == sc.UNTESTABLE


def test_every_baseline_needs_all_comparisons_significant():
    reg = runs("Frappe", {"ifm": [0.29, 0.30, 0.28], "nfm": [0.31, 0.33, 0.30], "afm": [0.295, 0.29, 0.30]})
    reg["test_rmse"] = reg.pop("value")
    row, = sc.beats_every_baseline(reg)
    assert "below 2 of the 2 baselines compared" in row["ours"] and row["verdict"] == sc.PARTLY      # AFM only in the mean
    reg.loc[(reg.model == "nfm") & (reg.seed == 0), "test_rmse"] = 0.2
    assert sc.beats_every_baseline(reg)[0]["verdict"] == sc.NOT


def test_fen_adds_most_against_the_runner_up():
    comp = runs("Frappe", {"ifm": [0.30, 0.28, 0.31], "nfm": [0.10, 0.12, 0.09], "fm": [0, 0, 0]})
    comp["ri_rmse"] = comp.pop("value")
    row, = sc.fen_adds_most(comp)
    assert row["verdict"] == sc.REPRODUCED and "best other NFM 10.3%" in row["ours"]


def test_converges_faster_counts_the_three_parts():
    rows = [{"dataset": "frappe", "dataset_label": "Frappe", "model": m, "model_name": m, "seed": s, "epoch": e,
             "valid_rmse": v, "train_rmse": v / 2} for m, base, step in (("ifm", 0.30, 0.0), ("fm", 0.34, 0.01))
            for s in (0, 1) for e, v in ((1, base + 0.05), (2, base), (3, base + step))]
    row, = sc.converges_faster(pd.DataFrame(rows))
    assert row["verdict"] == sc.PARTLY and "lower validation RMSE, lower training RMSE" in row["ours"]
    assert "IFM reaches FM's best validation RMSE at epoch 2, FM at 2" in row["ours"]
    # IFM below FM's best already after epoch 1: faster, all three hold
    for r in rows:
        if r["model"] == "ifm" and r["epoch"] == 1:
            r["valid_rmse"] = 0.335
    row, = sc.converges_faster(pd.DataFrame(rows))
    assert row["verdict"] == sc.REPRODUCED and "reaches FM's best sooner" in row["ours"]
    speed = sc.epochs_to_reach(pd.DataFrame(rows))
    assert list(speed.fm_best_epoch) == [2, 2] and list(speed.ifm_epoch) == [1.0, 1.0]
    # an IFM that never gets down to FM's best is not faster
    slow = pd.DataFrame([{**r, "valid_rmse": r["valid_rmse"] + (0.1 if r["model"] == "ifm" else 0)} for r in rows])
    assert sc.epochs_to_reach(slow).ifm_epoch.isna().all()


def test_every_baseline_with_no_baseline_run_yet():
    reg = runs("Frappe", {"ifm": [0.29, 0.30, 0.28]})
    reg["test_rmse"] = reg.pop("value")
    row, = sc.beats_every_baseline(reg, baselines=5)
    assert row["verdict"] == sc.NOT_RUN and "none of the 5 baselines run yet" in row["ours"]


def test_every_baseline_waits_for_ifm_and_for_baselines_that_share_no_seed_with_it():
    reg = runs("Frappe", {"nfm": [0.31, 0.33, 0.30], "deepfm": [0.32, 0.33, 0.31]})
    reg["test_rmse"] = reg.pop("value")
    row, = sc.beats_every_baseline(reg, baselines=5)
    assert row["verdict"] == sc.NOT_RUN and row["ours"].startswith("IFM not run yet; baselines run: NFM 0.3133")
    # IFM on seeds 0-1, Wide&Deep on seed 2 alone: shown with its own mean, not counted as beaten or beating
    reg = runs("Frappe", {"ifm": [0.29, 0.28], "nfm": [0.31, 0.33, 0.30]})
    wide = runs("Frappe", {"wide_deep": [0.0, 0.0, 0.25]}).iloc[[2]]
    reg = pd.concat([reg, wide], ignore_index=True)
    reg["test_rmse"] = reg.pop("value")
    row, = sc.beats_every_baseline(reg, baselines=2)
    assert "below 1 of the 1 baselines compared (of 2)" in row["ours"] and "WIDE_DEEP 0.2500" in row["ours"]
    assert "1 run on no seed of IFM's" in row["ours"] and row["seeds"] == 2
    assert row["verdict"] == sc.NOT_RUN          # Wide&Deep is not compared yet, and nothing refutes the claim


def test_fen_adds_most_says_which_frozen_models_lose_their_fms_batch_norm():
    comp = runs("Frappe", {"ifm": [-0.9, -0.8, -1.0], "afm": [-1.8, -1.9, -1.7], "nfm": [0.01, 0.0, -0.02]})
    comp["ri_rmse"] = comp.pop("value")
    comp["fm_batch_norm"] = comp.model.isin(["ifm", "afm"])
    row, = sc.fen_adds_most(comp)
    assert row["verdict"] == sc.NOT
    assert row["ours"].endswith("; IFM and AFM start from an FM trained with batch norm on its pooled vector, "
                                "which the hand-over of w0, w and v leaves behind")
    comp["fm_batch_norm"] = False
    assert "batch norm" not in sc.fen_adds_most(comp)[0]["ours"]
