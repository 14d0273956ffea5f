"""The runner: a profile and a recipe bound to a device, a data directory and a results
directory. `Experiment.run(config, dataset)` returns a run's record from the record store
(`ifm.runs.records`), training it when it is missing (or, for the book, only reading what is there),
and `Experiment.row` turns a record into one row of a study's frame (`ifm.book.studies`).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import sys
import time
import warnings

import torch

from ifm.data import load_dataset
from ifm.models import DISPLAY_NAMES
from ifm.models.layers import fm_state_of
from ifm.runs.profiles import Profile, get_profile, parse_bool, parse_datasets, parse_force, parse_seeds, resolve_device
from ifm.runs.records import REPO_ROOT, RunCache, _identity_text, _without_device, canonical, config_identity, results_root, \
    run_key, stamp
from ifm.training.recipes import BENCHMARK, RECIPES

from ifm.training.loop import TrainConfig, build_for, summary_of, train


class Experiment:
    """A profile bound to a device, a data directory and a results directory; runs
    configs through the cache and turns records into rows."""

    def __init__(self, profile: str | Profile = "smoke", *, recipe: str | None = None, datasets=None, seeds=None,
                 device=None, data_dir=None, overrides=None, force: bool | float = False, results_dir=None,
                 train_missing: bool = True, progress: bool = False, log=sys.stdout):
        """``train_missing=False`` only reads the records already in the results directory (what
        the book does): it loads no data, trains nothing, and lists what is missing in
        ``self.missing``. A record then matches on its configuration, whatever device made it."""
        self.profile = get_profile(profile, overrides)
        self.recipes = parse_recipes(recipe) or (self.profile.recipe,)
        self.profile = dataclasses.replace(self.profile, recipe=self.recipes[0])
        self.train_missing = parse_bool("train_missing", train_missing)
        self.missing: list[str] = []
        self.wanted: list | None = None     # a list collects each missing run as (config, dataset, options)
        self.datasets, self.seeds = parse_datasets(datasets), parse_seeds(seeds)
        self.device = resolve_device(device, self.profile)
        if self.profile.threads:
            torch.set_num_threads(int(self.profile.threads))
        self.data_dir = data_dir
        self.cache = RunCache(results_root(results_dir) / self.profile.name, parse_force(force))
        self.progress = progress
        self.log = log
        self._datasets = {}
        self._versions = {}     # (dataset, options, recipe) -> the data identity the book reads
        self.stats = {"reused": 0, "trained": 0, "pretrained": 0, "missing": 0, "seconds": 0.0}   # since the last report
        self.totals = dict(self.stats)                                              # since creation
        self._nesting = 0

    def for_recipe(self, recipe: str) -> "Experiment":
        """This runner under one recipe (same cache, data, device and seeds): the studies run each
        recipe of a two-recipe runner through it (`ifm.book.studies.per_recipe`)."""
        one = copy.copy(self)
        one.profile, one.recipes, one.missing = dataclasses.replace(self.profile, recipe=recipe), (recipe,), []
        one.stats = {k: 0 if k != "seconds" else 0.0 for k in self.stats}   # its own counts; totals shared
        return one

    # --- data
    def data_options(self, name: str, extra: dict | None = None) -> dict:
        """The dataset options of `name` for a run: the profile's, and a run's own (e.g. a train fraction)."""
        return {**self.profile.dataset_options.get(name, {}), **(extra or {})}

    def dataset(self, name: str, extra: dict | None = None):
        options = self.data_options(name, extra)
        handle = (name, json.dumps(options, sort_keys=True))
        if handle not in self._datasets:
            self._datasets[handle] = load_dataset(name, self.data_dir, split_seed=self.profile.split_seed, **options)
        return self._datasets[handle]

    def config(self, dataset: str, model: str, seed: int, **changes) -> TrainConfig:
        return self.profile.config(dataset, model, seed, self.device, **changes)

    # --- runs
    def run(self, config: TrainConfig, dataset_name: str, *, save_state: bool = False,
            data_options: dict | None = None) -> dict | None:
        """The record of `config` on `dataset_name` (with a run's own ``data_options``): from the
        cache, else trained and stored (or, with ``train_missing=False``, None and noted in
        ``self.missing``)."""
        if not self.train_missing:
            return self._committed(config, dataset_name, data_options)
        if config.recipe == "legacy":
            raise ValueError("recipe 'legacy' only reads the records made before the recipes existed; "
                             "train with recipe 'paper' or 'code'")
        data, options, key, material, stem = self._place(config, dataset_name, data_options)
        record = self._stored(config, dataset_name, data, options, save_state)
        if record is None:
            with self.cache.lock(stem, on_wait=lambda lock, holder: self.say(
                    f"  waiting for {holder}, which is training this run ({lock})")):
                record = self.cache.lookup(stem, key, need_state=save_state)   # it may have been made meanwhile
                if record is None:
                    return self._train(config, dataset_name, data, key, material, stem,
                                       keep_state=save_state or config.model in ("fm", "ifm"), data_options=data_options)
        if not self._nesting:
            self.stats["reused"] += 1
        return record

    def _place(self, config: TrainConfig, dataset_name: str, data_options: dict | None):
        """(data, data options, key, key material, stem) of `config`'s run: where the cache keeps it."""
        data = self.dataset(dataset_name, data_options)
        options = self.data_options(dataset_name, data_options)
        key, material = run_key(config, data, options)
        return data, options, key, material, self.cache.stem(key, config, dataset_name)

    def training_elsewhere(self, config: TrainConfig, dataset_name: str, data_options: dict | None = None) -> str | None:
        """Which live process (another fill, a notebook) is training `config`'s run now, if one is."""
        return self.cache.holder(self._place(config, dataset_name, data_options)[-1])

    def _stored(self, config: TrainConfig, dataset_name: str, data, options: dict, need_state: bool) -> dict | None:
        """The stored record of `config`, or of its twin: the same settings labelled with the other
        recipe, which trains the very same run (LibFM, Wide&Deep and DeepFM read the same under
        both recipes, so one run serves both), or made on another device (a run made on a GPU
        serves a CPU runner and the other way round, as the book reads them; an FM state moves
        between devices, so a GPU's IFM starts from the CPU's FM rather than training a second one)."""
        for twin in equivalents(config):
            key, _ = run_key(twin, data, options)
            record = self.cache.lookup(self.cache.stem(key, twin, dataset_name), key, need_state=need_state)
            if record is not None:
                return record
        return None

    def _train(self, config: TrainConfig, dataset_name: str, data, key: str, material: dict, stem: str,
               keep_state: bool, data_options=None) -> dict:
        """Train `config` (after its FM pre-training, from the cache or trained) and store its record."""
        pretrained = pretrain_summary = None
        if config.uses_pretraining():
            fm_config = config.pretrain_config()
            self._nesting += 1
            try:
                fm_record = self.run(fm_config, dataset_name, save_state=True, data_options=data_options)
            finally:
                self._nesting -= 1
            pretrained = fm_state_of(self.cache.load_state(fm_record["cache"]["stem"]))
            pretrain_summary = {**summary_of(fm_record), "key": fm_record["cache"]["key"]}
        started = time.perf_counter()
        with warnings.catch_warnings():
            # torch warns once per process about unchecked sparse tensors (sparse embeddings).
            warnings.filterwarnings("ignore", message="Sparse invariant checks")
            result = train(config, data, pretrained=pretrained, progress=self.progress,
                           pretrain_record=pretrain_summary)
        seconds = time.perf_counter() - started
        record = result.record
        stamp(record, key, material, self.profile.name, stem, f"{stem}.pt" if keep_state else None)
        self.cache.store(stem, record, result.model.state_dict() if keep_state else None)
        self.stats["pretrained" if self._nesting else "trained"] += 1
        self.stats["seconds"] += seconds
        self.say(f"  trained {stem} ({config.model} on {dataset_name}, seed {config.seed}) in {seconds:.1f} s")
        return record

    def _committed(self, config: TrainConfig, dataset_name: str, data_options: dict | None = None) -> dict | None:
        """The stored record of `config` on the data version `_data_version` picks."""
        versions = self.cache.index().get(dataset_name, {})
        data = self._data_version(dataset_name, canonical(self.data_options(dataset_name, data_options)),
                                  config.recipe)
        stored = versions.get(data, {})
        record = next((stored[text] for text in (_identity_text(_without_device(config_identity(twin)))
                                                 for twin in twins(config)) if text in stored), None)
        if record is None:
            texts = {_identity_text(_without_device(config_identity(twin))) for twin in twins(config)}
            why = next((reason for (name, version, text), reason in self.cache.ignored.items()
                        if name == dataset_name and text in texts and version == (data or version)), None)
            self.missing.append(self.describe(config, dataset_name) + (f" ({why})" if why else ""))
            self.stats["missing"] += 1
            if self.wanted is not None:
                self.wanted.append((config, dataset_name, dict(data_options or {})))
            return None
        self.stats["reused"] += 1
        return record

    def _data_version(self, dataset_name: str, options: dict, recipe: str) -> str | None:
        """The data identity most records of `dataset_name` with these dataset options under `recipe`
        used: one data version per page (the legacy records sit on other data). Worked out once per
        (dataset, options, recipe), not per lookup."""
        memo = (dataset_name, json.dumps(options, sort_keys=True), recipe)
        if memo not in self._versions:
            versions = {v: configs for v, configs in self.cache.index().get(dataset_name, {}).items()
                        if json.loads(v).get("options", {}) == options}
            mine = {v: sum(json.loads(c).get("recipe") == recipe for c in configs) for v, configs in versions.items()}
            self._versions[memo] = max(mine, key=lambda v: (mine[v], len(versions[v]))) if mine else None
        return self._versions[memo]

    def describe(self, config: TrainConfig, dataset_name: str) -> str:
        """'IFM on frappe, seed 1 (fen_layers=4)': a run in words, with what sets it apart."""
        base = self.config(dataset_name, config.model, config.seed).to_dict()
        mine = config.to_dict()
        changes = [f"{k}={v}" for k, v in mine.items() if k not in ("model_options", "device") and v != base.get(k)]
        changes += [f"{k}={v}" for k, v in mine["model_options"].items() if v != base["model_options"].get(k)]
        return (f"{DISPLAY_NAMES.get(config.model, config.model)} on {dataset_name}, seed {config.seed}, "
                f"recipe {config.recipe}" + (f" ({', '.join(changes)})" if changes else ""))

    def model(self, record: dict, dataset_name: str) -> torch.nn.Module:
        """The trained model of a record that kept its state (see `run(save_state=True)`)."""
        config = TrainConfig(**{**record["config"], "device": "cpu"})
        model = build_for(config, self.dataset(dataset_name), torch.device("cpu"))
        model.load_state_dict(self.cache.load_state(record["cache"]["stem"]))
        return model.eval()

    def report(self, what: str, *, total: bool = False) -> str:
        """One line on the runs since the last report (or since creation, `total=True`)."""
        if not total:
            for k, v in self.stats.items():
                self.totals[k] += v
        s = self.totals if total else self.stats
        line = self._report_line(what, s)
        if not total:
            self.stats = {k: 0 if k != "seconds" else 0.0 for k in self.stats}
        return line

    def where(self) -> str:
        """The results directory, relative to the repository when inside it (as the book shows it)."""
        try:
            return str(self.cache.directory.resolve().relative_to(REPO_ROOT))
        except ValueError:
            return str(self.cache.directory)

    def say(self, line: str) -> None:
        """Print a progress line to the log (none when log=None)."""
        if self.log is not None:
            print(line, file=self.log, flush=True)

    def _report_line(self, what: str, s: dict) -> str:
        if not self.train_missing:
            return (f"{what}: {s['reused']} of {s['reused'] + s['missing']} runs read from {self.where()}"
                    f" (nothing trained), {s['missing']} missing; profile {self.profile.name}, "
                    f"recipe {', '.join(self.recipes)}")
        extra = f" + {s['pretrained']} FM pre-training(s)" if s["pretrained"] else ""
        return (f"{what}: {s['reused'] + s['trained']} runs, {s['reused']} reused from {self.where()}, "
                f"{s['trained']} trained now{extra} ({s['seconds']:.0f} s) on {self.device}; "
                f"profile {self.profile.name}, recipe {', '.join(self.recipes)}")

    # --- rows
def twins(config: TrainConfig) -> list[TrainConfig]:
    """`config`, then the same settings under each other recipe's label (not legacy's: its
    records have settings of their own)."""
    if config.recipe not in RECIPES:
        return [config]
    return [config] + [dataclasses.replace(config, recipe=r) for r in RECIPES if r != config.recipe]


def equivalents(config: TrainConfig) -> list[TrainConfig]:
    """`config`'s twins, each on this device first, then on the CPU and the GPU: the runs whose
    record serves `config` (`Experiment._stored`)."""
    devices = list(dict.fromkeys([config.device, "cpu", "cuda"]))
    return [dataclasses.replace(twin, device=d) for twin in twins(config) for d in devices]


def parse_recipes(value) -> tuple:
    """A runner's recipes: one name, or several ("paper,code", ["paper", "code"]); () for None."""
    if value in (None, "None"):
        return ()
    if isinstance(value, str) and not value.strip():
        raise ValueError(f"recipe is empty: give {', '.join(RECIPES)} or several joined by commas (e.g. paper,code)")
    names = [v.strip() for v in value.split(",")] if isinstance(value, str) else [str(v) for v in value]
    for name in names:
        if name not in RECIPES + ("legacy", BENCHMARK):
            raise ValueError(f"recipe must be one of {', '.join(RECIPES)} (or legacy, read-only; or {BENCHMARK}, the "
                             f"open benchmark's), or several joined by commas (e.g. paper,code), got {value!r}")
    if not names or len(set(names)) != len(names):
        raise ValueError(f"recipe: name each recipe once, got {value!r}")
    return tuple(names)
