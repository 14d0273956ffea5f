"""`python -m ifm ...`: inspect data, train one model, benchmark training speed."""
from __future__ import annotations

import argparse
import json
import sys

from ifm.models import MODELS

DATASET_NAMES = ("frappe", "movielens", "avazu", "synthetic")


def _data_args(parser):
    parser.add_argument("--data-dir", help="directory laid out like the local mirror (default: $IFM_DATA_DIR, "
                                           "then the cache, then the public download)")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the random 8:1:1 split where one is made")
    parser.add_argument("--no-download", action="store_true", help="never go to the network")


def _load(args):
    if getattr(args, "data", None):
        from ifm.userdata import load_files
        if args.dataset:
            raise ValueError("give --dataset (a registered dataset) or --data (your files), not both")
        fields = args.fields.split(",") if args.fields else None
        return load_files(args.data.split(","), target=args.target, fields=fields, split_seed=args.split_seed)
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
    from ifm.records import save_state_atomic, write_json_atomic
    from ifm.settings import paper_config
    from ifm.train import train

    dataset = _load(args)
    _say_data(dataset)
    overrides = {k: v for k, v in {"epochs": args.epochs, "seed": args.seed, "embedding_size": args.embedding_size,
                                   "batch_size": args.batch_size, "device": args.device, "patience": args.patience,
                                   "learning_rate": args.lr}.items() if v is not None}
    options = {k: v for k, v in {"fen_layers": args.fen_layers, "dropout": args.dropout,
                                 "activation": args.activation}.items() if v is not None}
    if args.no_pretrain:
        overrides["pretrain_fm"] = False
    if args.freeze_embeddings:
        overrides["freeze_embeddings"] = True
    config = paper_config(dataset.name, args.model, recipe=args.recipe, model_options=options, **overrides)
    pretrained = pretrain_record = None
    if args.init_fm:
        import torch
        pretrained = {k: v for k, v in torch.load(args.init_fm).items() if k.startswith(("linear.", "embedding."))}
        pretrain_record = {"from_file": args.init_fm}
    run = train(config, dataset, progress=not args.quiet, pretrained=pretrained, pretrain_record=pretrain_record)
    record = run.record
    if args.out:
        write_json_atomic(args.out, record)
    if args.save_state:
        save_state_atomic(run.model.state_dict(), args.save_state)
    print(json.dumps({"model": args.model, "dataset": dataset.name, "seed": config.seed,
                      "best_epoch": record["best_epoch"], "epochs_run": record["epochs_run"],
                      "valid": record["valid"], "test": record["test"],
                      "wall_seconds": round(record["wall_seconds"], 2),
                      "samples_per_second": round(record["samples_per_second"], 1),
                      "train_instances": len(dataset.train),
                      "data_kind": dataset.provenance.get("data_kind"), "recipe": config.recipe,
                      **({"factors_test": record["factors_test"]} if "factors_test" in record else {})}))
    return 0


def cmd_bench(args) -> int:
    import torch

    from ifm.bench import bench_deepctr, bench_ours

    dataset = _load(args)
    device = torch.device(args.device)
    rows = [bench_ours(dataset, args.model, device, max_batches=args.batches, per_feature=not args.per_instance)]
    if args.compare:
        if args.model != "ifm":
            raise SystemExit("--compare deepctr-torch compares IFM only; use --model ifm")
        rows.append(bench_deepctr(dataset, device, max_batches=args.batches))
    print(f"dataset {dataset.name}: {len(dataset.train):,} training instances, device {device}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    for row in rows:
        line = (f"{row['implementation']:>20}: {row['samples_per_second']:>10,.0f} samples/s "
                f"(median step {row['median_step_samples_per_second']:,.0f})  "
                f"peak memory {row['peak_memory_mb']:,.0f} MiB  ({row['batches']} batches of {row['batch_size']}, "
                f"embedding {row['embedding_size']})")
        print(line)
        if "fraction_of_gemm_bound" in row:
            print(f"{'':>20}  FEN GEMMs of the per-instance form alone: {row['gemm_gflops']:.1f} GFLOP/s -> "
                  f"at most {row['bound_samples_per_second']:,.0f} samples/s; median step reaches "
                  f"{row['fraction_of_gemm_bound']:.0%} of that"
                  + (" (over 100%: the per-feature path needs fewer products)" if row["fraction_of_gemm_bound"] > 1
                     else ""))
    if len(rows) == 2:
        print(f"{'speed-up':>20}: {rows[0]['samples_per_second'] / rows[1]['samples_per_second']:.2f}x "
              f"(median step {rows[0]['median_step_samples_per_second'] / rows[1]['median_step_samples_per_second']:.2f}x)")
    if args.json:
        print(json.dumps(rows))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ifm", description=__doc__)
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
    train.add_argument("--model", required=True, choices=list(MODELS))
    train.add_argument("--recipe", default="paper", choices=["paper", "code"],
                       help="paper: the paper's text (default); code: the authors' released code "
                            "(see the book's method chapter for every setting and its source)")
    for flag, kind in (("--epochs", int), ("--seed", int), ("--embedding-size", int), ("--batch-size", int),
                       ("--patience", int), ("--lr", float), ("--fen-layers", int), ("--dropout", float)):
        train.add_argument(flag, type=kind)
    train.add_argument("--activation", choices=["relu", "sigmoid", "tanh", "identity"])
    train.add_argument("--device", default=None, help="cpu or cuda")
    train.add_argument("--no-pretrain", action="store_true", help="skip the FM pre-training of the embeddings")
    train.add_argument("--freeze-embeddings", action="store_true", help="train only the model's extra component")
    train.add_argument("--out", help="write the full run record (JSON) here")
    train.add_argument("--save-state", help="write the trained model's state_dict (torch.save) here")
    train.add_argument("--init-fm", help="take w0, w and v from this saved FM state instead of pre-training one")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    _data_args(train)
    train.set_defaults(func=cmd_train)

    bench = sub.add_parser("bench", help="training samples/s and peak memory at the paper's settings")
    bench.add_argument("--dataset", default="frappe", choices=DATASET_NAMES)
    bench.add_argument("--model", default="ifm", choices=list(MODELS))
    bench.add_argument("--compare", choices=["deepctr-torch"], help="also time a peer library's IFM")
    bench.add_argument("--batches", type=int, help="time only this many batches (default: one epoch)")
    bench.add_argument("--device", default="cpu")
    bench.add_argument("--per-instance", action="store_true",
                       help="time IFM's general path (as on MovieLens and Avazu), not the per-feature one")
    bench.add_argument("--json", action="store_true", help="also print the rows as JSON")
    _data_args(bench)
    bench.set_defaults(func=cmd_bench)

    from ifm.reproduce import add_reproduce_parser   # the book's driver lives with the book code
    add_reproduce_parser(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as error:   # data and config errors: a message, not a traceback
        print(f"error: {error}", file=sys.stderr)
        return 2
