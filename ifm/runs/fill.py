"""`python -m ifm fill`: train the runs the book still lacks, in the order its pages need them,
with several workers at once and a time limit.

    python -m ifm fill --profile paper [--recipe paper,code] [--workers N] [--time-limit 3h]
                       [--device cuda] [--study table3 ...] [--dataset frappe ...] [--list]

The plan is what the pages ask for: each study runs through a read-only runner, and every run
missing from the results directory is collected (`plan`). It is ordered as the pages need them:
Table 3 on Frappe, then Fig. 6, Table 1 (the factors of Table 3's IFM at each seed, derived from
its weights, so that run and its FM are trained again where their weights are not on this
machine: on a CPU that gives the very same runs), Table 4, Table 2, the data-scaling study, the
MovieLens stand-in's rows, and the FEN sweeps; within each, seed 0 of everything before seed 1, and FMs (which others start from)
first. One record serves every runner that asks for the same settings, whatever the recipe
label or device (`ifm.runs.experiment.equivalents`), so each such run is planned once.

`fill` hands the runs to worker processes (`--workers`, each with its share of the CPU threads;
on a GPU they share the card). The run cache locks each run, so two `fill`s on one results
directory never train the same run twice; a worker that finds its run locked by another live
process puts it off (`RETRY_SECONDS`) and trains the next one instead of waiting. With
`--time-limit` a run starts only when the time left exceeds what a run of that model on that
dataset under that recipe took so far (in this call, else in the records on this kind of
device); at the limit,
runs still going are stopped and nothing of them is written (records are written whole or not at
all), and the command that continues is printed. A `fill` stopped from outside (SIGTERM, Ctrl-C)
stops its workers before it exits, and each gives up its run's lock.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import math
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass

from ifm.runs.timing import device_kind, expected_seconds, past_seconds, share, time_key

# The studies whose runs the pages read, in the order the pages should fill (see the docstring).
STUDY_ORDER = ("table3", "fig6", "table1", "table4", "table2", "scaling", "depth", "dropout", "activation")
RANK = {"table3": 0, "fig6": 1, "table1": 1, "table4": 1, "table2": 2, "scaling": 3, "depth": 5, "dropout": 5,
        "activation": 5}
# The fill study whose runs a page's study reads (Table 1 reads Table 3's IFM and FM).
FILL_STUDY = {"regression": "table3", "convergence": "fig6", "ctr": "table4", "components": "table2",
              "scaling": "scaling", "depth": "depth", "dropout": "dropout", "activation": "activation",
              "factors": "table1"}
STAND_IN_RANK = 4          # the MovieLens stand-in's rows of Table 3, Fig. 6 and Table 2
STAND_IN = "movielens"


@dataclass
class Wanted:
    """One run a page asks for: its study, dataset, dataset options and configuration."""
    study: str
    dataset: str
    data_options: dict
    config: object          # ifm.training.loop.TrainConfig
    label: str              # the run in words (Experiment.describe)
    derive: dict | None = None   # Table 1: {"factors": fields}, the factors of this (recorded) IFM to derive

    def order(self) -> tuple:
        rank = RANK[self.study]
        if self.dataset == STAND_IN and rank < RANK["scaling"]:
            rank = STAND_IN_RANK
        return (rank, self.config.seed, self.config.model != "fm", STUDY_ORDER.index(self.study),
                self.dataset != "frappe")


def plan(profile: str = "paper", recipe: str = "paper,code", *, pages: dict, studies=None, datasets=None,
         seeds=None, results_dir=None, overrides=None) -> list[Wanted]:
    """The runs missing from the results directory that the pages of `studies` (default: all)
    ask for, each once, in the order they should be trained. `datasets` picks among the runs the
    pages read at their defaults (Frappe and the MovieLens stand-in for the regression pages,
    Frappe alone for the data-scaling page, Avazu for Table 4): `--dataset avazu` never plans a
    sweep on Avazu. A dataset that no page reads at its defaults (e.g. synthetic) is planned as the
    pages would run on it if given it as their `datasets` parameter."""
    import io

    from ifm.runs.experiment import Experiment, equivalents
    from ifm.runs.profiles import parse_datasets
    from ifm.runs.records import _identity_text, config_identity

    functions = pages           # name -> the page's study (ifm.book.pages.PAGES)
    unknown = sorted(set(studies or ()) - set(functions))
    if unknown:
        raise ValueError(f"study must be one of {', '.join(STUDY_ORDER)}, got {', '.join(unknown)}")
    out, seen = [], set()
    datasets = parse_datasets(datasets)
    exp = Experiment(profile, recipe=recipe, seeds=seeds, results_dir=results_dir,
                     overrides=overrides, train_missing=False, log=io.StringIO())   # one read of the records
    read = set(exp.profile.datasets) | set(exp.profile.ctr_datasets)
    others = tuple(d for d in datasets or () if d not in read)
    passes = ([None] if not datasets or len(others) < len(datasets) else []) + ([others] if others else [])
    for name in [s for s in STUDY_ORDER if s in (studies or STUDY_ORDER)]:     # a run shared by studies goes to the first
        for pages_datasets in passes:                                          # the pages' own datasets, then others
            exp.datasets, exp.wanted = pages_datasets, []
            functions[name](exp)
            for config, dataset, options, *derive in exp.wanted:
                derive = derive[0] if derive else None       # Table 1's factors of a recorded run
                same = {_identity_text({"d": dataset, "o": options, "c": config_identity(c), "derive": derive})
                        for c in equivalents(config)}
                if same & seen or (datasets and dataset not in datasets):
                    continue
                seen |= same
                label = exp.describe(config, dataset) + (" -> Table 1 factors (retrains it and its FM for their "
                                                         "weights)" if derive else "")
                out.append(Wanted(name, dataset, options, config, label, derive))
    return sorted(out, key=Wanted.order)


# --------------------------------------------------------------------------- workers
RETRY_SECONDS = 30.0    # how long a run that another process is training is put off


def _exit_on_sigterm(signum, frame):
    """SIGTERM as SystemExit, so that `finally` blocks run: a worker gives up its run's lock (and
    the record's temporary file), and `fill` stops its workers before it goes."""
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _stopped_on_exit(pool: list):
    """Within the block, SIGTERM to `fill` raises SystemExit (main thread only); on leaving it, the
    workers in `pool` end: after their current task when the block finished, at once (SIGTERM,
    which each turns into SystemExit) when it raised (killed, Ctrl-C); one still alive 10 s later
    is killed. So a stopped `fill` leaves neither workers nor locks behind."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if main else None
    finished = False
    try:
        yield
        finished = True
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        for slot in pool:
            if slot["process"].is_alive():
                slot["tasks"].put(None) if finished else slot["process"].terminate()
        for slot in pool:
            slot["process"].join(timeout=10)
            if slot["process"].is_alive():
                slot["process"].kill()


def _worker(tasks, results, settings: dict) -> None:
    """A worker process: train each task it is handed through the run cache, report, repeat."""
    import io

    import torch

    signal.signal(signal.SIGTERM, _exit_on_sigterm)     # stopped: give up the run's lock on the way out
    torch.set_num_threads(settings["threads"])
    from ifm.runs.experiment import Experiment

    while True:
        task = tasks.get()
        if task is None:
            return
        index, item = task
        started = time.time()
        try:
            config = dataclasses.replace(item.config, device=settings["device"])
            exp = Experiment(settings["profile"], recipe=config.recipe, device=settings["device"],
                             data_dir=settings["data_dir"], results_dir=settings["results_dir"],
                             overrides=settings["overrides"], log=io.StringIO())
            holder = exp.training_elsewhere(config, item.dataset, item.data_options or None)
            if holder is not None:          # another fill has it: do something else, come back later
                results.put((index, "busy", time.time() - started, holder))
                continue
            if item.derive:             # Table 1: the factors of a recorded IFM, from its weights
                (kind, fields), = item.derive.items()
                exp.train_missing = True
                settings["derive"][kind](exp, item.dataset, fields, config.seed)
                results.put((index, "done", time.time() - started, f"Table 1 {kind} derived"))
                continue
            record = exp.run(config, item.dataset, data_options=item.data_options or None)
            test = record.get("test", {})
            metric = "rmse" if "rmse" in test else "logloss"
            results.put((index, "done" if exp.stats["trained"] else "reused", time.time() - started,
                         f"test {metric} {test.get(metric, float('nan')):.4f}, {record.get('epochs_run')} epochs"
                         + ("" if exp.stats["trained"] else " (made meanwhile by another process)")))
        except Exception as err:        # reported by the parent, which carries on with the others
            results.put((index, "failed", time.time() - started, f"{type(err).__name__}: {err}"))


def fill(items: list[Wanted], *, workers: int = 1, device: str = "cpu", time_limit: float | None = None,
         threads: int | None = None, profile: str = "paper", data_dir=None, results_dir=None, overrides=None,
         past: dict | None = None, derive: dict | None = None, log=print) -> dict:
    """Train `items` (from `plan`) in order with `workers` processes until done or `time_limit`
    seconds have passed; each worker uses `threads` torch threads (default: on a CPU its share of
    the cores, on a GPU one); `past`: `past_seconds` of the results directory, if read already;
    `derive`: what makes an item's derived result ({"factors": ifm.book.factors.factor_seed}, as
    ifm.book.pages.DERIVE; module-level functions, which a spawned worker imports by name).
    Returns counts: done, reused (made meanwhile by another process), failed, stopped (cut at the
    limit), not started."""
    started = time.time()
    deadline = started + time_limit if time_limit else math.inf
    if threads is None:
        threads = 1 if device_kind(device) == "gpu" else max(1, (os.cpu_count() or 1) // workers)
    settings = {"device": device, "threads": threads, "profile": profile, "data_dir": data_dir,
                "results_dir": results_dir, "overrides": overrides, "derive": derive or {}}
    past, seen = past_seconds(results_dir, profile) if past is None else past, {}
    context = mp.get_context("spawn")        # no CUDA state or locks inherited from this process
    results = context.Queue()

    def start_worker() -> dict:
        tasks = context.Queue()
        process = context.Process(target=_worker, args=(tasks, results, settings), daemon=True)
        process.start()
        return {"process": process, "tasks": tasks, "task": None, "since": None}

    pool = []
    with _stopped_on_exit(pool):
        pool.extend(start_worker() for _ in range(min(workers, len(items))))
        todo, counts = list(range(len(items))), {"done": 0, "reused": 0, "failed": 0, "stopped": 0, "not started": 0}
        later = {}      # index: when to look again at a run another process was training

        def hand_out():
            for slot in pool:
                if slot["task"] is not None or not todo:
                    continue
                now, left = time.time(), deadline - time.time()
                pick = next((i for i in todo if later.get(i, 0) <= now
                             and (expected_seconds(items[i], device, seen, past) or 0) < left), None)
                if pick is None:
                    return
                todo.remove(pick)
                slot["task"], slot["since"] = pick, time.time()
                slot["tasks"].put((pick, items[pick]))

        hand_out()
        while any(slot["task"] is not None for slot in pool) or any(i in later for i in todo):
            try:
                index, status, seconds, text = results.get(timeout=max(0.1, min(5.0, deadline - time.time())))
            except queue.Empty:
                if time.time() < deadline:
                    hand_out()                          # a run put off for another process may be due
                    for k, slot in enumerate(pool):     # a worker killed from outside (out of memory...) reports nothing
                        if slot["task"] is not None and not slot["process"].is_alive():
                            counts["failed"] += 1
                            log(f"FAILED: {items[slot['task']].label}: its worker died (exit code "
                                f"{slot['process'].exitcode}); the others carry on", flush=True)
                            pool[k] = start_worker()
                            hand_out()
                    continue
                for slot in pool:
                    if slot["task"] is not None:
                        log(f"stopped at the time limit: {items[slot['task']].label} (after "
                            f"{time.time() - slot['since']:.0f} s; no record of it was written, though an FM "
                            "pre-training it finished is kept)", flush=True)
                        counts["stopped"] += 1
                        slot["task"] = None
                    slot["process"].terminate()
                break
            slot = next(s for s in pool if s["task"] == index)
            slot["task"] = None
            item = items[index]
            if status == "busy":
                if index not in later:
                    log(f"put off: {item.study}: {item.label}: {text} is training it; back to it later", flush=True)
                todo.append(index)
                later[index] = time.time() + RETRY_SECONDS
                hand_out()
                continue
            later.pop(index, None)
            counts[status] += 1
            if status == "done":
                seen.setdefault(time_key(item.config.model, item.dataset, item.config.recipe, device), []).append(
                    seconds / share(item.data_options))
            log(f"[{counts['done'] + counts['reused'] + counts['failed']}/{len(items)}] {item.study}: {item.label}: "
                f"{'FAILED: ' if status == 'failed' else ''}{text} ({seconds:.0f} s)", flush=True)
            hand_out()
    counts["not started"] = len(todo)
    counts["seconds"] = time.time() - started
    return counts


def summary(counts: dict) -> str:
    """One line on what `fill` did."""
    return (f"fill: {counts['done']} trained, "
            + (f"{counts['reused']} made meanwhile by another process, " if counts.get("reused") else "")
            + f"{counts['failed']} failed, {counts['stopped']} stopped at the time "
            f"limit, {counts['not started']} not started ({counts['seconds']:.0f} s)")


# --------------------------------------------------------------------------- command line
def add_fill_parser(sub, pages: dict, derive: dict):
    """The `fill` command; `pages` and `derive` (ifm.book.pages) are what it plans and derives."""
    from ifm.runs.args import LIMITS, device_arg, duration_arg, number_arg, path_arg, recipes_arg
    from ifm.runs.profiles import PROFILES
    from ifm.data.registry import DATASET_NAMES

    p = sub.add_parser("fill", help="train the runs the book still lacks, several at once, within a time limit",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="paper", choices=sorted(PROFILES), help="default: paper")
    p.add_argument("--recipe", default="paper,code", type=recipes_arg, help="default: paper,code (as the book)")
    p.add_argument("--study", action="append", choices=STUDY_ORDER,
                   help="only this study's runs (repeatable; default: every study, in the order above)")
    p.add_argument("--dataset", action="append", choices=[d for d in DATASET_NAMES if d != "synthetic"],
                   help="only this dataset's runs among those the pages read (repeatable): '--dataset avazu' is Table 4's")
    p.add_argument("--seeds", type=number_arg("seed"), nargs="+",
                   help=f"seeds, each {LIMITS['seed']} (default: the profile's)")
    p.add_argument("--workers", type=number_arg("workers"), default=1,
                   help=f"training processes at once: {LIMITS['workers']} (default 1); on a CPU each gets "
                        "its share of the threads, on a GPU they share the card")
    p.add_argument("--threads", type=number_arg("threads"),
                   help=f"torch threads per worker: {LIMITS['threads']} (default: on a CPU the cores shared "
                        "out among the workers, on a GPU 1)")
    p.add_argument("--time-limit", type=duration_arg,
                   help="stop starting runs that would not end in time, and stop the rest at this limit "
                        "(seconds, or 90m, 2.5h)")
    p.add_argument("--device", type=lambda text: text if text == "auto" else device_arg(text),
                   help="cpu, cuda, cuda:N or auto (default: the profile's)")
    p.add_argument("--data-dir", type=path_arg, help="data directory (default: $IFM_DATA_DIR, then the cache)")
    p.add_argument("--results-dir", type=path_arg, help="run cache directory (default: $IFM_RESULTS_DIR, then results/)")
    p.add_argument("--list", action="store_true", help="print the plan (and the hours it should take) and stop")
    p.set_defaults(func=functools.partial(cmd_fill, pages=pages, derive=derive))
    return p


def describe_plan(items: list[Wanted], device: str, past: dict) -> list[str]:
    """One line per study and dataset: runs, and the hours they should take on this kind of device."""
    groups = {}
    for item in items:
        groups.setdefault((item.study, item.dataset), []).append(item)
    lines = []
    for (study, dataset), group in groups.items():
        known = [expected_seconds(i, device, {}, past) for i in group]
        hours = sum(s for s in known if s) / 3600
        unknown = sum(s is None for s in known)
        known_part = (f"about {hours:.1f} h on one {device_kind(device).upper()} worker"
                      + (f" for {len(group) - unknown}" if unknown else "")) if unknown < len(group) else ""
        unknown_part = (f"{unknown} of a model never run on this kind of device (time unknown)" if unknown else "")
        lines.append(f"  {study:<10} {dataset:<10} {len(group):>4} runs: " + "; ".join(p for p in (known_part, unknown_part) if p))
    return lines


def cmd_fill(args, pages: dict, derive: dict) -> int:
    from ifm.runs.profiles import get_profile, resolve_device

    args.device = resolve_device(args.device, get_profile(args.profile))
    items = plan(args.profile, args.recipe, pages=pages, studies=args.study, datasets=args.dataset,
                 seeds=args.seeds, results_dir=args.results_dir)
    past = past_seconds(args.results_dir, args.profile)
    print(f"{len(items)} run(s) missing for profile {args.profile}, recipe {args.recipe}:", flush=True)
    for line in describe_plan(items, args.device, past):
        print(line, flush=True)
    if args.list or not items:
        for item in items:
            print(f"    {item.study}: {item.label}" + (f" {item.data_options}" if item.data_options else ""))
        return 0
    counts = fill(items, workers=args.workers, device=args.device, time_limit=args.time_limit, threads=args.threads,
                  profile=args.profile, data_dir=args.data_dir, results_dir=args.results_dir, past=past,
                  derive=derive)
    print(summary(counts), flush=True)
    if counts["stopped"] or counts["not started"]:
        print("to continue: the same command again (finished runs are reused from the cache)", flush=True)
    return 1 if counts["failed"] else 0
