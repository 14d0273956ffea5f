"""The paper's Table 1 view for your own data: how IFM's input-aware factors m_x,i spread over
the rows, field by field (`explain`), and a figure of it (`factor_figure`)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ifm.models import DISPLAY_NAMES

COLUMNS = {"field": "field", "p5": "m p5", "median": "m median", "p95": "m p95", "spread": "p95 / p5",
           "top": "largest in rows", "term": "mean |term|", "missing": "missing", "rare": "rare"}


def explain(bundle, data) -> tuple[pd.DataFrame, dict]:
    """(per-field summary, per-row concentration) of the factors of `data`'s rows under `bundle`.

    The summary has one row per field, most varying first: the 5th percentile, median and 95th
    percentile of m_x,i over the rows, their ratio (how much the FEN re-weights that field from
    row to row), the share of rows where that field gets the largest factor, the mean absolute
    term of the field in the prediction (logit scale for CTR), and the rows where the field was
    missing or went to the rare bucket. The concentration dict: over the rows, the median share
    of h taken by a row's largest factor, and the median entropy of m_x / h against log h (1: all
    factors 1, as in an FM; 0: one field takes all)."""
    encoded = bundle.encode(data)
    m, terms, _ = bundle.factors_and_terms(encoded)
    m, terms = m.double().numpy(), terms.double().numpy()
    fields = bundle.encoding.fields
    h = len(fields)
    p5, median, p95 = np.percentile(m, [5, 50, 95], axis=0)
    top = np.bincount(m.argmax(axis=1), minlength=h) / len(m)
    table = pd.DataFrame({"field": fields, "p5": p5, "median": median, "p95": p95, "spread": _spread(p5, p95),
                          "top": top, "term": np.abs(terms).mean(axis=0),
                          "missing": [encoded.missing[f] for f in fields], "rare": [encoded.rare[f] for f in fields]})
    table = table.sort_values("spread", ascending=False, kind="stable").reset_index(drop=True)
    concentration = {"rows": int(len(m)), "fields": h, "largest_share_median": None, "entropy_median": None}
    if normalised(m):
        share = m / h
        entropy = -(share * np.log(np.clip(share, 1e-300, None))).sum(axis=1) / np.log(h) if h > 1 else np.ones(len(m))
        concentration.update(largest_share_median=float(np.median(m.max(axis=1) / h)),
                             entropy_median=float(np.median(entropy)))
    return table, concentration


def normalised(m) -> bool:
    """Whether every row's factors are positive and sum to h (IFM's softmax times h, Eq. 5); DIFM's
    m_vec + m_bit are not, and may be zero or negative."""
    m = np.asarray(m, dtype=float)
    return bool((m > 0).all() and np.allclose(m.sum(axis=1), m.shape[1], rtol=1e-4))


def _spread(p5, p95):
    """p95 / p5 where every field's 5th percentile is positive (how many times the factor changes
    from row to row), else p95 - p5 (a factor that crosses 0 has no ratio)."""
    return p95 / p5 if (p5 > 0).all() else p95 - p5


def explain_text(table: pd.DataFrame, concentration: dict) -> str:
    """The summary as the command prints it."""
    ratio = (table["p5"] > 0).all()
    shown = table.rename(columns={**COLUMNS, "spread": COLUMNS["spread"] if ratio else "p95 - p5"})
    body = shown.to_string(index=False, float_format=lambda v: f"{v:.3g}",
                           formatters={"largest in rows": "{:.0%}".format})
    where = f"over {concentration['rows']:,} rows and {concentration['fields']} fields"
    if concentration["largest_share_median"] is None:
        return (f"{body}\n\n{where}: the factors are not normalised to sum to h (DIFM's m_vec + m_bit), so no share "
                "of h or entropy is given")
    return (f"{body}\n\n{where}: a row's largest "
            f"factor takes {concentration['largest_share_median']:.0%} of h (median); the entropy of m_x / h is "
            f"{concentration['entropy_median']:.2f} of log h (1: every factor 1, as in an FM; 0: one field takes all)")


def factor_figure(bundle, data, path=None, max_rows: int = 20_000):
    """Box plots of each field's factor over the rows (log scale, most varying field on top),
    the FM's factor 1 marked; saved to `path` when given. Returns the figure."""
    import matplotlib
    import matplotlib.ticker

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    m = bundle.factors(data)
    if len(m) > max_rows:
        m = m.sample(max_rows, random_state=0)
    positive = bool((m.quantile(0.05) > 0).all())
    order = pd.Series(_spread(m.quantile(0.05).to_numpy(), m.quantile(0.95).to_numpy()),
                      index=m.columns).sort_values().index.tolist()
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(order) + 1.4), layout="tight")
    ax.boxplot([(m[f].clip(lower=1e-6) if positive else m[f]).to_numpy() for f in order], orientation="horizontal",
               whis=(5, 95), showfliers=False, medianprops={"color": "black"})
    ax.set_yticks(range(1, len(order) + 1), order)
    if positive:
        ax.set_xscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.axvline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("input-aware factor m_x,i (box: quartiles; whiskers: 5th-95th percentile; dashed: FM's 1)")
    ax.set_title(f"{DISPLAY_NAMES[bundle.config.model]}'s factors over {len(m):,} rows, per field")
    if path is not None:
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return fig


# ------------------------------------------------------------------------------ the book's page
HEAD = "avazu-sample/avazu_head_10k.csv"
AVAZU_FIELDS = ["C1", "banner_pos", "site_id", "site_domain", "site_category", "app_id", "app_domain",
                "app_category", "device_model", "device_type", "device_conn_type", "C14", "C15", "C16", "C17",
                "C18", "C19", "C20", "C21"]


def avazu_head_files(data_dir, workdir, new_rows: int = 1999) -> tuple[str, str]:
    """The mirror's Avazu head (9,999 rows) as a user's two files, written into `workdir`: the
    rows to train on (the first ones) and `new_rows` new rows to score (the last ones, later in
    the hour). The mirror's file is read, never written."""
    import os
    from pathlib import Path

    root = data_dir or os.environ.get("IFM_DATA_DIR")
    source = Path(root or ".").expanduser() / HEAD
    if not root or not source.is_file():
        raise FileNotFoundError(f"the Avazu head is not at {source}: give data_dir (or IFM_DATA_DIR) the "
                                f"mirror's directory, which holds {HEAD}")
    lines = source.read_text().splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    if not 10 < new_rows < len(rows) - 10:
        raise ValueError(f"new_rows must leave at least 10 rows on each side of the {len(rows):,} rows, got {new_rows}")
    train, new = Path(workdir) / "train.csv", Path(workdir) / "new.csv"
    train.write_text(header + "".join(rows[:-new_rows]))
    new.write_text(header + "".join(rows[-new_rows:]))
    return str(train), str(new)


def baseline_table(bundle) -> pd.DataFrame:
    """The model beside the FM it started from, on the validation and test rows of its training file."""
    m = bundle.manifest
    rows = [("IFM" if m["model"] == "ifm" else m["model"].upper(), m["metrics"])]
    if m.get("fm_baseline"):
        rows.append(("FM it started from", m["fm_baseline"]))
    metric = ("auc", "logloss") if m["task"] == "binary" else ("rmse", "mae")
    return pd.DataFrame([{"model": name, **{f"{split} {k}": round(r[split][k], 4) for split in ("valid", "test")
                                            for k in metric}} for name, r in rows]).set_index("model")


def preview(bundle, data, rows: int = 5) -> pd.DataFrame:
    """The first `rows` scored rows: the prediction, and the fields with the largest and the
    smallest factor in each."""
    scores = bundle.score(data, factors=True).head(rows)
    m = scores[[f"m_{f}" for f in bundle.encoding.fields]]
    m.columns = bundle.encoding.fields
    return pd.DataFrame({"prediction": scores["prediction"].round(4),
                         "largest factor": [f"{f} {m.loc[i, f]:.2f}" for i, f in m.idxmax(axis=1).items()],
                         "smallest factor": [f"{f} {m.loc[i, f]:.2f}" for i, f in m.idxmin(axis=1).items()]})


def explain_table(table: pd.DataFrame) -> pd.DataFrame:
    """`explain`'s table with the command's column names and the page's precision."""
    shown = table.rename(columns=COLUMNS).set_index("field")
    return shown.round({"m p5": 2, "m median": 2, "m p95": 2, "p95 / p5": 2, "mean |term|": 3}).assign(
        **{"largest in rows": (shown["largest in rows"] * 100).round(0).astype(int).astype(str) + "%"})


def baseline_sentence(bundle):
    """In words: did the model beat the FM it started from on the test rows of its training file?"""
    from IPython.display import Markdown

    m = bundle.manifest
    fm = m.get("fm_baseline")
    if not fm:
        return Markdown(f"This {m['model'].upper()} started from no FM: there is no baseline to compare with.")
    metric, better = ("auc", max) if m["task"] == "binary" else ("rmse", min)
    ours, theirs = m["metrics"]["test"][metric], fm["test"][metric]
    helped = better(ours, theirs) == ours and ours != theirs
    return Markdown(f"**On these rows, IFM {'beats' if helped else 'does not beat'} the FM it started from**: test "
                    f"{metric.upper()} {ours:.4f} against {theirs:.4f} (validation {m['metrics']['valid'][metric]:.4f} "
                    f"against {fm['valid'][metric]:.4f}). One seed on a 10,000-row sample: a demonstration of the "
                    "pipeline and of the comparison `train` prints, not a finding about IFM.")


def concentration_sentence(concentration: dict):
    """How concentrated the rows' factors are, in words (the measure issue 21 asks of Table 1)."""
    from IPython.display import Markdown

    c = concentration
    return Markdown(f"Over the {c['rows']:,} new rows, a row's largest factor takes **{c['largest_share_median']:.0%} "
                    f"of h** (median; {1 / c['fields']:.0%} if every factor were 1, 100% if one field took all), and "
                    f"the entropy of m<sub>x</sub>/h is **{c['entropy_median']:.2f}** of log h (1: every factor 1, as "
                    "in an FM; 0: one field takes all).")
