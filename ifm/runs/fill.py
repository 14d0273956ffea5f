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
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

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


# --------------------------------------------------------------------------- the client
RETRY_SECONDS = 30.0    # how long a run that another process is training is put off
WORKER_WAIT = 120.0     # how long the fill waits for a worker when it has none (starting, or being replaced)
STATE_FIRST = {".pt": 0, ".json": 1}    # a record is written after the weights it names


def _exit_on_sigterm(signum, frame):
    """SIGTERM as SystemExit, so that `finally` blocks run: the fill cancels its tasks, closes its
    cluster and gives up its runs' locks before it goes."""
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _sigterm_exits():
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if main else None
    try:
        yield
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


class WriteError(RuntimeError):
    """The results directory refused a finished run's files (full disk, a path that is a directory...)."""


def write_files(directory: Path, files: dict) -> None:
    """Write a finished run's files (name: bytes) into the run cache atomically, weights before the
    record that names them; when one cannot be written, none of this run's new files stays."""
    from ifm.runs.records import atomic_path

    made = []
    try:
        for name in sorted(files, key=lambda n: STATE_FIRST.get(Path(n).suffix, 2)):
            path = directory / name
            existed = path.exists()
            with atomic_path(path) as tmp:
                Path(tmp).write_bytes(files[name])
            if not existed:
                made.append(path)
    except OSError as err:
        for path in made:
            with contextlib.suppress(OSError):
                path.unlink()
        raise WriteError(f"cannot write {directory / name}: {err.strerror or err}") from None


class _Client:
    """What the client knows of the runs: where each lives in the run cache (from the client's own
    data), the files a run reads (sent to its worker), the locks it holds, the tasks in flight."""

    def __init__(self, exp, directory: Path, client, settings: dict, gpu: bool):
        self.exp, self.directory, self.client, self.settings, self.gpu = exp, directory, client, settings, gpu
        self.in_flight = {}         # future: (index, lock, since)
        self.busy = set()           # stems in flight
        self.failed = set()         # stems of the runs that failed in this fill
        self.planned = set()        # stems of the runs in this fill's plan (with the FM pre-trainings it added)
        self.scattered = {}         # stem of the files sent: their future on the cluster

    def place(self, config, item) -> tuple:
        """(data, options, stem) of `config` on `item`'s dataset, from the client's data."""
        data, options, _, _, stem = self.exp._place(config, item.dataset, item.data_options or None)
        return data, options, stem

    def stored(self, config, item, need_state: bool):
        data, options, _ = self.place(config, item)
        return self.exp._stored(config, item.dataset, data, options, need_state)

    def files_of(self, *records) -> dict:
        """The record and weight files of `records` in the run cache (name: bytes)."""
        out = {}
        for record in records:
            stem = record["cache"]["stem"]
            for path in self.exp.cache.paths(stem):
                if path.is_file():
                    out[path.name] = path.read_bytes()
        return out

    def send(self, name: str, files: dict):
        """The files on the cluster, sent once per `name` and shared by the tasks that read them."""
        if name not in self.scattered:
            self.scattered[name] = self.client.scatter([files], hash=False)[0]
        return self.scattered[name]


def fill(items: list[Wanted], *, workers: int = 1, device: str = "cpu", time_limit: float | None = None,
         threads: int | None = None, profile: str = "paper", data_dir=None, results_dir=None, overrides=None,
         past: dict | None = None, derive: dict | None = None, scheduler: str | None = None,
         runs_per_gpu: int | None = None, progress: bool = False, log=print) -> dict:
    """Train `items` (from `plan`) in order as Dask tasks until done or `time_limit` seconds have
    passed: on a new local cluster of `workers` processes (`threads` torch threads each; default: on
    a CPU their share of the cores, on a GPU one; with `device` cuda and `runs_per_gpu`, that many
    per GPU), or on the running cluster at `scheduler` (whose workers read their own data directory).
    `past`: `past_seconds` of the results directory, if read already; `derive`: what makes an item's
    derived result ({"factors": ifm.book.factors.factor_seed}, as ifm.book.pages.DERIVE).
    Returns counts: done, reused (made meanwhile by another process), failed, stopped (cut at the
    limit), not started, and `error` (a write the results directory refused, which ends the fill)."""
    import io

    from distributed import wait
    from distributed.scheduler import KilledWorker

    from ifm.runs import engine
    from ifm.runs.experiment import Experiment
    from ifm.runs.records import RunLock, check_results_dir, results_root

    started = time.time()
    deadline = started + time_limit if time_limit else math.inf
    gpu = device_kind(device) == "gpu"
    if threads is None:
        threads = 1 if gpu else max(1, (os.cpu_count() or 1) // workers)
    directory = check_results_dir(results_root(results_dir) / profile)
    exp = Experiment(profile, device=device, data_dir=data_dir, results_dir=results_dir, overrides=overrides,
                     log=io.StringIO())
    settings = {"device": device, "threads": threads, "profile": profile, "overrides": overrides,
                "data_dir": None if scheduler else data_dir, "derive": derive or {}}
    past, seen = past_seconds(results_dir, profile) if past is None else past, {}
    items = list(items)
    counts = {"done": 0, "reused": 0, "failed": 0, "stopped": 0, "not started": 0, "error": None}
    todo, later = list(range(len(items))), {}    # later: index -> when to look again at a run put off
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), unit="run", desc="fill", dynamic_ncols=True)
        log = lambda line, **_: bar.write(line)        # noqa: E731 (the lines go above the bar)

    def finished(index: int, status: str, text: str, seconds: float | None = None, worker: str = ""):
        counts[status] += 1
        item = items[index]
        if status == "done" and seconds is not None:
            seen.setdefault(time_key(item.config.model, item.dataset, item.config.recipe, device), []).append(
                seconds / share(item.data_options))
        tail = f" ({seconds:.0f} s{', ' + worker if worker else ''})" if seconds is not None else ""
        log(f"[{counts['done'] + counts['reused'] + counts['failed']}/{len(items)}] {item.study}: {item.label}: "
            f"{'FAILED: ' if status == 'failed' else ''}{text}{tail}", flush=True)
        if bar is not None:
            bar.total = len(items)
            bar.update(1)

    def prepare(index: int):
        """Submit `items[index]` (True), or say why not now: 'wait' (its FM is in flight or locked)."""
        item = items[index]
        config = item.config
        if index in later:          # put off before: another process may have written it meanwhile
            exp.cache.refresh()
        _, _, stem = run.place(config, item)
        if not item.derive and run.stored(config, item, need_state=False) is not None:
            finished(index, "reused", "made meanwhile by another process")
            return True
        given, shared = {}, None
        if item.derive:
            ifm = run.stored(config, item, need_state=False)
            fm = run.stored(exp.for_recipe(config.recipe).config(item.dataset, "fm", config.seed), item,
                            need_state=False)
            given = run.files_of(*(r for r in (ifm, fm) if r is not None))
            (kind,) = item.derive
            stem = f"{kind}-{item.dataset}-{stem.rsplit('-', 1)[1]}"
        elif config.uses_pretraining():
            fm_config = config.pretrain_config()
            fm = run.stored(fm_config, item, need_state=True)
            if fm is None:
                fm_stem = run.place(fm_config, item)[2]
                if fm_stem in run.failed:
                    finished(index, "failed", "its FM pre-training failed in this fill; nothing trained")
                    return True
                if fm_stem in run.busy:
                    return "wait"           # its FM is training in this fill: it goes once that is written
                if fm_stem in run.planned:
                    return "wait"           # its FM is in this fill's plan and has not started yet
                if run.exp.cache.holder(fm_stem):
                    later[index] = time.time() + RETRY_SECONDS
                    return "later"
                items.append(Wanted(item.study, item.dataset, item.data_options, fm_config,
                                    f"FM pre-training of {item.label}"))
                todo.insert(0, len(items) - 1)
                run.planned.add(fm_stem)
                return "added"
            shared = fm["cache"]["stem"]
            given = run.files_of(fm)
        for path in (directory / f"{stem}.json", directory / f"{stem}.pt"):
            if path.is_dir():
                finished(index, "failed", f"{path} is a directory: its record could not be written; nothing trained")
                return True
        lock = RunLock(directory / f"{stem}.lock")
        holder = lock.try_acquire()
        if holder is not None:
            if index not in later:
                log(f"put off: {item.study}: {item.label}: {holder} is training it; back to it later", flush=True)
            later[index] = time.time() + RETRY_SECONDS
            return "later"
        later.pop(index, None)
        data, options, _ = run.place(config, item)
        sent = run.send(shared, given) if shared else given
        future = client.submit(engine.train_task, item, settings, sent, engine.data_hash(data, options),
                               key=f"ifm-{stem}", pure=False, resources={"GPU": 1} if gpu else None,
                               priority=-index)
        run.in_flight[future] = (index, lock, time.time(), stem)
        run.busy.add(stem)
        return True

    def hand_out():
        """Submit what fits in the free slots, in plan order; a run that cannot start yet is skipped."""
        free = engine.slots(client, device) - len(run.in_flight)
        again = True
        while again and free > 0:
            again = False
            for index in list(todo):
                if free <= 0:
                    break
                if later.get(index, 0) > time.time() or \
                        (expected_seconds(items[index], device, seen, past) or 0) >= deadline - time.time():
                    continue
                outcome = prepare(index)
                if outcome is True:
                    todo.remove(index)
                    later.pop(index, None)
                    free = engine.slots(client, device) - len(run.in_flight)
                elif outcome == "added":        # its FM pre-training joined the plan, first: look again
                    again = True
                    break

    def collect(future) -> None:
        index, lock, since, stem = run.in_flight.pop(future)
        run.busy.discard(stem)
        try:
            if future.status == "finished":
                result = future.result()
                write_files(directory, result["files"])
                exp.cache.refresh()
                finished(index, "done", result["text"], result["seconds"], result["worker"])
            elif future.status == "error":
                error = future.exception()
                run.failed.add(stem)
                text = (f"its worker died on each of {engine.ALLOWED_FAILURES + 1} tries (killed for memory? "
                        "see the worker's log)" if isinstance(error, KilledWorker) else f"{type(error).__name__}: {error}")
                finished(index, "failed", text, time.time() - since)
        finally:
            lock.release()

    client, cluster = engine.connect(workers=workers, threads=threads, device=device, runs_per_gpu=runs_per_gpu,
                                     scheduler=scheduler)
    run = _Client(exp, directory, client, settings, gpu)
    run.planned = {run.place(item.config, item)[2] for item in items if not item.derive}
    try:
        with _sigterm_exits():
            while True:
                if not engine.slots(client, device):       # starting, or a dead worker being replaced
                    client.wait_for_workers(1, timeout=WORKER_WAIT)
                hand_out()
                if not (run.in_flight or later):
                    break
                timeout = max(0.1, min(5.0, deadline - time.time()))
                if run.in_flight:
                    try:
                        done = wait(list(run.in_flight), timeout=timeout, return_when="FIRST_COMPLETED").done
                    except TimeoutError:
                        done = set()
                else:
                    time.sleep(min(timeout, max(0.1, min(later.values()) - time.time())))
                    done = set()
                for future in done:
                    collect(future)
                if time.time() >= deadline:
                    for index, lock, since, stem in run.in_flight.values():
                        log(f"stopped at the time limit: {items[index].label} (after {time.time() - since:.0f} s; "
                            "no record of it was written)", flush=True)
                        counts["stopped"] += 1
                    break
    except TimeoutError:
        counts["error"] = f"no Dask worker joined within {WORKER_WAIT:.0f} s"
        log(f"error: {counts['error']}; the fill stops", flush=True)
    except WriteError as err:
        counts["error"] = str(err)
        log(f"error: {err}; the fill stops (nothing half-written is left)", flush=True)
    finally:
        client.cancel(list(run.in_flight))
        for index, lock, since, stem in run.in_flight.values():
            lock.release()
        if bar is not None:
            bar.close()
        client.close()
        if cluster is not None:
            cluster.close()
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
    from ifm.runs.args import LIMITS, device_arg, duration_arg, number_arg, path_arg, recipes_arg, scheduler_arg
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
    p.add_argument("--scheduler", metavar="tcp://HOST:8786", type=scheduler_arg,
                   help="train on the running Dask cluster at this address (its workers read their own data "
                        "directory); default: a new local cluster of --workers processes on this machine")
    p.add_argument("--runs-per-gpu", type=number_arg("runs_per_gpu"),
                   help=f"with --device cuda: runs trained at once on each GPU, {LIMITS['runs_per_gpu']} "
                        "(a local worker process each; default: --workers in all)")
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
                  derive=derive, scheduler=args.scheduler, runs_per_gpu=args.runs_per_gpu, progress=True)
    print(summary(counts), flush=True)
    if counts["error"]:
        return 1
    if counts["stopped"] or counts["not started"]:
        print("to continue: the same command again (finished runs are reused from the cache)", flush=True)
    return 1 if counts["failed"] else 0
