"""`python -m ifm ...`: inspect data, train one model, benchmark training speed.

Every input is checked before any work starts (each command's --help gives the accepted
ranges); a bad one ends the command with a one-line error and exit code 2."""
from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path

import torch

from ifm.runs.args import LIMITS, device_arg, number_arg, output_problem, path_arg
from ifm.models import DISPLAY_NAMES, MODELS
from ifm.models.layers import fm_state_of
from ifm.data.registry import DATASET_NAMES
from ifm.training.recipes import BENCHMARK, RECIPES


def _data_args(parser):
    parser.add_argument("--data-dir", type=path_arg,
                        help="directory laid out like the local mirror (default: $IFM_DATA_DIR, "
                             "then the cache, then the public download)")
    parser.add_argument("--split-seed", type=number_arg("split_seed"), default=0,
                        help=f"seed of the random 8:1:1 split where one is made: {LIMITS['split_seed']}")
    parser.add_argument("--no-download", action="store_true", help="never go to the network")


# The numbers `train` takes: flag, TrainConfig field or model option, what it sets.
TRAIN_NUMBERS = (
    ("--epochs", "epochs", "at most this many epochs"),
    ("--seed", "seed", "the model's seed (initialisation, dropout, batch order)"),
    ("--embedding-size", "embedding_size", "the embedding size k"),
    ("--batch-size", "batch_size", "instances per optimiser step"),
    ("--patience", "patience", "stop after this many epochs without a new best validation score "
                               "(instead of the recipes' rule: after 4 rises in a row)"),
    ("--lr", "learning_rate", "the learning rate"),
    ("--fen-layers", "fen_layers", "the FEN's hidden layers"),
    ("--dropout", "dropout", "the dropout rate of the FEN (IFM), the hidden layers (NFM), the pooled "
                             "vector (AFM) or the MLP (DeepFM, Wide&Deep)"),
)
MODEL_OPTIONS = ("fen_layers", "dropout", "activation")


def _takes(model: str, option: str) -> bool:
    return option in inspect.signature(MODELS[model]).parameters


def _check_train_args(args) -> None:
    """Refuse, before any work, flags the model would ignore and outputs that could not be written."""
    from ifm.models import PRETRAINED_WITH_FM

    for option in MODEL_OPTIONS:
        if getattr(args, option) is not None and not _takes(args.model, option):
            takers = ", ".join(m for m in MODELS if _takes(m, option))
            raise ValueError(f"--{option.replace('_', '-')} does not apply to --model {args.model} "
                             f"(it applies to {takers})")
    if args.init_fm is not None:
        if args.no_pretrain or args.model not in PRETRAINED_WITH_FM:
            raise ValueError(f"--init-fm: --model {args.model}{' with --no-pretrain' if args.no_pretrain else ''} "
                             f"starts from no FM (those that do: {', '.join(PRETRAINED_WITH_FM)})")
        if not Path(args.init_fm).is_file():
            raise FileNotFoundError(f"--init-fm {args.init_fm}: no such file")
    for flag, path in (("--out", args.out), ("--save-state", args.save_state)):
        problem = path is not None and output_problem(path)
        if problem:
            raise ValueError(f"{flag}: {problem}")
    if args.out is not None and args.save_state is not None and Path(args.out).resolve() == Path(args.save_state).resolve():
        raise ValueError("--out and --save-state name the same file")


def _read_fm_state(path: str) -> dict:
    """w0, w and v (the `linear.*` and `embedding.*` tensors) of the state saved at `path`."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:   # torch raises many kinds (pickle, zip, EOF...) for a file that is no state
        raise ValueError(f"--init-fm {path}: not a saved model state ({type(err).__name__})") from None
    fm = fm_state_of(state) if isinstance(state, dict) else {}
    if not fm:
        raise ValueError(f"--init-fm {path}: not an FM state (no linear.* and embedding.* tensors)")
    return fm


def _check_fm_shapes(state: dict, path: str, dataset, config) -> None:
    from ifm.models import FM

    wanted = FM(dataset.num_features, dataset.num_fields, config.embedding_size).fm_state()
    wrong = [f"{k} {list(state[k].shape) if k in state else 'missing'} (needs {list(v.shape)})"
             for k, v in wanted.items() if k not in state or state[k].shape != v.shape]
    if wrong:
        raise ValueError(f"--init-fm {path}: does not fit {dataset.name} at embedding size "
                         f"{config.embedding_size}: {'; '.join(wrong)}")


def _load(args):
    if getattr(args, "data", None):
        from ifm.data.userdata import load_files
        if args.dataset:
            raise ValueError("give --dataset (a registered dataset) or --data (your files), not both")
        fields = args.fields.split(",") if args.fields else None
        return load_files(args.data.split(","), target=args.target, fields=fields, split_seed=args.split_seed,
                          task=args.task, numeric_bins=args.numeric_bins, min_count=args.min_count)
    for flag in ("target", "fields", "task", "numeric_bins", "save"):
        if getattr(args, flag, None) is not None:
            raise ValueError(f"--{flag.replace('_', '-')} goes with --data (your own file)")
    if not args.dataset:
        raise ValueError("say what to train on: --dataset NAME or --data FILE[,VALID,TEST]")
    from ifm.data import load_dataset
    return load_dataset(args.dataset, args.data_dir, split_seed=args.split_seed, download=not args.no_download)


def _say_data(dataset) -> None:
    """What data this is, on stderr before any training: partial or stand-in data is never silent."""
    p = dataset.provenance
    print(f"data: {dataset.name}, {p.get('data_kind')}: {p.get('split_rule')}", file=sys.stderr)
    for note in p.get("notes", []):
        print(f"note: {note}", file=sys.stderr)


def cmd_data(args) -> int:
    print(_load(args).summary())
    return 0


def cmd_train(args) -> int:
    from ifm.data.download import file_digests
    from ifm.runs.records import clean_json, run_key, save_state_atomic, stamp, write_json_atomic
    from ifm.training.recipes import paper_config
    from ifm.training.loop import train

    from ifm.runs import bundle as bundles
    from ifm.training.limits import memory_problem

    _check_train_args(args)
    if args.save is not None:
        bundles.check_target(args.save)
    pretrained = _read_fm_state(args.init_fm) if args.init_fm is not None else None
    dataset = _load(args)
    _say_data(dataset)
    overrides = {s: getattr(args, s) for _, s, _ in TRAIN_NUMBERS
                 if s not in MODEL_OPTIONS and getattr(args, s) is not None}
    options = {o: getattr(args, o) for o in MODEL_OPTIONS if getattr(args, o) is not None}
    if args.patience is not None:
        overrides["stopping"] = "patience"
    if args.device is not None:
        overrides["device"] = args.device
    if args.no_pretrain:
        overrides["pretrain_fm"] = False
    if args.freeze_embeddings:
        overrides["freeze_embeddings"] = True
    config = paper_config(dataset.name, args.model, recipe=args.recipe, model_options=options, **overrides)
    problem = memory_problem(dataset.num_features, config.embedding_size)
    if problem:
        raise ValueError(f"--embedding-size: {problem}")
    pretrain_record = None
    if pretrained is not None:
        _check_fm_shapes(pretrained, args.init_fm, dataset, config)
        pretrain_record = {"from_file": args.init_fm}
    run = train(config, dataset, progress=not args.quiet, pretrained=pretrained, pretrain_record=pretrain_record)
    record = run.record
    if args.out is not None:
        extra = {"init_fm_sha256": file_digests(args.init_fm)[0]} if args.init_fm is not None else None
        key, material = run_key(config, dataset, extra=extra)
        state = Path(args.save_state).name if args.save_state is not None else None
        write_json_atomic(args.out, stamp(record, key, material, "cli", Path(args.out).stem, state))
    if args.save_state is not None:
        save_state_atomic(run.model.state_dict(), args.save_state)
    fm = _say_fm_baseline(record, config, dataset)
    if args.save is not None:
        bundles.save(args.save, run.model, bundles.manifest_of(record, dataset, config))
        print(f"saved the model bundle to {args.save} (python -m ifm predict --model {args.save} --data FILE)",
              file=sys.stderr)
    print(json.dumps(clean_json({
        "model": args.model, "dataset": dataset.name, "seed": config.seed,
        "best_epoch": record["best_epoch"], "epochs_run": record["epochs_run"],
        "valid": record["valid"], "test": record["test"], "wall_seconds": round(record["wall_seconds"], 2),
        "samples_per_second": round(record["samples_per_second"], 1), "train_instances": len(dataset.train),
        "data_kind": dataset.provenance.get("data_kind"), "recipe": config.recipe, "diverged": record["diverged"],
        **({"fm_baseline": fm} if fm else {}),
        **({"factors_test": record["factors_test"]} if "factors_test" in record else {})}), allow_nan=False))
    if record["diverged"]:
        kept = (f"its metrics are those of epoch {record['kept_epoch']}, the last with a finite validation "
                f"{record['monitor']}" if record["kept_epoch"] else "no epoch had one, so it has no metrics")
        print(f"{'warning' if args.allow_divergence else 'error'}: the run diverged at epoch {record['epochs_run']} "
              f"(validation {record['monitor']} not finite: lower --lr or raise --l2?); {kept}", file=sys.stderr)
        return 0 if args.allow_divergence else 3
    return 0


def _say_fm_baseline(record: dict, config, dataset) -> dict | None:
    """The FM the model started from, beside it on stderr: did the model help?"""
    fm = record.get("pretrain") or {}
    if not fm.get("test"):
        return None
    metric = "auc" if dataset.task == "binary" else "rmse"
    name = DISPLAY_NAMES[config.model]
    print(f"{name}: validation {metric} {record['valid'][metric]:.4f}, test {record['test'][metric]:.4f}; the FM it "
          f"started from: validation {fm['valid'][metric]:.4f}, test {fm['test'][metric]:.4f}", file=sys.stderr)
    return {k: fm[k] for k in ("valid", "test", "best_epoch") if k in fm}


def cmd_bench(args) -> int:
    from ifm.training.bench import bench_deepctr, bench_ours

    if args.compare and args.model != "ifm":
        raise ValueError("--compare deepctr-torch compares IFM only; use --model ifm")
    if args.compare and args.recipe != "paper":
        raise ValueError("--compare deepctr-torch times both at the paper's sizes; use --recipe paper")
    if args.compare and args.workers:
        raise ValueError("--compare deepctr-torch times both in this process; leave out --workers")
    dataset = _load(args)
    device = torch.device(args.device)
    if args.workers:        # inside the local cluster fill trains on, all workers at once
        from ifm.runs.engine import bench_in_workers
        from ifm.runs.fill import worker_threads

        threads = worker_threads(None, args.workers, args.device)
        rows = bench_in_workers(bench_ours, (dataset, args.model, device, args.batches, not args.per_instance,
                                             args.recipe), workers=args.workers, threads=threads, device=args.device)
        where = f"{args.workers} local Dask worker(s) at once, {threads} thread(s) each"
    else:
        rows = [bench_ours(dataset, args.model, device, max_batches=args.batches, per_feature=not args.per_instance,
                           recipe=args.recipe)]
        where = f"{torch.get_num_threads()} threads in this process"
    if args.compare:
        rows.append(bench_deepctr(dataset, device, max_batches=args.batches))
    print(f"dataset {dataset.name}: {len(dataset.train):,} training instances, device {device}, {where}, "
          f"torch {torch.__version__}")
    for row in rows:
        line = (f"{row['implementation']:>20}: {row['samples_per_second']:>10,.0f} samples/s "
                f"(median step {row['median_step_samples_per_second']:,.0f})  "
                f"peak memory {row['peak_memory_mb']:,.0f} MiB  ({row['batches']} batches of {row['batch_size']}, "
                f"embedding {row['embedding_size']})  kernel {row['kernel_share']:.0%} of its CPU time"
                + (f"  [{row['where']}]" if "where" in row else ""))
        print(line)
        if "fraction_of_gemm_bound" in row:
            print(f"{'':>20}  FEN GEMMs of the per-instance form alone: {row['gemm_gflops']:.1f} GFLOP/s -> "
                  f"at most {row['bound_samples_per_second']:,.0f} samples/s; median step reaches "
                  f"{row['fraction_of_gemm_bound']:.0%} of that"
                  + (" (over 100%: the per-feature path needs fewer products)" if row["fraction_of_gemm_bound"] > 1
                     else ""))
    if args.compare:
        print(f"{'speed-up':>20}: {rows[0]['samples_per_second'] / rows[1]['samples_per_second']:.2f}x "
              f"(median step {rows[0]['median_step_samples_per_second'] / rows[1]['median_step_samples_per_second']:.2f}x)")
    if args.json:
        print(json.dumps(rows))
    return 0


RECIPE_CHOICES = [*RECIPES, BENCHMARK]    # the two readings of the method, and the open benchmark's protocol


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        """One line, naming the flag and the problem (argparse adds the whole usage)."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m ifm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="show a dataset's provenance and split sizes")
    data.add_argument("dataset", choices=DATASET_NAMES)
    _data_args(data)
    data.set_defaults(func=cmd_data)

    train = sub.add_parser("train", help="train one model at the paper's settings (override any)")
    train.add_argument("--dataset", choices=DATASET_NAMES, help="a registered dataset (or --data)")
    train.add_argument("--data", help="your own data instead: one libfm or CSV file (split 8:1:1 by "
                                      "--split-seed) or three, comma-separated: TRAIN,VALID,TEST")
    train.add_argument("--target", help="with CSV --data: the label column (0/1 labels: a CTR task)")
    train.add_argument("--fields", help="with CSV --data: the feature columns, comma-separated "
                                        "(default: every column but the target)")
    train.add_argument("--task", choices=["ctr", "regression"],
                       help="with --data: ctr (a two-valued target: the larger value is a click) or regression; "
                            "default: ctr for a 0/1 target, any other target is refused without it")
    train.add_argument("--numeric-bins", type=number_arg("numeric_bins"), metavar="N",
                       help=f"with CSV --data: cut columns with decimals into N quantile bins of the training rows "
                            f"({LIMITS['numeric_bins']}); without it such columns are refused")
    train.add_argument("--min-count", type=number_arg("min_count"), default=1, metavar="N",
                       help="with --data: values seen fewer than N times in training go to the field's rare "
                            "bucket, with the values never seen there (default 1)")
    train.add_argument("--save", type=path_arg, metavar="DIR",
                       help="with --data: write the model bundle (weights, settings, the fitted encoding) to DIR, "
                            "for predict and explain")
    train.add_argument("--model", required=True, choices=list(MODELS))
    train.add_argument("--recipe", default="paper", choices=RECIPE_CHOICES,
                       help="paper: the paper's text (default); code: the authors' released code "
                            "(see the book's method chapter for every setting and its source); bars: the "
                            "open CTR benchmark's protocol (Adam, embedding 10, validation AUC; CTR data only)")
    for flag, setting, what in TRAIN_NUMBERS:
        train.add_argument(flag, dest=setting, type=number_arg(setting), metavar=flag[2:].upper().replace("-", "_"),
                           help=f"{what}: {LIMITS[setting]} (default: the recipe's)")
    train.add_argument("--activation", choices=["relu", "sigmoid", "tanh", "identity"],
                       help="the activation of the FEN (IFM) or the hidden layers (NFM, DeepFM, Wide&Deep)")
    train.add_argument("--device", type=device_arg, help="cpu, cuda or cuda:N (one this machine has; default cpu)")
    train.add_argument("--no-pretrain", action="store_true", help="skip the FM pre-training of the embeddings")
    train.add_argument("--freeze-embeddings", action="store_true", help="train only the model's extra component")
    train.add_argument("--out", type=path_arg, help="write the full run record (JSON) to this file")
    train.add_argument("--save-state", type=path_arg, help="write the trained model's state_dict (torch.save) to this file")
    train.add_argument("--init-fm", type=path_arg, help="take w0, w and v from this saved FM state instead of "
                                                     "pre-training one (its shapes must fit the data)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("--allow-divergence", action="store_true",
                       help="exit 0 when the run diverges (default: exit 3, after its JSON line and record)")
    _data_args(train)
    train.set_defaults(func=cmd_train)

    bench = sub.add_parser("bench", help="training samples/s and peak memory at the paper's settings")
    bench.add_argument("--dataset", default="frappe", choices=DATASET_NAMES)
    bench.add_argument("--model", default="ifm", choices=list(MODELS))
    bench.add_argument("--compare", choices=["deepctr-torch"], help="also time a peer library's IFM")
    bench.add_argument("--recipe", default="paper", choices=RECIPE_CHOICES,
                       help="whose settings to time (default paper; bars: the open benchmark's, CTR data only)")
    bench.add_argument("--batches", type=number_arg("max_batches"),
                       help=f"time only this many batches: {LIMITS['max_batches']} (default: one epoch)")
    bench.add_argument("--device", default="cpu", type=device_arg, help="cpu, cuda or cuda:N (default cpu)")
    bench.add_argument("--per-instance", action="store_true",
                       help="time IFM's general path (as on MovieLens and Avazu), not the per-feature one")
    bench.add_argument("--workers", type=number_arg("workers"),
                       help=f"time the steps at once in this many local Dask workers, the cluster fill trains on "
                            f"(each with its share of the cores, as fill): {LIMITS['workers']}; default: in this "
                            "process")
    bench.add_argument("--json", action="store_true", help="also print the rows as JSON")
    _data_args(bench)
    bench.set_defaults(func=cmd_bench)

    from ifm.api import add_parsers             # predict and explain: a saved model on new rows

    add_parsers(sub, device_arg, path_arg)
    from ifm.book.pages import DERIVE, PAGES     # what fill plans and derives: the book's pages
    from ifm.runs.fill import add_fill_parser
    from ifm.runs.reproduce import add_reproduce_parser

    from ifm.runs.tuning import add_tune_parser

    add_reproduce_parser(sub, PAGES, DERIVE)
    add_fill_parser(sub, PAGES, DERIVE)
    add_tune_parser(sub)
    return parser


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:      # --help, or a bad flag (already reported)
        return done.code
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as error:   # data, config and bundle errors: a message, not a traceback
        print(f"error: {error}", file=sys.stderr)
        return 2
