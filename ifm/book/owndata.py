"""The paper's Table 1 view for your own data: how IFM's input-aware factors m_x,i spread over
the rows, field by field (`explain`), and a figure of it (`factor_figure`)."""
from __future__ import annotations

import numpy as np
import pandas as pd

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
    table = pd.DataFrame({"field": fields, "p5": p5, "median": median, "p95": p95,
                          "spread": p95 / np.maximum(p5, 1e-12), "top": top, "term": np.abs(terms).mean(axis=0),
                          "missing": [encoded.missing[f] for f in fields], "rare": [encoded.rare[f] for f in fields]})
    table = table.sort_values("spread", ascending=False, kind="stable").reset_index(drop=True)
    share = m / h
    entropy = -(share * np.log(np.clip(share, 1e-300, None))).sum(axis=1) / np.log(h) if h > 1 else np.ones(len(m))
    concentration = {"rows": int(len(m)), "fields": h, "largest_share_median": float(np.median(m.max(axis=1) / h)),
                     "entropy_median": float(np.median(entropy))}
    return table, concentration


def explain_text(table: pd.DataFrame, concentration: dict) -> str:
    """The summary as the command prints it."""
    shown = table.rename(columns=COLUMNS)
    body = shown.to_string(index=False, float_format=lambda v: f"{v:.3g}",
                           formatters={"largest in rows": "{:.0%}".format})
    return (f"{body}\n\nover {concentration['rows']:,} rows and {concentration['fields']} fields: a row's largest "
            f"factor takes {concentration['largest_share_median']:.0%} of h (median); the entropy of m_x / h is "
            f"{concentration['entropy_median']:.2f} of log h (1: every factor 1, as in an FM; 0: one field takes all)")


def factor_figure(bundle, data, path=None, max_rows: int = 20_000):
    """Box plots of each field's factor over the rows (log scale, most varying field on top),
    the FM's factor 1 marked; saved to `path` when given. Returns the figure."""
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    m = bundle.factors(data)
    if len(m) > max_rows:
        m = m.sample(max_rows, random_state=0)
    order = (m.quantile(0.95) / m.quantile(0.05).clip(lower=1e-12)).sort_values().index.tolist()
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(order) + 1.4))
    ax.boxplot([m[f].clip(lower=1e-6).to_numpy() for f in order], orientation="horizontal", whis=(5, 95), showfliers=False,
               medianprops={"color": "black"})
    ax.set_yticks(range(1, len(order) + 1), order)
    ax.set_xscale("log")
    ax.axvline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("input-aware factor m_x,i (box: quartiles; whiskers: 5th-95th percentile; dashed: FM's 1)")
    ax.set_title(f"IFM's factors over {len(m):,} rows, per field")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return fig
