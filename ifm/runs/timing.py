"""How long a run should take: the wall seconds of the records already made (per model, dataset,
recipe and kind of device) and of a `fill` call's own runs, which `fill` uses to start only runs
that fit its time limit and `fill --list` to say how long a plan should take."""
from __future__ import annotations

import dataclasses
import statistics


def past_seconds(results_dir=None, profile: str = "paper") -> dict:
    """{(model, dataset, recipe, device kind): [wall seconds of each record, per whole training
    split]} of the records in the results directory under the current recipes (not the legacy
    records, made on a smaller Frappe), device kind 'cpu' or 'gpu'; a run on a share of the
    training split counts as its seconds divided by that share."""
    from ifm.runs.records import RunCache, results_root
    from ifm.training.recipes import RECIPES

    times = {}
    for versions in RunCache(results_root(results_dir) / profile).index().values():
        for configs in versions.values():
            for record in configs.values():
                seconds = record.get("wall_seconds") or record.get("train_seconds")
                if seconds and record["config"].get("recipe") in RECIPES:
                    key = time_key(record["config"]["model"], record["cache"]["material"]["data"]["name"],
                                   record["config"]["recipe"], record["config"].get("device", "cpu"))
                    times.setdefault(key, []).append(float(seconds) / share(record["cache"]["material"]["data"]["options"]))
    return times


def share(data_options: dict | None) -> float:
    """The share of the training split a run trains on (the data-scaling study's train_fraction)."""
    return float((data_options or {}).get("train_fraction", 1.0))


def device_kind(device: str) -> str:
    return "cpu" if str(device).startswith("cpu") else "gpu"


def expected_seconds(item, device: str, seen: dict, past: dict) -> float | None:
    """What a run of `item` should take here: the longest of this call's runs of that model on that
    dataset under its recipe, else the median of the records' on this kind of device under its
    recipe, else the median of the records' under any recipe (the recipes differ in stopping
    rules: on the MovieLens stand-in an IFM under `code` takes several times one under `paper`),
    else None (unknown); all per whole training split, times the share `item` trains on."""
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
