"""Equal-budget tuning on the open CTR benchmark (Frappe_x1, recipe `bars`): every model gets the
same number of trials over a declared search space, chosen on validation AUC, and the chosen
setting is then trained at 5 seeds.

The search is Optuna's TPE sampler, seeded, driven ask-and-tell: each asked trial is an ordinary
run (recipe `bars`, seed 2021) that `fill` trains on its Dask cluster and the run cache keeps; its
validation AUC is told back. A study is not stored anywhere but in the runs: started again with the
same sampler seed and batch size, it is told the same values, so it asks the same trials, finds
them in the cache and goes on where it stopped.

`SPACES` declares each model's space with its source: BARS's own tuner grid where it has one for
Frappe_x1, else ours, said so.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from ifm.training.recipes import paper_config

DATASET = "frappe_x1"
RECIPE = "bars"              # ifm.training.recipes.BENCHMARK: the BARS protocol
TRIALS = 16                 # per model: the minimum, the same for every model
SEEDS = (2021, 2022, 2023, 2024, 2025)    # the chosen setting's runs; 2021 is BARS's seed
SAMPLER_SEED = 2021
STARTUP = 6                 # random trials before TPE models the results (half of BARS's 12-point grid)
_BARS = "reczoo/BARS ranking/ctr/{0}/{0}_frappe_x1/"
_DEEPFM_GRID = _BARS.format("DeepFM") + "DeepFM_frappe_x1_tuner_config_02/model_config.yaml@1ffaf73"
_WD_GRID = _BARS.format("WideDeep") + "WideDeep_frappe_x1_tuner_config_01/model_config.yaml@1ffaf73"
_OURS = "ours: BARS gives no grid for this model on Frappe_x1 in the files read"
# The learning rate is searched only for the models whose BARS run at 1e-3 needed 60 epochs or more
# (LR, FM, AFM), where a larger rate can matter; the others' BARS runs stopped by themselves within 35.
_SLOW = "BARS fixes 1e-3 (2e-3, 5e-3 ours), at which its run needed 60+ epochs ("
_SMALL_L2 = ("ours: the range BARS's models without batch norm chose (FM 5e-6, AFM 1e-5, NFM 1e-4) and up; "
             "DeepFM's 0.05-0.5 collapsed IFM in our first trials (validation AUC 0.50 at 0.1, 0.56 at 0.2)")

# FM pre-training, searched for the four models the IFM paper starts from a trained FM "where that beats
# a random start" (section 5.1: Wide&Deep, AFM, DeepFM, IFM); the FM is BARS's own FM setting
# (BARS_CHOSEN["fm"], the calibration run) at the run's seed. Under the protocol itself every model
# starts from scratch, as FuxiCTR's do; DIFM, NFM and LR keep that start (the paper does not pre-train them).
_PRETRAIN = ([False, True], "False: BARS's start (FuxiCTR trains every model from scratch); True: the IFM paper's, "
                            "from a trained FM where it helps (section 5.1), here the FM of BARS's setting at the run's seed")

# model -> parameter -> (choices, source). Parameters: learning_rate, l2_embedding (lambda_e of
# ifm.training.protocol: FuxiCTR's embedding_regularizer, or LR's and FM's `regularizer`), l2_net,
# pretrain (start from a trained FM), and model options (hidden sizes as "400-400-400"). Every space
# holds BARS's chosen setting.
SPACES = {
    "lr": {
        "l2_embedding": ([1e-5, 1e-4, 1e-3, 1e-6, 1e-7, 1e-8],
                         _BARS.format("LR") + "LR_frappe_x1_tuner_config_01/model_config.yaml@1ffaf73 (regularizer)"),
        "learning_rate": ([1e-3, 2e-3, 5e-3], _SLOW + "LR_frappe_x1_001_ff730f43.log: 100 of 100)"),
    },
    "fm": {
        "l2_embedding": ([5e-6, 5e-5, 0.0, 5e-4, 5e-3],
                         "5e-6, 5e-5: " + _BARS.format("FM") + "FM_frappe_x1_tuner_config_03/model_config.yaml@1ffaf73 "
                         "(regularizer; 5e-6 chosen); 0, 5e-4, 5e-3 ours"),
        "learning_rate": ([1e-3, 2e-3, 5e-3], _SLOW + "FM_frappe_x1 README log: 100 of 100, still improving)"),
    },
    "nfm": {
        "l2_embedding": ([1e-4, 1e-5, 1e-3, 0.0, 1e-2], "1e-4: BARS's chosen run (" + _BARS.format("NFM")
                         + "NFM_frappe_x1_012_3ebff53c.log:9); its grid is not published; the rest ours"),
        "hidden": (["400-400-400", "256-256", "64"], "400x3: NFM_frappe_x1_012_3ebff53c.log:15; 64 NFM's own; "
                                                     "256x2 ours"),
        "dropout": ([0.4, 0.0, 0.2, 0.6], "0.4: NFM_frappe_x1_012_3ebff53c.log:26 (net_dropout); the rest ours"),
        "pool_dropout": ([0.0, 0.2, 0.5], "0: the BARS log names only net_dropout (NFM_frappe_x1_012_3ebff53c.log:26); "
                                          "0.5 NFM's own (keep_prob 0.5 on the pooled vector); 0.2 ours"),
        "batch_norm": ([False, True], "False: NFM_frappe_x1_012_3ebff53c.log:2 (FuxiCTR's NFM then has none); True: "
                                      "NFM's own code, on the pooled vector and the hidden layers (NeuralFM.py:220-226)"),
    },
    "afm": {
        "l2_embedding": ([1e-5, 0.0, 1e-6, 1e-4, 1e-3], "1e-5: BARS's chosen run (" + _BARS.format("AFM")
                         + "AFM_frappe_x1_011_2d591f68.log:10); its tuner_config_02 is not published; the rest ours"),
        "attention_factor": ([128, 16, 64], "128: AFM_frappe_x1_011_2d591f68.log:2 (attention_dim); 16 AFM's own; "
                                            "64 ours"),
        "dropout": ([0.1, 0.0, 0.2, 0.5], "0.1: AFM_frappe_x1_011_2d591f68.log:3 (attention_dropout [0.1, 0.1]: "
                                          "FuxiCTR drops the attention weights and the pooled vector, reczoo/FuxiCTR "
                                          "fuxictr/pytorch/models/AFM.py:62-64@09b6feb; here both at the one rate, "
                                          "TIED); 0.5 AFM's own; the rest ours"),
        "learning_rate": ([1e-3, 2e-3, 5e-3], _SLOW + "AFM_frappe_x1_011_2d591f68.log: 64 epochs)"),
        "pretrain": _PRETRAIN,
    },
    "deepfm": {
        "l2_embedding": ([0.05, 0.1, 0.2, 0.5, 0.01], _DEEPFM_GRID + "; 0.01 ours"),
        "dropout": ([0.0, 0.1, 0.2, 0.3], _DEEPFM_GRID + "; 0.3 ours"),
        "hidden": (["400-400-400", "200-200-200"], "400-400-400: " + _DEEPFM_GRID + "; 200-200-200 the IFM paper's"),
        "batch_norm": ([True, False], "True: " + _DEEPFM_GRID + "; False ours"),
        "pretrain": _PRETRAIN,
    },
    "wide_deep": {
        "l2_embedding": ([0.001, 0.005, 0.01, 0.05, 0.1], _WD_GRID + " (embedding_regularizer; 0.1 chosen)"),
        "dropout": ([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], _WD_GRID + " (net_dropout; 0.6 chosen)"),
        "hidden": (["400-400-400"], _WD_GRID + " (fixed)"),
        "batch_norm": ([True], _WD_GRID + " (fixed)"),
        "pretrain": _PRETRAIN,
    },
    "ifm": {
        "l2_embedding": ([0.0, 1e-5, 1e-4, 1e-3, 1e-2], _SMALL_L2),
        "fen_sizes": (["256-256", "400-400-400", "512-256-128"], "the paper's 256x2; 400x3 DeepFM's; "
                                                                "512-256-128 the released IFM.py:27 (258 read as 256)"),
        "dropout": ([0.0, 0.1, 0.2, 0.3], "the paper's 0.3 and lower, ours"),
        "batch_norm": ([False, True], "True: batch norm after each FEN layer, the released IFM.py:91-101"),
        "pretrain": _PRETRAIN,
    },
    "difm": {
        "l2_embedding": ([0.0, 1e-5, 1e-4, 1e-3, 1e-2], _SMALL_L2),
        "attention_heads": ([1, 2, 5], "heads must split embedding 10; DeepCTR-Torch's 4 cannot"),
        "hidden": (["256-128", "400-400-400"], "256-128: DeepCTR-Torch difm.py:41; 400x3 DeepFM's"),
        "dropout": ([0.0, 0.1, 0.2], _OURS),
    },
}
# BARS's own chosen setting of each baseline on Frappe_x1 (the logs cited in SPACES): trained once at
# seed 2021 beside the study, not as a trial, to calibrate our reconstruction at the very same setting.
BARS_CHOSEN = {
    "lr": {"l2_embedding": 1e-5, "learning_rate": 1e-3},
    "fm": {"l2_embedding": 5e-6, "learning_rate": 1e-3},
    "afm": {"l2_embedding": 1e-5, "attention_factor": 128, "dropout": 0.1, "learning_rate": 1e-3, "pretrain": False},
    "nfm": {"l2_embedding": 1e-4, "hidden": "400-400-400", "dropout": 0.4, "pool_dropout": 0.0, "batch_norm": False},
    "deepfm": {"l2_embedding": 0.05, "dropout": 0.2, "hidden": "400-400-400", "batch_norm": True, "pretrain": False},
    "wide_deep": {"l2_embedding": 0.1, "dropout": 0.6, "hidden": "400-400-400", "batch_norm": True,
                  "pretrain": False},
}
# A parameter that sets a second model option to its value: AFM's dropout is FuxiCTR's attention_dropout
# [q, q], on the pooled vector (`dropout`) and on the attention weights (`weight_dropout`).
TIED = {"afm": {"dropout": "weight_dropout"}}
TRAINING = ("learning_rate",)                   # TrainConfig fields
START = ("pretrain",)                           # True: the run starts from BARS's FM (pretrained_from)
PROTOCOL = ("l2_embedding", "l2_net")           # ifm.training.protocol settings
SIZES = ("hidden", "fen_sizes")                 # "400-400-400" -> (400, 400, 400)
# The check that made `pretrain` a searched option: one IFM setting (an early trial's) trained beside
# the study at seed 2021 from scratch at BARS's rate and at a tenfold lower one (does a gentler start
# avoid the FEN's collapse?), and from BARS's FM; the book shows each run's AUC and test-set factors.
START_CHECK = {"l2_embedding": 1e-4, "fen_sizes": "400-400-400", "dropout": 0.0, "batch_norm": True}
START_RUNS = {"from scratch, lr 1e-3": ({"pretrain": False}, {}),
              "from scratch, lr 1e-4": ({"pretrain": False}, {"learning_rate": 1e-4}),
              "from BARS's FM, lr 1e-3": ({"pretrain": True}, {})}


def config_of(model: str, params: dict, seed: int = SEEDS[0], dataset: str = DATASET, **changes):
    """The TrainConfig of one trial (recipe `bars`) with `params` from `SPACES[model]`."""
    unknown = set(params) - set(SPACES[model])
    if unknown:
        raise ValueError(f"{model}: {sorted(unknown)} are not in its search space ({', '.join(SPACES[model])})")
    base = paper_config(dataset, model, recipe="bars", seed=seed, **changes)
    fields = {k: v for k, v in params.items() if k in TRAINING}
    protocol = {**base.protocol, **{k: v for k, v in params.items() if k in PROTOCOL}}
    options = {k: tuple(int(n) for n in v.split("-")) if k in SIZES else v for k, v in params.items()
               if k not in TRAINING + PROTOCOL + START}
    options.update({other: params[p] for p, other in TIED.get(model, {}).items() if p in params})
    config = paper_config(dataset, model, recipe="bars", seed=seed, protocol=protocol,
                          model_options={**base.model_options, **options}, **{**changes, **fields})
    if not params.get("pretrain"):
        return config
    return pretrained_from(config, config_of("fm", BARS_CHOSEN["fm"], seed=seed, dataset=dataset, **changes))


def pretrained_from(config, fm):
    """`config` started from the trained FM `fm` (its w0, w_i and v_i): the `pretrain` changes that
    make `config.pretrain_config()` exactly `fm`, so that its run is the one the cache holds."""
    start = dataclasses.replace(config, pretrain_fm=True, pretrain={})
    base = start.pretrain_config()
    changes = {f.name: getattr(fm, f.name) for f in dataclasses.fields(fm) if getattr(fm, f.name) != getattr(base, f.name)}
    start = dataclasses.replace(start, pretrain=changes)
    if start.pretrain_config() != fm:
        raise ValueError(f"{config.model}: no pretrain changes give the FM {fm}")
    return start


def start_check(dataset: str = DATASET, changes: dict | None = None) -> dict:
    """{label: TrainConfig} of the START_RUNS of IFM at START_CHECK, seed 2021."""
    return {label: config_of("ifm", {**START_CHECK, **params}, dataset=dataset, **{**(changes or {}), **training})
            for label, (params, training) in START_RUNS.items()}


BATCH = 2                   # trials a study asks before it is told their values: part of its definition


@dataclass
class StudyRun:
    """One model's study as far as the run cache holds it: its trials (number, parameters, record),
    whether all `trials` were told, the chosen parameters, and the chosen setting's record per seed
    (None where it is not in the cache yet)."""
    model: str
    study: object
    trials: list = field(default_factory=list)
    complete: bool = False
    finals: dict = field(default_factory=dict)
    calibration: dict | None = None        # the record of BARS's own setting at seed 2021, where it has one
    checks: dict = field(default_factory=dict)      # IFM's: {START_RUNS label: record or None}

    @property
    def chosen(self) -> dict | None:
        return chosen(self.study) if self.complete else None


def run_studies(models, train_batch, *, trials: int = TRIALS, seeds=SEEDS, batch: int = BATCH,
                sampler_seed: int = SAMPLER_SEED, dataset: str = DATASET, changes: dict | None = None,
                log=print) -> dict[str, StudyRun]:
    """Every model's Optuna study, stepped together: each round asks up to `batch` trials of every
    unfinished study, has `train_batch(configs)` return their records in one call (so that a fill
    trains every model's trials at once), and tells each its validation AUC; a record without a
    finite one (a diverged run) is told failed. A None record (not in the cache: not trained yet,
    stopped at a time limit, or failed) stops that study where it is, untold, so a study is only
    ever what its recorded runs make it, and started again it asks the same trials and goes on.
    Then each complete study's chosen setting is trained (read) at every seed in one more call, with
    BARS's own setting of each baseline at seed 2021 (`BARS_CHOSEN`: a calibration, not a trial)
    and, with IFM, its `start_check` runs (neither is a trial: the study is never told them).
    `changes`: TrainConfig fields set on every run (a smoke check's epochs)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    runs = {m: StudyRun(m, optuna.create_study(direction="maximize", study_name=f"{m}-{dataset}",
                                               sampler=optuna.samplers.TPESampler(seed=sampler_seed,
                                                                                  n_startup_trials=STARTUP)))
            for m in models}
    going = [m for m in models]
    while going:
        asked = {}
        for m in going:
            left = trials - len(runs[m].study.trials)
            asked[m] = [runs[m].study.ask() for _ in range(min(batch, left))]
        params = {m: [{name: t.suggest_categorical(name, choices) for name, (choices, _) in SPACES[m].items()}
                      for t in asked[m]] for m in going}
        records = iter(train_batch([config_of(m, p, dataset=dataset, **(changes or {}))
                                    for m in going for p in params[m]]))
        for m in list(going):
            got = [next(records) for _ in asked[m]]
            if any(r is None for r in got):
                going.remove(m)
                log(f"{m}: {len(runs[m].trials)} of {trials} trials recorded; the study stops there", flush=True)
                continue
            for trial, p, record in zip(asked[m], params[m], got):
                auc = valid_auc(record)
                ok = auc is not None
                runs[m].study.tell(trial, auc if ok else None, state=None if ok else optuna.trial.TrialState.FAIL)
                runs[m].trials.append((trial.number, p, record))
                log(f"{m} trial {trial.number}: {p}: " + (f"validation AUC {auc:.6f}" if ok else "no finite AUC"),
                    flush=True)
            if len(runs[m].study.trials) >= trials:
                runs[m].complete = True
                going.remove(m)
    done = [m for m in models if runs[m].chosen is not None]
    calibrated = [m for m in models if m in BARS_CHOSEN]
    checks = start_check(dataset, changes) if "ifm" in models else {}
    finals = iter(train_batch([config_of(m, runs[m].chosen, seed=s, dataset=dataset, **(changes or {}))
                               for m in done for s in seeds]
                              + [config_of(m, BARS_CHOSEN[m], seed=SEEDS[0], dataset=dataset, **(changes or {}))
                                 for m in calibrated] + list(checks.values())))
    for m in done:
        runs[m].finals = {s: next(finals) for s in seeds}
    for m in calibrated:
        runs[m].calibration = next(finals)
    if checks:
        runs["ifm"].checks = {label: next(finals) for label in checks}
    return runs


def valid_auc(record: dict) -> float | None:
    """What a study chooses by: a trial's validation AUC, None where its record has none or it is
    not finite (a diverged run)."""
    auc = (record.get("valid") or {}).get("auc")
    return auc if auc is not None and math.isfinite(auc) else None


def chosen(study) -> dict | None:
    """The parameters of the study's best complete trial (None if none completed)."""
    done = [t for t in study.trials if t.value is not None]
    return max(done, key=lambda t: (t.value, -t.number)).params if done else None


def space_table():
    """The search spaces as the book shows them: model, parameter, values, source."""
    import pandas as pd

    return pd.DataFrame([{"model": m, "parameter": p, "values": ", ".join(map(str, choices)), "source": source}
                         for m, space in SPACES.items() for p, (choices, source) in space.items()])


# ------------------------------------------------------------------------------ through fill
def fill_batch(*, dataset: str = DATASET, profile: str = "paper", workers: int = 2, threads: int | None = 1,
               device: str = "cpu", runs_per_gpu: int | None = None, deadline: float | None = None, data_dir=None,
               results_dir=None, scheduler=None, log=print):
    """A `train_batch` for `tune`: the runs of the configs that the run cache lacks are trained by
    `ifm.runs.fill` (a local Dask cluster, or the one at `scheduler`), until `deadline` (a time.time());
    then every config's record is read from the cache (None where it is not there)."""
    import io
    import time

    from ifm.runs.experiment import Experiment
    from ifm.runs.fill import fill
    from ifm.runs.plan import Wanted

    def train_batch(configs):
        reader = Experiment(profile, device=device, data_dir=data_dir, results_dir=results_dir,
                            train_missing=False, log=io.StringIO())
        missing = [c for c in configs if reader.run(c, dataset) is None]
        left = None if deadline is None else deadline - time.time()
        if missing and (left is None or left > 0):
            items = [Wanted("tuning", dataset, {}, c, f"{c.model} on {dataset}, seed {c.seed}, bars "
                                                      f"({_differences(c, dataset)})") for c in missing]
            fill(items, workers=workers, threads=threads, device=device, runs_per_gpu=runs_per_gpu, time_limit=left,
                 profile=profile, data_dir=data_dir, results_dir=results_dir, scheduler=scheduler, log=log)
            reader = Experiment(profile, device=device, data_dir=data_dir, results_dir=results_dir,
                                train_missing=False, log=io.StringIO())    # anew: it memoises the data versions
        return [reader.run(c, dataset) for c in configs]
    return train_batch


def _differences(config, dataset: str) -> str:
    base = paper_config(dataset, config.model, recipe="bars", seed=config.seed).to_dict()
    mine = config.to_dict()
    return ", ".join(f"{k}={mine[k]}" for k in mine if mine[k] != base.get(k) and k != "device") or "defaults"


# ------------------------------------------------------------------------------ the command
def add_tune_parser(sub):
    """`python -m ifm tune`: the equal-budget study of each model, then its chosen setting at 5 seeds."""
    import argparse
    import functools

    from ifm.runs.args import device_arg, duration_arg, number_arg, path_arg, scheduler_arg

    p = sub.add_parser("tune", help="equal-budget tuning on the open benchmark (Frappe_x1, BARS protocol)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", choices=sorted(SPACES), help="repeatable (default: every model)")
    p.add_argument("--trials", type=number_arg("epochs"), default=TRIALS, help=f"per model (default {TRIALS})")
    p.add_argument("--workers", type=number_arg("workers"), default=2, help="training processes at once (default 2)")
    p.add_argument("--threads", type=number_arg("threads"), default=1, help="torch threads per worker (default 1)")
    p.add_argument("--device", default="cpu", type=device_arg, help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--runs-per-gpu", type=number_arg("runs_per_gpu"),
                   help="with --device cuda: runs trained at once on each GPU (every model's 2 trials of a round: "
                        "16 for the 8 models)")
    p.add_argument("--time-limit", type=duration_arg, help="stop starting runs after this long (90m, 2.5h)")
    p.add_argument("--scheduler", type=scheduler_arg, help="a running Dask cluster (default: a local one)")
    p.add_argument("--data-dir", type=path_arg)
    p.add_argument("--results-dir", type=path_arg)
    p.add_argument("--spaces", action="store_true", help="print the search spaces and their sources, and stop")
    p.set_defaults(func=functools.partial(cmd_tune))
    return p


def cmd_tune(args) -> int:
    import time

    if args.spaces:
        print(space_table().to_string(index=False))
        return 0
    deadline = time.time() + args.time_limit if args.time_limit else None
    batch = fill_batch(workers=args.workers, threads=args.threads, device=args.device,
                       runs_per_gpu=args.runs_per_gpu, deadline=deadline,
                       data_dir=args.data_dir, results_dir=args.results_dir, scheduler=args.scheduler)
    runs = run_studies(args.model or list(SPACES), batch, trials=args.trials)
    complete = True
    for model, run in runs.items():
        told = sum(t.value is not None for t in run.study.trials)
        finals = {s: r for s, r in run.finals.items() if r}
        print(f"{model}: {len(run.trials)} of {args.trials} trials recorded ({told} with a result); chosen: "
              f"{run.chosen}; test AUC at {len(finals)} of {len(SEEDS)} seeds: "
              + ", ".join(f"{r['test']['auc']:.6f}" for r in finals.values()), flush=True)
        complete &= run.complete and len(finals) == len(SEEDS)
    if not complete:
        print("to continue: the same command again (the trials' runs are reused from the cache)", flush=True)
    return 0 if complete else 1
