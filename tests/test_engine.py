"""`fill` on Dask (`ifm.runs.engine`): the records a task returns are a plain training's, the client
alone writes them, a fill killed by any signal leaves no worker and no half-written file and resumes
from the cache, two fills share a results directory, `--scheduler` joins a cluster started apart,
and every way the results directory or the data can be wrong is one clear line before any work.
Local clusters of 2 processes and tiny synthetic runs, as in test_fill."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ifm.book.pages import PAGES
from ifm.cli import main
from ifm.runs import engine, experiment as ex, fill, locks, records
from ifm.training.loop import train
from test_fill import TINY, smoke_plan

ROOT = Path(__file__).parents[1]


def quiet(lines):
    return lambda *a, **k: lines.append(" ".join(map(str, a)))


def record_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*.json") if p.name.split("-")[0] in records.MODELS)


# --------------------------------------------------------------------------- what a task returns
def test_a_fills_records_are_those_of_a_plain_training_of_the_same_config(tmp_path):
    items = [i for i in smoke_plan(tmp_path) if not i.config.uses_pretraining()][:3]
    counts = fill.fill(items, workers=2, threads=1, profile="smoke", results_dir=tmp_path, overrides=TINY, log=quiet([]))
    assert counts["done"] == 3
    exp = ex.Experiment("smoke", results_dir=tmp_path, overrides=TINY, train_missing=False, log=None)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                    # as the worker: one thread, the same sums in the same order
    try:
        for item in items:
            data = exp.dataset(item.dataset)
            stored = exp.run(item.config, item.dataset)
            assert stored is not None, item.label
            plain = train(item.config, data).record
            options = exp.data_options(item.dataset, None)
            assert stored["cache"]["key"] == records.run_key(item.config, data, options)[0]
            assert stored["epochs_run"] == plain["epochs_run"] and stored["best_epoch"] == plain["best_epoch"]
            assert stored["valid"] == plain["valid"] and stored["test"] == plain["test"], item.label
            assert stored["config"]["device"] == "cpu"
    finally:
        torch.set_num_threads(threads)


def test_a_worker_whose_data_differ_from_the_clients_refuses_to_train_and_names_both_hashes(tmp_path, monkeypatch):
    items = [i for i in smoke_plan(tmp_path) if not i.config.uses_pretraining()][:1]
    monkeypatch.setattr(engine, "data_hash", lambda data, options: "0123456789abcdef")   # the client's side only
    lines = []
    counts = fill.fill(items, workers=1, profile="smoke", results_dir=tmp_path, overrides=TINY, log=quiet(lines))
    assert counts["failed"] == 1 and counts["done"] == 0
    (line,) = [line for line in lines if "FAILED" in line]
    assert "DataMismatch: worker 0 (tcp://127.0.0.1:" in line and "(identity 0123456789abcdef)" in line
    assert "synthetic data (identity " in line and "give every worker the same data directory" in line
    assert not record_files(tmp_path)


def test_local_workers_start_with_the_asked_threads_and_without_dasks_malloc_trimming():
    """Dask's default MALLOC_TRIM_THRESHOLD_=65536 has glibc map and unmap every batch's tensors at
    each step (an AFM epoch 2.5 times as long, most of the extra in the kernel): the local workers
    must start without it, and with the thread count asked for in every BLAS and OpenMP variable."""
    client, cluster = engine.connect(workers=1, threads=2, device="cpu", runs_per_gpu=None, scheduler=None)
    try:
        names = ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
        (seen,) = client.run(lambda: {name: os.environ.get(name) for name in names}).values()
        assert seen == {"MALLOC_TRIM_THRESHOLD_": None, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2",
                        "OPENBLAS_NUM_THREADS": "2"}
    finally:
        client.close()
        cluster.close()


def test_bench_with_workers_times_the_steps_inside_each_local_worker(capsys):
    """`bench --workers 2` runs the same harness in the fill's local cluster, a row per worker naming
    it, with the kernel's share of its CPU time (the sign of the malloc trimming above)."""
    assert main(["bench", "--dataset", "synthetic", "--model", "fm", "--batches", "2", "--workers", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    threads = fill.worker_threads(None, 2, "cpu")          # the cores shared out, as fill does
    assert f"2 local Dask worker(s) at once, {threads} thread(s) each" in out[0]
    rows = [line for line in out if "samples/s" in line]
    assert len(rows) == 2 and all("kernel" in line and "of its CPU time" in line for line in rows)
    assert sorted(line.split("[worker ")[1][0] for line in rows) == ["0", "1"]


# --------------------------------------------------------------------------- GPUs
def test_on_a_gpu_box_each_gpu_gets_runs_per_gpu_workers_and_each_worker_its_own_cuda_device(monkeypatch):
    import distributed

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    for name, device in [(0, "cuda:0"), (1, "cuda:1"), (2, "cuda:0"), (13, "cuda:1")]:
        monkeypatch.setattr(distributed, "get_worker", lambda name=name: type("W", (), {"name": name})())
        assert engine.worker_device("cuda") == device
    assert engine.worker_device("cuda:1") == "cuda:1" and engine.worker_device("cpu") == "cpu"
    client, cluster = engine.connect(workers=1, threads=1, device="cuda", runs_per_gpu=3, scheduler=None)
    try:
        client.wait_for_workers(6, timeout=120)         # 3 per GPU on 2 GPUs, one GPU share each
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
        assert sorted(w["resources"]["GPU"] for w in workers) == [1] * 6 and engine.slots(client, "cuda") == 6
    finally:
        client.close()
        cluster.close()


def test_a_worker_given_one_of_several_gpus_trains_there_under_the_key_the_client_planned(tmp_path, monkeypatch):
    """With `--device cuda` shared out, worker 1 of 2 GPUs makes cuda:1 its current card and its run keeps
    the device `cuda`, so the record lands under the stem the client planned and the runs that start
    from it find it. (A fill on an H200 once trained its FMs under `cuda:k` keys, and none of the 46
    runs waiting for them started.) No GPU here: the card and the training are stubbed."""
    import dataclasses
    import io

    item = [i for i in smoke_plan(tmp_path) if not i.config.uses_pretraining()][0]
    item = dataclasses.replace(item, config=dataclasses.replace(item.config, device="cuda"))
    current, trained = [], []
    monkeypatch.setattr(engine, "worker_device", lambda device: "cuda:1" if device == "cuda" else device)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)

    def run(self, config, dataset, data_options=None):
        trained.append((config.device, self.device, self._place(config, dataset, data_options)[-1]))
        return {"test": {"rmse": 0.5}, "epochs_run": 1}

    monkeypatch.setattr(ex.Experiment, "run", run)
    client = ex.Experiment("smoke", device="cuda", results_dir=tmp_path, overrides=TINY, log=io.StringIO())
    planned = client._place(item.config, item.dataset, item.data_options or None)[-1]
    settings = {"device": "cuda", "threads": 1, "profile": "smoke", "overrides": TINY, "data_dir": None,
                "derive": {}}
    result = engine.train_task(item, settings, {}, None)
    assert current == ["cuda:1"] and result["device"] == "cuda:1"
    assert result["epochs"] == (1, TINY["epochs"])      # what fill times the next run of its kind by
    assert trained == [("cuda", "cuda", planned)]


# --------------------------------------------------------------------------- the results directory
def test_a_results_path_that_is_a_file_or_cannot_be_written_is_one_line_before_any_work(tmp_path, monkeypatch, capsys):
    a_file = tmp_path / "hostname"
    a_file.write_text("not a directory\n")
    with pytest.raises(ValueError, match=r"results directory .*hostname/smoke: .*hostname is a file, not a directory"):
        records.check_results_dir(a_file / "smoke")
    for argv in (["fill", "--results-dir", str(a_file), "--list"], ["fill", "--results-dir", str(a_file)]):
        assert main(argv) == 2
        out, err = capsys.readouterr()
        assert out == "" and err == f"error: results directory {a_file}: {a_file} is a file, not a directory\n"
    # root writes anywhere, so a read-only directory is made by refusing the write check
    import tempfile

    def refuse(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)
    with pytest.raises(ValueError, match=r"results directory .*ro: cannot write in it \(Permission denied\)"):
        records.check_results_dir(tmp_path / "ro")


def test_a_full_disk_ends_the_fill_with_one_line_and_leaves_no_partial_record_or_state(tmp_path, monkeypatch):
    items = [i for i in smoke_plan(tmp_path) if i.config.model == "wide_deep"][:1]   # its FM keeps weights (.pt)
    real = Path.write_bytes

    def full(self, data):
        if self.name.endswith(".json.tmp") or ".json." in self.name:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)          # the client's writes only: workers train as usual
    lines = []
    counts = fill.fill(items, workers=1, profile="smoke", results_dir=tmp_path, overrides=TINY, log=quiet(lines))
    assert counts["error"] and "No space left on device" in counts["error"] and counts["done"] == 0
    assert lines[-1].startswith("error: cannot write ") and "nothing half-written is left" in lines[-1]
    left = sorted(p.name for p in (tmp_path / "smoke").iterdir())
    assert left == [], left                                  # no record, no state, no temporary, no lock
    monkeypatch.setattr(Path, "write_bytes", real)
    assert fill.fill(items, workers=1, profile="smoke", results_dir=tmp_path, overrides=TINY, log=quiet([]))["done"] == 2   # its FM, then it


def test_a_record_path_that_is_a_directory_fails_that_run_before_training_and_the_rest_go_on(tmp_path):
    items = [i for i in smoke_plan(tmp_path) if not i.config.uses_pretraining()][:2]
    exp = ex.Experiment("smoke", results_dir=tmp_path, overrides=TINY, log=None)
    stem = exp._place(items[0].config, items[0].dataset, None)[-1]
    (tmp_path / "smoke" / f"{stem}.json").mkdir(parents=True)
    lines = []
    with pytest.warns(UserWarning, match=r"ignoring unreadable run record .*Is a directory"):
        counts = fill.fill(items, workers=1, profile="smoke", results_dir=tmp_path, overrides=TINY, log=quiet(lines))
    assert counts["failed"] == 1 and counts["done"] == 1
    assert any("is a directory: its record could not be written; nothing trained" in line for line in lines)


# --------------------------------------------------------------------------- locks that never block forever
def test_a_lock_of_another_host_is_honoured_while_fresh_and_broken_once_stale(tmp_path):
    lock = tmp_path / "run.lock"
    lock.write_text("12345 otherhost\n")
    assert locks.RunLock(lock).try_acquire() == "pid 12345 on otherhost"       # fresh: its holder may be alive
    old = time.time() - locks.LOCK_STALE - 1
    os.utime(lock, (old, old))
    held = locks.RunLock(lock)
    with pytest.warns(UserWarning, match=r"breaking the stale lock .*run.lock \(12345 otherhost: that process is gone"):
        assert held.try_acquire() is None
    assert lock.read_text().split() == [str(os.getpid()), socket.gethostname()]
    held.release()
    assert not lock.exists()


def test_a_held_lock_is_touched_so_it_never_looks_stale_while_its_holder_lives(tmp_path, monkeypatch):
    monkeypatch.setattr(locks, "LOCK_BEAT", 0.05)
    lock = tmp_path / "run.lock"
    held = locks.RunLock(lock)
    assert held.try_acquire() is None
    old = time.time() - locks.LOCK_STALE - 1
    os.utime(lock, (old, old))
    time.sleep(0.3)
    assert time.time() - lock.stat().st_mtime < 1 and locks.live_holder(lock) is not None
    held.release()


def test_a_fill_breaks_a_stale_lock_of_another_host_and_trains_the_run(tmp_path):
    items = [i for i in smoke_plan(tmp_path) if not i.config.uses_pretraining()][:1]
    exp = ex.Experiment("smoke", results_dir=tmp_path, overrides=TINY, log=None)
    lock = exp.cache.directory / f"{exp._place(items[0].config, items[0].dataset, None)[-1]}.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text("12345 otherhost\n")
    old = time.time() - locks.LOCK_STALE - 1
    os.utime(lock, (old, old))
    with pytest.warns(UserWarning, match="breaking the stale lock"):
        counts = fill.fill(items, workers=1, profile="smoke", results_dir=tmp_path, overrides=TINY, log=quiet([]))
    assert counts["done"] == 1 and not lock.exists()


# --------------------------------------------------------------------------- killed fills, two fills
FILL_SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
from ifm.runs import fill
from test_fill import PAGES, TINY
from test_engine import SLOW
overrides = {{"tiny": TINY, "slow": SLOW}}[{mode!r}]
if __name__ == "__main__":
    items = fill.plan("smoke", "paper,code", pages=PAGES, studies=["table3"], seeds=[0], results_dir={results!r},
                      datasets=["synthetic"], overrides=overrides)
    counts = fill.fill(items, workers=2, threads=1, profile="smoke", results_dir={results!r}, overrides=overrides,
                       log=lambda *a, **k: print(*a, flush=True))
    print("COUNTS", json.dumps(counts), flush=True)
"""


# runs of a second or so each, so that a fill can be killed halfway through its plan
SLOW = {**TINY, "epochs": 30, "stopping": "patience", "patience": 100, "dataset_options": {"synthetic": {"n": 2000}}}


def start_fill(tmp_path, results: Path, mode: str, name: str = "fill") -> subprocess.Popen:
    script = tmp_path / f"{name}.py"
    script.write_text(FILL_SCRIPT.format(tests=str(Path(__file__).parent), mode=mode, results=str(results)))
    return subprocess.Popen([sys.executable, str(script)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, start_new_session=True)


def descendants(pid: int) -> set[int]:
    """The processes below `pid` now (from /proc)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def alive(pids) -> set[int]:
    out = set()
    for pid in pids:
        try:
            os.kill(pid, 0)
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                out.add(pid)
        except (ProcessLookupError, FileNotFoundError):
            pass
    return out


def wait_for(proc, results: Path, records_done: int, timeout: float = 180) -> set[int]:
    """Wait until `proc`'s fill has written `records_done` records and holds a run's lock; its worker processes."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        workers = descendants(proc.pid)
        if len(record_files(results)) >= records_done and list(results.rglob("*.lock")) and len(workers) >= 2:
            return workers
        time.sleep(0.05)
    raise AssertionError(f"the fill did not get that far within {timeout} s")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_fill_leaves_no_worker_and_no_half_written_file_and_the_next_fill_resumes(tmp_path, sig):
    results = tmp_path / "results"
    proc = start_fill(tmp_path, results, "slow")
    try:
        workers = wait_for(proc, results, records_done=2)
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == (128 + sig if sig == signal.SIGTERM else -sig)
        deadline = time.time() + 90         # after SIGKILL the workers go once they have lost their scheduler
        while alive(workers) and time.time() < deadline:
            time.sleep(0.5)
        assert not alive(workers), f"workers {alive(workers)} outlived their fill (signal {sig})"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not list(results.rglob("*.tmp"))
    for path in record_files(results):
        json.loads(path.read_text())                            # every record there is whole
    kept = {p: p.stat().st_mtime_ns for p in record_files(results)}
    locks = list(results.rglob("*.lock"))
    assert not locks if sig == signal.SIGTERM else locks        # given back; SIGKILL's are a dead pid's
    plan = dict(studies=["table3"], seeds=[0], results_dir=results, datasets=["synthetic"], overrides=SLOW)
    missing = fill.plan("smoke", "paper,code", pages=PAGES, **plan)
    assert missing
    lines = []
    with pytest.warns(UserWarning, match="breaking the stale lock") if locks else contextlib.nullcontext():
        counts = fill.fill(missing, workers=2, profile="smoke", results_dir=results, overrides=SLOW, log=quiet(lines))
    assert counts["done"] >= len(missing) and counts["failed"] == 0 and counts["reused"] == 0, lines
    assert fill.plan("smoke", "paper,code", pages=PAGES, **plan) == []
    assert {p: p.stat().st_mtime_ns for p in kept} == kept      # what the killed fill finished is read, not retrained
    assert not list(results.rglob("*.lock"))


def test_two_fills_on_one_results_directory_never_train_the_same_run_twice(tmp_path):
    results = tmp_path / "results"
    procs = [start_fill(tmp_path, results, "tiny", name=f"fill{k}") for k in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    counts = [json.loads(out.split("COUNTS ", 1)[1]) for out in outputs]
    assert all(c["failed"] == 0 and c["error"] is None and c["not started"] == 0 for c in counts), outputs
    trained = [line.split(": ", 2)[1] for out in outputs for line in out.splitlines()
               if line.startswith("[") and "made meanwhile" not in line]
    assert len(trained) == len(set(trained)), "a run was trained by both fills"
    assert sum(c["done"] for c in counts) == len(record_files(results)) == len(trained)
    assert not list(results.rglob("*.lock")) and not list(results.rglob("*.tmp"))


def test_a_run_written_by_another_fill_between_its_look_and_its_lock_is_reused_not_trained_again(tmp_path, monkeypatch):
    """The other fill writes the record and lets go of its lock after this one found no record and
    before it takes the lock (the window behind a rare failure of the test above): the cache is
    looked at again under the lock, as `Experiment.run` does, and the run is not trained twice."""
    items = [i for i in smoke_plan(tmp_path / "a") if not i.config.uses_pretraining()][:1]
    assert fill.fill(items, workers=1, profile="smoke", results_dir=tmp_path / "a", overrides=TINY,
                     log=quiet([]))["done"] == 1
    (made,) = record_files(tmp_path / "a")
    take = locks.RunLock.try_acquire

    def the_other_fill_finishes_first(lock):
        for path in made.parent.iterdir():              # its record and weights, written whole
            shutil.copy2(path, Path(lock.path).parent / path.name)
        return take(lock)

    monkeypatch.setattr(locks.RunLock, "try_acquire", the_other_fill_finishes_first)
    lines = []
    counts = fill.fill(items, workers=1, profile="smoke", results_dir=tmp_path / "b", overrides=TINY, log=quiet(lines))
    assert counts["done"] == 0 and counts["reused"] == 1 and counts["failed"] == 0, lines
    assert "made meanwhile by another process" in lines[-1]
    (kept,) = record_files(tmp_path / "b")
    assert kept.read_bytes() == made.read_bytes()       # the other fill's record, not overwritten by a second run
    assert not list((tmp_path / "b").rglob("*.lock"))


# --------------------------------------------------------------------------- a cluster started apart
def test_fill_joins_a_running_scheduler_and_two_workers_started_as_separate_processes(tmp_path):
    file = tmp_path / "scheduler.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                 "--port", "0", "--dashboard-address", ":0", "--scheduler-file", str(file)],
                                cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.time() + 60
        while not file.exists() and time.time() < deadline:
            time.sleep(0.2)
        address = json.loads(file.read_text())["address"]
        for k in range(2):
            started.append(subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nworkers", "1", "--nthreads", "1",
                 "--name", f"apart-{k}", "--no-dashboard", "--local-directory", str(tmp_path / f"w{k}")],
                cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        items = smoke_plan(tmp_path / "results")[:4]
        lines = []
        counts = fill.fill(items, workers=1, profile="smoke", results_dir=tmp_path / "results", overrides=TINY,
                           scheduler=address, log=quiet(lines))
        assert counts["failed"] == 0 and counts["done"] >= len(items), lines
        assert {w for line in lines for w in ("apart-0", "apart-1") if f"worker {w} (" in line} == {"apart-0", "apart-1"}
        assert smoke_plan(tmp_path / "results")[:1] != items[:1]
        assert all(p.poll() is None for p in started)       # fill leaves a cluster it did not start running
    finally:
        for p in started:
            p.terminate()
        for p in started:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def test_an_fm_whose_record_is_here_but_not_its_weights_is_trained_again_for_the_runs_that_start_from_it(tmp_path):
    """Committed records carry no weights: a run that starts from an FM must get that FM trained
    again on this machine, not find its record, call it made meanwhile and wait for ever."""
    items = [i for i in smoke_plan(tmp_path) if i.config.model == "wide_deep"][:1]
    assert fill.fill(items, workers=1, profile="smoke", results_dir=tmp_path, overrides=TINY, log=quiet([]))["done"] == 2
    for path in (tmp_path / "smoke").glob("*.pt"):
        path.unlink()                                   # as in a fresh clone: records, no weights
    for path in (tmp_path / "smoke").glob("wide_deep-*.json"):
        path.unlink()
    lines = []
    counts = fill.fill(items, workers=1, profile="smoke", results_dir=tmp_path, overrides=TINY, log=quiet(lines))
    assert counts["done"] == 2 and counts["not started"] == counts["reused"] == 0, lines
    assert "FM pre-training of Wide&Deep" in lines[0] and "Wide&Deep on synthetic" in lines[1]
    assert smoke_plan(tmp_path)[:1] != items


def test_a_runs_line_names_what_its_study_chooses_on():
    bars = {"monitor": "auc", "valid": {"auc": 0.98123, "logloss": 0.2}, "test": {"auc": 0.97654, "logloss": 0.21},
            "epochs_run": 12}
    assert engine.outcome(bars) == "valid AUC 0.9812, test AUC 0.9765, log loss 0.2100, 12 epochs"
    paper = {"monitor": "rmse", "valid": {"rmse": 0.3}, "test": {"rmse": 0.31234}, "epochs_run": 40}
    assert engine.outcome(paper) == "test rmse 0.3123, 40 epochs"
    assert engine.outcome({"test": {"logloss": 0.4}, "epochs_run": 3}) == "test logloss 0.4000, 3 epochs"
