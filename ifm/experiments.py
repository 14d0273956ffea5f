"""The paper's experiments as cached runs and tidy DataFrames (sections 5.2-5.4).

Layers, from the bottom:

* **Profiles** (:data:`PROFILES`): named settings every notebook takes as a parameter.
  ``paper`` is :func:`ifm.settings.paper_config` unchanged (early stopping, several seeds);
  ``smoke`` is a tiny CPU variant for CI. Any field can be overridden:
  ``get_profile("smoke", {"epochs": 5, "dropout_grid": [0.0, 0.5]})``.
* **The run cache** (:class:`RunCache`): one JSON record per run in
  ``<results>/<profile>/<model>-<dataset>-<key>.json``, where ``key`` hashes everything
  that determines the result (:func:`run_key`). A matching record is reused, a missing one
  trained, so an interrupted sweep resumes where it stopped; ``force`` retrains. FM runs
  (and any run asked to) also keep their weights in ``<same name>.pt`` (gitignored), so
  FM pre-trainings are shared and Table 1 can reload the trained IFM.
* **Studies**: ``depth_study``, ``dropout_study``, ``activation_study``,
  ``convergence_study``, ``factor_study``, ``component_study``, ``regression_study``,
  ``ctr_study`` return one row per run (or per epoch / instance), each row carrying the
  profile, dataset, its size, device and seeds. ``summarize``, ``t_interval`` and
  ``paired_t_test`` turn seeds into means, 95% intervals and the significance test.
* **The paper's numbers**: :func:`paper_reported` reads ``book/paper_reported.json``.

The results directory is ``results_dir=`` if given, else ``$IFM_RESULTS_DIR``, else
``<repository>/results``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ifm.cli import LIMITS, check, device_problem
from ifm.data import load_dataset
from ifm.models import DISPLAY_NAMES, MODELS
from ifm.records import exclusive, read_json, remove_stale_temporaries, save_state_atomic, write_json_atomic
from ifm.settings import LEGACY_FILL, RECIPES, paper_config

with warnings.catch_warnings():
    # tqdm.auto warns on import inside a notebook without ipywidgets; progress bars are off here.
    warnings.filterwarnings("ignore", message="IProgress not found")
    from ifm.train import TRAINING_VERSION, TrainConfig, build_for, predict, summary_of, train

REPO_ROOT = Path(__file__).resolve().parents[1]
PAPER_REPORTED = REPO_ROOT / "book" / "paper_reported.json"
# Bump when the cache key's layout changes (not when training changes: that is TRAINING_VERSION).
CACHE_FORMAT = 1
# The records made before the recipes (results/paper/ until the book is re-made) read as recipe legacy.
LEGACY_TRAINING_VERSION = 2

DATASET_NAMES = {"frappe": "Frappe", "movielens": "MovieLens", "avazu": "Avazu", "synthetic": "Synthetic"}
ALPHA = 0.05
# The parameters an FM pre-training hands on (FMBase.fm_state): w0, w_i, v_i.
FM_STATE_PREFIXES = ("linear.", "embedding.")


# --------------------------------------------------------------------------- profiles
@dataclass(frozen=True)
class Profile:
    """A named set of experiment settings.

    ``train`` overrides TrainConfig fields of every run on top of the paper's settings,
    ``model_train`` does so per model, ``model_options`` overrides model options per
    model (e.g. the FEN width of IFM only); grids and seeds set the sweeps.
    """
    name: str
    description: str
    datasets: tuple = ("frappe", "movielens")      # the regression studies
    ctr_datasets: tuple = ("avazu",)               # Table 4
    seeds: tuple = (0, 1, 2)                       # Tables 2-4 and the convergence curves
    sweep_seeds: tuple = (0, 1, 2)                 # each point of Figs. 3-5
    recipe: str = "paper"                          # the reading of the method: paper, code (legacy: read-only)
    device: str = "auto"                           # "auto": cuda when available, else cpu
    threads: int | None = None                     # torch CPU threads (None: torch's default)
    split_seed: int = 0
    train: dict = field(default_factory=dict)
    model_train: dict = field(default_factory=dict)
    model_options: dict = field(default_factory=dict)
    dataset_options: dict = field(default_factory=dict)
    depth_grid: tuple = (0, 1, 2, 3, 4)
    dropout_grid: tuple = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    activation_grid: tuple = ("relu", "sigmoid", "tanh", "identity")
    regression_models: tuple = ("libfm", "wide_deep", "deepfm", "nfm", "afm", "ifm")
    component_models: tuple = ("deepfm", "nfm", "afm", "ifm")
    ctr_models: tuple = ("fm", "afm", "nfm", "deepfm", "ifm")

    def config(self, dataset: str, model: str, seed: int, device: str = "cpu", **changes) -> TrainConfig:
        """The TrainConfig of one run: paper settings <- profile <- explicit changes."""
        options = {**self.model_options.get(model, {}), **changes.pop("model_options", {})}
        fields = {**self.train, **self.model_train.get(model, {}), **changes, "seed": seed, "device": device}
        return paper_config(dataset, model, recipe=self.recipe, model_options=options, **fields)

    def differences(self) -> list[str]:
        """How this profile departs from the paper, in words (empty for `paper`)."""
        out = []
        if self.train:
            out.append("every model: " + ", ".join(f"{k}={v}" for k, v in self.train.items()))
        for model, changes in self.model_train.items():
            out.append(f"{DISPLAY_NAMES.get(model, model)}: " + ", ".join(f"{k}={v}" for k, v in changes.items()))
        for model, options in self.model_options.items():
            out.append(f"{DISPLAY_NAMES.get(model, model)} options: "
                       + ", ".join(f"{k}={v}" for k, v in options.items()))
        if tuple(self.dropout_grid) != PAPER_DROPOUT_GRID:
            out.append(f"dropout grid {list(self.dropout_grid)} instead of 0.0-0.9 in steps of 0.1")
        if tuple(self.depth_grid) != PAPER_DEPTH_GRID:
            out.append(f"depth grid {list(self.depth_grid)}")
        if len(self.seeds) < 2:
            out.append(f"{len(self.seeds)} seed: no intervals or significance test")
        return out


PAPER_DEPTH_GRID = (0, 1, 2, 3, 4)
PAPER_DROPOUT_GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

PROFILES = {
    "paper": Profile(
        name="paper",
        description="the paper's settings, exactly ifm.settings.paper_config (Adagrad 0.01, L2 1e-5, "
                    "embedding 256/256/40, batch 2048/4096/2048, FEN 256 per layer, FM pre-training), early "
                    "stopping on validation RMSE/logloss (patience 5) within 100 epochs; 3 seeds for "
                    "Tables 2-4, Fig. 6 and every sweep point of Figs. 3-5",
    ),
    "smoke": Profile(
        name="smoke",
        description="a tiny CPU run that checks the whole pipeline in a few minutes (CI); "
                    "its numbers are NOT the paper's experiment",
        seeds=(0,), sweep_seeds=(0,), device="cpu",
        # One thread: on a shared or busy 2-core machine two torch threads wait on each other
        # (measured here: 0.9 s/epoch with 1 thread, 15-50 s with 2 under load).
        threads=1,
        train={"embedding_size": 16, "epochs": 4, "patience": 2, "sparse_embeddings": False},
        model_options={"ifm": {"fen_width": 64}, "wide_deep": {"hidden": [64, 32, 16]},
                       "deepfm": {"hidden": [32, 32, 32]}, "nfm": {"hidden": [64]}},
        dropout_grid=(0.0, 0.3, 0.6, 0.9),
    ),
}


def get_profile(profile: str | Profile = "smoke", overrides: dict | None = None) -> Profile:
    """A profile by name, overridden field by field.

    ``overrides`` keys may be Profile fields (``seeds``, ``dropout_grid``, ``train``...),
    TrainConfig fields (``epochs``, ``embedding_size``...: applied to every run), or
    ``model_options`` as ``{model: {option: value}}`` (merged per model).
    """
    if isinstance(profile, str) and profile in PROFILES:
        profile = PROFILES[profile]
    elif not isinstance(profile, Profile):
        raise ValueError(f"unknown profile {profile!r}: profile must be one of {', '.join(PROFILES)}")
    overrides = parse_overrides(overrides)
    if not overrides:
        return profile
    profile_fields = {f.name: f for f in dataclasses.fields(Profile)}
    train_fields = {f.name: f for f in dataclasses.fields(TrainConfig)
                    if f.name not in ("model", "seed", "device", "model_options")}
    changes, train_changes = {}, dict(profile.train)
    model_options = {m: dict(o) for m, o in profile.model_options.items()}
    for key, value in overrides.items():
        if key == "model_options":
            if not (isinstance(value, dict) and set(value) <= set(MODELS)
                    and all(isinstance(o, dict) for o in value.values())):
                raise ValueError(f"overrides: model_options must map models ({', '.join(MODELS)}) to their "
                                 f'options, e.g. {{"ifm": {{"fen_layers": 1}}}}, got {value!r}')
            for model, options in value.items():
                model_options.setdefault(model, {}).update(options)
        elif key in profile_fields and key != "name":
            changes[key] = _checked_override(key, value, profile_fields[key])
        elif key in train_fields:
            train_changes[key] = _checked_override(key, value, train_fields[key])
        else:
            raise ValueError(f"unknown override {key!r}: not a Profile field ({', '.join(sorted(profile_fields))}) "
                             f"nor a TrainConfig field ({', '.join(sorted(train_fields))})")
    return dataclasses.replace(profile, train=train_changes, model_options=model_options, **changes)


# --------------------------------------------------------------------------- notebook parameters
# papermill's -p passes numbers, True/False and None typed and other words as strings; -r passes
# every value as a string. Each parameter is parsed here, and refused naming it and what it takes.
def parse_bool(name: str, value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", "none", ""):
        return False
    raise ValueError(f"{name} must be True or False, got {value!r}")


def parse_force(value) -> bool | float:
    """``force``: True, False, or a Unix time (retrain what was written before it)."""
    try:
        return parse_bool("force", value)
    except ValueError:
        pass
    try:
        when = float(value)
    except (TypeError, ValueError):
        when = math.nan
    if not (math.isfinite(when) and when > 0):
        raise ValueError(f"force must be True, False or a Unix time, got {value!r}")
    return when


def parse_list(value, name: str = "list parameter"):
    """A list parameter as papermill's ``-p`` may pass it: None, a list, a JSON/Python list
    string ('[0, 1]', '["frappe"]') or a comma-separated string ('0,1', 'frappe')."""
    if value is None or isinstance(value, (list, tuple)):
        return list(value) if value is not None else None
    if isinstance(value, (int, float)):
        return [value]
    text = str(value).strip()
    if text in ("", "None"):
        return None
    if text.startswith("["):
        import ast
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            parsed = None
        if not isinstance(parsed, list):
            raise ValueError(f"{name} must be a list such as [0, 1] or 0,1, got {value!r}")
        return parsed
    items = [t.strip().strip("'\"") for t in text.split(",") if t.strip()]
    return [int(t) if t.lstrip("-").isdigit() else t for t in items]


def parse_seeds(value, name: str = "seeds") -> tuple | None:
    seeds = parse_list(value, name)
    if seeds and not all(LIMITS["seed"].accepts(s) for s in seeds):
        raise ValueError(f"{name} must be a list of seeds, each {LIMITS['seed']} (e.g. 0,1,2 or [0, 1]), "
                         f"got {value!r}")
    return tuple(seeds) if seeds else None


def parse_datasets(value) -> tuple | None:
    names = parse_list(value, "datasets")
    if names and not all(n in DATASET_NAMES for n in names):
        raise ValueError(f"datasets must be a list of {', '.join(DATASET_NAMES)}, got {value!r}")
    return tuple(names) if names else None


def parse_overrides(value) -> dict | None:
    """``overrides``: a dict, or its JSON text ('{"epochs": 5}'); None or '' for none."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = json.loads(text) if text not in ("", "None") else None
        except ValueError as err:
            raise ValueError(f'overrides must be a JSON object such as {{"epochs": 5}}, got {text!r} ({err})') from None
    if value is not None and not isinstance(value, dict):
        raise ValueError(f'overrides must be a JSON object such as {{"epochs": 5}}, got {value!r}')
    return value


# Overrides whose entries are range-checked numbers: the list, the setting of each entry.
_LIST_OF = {"seeds": "seed", "sweep_seeds": "seed", "depth_grid": "fen_layers", "dropout_grid": "dropout"}
_KINDS = {bool: "True or False", int: "an integer", float: "a number", str: "a string", tuple: "a list",
          dict: "a JSON object"}


def _checked_override(key: str, value, spec: dataclasses.Field):
    """`value` for the Profile or TrainConfig field `spec`, refused unless it has the field's
    type (and range: LIMITS, RECIPES, a device of this machine)."""
    name = f"overrides: {key}"
    default = spec.default_factory() if spec.default is dataclasses.MISSING else spec.default
    if key in LIMITS:
        return None if value is None and default is None else check(name, value, key)
    if key in _LIST_OF:
        if not isinstance(value, list) or not value:
            raise ValueError(f"{name} must be a non-empty list, got {value!r}")
        return tuple(check(f"overrides: each of {key}", v, _LIST_OF[key]) for v in value)
    if key == "recipe" and value not in RECIPES + ("legacy",):
        raise ValueError(f"{name} must be one of {', '.join(RECIPES)} (or legacy, read-only), got {value!r}")
    if key == "device" and value != "auto" and isinstance(value, str) and device_problem(value):
        raise ValueError(f"{name}: {device_problem(value)}")
    kind = type(default)
    if default is None or kind not in _KINDS:
        return value
    if kind is float:
        ok = isinstance(value, (int, float)) and math.isfinite(value)
    else:
        ok = isinstance(value, list if kind is tuple else kind)
    if not ok or (isinstance(value, bool) and kind is not bool):
        raise ValueError(f"{name} must be {_KINDS[kind]}, got {value!r}")
    return tuple(value) if kind is tuple else value


def resolve_device(device: str | None, profile: Profile) -> str:
    device = device or profile.device
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    problem = device_problem(str(device))
    if problem:
        raise ValueError(f"device: {problem}")
    return device


def results_root(results_dir: str | os.PathLike | None = None) -> Path:
    return Path(results_dir or os.environ.get("IFM_RESULTS_DIR") or REPO_ROOT / "results").expanduser()


# --------------------------------------------------------------------------- cache keys
def canonical(value):
    """JSON-ready value with one spelling per meaning: tuples are lists, 0.0 is 0, keys sorted later."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    raise TypeError(f"cannot put {type(value).__name__} into a cache key")


# Provenance entries that say where the bytes were read from, not what they are.
_VOLATILE_PROVENANCE = ("source", "built_from_cache")


def data_identity(dataset, options: dict | None = None) -> dict:
    """What identifies a dataset's content: name, options, split seed and its provenance
    (file hashes, split rule, sizes, generator...) minus paths and cache flags."""
    prov = {k: v for k, v in dataset.provenance.items() if k not in _VOLATILE_PROVENANCE}
    prov["files"] = [{k: v for k, v in f.items() if k != "path"} for f in prov.get("files", [])]
    return canonical({"name": dataset.name, "options": options or {},
                      "split_seed": prov.get("split_seed"), "provenance": prov})


def config_identity(config: TrainConfig) -> dict:
    """The full TrainConfig, with `pretrain_fm` resolved (None means the paper's choice), so
    that an FM baseline and the FM pre-training of another model share one record."""
    d = config.to_dict()
    d["pretrain_fm"] = config.uses_pretraining()
    return canonical(d)


def run_key(config: TrainConfig, dataset, options: dict | None = None) -> tuple[str, dict]:
    """(key, material): a 20-hex-digit SHA-256 of everything that determines a run's result."""
    material = {"cache_format": CACHE_FORMAT, "training_version": TRAINING_VERSION,
                "config": config_identity(config), "data": data_identity(dataset, options)}
    blob = json.dumps(material, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:20], material


# --------------------------------------------------------------------------- the cache
class RunCache:
    """Run records in one directory. ``force``: False; True (retrain anything written before
    this cache object was made, so each run is retrained once and then shared); or a Unix time
    (retrain anything written before it: `reproduce --force` shares one across notebooks)."""

    lock_poll = 1.0   # seconds between looks at a lock another process holds

    def __init__(self, directory: str | os.PathLike, force: bool | float | str = False):
        self.directory = Path(directory).expanduser()
        force = parse_force(force)
        self.force_since = time.time() if force is True else (force or None)
        self._index = None
        if self.directory.is_dir():
            removed = remove_stale_temporaries(self.directory)
            if removed:
                warnings.warn(f"removed {len(removed)} temporary file(s) that an interrupted write left in "
                              f"{self.directory}: {', '.join(p.name for p in removed)}")

    def read(self, path: Path, run_record: bool = True) -> dict | None:
        """The JSON object at `path` (with `run_record`: of a run record's shape), else None with a warning."""
        what = "run record" if run_record else "record"
        try:
            record = read_json(path)
        except (OSError, ValueError) as err:
            warnings.warn(f"ignoring unreadable {what} {path}: {err}")
            return None
        if run_record:
            problem = _record_problem(record)
        else:
            problem = None if isinstance(record, dict) else _not_object(record)
        if problem:
            warnings.warn(f"ignoring {what} {path}: {problem}")
            return None
        return record

    def index(self) -> dict:
        """{dataset name: {data identity: {configuration without device: newest record}}} of the
        current training version's records in the directory, read and keyed once."""
        if self._index is None:
            self._index = {}
            for path in sorted(self.directory.glob("*.json")):
                if path.name.split("-")[0] not in MODELS:    # a derived record (factors-...), not a run
                    continue
                record = self.read(path)
                if record is None:
                    continue
                material = record["cache"]["material"]
                config = material["config"]
                if record.get("training_version") == LEGACY_TRAINING_VERSION:
                    # made before the recipes: its settings are the legacy recipe's
                    config = canonical({**LEGACY_FILL, **config})
                elif record.get("training_version") != TRAINING_VERSION:
                    continue
                configs = self._index.setdefault(material["data"]["name"], {}).setdefault(
                    _identity_text(material["data"]), {})
                key = _identity_text(_without_device(config))
                if record["cache"].get("written_at", 0) >= configs.get(key, {}).get("cache", {}).get("written_at", 0):
                    configs[key] = record
        return self._index

    def stem(self, key: str, config: TrainConfig, dataset_name: str) -> str:
        return f"{config.model}-{dataset_name}-{key}"

    def paths(self, stem: str) -> tuple[Path, Path]:
        return self.directory / f"{stem}.json", self.directory / f"{stem}.pt"

    def lookup(self, stem: str, key: str, need_state: bool = False) -> dict | None:
        record_path, state_path = self.paths(stem)
        record = self.read(record_path) if record_path.is_file() else None
        if record is None:
            return None
        meta = record["cache"]
        if meta["key"] != key or record.get("training_version") != TRAINING_VERSION:
            return None
        if self.force_since is not None and meta.get("written_at", 0) < self.force_since:
            return None
        if need_state and not self._state_readable(stem):
            return None
        return record

    def _state_readable(self, stem: str) -> bool:
        """Whether the model state of `stem` loads; a damaged one is reported and will be retrained."""
        path = self.paths(stem)[1]
        if not path.is_file():
            return False
        try:
            state = self.load_state(stem)
        except Exception as err:    # torch raises many kinds (zip, pickle, EOF...) for a damaged file
            state = err
        if not isinstance(state, dict):
            warnings.warn(f"ignoring unreadable model state {path} ({type(state).__name__}); retraining its run")
            return False
        return True

    def lock(self, stem: str, on_wait=None):
        """Hold `<stem>.lock` while training a run, so that a second sweep on this directory waits
        for the record instead of training the same run again."""
        return exclusive(self.directory / f"{stem}.lock", on_wait=on_wait, poll=self.lock_poll)

    def store(self, stem: str, record: dict, state: dict | None = None) -> Path:
        record_path, state_path = self.paths(stem)
        if state is not None:
            save_state_atomic({k: v.detach().cpu() for k, v in state.items()}, state_path)
        return write_json_atomic(record_path, record)

    def load_state(self, stem: str) -> dict:
        return torch.load(self.paths(stem)[1], map_location="cpu", weights_only=True)

    def derived_path(self, kind: str, dataset_name: str, key: str) -> Path:
        """Where a result computed from trained models (not a training run) is kept, e.g. Table 1's."""
        return self.directory / f"{kind}-{dataset_name}-{key}.json"


# What the cache and the rows read from a run record: its objects and the keys they must hold.
_RECORD_SHAPE = {"config": ("model", "seed"), "dataset": ("provenance",), "cache": ("key", "stem", "material")}


def _not_object(value) -> str:
    kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")
    return f"{kind}, not a JSON object"


def _record_problem(record) -> str | None:
    """What keeps `record` from being a run record (None: nothing)."""
    if not isinstance(record, dict):
        return _not_object(record)
    for name, keys in _RECORD_SHAPE.items():
        part = record.get(name)
        if not isinstance(part, dict):
            return f"no {name!r} object"
        missing = [k for k in keys if k not in part]
        if missing:
            return f"its {name!r} has no {', '.join(map(repr, missing))}"
    material = record["cache"]["material"]
    if not (isinstance(material, dict) and isinstance(material.get("config"), dict)
            and isinstance(material.get("data"), dict) and "name" in material["data"]):
        return "its cache 'material' lacks the run's config or data"
    return None


def _without_device(config_id: dict) -> dict:
    return {k: v for k, v in config_id.items() if k != "device"}


def _identity_text(identity: dict) -> str:
    return json.dumps(identity, sort_keys=True, separators=(",", ":"))


# --------------------------------------------------------------------------- experiments
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
        if recipe not in (None, "", "None"):
            if recipe not in RECIPES + ("legacy",):
                raise ValueError(f"recipe must be one of {', '.join(RECIPES)} (or legacy, read-only), got {recipe!r}")
            self.profile = dataclasses.replace(self.profile, recipe=str(recipe))
        self.train_missing = parse_bool("train_missing", train_missing)
        self.missing: list[str] = []
        self.datasets, self.seeds = parse_datasets(datasets), parse_seeds(seeds)
        self.device = resolve_device(device, self.profile)
        if self.profile.threads:
            torch.set_num_threads(int(self.profile.threads))
        self.data_dir = data_dir
        self.cache = RunCache(results_root(results_dir) / self.profile.name, force)
        self.progress = progress
        self.log = log
        self._datasets = {}
        self.stats = {"reused": 0, "trained": 0, "pretrained": 0, "missing": 0, "seconds": 0.0}   # since the last report
        self.totals = dict(self.stats)                                              # since creation
        self._nesting = 0

    # --- data
    def dataset(self, name: str):
        if name not in self._datasets:
            options = self.profile.dataset_options.get(name, {})
            self._datasets[name] = load_dataset(name, self.data_dir, split_seed=self.profile.split_seed, **options)
        return self._datasets[name]

    def config(self, dataset: str, model: str, seed: int, **changes) -> TrainConfig:
        return self.profile.config(dataset, model, seed, self.device, **changes)

    # --- runs
    def run(self, config: TrainConfig, dataset_name: str, *, save_state: bool = False) -> dict | None:
        """The record of `config` on `dataset_name`: from the cache, else trained and stored
        (or, with ``train_missing=False``, None and noted in ``self.missing``)."""
        if not self.train_missing:
            return self._committed(config, dataset_name)
        if config.recipe == "legacy":
            raise ValueError("recipe 'legacy' only reads the records made before the recipes existed; "
                             "train with recipe 'paper' or 'code'")
        data = self.dataset(dataset_name)
        options = self.profile.dataset_options.get(dataset_name, {})
        key, material = run_key(config, data, options)
        stem = self.cache.stem(key, config, dataset_name)
        record = self.cache.lookup(stem, key, need_state=save_state)
        if record is None:
            with self.cache.lock(stem, on_wait=lambda lock, holder: self.say(
                    f"  waiting for {holder}, which is training this run ({lock})")):
                record = self.cache.lookup(stem, key, need_state=save_state)   # it may have been made meanwhile
                if record is None:
                    return self._train(config, dataset_name, data, key, material, stem,
                                       keep_state=save_state or config.model == "fm")
        if not self._nesting:
            self.stats["reused"] += 1
        return record

    def _train(self, config: TrainConfig, dataset_name: str, data, key: str, material: dict, stem: str,
               keep_state: bool) -> dict:
        """Train `config` (after its FM pre-training, from the cache or trained) and store its record."""
        pretrained = pretrain_summary = None
        if config.uses_pretraining():
            fm_config = config.pretrain_config()
            self._nesting += 1
            try:
                fm_record = self.run(fm_config, dataset_name, save_state=True)
            finally:
                self._nesting -= 1
            pretrained = {k: v for k, v in self.cache.load_state(fm_record["cache"]["stem"]).items()
                          if k.startswith(FM_STATE_PREFIXES)}
            pretrain_summary = {**summary_of(fm_record), "key": fm_record["cache"]["key"]}
        started = time.perf_counter()
        with warnings.catch_warnings():
            # torch warns once per process about unchecked sparse tensors (sparse embeddings).
            warnings.filterwarnings("ignore", message="Sparse invariant checks")
            result = train(config, data, pretrained=pretrained, progress=self.progress,
                           pretrain_record=pretrain_summary)
        seconds = time.perf_counter() - started
        record = result.record
        record["cache"] = {"key": key, "stem": stem, "material": material, "profile": self.profile.name,
                           "written_at": time.time(),
                           "written_at_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "state_file": f"{stem}.pt" if keep_state else None}
        self.cache.store(stem, record, result.model.state_dict() if keep_state else None)
        self.stats["pretrained" if self._nesting else "trained"] += 1
        self.stats["seconds"] += seconds
        self.say(f"  trained {stem} ({config.model} on {dataset_name}, seed {config.seed}) in {seconds:.1f} s")
        return record

    def _committed(self, config: TrainConfig, dataset_name: str) -> dict | None:
        """The stored record of `config` on the data most records of `dataset_name` used."""
        versions = self.cache.index().get(dataset_name, {})
        # One dataset version per page: the one with the most runs.
        data = max(versions, key=lambda v: len(versions[v])) if versions else None
        record = versions.get(data, {}).get(_identity_text(_without_device(config_identity(config))))
        if record is None:
            self.missing.append(self.describe(config, dataset_name))
            self.stats["missing"] += 1
            return None
        self.stats["reused"] += 1
        return record

    def describe(self, config: TrainConfig, dataset_name: str) -> str:
        """'IFM on frappe, seed 1 (fen_layers=4)': a run in words, with what sets it apart."""
        base = self.config(dataset_name, config.model, config.seed).to_dict()
        mine = config.to_dict()
        changes = [f"{k}={v}" for k, v in mine.items() if k not in ("model_options", "device") and v != base.get(k)]
        changes += [f"{k}={v}" for k, v in mine["model_options"].items() if v != base["model_options"].get(k)]
        return (f"{DISPLAY_NAMES.get(config.model, config.model)} on {dataset_name}, seed {config.seed}"
                + (f" ({', '.join(changes)})" if changes else ""))

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
                    f" (nothing trained), {s['missing']} missing; profile {self.profile.name}")
        extra = f" + {s['pretrained']} FM pre-training(s)" if s["pretrained"] else ""
        return (f"{what}: {s['reused'] + s['trained']} runs, {s['reused']} reused from {self.where()}, "
                f"{s['trained']} trained now{extra} ({s['seconds']:.0f} s) on {self.device}; "
                f"profile {self.profile.name}")

    # --- rows
    def row(self, record: dict, dataset_name: str, **extra) -> dict:
        """One run as a row; the data's description comes from the record, not from loading it."""
        prov = record["dataset"]["provenance"]
        sizes = prov.get("sizes", {})
        env = record.get("environment", {})
        config = record["config"]
        row = {"profile": self.profile.name, "recipe": config.get("recipe", "legacy"),
               "dataset": dataset_name, "dataset_label": dataset_label(prov),
               "model": config["model"], "model_name": DISPLAY_NAMES.get(config["model"], config["model"]),
               "seed": config["seed"], **extra,
               "train_instances": sizes.get("train"), "valid_instances": sizes.get("valid"),
               "test_instances": sizes.get("test"), "data_fraction": prov.get("fraction_of_paper"),
               "data_note": data_note(prov), "device": env.get("device"), "device_name": env.get("device_name"),
               "epochs_run": record.get("epochs_run"), "best_epoch": record.get("best_epoch"),
               "wall_seconds": record.get("wall_seconds"), "samples_per_second": record.get("samples_per_second"),
               "key": record["cache"]["key"]}
        for split in ("valid", "test"):
            for metric, value in (record.get(split) or {}).items():
                row[f"{split}_{metric}"] = _num(value)
        return row


def _num(value) -> float:
    return float("nan") if value is None else float(value)


def dataset_label(prov: dict) -> str:
    """Short honest label: 'Frappe (paper split, reconstructed)', 'Frappe (30% of the paper's
    data)', 'MovieLens stand-in', ... (records made before ``data_kind`` existed carry notes)."""
    name = prov.get("dataset", "?")
    base = DATASET_NAMES.get(name, name)
    notes = " ".join(prov.get("notes", []))
    kind = prov.get("data_kind")
    if kind == "reconstructed":
        return f"{base} (paper split, reconstructed)"
    if kind == "user":
        return f"{base} (your data)"
    if name == "movielens" and (kind == "stand-in" or "stand-in" in notes):
        return "MovieLens stand-in"
    if name == "avazu" and (kind == "sample" or "sample" in notes):
        return f"Avazu {prov['sizes']['total']:,}-row sample"
    fraction = prov.get("fraction_of_paper")
    if fraction is not None and fraction < 0.999:
        return f"{base} ({100 * fraction:.2g}% of the paper's data)"
    return base


def data_note(prov: dict) -> str:
    sizes = prov.get("sizes", {})
    text = f"{sizes.get('train', 0):,} training instances"
    if prov.get("paper_instances"):
        text += (f" ({sizes.get('total', 0):,} of the paper's {prov['paper_instances']:,} instances in all,"
                 f" {100 * prov['fraction_of_paper']:.3g}%)")
    notes = [n for n in prov.get("notes", []) if "stand-in" in n or "sample" in n or "synthetic" in n]
    return "; ".join([text] + notes)


def _experiment(profile, kwargs) -> Experiment:
    exp = kwargs.pop("experiment", None)
    if exp is None:
        exp = Experiment(profile, **kwargs)
    elif kwargs.get("seeds") is not None or kwargs.get("datasets") is not None:
        raise ValueError("pass seeds/datasets to the Experiment, not beside it")
    return exp


def _seeds(exp: Experiment, default: tuple) -> tuple:
    return exp.seeds if exp.seeds is not None else tuple(default)


# The columns of a study with no runs yet, so that grouping and filtering still work on it.
EMPTY_COLUMNS = ["dataset", "dataset_label", "model", "model_name", "seed", "data_note", "device", "device_name"]


def _frame(rows, exp: Experiment, study: str, seeds) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=None if rows else EMPTY_COLUMNS)
    df.insert(0, "study", study)
    df.attrs["missing"], exp.missing = exp.missing, []
    df["seeds"] = ",".join(str(s) for s in seeds)
    df["n_seeds"] = len(seeds)
    df.attrs.update(study=study, complete=not df.attrs["missing"], profile=exp.profile.name, recipe=exp.profile.recipe,
                    device=exp.device, seeds=list(seeds),
                    profile_differences=exp.profile.differences(), report=exp.report(study))
    exp.say(df.attrs["report"])
    return df


# --------------------------------------------------------------------------- Figs. 3-5: FEN sweeps
def _fen_sweep(study, option, values, profile, kwargs):
    exp = _experiment(profile, kwargs)
    seeds = _seeds(exp, exp.profile.sweep_seeds)
    rows = []
    for name in exp.datasets or exp.profile.datasets:
        for value in values:
            for seed in seeds:
                config = exp.config(name, "ifm", seed, model_options={option: value})
                record = exp.run(config, name)
                if record is None:
                    continue
                rows.append(exp.row(record, name, **{
                    "fen_layers": config.model_options["fen_layers"], "dropout": config.model_options["dropout"],
                    "activation": config.model_options["activation"]}))
    return _frame(rows, exp, study, seeds)


def depth_study(profile="smoke", **kwargs) -> pd.DataFrame:
    """Fig. 3a / 4a: validation RMSE and MAE of IFM vs the number of FEN hidden layers
    (dropout and activation held at the paper's best for the dataset)."""
    exp = _experiment(profile, kwargs)
    return _fen_sweep("depth", "fen_layers", [int(v) for v in exp.profile.depth_grid], profile,
                      {"experiment": exp})


def dropout_study(profile="smoke", **kwargs) -> pd.DataFrame:
    """Fig. 3b / 4b: validation RMSE and MAE vs the FEN dropout ratio (depth at the paper's best)."""
    exp = _experiment(profile, kwargs)
    return _fen_sweep("dropout", "dropout", [float(v) for v in exp.profile.dropout_grid], profile,
                      {"experiment": exp})


def activation_study(profile="smoke", **kwargs) -> pd.DataFrame:
    """Fig. 5: validation RMSE and MAE for the FEN activation functions."""
    exp = _experiment(profile, kwargs)
    return _fen_sweep("activation", "activation", list(exp.profile.activation_grid), profile,
                      {"experiment": exp})


# --------------------------------------------------------------------------- Fig. 6
def convergence_study(profile="smoke", *, pretrain_fm: bool | None = None, **kwargs) -> pd.DataFrame:
    """Fig. 6: per-epoch error on the whole training set and on validation, IFM vs FM.

    One row per (dataset, model, seed, epoch). Runs use ``eval_train=True`` (train error
    scored with dropout off after each epoch). IFM starts from its FM pre-training, as in
    the paper's setup, unless ``pretrain_fm=False``.
    """
    exp = _experiment(profile, kwargs)
    seeds = _seeds(exp, exp.profile.seeds)
    rows = []
    for name in exp.datasets or exp.profile.datasets:
        for model in ("fm", "ifm"):
            for seed in seeds:
                changes = {"eval_train": True}
                if model == "ifm" and pretrain_fm is not None:
                    changes["pretrain_fm"] = pretrain_fm
                config = exp.config(name, model, seed, **changes)
                record = exp.run(config, name)
                if record is None:
                    continue
                base = exp.row(record, name, pretrained=config.uses_pretraining())
                for epoch in record["history"]:
                    rows.append({**base, **{k: _num(v) if k != "epoch" else v for k, v in epoch.items()}})
    return _frame(rows, exp, "convergence", seeds)


# --------------------------------------------------------------------------- Table 1
@dataclass
class FactorStudy:
    """Table 1: `table` (the chosen test instances, FM and IFM errors, their factors),
    `distribution` (every test instance's factor of every field, long form) and `summary`
    (per-field statistics of the factors)."""
    table: pd.DataFrame
    distribution: pd.DataFrame
    summary: pd.DataFrame
    attrs: dict


def factor_study(profile="smoke", *, dataset: str = "frappe", fields=(2, 8), **kwargs) -> FactorStudy:
    """Table 1: input-aware factors m_x,i of two fields in three test instances.

    The paper's x3 and x9 are read as the 3rd and 9th field of an instance (1-based, as the
    paper numbers x_1..x_h), i.e. 0-based columns 2 and 8: daytime and country on Frappe.
    The paper does not say how its three instances were chosen. Here: among the test
    instances that share the most frequent pair of features in those two fields (so that,
    as in the paper, the *same* two features appear in all three), the ones with the largest,
    median and smallest factor of the first field. Errors are |y_hat - y| with predictions
    bounded to the label range, for IFM and for the FM that IFM was pre-trained from.

    The result is kept as a derived record (``factors-<dataset>-<IFM key>.json`` beside the
    runs: the chosen instances and every test instance's factors), so that the book reads it
    without the models' weights, which are not committed.
    """
    exp = _experiment(profile, kwargs)
    seed = _seeds(exp, exp.profile.seeds)[0]
    fields = [int(f) for f in fields]
    ifm_config, fm_config = exp.config(dataset, "ifm", seed), exp.config(dataset, "fm", seed)
    ifm_record = exp.run(ifm_config, dataset, save_state=exp.train_missing)
    fm_record = exp.run(fm_config, dataset, save_state=exp.train_missing)
    derived = None
    if ifm_record is not None and fm_record is not None:
        path = exp.cache.derived_path("factors", dataset, ifm_record["cache"]["key"])
        derived = exp.cache.read(path, run_record=False) if path.is_file() else None
        if derived is not None and (derived.get("fields") != fields or derived.get("fm_key") != fm_record["cache"]["key"]):
            derived = None
        if derived is None and exp.train_missing:
            write_json_atomic(path, _compute_factors(exp, dataset, fields, ifm_record, fm_record))
            derived = read_json(path)   # one path for fresh and stored results
        if derived is None:
            exp.missing.append(f"Table 1 factors of IFM on {dataset}, seed {seed} (needs its saved weights)")
            exp.stats["missing"] += 1
    base = exp.row(ifm_record, dataset) if ifm_record is not None else {}
    common_cols = {k: base.get(k) for k in ("profile", "dataset", "dataset_label", "seed", "train_instances",
                                            "test_instances", "data_note", "device", "device_name")}
    common_cols["profile"] = exp.profile.name
    table = pd.DataFrame([{**common_cols, **r} for r in derived["table"]]) if derived else pd.DataFrame()
    if derived:
        table["candidates"] = derived["candidates"]
        table["fm_test_mae"], table["ifm_test_mae"] = derived["fm_test_mae"], derived["ifm_test_mae"]
    names = derived["field_names"] if derived else []
    factors = np.asarray(derived["factors"], dtype=float) if derived else np.zeros((0, 0))   # [field, instance]
    h, n = factors.shape
    distribution = pd.DataFrame({"test_index": np.tile(np.arange(n), h), "field": np.repeat(np.arange(1, h + 1), n),
                                 "field_name": np.repeat(np.asarray(names, dtype=object), n),
                                 "factor": factors.reshape(-1)})
    distribution["dataset"] = dataset
    distribution["profile"] = exp.profile.name
    distribution["device"], distribution["device_name"] = base.get("device"), base.get("device_name")
    q = distribution.groupby(["field", "field_name"])["factor"]
    summary = pd.DataFrame({"mean": q.mean(), "std": q.std(), "p05": q.quantile(0.05), "median": q.median(),
                            "p95": q.quantile(0.95), "share_far_from_1": q.apply(lambda s: float(
                                ((s < 0.5) | (s > 2)).mean()))}).reset_index()
    exp_attrs = {"study": "factors", "profile": exp.profile.name, "device": exp.device, "seeds": [seed],
                 "fields": fields, "field_names": [names[f] for f in fields] if names else [],
                 "common_pair": derived["common_pair"] if derived else [],
                 "profile_differences": exp.profile.differences(), "missing": exp.missing,
                 "complete": derived is not None, "report": exp.report("factors")}
    exp.missing = []
    exp.say(exp_attrs["report"])
    for frame in (table, distribution, summary):
        frame.attrs.update(exp_attrs)
    return FactorStudy(table, distribution, summary, exp_attrs)


def _compute_factors(exp: Experiment, dataset: str, fields: list[int], ifm_record: dict, fm_record: dict) -> dict:
    """Table 1 from the trained IFM and FM: the chosen instances and every test factor."""
    data = exp.dataset(dataset)
    if max(fields) >= data.num_fields:
        raise ValueError(f"{dataset} has {data.num_fields} fields; fields {fields} are out of range")
    ifm, fm = exp.model(ifm_record, dataset), exp.model(fm_record, dataset)
    x, y = data.test.x, data.test.y
    with torch.no_grad():
        factors = torch.cat([ifm.factors(x[i:i + 16384]) for i in range(0, len(x), 16384)]).numpy()
    low, high = data.train.y.min().item(), data.train.y.max().item()
    bounded = (lambda p: p.clamp(low, high)) if data.task == "regression" else torch.sigmoid
    ifm_error = (bounded(predict(ifm, x)) - y).abs().numpy()
    fm_error = (bounded(predict(fm, x)) - y).abs().numpy()

    xa = x.numpy()
    pair_ids, counts = np.unique(xa[:, fields], axis=0, return_counts=True)
    common = pair_ids[np.argmax(counts)]
    candidates = np.flatnonzero((xa[:, fields] == common).all(axis=1))
    by_factor = candidates[np.argsort(-factors[candidates, fields[0]], kind="stable")]
    picks = {"largest": 0, "median": len(by_factor) // 2, "smallest": len(by_factor) - 1}
    chosen, chosen_as = [], []
    for why, position in picks.items():   # fewer than 3 candidates: fewer rows
        if by_factor[position] not in chosen:
            chosen.append(by_factor[position])
            chosen_as.append(why)
    rows = []
    for n, (i, why) in enumerate(zip(chosen, chosen_as), start=1):
        row = {"instance": n, "test_index": int(i), "chosen_as": f"{why} m of x{fields[0] + 1}",
               "y": float(y[i]), "fm_error": float(fm_error[i]), "ifm_error": float(ifm_error[i])}
        for f in fields:
            row[f"feature_x{f + 1}"] = int(xa[i, f])
            row[f"ifm_factor_x{f + 1}"] = float(factors[i, f])
        rows.append(row)
    names = data.provenance.get("fields") or [f"field {j + 1}" for j in range(data.num_fields)]
    return {"kind": "factors", "dataset": dataset, "fields": fields, "field_names": list(names),
            "ifm_key": ifm_record["cache"]["key"], "fm_key": fm_record["cache"]["key"],
            "common_pair": common.tolist(), "candidates": int(len(candidates)),
            "fm_test_mae": float(fm_error.mean()), "ifm_test_mae": float(ifm_error.mean()), "table": rows,
            # every test instance's factor of every field, 5 significant digits: the figure's data
            "factors": [[float(f"{v:.5g}") for v in column] for column in factors.T]}


# --------------------------------------------------------------------------- Tables 2-4
def component_study(profile="smoke", **kwargs) -> pd.DataFrame:
    """Table 2: train FM; initialise each model from it with the embeddings (w0, w, v)
    frozen, train only its extra component; RI = (RMSE_FM - RMSE_model) / RMSE_FM on test.
    One row per (dataset, model, seed), FM rows included (RI 0)."""
    exp = _experiment(profile, kwargs)
    seeds = _seeds(exp, exp.profile.seeds)
    rows = []
    for name in exp.datasets or exp.profile.datasets:
        for seed in seeds:
            fm = exp.run(exp.config(name, "fm", seed), name, save_state=True)
            fm_rmse, fm_mae = (_num(fm["test"]["rmse"]), _num(fm["test"]["mae"])) if fm else (math.nan, math.nan)
            seed_rows = []
            for model in exp.profile.component_models:
                config = exp.config(name, model, seed, pretrain_fm=True, freeze_embeddings=True)
                record = exp.run(config, name)
                if record is None or fm is None:
                    continue
                row = exp.row(record, name, component=COMPONENTS.get(model, "?"), fm_test_rmse=fm_rmse)
                row["ri_rmse"] = (fm_rmse - row["test_rmse"]) / fm_rmse
                row["ri_mae"] = (fm_mae - row["test_mae"]) / fm_mae
                seed_rows.append(row)
            if seed_rows:   # the FM row only beside what it is the reference of
                rows.append(exp.row(fm, name, component="-", fm_test_rmse=fm_rmse, ri_rmse=0.0, ri_mae=0.0))
                rows.extend(seed_rows)
    return _frame(rows, exp, "components", seeds)


COMPONENTS = {"fm": "-", "deepfm": "DNN", "nfm": "DNN", "afm": "Attention", "ifm": "FEN", "wide_deep": "DNN"}


def regression_study(profile="smoke", **kwargs) -> pd.DataFrame:
    """Table 3: test MAE and RMSE of each model; one row per (dataset, model, seed)."""
    exp = _experiment(profile, kwargs)
    seeds = _seeds(exp, exp.profile.seeds)
    records = [(name, exp.run(exp.config(name, model, seed), name))
               for name in exp.datasets or exp.profile.datasets
               for model in exp.profile.regression_models for seed in seeds]
    rows = [exp.row(record, name) for name, record in records if record is not None]
    return _frame(rows, exp, "regression", seeds)


def ctr_study(profile="smoke", **kwargs) -> pd.DataFrame:
    """Table 4: test AUC (in %) and logloss on Avazu; one row per (model, seed).
    Only the 100-row sample exists on this machine: its numbers say nothing about the models."""
    exp = _experiment(profile, kwargs)
    seeds = _seeds(exp, exp.profile.seeds)
    rows = []
    for name in exp.datasets or exp.profile.ctr_datasets:
        for model in exp.profile.ctr_models:
            for seed in seeds:
                record = exp.run(exp.config(name, model, seed), name)
                if record is None:
                    continue
                row = exp.row(record, name)
                row["test_auc_pct"] = 100 * row.get("test_auc", float("nan"))
                rows.append(row)
    return _frame(rows, exp, "ctr", seeds)


# --------------------------------------------------------------------------- statistics
def t_interval(values, confidence: float = 0.95) -> tuple[float, float]:
    """(mean, half-width) of the two-sided Student-t interval; half-width NaN for n < 2."""
    from scipy import stats

    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan")
    if len(v) < 2:
        return float(v.mean()), float("nan")
    half = stats.t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(half)


def paired_t_test(a, b) -> tuple[float, float]:
    """(t, two-sided p) of the paired t-test of a vs b (same seeds); NaN when undefined."""
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError("paired samples must have the same length")
    ok = ~(np.isnan(a) | np.isnan(b))
    a, b = a[ok], b[ok]
    d = a - b
    if len(d) < 2 or np.std(d, ddof=1) == 0:   # t undefined: too few pairs or identical differences
        return float("nan"), float("nan")
    result = stats.ttest_rel(a, b)
    return float(result.statistic), float(result.pvalue)


def summarize(df: pd.DataFrame, by, metrics, confidence: float = 0.95) -> pd.DataFrame:
    """Mean, 95% t-interval (low, high, half-width), std and n per group, one row per group."""
    rows = []
    for keys, group in df.groupby(list(by), sort=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        row = dict(zip(by, keys))
        for metric in metrics:
            values = group[metric].to_numpy(dtype=float)
            mean, half = t_interval(values, confidence)
            row.update({f"{metric}_mean": mean, f"{metric}_half": half, f"{metric}_low": mean - half,
                        f"{metric}_high": mean + half,
                        f"{metric}_std": float(np.nanstd(values, ddof=1)) if np.sum(~np.isnan(values)) > 1
                        else float("nan"), f"{metric}_n": int(np.sum(~np.isnan(values)))})
        rows.append(row)
    out = pd.DataFrame(rows)
    out.attrs.update(df.attrs)
    return out


def significance(df: pd.DataFrame, metrics=("test_mae", "test_rmse"), reference: str = "ifm",
                 alpha: float = ALPHA, lower_is_better: bool = True) -> pd.DataFrame:
    """The paper's test of Table 3: is `reference` better than each other model?

    A two-sided paired t-test over seeds (each seed pairs the runs of the two models that
    share the split and seed); significant when p < alpha and the reference's mean is better.
    """
    rows = []
    for name, data in df.groupby("dataset", sort=False):
        ref = data[data.model == reference].set_index("seed")
        for model, other in data[data.model != reference].groupby("model", sort=False):
            other = other.set_index("seed")
            seeds = sorted(set(ref.index) & set(other.index))
            for metric in metrics:
                a, b = ref.loc[seeds, metric].to_numpy(float), other.loc[seeds, metric].to_numpy(float)
                t, p = paired_t_test(a, b)
                ma, mb = _mean(a), _mean(b)
                better = (ma < mb) if lower_is_better else (ma > mb)   # False when either is NaN
                rows.append({"dataset": name, "reference": reference, "baseline": model,
                             "baseline_name": DISPLAY_NAMES.get(model, model), "metric": metric,
                             "n_pairs": len(seeds), "reference_mean": ma, "baseline_mean": mb,
                             "mean_difference": _mean(a - b), "t": t, "p_value": p, "better": bool(better),
                             "significant": bool(better and not math.isnan(p) and p < alpha),
                             "verdict": "not testable (< 2 pairs)" if math.isnan(p) else
                             f"{reference.upper()} {'better' if better else 'worse'}, p < {alpha:g}" if p < alpha
                             else "no significant difference"})
    return pd.DataFrame(rows, columns=SIGNIFICANCE_COLUMNS)


SIGNIFICANCE_COLUMNS = ["dataset", "reference", "baseline", "baseline_name", "metric", "n_pairs", "reference_mean",
                        "baseline_mean", "mean_difference", "t", "p_value", "better", "significant", "verdict"]


def _mean(values) -> float:
    """Mean of the finite values; NaN (without a warning) when there are none."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    return float(v.mean()) if len(v) else float("nan")


def best_by(df: pd.DataFrame, option: str, metric: str = "valid_rmse") -> pd.DataFrame:
    """Per dataset: the sweep value with the lowest mean `metric` over seeds."""
    means = df.groupby(["dataset", option], sort=False)[metric].mean().reset_index()
    idx = means.groupby("dataset", sort=False)[metric].idxmin()
    return means.loc[idx.dropna()].reset_index(drop=True)


def seeds_per_setting(df: pd.DataFrame, option: str) -> int:
    """The seeds behind every setting of a sweep: the fewest any setting has."""
    return int(df.groupby(option)["seed"].nunique().min())


# --------------------------------------------------------------------------- the paper's numbers
def paper_reported(path: str | os.PathLike | None = None) -> dict:
    """The paper's published numbers (a copy of shared/paper/reported.json kept in the book)."""
    return read_json(path or PAPER_REPORTED)


_PAPER_MODEL_IDS = {v: k for k, v in DISPLAY_NAMES.items() if k != "fm"} | {"FM": "fm"}


def paper_table(item: str, reported: dict | None = None) -> pd.DataFrame:
    """The paper's numbers of one item as a tidy frame.

    item: 'table3' (dataset, model, MAE, RMSE), 'table4' (model, AUC, Logloss),
    'table2' (dataset, model, RI), 'table1' (the three rows), 'best' (dataset, fen_layers,
    dropout, activation of the paper's best IFM).
    """
    r = reported or paper_reported()
    if item == "table3":
        return pd.DataFrame([{"dataset": ds, "model": _PAPER_MODEL_IDS[m], "model_name": m, **vals}
                             for ds, models in r["table3_regression"].items() if isinstance(models, dict)
                             for m, vals in models.items()])
    if item == "table4":
        return pd.DataFrame([{"model": _PAPER_MODEL_IDS[m], "model_name": m, **vals}
                             for m, vals in r["table4_avazu"].items() if isinstance(vals, dict)])
    if item == "table2":
        return pd.DataFrame([{"dataset": ds, "model": _PAPER_MODEL_IDS[m], "model_name": m, "RI": v}
                             for ds, models in r["table2_component_relative_improvement"].items()
                             if isinstance(models, dict) for m, v in models.items()])
    if item == "table1":
        return pd.DataFrame(r["table1_factors_frappe"]["rows"])
    if item == "best":
        return pd.DataFrame([{"dataset": ds, "fen_layers": b["depth"], "dropout": b["dropout"],
                              "activation": b["activation"]}
                             for ds, b in r["settings"]["ifm_best"].items()])
    raise ValueError(f"unknown paper item {item!r}")


def cli_runs(directory: str | os.PathLike) -> pd.DataFrame:
    """The `python -m ifm train --out` records of a folder as rows beside the paper's Table 3:
    model, recipe, seed, data, device, test RMSE / MAE (at the kept epoch), epochs, and for IFM
    the 5th-95th percentile of its factors on the test set."""
    paper = paper_table("table3").set_index(["dataset", "model"])
    rows = []
    for path in sorted(Path(directory).glob("*.json")):
        r = read_json(path)
        c, env, prov = r["config"], r.get("environment", {}), r["dataset"]["provenance"]
        # The paper's Table 3 has no plain FM row: its FM is LibFM.
        model = "libfm" if c["model"] == "fm" else c["model"]
        ref = paper.loc[(prov["dataset"], model)] if (prov["dataset"], model) in paper.index else None
        factors = r.get("factors_test")
        rows.append({"model": DISPLAY_NAMES.get(c["model"], c["model"]), "recipe": c.get("recipe", "legacy"),
                     "seed": c["seed"], "data": dataset_label(prov), "device": env.get("device_name"),
                     "test RMSE": r["test"]["rmse"], "paper RMSE": None if ref is None else ref["RMSE"],
                     "test MAE": r["test"]["mae"], "paper MAE": None if ref is None else ref["MAE"],
                     "kept epoch / run": f"{r.get('kept_epoch', r['best_epoch'])} / {r['epochs_run']}",
                     "factors p5-p95": "" if not factors else f"{factors['p5']:.2g}-{factors['p95']:.3g}"})
    return pd.DataFrame(rows).sort_values(["recipe", "model", "seed"], ascending=[False, True, True],
                                          ignore_index=True)


def paper_best(option: str, reported: dict | None = None) -> dict:
    """{dataset: the paper's best value of a FEN option} ('fen_layers', 'dropout', 'activation')."""
    best = paper_table("best", reported)
    return dict(zip(best.dataset, best[option]))


# --------------------------------------------------------------------------- everything on one page
SWEEP_WORDS = {"fen_layers": "FEN depth", "dropout": "FEN dropout", "activation": "FEN activation"}


def _setting(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:g}" if isinstance(value, (int, float, np.integer, np.floating)) else str(value)

def overview(profile="smoke", **kwargs) -> pd.DataFrame:
    """Every paper-vs-ours number of sections 5.2-5.4 in one frame (the book's results page).

    Columns: item, dataset, dataset_label, quantity, paper, ours, interval (95% half-width,
    NaN with one seed), n_seeds. Runs come from the cache (missing ones are trained).
    """
    kwargs.pop("experiment", None)
    exp = Experiment(profile, **kwargs)
    ctr_exp = Experiment(profile, **{**kwargs, "datasets": None})
    rep = paper_reported()
    rows = []

    def add(item, df_or_name, quantity, paper, ours, half=float("nan"), n=1, dataset=None, model=None, metric=None):
        label = df_or_name if isinstance(df_or_name, str) else None
        rows.append({"item": item, "dataset": dataset, "dataset_label": label, "quantity": quantity,
                     "paper": paper, "ours": ours, "interval": half, "n_seeds": n, "model": model,
                     "metric": metric})

    labels, notes, devices, missing = {}, {}, {}, []

    coverage = []

    def seen(df):
        """Remember each dataset's label and note, and what the study found missing."""
        coverage.append({"study": df.attrs.get("study"), "runs": int(df["key"].nunique()) if "key" in df else 0,
                         "missing": len(df.attrs.get("missing", [])),
                         "seeds": ",".join(str(v) for v in sorted(df["seed"].unique())) if len(df) else "",
                         "devices": "; ".join(sorted({f"{d} ({n})" for d, n in zip(df.device, df.device_name)}))})
        if len(df):
            labels.update(dict(zip(df.dataset, df.dataset_label)))
            notes.update(dict(zip(df.dataset, df.data_note)))
            for name, device, device_name in zip(df.dataset, df.device, df.device_name):
                devices.setdefault(name, set()).add(f"{device} ({device_name})")
        missing.extend(df.attrs.get("missing", []))
        return df

    for item, option, study in (("Fig. 3a / 4a", "fen_layers", depth_study), ("Fig. 3b / 4b", "dropout", dropout_study),
                                ("Fig. 5", "activation", activation_study)):
        df = seen(study(experiment=exp))
        if df.empty:
            continue
        best = paper_best(option, rep)
        grid = {"fen_layers": exp.profile.depth_grid, "dropout": exp.profile.dropout_grid,
                "activation": exp.profile.activation_grid}[option]
        for metric in ("valid_rmse", "valid_mae"):
            for r in best_by(df, option, metric).itertuples():
                runs = df[df.dataset == r.dataset]
                tried = runs[option].nunique()
                add(item, labels[r.dataset], f"best {SWEEP_WORDS[option]} by validation {metric.split('_')[1].upper()}"
                    f" ({tried} of {len(grid)} settings run)",
                    _setting(best.get(r.dataset)), _setting(getattr(r, option)), dataset=r.dataset,
                    n=seeds_per_setting(runs, option))

    conv = seen(convergence_study(experiment=exp))
    for (name, model), group in conv.groupby(["dataset", "model"], sort=False):
        per_seed = group.groupby("seed")["valid_rmse"].min()
        mean, half = t_interval(per_seed)
        add("Fig. 6", labels.get(name, name), f"{DISPLAY_NAMES[model]} best validation RMSE (paper: shape only)",
            "IFM lower than FM", mean, half, len(per_seed), dataset=name)

    datasets = exp.datasets or exp.profile.datasets
    if "frappe" in datasets:
        fs = factor_study(experiment=exp, dataset="frappe")
        missing.extend(fs.attrs["missing"])
        coverage.append({"study": "factors", "runs": 2 if fs.attrs["complete"] else 0,
                         "missing": len(fs.attrs["missing"]), "seeds": ",".join(map(str, fs.attrs["seeds"])),
                         "devices": "; ".join(sorted({f"{d} ({n})" for d, n in zip(fs.table.get("device", []),
                                                                                 fs.table.get("device_name", []))}))})
        paper_rows = paper_table("table1", rep)
        for ours_row, paper_row in zip(fs.table.itertuples(), paper_rows.itertuples()):
            for col, what in (("fm_error", "FM |y_hat - y|"), ("ifm_error", "IFM |y_hat - y|"),
                              ("ifm_factor_x3", "IFM factor of x3"), ("ifm_factor_x9", "IFM factor of x9")):
                add("Table 1", ours_row.dataset_label, f"instance {ours_row.instance}: {what}",
                    getattr(paper_row, col), getattr(ours_row, col, float("nan")), dataset="frappe")

    comp = seen(component_study(experiment=exp))
    paper2 = paper_table("table2", rep)
    for (name, model), group in (comp[comp.model != "fm"] if len(comp) else comp).groupby(["dataset", "model"], sort=False):
        mean, half = t_interval(group["ri_rmse"])
        p = paper2[(paper2.dataset == name) & (paper2.model == model)]["RI"]
        add("Table 2", labels.get(name, name), f"{DISPLAY_NAMES[model]} relative improvement of RMSE over FM",
            float(p.iloc[0]) if len(p) else float("nan"), mean, half, len(group), dataset=name, model=model,
            metric="RI")

    def add_means(item, df, paper, metrics):
        """Per (dataset, model): mean and interval over seeds of each (metric, column, unit) beside the paper's."""
        for (name, model), group in df.groupby(["dataset", "model"], sort=False):
            for metric, col, unit in metrics:
                mean, half = t_interval(group[col])
                p = paper[(paper.dataset == name) & (paper.model == model)][metric]
                add(item, group.dataset_label.iloc[0], f"{DISPLAY_NAMES[model]} test {metric}{unit}",
                    float(p.iloc[0]) if len(p) else float("nan"), mean, half, len(group), dataset=name,
                    model=model, metric=metric)

    add_means("Table 3", seen(regression_study(experiment=exp)), paper_table("table3", rep),
              [("MAE", "test_mae", ""), ("RMSE", "test_rmse", "")])
    # The paper's Table 4 is on the full Avazu; each of our CTR datasets is compared with it.
    ctr = seen(ctr_study(experiment=ctr_exp))
    table4 = pd.concat([paper_table("table4", rep).assign(dataset=name) for name in ctr.dataset.unique()]
                       or [paper_table("table4", rep).assign(dataset=None)])
    add_means("Table 4", ctr, table4, [("AUC", "test_auc_pct", " (%)"), ("Logloss", "test_logloss", "")])

    out = pd.DataFrame(rows)
    out["data_note"] = out.dataset.map(lambda n: notes.get(n, ""))
    out["device"] = out.dataset.map(lambda n: ", ".join(sorted(devices.get(n, ()))))
    out.attrs.update(profile=exp.profile.name, device=exp.device, missing=missing, complete=not missing,
                     coverage=coverage,
                     seeds=sorted(set(exp.seeds or exp.profile.seeds) | set(exp.seeds or exp.profile.sweep_seeds)),
                     profile_differences=exp.profile.differences(), report=exp.report("overview", total=True))
    return out


HIGHER_IS_BETTER = {"AUC", "RI"}


def ranking_agreement(ov: pd.DataFrame) -> pd.DataFrame:
    """Per (item, dataset, metric) of Tables 2-4: the paper's and our order of the models (best
    first), Kendall's tau between them, and whether both put the same model first."""
    from scipy import stats

    rows = []
    tables = ov[ov.model.notna() & ov.ours.map(lambda v: isinstance(v, (int, float)) and not math.isnan(v))]
    for (item, name, metric), part in tables.groupby(["item", "dataset", "metric"], sort=False):
        part = part[part.paper.notna()]
        if len(part) < 2:
            continue
        sign = -1 if metric in HIGHER_IS_BETTER else 1
        paper_order = part.sort_values("paper", key=lambda v: sign * v.astype(float)).model.tolist()
        our_order = part.sort_values("ours", key=lambda v: sign * v.astype(float)).model.tolist()
        tau = stats.kendalltau(part.paper.astype(float), part.ours.astype(float)).statistic
        rows.append({"item": item, "dataset": name, "dataset_label": part.dataset_label.iloc[0], "metric": metric,
                     "models": len(part), "paper_order": " > ".join(DISPLAY_NAMES[m] for m in paper_order),
                     "our_order": " > ".join(DISPLAY_NAMES[m] for m in our_order), "kendall_tau": float(tau),
                     "paper_best": DISPLAY_NAMES[paper_order[0]], "our_best": DISPLAY_NAMES[our_order[0]],
                     "same_best": paper_order[0] == our_order[0],
                     "seeds": int(part.n_seeds.min())})
    return pd.DataFrame(rows, columns=RANKING_COLUMNS)


RANKING_COLUMNS = ["item", "dataset", "dataset_label", "metric", "models", "paper_order", "our_order", "kendall_tau",
                   "paper_best", "our_best", "same_best", "seeds"]


def convergence_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, model): best validation RMSE/MAE (mean ± 95% half-width over seeds), the
    epoch it was reached and the training RMSE there, from `convergence_study` rows."""
    rows = []
    for (name, model), group in df.groupby(["dataset", "model"], sort=False):
        best = group.loc[group.groupby("seed")["valid_rmse"].idxmin().dropna()]
        row = {"dataset": name, "dataset_label": group.dataset_label.iloc[0], "model": model,
               "model_name": group.model_name.iloc[0], "n_seeds": group.seed.nunique(),
               "epochs_run": int(group.epoch.max()), "best_epoch": float(best.epoch.mean())}
        for col in ("valid_rmse", "valid_mae", "train_rmse", "train_mae"):
            if col in best:
                row[col], row[f"{col}_half"] = t_interval(best[col])
        row["first_epoch_valid_rmse"] = float(group[group.epoch == 1].valid_rmse.mean())
        rows.append(row)
    return pd.DataFrame(rows)
