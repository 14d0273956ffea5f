"""`python -m ifm fill`: train the runs the book still lacks, most important pages first, as Dask
tasks on a local cluster or on any running Dask cluster, within a time limit.

    python -m ifm fill [--profile paper] [--recipe paper,code] [--study table3 ...] [--dataset frappe ...]
                       [--workers N] [--threads T] [--device cuda --runs-per-gpu 14]
                       [--scheduler tcp://HOST:8786] [--time-limit 3h] [--list]

What to train is `ifm.runs.plan`: every run the pages read that the results directory lacks, each
once, in the pages' order (Table 3 on Frappe, Fig. 6, Table 1, Table 4, Table 2, the data-scaling
study, the MovieLens stand-in's rows, the FEN sweeps; seed 0 before seed 1; FMs first). An FM
pre-training that no page reads (recipe code's IFM starts from an FM of its own settings) joins the
plan ahead of the runs that start from it, so it is trained once, not once per run.

Each run is one task (`ifm.runs.engine.train_task`, keyed by its record's name) on a
`distributed` cluster: by default a new local cluster of `--workers` processes listening on the
loopback only (`--threads` torch threads each; with `--device cuda --runs-per-gpu K`, K per GPU,
each run on its own `cuda:i`), or the cluster at `--scheduler`. A task trains in a scratch
directory of its worker and returns its record and weights as bytes; this process alone writes
them into the run cache, atomically, weights before the record that names them, so workers need
no shared file system. A worker that dies is replaced and its run tried once more, then reported
as failed; a run that raises is reported with its error and the others go on.

A run starts only if the time left exceeds what a run of that model on that dataset under that
recipe took so far (`ifm.runs.timing`); at `--time-limit` the runs still going are cancelled and
nothing of them is written. SIGTERM or Ctrl-C cancels the tasks, closes the local cluster and
gives back the runs' locks; after `kill -9` the local workers close themselves once their
scheduler has been gone for `engine.DEATH_TIMEOUT`. Two fills (or a fill and a notebook) on one
results directory never train one run twice: the run's lock (`ifm.runs.locks`) is held while it
trains, the cache is looked at again once the lock is taken, and a run another live process holds
is put off (`RETRY_SECONDS`), not waited for; a lock whose holder died, on any host, goes stale
and is broken with a message. The results directory is checked before anything starts, and a
write it refuses (a full disk) ends the fill with one line and removes what that run had written.
"""
from __future__ import annotations

import argparse
import functools
import math
import os
import sys
import time
from pathlib import Path

from ifm.runs.plan import STUDY_ORDER, Wanted, describe_plan, plan  # noqa: F401 (plan is fill's API too)
from ifm.runs.locks import sigterm_exits, sigterm_held_off
from ifm.runs.timing import at_full_budget, device_kind, expected_seconds, past_seconds, share, this_machine, time_key

# --------------------------------------------------------------------------- the client
RETRY_SECONDS = 30.0    # how long a run that another process is training is put off
WORKER_WAIT = 120.0     # how long the fill waits for a worker when it has none (starting, or being replaced)


class _Client:
    """What the client knows of the runs: where each lives in the run cache (from the client's own
    data), the files a run reads (sent to its worker), the locks it holds, the tasks in flight."""

    def __init__(self, exp, directory: Path, client, settings: dict, gpu: bool):
        self.exp, self.directory, self.client, self.settings, self.gpu = exp, directory, client, settings, gpu
        self.in_flight = {}         # future: (index, lock, since)
        self.busy = set()           # stems in flight
        self.failed = set()         # stems of the runs that failed in this fill
        self.planned = set()        # stems of the runs in this fill's plan (with the FM pre-trainings it added)
        self.written = set()        # stems of the runs this fill wrote
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


def worker_threads(threads: int | None, workers: int, device: str, scheduler: str | None = None) -> int:
    """Torch threads per worker: as asked; else one on a GPU, or on a running cluster (its workers
    are sized where they were started); else the worker's share of this machine's cores."""
    if threads:
        return threads
    return 1 if device_kind(device) == "gpu" or scheduler else max(1, (os.cpu_count() or 1) // workers)


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
    from ifm.runs.locks import RunLock
    from ifm.runs.records import WriteError, check_results_dir, results_root, write_run_files

    started = time.time()
    deadline = started + time_limit if time_limit else math.inf
    gpu = device_kind(device) == "gpu"
    threads = worker_threads(threads, workers, device, scheduler)
    directory = check_results_dir(results_root(results_dir) / profile)
    exp = Experiment(profile, device=device, data_dir=data_dir, results_dir=results_dir, overrides=overrides,
                     log=io.StringIO())
    settings = {"device": device, "threads": threads, "profile": profile, "overrides": overrides,
                "data_dir": None if scheduler else data_dir, "derive": derive or {}}
    if past is None:    # a running cluster's workers may be other machines: time them by any records
        past = past_seconds(results_dir, profile, None if scheduler else this_machine(device, threads))
    seen = {}
    items = list(items)
    counts = {"done": 0, "reused": 0, "failed": 0, "stopped": 0, "not started": 0, "error": None}
    todo, later = list(range(len(items))), {}    # later: index -> when to look again at a run put off
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), unit="run", desc="fill", dynamic_ncols=True)

        def log(line, **_):     # above the bar, flushed: a log redirected to a file shows each run as it ends
            bar.write(line)
            sys.stdout.flush()

    def finished(index: int, status: str, text: str, seconds: float | None = None, worker: str = "",
                 epochs: tuple | None = None):
        counts[status] += 1
        item = items[index]
        if status == "done" and seconds is not None:    # the next run of its kind is timed at its full budget
            seen.setdefault(time_key(item.config.model, item.dataset, item.config.recipe, device), []).append(
                at_full_budget(seconds, *(epochs or (None, None))) / share(item.data_options))
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
        if not item.derive and run.stored(config, item, need_state=item.keep_state) is not None:
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
                if fm_stem in run.written:      # written, yet not found where this run looks: never wait on it
                    finished(index, "failed", f"its FM pre-training {fm_stem} was written in this fill but its "
                                              "record and weights are not found under that name; nothing trained")
                    return True
                if fm_stem in run.busy:
                    return "wait"           # its FM is training in this fill: it goes once that is written
                if fm_stem in run.planned:
                    return "wait"           # its FM is in this fill's plan and has not started yet
                if run.exp.cache.holder(fm_stem):
                    later[index] = time.time() + RETRY_SECONDS
                    return "later"
                items.append(Wanted(item.study, item.dataset, item.data_options, fm_config,
                                    f"FM pre-training of {item.label}", keep_state=True))
                todo.insert(0, len(items) - 1)
                run.planned.add(fm_stem)
                return "added"
            shared = fm["cache"]["stem"]
            given = run.files_of(fm)
        for path in (directory / f"{stem}.json", directory / f"{stem}.pt"):
            if path.is_dir():
                finished(index, "failed", f"{path} is a directory: its record could not be written; nothing trained")
                return True
        with sigterm_held_off():
            lock = RunLock(directory / f"{stem}.lock")
            holder = lock.try_acquire()
            if holder is not None:
                if index not in later:
                    log(f"put off: {item.study}: {item.label}: {holder} is training it; back to it later", flush=True)
                later[index] = time.time() + RETRY_SECONDS
                return "later"
            later.pop(index, None)
            if not item.derive and run.stored(config, item, need_state=item.keep_state) is not None:
                lock.release()      # another process wrote it and let go of its lock since the look above
                finished(index, "reused", "made meanwhile by another process")
                return True
            try:
                data, options, _ = run.place(config, item)
                sent = run.send(shared, given) if shared else given
                future = client.submit(engine.train_task, item, settings, sent, engine.data_hash(data, options),
                                       key=f"ifm-{stem}", pure=False, resources={"GPU": 1} if gpu else None,
                                       priority=-index)
            except BaseException:
                lock.release()
                raise
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
        with sigterm_held_off():     # the lock is released, the record written whole, before an exit
            index, lock, since, stem = run.in_flight.pop(future)
            run.busy.discard(stem)
            try:
                if future.status == "finished":
                    result = future.result()
                    write_run_files(directory, result["files"])
                    run.written.add(stem)
                    exp.cache.refresh()
                    finished(index, "done", result["text"], result["seconds"], result["worker"], result.get("epochs"))
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
        with sigterm_exits():
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


def cmd_fill(args, pages: dict, derive: dict) -> int:
    from ifm.runs.profiles import get_profile, resolve_device
    from ifm.runs.records import check_results_dir, results_root

    check_results_dir(results_root(args.results_dir), write=not args.list)
    args.device = resolve_device(args.device, get_profile(args.profile))
    items = plan(args.profile, args.recipe, pages=pages, studies=args.study, datasets=args.dataset,
                 seeds=args.seeds, results_dir=args.results_dir)
    threads = worker_threads(args.threads, args.workers, args.device, args.scheduler)
    past = past_seconds(args.results_dir, args.profile, None if args.scheduler else this_machine(args.device, threads))
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
