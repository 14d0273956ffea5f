"""How long a run should take: the wall seconds of the records already made (per model, dataset,
recipe and kind of device) and of a `fill` call's own runs, which `fill` uses to start only runs
that fit its time limit and `fill --list` to say how long a plan should take."""
from __future__ import annotations

import dataclasses
import statistics


def past_seconds(results_dir=None, profile: str = "paper", machine: str | None = None) -> dict:
    """{(model, dataset, recipe, device kind): [wall seconds of each record, per whole training
    split]} of the records in the results directory under the current recipes and the open
    benchmark's (not the legacy records, made on a smaller Frappe), device kind 'cpu' or 'gpu';
    a run on a share of the training split counts as its seconds divided by that share. With
    `machine` (`this_machine`), a key that has records made on this machine keeps only those
    (`record_times`)."""
    from ifm.runs.records import RunCache, results_root

    index = RunCache(results_root(results_dir) / profile).index()
    return record_times([record for versions in index.values() for configs in versions.values()
                         for record in configs.values()], machine)


def record_times(records, machine: str | None = None) -> dict:
    """`past_seconds` of `records`. Machines of one kind differ severalfold: IFM on Frappe under
    recipe code at 100 epochs on one CPU thread took 635-1,406 s on one of this project's VM types
    and 3,486-3,777 s on another, so a median over both told a fill that a run would fit where it
    did not. With `machine`, a key that has records made there is timed by those alone; another key
    by the other machines' records, each times that machine's `relative_speed` to this one where
    the two share a key (so a kind of run never made here is still timed at this machine's pace),
    and by all of them unscaled where no machine does."""
    from ifm.training.recipes import BENCHMARK, RECIPES

    times = {}      # {key: {machine: [seconds]}}
    for record in records:
        seconds = record.get("wall_seconds") or record.get("train_seconds")
        if seconds and record["config"].get("recipe") in RECIPES + (BENCHMARK,):
            key = time_key(record["config"]["model"], record["cache"]["material"]["data"]["name"],
                           record["config"]["recipe"], record["config"].get("device", "cpu"))
            value = float(seconds) / share(record["cache"]["material"]["data"]["options"])
            times.setdefault(key, {}).setdefault(machine_of(record.get("environment") or {}), []).append(value)
    speed = relative_speed(times, machine) if machine is not None else {}
    out = {}
    for key, by_machine in times.items():
        scaled = [value * speed[where] for where, values in by_machine.items() if where in speed for value in values]
        out[key] = by_machine.get(machine) or scaled or [value for values in by_machine.values() for value in values]
    return out


def relative_speed(times: dict, machine: str) -> dict:
    """{other machine: how many times longer a run takes on `machine` than there}, from `times`
    ({key: {machine: [seconds]}}): over the keys that both have records of, the median of (median
    seconds here / median seconds there)."""
    ratios = {}
    for by_machine in times.values():
        if machine in by_machine:
            here = statistics.median(by_machine[machine])
            for where, values in by_machine.items():
                if where != machine:
                    ratios.setdefault(where, []).append(here / statistics.median(values))
    return {where: statistics.median(r) for where, r in ratios.items()}


def machine_of(environment: dict) -> str:
    """The machine a record's seconds were measured on, from its environment: the GPU's name, or
    on a CPU the platform (which names the VM's kernel build) and the torch threads."""
    if device_kind(environment.get("device", "cpu")) == "gpu":
        return str(environment.get("device_name"))
    return f"{environment.get('platform')}, {environment.get('threads')} thread(s)"


def this_machine(device: str, threads: int) -> str:
    """`machine_of` a run that this machine would train on `device` with `threads` CPU threads: the
    environment a record of it would carry (`ifm.training.loop.environment`), with the workers' threads."""
    import torch

    from ifm.training.loop import environment

    return machine_of({**environment(torch.device(device)), "threads": threads})


def share(data_options: dict | None) -> float:
    """The share of the training split a run trains on (the data-scaling study's train_fraction)."""
    return float((data_options or {}).get("train_fraction", 1.0))


def at_full_budget(seconds: float, epochs_run: int | None, epochs: int | None) -> float:
    """A run's `seconds` had it trained all its `epochs`: one that stopped early after `epochs_run`
    counts at its pace per epoch times the budget, since the next run of its kind may not stop early
    (on the MovieLens stand-in under recipe code an IFM stopped after 37 epochs in 357 s while its
    neighbour ran all 100 in 947 s, and a fill timed by the short one started runs it then cut at
    its limit). The pace counts the run's fixed costs (data, test) per epoch: it errs long."""
    if not epochs_run or not epochs or epochs_run >= epochs:
        return seconds
    return seconds * epochs / epochs_run


def device_kind(device: str) -> str:
    return "cpu" if str(device).startswith("cpu") else "gpu"


def expected_seconds(item, device: str, seen: dict, past: dict) -> float | None:
    """What a run of `item` should take here: the longest of this call's runs of that model on that
    dataset under its recipe (each `at_full_budget`, as `fill` keeps them), else the median of the
    records' on this kind of device under its recipe, else the median of the records' under any
    recipe (the recipes differ in stopping rules: on the MovieLens stand-in an IFM under `code`
    takes several times one under `paper`), else None (unknown); all per whole training split,
    times the share `item` trains on."""
    if item.derive:     # Table 1: the IFM and up to two FMs (Table 3's, its pre-training) trained again
        single = expected_seconds(dataclasses.replace(item, derive=None), device, seen, past)
        return None if single is None else 3 * single
    key = time_key(item.config.model, item.dataset, item.config.recipe, device)
    if seen.get(key):
        return max(seen[key]) * share(item.data_options)
    model, dataset, _, kind = key
    known = past.get(key) or [s for (m, d, _, k), v in past.items() if (m, d, k) == (model, dataset, kind) for s in v]
    return statistics.median(known) * share(item.data_options) if known else None


def time_key(model: str, dataset: str, recipe: str, device: str) -> tuple:
    """The key of `past_seconds` and of a fill's own times: (model, dataset, recipe, device kind)."""
    return model, dataset, recipe, device_kind(device)
