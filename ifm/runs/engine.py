"""Where `fill`'s runs train: Dask distributed workers. A local cluster of worker processes on
this machine by default (listening on the loopback only), or any running Dask cluster through its
scheduler's address (`dask scheduler` and `dask worker`, dask-jobqueue's SLURMCluster on a Slurm
cluster, dask-kubernetes).

A task trains one run (`train_task`) in a scratch run cache of its own, which holds only what the
client sent it (the record and weights of the FM it starts from, or of the runs a derived result
reads), and returns every file it made there as bytes. The client alone writes them into the
results directory (`ifm.runs.fill`), so the workers need no shared file system and the run cache
stays the single source of truth. Before training, a task checks that its worker's data (read from
its own data directory) is the client's: the same data identity hash (`data_hash`), else
`DataMismatch` names the worker and both hashes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import tempfile
import time
from pathlib import Path

# A task whose worker dies is tried on another worker once more, then reported as failed.
ALLOWED_FAILURES = 1
# A local worker whose scheduler (the fill's process) is gone closes itself after this long.
DEATH_TIMEOUT = "20s"
_WORKER_DATA: dict = {}     # per worker process: the datasets it loaded, by (data dir, profile split seed)


class DataMismatch(RuntimeError):
    """A worker's data differ from the client's."""


def data_hash(dataset, options: dict | None) -> str:
    """16 hex digits of the data identity (`ifm.runs.records.data_identity`) that run keys hash."""
    from ifm.runs.records import data_identity

    text = json.dumps(data_identity(dataset, options), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def connect(*, workers: int, threads: int, device: str, runs_per_gpu: int | None, scheduler: str | None):
    """(client, cluster): a client of the running cluster at `scheduler`, else of a new local
    cluster of `workers` single-task processes with `threads` torch threads each (on a GPU box:
    `runs_per_gpu` processes per GPU, each declaring one `GPU` resource). `cluster` is None for a
    cluster this call did not start."""
    import dask
    from distributed import Client, LocalCluster

    dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES,
                     "distributed.worker.daemon": False,
                     "distributed.logging.distributed": "error",
                     "distributed.nanny.pre-spawn-environ": worker_environment(threads)})
    if scheduler:
        return Client(scheduler, timeout="30s"), None
    gpu = device.startswith("cuda")
    if gpu and runs_per_gpu:
        import torch

        workers = max(1, torch.cuda.device_count()) * runs_per_gpu
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=":0", resources={"GPU": 1} if gpu else None,
                           death_timeout=DEATH_TIMEOUT, silence_logs=50,
                           # again after the start: a variable already in this process's environment
                           # (an earlier cluster's, or the shell's) would win over pre-spawn-environ
                           env={k: v for k, v in worker_environment(threads).items() if v is not None})
    return Client(cluster), cluster


def worker_environment(threads: int) -> dict:
    """The environment a local worker process starts with (Dask's `pre-spawn-environ`): `threads`
    for the BLAS and OpenMP pools, and not Dask's default MALLOC_TRIM_THRESHOLD_=65536. That
    setting makes glibc hand every freed block over 64 KiB back to the system and turns off its
    adaptive mmap threshold, so each batch's tensors (several MiB) are mapped, page-faulted in and
    unmapped again at every step. Two workers on this project's 2-core VM, one thread each: an AFM
    epoch on Frappe_x1 (an open-benchmark trial) took 10.2 s with the variable, half of it in the
    kernel, and 4.1 s without; an IFM epoch on the MovieLens stand-in (recipe code) 19.7 s and
    10.6 s. `python -m ifm bench --workers N` shows it: the kernel's share of each worker's CPU
    time. (What the trimming buys, a worker's memory handed back between tasks, matters little
    here: a worker trains one run at a time.) A cluster started apart (`--scheduler`) reads its own
    Dask config: book/reproduce.md says how to turn the variable off there."""
    return {"MALLOC_TRIM_THRESHOLD_": None, **{name: str(threads) for name in
                                               ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}}


def bench_in_workers(bench, args: tuple, *, workers: int, threads: int, device: str) -> list[dict]:
    """The rows of `bench(*args)` (`ifm.training.bench.bench_ours`) run at once in each of `workers`
    local workers, the cluster `fill` trains on, with `threads` torch threads each: what a run gets
    there, beside the same bench in a plain process (`python -m ifm bench --workers N`)."""
    client, cluster = connect(workers=workers, threads=threads, device=device, runs_per_gpu=None, scheduler=None)
    try:
        client.wait_for_workers(workers, timeout=120)
        addresses = list(client.scheduler_info(n_workers=-1)["workers"])
        return client.gather([client.submit(_bench_task, bench, args, threads, pure=False, workers=[address])
                              for address in addresses])
    finally:
        client.close()
        cluster.close()


def _bench_task(bench, args: tuple, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    return {**bench(*args), "where": worker_name()}


def slots(client, device: str) -> int:
    """How many runs the cluster trains at once now: its GPU resources on a GPU, else its worker threads."""
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    if device.startswith("cuda"):
        return int(sum(w.get("resources", {}).get("GPU", 0) for w in workers))
    return sum(w.get("nthreads", 1) for w in workers)


def worker_device(device: str) -> str:
    """The device this worker trains on: `cuda` becomes `cuda:i`, the worker's share of the node's GPUs
    (local workers are named 0, 1, ...: worker k takes GPU k mod the GPU count)."""
    if device != "cuda":
        return device
    import torch

    from distributed import get_worker

    name = get_worker().name
    index = name if isinstance(name, int) else int(hashlib.sha256(str(name).encode()).hexdigest(), 16)
    return f"cuda:{index % max(1, torch.cuda.device_count())}"


def worker_name() -> str:
    from distributed import get_worker

    with contextlib.suppress(ValueError):
        worker = get_worker()
        return f"worker {worker.name} ({worker.address})"
    return "this process"


def outcome(record: dict) -> str:
    """A run's result in a few words: the test metric of the paper's tables (RMSE or log loss), and
    under the benchmark's protocol first the validation AUC a study chooses on and the test AUC."""
    valid, test, epochs = record.get("valid") or {}, record.get("test") or {}, record.get("epochs_run")
    if record.get("monitor") == "auc":
        return (f"valid AUC {valid.get('auc', float('nan')):.4f}, test AUC {test.get('auc', float('nan')):.4f}, "
                f"log loss {test.get('logloss', float('nan')):.4f}, {epochs} epochs")
    metric = "rmse" if "rmse" in test else "logloss"
    return f"test {metric} {test.get(metric, float('nan')):.4f}, {epochs} epochs"


def train_task(item, settings: dict, given: dict, expected: str | None) -> dict:
    """Train `item` (an `ifm.runs.plan.Wanted`) on this worker; return {"files": {name: bytes} of
    every record and weight file it made, "seconds", "epochs" (the run's epochs trained and its
    budget; None for a derived result), "text", "worker", "device"}. `given`: the
    files (name: bytes) the run reads, put in its scratch run cache first; `expected`: the client's
    `data_hash` of the item's data."""
    import torch

    from ifm.runs.experiment import Experiment

    torch.set_num_threads(settings["threads"])
    device = worker_device(settings["device"])
    if device != settings["device"]:    # "cuda" shared out among the node's GPUs: this worker's card is made
        torch.cuda.set_device(device)   # the current one, and the run keeps "cuda", the device its key was planned on
    config = dataclasses.replace(item.config, device=settings["device"])
    from distributed import get_worker

    parent = None               # outside a worker (a test calling this directly): the system's temp folder
    with contextlib.suppress(ValueError):
        parent = get_worker().local_directory
    with tempfile.TemporaryDirectory(prefix="ifm-run-", dir=parent) as scratch:
        folder = Path(scratch) / settings["profile"]
        folder.mkdir()
        for name, blob in given.items():
            (folder / name).write_bytes(blob)
        exp = Experiment(settings["profile"], recipe=config.recipe, device=config.device, data_dir=settings["data_dir"],
                         results_dir=scratch, overrides=settings["overrides"], log=io.StringIO())
        exp._datasets = _WORKER_DATA.setdefault((str(settings["data_dir"]), exp.profile.split_seed), {})
        mine = data_hash(exp.dataset(item.dataset, item.data_options or None),
                         exp.data_options(item.dataset, item.data_options or None))
        if expected is not None and mine != expected:
            raise DataMismatch(f"{worker_name()}: its {item.dataset} data (identity {mine}) are not the client's "
                               f"(identity {expected}); give every worker the same data directory")
        started, epochs = time.time(), None
        if item.derive:             # Table 1: the factors of a recorded IFM, from its weights
            (kind, fields), = item.derive.items()
            settings["derive"][kind](exp, item.dataset, fields, config.seed)
            text = f"Table 1 {kind} derived"
        else:
            record = exp.run(config, item.dataset, data_options=item.data_options or None)
            text, epochs = outcome(record), (record.get("epochs_run"), config.epochs)
        files = {p.name: p.read_bytes() for p in sorted(folder.iterdir())
                 if p.suffix in (".json", ".pt") and given.get(p.name) != p.read_bytes()}
    return {"files": files, "seconds": time.time() - started, "epochs": epochs, "text": text, "worker": worker_name(),
            "device": device}

