"""Profiles (named sizes of the experiments: `paper`, `smoke`), their overrides, and the one
place that parses what papermill passes (strings) into checked values.

A **profile** sets every notebook's sizes and seeds; ``paper`` is the paper's settings
(:func:`ifm.training.recipes.paper_config` unchanged, several seeds), ``smoke`` a tiny CPU variant for
CI. Any field can be overridden: ``get_profile("smoke", {"epochs": 5, "dropout_grid": [0.0, 0.5]})``.
The recipe (paper's text or released code) is a profile field too, orthogonal to the sizes.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

import torch

from ifm.training.limits import LIMITS, check, device_problem
from ifm.models import DISPLAY_NAMES, MODELS
from ifm.data.registry import DATASET_NAMES
from ifm.training.recipes import RECIPES, paper_config
from ifm.training.loop import TrainConfig


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
        for name, options in self.dataset_options.items():
            share = options.get("train_fraction")
            out.append(f"{DATASET_NAMES.get(name, name)}: " + (f"a seeded {share:g} of the training split "
                       "(validation and test whole)" if share is not None else
                       ", ".join(f"{k}={v}" for k, v in options.items())))
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
        description="the paper's settings, exactly ifm.training.recipes.paper_config (Adagrad 0.01, L2 1e-5, "
                    "embedding 256/256/40, batch 2048/4096/2048, FEN 256 per layer, FM pre-training), the "
                    "recipe's training (early stopping after 4 validation rises within 100 epochs); 3 seeds "
                    "for Tables 2-4, Fig. 6 and every sweep point of Figs. 3-5",
    ),
    "smoke": Profile(
        name="smoke",
        description="a tiny CPU run that checks the whole pipeline in a few minutes (CI); "
                    "its numbers are NOT the paper's experiment",
        seeds=(0,), sweep_seeds=(0,), device="cpu",
        # One thread: on a shared or busy 2-core machine two torch threads wait on each other
        # (measured here: 0.9 s/epoch with 1 thread, 15-50 s with 2 under load).
        threads=1,
        train={"embedding_size": 16, "epochs": 4, "stopping": "patience", "patience": 2, "sparse_embeddings": False},
        model_options={"ifm": {"fen_width": 64}, "wide_deep": {"hidden": [64, 32, 16]},
                       "deepfm": {"hidden": [32, 32, 32]}, "nfm": {"hidden": [64]}},
        dropout_grid=(0.0, 0.3, 0.6, 0.9),
        # A seeded fifth of each regression dataset's training split (validation and test whole):
        # the book's smoke run under nbval took 1,104 s here on the full splits, most of CI's time.
        dataset_options={"frappe": {"train_fraction": 0.2}, "movielens": {"train_fraction": 0.2}},
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
