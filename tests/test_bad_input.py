"""Every bad input gets a one-line error naming the flag, file or parameter and the problem,
before any work starts (issue 12): the command line, the run cache, notebook parameters."""
import json
import os

import pytest
import torch

from ifm.cli import build_parser, main

TRAIN = ["train", "--dataset", "synthetic", "--quiet", "--epochs", "1", "--embedding-size", "4"]


def cli(*argv) -> int:
    return main([str(a) for a in argv])


def refused(capsys, argv, *words):
    """Exit code 2, nothing on stdout, no data loaded, and one line on stderr holding `words`."""
    rc = cli(*argv)
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert rc == 2, out.err
    assert out.out == "" and "data:" not in out.err          # no data loaded, no result line
    assert len(lines) == 1, out.err
    for word in words:
        assert word in lines[0]
    return lines[0]


# --------------------------------------------------------------------------- numbers
@pytest.mark.parametrize("flag, value, words", [
    ("--epochs", "0", "an integer >= 1"), ("--epochs", "-3", "an integer >= 1"),
    ("--batch-size", "-5", "an integer from 1 to 16777216"), ("--batch-size", "0", "an integer from 1 to 16777216"),
    ("--embedding-size", "0", "an integer from 1 to 65536"), ("--embedding-size", "-1", "an integer from 1 to 65536"),
    ("--dropout", "-0.1", "a number in [0, 1)"), ("--dropout", "nan", "a number in [0, 1)"),
    ("--dropout", "1", "a number in [0, 1)"), ("--fen-layers", "-1", "an integer >= 0"),
    ("--lr", "inf", "a number in (0, 100]"), ("--lr", "nan", "a number in (0, 100]"), ("--lr", "0", "a number in (0, 100]"),
    ("--seed", str(2**64), "an integer from 0 to 4294967295"), ("--seed", "1.5", "an integer"),
    ("--split-seed", "-1", "an integer from 0 to 4294967295"), ("--patience", "0", "an integer >= 1"),
])
def test_numbers_out_of_range_are_refused_with_the_flag_and_its_range(capsys, flag, value, words):
    refused(capsys, [*TRAIN, "--model", "ifm", flag, value], f"argument {flag}", words, repr(value))


@pytest.mark.parametrize("value", ["0", "-2", "x"])
def test_bench_refuses_a_number_of_batches_below_one(capsys, value):
    refused(capsys, ["bench", "--dataset", "synthetic", "--batches", value], "argument --batches", "an integer >= 1")


def test_bench_times_exactly_the_batches_asked_for():
    from ifm.training.bench import epoch_batches
    from ifm.data import load_dataset

    data = load_dataset("synthetic", n=1000)
    assert len(epoch_batches(data, 100, torch.device("cpu"), max_batches=3)) == 3
    with pytest.raises(ValueError, match="max_batches must be at least 1, got 0"):
        epoch_batches(data, 100, torch.device("cpu"), max_batches=0)
    with pytest.raises(ValueError, match="fewer than one batch of 5,000"):
        epoch_batches(data, 5000, torch.device("cpu"))


def test_every_help_states_the_accepted_ranges(capsys):
    for command in (["train"], ["bench"], ["data"], ["reproduce"]):
        assert main([*command, "--help"]) == 0
        assert "an integer" in " ".join(capsys.readouterr().out.split())
    assert main(["--help"]) == 0
    assert "--help gives the accepted ranges" in " ".join(capsys.readouterr().out.split())


def test_a_diverged_run_says_so_on_stderr_and_in_its_strict_json_line_and_exits_3(capsys):
    assert cli(*TRAIN, "--model", "libfm", "--lr", "100") == 3
    out, err = capsys.readouterr()
    result = json.loads(out.strip().splitlines()[-1], parse_constant=lambda c: pytest.fail(f"{c} in the result line"))
    assert result["diverged"] is True and result["test"]["rmse"] is None and result["best_epoch"] is None
    assert err.strip().splitlines()[-1] == ("error: the run diverged at epoch 1 (validation rmse not finite: lower --lr "
                                            "or raise --l2?); no epoch had one, so it has no metrics")
    assert cli(*TRAIN, "--model", "libfm", "--lr", "100", "--allow-divergence") == 0
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("warning: the run diverged at epoch 1")
    assert cli(*TRAIN, "--model", "libfm") == 0
    out, err = capsys.readouterr()
    assert json.loads(out.strip().splitlines()[-1])["diverged"] is False and "diverged" not in err


def test_patience_sets_the_patience_rule_instead_of_being_ignored(tmp_path, capsys):
    out = tmp_path / "run.json"
    assert cli(*TRAIN, "--model", "fm", "--patience", "3", "--out", out) == 0
    config = json.loads(out.read_text())["config"]
    assert config["stopping"] == "patience" and config["patience"] == 3


# --------------------------------------------------------------------------- configuration
@pytest.mark.parametrize("device", ["cuda", "cuda:1", "gpu", "mps", "tpu:0"])
def test_a_device_this_machine_lacks_is_refused_before_loading_data(capsys, device):
    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    refused(capsys, [*TRAIN, "--model", "fm", "--device", device], "argument --device", repr(device))


def test_a_cuda_index_beyond_the_devices_is_refused(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    refused(capsys, [*TRAIN, "--model", "fm", "--device", "cuda:5"], "argument --device", "'cuda:5'",
            "has 1 CUDA device(s), cuda:0 to cuda:0")
    refused(capsys, ["bench", "--device", "cuda:5"], "argument --device", "1 CUDA device(s)")


@pytest.mark.parametrize("flag, value", [("--dropout", "0.2"), ("--fen-layers", "1"), ("--activation", "tanh")])
def test_ifm_only_flags_are_refused_for_fm(capsys, flag, value):
    refused(capsys, [*TRAIN, "--model", "fm", flag, value], flag, "does not apply to --model fm", "ifm")


def test_fen_layers_applies_to_ifm_only_but_nfm_takes_dropout_and_activation(capsys, tmp_path):
    refused(capsys, [*TRAIN, "--model", "nfm", "--fen-layers", "1"], "--fen-layers does not apply to --model nfm")
    refused(capsys, [*TRAIN, "--model", "afm", "--activation", "tanh"], "--activation does not apply to --model afm")
    out = tmp_path / "nfm.json"
    assert cli(*TRAIN, "--model", "nfm", "--dropout", "0.1", "--activation", "tanh", "--out", out) == 0
    assert json.loads(out.read_text())["config"]["model_options"] == {"dropout": 0.1, "activation": "tanh"}


@pytest.fixture(scope="module")
def fm_state(tmp_path_factory):
    """A real FM state of the synthetic data at embedding size 4."""
    path = tmp_path_factory.mktemp("state") / "fm.pt"
    assert cli(*TRAIN, "--model", "fm", "--save-state", str(path)) == 0
    return path


def test_init_fm_refuses_a_file_that_is_not_a_state(capsys, tmp_path, fm_state):
    text = tmp_path / "notes.txt"
    text.write_text("not a state\n")
    refused(capsys, [*TRAIN, "--model", "ifm", "--init-fm", text], f"--init-fm {text}: not a saved model state")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(fm_state.read_bytes()[:200])
    refused(capsys, [*TRAIN, "--model", "ifm", "--init-fm", truncated], f"--init-fm {truncated}: not a saved model state")
    other = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(3)}, other)
    refused(capsys, [*TRAIN, "--model", "ifm", "--init-fm", other], "not an FM state (no linear.* and embedding.*")
    refused(capsys, [*TRAIN, "--model", "ifm", "--init-fm", tmp_path / "absent.pt"], "--init-fm", "no such file")


def test_init_fm_refuses_a_state_of_other_shapes_before_training(capsys, fm_state):
    rc = cli(*TRAIN, "--model", "ifm", "--embedding-size", "8", "--init-fm", fm_state)
    err = capsys.readouterr().err
    assert rc == 2
    assert f"error: --init-fm {fm_state}: does not fit synthetic at embedding size 8: embedding.weight" in err
    assert "(needs [" in err


def test_init_fm_is_refused_where_no_fm_is_used(capsys, fm_state):
    refused(capsys, [*TRAIN, "--model", "nfm", "--init-fm", fm_state], "--init-fm: --model nfm starts from no FM")
    refused(capsys, [*TRAIN, "--model", "ifm", "--no-pretrain", "--init-fm", fm_state], "with --no-pretrain")


def test_target_and_fields_need_data(capsys):
    refused(capsys, [*TRAIN, "--model", "fm", "--target", "click"], "--target goes with --data (your own file)")


def test_compare_other_than_ifm_is_refused_before_loading(capsys):
    refused(capsys, ["bench", "--model", "fm", "--compare", "deepctr-torch"], "--compare", "--model ifm")


def test_bench_refuses_compare_with_workers_and_a_worker_count_below_one(capsys):
    refused(capsys, ["bench", "--compare", "deepctr-torch", "--workers", "2"], "--compare", "leave out --workers")
    refused(capsys, ["bench", "--workers", "0"], "argument --workers")


@pytest.mark.parametrize("command", [[*TRAIN, "--model", "fm"], ["bench", "--dataset", "synthetic", "--model", "fm",
                                                                "--batches", "1"]], ids=["train", "bench"])
def test_recipe_bars_refuses_data_that_is_not_clicks_before_training(capsys, command):
    """The open benchmark's protocol trains on log loss and chooses on AUC: on a regression task
    (the synthetic data, like MovieLens) it is refused in one line, not failed after an epoch."""
    assert cli(*command, "--recipe", "bars") == 2
    out = capsys.readouterr()
    assert out.out == ""                                                  # no result line: nothing trained
    last = out.err.strip().splitlines()[-1]
    assert last.startswith("error: recipe bars") and "synthetic is a regression task" in last and "0/1" in last


def test_bench_compares_with_deepctr_at_the_paper_sizes_only(capsys):
    refused(capsys, ["bench", "--compare", "deepctr-torch", "--recipe", "bars"], "--compare", "--recipe paper")


# --------------------------------------------------------------------------- output paths
@pytest.mark.parametrize("flag", ["--out", "--save-state"])
def test_an_output_that_cannot_be_written_is_refused_before_training(capsys, tmp_path, flag):
    (tmp_path / "a-file").write_text("x")
    before = sorted(p.name for p in tmp_path.iterdir())
    refused(capsys, [*TRAIN, "--model", "fm", flag, tmp_path], flag, f"{tmp_path} is a directory")
    refused(capsys, [*TRAIN, "--model", "fm", flag, tmp_path / "a-file" / "run.json"], flag,
            f"{tmp_path / 'a-file'} is a file, not a directory")
    refused(capsys, [*TRAIN, "--model", "fm", flag, ""], f"argument {flag}", "an empty path")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_output_in_a_read_only_directory_is_refused(capsys, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    refused(capsys, [*TRAIN, "--model", "fm", "--out", locked / "run.json"], "--out", f"cannot write in {locked}")


def test_out_and_save_state_may_not_be_one_file(capsys, tmp_path):
    refused(capsys, [*TRAIN, "--model", "fm", "--out", tmp_path / "x", "--save-state", tmp_path / "x"],
            "--out and --save-state name the same file")


def test_a_tilde_in_an_output_path_is_the_home_directory(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert cli(*TRAIN, "--model", "fm", "--out", "~/runs/r.json") == 0
    assert (tmp_path / "runs" / "r.json").is_file() and not (tmp_path / "~").exists()


def test_reproduce_checks_its_numbers_and_device(capsys):
    refused(capsys, ["reproduce", "--seeds", "0", "-1"], "argument --seeds", "an integer from 0 to 4294967295")
    refused(capsys, ["reproduce", "--timeout", "0"], "argument --timeout", "an integer >= 1")
    refused(capsys, ["reproduce", "--device", "gpu"], "argument --device", "'gpu' is not a device")
    refused(capsys, ["reproduce", "--recipe", "texts"], "argument --recipe", "several joined by commas")
    refused(capsys, ["reproduce", "--recipe", "paper,paper"], "argument --recipe", "name each recipe once")
    refused(capsys, ["reproduce", "--recipe", "paper,legacy"], "argument --recipe", "give it alone")
    assert build_parser().parse_args(["reproduce", "--recipe", "code, paper"]).recipe == "code,paper"
    assert build_parser().parse_args(["reproduce"]).recipe == "paper,code"          # the book's default


def test_a_tilde_in_reproduce_paths_is_the_home_directory(tmp_path, monkeypatch):
    from ifm.cli import build_parser

    monkeypatch.setenv("HOME", str(tmp_path))
    args = build_parser().parse_args(["reproduce", "--data-dir", "~/data", "--results-dir", "~/results"])
    assert (args.data_dir, args.results_dir) == (str(tmp_path / "data"), str(tmp_path / "results"))


# --------------------------------------------------------------------------- notebook parameters
TINY = {"dataset_options": {"synthetic": {"n": 400}}, "embedding_size": 4, "epochs": 2, "batch_size": 128,
        "model_options": {"ifm": {"fen_width": 8}}}


def experiment(tmp_path, **kwargs):
    from ifm.runs import experiment as ex

    params = {"profile": "smoke", "datasets": ["synthetic"], "overrides": TINY, "log": None, **kwargs}
    return ex.Experiment(params.pop("profile"), results_dir=tmp_path, **params)


@pytest.mark.parametrize("parameter, value, words", [
    ("profile", 3, "profile must be one of paper, smoke"),
    ("train_missing", "ture", "train_missing must be True or False, got 'ture'"),
    ("seeds", "abc", "seeds must be a list of seeds, each an integer from 0 to 4294967295"),
    ("seeds", "-1", "seeds must be a list of seeds"), ("seeds", "[0,", "seeds must be a list such as [0, 1]"),
    ("datasets", "frapp", "datasets must be a list of frappe, frappe_x1, movielens, avazu, synthetic"),
    ("overrides", "not json", 'overrides must be a JSON object such as {"epochs": 5}, got \'not json\''),
    ("overrides", "[1, 2]", "overrides must be a JSON object"),
    ("overrides", '{"epochs": "x"}', "overrides: epochs must be an integer >= 1, got 'x'"),
    ("overrides", '{"learning_rate": -1}', "overrides: learning_rate must be a number in (0, 100]"),
    ("overrides", '{"dropout_grid": [0.5, 1.5]}', "overrides: each of dropout_grid must be a number in [0, 1)"),
    ("overrides", '{"eval_train": "yes"}', "overrides: eval_train must be True or False"),
    ("overrides", '{"recipe": "xyz"}', "overrides: recipe must be one of paper, code"),
    ("overrides", '{"model_options": {"ifm": 3}}', "overrides: model_options must map models"),
    ("force", "maybe", "force must be True, False or a Unix time, got 'maybe'"),
    ("recipe", "xyz", "recipe must be one of paper, code"),
    ("device", "gpu", "device: 'gpu' is not a device"),
])
def test_bad_notebook_parameters_name_the_parameter_and_what_it_takes(tmp_path, parameter, value, words):
    with pytest.raises(ValueError) as err:
        experiment(tmp_path, **{parameter: value})
    assert words in str(err.value) and "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def trains(monkeypatch):
    """The (model, seed) of every real training the experiments layer starts."""
    from ifm.runs import experiment as ex

    calls, real = [], ex.train
    monkeypatch.setattr(ex, "train", lambda config, data, **kw: calls.append((config.model, config.seed))
                        or real(config, data, **kw))
    return calls


def test_force_and_train_missing_given_as_strings_mean_what_they_say(tmp_path, trains):
    config = experiment(tmp_path).config("synthetic", "fm", 0)
    experiment(tmp_path).run(config, "synthetic")
    experiment(tmp_path, force="False").run(config, "synthetic")              # papermill -r force False
    assert trains == [("fm", 0)]
    experiment(tmp_path, force="True").run(config, "synthetic")
    assert trains == [("fm", 0)] * 2
    reader = experiment(tmp_path, train_missing="False", overrides=json.dumps(TINY))
    assert reader.run(dataclasses_replace(config, seed=1), "synthetic") is None and len(trains) == 2


def dataclasses_replace(config, **changes):
    import dataclasses
    return dataclasses.replace(config, **changes)


# --------------------------------------------------------------------------- the run cache
@pytest.mark.parametrize("damage, words", [
    (lambda r: [], "an array, not a JSON object"), (lambda r: None, "null, not a JSON object"),
    (lambda r: "text", "a string, not a JSON object"),
    (lambda r: {k: v for k, v in r.items() if k != "cache"}, "no 'cache' object"),
    (lambda r: {**r, "cache": {k: v for k, v in r["cache"].items() if k != "material"}}, "no 'material'"),
    (lambda r: {k: v for k, v in r.items() if k != "dataset"}, "no 'dataset' object"),
])
def test_a_record_of_the_wrong_shape_is_skipped_with_a_warning_and_retrained(tmp_path, trains, damage, words):
    config = experiment(tmp_path).config("synthetic", "fm", 0)
    record = experiment(tmp_path).run(config, "synthetic")
    path = tmp_path / "smoke" / f"{record['cache']['stem']}.json"
    path.write_text(json.dumps(damage(record)))
    with pytest.warns(UserWarning, match=f"ignoring run record {path}: .*{words}"):
        assert experiment(tmp_path, train_missing=False).run(config, "synthetic") is None
    with pytest.warns(UserWarning, match=words):
        assert experiment(tmp_path).run(config, "synthetic")["test"]
    assert trains == [("fm", 0)] * 2


def test_a_truncated_fm_state_is_retrained_like_a_bad_record(tmp_path, trains):
    exp = experiment(tmp_path)
    exp.run(exp.config("synthetic", "ifm", 0), "synthetic")
    assert trains == [("fm", 0), ("ifm", 0)]
    state = next((tmp_path / "smoke").glob("fm-*.pt"))
    state.write_bytes(state.read_bytes()[:300])
    exp = experiment(tmp_path)
    with pytest.warns(UserWarning, match=f"ignoring unreadable model state {state}"):
        exp.run(exp.config("synthetic", "ifm", 0, model_options={"fen_layers": 1}), "synthetic")
    assert trains[2:] == [("fm", 0), ("ifm", 0)]
    assert torch.load(state, weights_only=True)["embedding.weight"].shape[1] == 4


def test_orphan_temporary_files_of_a_killed_write_are_removed(tmp_path):
    directory = tmp_path / "smoke"
    directory.mkdir()
    old, fresh = directory / ".fm-x.json.ab12cd.tmp", directory / ".fm-y.json.ef34gh.tmp"
    for tmp in (old, fresh):
        tmp.write_text("{ half a rec")
    os.utime(old, (1e9, 1e9))
    with pytest.warns(UserWarning, match=r"removed 1 temporary file\(s\) .*\.fm-x\.json\.ab12cd\.tmp"):
        experiment(tmp_path)
    assert not old.exists() and fresh.exists()                # a write still in progress is left alone


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_records_and_states_are_written_with_the_umask(tmp_path, umask, mode):
    from ifm.runs.records import save_state_atomic, write_json_atomic

    old = os.umask(umask)
    try:
        written = [write_json_atomic(tmp_path / "r.json", {"a": 1}), save_state_atomic({}, tmp_path / "s.pt")]
    finally:
        os.umask(old)
    assert [p.stat().st_mode & 0o777 for p in written] == [mode, mode]


def _stem(exp, config):
    from ifm.runs import records

    key, _ = records.run_key(config, exp.dataset("synthetic"), exp.profile.dataset_options["synthetic"])
    return exp.cache.stem(key, config, "synthetic")


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path, trains):
    import socket
    import subprocess

    exp = experiment(tmp_path)
    config = exp.config("synthetic", "fm", 0)
    dead = subprocess.Popen(["true"])
    dead.wait()
    lock = tmp_path / "smoke" / f"{_stem(exp, config)}.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(f"{dead.pid} {socket.gethostname()}\n")
    with pytest.warns(UserWarning, match=f"breaking the stale lock .*{dead.pid}"):
        assert exp.run(config, "synthetic")["test"] and trains == [("fm", 0)]
    assert not lock.exists()


def test_a_second_sweep_waits_for_the_run_another_one_is_training(tmp_path, trains, monkeypatch):
    import io
    import threading

    from ifm.runs import records

    config = experiment(tmp_path).config("synthetic", "fm", 0)
    record = experiment(tmp_path).run(config, "synthetic")
    made = {p: p.read_bytes() for p in (tmp_path / "smoke").iterdir()}
    for p in made:
        p.unlink()
    lock = tmp_path / "smoke" / f"{record['cache']['stem']}.lock"
    lock.write_text(f"{os.getpid()} {__import__('socket').gethostname()}\n")   # held by a live process

    def the_other_sweep_finishes():
        for p, data in made.items():
            p.write_bytes(data)
        lock.unlink()

    monkeypatch.setattr(records.RunCache, "lock_poll", 0.05)
    timer = threading.Timer(0.5, the_other_sweep_finishes)
    timer.start()
    log = io.StringIO()
    second = experiment(tmp_path, log=log).run(config, "synthetic")
    timer.join()
    assert trains == [("fm", 0)]                              # read, not trained again
    assert second["cache"]["key"] == record["cache"]["key"]
    assert f"waiting for pid {os.getpid()}" in log.getvalue()
    assert not lock.exists()


def test_a_tilde_in_the_results_directory_is_the_home_directory(tmp_path, monkeypatch):
    from ifm.runs import records

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("IFM_RESULTS_DIR", "~/results")
    assert records.results_root() == tmp_path / "results"
    assert records.RunCache("~/cache").directory == tmp_path / "cache"
