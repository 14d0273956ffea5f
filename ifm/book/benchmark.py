"""IFM on the open CTR benchmark (Frappe_x1, the BARS protocol): the equal-budget study of
`ifm.runs.tuning` read back from the run cache, our test numbers beside BARS's published ones,
the tuning curves, and the verdict on "IFM beats every baseline under equal tuning", judged by
the rule that judges the paper's claims (`ifm.book.rules.judge_comparison`)."""
from __future__ import annotations

import math

import pandas as pd

from ifm.book.bars import BARS_RUNS, leaderboard
from ifm.book.rows import row_of
from ifm.book.rules import COMPARISON_RULE, MIN_SEEDS, NOT_RUN, TOO_FEW, judge_comparison, matched
from ifm.book.stats import mean_interval, t_interval
from ifm.book.tables import verdict_cell, verdict_colour
from ifm.models import DISPLAY_NAMES
from ifm.runs import tuning

BASELINES = ("lr", "fm", "afm", "nfm", "deepfm", "wide_deep")     # IFM's rivals in the claim
COMPARED = BASELINES + ("ifm",)     # the claim's models; DIFM stands beside the claim, not in it
MODELS = COMPARED + ("difm",)
CLAIM = "IFM beats every baseline under equal tuning"
EVIDENCE = "none: the paper does not run the open benchmark (BARS's Frappe_x1 leaderboard has no IFM)"
# A smoke profile checks the page end to end: 2 trials, 2 seeds, 1 epoch, 5% of the training rows.
SMOKE = {"trials": 2, "seeds": (2021, 2022), "changes": {"epochs": 1}, "data_options": {"train_fraction": 0.05}}
COMMAND = "`python -m ifm tune` (add `--device cuda` on a GPU; `--time-limit 2h` to stop in time)"


def benchmark_study(exp, models=MODELS, trials: int | None = None, seeds=None) -> pd.DataFrame:
    """One row per model and seed of its chosen setting (test AUC and log loss, ...), read (or,
    with train_missing, trained) through `exp`. attrs: each model's `tuning` (StudyRun), the
    `curves` (best validation AUC after each trial), `chosen` settings, `missing` runs, `cost`."""
    smoke = exp.profile.name == "smoke"
    trials = trials or (SMOKE["trials"] if smoke else tuning.TRIALS)
    seeds = tuple(seeds or (SMOKE["seeds"] if smoke else tuning.SEEDS))
    options = SMOKE["data_options"] if smoke else None

    def read(configs):
        return [exp.run(c, tuning.DATASET, data_options=options) for c in configs]

    runs = tuning.run_studies(list(models), read, trials=trials, seeds=seeds,
                              changes=SMOKE["changes"] if smoke else None, log=lambda *a, **k: None)
    rows = [{**row_of(exp, record, tuning.DATASET), "recipe": tuning.RECIPE}
            for run in runs.values() for record in run.finals.values() if record is not None]
    df = pd.DataFrame(rows, columns=None if rows else ["recipe", "dataset", "dataset_label", "model", "model_name",
                                                       "seed", "device", "device_name", "test_auc", "test_logloss"])
    missing, exp.missing = list(dict.fromkeys(exp.missing)), []
    records = [r for run in runs.values() for _, _, r in run.trials] + \
        [r for run in runs.values() for r in run.finals.values() if r is not None]
    unique = {r["cache"]["key"]: r for r in records}
    df.attrs.update(study="benchmark", profile=exp.profile.name, recipe=tuning.RECIPE, seeds=list(seeds), device=exp.device,
                    trials=trials, tuning=runs, missing=missing, complete=not missing, command=COMMAND,
                    curves=_curves(runs), chosen={m: r.chosen for m, r in runs.items()},
                    cost={"runs": len(unique), "seconds": sum(r.get("train_seconds") or 0 for r in unique.values())},
                    profile_differences=(["2 trials per model, 2 seeds, 1 epoch, 5% of the training rows"]
                                         if smoke else []))
    return df


DATA_NOTE = ("Frappe_x1: BARS's exact validation and test files, a reconstructed training file (not the IFM "
             "paper's split, and not BARS's training bytes). Recipe `bars` is the open benchmark's protocol, "
             "not a reading of the IFM paper.")


def space_table() -> pd.DataFrame:
    """Each model's search space: parameter, values, and where they come from."""
    table = tuning.space_table()
    table["model"] = table["model"].map(DISPLAY_NAMES)
    return table.set_index(["model", "parameter"])


def cost_sentence(df: pd.DataFrame) -> str:
    """What the recorded study cost: distinct runs and their training time, and on which devices."""
    cost = df.attrs["cost"]
    devices = "; ".join(dict.fromkeys(f"{d} ({n})" for d, n in zip(df.device, df.device_name))) if len(df) else "none yet"
    return (f"**Cost.** The study's records hold {cost['runs']} distinct runs (trials and chosen settings, a "
            f"setting asked twice trained once) and {cost['seconds'] / 3600:.1f} hours of training, one CPU thread "
            f"or one GPU each (devices of the chosen settings' runs: {devices}).")


def _curves(runs) -> pd.DataFrame:
    """Per model and trial: its validation AUC and the best one so far (a failed trial keeps the best)."""
    rows = []
    for model, run in runs.items():
        best = -math.inf
        for number, _, record in run.trials:
            auc = tuning.valid_auc(record)
            best = max(best, auc) if auc is not None else best
            rows.append({"model": model, "trial": number + 1, "valid_auc": math.nan if auc is None else auc,
                         "best_valid_auc": best if math.isfinite(best) else math.nan})
    return pd.DataFrame(rows, columns=["model", "trial", "valid_auc", "best_valid_auc"])


def results_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per model: our test AUC and log loss (mean ± 95% t half-width over the seeds of its
    chosen setting) beside BARS's, and the difference of the means (ours - BARS)."""
    rows = {}
    for model in df.attrs["tuning"]:
        part = df[df.model == model]
        bars = leaderboard(model)
        rows[DISPLAY_NAMES[model]] = {
            ("", "seeds"): len(part),
            ("test AUC", "ours"): mean_interval(part.test_auc), ("test AUC", "BARS"): _num(bars[0]),
            ("test AUC", "ours − BARS"): _diff(part.test_auc, bars[0]),
            ("test log loss", "ours"): mean_interval(part.test_logloss), ("test log loss", "BARS"): _num(bars[1]),
            ("test log loss", "ours − BARS"): _diff(part.test_logloss, bars[1])}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    return table


def tuning_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per model: the trials recorded, how many distinct settings they are (TPE may ask a
    setting again in a small space; a repeat counts as a trial, read from the cache), the best
    validation AUC they reached, and the setting chosen (once all trials are in)."""
    curves = df.attrs["curves"]
    rows = {}
    for model, run in df.attrs["tuning"].items():
        best = curves[curves.model == model].best_valid_auc.dropna()
        distinct = {tuple(sorted(params.items())) for _, params, _ in run.trials}
        rows[DISPLAY_NAMES[model]] = {"trials": f"{len(run.trials)} of {df.attrs['trials']}",
                                      "distinct settings": len(distinct),
                                      "best validation AUC": f"{best.iloc[-1]:.4f}" if len(best) else "",
                                      "chosen setting": _setting(run.chosen),
                                      "BARS's setting": _setting(tuning.BARS_CHOSEN.get(model)) if model in
                                      tuning.BARS_CHOSEN else "none published"}
    return pd.DataFrame.from_dict(rows, orient="index")


def start_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per model whose space searches `pretrain`: its trials from scratch and from BARS's FM, the
    best validation AUC of each start, and, for a model with input-aware factors, the factors of
    that best trial over the test set (median and 95th percentile; all on one field puts h = 10
    there): what the FM start did and whether the tuning kept it."""
    rows = {}
    for model, run in df.attrs["tuning"].items():
        if "pretrain" not in tuning.SPACES.get(model, {}):
            continue
        row = {}
        for start, label in ((False, "from scratch"), (True, "from BARS's FM")):
            records = [r for _, p, r in run.trials if bool(p.get("pretrain")) == start]
            told = [r for r in records if tuning.valid_auc(r) is not None]
            best = max(told, key=tuning.valid_auc, default=None)
            factors = (best or {}).get("factors_test")
            row[(label, "trials")] = len(records)
            row[(label, "best validation AUC")] = f"{best['valid']['auc']:.4f}" if best else ""
            row[(label, "factors: median, p95")] = f"{factors['median']:.2g}, {factors['p95']:.2g}" if factors else ""
        rows[DISPLAY_NAMES[model]] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    if table.empty:
        return table
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    return table.loc[:, [c for c in table.columns if c[1] != "factors: median, p95" or table[c].any()]]


def start_check_table(df: pd.DataFrame) -> pd.DataFrame:
    """IFM's start check (`tuning.START_RUNS` at `tuning.START_CHECK`, seed 2021), one row per start:
    epochs trained, validation and test AUC of the kept epoch, and the test-set factors (median,
    95th percentile); "not run yet" where the cache lacks the run."""
    run = df.attrs["tuning"].get("ifm")
    rows = {}
    for label in tuning.START_RUNS:
        record = (run.checks if run else {}).get(label)
        if record is None:
            rows[label] = {"epochs": "not run yet"}
            continue
        factors = record.get("factors_test") or {}
        rows[label] = {"epochs": str(record["epochs_run"]),
                       "validation AUC": _num((record.get("valid") or {}).get("auc", math.nan)),
                       "test AUC": _num((record.get("test") or {}).get("auc", math.nan)),
                       "factors: median": f"{factors['median']:.2g}" if factors else "",
                       "factors: p95": f"{factors['p95']:.2g}" if factors else ""}
    return pd.DataFrame.from_dict(rows, orient="index").fillna("")


def _num(value) -> str:
    return "none" if math.isnan(value) else f"{value:.4f}"


def _diff(values, bars) -> str:
    values = pd.Series(values, dtype=float).dropna()
    if not len(values) or math.isnan(bars):
        return ""
    return f"{values.mean() - bars:+.4f}"


def _setting(params) -> str:
    if not params:
        return "not chosen yet"
    # Short, for a table cell: hidden sizes stand alone.
    names = {"l2_embedding": "λ_e ", "learning_rate": "lr ", "fen_sizes": "FEN ", "attention_factor": "att. ",
             "attention_heads": "heads ", "pool_dropout": "pool ", "hidden": "",
             "dropout": "dropout "}
    flags = {"batch_norm": ("BN", "no BN"), "pretrain": ("from BARS's FM", "from scratch")}
    return ", ".join(flags[k][0 if v else 1] if k in flags else f"{names.get(k, k + ' ')}{v}"
                     for k, v in params.items())


def verdict(df: pd.DataFrame):
    """The claim's judgement: IFM's test AUC against each baseline's, paired over the seeds that
    all of them share, Holm-corrected across the baselines (higher is better)."""
    if not set(COMPARED) <= set(df.model):
        return judge_comparison(pd.DataFrame(), "ifm"), pd.DataFrame()
    wide = matched(df[df.model.isin(COMPARED)], "model", "test_auc")
    return judge_comparison(wide, "ifm", list(BASELINES), lower_is_better=False, names=DISPLAY_NAMES), wide


def verdict_row(df: pd.DataFrame) -> dict:
    """The scorecard's row beyond the paper: the claim, the headline numbers, the shared seeds and
    the verdict (recipe `bars`), with each baseline's difference and interval as the details."""
    judgement, wide = verdict(df)
    data = "; ".join(dict.fromkeys(df.dataset_label)) if len(df) else "Frappe_x1 (BARS split, reconstructed)"
    if judgement.verdict == NOT_RUN:
        lacking = [DISPLAY_NAMES[m] for m in COMPARED if m not in set(df.model)]
        ours = (f"{len(COMPARED) - len(lacking)} of {len(COMPARED)} compared models have their chosen setting's runs"
                + (f" ({', '.join(lacking)} not yet)" if lacking else ""))
        details = ours
    else:
        best_rival = max(BASELINES, key=lambda m: wide[m].mean())
        ours = (f"test AUC: IFM {mean_interval(wide['ifm'])}, best baseline {DISPLAY_NAMES[best_rival]} "
                f"{mean_interval(wide[best_rival])}")
        details = (f"IFM − baseline (test AUC): {judgement.reason()} [seeds shared: "
                   + ", ".join(str(s) for s in wide.index) + "]")
    return {"claim": CLAIM, "paper": EVIDENCE, "data": data, "ours": ours, "seeds": len(wide),
            "verdict": judgement.verdict, "details": details}


def verdict_table(df: pd.DataFrame):
    """The row as the scorecard page shows it (one reading: the BARS protocol), laid out and
    coloured as the paper's claims above it (`ifm.book.tables.scorecard_table`)."""
    row = verdict_row(df)
    table = pd.DataFrame([{"claim": row["claim"], "the paper": row["paper"], "data": row["data"],
                           "ours (recipe bars)": row["ours"], "verdict": verdict_cell(row["verdict"], row["seeds"])}])
    return (table.style.hide(axis="index")
            .map(verdict_colour, subset=["verdict"]))


def headline(df: pd.DataFrame) -> str:
    """The page's answer in words, from the numbers: the verdict and where IFM and DIFM stand."""
    judgement, wide = verdict(df)
    trials = df.attrs["trials"]
    if judgement.verdict == NOT_RUN:
        runs = df.attrs["tuning"]
        done = [DISPLAY_NAMES[m] for m, run in runs.items() if run.finals and all(run.finals.values())]
        told = sum(len(run.trials) for run in runs.values())
        return (f"**Not run yet.** The equal-budget study ({trials} trials per model, then the chosen setting "
                f"at {len(df.attrs['seeds'])} seeds) has finished for {len(done)} of {len(runs)} models"
                + (f" ({', '.join(done)})" if done else "") + f"; {told} of the {trials * len(runs)} trials are "
                "recorded. A study asks its next trials only once the earlier ones are told, so the runs listed "
                f"as missing below are the next ones, not all that remain; {COMMAND} goes on where it stopped. "
                "No verdict is given until IFM and every baseline have their runs.")
    rows = judgement.rows
    text = (f"**{CLAIM}: {judgement.verdict}** (Frappe_x1, BARS protocol, {trials} trials per model, "
            f"{len(wide)} shared seeds). IFM's test AUC is {mean_interval(wide['ifm'])}")
    if judgement.verdict == TOO_FEW:
        text += f"; at least {MIN_SEEDS} shared seeds are needed for a verdict."
    else:
        groups = [(f"significantly above {_names(rows[rows.better].rival)}", rows.better.any()),
                  (f"significantly below {_names(rows[rows.worse].rival)}", rows.worse.any()),
                  (f"not separated from {_names(rows[~rows.better & ~rows.worse].rival)}",
                   (~rows.better & ~rows.worse).any())]
        text += ": " + "; ".join(words for words, shown in groups if shown) + " (paired over seeds, Holm-corrected)."
    if "difm" in set(df.model):
        text += f" DIFM, beside it: {mean_interval(df[df.model == 'difm'].test_auc)}."
    return text


def _names(names) -> str:
    """'A', 'A and B', 'A, B and C'."""
    names = list(names)
    return ", ".join(names[:-1]) + (" and " if len(names) > 1 else "") + names[-1] if names else ""


RULE = (COMPARISON_RULE.replace("**How a model-against-model claim is judged.**",
                                "**How the claim is judged**, by the rule of the paper's model-against-model claims.")
        + " Here the metric is test AUC (higher is better), the seeds are those of each model's chosen setting "
          "(2021-2025), and the rivals are the six baselines (LR, FM, AFM, NFM, DeepFM, Wide&Deep); DIFM is "
          "shown beside IFM and is not a rival in the claim.")


def figure(df: pd.DataFrame):
    """Left: test AUC per model, ours (mean, 95% interval) and BARS's. Right: the tuning curves,
    best validation AUC after each trial."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    models = list(df.attrs["tuning"])
    for i, model in enumerate(models):
        values = df[df.model == model].test_auc.dropna()
        mean, half = t_interval(values) if len(values) else (math.nan, math.nan)
        if not math.isnan(mean):
            left.errorbar(mean, i, xerr=0 if math.isnan(half) else half, fmt="o", color="C0",
                          label="ours (mean, 95% CI)" if i == 0 else None)
        if model in BARS_RUNS:
            left.plot(leaderboard(model)[0], i, "x", color="C3", markersize=8,
                      label="BARS (seed 2021)" if model == "lr" else None)
    left.set_yticks(range(len(models)), [DISPLAY_NAMES[m] for m in models])
    left.invert_yaxis()
    left.set_xlabel("test AUC")
    left.set_title("Frappe_x1: ours beside BARS")
    left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=8, frameon=False)
    curves = df.attrs["curves"]
    for model in models:
        part = curves[curves.model == model]
        if len(part):
            right.plot(part.trial, part.best_valid_auc, marker=".", label=DISPLAY_NAMES[model])
    right.set_xlabel("trial")
    right.set_ylabel("best validation AUC so far")
    right.set_title(f"Tuning curves ({df.attrs['trials']} trials per model)")
    right.xaxis.get_major_locator().set_params(integer=True)
    finals = curves.groupby("model").best_valid_auc.last().dropna()
    if not len(finals):
        right.text(0.5, 0.5, "no trial recorded yet", ha="center", va="center", transform=right.transAxes)
    else:        # from the weakest model's final best: earlier, lower points enter from below
        span = max(finals.max() - finals.min(), 0.002)
        right.set_ylim(finals.min() - 0.25 * span, finals.max() + 0.1 * span)
        right.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=4, fontsize=8, frameon=False)
    return fig
