"""The verdict rules (ifm.book.rules) on constructed numbers: matched seeds, Holm's correction against a
hand computation, the paired interval against its formula, and each verdict of the best-setting,
comparison and factor rules."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ifm.book import rules


def sweep(values: dict) -> pd.DataFrame:
    """Rows of a sweep: {setting: [validation RMSE at seed 0, 1, ...]} (None: no run at that seed)."""
    return pd.DataFrame([{"setting": k, "seed": s, "valid_rmse": v} for k, vs in values.items()
                         for s, v in enumerate(vs) if v is not None])


def judge(values, paper, ordered=True, grid=None):
    return rules.judge_setting(rules.matched(sweep(values), "setting", "valid_rmse"), paper, ordered, grid)


def test_holm_against_a_hand_computation():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, then 0.04*1 = 0.04 -> kept at 0.06 (step-down)
    assert np.allclose(rules.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    assert np.allclose(rules.holm([0.5, 0.9]), [1.0, 1.0])                 # 0.5*2 capped at 1; 0.9 kept monotone
    out = rules.holm([0.02, float("nan"), 0.04])                           # NaN is not in the family
    assert math.isnan(out[1]) and np.allclose(out[[0, 2]], [0.04, 0.04])


def test_paired_difference_interval_and_p_match_their_formulas():
    a, b = np.array([0.30, 0.31, 0.29, 0.305]), np.array([0.32, 0.315, 0.30, 0.33])
    d = a - b
    half = stats.t.ppf(0.975, 3) * d.std(ddof=1) / 2
    got = rules.paired(a, b)
    assert got.n == 4 and got.difference == pytest.approx(d.mean()) and got.half == pytest.approx(half)
    assert got.p == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert math.isnan(rules.paired([0.3], [0.4]).p)                       # one pair: nothing to test
    assert rules.paired([1, 2, 3], [2, 3, 4]).p == 0.0                     # the same gap at every seed


def test_separating_t_is_the_t_quantile_of_holms_first_step():
    # Two degrees of freedom have a closed form: two-sided p = 1 - t / sqrt(2 + t^2), so the t at
    # p = alpha / m is sqrt(2 q^2 / (1 - q^2)) with q = 1 - alpha / m.
    for m in (1, 4, 9):
        q = 1 - 0.05 / m
        assert rules.separating_t(3, m) == pytest.approx(math.sqrt(2 * q * q / (1 - q * q)))
    assert rules.separating_t(3, 9) == pytest.approx(13.36, abs=0.01)          # the dropout sweep at 3 seeds
    assert rules.separating_t(5, 9) == pytest.approx(5.44, abs=0.01)           # ... and at 5
    assert math.isnan(rules.separating_t(1, 4)) and math.isnan(rules.separating_t(3, 0))


@pytest.mark.parametrize("rivals", [1, 9])
@pytest.mark.parametrize("factor, separated", [(1.03, True), (0.97, False)])
def test_a_rival_is_told_apart_exactly_when_its_paired_t_clears_separating_t(rivals, factor, separated):
    # One clear rival whose per-seed gaps over the paper's setting (also our best) have t = factor x
    # the threshold, beside rivals - 1 that seed noise swamps: the rule separates it iff t clears it.
    t = factor * rules.separating_t(3, rivals)
    e = 0.001
    gaps = np.array([-e, 0.0, e]) + t * e / math.sqrt(3)                  # mean / (sd / sqrt 3) = t
    values = {0: [0.30, 0.30, 0.30], 1: list(0.30 + gaps)}
    for k in range(2, rivals + 1):
        values[k] = [0.30 + 0.02, 0.30 - 0.019, 0.30 + 0.02]                 # mean above, but p near 0.4
    got = judge(values, 0)
    assert got.best == 0 and (1 not in got.in_s) == separated
    assert got.needed_t == rules.separating_t(3, rivals)                  # the judgement says what it needed


def test_matched_keeps_only_the_seeds_every_setting_shares():
    wide = rules.matched(sweep({1: [0.2890, None, None], 2: [0.2919, 0.2878, 0.2861]}), "setting", "valid_rmse")
    assert list(wide.index) == [0] and list(wide.columns) == [1, 2]


def test_the_depth_case_of_unequal_seed_sets_is_too_few_seeds_not_reproduced():
    # Issue 21: depth 2 has seeds 0-2 (mean 0.2886), the others seed 0 only; at seed 0 depth 1 is best.
    r = judge({0: [0.2950], 1: [0.2890], 2: [0.2919, 0.2878, 0.2861], 3: [0.2930], 4: [0.2960]}, paper=2)
    assert r.verdict == rules.TOO_FEW and r.seeds == [0] and r.best == 1
    assert r.verdict != rules.REPRODUCED


def test_one_seed_never_gives_a_verdict():
    assert judge({1: [0.30], 2: [0.20], 3: [0.30]}, paper=2).verdict == rules.TOO_FEW


def test_a_clear_optimum_at_the_papers_setting_is_reproduced():
    r = judge({1: [0.300, 0.302, 0.301, 0.303], 2: [0.290, 0.291, 0.290, 0.292], 3: [0.296, 0.298, 0.297, 0.298]},
              paper=2)
    assert r.verdict == rules.REPRODUCED and r.best == 2 and r.in_s == [2]
    assert set(r.worse_than_paper) == {1, 3}


def test_a_flat_sweep_is_consistent_not_separated():
    r = judge({0.1: [0.2935, 0.2960, 0.2905], 0.2: [0.2944, 0.2950, 0.2920], 0.3: [0.2935, 0.2970, 0.2915]},
              paper=0.3)
    assert r.verdict == rules.CONSISTENT and set(r.in_s) == {0.1, 0.2, 0.3}


def test_a_significantly_better_rival_is_not_reproduced():
    r = judge({1: [0.280, 0.281, 0.282], 2: [0.290, 0.291, 0.293], 3: [0.300, 0.301, 0.303]}, paper=2)
    assert r.verdict == rules.NOT and r.best == 1 and 2 not in r.in_s


def test_worse_on_one_side_only_is_consistent():
    # the paper's setting ties our best, larger settings are clearly worse, smaller ones are not
    r = judge({1: [0.290, 0.292, 0.289], 2: [0.290, 0.291, 0.290], 3: [0.310, 0.311, 0.313]}, paper=2)
    assert r.verdict == rules.CONSISTENT and r.worse_than_paper == [3]


def test_an_activation_is_reproduced_only_when_every_other_is_worse():
    clear = {"relu": [0.290, 0.291, 0.292], "tanh": [0.300, 0.302, 0.301], "sigmoid": [0.305, 0.306, 0.304]}
    assert judge(clear, "relu", ordered=False).verdict == rules.REPRODUCED
    tie = {**clear, "identity": [0.2905, 0.2908, 0.2918]}
    assert judge(tie, "relu", ordered=False).verdict == rules.CONSISTENT


def test_a_setting_of_the_grid_not_run_is_not_run_yet():
    r = judge({1: [0.30, 0.30, 0.31], 2: [0.29, 0.28, 0.29]}, paper=2, grid=(1, 2, 3))
    assert r.verdict == rules.NOT_RUN and r.missing == [3]


def test_seed_noise_is_the_standard_deviation_at_one_setting():
    sd, seeds = rules.seed_noise(sweep({2: [0.2919, 0.2878, 0.2861]}), "setting", 2, "valid_rmse")
    assert sd == pytest.approx(np.std([0.2919, 0.2878, 0.2861], ddof=1)) and seeds == [0, 1, 2]


def models(values: dict) -> pd.DataFrame:
    return rules.matched(pd.DataFrame([{"model": m, "seed": s, "rmse": v} for m, vs in values.items()
                                       for s, v in enumerate(vs) if v is not None]), "model", "rmse")


def test_a_comparison_uses_shared_seeds_and_holm_across_rivals():
    wide = models({"ifm": [0.29, 0.30, 0.28, 0.29], "nfm": [0.31, 0.325, 0.30, 0.31],
                   "afm": [0.295, 0.29, 0.30, None]})
    assert list(wide.index) == [0, 1, 2]                  # AFM's missing seed 3 drops it for all
    j = rules.judge_comparison(wide, "ifm")
    raw = [rules.paired(wide["ifm"], wide[m]).p for m in ("nfm", "afm")]
    assert np.allclose(j.rows.p_holm, rules.holm(raw))
    assert j.verdict == rules.CONSISTENT                  # AFM is not separated from IFM
    assert "nfm -0.0217 ±" in j.reason()


def test_a_comparison_is_reproduced_refuted_or_too_few():
    better = models({"ifm": [0.29, 0.30, 0.28], "fm": [0.33, 0.345, 0.32]})
    assert rules.judge_comparison(better, "ifm").verdict == rules.REPRODUCED
    worse = models({"ifm": [0.33, 0.345, 0.32], "fm": [0.29, 0.30, 0.28]})
    assert rules.judge_comparison(worse, "ifm").verdict == rules.NOT
    assert rules.judge_comparison(models({"ifm": [0.29, 0.28], "fm": [0.33, 0.34]}), "ifm").verdict == rules.TOO_FEW
    # higher is better (AUC): a higher IFM is better
    auc = models({"ifm": [0.80, 0.81, 0.805], "fm": [0.78, 0.785, 0.79]})
    assert rules.judge_comparison(auc, "ifm", lower_is_better=False).verdict == rules.REPRODUCED


def test_judge_all_needs_every_part():
    assert rules.judge_all([rules.REPRODUCED, rules.REPRODUCED]) == rules.REPRODUCED
    assert rules.judge_all([rules.REPRODUCED, rules.CONSISTENT]) == rules.CONSISTENT
    assert rules.judge_all([rules.REPRODUCED, rules.NOT]) == rules.NOT
    assert rules.judge_all([rules.TOO_FEW, rules.NOT]) == rules.TOO_FEW


def test_the_papers_instances_bound_the_largest_share():
    # instance 1 shows 3.12 and 0.15: the other 8 share 6.73, evenly (0.84 each) or on one field
    assert rules.largest_share_bounds((3.12, 0.15)) == pytest.approx((0.312, 0.673))
    assert rules.largest_share_bounds((0.67, 0.05)) == pytest.approx((0.116, 0.928))


def factor_seeds(p05, p95, share):
    return pd.DataFrame({"seed": range(len(p05)), "p05": p05, "p95": p95, "median_share": share})


def test_factor_rule_wide_but_collapsed_is_not_reproduced():
    x3 = rules.PAPER_FACTOR_RANGES[3]
    # the released code's collapse: the factor swings 0..9.7 (wide), one field takes 97% of h
    collapsed = rules.judge_factors(factor_seeds([0.0] * 3, [9.7] * 3, [0.97] * 3), x3)
    assert collapsed.verdict == rules.NOT
    moderate = rules.judge_factors(factor_seeds([0.3] * 3, [3.0] * 3, [0.35, 0.4, 0.38]), x3)
    assert moderate.verdict == rules.REPRODUCED
    half = rules.judge_factors(factor_seeds([0.6] * 3, [2.0] * 3, [0.35] * 3), x3)
    assert half.verdict == rules.PARTLY                     # width 1.4: at least half of 2.45
    fm_like = rules.judge_factors(factor_seeds([0.9] * 3, [1.1] * 3, [0.105] * 3), x3)
    assert fm_like.verdict == rules.NOT                     # every factor near 1: no variation
    assert rules.judge_factors(factor_seeds([0.3], [3.0], [0.4]), x3).verdict == rules.TOO_FEW
