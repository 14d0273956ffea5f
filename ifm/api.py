"""IFM on your own data: train and save a model bundle, load it, score and explain new rows.

    import ifm
    model = ifm.fit("clicks.csv", target="click", save="my-model")   # later: ifm.load("my-model")
    model.predict(rows)              # click probabilities (CTR) or values (regression), one per row
    model.factors(rows)              # IFM's (or DIFM's) factor m_x,i of every field of every row
    model.score(rows, factors=True)  # predictions, factors and each field's term in the prediction
    table, concentration = ifm.explain(model, rows)   # the paper's Table 1 view, per field

`rows` is a DataFrame with the training columns, or the path of a CSV/TSV or libfm file. The
commands `python -m ifm train --data F --save DIR`, `predict` and `explain` do the same.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ifm.book.owndata import explain, explain_text, factor_figure
from ifm.runs import bundle as bundles
from ifm.models import INPUT_AWARE
from ifm.runs.bundle import Bundle, load

__all__ = ["fit", "load", "explain", "factor_figure", "Bundle"]


def fit(data, *, target: str | None = None, fields=None, model: str = "ifm", recipe: str = "paper",
        task: str | None = None, numeric_bins: int | None = None, numeric=(), min_count: int = 1,
        split_seed: int = 0, save=None, progress: bool = False, **settings) -> Bundle:
    """Train `model` on your file(s) `data` (one, split 8:1:1 by `split_seed`, or three: train,
    valid, test) at the recipe's settings (override any TrainConfig field in `settings`, e.g.
    epochs=20), save the bundle to `save` if given, and return it. `task`: "ctr" or "regression"
    (a 0/1 target is CTR without it); `numeric_bins`: cut columns with decimals into that many
    quantile bins. The returned bundle's `manifest["metrics"]` holds the validation and test
    metrics and `manifest["fm_baseline"]` those of the FM it started from."""
    from ifm.data.userdata import load_files
    from ifm.training.loop import train
    from ifm.training.recipes import paper_config

    if save is not None:
        bundles.check_target(save)
    dataset = load_files(data if isinstance(data, (list, tuple)) else str(data).split(","), target=target,
                         fields=fields, split_seed=split_seed, task=task, numeric_bins=numeric_bins,
                         numeric=numeric, min_count=min_count)
    config = paper_config(dataset.name, model, recipe=recipe, **settings)
    run = train(config, dataset, progress=progress)
    manifest = bundles.manifest_of(run.record, dataset, config)
    if save is not None:
        bundles.save(save, run.model, manifest)
    return Bundle(manifest, run.model.state_dict(), config.device)


# ------------------------------------------------------------------------------ the commands
def _rows(bundle: Bundle, path: str):
    """The rows of `path` for `bundle` (a CSV's table, so that its extra columns can be named)."""
    from ifm.data.userdata import check_paths, read_table

    (file,) = check_paths([path])
    if file.suffix.lower() not in (".csv", ".tsv"):
        return str(file)
    frame = read_table(file)
    frame.attrs["source"] = str(file)
    extra = bundle.extra_columns(frame)
    if extra:
        print(f"note: {file.name}: column{'s' if len(extra) > 1 else ''} {', '.join(extra)} ignored (the model "
              f"reads {', '.join(bundle.encoding.fields)})", file=sys.stderr)
    return frame


def _say_encoding(bundle: Bundle, name: str) -> None:
    encoded = bundle.last
    for kind, counts in (("missing values ('missing' category)", encoded.missing),
                         ("values unseen in training (rare bucket)", encoded.rare)):
        shown = {f: n for f, n in counts.items() if n}
        if shown:
            print(f"note: {name}: {kind}: " + ", ".join(f"{f} {n:,}" for f, n in shown.items()), file=sys.stderr)


def cmd_predict(args) -> int:
    from ifm.runs.args import output_problem
    from ifm.runs.records import atomic_path

    problem = args.out is not None and output_problem(args.out)
    if problem:
        raise ValueError(f"--out: {problem}")
    bundle = load(args.model, args.device)
    rows = _rows(bundle, args.data)
    scores = bundle.score(rows, factors=args.factors)
    name = Path(args.data).name
    what = "click probability" if bundle.task == "ctr" else "predicted value"
    print(f"predict: {len(scores):,} rows of {name}, task {bundle.task} (prediction: {what})", file=sys.stderr)
    _say_encoding(bundle, name)
    if bundle.last.y is not None:
        metrics = bundle.metrics(rows)
        print(f"note: {name} holds the target {bundle.encoding.target}: " +
              ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()), file=sys.stderr)
    if args.out is None:
        scores.to_csv(sys.stdout, index=False, float_format="%.6g")
    else:
        with atomic_path(args.out) as tmp:
            scores.to_csv(tmp, index=False, float_format="%.6g")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def cmd_explain(args) -> int:
    from ifm.runs.args import output_problem

    for flag, path in (("--png", args.png), ("--out", args.out)):
        problem = path is not None and output_problem(path)
        if problem:
            raise ValueError(f"{flag}: {problem}")
    bundle = load(args.model, args.device)
    if bundle.config.model not in INPUT_AWARE:
        raise ValueError(f"--model {args.model}: explain reads the input-aware factors of IFM or DIFM; this bundle "
                         f"is a {bundle.config.model} (an FM's factors are all 1)")
    rows = _rows(bundle, args.data)
    table, concentration = explain(bundle, rows)
    _say_encoding(bundle, Path(args.data).name)
    print(explain_text(table, concentration))
    if args.out is not None:
        table.to_csv(args.out, index=False)
    if args.png is not None:
        factor_figure(bundle, rows, args.png)
        print(f"wrote {args.png}", file=sys.stderr)
    return 0


def add_parsers(sub, device_arg, path_arg) -> None:
    predict = sub.add_parser("predict", help="score new rows with a saved model (train --save DIR)",
                             description="One prediction per row of --data (click probability or value), "
                                         "encoded as the training rows were.")
    explain_cmd = sub.add_parser("explain", help="IFM's (or DIFM's) input-aware factors of new rows, per field "
                                                            "(Table 1 view)",
                                 description="The spread of each field's factor m_x,i over the rows of --data, "
                                             "the fields it varies most for, and a figure.")
    for p in (predict, explain_cmd):
        p.add_argument("--model", required=True, type=path_arg, help="the directory train --save wrote")
        p.add_argument("--data", required=True, type=path_arg,
                       help="a CSV/TSV with the training columns, or a libfm file")
        p.add_argument("--device", default="cpu", type=device_arg, help="cpu, cuda or cuda:N (default cpu)")
    predict.add_argument("--out", type=path_arg, help="write the scores to this CSV (default: standard output)")
    predict.add_argument("--factors", action="store_true",
                         help="also each field's factor m_<field> (IFM, DIFM) and term term_<field> in the prediction "
                              "(logit scale for CTR), and the constant they add to")
    explain_cmd.add_argument("--png", type=path_arg, default="factors.png",
                             help="write the figure here (default: factors.png)")
    explain_cmd.add_argument("--out", type=path_arg, help="also write the per-field table to this CSV")
    predict.set_defaults(func=cmd_predict)
    explain_cmd.set_defaults(func=cmd_explain)


