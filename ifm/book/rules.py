"""The verdict rules: numbers over seeds in, a verdict out. Every claim of the book is judged here
and nowhere else (the scorecard, the sweep pages and their figures all read these results), on
the seeds that every compared run shares, with tests that know seed noise:

* `holm`: Holm's step-down correction of a family of p-values.
* `paired`: the paired difference of two runs over matched seeds, its 95% t-interval and the
  two-sided paired t-test.
* `judge_setting`: a claimed best setting of a sweep (Figs. 3-5), by the set of settings not
  significantly worse than our best and the shape of the curve around the paper's setting.
* `separating_t`: what that test can resolve: the paired t a rival needs before Holm's first
  step calls it worse, at a given number of seeds and rivals.
* `judge_comparison`: a claim that one model beats others (Tables 2-3, Fig. 6), Holm-corrected
  across the others.
* `judge_factors`: the factor claim of Table 1, by the spread of a field's factor and by how
  concentrated each instance's factors are, against the paper's three instances.

The rules are written out in words (`SETTING_RULE`, `COMPARISON_RULE`, `FACTOR_RULE`) for the
pages, and held to constructed numbers in tests/test_rules.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

ALPHA = 0.05
MIN_SEEDS = 3

REPRODUCED = "reproduced"
CONSISTENT = "consistent, not separated"
PARTLY = "partly"
NOT = "not reproduced"
TOO_FEW = "too few seeds"
UNTESTABLE = "cannot be tested here"
NOT_RUN = "not run yet"
VERDICTS = (REPRODUCED, CONSISTENT, PARTLY, NOT, TOO_FEW, NOT_RUN, UNTESTABLE)


# --------------------------------------------------------------------------- matched seeds
def matched(df: pd.DataFrame, column: str, metric: str, seed: str = "seed") -> pd.DataFrame:
    """One row per seed that every value of `column` has a finite `metric` for, one column per
    value (in order of appearance): the runs a comparison may use. A seed that some compared run
    lacks is dropped for all of them, so no mean over three seeds meets a single run."""
    values = list(dict.fromkeys(df[column].tolist()))
    wide = df.pivot_table(index=seed, columns=column, values=metric, aggfunc="first")
    wide = wide.reindex(columns=values).dropna(axis=0, how="any")
    return wide.sort_index()


# --------------------------------------------------------------------------- tests
def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN and is left out of the family)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    running = 0.0
    for rank, i in enumerate(ok[np.argsort(p[ok], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


@dataclass
class Paired:
    """a - b over matched seeds: mean difference, 95% half-width, t and two-sided p."""
    n: int
    difference: float
    half: float
    t: float
    p: float


def paired(a, b, confidence: float = 0.95) -> Paired:
    """The paired difference a - b (same seeds). With n < 2 nothing is tested (p NaN); when every
    seed gives the same non-zero difference there is no seed noise in it and p is 0."""
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError("paired samples must have the same length")
    d = (a - b)[~(np.isnan(a) | np.isnan(b))]
    n = len(d)
    if n == 0:
        return Paired(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(d.mean())
    if n < 2:
        return Paired(1, mean, math.nan, math.nan, math.nan)
    sd = float(d.std(ddof=1))
    if sd == 0:
        return Paired(n, mean, 0.0, math.copysign(math.inf, mean) if mean else math.nan, 0.0 if mean else 1.0)
    se = sd / math.sqrt(n)
    t = mean / se
    return Paired(n, mean, float(stats.t.ppf(0.5 + confidence / 2, n - 1) * se), float(t),
                  float(2 * stats.t.sf(abs(t), n - 1)))


# --------------------------------------------------------------------------- best settings
def separating_t(seeds: int, rivals: int, alpha: float = ALPHA) -> float:
    """The paired t (over `seeds` matched seeds) that the clearest of `rivals` rivals must exceed
    before the Holm-corrected two-sided test calls it different: Holm's first step tests the
    smallest p at alpha / rivals, so |t| > t_{1 - alpha / (2 rivals)}(seeds - 1). The later steps
    need less, down to t_{1 - alpha / 2}(seeds - 1) for the last. NaN below 2 seeds or 1 rival."""
    from scipy import stats

    if seeds < 2 or rivals < 1:
        return math.nan
    return float(stats.t.ppf(1 - alpha / (2 * rivals), seeds - 1))


SETTING_RULE = (
    "**How a best-setting claim is judged.** Only the seeds that every setting of the sweep shares are "
    f"used (at least {MIN_SEEDS}; with fewer the verdict is *{TOO_FEW}*, since one seed cannot tell a "
    "setting from seed noise). Our best is the setting with the lowest mean validation RMSE over those "
    "seeds. Each other setting is compared with our best by a two-sided paired t-test over the seeds, "
    f"the p-values Holm-corrected over the sweep's settings; S is our best and every setting not "
    f"significantly worse at alpha {ALPHA}. *{NOT}*: the paper's setting is not in S. *{REPRODUCED}*: "
    "the paper's setting is in S and the curve has the shape the paper reports around it, tested the "
    "same way against the paper's setting: for depth and dropout, some smaller and some larger setting "
    f"is significantly worse than the paper's; for the activation, every other one is. *{CONSISTENT}*: "
    "the paper's setting is in S, but the sweep cannot tell it from its rivals. The rule is strict on "
    "few seeds, and each page says how strict: a rival is called worse only when its paired t "
    "(its mean gap over the standard error of its per-seed gaps) clears Holm's first step, "
    f"{separating_t(3, 9):.1f} at 3 seeds and 9 rivals (the dropout sweep), {separating_t(3, 4):.1f} at "
    f"3 seeds and 4 rivals (depth), against {separating_t(5, 9):.1f} and {separating_t(5, 4):.1f} at 5 "
    f"seeds. So *{CONSISTENT}* on 3 seeds says that the data do not contradict the paper, not that they "
    "confirm it.")


@dataclass
class SettingJudgement:
    verdict: str
    paper: object
    best: object = None
    seeds: list = field(default_factory=list)
    means: dict = field(default_factory=dict)          # setting -> mean over the shared seeds
    in_s: list = field(default_factory=list)           # settings not significantly worse than our best
    worse_than_paper: list = field(default_factory=list)
    p_vs_best: dict = field(default_factory=dict)      # setting -> Holm-adjusted p against our best
    p_vs_paper: dict = field(default_factory=dict)     # setting -> Holm-adjusted p against the paper's
    missing: list = field(default_factory=list)        # settings of the grid with no run at the shared seeds

    @property
    def needed_t(self) -> float:
        """The paired t a rival had to clear here to be told apart from another setting
        (`separating_t` at the shared seeds and the sweep's rivals); NaN where too few seeds to test."""
        if len(self.seeds) < MIN_SEEDS or len(self.means) < 2:
            return math.nan
        return separating_t(len(self.seeds), len(self.means) - 1)

    def reason(self) -> str:
        """The evidence behind the verdict, in a few words."""
        if self.verdict in (NOT_RUN, UNTESTABLE) and not self.means:
            return ""
        n = len(self.seeds)
        text = f"our best {self.best} over {n} shared seed{'s' if n != 1 else ''}"
        if self.verdict == TOO_FEW or n < MIN_SEEDS:
            return text + " (too few to test)"
        text += f"; not significantly worse than it: {', '.join(str(s) for s in self.in_s)}"
        if self.paper in self.means:
            text += (f"; significantly worse than the paper's {self.paper}: "
                     + (", ".join(str(s) for s in self.worse_than_paper) or "none"))
        return text


def judge_setting(wide: pd.DataFrame, paper, ordered: bool = True, grid=None, alpha: float = ALPHA,
                  min_seeds: int = MIN_SEEDS) -> SettingJudgement:
    """A claimed best setting from `wide` (one row per shared seed, one column per setting, lower
    is better; `matched` makes it). `ordered`: the settings lie on a line (depth, dropout) and the
    paper's shape is "worse on both sides"; else (activation) "every other one worse". `grid`: the
    sweep's settings; one without a column makes the verdict *not run yet*."""
    settings = list(wide.columns)
    missing = [g for g in (grid or []) if g not in settings]
    means = {s: float(wide[s].mean()) for s in settings} if len(wide) else {}
    seeds = [int(s) for s in wide.index]
    best = min(means, key=means.get) if means else None
    result = SettingJudgement(NOT_RUN if missing or not means else TOO_FEW, paper, best, seeds, means, missing=missing)
    if missing or not means or len(seeds) < min_seeds or paper not in settings:
        if not missing and means and paper not in settings:
            result.verdict = NOT_RUN
        return result
    others = [s for s in settings if s != best]
    p_best = holm([paired(wide[s], wide[best]).p for s in others])
    result.p_vs_best = dict(zip(others, p_best))
    result.in_s = [s for s in settings if s == best or not (result.p_vs_best[s] < alpha)]
    rivals = [s for s in settings if s != paper]
    tests = [paired(wide[s], wide[paper]) for s in rivals]
    p_paper = holm([t.p for t in tests])
    result.p_vs_paper = dict(zip(rivals, p_paper))
    result.worse_than_paper = [s for s, t, p in zip(rivals, tests, p_paper) if t.difference > 0 and p < alpha]
    if paper not in result.in_s:
        result.verdict = NOT
    elif _shape_holds(settings, paper, result.worse_than_paper, ordered):
        result.verdict = REPRODUCED
    else:
        result.verdict = CONSISTENT
    return result


def _shape_holds(settings, paper, worse, ordered: bool) -> bool:
    """The paper's shape around its setting: some smaller and some larger setting significantly
    worse (an ordered sweep), or every other setting significantly worse (a categorical one)."""
    if not ordered:
        return set(worse) == set(settings) - {paper}
    return any(s < paper for s in worse) and any(s > paper for s in worse)


def sweep_judgements(df: pd.DataFrame, option: str, paper: dict, grid=None, metric: str = "valid_rmse") -> list:
    """[(recipe, dataset, label, SettingJudgement, seed SD, its seeds)] for a FEN sweep's rows: per
    reading and dataset, `judge_setting` on the seeds every setting shares (`paper`: {dataset: the
    paper's best setting}), and the seed-to-seed standard deviation at the paper's setting. The
    sweep pages, their figures and the scorecard all read this."""
    ordered = option != "activation"
    out = []
    recipes = list(dict.fromkeys(df["recipe"])) if "recipe" in df and len(df) else [None]
    for recipe in recipes:
        rows = df if recipe is None else df[df.recipe == recipe]
        for name in dict.fromkeys(rows.dataset):
            part = rows[rows.dataset == name]
            wide = matched(part, option, metric)
            if grid is not None:     # the grid's order, so "smaller" and "larger" read on the grid
                wide = wide.reindex(columns=[g for g in grid if g in wide.columns])
            j = judge_setting(wide, paper.get(name), ordered, grid)
            sd, sd_seeds = seed_noise(part, option, paper.get(name), metric)
            out.append((recipe, name, part.dataset_label.iloc[0], j, sd, sd_seeds))
    return out


def seed_noise(df: pd.DataFrame, column: str, value, metric: str) -> tuple[float, list]:
    """(standard deviation over seeds, the seeds) of `metric` at one setting: how much the same
    configuration moves from seed to seed, the yardstick for the gaps of its curve."""
    runs = df[df[column] == value].dropna(subset=[metric]).sort_values("seed")
    values = runs[metric].to_numpy(float)
    return (float(values.std(ddof=1)) if len(values) > 1 else math.nan), [int(s) for s in runs.seed]


# --------------------------------------------------------------------------- model against model
COMPARISON_RULE = (
    "**How a model-against-model claim is judged.** Only the seeds that every compared run shares "
    f"are used (at least {MIN_SEEDS}, else *{TOO_FEW}*). For each rival, the paired difference over "
    "those seeds is shown with its 95% t-interval, and tested by a two-sided paired t-test, the "
    f"p-values Holm-corrected across the rivals of one claim. *{REPRODUCED}*: the claimed model is "
    f"better than every rival at alpha {ALPHA}. *{NOT}*: some rival is significantly better. "
    f"*{CONSISTENT}*: neither (the claim is not refuted, and not established).")


@dataclass
class ComparisonJudgement:
    verdict: str
    seeds: list = field(default_factory=list)
    rows: pd.DataFrame | None = None    # one per rival: difference, half, p, p_holm, better, worse

    def reason(self, digits: int = 4, scale: float = 1.0, unit: str = "") -> str:
        if self.rows is None or not len(self.rows):
            return ""
        parts = []
        for r in self.rows.itertuples():
            d = f"{scale * r.difference:+.{digits}f}"
            if not math.isnan(r.half):
                d += f" ± {scale * r.half:.{digits}f}{unit}"
            tail = "" if math.isnan(r.p_holm) else f", p_Holm {r.p_holm:.2g}"
            parts.append(f"{r.rival} {d}{tail}")
        return "; ".join(parts)


def judge_comparison(wide: pd.DataFrame, claimed, rivals=None, lower_is_better: bool = True,
                     names: dict | None = None, alpha: float = ALPHA, min_seeds: int = MIN_SEEDS) -> ComparisonJudgement:
    """`claimed` beats each of `rivals` (default: every other column of `wide`, one row per shared
    seed; `matched` makes it). The difference is claimed - rival (negative is better when lower
    is better)."""
    rivals = [c for c in (rivals if rivals is not None else wide.columns) if c != claimed and c in wide.columns]
    seeds = [int(s) for s in wide.index]
    if claimed not in wide.columns or not rivals or not len(wide):
        return ComparisonJudgement(NOT_RUN, seeds)
    tests = [paired(wide[claimed], wide[r]) for r in rivals]
    p_holm = holm([t.p for t in tests])
    sign = -1.0 if lower_is_better else 1.0
    rows = pd.DataFrame({"rival": [(names or {}).get(r, r) for r in rivals], "key": rivals,
                         "difference": [t.difference for t in tests], "half": [t.half for t in tests],
                         "p": [t.p for t in tests], "p_holm": p_holm})
    rows["better"] = [sign * d > 0 and p < alpha for d, p in zip(rows.difference, rows.p_holm)]
    rows["worse"] = [sign * d < 0 and p < alpha for d, p in zip(rows.difference, rows.p_holm)]
    if len(seeds) < min_seeds:
        return ComparisonJudgement(TOO_FEW, seeds, rows)
    verdict = NOT if rows.worse.any() else REPRODUCED if rows.better.all() else CONSISTENT
    return ComparisonJudgement(verdict, seeds, rows)


def judge_all(judgements) -> str:
    """A claim made of several parts that must all hold (e.g. Fig. 6: lower validation error, lower
    training error, faster): refuted by any part, established only by all."""
    verdicts = list(judgements)
    for v in (NOT_RUN, TOO_FEW, NOT):
        if v in verdicts:
            return v
    return REPRODUCED if all(v == REPRODUCED for v in verdicts) else CONSISTENT


# --------------------------------------------------------------------------- Table 1: factors
# The paper's Table 1: the factors of x3 and x9 in its three instances; with h = 10 fields, an
# instance's factors sum to h (Eq. 5), so the two shown bound the largest of the ten.
PAPER_INSTANCES = ((3.12, 0.15), (0.67, 0.05), (2.29, 1.19))
PAPER_FACTOR_RANGES = {3: (0.67, 3.12), 9: (0.05, 1.19)}
FIELDS = 10


def largest_share_bounds(shown, h: int = FIELDS) -> tuple[float, float]:
    """The least and the most share of h that an instance's largest factor can take, given two of
    its factors (`shown`) and that its h factors are non-negative and sum to h: the other h - 2
    share the rest, at best evenly, at worst all on one field."""
    rest = h - sum(shown)
    low = max(max(shown), rest / (h - len(shown)))
    high = max(max(shown), rest)
    return low / h, high / h


PAPER_SHARE_BOUNDS = [largest_share_bounds(i) for i in PAPER_INSTANCES]

_SHARE_TEXT = ", ".join(f"{lo:.2f}-{hi:.2f}" for lo, hi in PAPER_SHARE_BOUNDS)
FACTOR_RULE = (
    "**How the factor claim is judged.** Per seed, over the whole test set: the width of the 5th-95th "
    "percentile range of the field's factor, and the share of h taken by each instance's largest "
    "factor (1/h for an FM, where every factor is 1; 1 when one field takes all of h). The paper shows "
    "two of ten factors per instance; since an instance's factors are non-negative and sum to h = 10, "
    f"they bound its largest share: {_SHARE_TEXT} for its three instances. The means over at least "
    f"{MIN_SEEDS} seeds decide (else *{TOO_FEW}*). *{REPRODUCED}*: the range is at least as wide as "
    "the paper's three instances span (x3: 0.67-3.12, x9: 0.05-1.19) and our median largest share lies "
    f"within the paper's bounds; *{PARTLY}*: the share lies within them and the range is at least half "
    f"as wide; *{NOT}*: otherwise. A field whose factor swings between 0 and h varies, but not as the "
    "paper's factors do when one field takes nearly all of h in most instances.")


@dataclass
class FactorJudgement:
    verdict: str
    seeds: list
    width: float
    median_share: float

    def reason(self, paper_range) -> str:
        if not self.seeds:
            return ""
        lo, hi = min(b[0] for b in PAPER_SHARE_BOUNDS), max(b[1] for b in PAPER_SHARE_BOUNDS)
        return (f"5th-95th percentile width {self.width:.2f} (paper's instances span {paper_range[1] - paper_range[0]:.2f}); "
                f"median largest share of h {self.median_share:.2f} (paper's instances allow {lo:.2f}-{hi:.2f}), "
                f"mean over {len(self.seeds)} seed{'s' if len(self.seeds) != 1 else ''}")


def judge_factors(per_seed: pd.DataFrame, paper_range, min_seeds: int = MIN_SEEDS) -> FactorJudgement:
    """`per_seed`: one row per seed with `p05`, `p95` (the field's factor over the test set) and
    `median_share` (the median over test instances of the largest factor / h)."""
    seeds = [int(s) for s in per_seed.seed] if len(per_seed) else []
    if not seeds:
        return FactorJudgement(NOT_RUN, [], math.nan, math.nan)
    width = float((per_seed.p95 - per_seed.p05).mean())
    share = float(per_seed.median_share.mean())
    if len(seeds) < min_seeds:
        return FactorJudgement(TOO_FEW, seeds, width, share)
    lo, hi = min(b[0] for b in PAPER_SHARE_BOUNDS), max(b[1] for b in PAPER_SHARE_BOUNDS)
    theirs = paper_range[1] - paper_range[0]
    shares_ok = lo <= share <= hi
    verdict = (REPRODUCED if shares_ok and width >= theirs else
               PARTLY if shares_ok and width >= theirs / 2 else NOT)
    return FactorJudgement(verdict, seeds, width, share)
