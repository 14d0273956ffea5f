"""The "What we got" sentences of the book's pages: each turns a study's tidy frame into one
paragraph of Markdown, so that no notebook holds logic and every verdict is tested
(tests/test_verdicts.py)."""
from __future__ import annotations

import pandas as pd

from ifm.book.rules import MIN_SEEDS
from ifm.book.stats import by_recipe
from ifm.book.words import seeds_text

ALPHA = 0.05


def _under(recipe) -> str:
    """The words that open a recipe's sentences when a page shows several."""
    return "" if recipe is None else f"Under recipe `{recipe}`, "


NOTHING = "**What we got:** nothing yet: no run of this page is in the records."


def _recipe_of(row) -> str:
    """', recipe code' for a row that names its recipe."""
    recipe = getattr(row, "recipe", None)
    return f", recipe {recipe}" if isinstance(recipe, str) else ""


SMOKE = "**Smoke check, not a reproduction** (profile `smoke`: tiny data and few epochs). "


def _markdown(text: str, frame=None):
    """A page's answer as Markdown; a smoke re-run says first that it is only a check."""
    from IPython.display import Markdown

    smoke = frame is not None and getattr(frame, "attrs", {}).get("profile") == "smoke"
    return Markdown((SMOKE if smoke else "") + text)


PAPERS, WORSE, NOISE = "paper's best", "worse than the paper's", "seed SD at the paper's"


def best_setting(table: pd.DataFrame, what: str):
    """One sentence per reading and dataset from `tables.best_setting_table`: the verdict of
    `ifm.book.rules.judge_setting`, the evidence behind it, the seed noise at the paper's setting and
    the paired t that the rule needs to tell a rival apart."""
    if "verdict" not in table.columns:
        return _markdown(NOTHING)
    parts = []
    for name, row in table.iterrows():
        sentence = (f"on {name} the verdict is ***{row['verdict']}***: our best {what} is **{row['our best']}** "
                    f"(paper's: {row[PAPERS]}) over {row['shared seeds']} shared seed"
                    f"{'s' if row['shared seeds'] != 1 else ''}")
        if row["S: not worse than our best"] != "n/a" and row["shared seeds"] >= MIN_SEEDS:
            sentence += (f"; not significantly worse than it: {row['S: not worse than our best']}; significantly "
                         f"worse than the paper's: {row[WORSE] or 'none'}")
        if row[NOISE] != "n/a":
            sentence += f"; the same configuration varies by {row[NOISE]} (SD over seeds)"
        if name in table.attrs.get("separating_t", {}):
            sentence += f"; a rival is told apart only when its paired |t| exceeds {table.attrs['separating_t'][name]:.1f}"
        parts.append(sentence)
    return _markdown("**What we got:** " + "; ".join(parts) + ".", table)


def still_improving(df: pd.DataFrame) -> str:
    """A sentence naming the models whose runs were still improving when the epoch limit stopped
    them: the best epoch (on the monitored validation metric) is the last one run. A stopping rule
    never ends on a best epoch, so such a run met the limit, and its error is an upper bound on what
    more epochs would give. Per model and dataset; '' when there is none."""
    if df.empty or not {"best_epoch", "epochs_run"} <= set(df.columns):
        return ""
    keys = ["model_name"] + (["dataset_label"] if "dataset_label" in df.columns else [])
    parts = []
    for key, rows in df.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        model, where = key[0], "".join(f" on {label}" for label in key[1:])
        counts = [(recipe, int((r.best_epoch >= r.epochs_run).sum()), len(r)) for recipe, r in by_recipe(rows)]
        if sum(n for _, n, _ in counts):
            parts.append(f"{model}{where}: " + ", ".join(
                f"{n} of {total} runs" + ("" if recipe is None else f" under recipe {recipe}")
                for recipe, n, total in counts))
    if not parts:
        return ""
    return (" Still improving when the epoch limit stopped them (best epoch = last epoch): " + "; ".join(parts)
            + ". Their errors are upper bounds on what longer training would give.")


def components(df: pd.DataFrame):
    """Table 2: which component improves most over the frozen FM, per dataset."""
    if df.empty:
        return _markdown(NOTHING)
    paragraphs = []
    for recipe, rows in by_recipe(df):
        means = rows[rows.model != "fm"].groupby(["dataset_label", "model_name"], sort=False)["ri_rmse"].mean()
        lines = []
        for name, part in means.groupby(level=0, sort=False):
            part = part.droplevel(0)
            lines.append(f"on {name} the largest improvement is {part.idxmax()}'s "
                         f"({100 * part.max():.1f}%)" + (f", IFM's is {100 * part['IFM']:.1f}%"
                                                         if "IFM" in part and part.idxmax() != "IFM" else ""))
        paragraphs.append(_under(recipe) + "; ".join(lines) + ".")
    return _markdown("**What we got:** " + " ".join(paragraphs)
                     + " The paper: IFM's FEN brings the largest improvement on both datasets."
                     + still_improving(df), df)


def convergence(summary: pd.DataFrame):
    """Fig. 6: is IFM's best validation RMSE below FM's, and when is it reached?"""
    if summary.empty:
        return _markdown(NOTHING)
    lines = []
    for recipe, name, part in [(r, n, g) for r, rows in by_recipe(summary)
                               for n, g in rows.groupby("dataset_label", sort=False)]:
        models = part.set_index("model")
        if not {"fm", "ifm"} <= set(models.index):
            continue
        fm, ifm = models.loc["fm"], models.loc["ifm"]
        verdict = "lower" if ifm.valid_rmse < fm.valid_rmse else "not lower"
        lines.append(f"{_under(recipe)}on {name} IFM's best validation RMSE is {ifm.valid_rmse:.4f} against FM's "
                     f"{fm.valid_rmse:.4f} ({verdict}, reached at epoch {ifm.best_epoch:g} vs {fm.best_epoch:g})")
    return _markdown("**What we got:** " + ". ".join(line[0].upper() + line[1:] for line in lines) + ". The paper: IFM lower and faster on both datasets.",
                     summary)


RETRAIN_TOLERANCE = 1e-6     # test MAE: a model reloaded from its weights matches its record to float32 rounding


def factors_caption(fs) -> str:
    """The extra caption line of Table 1: which fields, how many candidate instances, mean errors
    (averaged over the seeds shown), and the seeds whose factors come from an IFM trained again
    for its weights that is not the recorded run (another machine's floating-point order changes a
    100-epoch run): its test MAE beside the record's."""
    if fs.table.empty:
        return ""
    fields = ", ".join(f"x{f + 1} = {n}" for f, n in zip(fs.attrs["fields"], fs.attrs["field_names"]))
    parts, retrained = [], []
    for recipe, t in by_recipe(fs.table):
        per_seed = t.drop_duplicates("seed") if "seed" in t else t.iloc[:1]
        over = f", the mean over {seeds_text(per_seed)}" if len(per_seed) > 1 else ""
        parts.append(f"{_under(recipe)}{t.candidates.iloc[0]:,} test instances share feature ids "
                     f"{fs.attrs['common_pair']} in them, and over the whole test set the mean |ŷ − y| is "
                     f"{per_seed.fm_test_mae.mean():.4f} for FM and {per_seed.ifm_test_mae.mean():.4f} for IFM{over}")
        if "record_test_mae" in per_seed:
            differs = (per_seed.ifm_test_mae - per_seed.record_test_mae).abs() > RETRAIN_TOLERANCE
            for _, row in per_seed[differs].iterrows():
                where = "" if recipe is None else f" under recipe `{recipe}`"
                retrained.append(f"seed {row.seed}{where} (test MAE {row.ifm_test_mae:.4f}, the record's "
                                 f"{row.record_test_mae:.4f})")
    note = ""
    if retrained:
        note = (" The factors of " + "; ".join(retrained) + " come from an IFM trained again for its weights "
                "on another machine than the recorded run's, where a different floating-point order makes a "
                "slightly different model; the other pages report the recorded run.")
    return f"Fields {fields}. " + ". ".join(parts) + "." + note


def factors(fs):
    """Table 1: in how many shown instances IFM's error is below FM's, and the factor spread."""
    if fs.table.empty:
        return _markdown(NOTHING)
    first, second = [f + 1 for f in fs.attrs["fields"]]
    parts = []
    for (recipe, t), (_, summary) in zip(by_recipe(fs.table), by_recipe(fs.summary)):
        wins = int((t.ifm_error < t.fm_error).sum())
        spread = summary.set_index("field").loc[[first, second]]
        parts.append(
            f"{_under(recipe)}IFM's error is below FM's in {wins} of our {len(t)} instances (paper: 3 of 3); across "
            f"the test set the factor of x{first} ranges from {spread['p05'].iloc[0]:.2f} to {spread['p95'].iloc[0]:.2f} "
            f"(5th-95th percentile) and that of x{second} from {spread['p05'].iloc[1]:.2f} to "
            f"{spread['p95'].iloc[1]:.2f}")
    return _markdown("**What we got:** " + "; ".join(parts)
                     + ". The paper's three instances show 0.67-3.12 and 0.05-1.19.", fs.table)


def regression(df: pd.DataFrame, sig: pd.DataFrame):
    """Table 3, per recipe: the lowest mean test RMSE per dataset and the count of significant
    comparisons."""
    if df.empty:
        return _markdown(NOTHING)
    paragraphs = []
    for recipe, rows in by_recipe(df):
        means = rows.groupby(["dataset_label", "model_name"], sort=False)["test_rmse"].mean()
        lines = [f"on {name} the lowest mean test RMSE is {part.droplevel(0).idxmin()}'s ({part.min():.4f}"
                 + ("" if part.droplevel(0).idxmin() == "IFM" else
                    f"; IFM {part.droplevel(0)['IFM']:.4f}" if "IFM" in part.droplevel(0) else "; IFM not run yet") + ")"
                 for name, part in means.groupby(level=0, sort=False)]
        mine = sig[sig.recipe == recipe] if recipe is not None and len(sig) else sig
        n_sig = int(mine.significant.sum()) if len(mine) else 0
        n_worse = int(mine.verdict.str.contains("worse").sum()) if len(mine) else 0
        tested = int(mine.p_value.notna().sum()) if len(mine) else 0
        paragraphs.append(f"{_under(recipe)}" + "; ".join(lines) + f". Of {tested} tested comparisons (of {len(mine)}; "
                          f"fewer than 2 shared seeds cannot be tested), IFM is significantly better in {n_sig} and "
                          f"significantly worse in {n_worse} (paired over shared seeds, Holm-corrected).")
    return _markdown("**What we got:** " + " ".join(paragraphs) + " The paper: IFM best everywhere, all significant."
                     + still_improving(df), df)


def rankings(ranks: pd.DataFrame, ov: pd.DataFrame):
    """The overview: does each table rank the models as the paper does, and does each sweep pick
    the paper's best setting?"""
    lines = []
    for r in ranks.itertuples():
        verdict = ("**agrees**" if r.kendall_tau > 0.999 else
                   "puts the same model first but orders the rest differently" if r.same_best else
                   f"**disagrees**: the paper's best is {r.paper_best}, ours is {r.our_best}")
        lines.append(f"- {r.item}, {r.dataset_label}{_recipe_of(r)}, {r.metric} "
                     f"({r.seeds} seed{'s' if r.seeds != 1 else ''}, "
                     f"{r.models} models): our ranking {verdict} (τ = {r.kendall_tau:.2f}).")
    sweeps = ov[ov["item"].str.startswith("Fig. 3") | (ov["item"] == "Fig. 5")]
    for r in sweeps.itertuples():
        same = str(r.paper) == str(r.ours)
        lines.append(f"- {r.item}, {r.dataset_label}{_recipe_of(r)}, {r.quantity}: paper {r.paper}, ours {r.ours} "
                     f"({'the same' if same else '**different**'}; {r.n_seeds} seed{'s' if r.n_seeds != 1 else ''} "
                     "shared by every setting" + ("; too few for a verdict" if r.n_seeds < MIN_SEEDS else "") + ").")
    return _markdown("\n".join(lines) if lines else "No table has both the paper's numbers and ours yet.", ov)


def scaling(df: pd.DataFrame):
    """The data-scaling page: per recipe, IFM's margin over FM (test RMSE) at each training size,
    and the earlier 30% records beside the whole split's runs."""
    if df.empty:
        return _markdown(NOTHING)
    lines = []
    current = df[df.recipe != "legacy"]
    for recipe, rows in by_recipe(current):
        means = rows.groupby(["train_instances", "model"])["test_rmse"].mean().unstack()
        if not {"fm", "ifm"} <= set(means.columns):
            continue
        margin = (means["fm"] - means["ifm"]).dropna()
        share = 100 * margin / means["fm"].loc[margin.index]        # the margin as a share of FM's error
        if len(margin) >= 2:
            grows = bool(margin.is_monotonic_increasing and margin.iloc[-1] > margin.iloc[0])
            lines.append(f"{_under(recipe)}IFM's margin over FM (test RMSE) goes from {margin.iloc[0]:.4f} "
                         f"({share.iloc[0]:.1f}% of FM's) at {margin.index[0]:,} training instances to "
                         f"{margin.iloc[-1]:.4f} ({share.iloc[-1]:.1f}%) at {margin.index[-1]:,}: it "
                         + ("grows with every step of data" if grows else "does not grow steadily with data"))
        elif len(margin):
            lines.append(f"{_under(recipe)}IFM's margin over FM (test RMSE) is {margin.iloc[0]:.4f} at "
                         f"{margin.index[0]:,} training instances (one size run so far)")
    earlier = df[df.recipe == "legacy"].groupby("model_name")["test_rmse"].mean()
    whole = current[current.train_fraction == 1].groupby(["model_name", "recipe"])["test_rmse"].mean()
    if len(earlier):
        lines.append("The earlier records on the 30% pool (recipe `legacy`, their own test set) have test RMSE "
                     + ", ".join(f"{m} {v:.4f}" for m, v in earlier.items())
                     + (", against " + ", ".join(f"{m} {v:.4f} (recipe {r})" for (m, r), v in whole.items())
                        + " on the whole reconstructed split" if len(whole) else ""))
    return _markdown("**What we got:** " + (". ".join(lines) if lines else "no size has both FM and IFM yet")
                     + ". The paper reports only the whole split.", df)
