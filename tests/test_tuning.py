"""Equal-budget tuning (ifm.runs.tuning): each study asks the same number of trials, the chosen
setting is the best told, failures are never chosen, a study started again asks the same trials
and trains nothing new, and every declared choice builds its model."""
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
    """Records by config, 'trained' (computed) on first ask: the run cache's role in a study."""

    def __init__(self, fail=()):
        self.records, self.trained, self.fail = {}, [], set(fail)

    def __call__(self, configs):
        out = []
        for c in configs:
            key = json.dumps(config_identity(c), sort_keys=True)
            if key not in self.records:
                self.trained.append(key)
                failed = any(c.model_options.get(k) == v for k, v in self.fail)
                self.records[key] = None if failed else {"valid": {"auc": fake_auc(c)}}
            out.append(self.records[key])
        return out


def test_every_model_gets_the_same_budget_and_the_chosen_setting_is_the_best_told():
    for model in ("fm", "deepfm", "ifm"):
        study = tuning.tune(model, FakeCache(), trials=8, parallel=3, log=lambda *a, **k: None)
        assert len(study.trials) == 8
        best = max((t for t in study.trials if t.value is not None), key=lambda t: t.value)
        assert tuning.chosen(study) == best.params
        assert best.value == pytest.approx(fake_auc(tuning.config_of(model, best.params)))


def test_a_study_started_again_asks_the_same_trials_and_trains_nothing_new():
    cache = FakeCache()
    first = tuning.tune("deepfm", cache, trials=10, parallel=2, log=lambda *a, **k: None)
    trained = len(cache.trained)
    again = tuning.tune("deepfm", cache, trials=10, parallel=2, log=lambda *a, **k: None)
    assert [t.params for t in again.trials] == [t.params for t in first.trials]
    assert len(cache.trained) == trained and trained >= 1
    longer = tuning.tune("deepfm", cache, trials=12, parallel=2, log=lambda *a, **k: None)
    assert [t.params for t in longer.trials][:10] == [t.params for t in first.trials]    # it goes on


def test_a_failed_trial_is_told_failed_and_never_chosen():
    cache = FakeCache(fail=[("batch_norm", True)])
    study = tuning.tune("deepfm", cache, trials=8, parallel=2, log=lambda *a, **k: None)
    failed = [t for t in study.trials if t.params["batch_norm"]]
    assert failed and all(t.value is None for t in failed)
    assert tuning.chosen(study)["batch_norm"] is False


def test_config_of_puts_each_parameter_where_it_belongs():
    c = tuning.config_of("deepfm", {"l2_embedding": 0.1, "dropout": 0.2, "hidden": "400-400-400",
                                    "batch_norm": True}, seed=2023)
    assert c.recipe == "bars" and c.seed == 2023 and c.protocol == {"monitor": "auc", "l2_embedding": 0.1}
    assert c.model_options == {"dropout": 0.2, "hidden": (400, 400, 400), "batch_norm": True}
    fm = tuning.config_of("fm", {"learning_rate": 5e-4, "l2_embedding": 0.0})
    assert fm.learning_rate == 5e-4 and fm.optimizer == "adam" and fm.embedding_size == 10
    with pytest.raises(ValueError, match="not in its search space"):
        tuning.config_of("fm", {"dropout": 0.1})


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
    study = tuning.tune("fm", batch, trials=3, parallel=3, dataset="avazu", changes={"epochs": 2},
                        log=lambda *a, **k: None)
    made = sorted(p.name for p in (tmp_path / "paper").glob("fm-avazu-*.json"))
    assert len(study.trials) == 3 and all(t.value is not None for t in study.trials)
    assert 1 <= len(made) <= 3                       # one record per distinct trial
    again = tuning.tune("fm", batch, trials=3, parallel=3, dataset="avazu", changes={"epochs": 2},
                        log=lambda *a, **k: None)
    assert [t.value for t in again.trials] == [t.value for t in study.trials]
    assert sorted(p.name for p in (tmp_path / "paper").glob("fm-avazu-*.json")) == made
