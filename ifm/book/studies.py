"""One function per paper item (Figs. 3-6, Tables 2-4; Table 1 is in `ifm.book.factors`): each takes a runner (`ifm.runs.experiment.
Experiment`), asks it for the runs the item needs, and returns a tidy frame, one row per run
(or per epoch, or per instance), each row carrying the profile, recipe, data, device and seed.
"""
from __future__ import annotations

import functools
import math

import pandas as pd

from ifm.book.rows import num, row_of
from ifm.runs.experiment import Experiment
from ifm.data.registry import DATASETS
from ifm.book.stats import panels, t_interval


def seeds_of(exp: Experiment, default: tuple) -> tuple:
    return exp.seeds if exp.seeds is not None else tuple(default)


# The columns of a study with no runs yet, so that grouping and filtering still work on it.
EMPTY_COLUMNS = ["recipe", "dataset", "dataset_label", "model", "model_name", "seed", "data_note", "device", "device_name"]


def _frame(rows, exp: Experiment, study: str, seeds) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=None if rows else EMPTY_COLUMNS)
    df.insert(0, "study", study)
    df.attrs["missing"], exp.missing = exp.missing, []
    df["seeds"] = ",".join(str(s) for s in seeds)
    df["n_seeds"] = len(seeds)
    df.attrs.update(study=study, complete=not df.attrs["missing"], profile=exp.profile.name, recipe=exp.profile.recipe,
                    device=exp.device, seeds=list(seeds),
                    profile_differences=exp.profile.differences(), report=exp.report(study))
    exp.say(df.attrs["report"])
    return df


def per_recipe(study):
    """Run `study` once per recipe of a runner that holds several (``recipe="paper,code"``) and
    stack the results; every row already names its recipe. A one-recipe runner runs it as is."""
    @functools.wraps(study)
    def run(exp: Experiment, *args, **kwargs):
        if len(exp.recipes) == 1:
            return study(exp, *args, **kwargs)
        parts = [study(exp.for_recipe(recipe), *args, **kwargs) for recipe in exp.recipes]
        if hasattr(parts[0], "joined"):       # a study of several frames (Table 1) stacks itself
            return parts[0].joined(parts, _joined_attrs([p.attrs for p in parts]))
        out = pd.concat(parts, ignore_index=True)
        out.attrs.update(_joined_attrs([p.attrs for p in parts]))
        return out
    return run


def _joined_attrs(parts: list[dict]) -> dict:
    """One study's attrs over its recipes: missing runs listed together, complete when all are."""
    attrs = dict(parts[0])
    attrs.update(recipe=", ".join(p.get("recipe", "?") for p in parts),
                 missing=[m for p in parts for m in p.get("missing", [])],
                 complete=all(p.get("complete", True) for p in parts),
                 report=" | ".join(p.get("report", "") for p in parts if p.get("report")))
    return attrs


# --------------------------------------------------------------------------- Figs. 3-5: FEN sweeps
def _fen_sweep(exp: Experiment, study: str, option: str, values) -> pd.DataFrame:
    seeds = seeds_of(exp, exp.profile.sweep_seeds)
    rows = []
    for name in exp.datasets or exp.profile.datasets:
        for value in values:
            for seed in seeds:
                config = exp.config(name, "ifm", seed, model_options={option: value})
                record = exp.run(config, name)
                if record is None:
                    continue
                rows.append(row_of(exp, record, name, **{
                    "fen_layers": config.model_options["fen_layers"], "dropout": config.model_options["dropout"],
                    "activation": config.model_options["activation"]}))
    df = _frame(rows, exp, study, seeds)
    df.attrs["grid"] = list(values)
    return df


@per_recipe
def depth_study(exp: Experiment) -> pd.DataFrame:
    """Fig. 3a / 4a: validation RMSE and MAE of IFM vs the number of FEN hidden layers
    (dropout and activation held at the paper's best for the dataset)."""
    return _fen_sweep(exp, "depth", "fen_layers", [int(v) for v in exp.profile.depth_grid])


@per_recipe
def dropout_study(exp: Experiment) -> pd.DataFrame:
    """Fig. 3b / 4b: validation RMSE and MAE vs the FEN dropout ratio (depth at the paper's best)."""
    return _fen_sweep(exp, "dropout", "dropout", [float(v) for v in exp.profile.dropout_grid])


@per_recipe
def activation_study(exp: Experiment) -> pd.DataFrame:
    """Fig. 5: validation RMSE and MAE for the FEN activation functions."""
    return _fen_sweep(exp, "activation", "activation", list(exp.profile.activation_grid))


# --------------------------------------------------------------------------- Fig. 6
@per_recipe
def convergence_study(exp: Experiment, *, pretrain_fm: bool | None = None) -> pd.DataFrame:
    """Fig. 6: per-epoch training and validation error, IFM vs FM: Table 3's runs of IFM and the FM
    it is pre-trained from (no runs of its own).

    One row per (dataset, model, seed, epoch). The training error is the whole training set's,
    scored with dropout off after each epoch, where a run recorded it (``eval_train=True``), else
    the running RMSE over the epoch's batches (dropout on), as the column ``train_error`` says.
    IFM starts from its FM pre-training, as in the paper's setup, unless ``pretrain_fm=False``.
    """
    seeds = seeds_of(exp, exp.profile.seeds)
    rows = []
    for name in exp.datasets or exp.profile.datasets:
        for model in ("fm", "ifm"):
            for seed in seeds:
                changes = {"pretrain_fm": pretrain_fm} if model == "ifm" and pretrain_fm is not None else {}
                config = exp.config(name, model, seed, **changes)
                record = exp.run(config, name)
                if record is None:
                    continue
                base = row_of(exp, record, name, pretrained=config.uses_pretraining(),
                               train_error="whole training set" if record["config"].get("eval_train")
                               else "running over the epoch, dropout on")
                for epoch in record["history"]:
                    rows.append({**base, **{k: num(v) if k != "epoch" else v for k, v in epoch.items()},
                                 "train_rmse": train_rmse(epoch, record["config"], record["dataset"]["task"])})
    return _frame(rows, exp, "convergence", seeds)


def train_rmse(epoch: dict, config: dict, task: str = "regression") -> float:
    """An epoch's training RMSE: as recorded, else (regression) from its mean training loss, which
    is ``loss_scale`` times the mean squared error (records before the running RMSE was kept under
    every loss scale); NaN for a CTR task, whose loss is a log loss."""
    if epoch.get("train_rmse") is not None:
        return num(epoch["train_rmse"])
    if task != "regression":
        return float("nan")
    return math.sqrt(epoch["train_loss"] / config.get("loss_scale", 1.0))


# --------------------------------------------------------------------------- data scaling
SCALING_FRACTIONS = (0.125, 0.25, 0.5, 1.0)
SCALING_MODELS = ("fm", "ifm", "nfm")


def scaling_study(exp: Experiment, fractions=SCALING_FRACTIONS, models=SCALING_MODELS) -> pd.DataFrame:
    """Test error against the size of the training set: each model on seeded shares of the train
    split (validation and test unchanged; the whole split's runs are Table 3's). A share is of the
    training set the profile uses (the smoke profile's is itself a share of the split). One row per
    (dataset, fraction, model, seed, recipe); Frappe unless the runner names datasets. When the
    book reads its records, the earlier records on a 30% pool of Frappe (recipe legacy) join as
    points of their own (`earlier_pool_rows`)."""
    df = _scaling_runs(exp, fractions, models)
    earlier = earlier_pool_rows(exp, models)
    if not earlier:
        return df
    out = pd.concat([df, pd.DataFrame(earlier)], ignore_index=True)
    out.attrs.update(df.attrs, recipe=df.attrs["recipe"] + ", legacy (the 30% pool's points)")
    return out


@per_recipe
def _scaling_runs(exp: Experiment, fractions, models) -> pd.DataFrame:
    seeds = seeds_of(exp, exp.profile.seeds)
    rows = []
    for name in exp.datasets or ("frappe",):
        base = exp.data_options(name).get("train_fraction", 1)
        for fraction in fractions:
            options = {} if fraction == 1 else {"train_fraction": base * fraction}
            for model in models:
                for seed in seeds:
                    record = exp.run(exp.config(name, model, seed), name, data_options=options)
                    if record is not None:
                        rows.append(row_of(exp, record, name, train_fraction=fraction))
    return _frame(rows, exp, "scaling", seeds)


def earlier_pool_rows(exp: Experiment, models) -> list[dict]:
    """The book's earlier records of `models` (recipe legacy: 30% of Frappe re-split 8:1:1, its own
    validation and test), as scaling rows at that pool's training size; none when training."""
    if exp.train_missing or "legacy" in exp.recipes:
        return []
    legacy = exp.for_recipe("legacy")
    rows = []
    for name in exp.datasets or ("frappe",):
        for model in models:
            for seed in seeds_of(exp, exp.profile.seeds):
                record = legacy.run(legacy.config(name, model, seed), name)
                if record is not None and record["dataset"]["provenance"].get("fraction_of_paper"):
                    row = row_of(legacy, record, name)
                    rows.append({**row, "study": "scaling", "train_fraction": row["data_fraction"],
                                 "seeds": "", "n_seeds": 1})
    return rows


# --------------------------------------------------------------------------- Tables 2-4
@per_recipe
def component_study(exp: Experiment) -> pd.DataFrame:
    """Table 2: initialise each model from an FM with the embeddings (w0, w, v) frozen, train only
    its extra component; RI = (RMSE_FM - RMSE_model) / RMSE_FM on test, against the very FM it was
    initialised from (under recipe code these differ: IFM's is FM.py's, DeepFM's a plain FM...).
    One row per (dataset, model, seed), and one per reference FM (RI 0)."""
    seeds = seeds_of(exp, exp.profile.seeds)
    rows = []
    for name in exp.datasets or exp.profile.datasets:
        for seed in seeds:
            references, seed_rows = {}, []
            for model in exp.profile.component_models:
                config = exp.config(name, model, seed, pretrain_fm=True, freeze_embeddings=True)
                fm_config = config.pretrain_config()
                fm = exp.run(fm_config, name, save_state=True)
                record = exp.run(config, name)
                if record is None or fm is None:
                    continue
                fm_rmse, fm_mae = num(fm["test"]["rmse"]), num(fm["test"]["mae"])
                references[fm["cache"]["key"]] = row_of(exp, fm, name, component="-", fm_test_rmse=fm_rmse,
                                                         ri_rmse=0.0, ri_mae=0.0, fm_key=fm["cache"]["key"])
                # Only w0, w and v are handed over (fm_state_of): an FM trained through batch norm on
                # its pooled vector (code/FM.py) reaches the frozen model without that batch norm.
                fm_batch_norm = bool(fm_config.model_options.get("batch_norm"))
                row = row_of(exp, record, name, component=COMPONENTS.get(model, "?"), fm_test_rmse=fm_rmse,
                              fm_key=fm["cache"]["key"], fm_batch_norm=fm_batch_norm)
                row["ri_rmse"] = (fm_rmse - row["test_rmse"]) / fm_rmse
                row["ri_mae"] = (fm_mae - row["test_mae"]) / fm_mae
                seed_rows.append(row)
            rows.extend(references.values())    # each FM row only beside what it is the reference of
            rows.extend(seed_rows)
    return _frame(rows, exp, "components", seeds)


COMPONENTS = {"fm": "-", "deepfm": "DNN", "nfm": "DNN", "afm": "Attention", "ifm": "FEN", "wide_deep": "DNN"}


@per_recipe
def regression_study(exp: Experiment) -> pd.DataFrame:
    """Table 3: test MAE and RMSE of each model; one row per (dataset, model, seed)."""
    seeds = seeds_of(exp, exp.profile.seeds)
    records = [(name, exp.run(exp.config(name, model, seed), name))
               for name in exp.datasets or exp.profile.datasets
               for model in exp.profile.regression_models for seed in seeds]
    rows = [row_of(exp, record, name) for name, record in records if record is not None]
    return _frame(rows, exp, "regression", seeds)


@per_recipe
def ctr_study(exp: Experiment) -> pd.DataFrame:
    """Table 4: test AUC (in %) and logloss on Avazu; one row per (model, seed). On the CTR
    datasets among the runner's datasets, else the profile's (the mirror's Avazu is a 9,999-row
    head: its numbers check the pipeline and say nothing about the models)."""
    seeds = seeds_of(exp, exp.profile.seeds)
    rows = []
    chosen = [d for d in exp.datasets or () if DATASETS[d]["task"] == "binary"]
    for name in chosen or exp.profile.ctr_datasets:
        for model in exp.profile.ctr_models:
            for seed in seeds:
                record = exp.run(exp.config(name, model, seed), name)
                if record is None:
                    continue
                row = row_of(exp, record, name)
                row["test_auc_pct"] = 100 * row.get("test_auc", float("nan"))
                rows.append(row)
    return _frame(rows, exp, "ctr", seeds)


def convergence_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, model): best validation RMSE/MAE (mean ± 95% half-width over seeds), the
    epoch it was reached and the training RMSE there, from `convergence_study` rows."""
    rows = []
    by = panels(df, "dataset", "model")
    for keys, group in df.groupby(by, sort=False):
        where = dict(zip(by, keys))
        best = group.loc[group.groupby("seed")["valid_rmse"].idxmin().dropna()]
        row = {"recipe": where.get("recipe"), "dataset": where["dataset"], "dataset_label": group.dataset_label.iloc[0],
               "model": where["model"], "model_name": group.model_name.iloc[0], "n_seeds": group.seed.nunique(),
               "train_error": "; ".join(dict.fromkeys(group.get("train_error", pd.Series(["?"])))),
               "epochs_run": int(group.epoch.max()), "best_epoch": float(best.epoch.mean())}
        for col in ("valid_rmse", "valid_mae", "train_rmse", "train_mae"):
            if col in best:
                row[col], row[f"{col}_half"] = t_interval(best[col])
        row["first_epoch_valid_rmse"] = float(group[group.epoch == 1].valid_rmse.mean())
        rows.append(row)
    out = pd.DataFrame(rows, columns=None if rows else ["recipe", "dataset", "dataset_label", "model", "model_name",
                                                        "n_seeds"])
    out.attrs.update(df.attrs)
    return out
