"""The words the book's figures and tables share: metric names, which seeds and devices made the
numbers, the one-line stamp of a figure, number formats, and Markdown paragraphs."""
from __future__ import annotations

import math

METRIC_LABELS = {"rmse": "RMSE", "mae": "MAE", "auc": "AUC", "logloss": "log loss", "auc_pct": "AUC (%)"}


def ours_label(recipe) -> str:
    return "ours" if recipe is None else f"ours, recipe {recipe}"


def metric_label(column: str) -> str:
    split, _, metric = column.partition("_")
    names = {"valid": "validation", "test": "test", "train": "training"}
    return f"{names.get(split, split)} {METRIC_LABELS.get(metric, metric)}"


def seeds_text(df) -> str:
    """The seeds behind the numbers shown (those of the rows), and those asked for when more."""
    asked = list(df.attrs.get("seeds") or [])
    seeds = sorted(df["seed"].unique().tolist()) if "seed" in df and len(df) else asked
    text = f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''} ({', '.join(str(s) for s in seeds)})"
    if "seed" in df and set(asked) - set(seeds):
        text += f" of the {len(asked)} asked for ({', '.join(str(s) for s in asked)})"
    return text


def devices_text(df) -> str:
    if "device" not in df or not len(df):
        return str(df.attrs.get("device", "?"))
    if "device_name" not in df:   # the overview: one "device (name)" text per row
        return "; ".join(sorted({d for d in df.device if d}))
    pairs = df[["device", "device_name"]].drop_duplicates().itertuples(index=False)
    return "; ".join(f"{d} ({n})" for d, n in pairs)


SMOKE_TITLE = "SMOKE CHECK, not a reproduction | "


def stamp(df) -> str:
    """One line for a figure title: profile, recipe, device, seeds (a smoke re-run says it is one)."""
    return ((SMOKE_TITLE if df.attrs.get("profile") == "smoke" else "")
            + f"ours: profile {df.attrs.get('profile', '?')}, recipe {df.attrs.get('recipe', '?')} | "
            f"{devices_text(df)} | {seeds_text(df)}")


LEGACY_NOTE = ("Recipe `legacy` marks the book's earlier records, which predate the two recipes and the "
               "paper's Frappe split: 30% of Frappe (NFM's validation and test files) re-split 8:1:1, with its "
               "own validation and test sets, trained with the settings of recipe `legacy` (Adagrad "
               "accumulator 0.1, stop after 5 epochs without a new best, NFM's two dropouts swapped). They "
               "stay in the book only as the smallest point of the data-scaling study.")


def nothing(what: str = "figure"):
    """What a figure or table shows when none of its runs are in the records."""
    return markdown(f"*(no run of this {what} is in the records yet: see the note above)*")


def fmt(mean: float, half: float = float("nan"), digits: int = 4) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    if half is None or math.isnan(half):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def datasets_in(df):
    return list(dict.fromkeys(df["dataset"].tolist()))


def label_of(df, dataset):
    return df.loc[df.dataset == dataset, "dataset_label"].iloc[0]


def markdown(text: str):
    """A paragraph of Markdown in a page (the rules and notes the library writes)."""
    from IPython.display import Markdown
    return Markdown(text)
