"""`ifm.runs.fill`: the plan of missing runs (each once, in the pages' order), the parallel workers,
the time limit, and the command line. Tiny synthetic data, as in test_experiments."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import time

import pytest

from ifm.runs import experiment as ex, fill, locks, timing
from ifm.book import factors, studies
from ifm.book.pages import DERIVE, PAGES
from ifm.cli import main
from test_experiments import TINY

SYNTHETIC = {"datasets": ["synthetic"], "overrides": TINY}
# runs that go on until stopped from outside: no early stop within 10000 epochs
LONG = {**TINY, "epochs": 10000, "stopping": "patience", "patience": 10000}


def smoke_plan(tmp_path, studies_=("table3",), seeds=(0,)):
    return fill.plan("smoke", "paper,code", pages=PAGES, studies=list(studies_), seeds=list(seeds), results_dir=tmp_path, **SYNTHETIC)


def test_the_plan_lists_each_missing_run_once_in_the_order_the_pages_fill(tmp_path):
    items = smoke_plan(tmp_path, ("depth", "table3", "table2"), seeds=(0, 1))
    profile = ex.Experiment("smoke", overrides=TINY, log=None).profile
    # Table 3: every model under both recipes, except the three whose settings are one and the same.
    table3 = [i for i in items if i.study == "table3"]
    shared = {"libfm", "wide_deep", "deepfm"} & set(profile.regression_models)
    assert len(table3) == 2 * (2 * len(profile.regression_models) - len(shared))
    for model in shared:
        assert sum(i.config.model == model for i in table3) == 2          # one per seed, not one per recipe
    # Pages in order (Table 3, Table 2, the sweeps), seed 0 of a study before its seed 1.
    studies_in_order = [i.study for i in items]
    assert studies_in_order.index("table2") > max(k for k, s in enumerate(studies_in_order) if s == "table3")
    assert studies_in_order.index("depth") > max(k for k, s in enumerate(studies_in_order) if s == "table2")
    for study in ("table3", "depth"):
        seeds = [i.config.seed for i in items if i.study == study]
        assert seeds == sorted(seeds)
    # A run two studies ask for (Table 2's FM pre-training, the depth-2 IFM of Table 3) is planned once.
    keys = [json.dumps([i.dataset, i.data_options, dataclasses.asdict(i.config)], sort_keys=True, default=str)
            for i in items]
    assert len(keys) == len(set(keys))
    depth_grid = TINY["depth_grid"]
    assert len([i for i in items if i.study == "depth"]) == 2 * 2 * (len(depth_grid) - 1)   # Table 3's depth is there


def test_the_stand_in_rows_come_after_the_scaling_study_and_before_the_sweeps():
    config = ex.Experiment("smoke", overrides=TINY, log=None).config("frappe", "ifm", 0)
    order = sorted([fill.Wanted(s, d, {}, config, "") for s, d in [("depth", "frappe"), ("table3", "movielens"),
                    ("scaling", "frappe"), ("table3", "frappe"), ("table2", "frappe")]], key=fill.Wanted.order)
    assert [(w.study, w.dataset) for w in order] == [("table3", "frappe"), ("table2", "frappe"), ("scaling", "frappe"),
                                                     ("table3", "movielens"), ("depth", "frappe")]


def test_a_record_made_on_another_device_or_recipe_serves_the_run():
    config = ex.Experiment("smoke", overrides=TINY, log=None).config("frappe", "fm", 0)
    same = [(c.recipe, c.device) for c in ex.equivalents(config)]
    assert same == [("paper", "cpu"), ("paper", "cuda"), ("code", "cpu"), ("code", "cuda")]
    on_gpu = [(c.recipe, c.device) for c in ex.equivalents(dataclasses.replace(config, device="cuda:1"))]
    assert on_gpu[:3] == [("paper", "cuda:1"), ("paper", "cpu"), ("paper", "cuda")]


def test_fill_trains_the_plan_with_two_workers_and_the_pages_then_read_every_run(tmp_path):
    items = smoke_plan(tmp_path)
    lines = []
    counts = fill.fill(items, workers=2, profile="smoke", results_dir=tmp_path, overrides=TINY,
                       log=lambda *a, **k: lines.append(" ".join(map(str, a))))
    # a model that starts from an FM of settings no page reads (e.g. recipe code's IFM): fill adds that FM to its plan
    added = [line for line in lines if "FM pre-training of" in line]
    assert added
    assert counts["done"] == len(items) + len(added)
    assert counts["failed"] == counts["stopped"] == counts["not started"] == 0
    assert len(lines) == counts["done"] and all("test rmse" in line and "worker" in line for line in lines)
    assert smoke_plan(tmp_path) == []
    read = studies.regression_study(ex.Experiment("smoke", recipe="paper,code", results_dir=tmp_path,
                                                  train_missing=False, log=None, **SYNTHETIC))
    assert read.attrs["complete"] and len(read) == 2 * len(ex.Experiment("smoke", overrides=TINY, log=None)
                                                           .profile.regression_models)


def test_at_the_time_limit_runs_are_stopped_and_nothing_half_written_is_left(tmp_path):
    long = LONG         # the first run cannot end within the limit (the cluster's start counts)
    items = fill.plan("smoke", "paper,code", pages=PAGES, studies=["table3"], seeds=[0], results_dir=tmp_path,
                      datasets=["synthetic"], overrides=long)
    lines = []
    counts = fill.fill(items, workers=1, profile="smoke", results_dir=tmp_path, overrides=long, time_limit=10,
                       log=lambda *a, **k: lines.append(" ".join(map(str, a))))
    assert counts["stopped"] == 1 and counts["done"] == 0
    assert counts["not started"] == len(items) - 1
    assert any("stopped at the time limit" in line for line in lines)
    for path in (tmp_path / "smoke").glob("*.json") if (tmp_path / "smoke").exists() else ():
        json.loads(path.read_text())                    # every record there is whole
    assert not list(tmp_path.rglob("*.lock")) and not list(tmp_path.rglob("*.tmp"))
    assert len(fill.plan("smoke", "paper,code", pages=PAGES, studies=["table3"], seeds=[0], results_dir=tmp_path,
                         datasets=["synthetic"], overrides=long)) == len(items)      # the stopped run is still to do


def test_a_fill_killed_with_sigterm_takes_its_workers_with_it_and_leaves_no_lock(tmp_path):
    """`kill <fill>` (a batch system's time limit, a closed session): the workers must not go on
    training in the background, and the lock of the run they held must go."""
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "fill_forever.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from ifm.runs import fill\n"
        "from test_fill import PAGES, smoke_plan, TINY\n"
        f"results = {str(tmp_path / 'results')!r}\n"
        "long = {**TINY, 'epochs': 10000, 'dataset_options': {'synthetic': {'n': 4000}}}\n"
        "if __name__ == '__main__':\n"
        "    items = fill.plan('smoke', 'paper,code', pages=PAGES, studies=['table3'], seeds=[0], results_dir=results,\n"
        "                      datasets=['synthetic'], overrides=long)\n"
        "    fill.fill(items, workers=2, profile='smoke', results_dir=results, overrides=long, log=lambda *a, **k: None)\n")
    parent = subprocess.Popen([sys.executable, str(script)], cwd=Path(__file__).parents[1])
    try:
        deadline, locks = time.time() + 120, []
        while not locks and time.time() < deadline and parent.poll() is None:
            time.sleep(0.05)
            locks = list((tmp_path / "results").rglob("*.lock"))
        assert locks, "no worker took a run's lock within 120 s"
        workers = {int(lock.read_text().split()[0]) for lock in locks}
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        if parent.poll() is None:
            parent.kill()
    for pid in workers:
        try:
            os.kill(pid, 0)
            alive = True
        except ProcessLookupError:
            alive = False
        assert not alive, f"worker {pid} outlived its fill"
    assert not list(tmp_path.rglob("*.lock")) and not list(tmp_path.rglob("*.tmp"))
    for path in (tmp_path / "results").rglob("*.json"):
        json.loads(path.read_text())                    # every record there is whole


def test_dataset_picks_among_the_runs_the_pages_read_and_adds_no_page_on_it(tmp_path):
    # a book whose regression pages read synthetic data; its data-scaling page reads Frappe alone,
    # so --dataset synthetic plans Table 3 on it and no scaling run (before, 3 fractions x 3 models)
    book = {**TINY, "datasets": ["synthetic"], "ctr_datasets": []}
    items = fill.plan("smoke", "paper", pages=PAGES, studies=["table3", "scaling"], datasets=["synthetic"], seeds=[0],
                      results_dir=tmp_path, overrides=book)
    assert {(i.study, i.dataset) for i in items} == {("table3", "synthetic")}
    assert len(items) == len(fill.plan("smoke", "paper", pages=PAGES, studies=["table3"], seeds=[0], results_dir=tmp_path,
                                       overrides=book))
    # a dataset no page reads at its defaults is planned as the pages would run on it
    items = fill.plan("smoke", "paper", pages=PAGES, studies=["table3", "scaling"], seeds=[0], results_dir=tmp_path, **SYNTHETIC)
    assert {(i.study, i.dataset) for i in items} == {("table3", "synthetic"), ("scaling", "synthetic")}
    with pytest.raises(ValueError, match="datasets must be a list of"):
        fill.plan("smoke", "paper", pages=PAGES, datasets=["criteo"], results_dir=tmp_path)


def test_a_run_starts_only_when_its_expected_time_fits():
    config = ex.Experiment("smoke", overrides=TINY, log=None).config("frappe", "afm", 0)
    assert config.recipe == "paper"
    item = fill.Wanted("table3", "frappe", {}, config, "AFM")
    past = {("afm", "frappe", "paper", "cpu"): [3000.0, 3600.0, 4000.0], ("afm", "frappe", "paper", "gpu"): [200.0],
            ("afm", "frappe", "code", "cpu"): [9000.0]}
    assert timing.expected_seconds(item, "cpu", {}, past) == 3600.0                       # the records' median
    assert timing.expected_seconds(item, "cuda", {}, past) == 200.0                       # on this kind of device
    seen = {("afm", "frappe", "paper", "cpu"): [10.0, 50.0]}
    assert timing.expected_seconds(item, "cpu", seen, past) == 50.0                        # this call's
    assert timing.expected_seconds(item, "cpu", {}, {}) is None
    eighth = fill.Wanted("scaling", "frappe", {"train_fraction": 0.125}, config, "AFM on 1/8")
    assert timing.expected_seconds(eighth, "cpu", {}, past) == 450.0                     # an eighth of the data
    # each recipe has its own times (its stopping rules differ); a recipe never run here borrows
    # the median over every recipe's records of that model, dataset and kind of device
    code = fill.Wanted("table3", "frappe", {}, dataclasses.replace(config, recipe="code"), "AFM (code)")
    assert timing.expected_seconds(code, "cpu", {}, past) == 9000.0
    assert timing.expected_seconds(code, "cpu", seen, past) == 9000.0                      # not the other recipe's
    assert timing.expected_seconds(code, "cuda", {}, past) == 200.0
    assert timing.expected_seconds(item, "cpu", {}, {("afm", "frappe", "code", "cpu"): [100.0, 300.0]}) == 200.0


def test_a_run_that_stopped_early_times_the_next_of_its_kind_at_its_full_epoch_budget():
    # the MovieLens stand-in under recipe code: dropout 0.8 stopped after 37 of 100 epochs in 357 s,
    # dropout 0.7 ran all 100 in 947 s; timed by the short one, a fill started runs it then cut
    assert timing.at_full_budget(357.0, 37, 100) == pytest.approx(357.0 * 100 / 37)
    assert timing.at_full_budget(947.0, 100, 100) == 947.0
    assert timing.at_full_budget(50.0, None, None) == 50.0          # a derived result: as measured
    config = ex.Experiment("smoke", overrides=TINY, log=None).config("frappe", "ifm", 0)
    item = fill.Wanted("dropout", "frappe", {}, config, "IFM")
    seen = {("ifm", "frappe", config.recipe, "cpu"): [timing.at_full_budget(357.0, 37, 100)]}
    assert timing.expected_seconds(item, "cpu", seen, {}) > 947.0


def _timed_record(seconds, platform, threads=1, device="cpu", recipe="code", fraction=None, dataset="frappe"):
    return {"wall_seconds": seconds, "config": {"model": "ifm", "recipe": recipe, "device": device},
            "environment": {"platform": platform, "threads": threads, "device": device, "device_name": "H100"},
            "cache": {"material": {"data": {"name": dataset, "options": {"train_fraction": fraction} if fraction else {}}}}}


def test_a_run_is_timed_by_the_records_made_on_this_machine_when_there_are_any():
    record = _timed_record

    key = ("ifm", "frappe", "code", "cpu")
    here = timing.machine_of({"platform": "slow-vm", "threads": 1})
    records = [record(700.0, "fast-vm"), record(900.0, "fast-vm"), record(1100.0, "fast-vm"),
               record(3500.0, "slow-vm"), record(1800.0, "slow-vm", fraction=0.5), record(1000.0, "slow-vm", threads=2),
               record(200.0, "gpu-vm", device="cuda"), record(90.0, "slow-vm", recipe="legacy")]
    assert timing.record_times(records)[key] == [700.0, 900.0, 1100.0, 3500.0, 3600.0, 1000.0]   # every machine
    assert timing.record_times(records, here)[key] == [3500.0, 3600.0]          # this platform, one thread
    assert timing.record_times(records, timing.machine_of({"platform": "new-vm", "threads": 1}))[key] == \
        timing.record_times(records)[key]                                       # never run here: all of them
    assert timing.record_times(records, "H100")[("ifm", "frappe", "code", "gpu")] == [200.0]
    # a trial of the open benchmark's study is timed too, so a tune starts no trial that cannot finish
    assert timing.record_times([record(300.0, "slow-vm", recipe="bars")])[("ifm", "frappe", "bars", "cpu")] == [300.0]
    item = fill.Wanted("dropout", "frappe", {}, dataclasses.replace(
        ex.Experiment("smoke", overrides=TINY, log=None).config("frappe", "ifm", 0), recipe="code"), "IFM")
    assert timing.expected_seconds(item, "cpu", {}, timing.record_times(records)) == 1050.0
    assert timing.expected_seconds(item, "cpu", {}, timing.record_times(records, here)) == 3550.0
    assert timing.this_machine("cpu", 1).endswith(", 1 thread(s)")


def test_a_kind_of_run_never_made_here_is_timed_at_this_machines_pace_measured_on_the_kinds_it_shares():
    # Frappe, made on three machines: here ("slow-vm", one thread) a run takes 3550 / 900 times as
    # long as on "fast-vm" (medians), and 3550 / 1000 times as long as on "slow-vm" with two threads.
    frappe = [_timed_record(s, "fast-vm") for s in (700.0, 900.0, 1100.0)] + [
        _timed_record(s, "slow-vm") for s in (3500.0, 3600.0)] + [_timed_record(1000.0, "slow-vm", threads=2)]
    # MovieLens was never run here; "odd-vm" shares no kind of run with this machine, so its pace is unknown.
    movielens = [_timed_record(300.0, "fast-vm", dataset="movielens"),
                 _timed_record(200.0, "slow-vm", threads=2, fraction=0.5, dataset="movielens"),
                 _timed_record(5000.0, "odd-vm", dataset="movielens")]
    here = timing.machine_of({"platform": "slow-vm", "threads": 1})
    key = ("ifm", "movielens", "code", "cpu")
    by_machine = {}
    for r in frappe:
        by_machine.setdefault(timing.machine_of(r["environment"]), []).append(r["wall_seconds"])
    speed = timing.relative_speed({("ifm", "frappe", "code", "cpu"): by_machine}, here)
    assert speed == pytest.approx({timing.machine_of({"platform": "fast-vm", "threads": 1}): 3550 / 900,
                                   timing.machine_of({"platform": "slow-vm", "threads": 2}): 3.55})
    assert timing.record_times(frappe + movielens, here)[key] == pytest.approx([300.0 * 3550 / 900, 400.0 * 3.55])
    assert timing.record_times(frappe + movielens)[key] == [300.0, 400.0, 5000.0]         # no machine named: as made
    assert timing.record_times(movielens, here)[key] == [300.0, 400.0, 5000.0]            # no shared kind: as made
    assert timing.record_times(frappe + movielens, here)[("ifm", "frappe", "code", "cpu")] == [3500.0, 3600.0]


def test_past_seconds_keys_each_records_time_by_its_recipe(tmp_path):
    items = [i for i in smoke_plan(tmp_path) if i.config.model in ("fm", "nfm")]
    assert {i.config.recipe for i in items} == {"paper", "code"}
    fill.fill(items, workers=1, profile="smoke", results_dir=tmp_path, overrides=TINY, log=lambda *a, **k: None)
    past = timing.past_seconds(tmp_path, "smoke")
    assert sorted(past) == sorted(fill.time_key(i.config.model, i.dataset, i.config.recipe, "cpu") for i in items)
    assert all(len(v) == 1 and v[0] > 0 for v in past.values())


@pytest.mark.parametrize("argv, words", [
    (["fill", "--workers", "0"], ["argument --workers", "an integer from 1 to 64"]),
    (["fill", "--workers", "100"], ["argument --workers", "an integer from 1 to 64"]),
    (["fill", "--time-limit", "0"], ["argument --time-limit", "a duration above 0"]),
    (["fill", "--time-limit", "2 days"], ["argument --time-limit", "90m"]),
    (["fill", "--study", "table9"], ["argument --study", "invalid choice"]),
    (["fill", "--device", "gpu"], ["argument --device", "'gpu' is not a device"]),
    (["fill", "--threads", "0"], ["argument --threads", "an integer >= 1"]),
])
def test_fill_refuses_bad_flags_before_planning(capsys, argv, words):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(w in err[0] for w in words), err


def test_durations_read_seconds_minutes_and_hours():
    from ifm.runs.args import duration_arg

    assert [duration_arg(t) for t in ("540", "90m", "2.5h", "30s")] == [540, 5400, 9000, 30]


def test_fill_list_prints_the_plan_and_trains_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(fill, "fill", lambda *a, **k: pytest.fail("--list must not train"))
    planned = smoke_plan(tmp_path)
    monkeypatch.setattr(fill, "plan", lambda *a, **k: planned)
    assert main(["fill", "--profile", "smoke", "--list", "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "run(s) missing for profile smoke" in out and "table3" in out and "synthetic" in out


def test_reproduce_after_a_time_limited_fill_only_reads_the_records():
    from ifm.runs import reproduce
    from ifm.cli import build_parser

    limited = build_parser().parse_args(["reproduce", "--profile", "paper", "--workers", "2", "--time-limit", "3h"])
    assert (limited.workers, limited.time_limit) == (2, 10800)
    assert reproduce._parameters(limited, 0)["train_missing"] is False     # the pages list what is still missing
    assert reproduce._parameters(build_parser().parse_args(["reproduce"]), 0)["train_missing"] is True


def test_fill_help_states_its_ranges(capsys):
    assert main(["fill", "--help"]) == 0
    assert "an integer from 1 to 64" in " ".join(capsys.readouterr().out.split())


def test_a_page_names_the_fill_command_of_its_own_study_and_recipes():
    import pandas as pd

    from ifm.book import tables

    for study, recipe, expected in [("regression", "paper, code", "--recipe paper,code --study table3"),
                                    ("scaling", "paper, code, legacy (the 30% pool's points)", "--recipe paper,code --study scaling"),
                                    ("factors", "code", "--recipe code --study table1")]:
        df = pd.DataFrame()
        df.attrs.update(study=study, recipe=recipe, profile="paper")
        assert tables.fill_command(df) == f"`python -m ifm fill --profile paper {expected}`"
    from ifm.runs.plan import FILL_STUDY

    assert set(FILL_STUDY.values()) <= set(fill.STUDY_ORDER)


def _kill_this_worker(exp, dataset, fields, seed):
    """A derived result whose making ends its worker process at once, as an out-of-memory kill would
    (the local workers import this module: they start with the client's sys.path)."""
    import os

    os._exit(3)


def test_a_worker_that_dies_is_replaced_the_run_tried_once_more_then_reported_and_the_others_go_on(tmp_path):
    items = [i for i in smoke_plan(tmp_path) if not i.config.uses_pretraining()][:2]
    doomed = dataclasses.replace(items[0], derive={"kill": [0]}, label="a run whose worker is killed")
    lines = []
    counts = fill.fill([doomed, *items], workers=1, profile="smoke", results_dir=tmp_path, overrides=TINY,
                       derive={"kill": _kill_this_worker}, log=lambda *a, **k: lines.append(" ".join(map(str, a))))
    assert counts["failed"] == 1 and counts["done"] == 2, lines
    failed = [line for line in lines if "FAILED" in line]
    assert len(failed) == 1 and "whose worker is killed" in failed[0], failed
    assert "its worker died on each of 2 tries" in failed[0]
    assert not list(tmp_path.rglob("*.lock"))


def test_a_run_that_raises_is_reported_with_its_error_and_the_others_go_on(tmp_path):
    items = [i for i in smoke_plan(tmp_path) if not i.config.uses_pretraining()][:2]
    bad = dataclasses.replace(items[0].config, model_options={**items[0].config.model_options, "nonsense": 1})
    doomed = dataclasses.replace(items[0], config=bad, label="a run its model refuses")   # raises in training
    lines = []
    counts = fill.fill([doomed, items[1]], workers=2, profile="smoke", results_dir=tmp_path, overrides=TINY,
                       log=lambda *a, **k: lines.append(" ".join(map(str, a))))
    assert counts["failed"] == 1 and counts["done"] == 1
    failed = [line for line in lines if "FAILED" in line]
    assert len(failed) == 1 and failed[0].startswith("[") and "a run its model refuses" in failed[0]
    assert "TypeError: FM.__init__() got an unexpected keyword argument 'nonsense'" in failed[0]
    assert not list(tmp_path.rglob(f"{doomed.config.model}-*.json")) and not list(tmp_path.rglob("*.lock"))


def _hold_lock(tmp_path, item):
    """Write the lock of `item`'s run as if another live process (this one) were training it."""
    import socket

    exp = ex.Experiment("smoke", results_dir=tmp_path, overrides=TINY, log=None)
    config = dataclasses.replace(item.config, device="cpu")
    lock = exp.cache.directory / f"{exp._place(config, item.dataset, None)[-1]}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(f"{os.getpid()} {socket.gethostname()}\n")
    assert exp.training_elsewhere(config, item.dataset) == f"pid {os.getpid()} on {socket.gethostname()}"
    return exp, lock


def _fill_logged(items, tmp_path, then, after: float, when: str | None = None):
    """fill(items) with one worker while `then` runs `after` seconds in, or, with `when`, as soon as
    a logged line starts with it (so a slow machine cannot run `then` before the worker has looked);
    (counts, logged lines)."""
    import threading

    timer, lines, fired = threading.Timer(after, then), [], threading.Event()

    def log(*a, **k):
        lines.append(" ".join(map(str, a)))
        if when and lines[-1].startswith(when) and not fired.is_set():
            fired.set()
            threading.Timer(0.0, then).start()

    if not when:
        timer.start()
    try:
        counts = fill.fill(items, workers=1, profile="smoke", results_dir=tmp_path, overrides=TINY, log=log)
    finally:
        timer.cancel()
    return counts, lines


def test_a_run_another_process_is_training_is_put_off_and_the_worker_goes_on(tmp_path, monkeypatch):
    """Two fills on one directory walk the same plan: the second must not wait on the first's run
    but train the next one, and take the first's up again later (by then, from the records)."""
    monkeypatch.setattr(fill, "RETRY_SECONDS", 0.2)
    items = [i for i in smoke_plan(tmp_path) if not i.config.uses_pretraining()][:2]
    _, lock = _hold_lock(tmp_path, items[0])
    counts, lines = _fill_logged(items, tmp_path, lock.unlink, after=3.0, when="put off:")
    assert counts["done"] == 2 and counts["not started"] == 0
    put_off = [i for i, line in enumerate(lines) if line.startswith("put off:") and items[0].label in line]
    assert len(put_off) == 1 and "is training it" in lines[put_off[0]]          # said once, however often retried
    finished = [line for line in lines if line.startswith("[")]
    assert items[1].label in finished[0] and items[0].label in finished[1]     # the free run went first


def test_the_summary_counts_runs_another_process_made_meanwhile():
    counts = {"done": 3, "reused": 1, "failed": 0, "stopped": 0, "not started": 2, "seconds": 60.0}
    assert fill.summary(counts) == ("fill: 3 trained, 1 made meanwhile by another process, 0 failed, 0 stopped at "
                                    "the time limit, 2 not started (60 s)")
    assert "meanwhile" not in fill.summary({**counts, "reused": 0})


def test_a_put_off_run_that_the_other_process_finished_is_read_not_trained_and_not_called_failed(tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(fill, "RETRY_SECONDS", 0.2)
    items = smoke_plan(tmp_path)[:1]
    elsewhere = tmp_path / "elsewhere"                 # "the other process" trains it into its own directory first
    assert fill.fill(items, workers=1, profile="smoke", results_dir=elsewhere, overrides=TINY, log=lambda *a, **k: None)["done"] == 1
    exp, lock = _hold_lock(tmp_path, items[0])

    def finish():                                       # its record lands, then its lock goes
        for path in (elsewhere / "smoke").iterdir():
            shutil.copy(path, exp.cache.directory / path.name)
        lock.unlink()

    counts, lines = _fill_logged(items, tmp_path, finish, after=1.0)
    assert counts["reused"] == 1 and counts["done"] == counts["failed"] == 0
    last = lines[-1]
    assert last.startswith("[1/1]") and "made meanwhile by another process" in last and "FAILED" not in last


def test_table1_factors_are_planned_per_seed_once_their_runs_exist_and_derived_by_fill(tmp_path):
    fill.fill(smoke_plan(tmp_path, ("table3",), seeds=(0, 1)), workers=1, profile="smoke", results_dir=tmp_path,
              overrides=TINY, log=lambda *a, **k: None)
    items = smoke_plan(tmp_path, ("table3", "table1"), seeds=(0, 1))
    assert [(i.study, i.config.model, i.config.seed, i.config.recipe) for i in items] == [
        ("table1", "ifm", 0, "paper"), ("table1", "ifm", 0, "code"), ("table1", "ifm", 1, "paper"),
        ("table1", "ifm", 1, "code")]
    assert all(i.derive == {"factors": [0, 1]} and "Table 1 factors" in i.label for i in items)
    assert timing.expected_seconds(items[0], "cpu", {}, {("ifm", "synthetic", "paper", "cpu"): [10.0]}) == 30.0
    lines = []
    counts = fill.fill(items, workers=2, profile="smoke", results_dir=tmp_path, overrides=TINY, derive=DERIVE,
                       log=lambda *a, **k: lines.append(" ".join(map(str, a))))
    assert counts["done"] == 4 and counts["failed"] == 0, lines
    assert smoke_plan(tmp_path, ("table3", "table1"), seeds=(0, 1)) == []
    fs = factors.factor_study(ex.Experiment("smoke", recipe="paper,code", seeds=[0, 1], results_dir=tmp_path,
                                            train_missing=False, log=None, **SYNTHETIC), dataset="synthetic")
    assert fs.attrs["complete"] and sorted(fs.distribution.seed.unique()) == [0, 1]
    assert set(fs.table.recipe) == {"paper", "code"} and fs.attrs["fields"] == [0, 1]


def test_a_sigterm_while_a_lock_changes_hands_exits_only_once_the_lock_is_accounted_for():
    # The fill takes a run's lock, then places, sends and submits the run, then records it as in
    # flight. A SIGTERM in between once left a lock that no `finally` knew of (CI, stop 31): the
    # signal now waits for the end of that block and exits there.
    reached = []
    with pytest.raises(SystemExit) as exited:
        with locks.sigterm_exits():
            with locks.sigterm_held_off():
                with locks.sigterm_held_off():          # nested: the exit waits for the outer block
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(0.2)                     # the handler runs here and must not exit
                    reached.append("inner")
                reached.append("outer")
            reached.append("after")
    assert reached == ["inner", "outer"] and exited.value.code == 128 + signal.SIGTERM
    with pytest.raises(SystemExit):                     # outside such a block SIGTERM exits at once
        with locks.sigterm_exits():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)
            reached.append("not reached")
    assert "not reached" not in reached
