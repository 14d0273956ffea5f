"""Equal-budget tuning (ifm.runs.tuning): each study asks the same number of trials, the chosen
setting is the best told, failures are never chosen, a study started again asks the same trials
and trains nothing new, and every declared choice builds its model."""
import dataclasses
import json

import pytest
import torch

from ifm.models import build_model
from ifm.runs import tuning
from ifm.runs.records import config_identity


def fake_auc(config) -> float:
    """A deterministic validation AUC of a config: a smooth function of its settings."""
    text = json.dumps(config_identity(config), sort_keys=True)
    return 0.9 + (sum(map(ord, text)) % 997) / 1e4


class FakeCache:
    """Records by config, 'trained' (computed) on first ask: the run cache's role in a study.
    `fail`: (option, value) pairs whose runs diverge (a record without a finite AUC); `budget`: how
    many new runs it trains before it stops training (a time limit: None records)."""

    def __init__(self, fail=(), budget=None):
        self.records, self.trained, self.fail, self.budget = {}, [], set(fail), budget
        self.calls = []

    def __call__(self, configs):
        out = []
        self.calls.append(len(configs))
        for c in configs:
            key = json.dumps(config_identity(c), sort_keys=True)
            if key not in self.records:
                if self.budget is not None and len(self.trained) >= self.budget:
                    out.append(None)
                    continue
                self.trained.append(key)
                failed = any(c.model_options.get(k) == v for k, v in self.fail)
                self.records[key] = {"valid": {"auc": float("nan") if failed else fake_auc(c)},
                                     "test": {"auc": fake_auc(c) - 0.001}}
            out.append(self.records[key])
        return out


def quiet(*args, **kwargs):
    pass


def test_every_model_gets_the_same_budget_and_the_chosen_setting_is_the_best_told():
    cache = FakeCache()
    runs = tuning.run_studies(["fm", "deepfm", "ifm"], cache, trials=8, batch=3, seeds=(1, 2), log=quiet)
    for model, run in runs.items():
        assert len(run.study.trials) == len(run.trials) == 8 and run.complete
        best = max((t for t in run.study.trials if t.value is not None), key=lambda t: t.value)
        assert run.chosen == best.params
        assert best.value == pytest.approx(fake_auc(tuning.config_of(model, best.params)))
        assert set(run.finals) == {1, 2} and all(r is not None for r in run.finals.values())
    # the three studies step together: 3 trials of each per call (8 = 3 + 3 + 2), then the finals
    # with BARS's own setting of each baseline (FM, DeepFM; IFM has none) at seed 2021 and IFM's 3
    # start-check runs
    assert cache.calls == [9, 9, 6, 11]
    assert runs["fm"].calibration is not None and runs["ifm"].calibration is None
    assert list(runs["ifm"].checks) == list(tuning.START_RUNS) and runs["fm"].checks == {}
    assert all(runs["ifm"].checks[label]["valid"]["auc"] == pytest.approx(fake_auc(c))
               for label, c in tuning.start_check().items())
    bars_fm = tuning.config_of("fm", tuning.BARS_CHOSEN["fm"], seed=2021)
    assert runs["fm"].calibration["valid"]["auc"] == pytest.approx(fake_auc(bars_fm))


def test_every_baselines_space_holds_the_setting_bars_chose():
    for model, chosen in tuning.BARS_CHOSEN.items():
        space = tuning.SPACES[model]
        assert set(chosen) <= set(space), model
        assert all(value in space[name][0] for name, value in chosen.items()), model


def test_a_study_started_again_asks_the_same_trials_and_trains_nothing_new():
    cache = FakeCache()
    first = tuning.run_studies(["deepfm"], cache, trials=10, seeds=(), log=quiet)["deepfm"]
    trained = len(cache.trained)
    again = tuning.run_studies(["deepfm"], cache, trials=10, seeds=(), log=quiet)["deepfm"]
    assert [t.params for t in again.study.trials] == [t.params for t in first.study.trials]
    assert len(cache.trained) == trained and trained >= 1
    longer = tuning.run_studies(["deepfm"], cache, trials=12, seeds=(), log=quiet)["deepfm"]
    assert [t.params for t in longer.study.trials][:10] == [t.params for t in first.study.trials]    # it goes on
    # stepped alone or beside another model's study, a study asks the same trials
    beside = tuning.run_studies(["fm", "deepfm"], FakeCache(), trials=10, seeds=(), log=quiet)["deepfm"]
    assert [t.params for t in beside.study.trials] == [t.params for t in first.study.trials]


def test_a_study_stops_at_its_first_unrecorded_trial_and_resumes_to_the_same_study():
    whole = tuning.run_studies(["ifm"], FakeCache(), trials=10, seeds=(2021,), log=quiet)["ifm"]
    cache = FakeCache(budget=5)
    part = tuning.run_studies(["ifm"], cache, trials=10, seeds=(2021,), log=quiet)["ifm"]
    assert not part.complete and part.chosen is None and part.finals == {}
    # batches of 2: the 5th new run is recorded, its batch-mate is not, and that batch stays untold
    assert len(cache.trained) == 5 and len(part.trials) % 2 == 0 and 4 <= len(part.trials) < 10
    assert [p for _, p, _ in part.trials] == [p for _, p, _ in whole.trials][:len(part.trials)]
    cache.budget = None
    resumed = tuning.run_studies(["ifm"], cache, trials=10, seeds=(2021,), log=quiet)["ifm"]
    assert [p for _, p, _ in resumed.trials] == [p for _, p, _ in whole.trials] and resumed.chosen == whole.chosen


def test_a_diverged_trial_is_told_failed_and_never_chosen():
    run = tuning.run_studies(["deepfm"], FakeCache(fail=[("batch_norm", True)]), trials=8, seeds=(), log=quiet)["deepfm"]
    failed = [t for t in run.study.trials if t.params["batch_norm"]]
    assert failed and all(t.value is None for t in failed) and run.complete
    assert run.chosen["batch_norm"] is False


def test_a_trial_is_chosen_by_its_finite_validation_auc_only():
    assert tuning.valid_auc({"valid": {"auc": 0.9676, "logloss": 0.2}, "test": {"auc": 0.99}}) == 0.9676
    for record in ({"valid": {"auc": float("nan")}}, {"valid": {"auc": float("inf")}}, {"valid": {"logloss": 0.2}},
                   {"valid": None}, {}):
        assert tuning.valid_auc(record) is None, record


def test_config_of_puts_each_parameter_where_it_belongs():
    c = tuning.config_of("deepfm", {"l2_embedding": 0.1, "dropout": 0.2, "hidden": "400-400-400",
                                    "batch_norm": True}, seed=2023)
    assert c.recipe == "bars" and c.seed == 2023 and c.protocol == {"monitor": "auc", "init": "fuxictr", "l2_embedding": 0.1}
    assert c.model_options == {"dropout": 0.2, "hidden": (400, 400, 400), "batch_norm": True}
    fm = tuning.config_of("fm", {"learning_rate": 5e-4, "l2_embedding": 0.0})
    assert fm.learning_rate == 5e-4 and fm.optimizer == "adam" and fm.embedding_size == 10
    with pytest.raises(ValueError, match="not in its search space"):
        tuning.config_of("fm", {"dropout": 0.1})


@pytest.mark.parametrize("model, params", [
    ("ifm", {"l2_embedding": 1e-4, "fen_sizes": "400-400-400", "dropout": 0.0, "batch_norm": True}),
    ("afm", {**tuning.BARS_CHOSEN["afm"], "learning_rate": 5e-3}),      # its own rate; the FM keeps BARS's 1e-3
    ("deepfm", tuning.BARS_CHOSEN["deepfm"]), ("wide_deep", tuning.BARS_CHOSEN["wide_deep"])])
def test_pretrain_starts_the_run_from_bars_fm_at_its_seed_and_changes_nothing_else(model, params):
    """The IFM paper starts Wide&Deep, AFM, DeepFM and IFM from a trained FM (section 5.1): with
    pretrain the run's FM pre-training is exactly BARS's FM setting at the run's seed (so the cache's
    calibration run serves seed 2021), and the run itself is the same config but for its start."""
    for seed in (2021, 2024):
        scratch = tuning.config_of(model, {**params, "pretrain": False}, seed=seed)
        started = tuning.config_of(model, {**params, "pretrain": True}, seed=seed)
        assert scratch == tuning.config_of(model, {k: v for k, v in params.items() if k != "pretrain"}, seed=seed)
        assert not scratch.uses_pretraining() and started.uses_pretraining()
        assert started.pretrain_config() == tuning.config_of("fm", tuning.BARS_CHOSEN["fm"], seed=seed)
        assert dataclasses.replace(started, pretrain_fm=False, pretrain={}) == scratch
        assert config_identity(started) != config_identity(scratch)          # two runs in the cache
    assert started.learning_rate == params.get("learning_rate", 1e-3) and started.optimizer == "adam"
    assert [m for m, space in tuning.SPACES.items() if "pretrain" in space] == ["afm", "deepfm", "wide_deep", "ifm"]


def test_ifms_start_check_differs_only_in_what_it_checks():
    """The three runs are one IFM setting at seed 2021: from scratch at BARS's rate (the early trial
    whose factors collapsed), at a tenfold lower rate and nothing else changed, and from BARS's FM
    (the calibration run) and nothing else changed; none of them is a trial the study is told."""
    runs = tuning.start_check()
    scratch, slow, from_fm = runs["from scratch, lr 1e-3"], runs["from scratch, lr 1e-4"], runs["from BARS's FM, lr 1e-3"]
    assert scratch == tuning.config_of("ifm", tuning.START_CHECK) and scratch.seed == 2021
    assert scratch.learning_rate == 1e-3 and not scratch.uses_pretraining()
    assert slow == dataclasses.replace(scratch, learning_rate=1e-4)
    assert from_fm.pretrain_config() == tuning.config_of("fm", tuning.BARS_CHOSEN["fm"], seed=2021)
    assert dataclasses.replace(from_fm, pretrain_fm=scratch.pretrain_fm, pretrain=scratch.pretrain) == scratch
    assert set(tuning.START_CHECK) <= set(tuning.SPACES["ifm"])
    assert all(tuning.START_CHECK[p] in tuning.SPACES["ifm"][p][0] for p in tuning.START_CHECK)
    smoke = tuning.start_check(changes={"epochs": 1})
    assert all(c.epochs == 1 for c in smoke.values()) and smoke["from BARS's FM, lr 1e-3"].pretrain_config().epochs == 1


def test_afm_dropout_is_fuxictrs_attention_dropout_on_the_weights_and_the_pooled_vector():
    """BARS's AFM ran with attention_dropout [0.1, 0.1]: its setting, as our study asks it, drops out
    both the attention weights and the pooled vector at 0.1; the AFM it builds does so in training."""
    c = tuning.config_of("afm", tuning.BARS_CHOSEN["afm"])
    assert c.model_options == {"attention_factor": 128, "dropout": 0.1, "weight_dropout": 0.1}
    net = build_model("afm", 50, 10, c.embedding_size, **c.model_options)
    assert net.dropout.p == 0.1 and net.weight_dropout == 0.1
    x = torch.randint(0, 50, (64, 10))
    torch.manual_seed(0)
    trained_twice = net.train()(x), net(x)
    assert not torch.equal(*trained_twice)                       # training draws masks
    assert torch.equal(net.eval()(x), net(x))                    # evaluation does not


@pytest.mark.parametrize("model", sorted(tuning.SPACES))
def test_every_declared_choice_builds_its_model_at_the_benchmarks_sizes(model):
    space = tuning.SPACES[model]
    first = {name: choices[0] for name, (choices, _) in space.items()}
    for name, (choices, source) in space.items():
        assert source and len(set(map(str, choices))) == len(choices)
        for value in choices:
            c = tuning.config_of(model, {**first, name: value})
            net = build_model(model, 50, 10, c.embedding_size, **c.model_options)
            out = net.eval()(torch.randint(0, 50, (4, 10)))
            assert out.shape == (4,) and torch.isfinite(out).all()
    assert set(tuning.space_table()["model"]) == set(tuning.SPACES)


def test_a_study_trains_its_trials_through_fill_and_started_again_trains_none(tmp_path):
    """Through the real engine (a one-worker local Dask cluster) on the mirror's Avazu sample, 2 epochs."""
    from ifm.data import load_dataset

    try:
        load_dataset("avazu", download=False)
    except Exception as err:            # no mirror here: nothing to train on
        pytest.skip(f"no Avazu sample: {err}")
    lines = []
    batch = tuning.fill_batch(dataset="avazu", workers=1, results_dir=tmp_path, log=lambda *a, **k: lines.append(a))
    run = tuning.run_studies(["fm"], batch, trials=3, batch=3, seeds=(), dataset="avazu", changes={"epochs": 2},
                             log=quiet)["fm"]
    made = sorted(p.name for p in (tmp_path / "paper").glob("fm-avazu-*.json"))
    assert len(run.study.trials) == 3 and all(t.value is not None for t in run.study.trials)
    # one record per distinct trial, and BARS's own FM setting (the calibration run) unless a trial asked it
    trials = {json.dumps(p, sort_keys=True) for _, p, _ in run.trials}
    calibration_asked = json.dumps(tuning.BARS_CHOSEN["fm"], sort_keys=True) in trials
    assert len(made) == len(trials) + (0 if calibration_asked else 1) and run.calibration is not None
    again = tuning.run_studies(["fm"], batch, trials=3, batch=3, seeds=(), dataset="avazu", changes={"epochs": 2},
                               log=quiet)["fm"]
    assert [t.value for t in again.study.trials] == [t.value for t in run.study.trials]
    assert sorted(p.name for p in (tmp_path / "paper").glob("fm-avazu-*.json")) == made
