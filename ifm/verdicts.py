"""The "What we got" sentences of the book's pages: each turns a study's tidy frame into one
paragraph of Markdown, so that no notebook holds logic and every verdict is tested
(tests/test_verdicts.py)."""
from __future__ import annotations

import pandas as pd

ALPHA = 0.05


def _markdown(text: str):
    from IPython.display import Markdown
    return Markdown(text)


def best_setting(table: pd.DataFrame, what: str):
    """One sentence per dataset: does our best setting match the paper's, and if not, is our best
    measurably better than the paper's best (paired t-test over seeds, alpha 0.05)?"""
    rmse_col = [c for c in table.columns if c.startswith("our best by")][0]
    parts = []
    for name, row in table.iterrows():
        ours, paper, p = row[rmse_col], row["paper's best"], row["p (ours vs paper's best)"]
        if str(ours) == str(paper):
            parts.append(f"on {name} our best {what} (by validation RMSE) is **{ours}**, the same as the paper's")
            continue
        at_paper, at_ours = (row[c] for c in table.columns if c.startswith("our validation RMSE at"))
        sentence = (f"on {name} our best {what} (by validation RMSE) is **{ours}**; the paper's is {paper} "
                    f"(validation RMSE {at_ours} vs {at_paper})")
        if p == "n/a":
            sentence += f" (with {row['seeds']} seed(s) per setting no test is possible)"
        elif p < ALPHA:
            sentence += (f", and ours is better by more than seed noise (paired t-test over {row['seeds']} seeds, "
                         f"p = {p:.2g})")
        else:
            sentence += (f", but the two are within seed noise (paired t-test over {row['seeds']} seeds, "
                         f"p = {p:.2g}): our sweep does not contradict the paper's choice")
        parts.append(sentence)
    return _markdown("**What we got:** " + "; ".join(parts) + ".")


def components(df: pd.DataFrame):
    """Table 2: which component improves most over the frozen FM, per dataset."""
    means = df[df.model != "fm"].groupby(["dataset_label", "model_name"], sort=False)["ri_rmse"].mean()
    lines = []
    for name, part in means.groupby(level=0, sort=False):
        part = part.droplevel(0)
        lines.append(f"on {name} the largest improvement is {part.idxmax()}'s ({100 * part.max():.1f}%)"
                     + (f", IFM's is {100 * part['IFM']:.1f}%" if "IFM" in part and part.idxmax() != "IFM" else ""))
    return _markdown("**What we got:** " + "; ".join(lines)
                     + ". The paper: IFM's FEN brings the largest improvement on both datasets.")


def convergence(summary: pd.DataFrame):
    """Fig. 6: is IFM's best validation RMSE below FM's, and when is it reached?"""
    lines = []
    for name, part in summary.groupby("dataset_label", sort=False):
        fm, ifm = part.set_index("model").loc["fm"], part.set_index("model").loc["ifm"]
        verdict = "lower" if ifm.valid_rmse < fm.valid_rmse else "not lower"
        lines.append(f"on {name} IFM's best validation RMSE is {ifm.valid_rmse:.4f} against FM's "
                     f"{fm.valid_rmse:.4f} ({verdict}, reached at epoch {ifm.best_epoch:g} vs {fm.best_epoch:g})")
    return _markdown("**What we got:** " + "; ".join(lines) + ". The paper: IFM lower and faster on both datasets.")


def factors_caption(fs) -> str:
    """The extra caption line of Table 1: which fields, how many candidate instances, mean errors."""
    t = fs.table
    fields = ", ".join(f"x{f + 1} = {n}" for f, n in zip(fs.attrs["fields"], fs.attrs["field_names"]))
    return (f"Fields {fields}; {t.candidates.iloc[0]:,} test instances share feature ids "
            f"{fs.attrs['common_pair']} in them. Over the whole test set the mean |ŷ − y| is "
            f"{t.fm_test_mae.iloc[0]:.4f} for FM and {t.ifm_test_mae.iloc[0]:.4f} for IFM.")


def factors(fs):
    """Table 1: in how many shown instances IFM's error is below FM's, and the factor spread."""
    t = fs.table
    wins = int((t.ifm_error < t.fm_error).sum())
    spread = fs.summary.set_index("field").loc[[f + 1 for f in fs.attrs["fields"]]]
    return _markdown(
        f"**What we got:** IFM's error is below FM's in {wins} of our {len(t)} instances (paper: 3 of 3). "
        f"Across the test set the factor of x3 ranges from {spread['p05'].iloc[0]:.2f} to {spread['p95'].iloc[0]:.2f} "
        f"(5th-95th percentile) and that of x9 from {spread['p05'].iloc[1]:.2f} to {spread['p95'].iloc[1]:.2f}; "
        "the paper's three instances show 0.67-3.12 and 0.05-1.19.")


def regression(df: pd.DataFrame, sig: pd.DataFrame):
    """Table 3: the lowest mean test RMSE per dataset and the count of significant comparisons."""
    means = df.groupby(["dataset_label", "model_name"], sort=False)["test_rmse"].mean()
    lines = []
    for name, part in means.groupby(level=0, sort=False):
        part = part.droplevel(0)
        lines.append(f"on {name} the lowest mean test RMSE is {part.idxmin()}'s ({part.min():.4f}; "
                     f"IFM {part.get('IFM', float('nan')):.4f})")
    n_sig = int(sig.significant.sum()) if len(sig) else 0
    n_worse = int(sig.verdict.str.contains("worse").sum()) if len(sig) else 0
    tested = int(sig.p_value.notna().sum()) if len(sig) else 0
    return _markdown(
        "**What we got:** " + "; ".join(lines) + f". Of {tested} tested comparisons (of {len(sig)}; fewer than 2 "
        f"seeds cannot be tested), IFM is significantly better in {n_sig} and significantly worse in {n_worse}. "
        "The paper: IFM best everywhere, all significant.")


def rankings(ranks: pd.DataFrame, ov: pd.DataFrame):
    """The overview: does each table rank the models as the paper does, and does each sweep pick
    the paper's best setting?"""
    lines = []
    for r in ranks.itertuples():
        verdict = ("**agrees**" if r.kendall_tau > 0.999 else
                   "puts the same model first but orders the rest differently" if r.same_best else
                   f"**disagrees**: the paper's best is {r.paper_best}, ours is {r.our_best}")
        lines.append(f"- {r.item}, {r.dataset_label}, {r.metric} ({r.seeds} seed{'s' if r.seeds != 1 else ''}, "
                     f"{r.models} models): our ranking {verdict} (τ = {r.kendall_tau:.2f}).")
    sweeps = ov[ov["item"].str.startswith("Fig. 3") | (ov["item"] == "Fig. 5")]
    for r in sweeps.itertuples():
        same = str(r.paper) == str(r.ours)
        lines.append(f"- {r.item}, {r.dataset_label}, {r.quantity}: paper {r.paper}, ours {r.ours} "
                     f"({'the same' if same else '**different**'}; {r.n_seeds} seed{'s' if r.n_seeds != 1 else ''} "
                     "per setting).")
    return _markdown("\n".join(lines) if lines else "No table has both the paper's numbers and ours yet.")
