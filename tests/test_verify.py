"""A run record is verified before it is used (`ifm.runs.verify`): each hand edit below was reused
without a word before; now the cache ignores the record with the reason, a runner that may train
trains the run again, and the book lists the run as missing with that reason. Tiny synthetic runs."""
from __future__ import annotations

import json
import math
import shutil

import pytest

from ifm.runs import experiment as ex
from ifm.runs.verify import record_problem
from test_experiments import TINY


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A results directory holding one real FM record, and that record's path."""
    root = tmp_path_factory.mktemp("made")
    exp = ex.Experiment("smoke", overrides=TINY, results_dir=root, log=None)
    record = exp.run(exp.config("synthetic", "nfm", 0), "synthetic")
    path = root / "smoke" / f"{record['cache']['stem']}.json"
    assert path.is_file() and record_problem(json.loads(path.read_text()), path) is None
    return root, path


def _set(record, dotted, value):
    *parents, last = dotted.split(".")
    for name in parents:
        record = record[name]
    record[last] = value


TAMPERED = [   # (what is edited, its new value, what the reason says)
    ("valid.rmse", 0.001, "is not the one its history logged at the epoch it kept"),
    ("valid.rmse", math.nan, "'rmse' is nan, not a finite number"),
    ("test.rmse", math.inf, "'rmse' is inf, not a finite number"),
    ("valid.rmse", "0.5", "its valid 'rmse' is \"0.5\", not a number"),
    ("valid", "good", "its 'valid' is a string, not a JSON object"),
    ("config.seed", 7, "its config seed is 7 but its key was made with 0: it was edited"),
    ("cache.key", "0" * 20, "is not the hash of its key material"),
    ("cache.material.config.epochs", 99, "is not the hash of its key material"),
]


@pytest.mark.parametrize("dotted, value, reason", TAMPERED, ids=[f"{d}={v!r}" for d, v, _ in TAMPERED])
def test_an_edited_record_is_ignored_with_its_reason_retrained_and_listed_in_the_book(made, tmp_path, dotted, value,
                                                                                       reason):
    root, original = made
    results = tmp_path / "results"
    shutil.copytree(root, results)
    path = results / "smoke" / original.name
    record = json.loads(path.read_text())
    _set(record, dotted, value)
    path.write_text(json.dumps(record, allow_nan=True))
    assert reason in (record_problem(json.loads(path.read_text()), path) or "")

    book = ex.Experiment("smoke", overrides=TINY, results_dir=results, train_missing=False, log=None)
    config = book.config("synthetic", "nfm", 0)
    with pytest.warns(UserWarning, match=f"ignoring run record .*{original.name}"):
        assert book.run(config, "synthetic") is None
    if not dotted.startswith("cache.material"):       # the run it claims to be is known: the page says why
        (missing,) = book.missing
        assert missing.startswith("NFM on synthetic, seed 0") and f"its record {original.name} was ignored" in missing
        assert reason in missing

    runner = ex.Experiment("smoke", overrides=TINY, results_dir=results, log=None)
    with pytest.warns(UserWarning, match="ignoring run record"):
        again = runner.run(config, "synthetic")
    assert runner.stats["trained"] == 1 and record_problem(json.loads(path.read_text()), path) is None
    assert again["valid"] == json.loads(original.read_text())["valid"]      # the very same run, trained again


def test_a_record_under_another_name_is_ignored(made, tmp_path):
    root, original = made
    (tmp_path / "smoke").mkdir()
    moved = tmp_path / "smoke" / original.name.replace("nfm-", "ifm-")
    shutil.copy(original, moved)
    assert "is not its file name" in record_problem(json.loads(moved.read_text()), moved)


def test_a_diverged_run_may_have_null_metrics_and_nothing_else_may(made):
    _, original = made
    record = json.loads(original.read_text())
    record["valid"] = {k: None for k in record["valid"]}
    assert "not a number" in record_problem(record, original)
    record["diverged"] = True
    assert record_problem(record, original) is None


def test_every_committed_record_passes():
    from pathlib import Path

    from ifm.models import MODELS

    paths = [p for p in (Path(__file__).parents[1] / "results" / "paper").glob("*.json") if p.name.split("-")[0] in MODELS]
    assert len(paths) > 400
    problems = {p.name: record_problem(json.loads(p.read_text()), p) for p in paths}
    assert {name: why for name, why in problems.items() if why} == {}


def test_the_page_caption_names_ignored_records_and_diverged_runs(made, tmp_path):
    from ifm.book import studies, tables

    root, original = made
    results = tmp_path / "results"
    shutil.copytree(root, results)
    path = results / "smoke" / original.name
    record = json.loads(path.read_text())
    record["valid"]["rmse"] = 0.001
    path.write_text(json.dumps(record))
    exp = ex.Experiment("smoke", overrides=TINY, results_dir=results, train_missing=False, log=None,
                        datasets=["synthetic"])
    with pytest.warns(UserWarning, match="ignoring run record"):
        df = studies.regression_study(exp)
    text = tables.caption(df).data
    assert "**Records ignored:** 1 record(s) failed verification" in text and original.name in text
    assert "not the one its history logged" in text and "**Diverged:**" not in text

    record = json.loads(original.read_text())
    record["diverged"] = True
    path.write_text(json.dumps(record))
    exp = ex.Experiment("smoke", overrides=TINY, results_dir=results, train_missing=False, log=None,
                        datasets=["synthetic"])
    text = tables.caption(studies.regression_study(exp)).data
    assert "**Diverged:** 1 run(s) diverged" in text and "NFM on synthetic, seed 0" in text
    assert "**Records ignored:**" not in text


# --------------------------------------------------------------------------- paths (issue 27, item 4)
def _one_line_error(capsys, argv, *words):
    from ifm.cli import main

    assert main([str(a) for a in argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err, err


def test_a_data_directory_that_is_a_symlink_loop_or_unreadable_is_one_line(tmp_path, capsys, monkeypatch):
    import os

    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    _one_line_error(capsys, ["data", "frappe", "--data-dir", loop], f"data directory {loop}: a symlink loop")
    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.scandir

    def refuse(path="."):
        if str(path) == str(locked):
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(os, "scandir", refuse)            # root reads any directory: refuse as a user's chmod would
    _one_line_error(capsys, ["data", "frappe", "--data-dir", locked], f"data directory {locked}: cannot read it",
                    "Permission denied")


def _refuse_to_open(monkeypatch, path):
    """open(`path`) fails as a user's chmod would (root reads anything, so the test refuses it)."""
    import builtins

    real = builtins.open

    def refuse(file, *a, **k):
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return real(file, *a, **k)

    monkeypatch.setattr(builtins, "open", refuse)


def test_an_unreadable_own_data_file_is_one_line(tmp_path, capsys, monkeypatch):
    data = tmp_path / "mine.csv"
    data.write_text("click,a\n1,x\n0,y\n")
    _refuse_to_open(monkeypatch, data)
    _one_line_error(capsys, ["train", "--data", data, "--target", "click", "--model", "fm", "--quiet"],
                    f"--data: {data} is not a readable file (Permission denied)")


def test_not_found_names_the_absolute_paths_tried_and_relative_directories_are_pinned(tmp_path, monkeypatch):
    import os

    from ifm.data import DataNotFoundError, load_dataset, pin_directories

    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("IFM_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DataNotFoundError, match=f"looked in {tmp_path / 'empty'}, {tmp_path / 'cache'}"):
        load_dataset("frappe", "empty", download=False)
    monkeypatch.setenv("IFM_DATA_DIR", "../datasets")
    pin_directories()                       # as pytest and `reproduce` do before kernels start elsewhere
    assert os.environ["IFM_DATA_DIR"] == str(tmp_path.parent / "datasets")


# --------------------------------------------------------------------------- notebook parameters (issue 27, item 3)
def _notebooks():
    from pathlib import Path

    root = Path(__file__).parents[1]
    return sorted(root.glob("notebooks/*.ipynb")) + sorted(root.glob("book/*.ipynb"))


def test_every_notebook_takes_the_book_parameters_and_checks_them_before_anything_runs():
    import ast

    from ifm.book import parameters
    from ifm.book.parameters import NOTEBOOK_PARAMETERS, PAGE_PARAMETERS

    assert len(_notebooks()) >= 12
    for path in _notebooks():
        cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        (params,) = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        tree = ast.parse("".join(params["source"]))
        names = tuple(t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets)
        assert names == PAGE_PARAMETERS.get(path.stem, NOTEBOOK_PARAMETERS), path.name
        after = "".join(cells[cells.index(params) + 1]["source"])
        own = [name for name, value in vars(parameters).items() if name.endswith("_PARAMETERS")
               and value == PAGE_PARAMETERS.get(path.stem)]
        call = "check_parameters(globals())" if path.stem not in PAGE_PARAMETERS else \
            f"check_parameters(globals(), parameters.{own[0]})"
        assert call in after, path.name
        assert after.index(call) < min(
            (after.index(w) for w in ("Experiment(", "study(") if w in after), default=len(after)), path.name


def test_a_parameter_the_notebook_does_not_take_is_refused_in_one_line():
    import os as os_module

    from ifm.book.parameters import NOTEBOOK_PARAMETERS, check_parameters

    namespace = {name: None for name in NOTEBOOK_PARAMETERS} | {"os": os_module, "In": [], "_i1": "", "seed": 3}
    with pytest.raises(ValueError, match=r"^unknown notebook parameter\(s\) seed: this notebook takes profile, "
                                         r"recipe, train_missing, datasets, seeds, "):
        check_parameters(namespace)
    del namespace["seed"]
    check_parameters(namespace)


def test_papermill_with_an_unknown_parameter_or_an_empty_recipe_stops_in_the_first_code_cell(tmp_path):
    import papermill as pm

    notebook = _notebooks()[0].parent.parent / "notebooks" / "depth.ipynb"
    for parameters, words in (({"nosuchparam": 1}, "unknown notebook parameter(s) nosuchparam"),
                              ({"recipe": ""}, "recipe is empty")):
        with pytest.raises(pm.PapermillExecutionError) as error:
            pm.execute_notebook(str(notebook), str(tmp_path / "out.ipynb"), parameters=parameters,
                                cwd=str(notebook.parent), progress_bar=False, log_output=False, kernel_name="python3")
        assert words in str(error.value) and error.value.exec_count == 3     # parameters, injected, the check


# --------------------------------------------------------------------------- large files fail fast (issue 27, item 5)
def test_a_large_malformed_libfm_file_is_refused_from_its_first_lines_without_reading_it_whole(tmp_path, monkeypatch):
    from ifm.data import libfm

    path = tmp_path / "big.libfm"
    good = "".join(f"1 {i % 7}:1 {7 + i % 5}:1\n" for i in range(20_000))
    path.write_text("1 0:1 7:1\n1 1:1 8:1\n1 2:1 oops\n" + good)
    seen, real = [], libfm._parse
    monkeypatch.setattr(libfm, "HEAD_BYTES", 4096)
    monkeypatch.setattr(libfm, "_parse", lambda path_, data, *a: seen.append(len(data)) or real(path_, data, *a))
    with pytest.raises(libfm.DataFormatError, match=r"big.libfm, line 3: "):
        libfm.read_libfm(path)
    assert seen and max(seen) <= 4096 < path.stat().st_size        # only the head was parsed
    path.write_text(good)
    seen.clear()
    x, y = libfm.read_libfm(path)
    assert x.shape == (20_000, 2) and seen[-1] == path.stat().st_size   # a good file: head, then all of it


def test_a_large_csv_with_a_bad_target_early_is_refused_from_its_first_rows(tmp_path, monkeypatch):
    from ifm.data import userdata
    from ifm.data.libfm import DataFormatError

    path = tmp_path / "big.csv"
    path.write_text("click,a,b\n1,x,y\nmaybe,x,z\n" + "".join(f"{i % 2},u{i % 9},v{i % 4}\n" for i in range(50_000)))
    reads, real = [], userdata._read_csv
    monkeypatch.setattr(userdata, "_read_csv", lambda p, sep, nrows=None: reads.append(nrows) or real(p, sep, nrows))
    with pytest.raises(DataFormatError, match=r"big.csv, line 3: target click is 'maybe', not a number"):
        userdata.load_files(path, target="click")
    assert reads == [userdata.HEAD_ROWS]                              # never read whole


def test_an_unreadable_split_file_in_the_data_directory_is_one_line(tmp_path, capsys, monkeypatch):
    from test_data import make_dir

    d = make_dir(tmp_path / "d", {"frappe/ifm-authors/frappe.train.libfm": 30, "frappe/ifm-authors/frappe.valid.libfm": 10,
                                  "frappe/ifm-authors/frappe.test.libfm": 10})
    locked = d / "frappe" / "ifm-authors" / "frappe.valid.libfm"
    _refuse_to_open(monkeypatch, locked)
    monkeypatch.setenv("IFM_CACHE_DIR", str(tmp_path / "cache"))
    _one_line_error(capsys, ["data", "frappe", "--data-dir", d], f"{locked}: cannot read it (Permission denied)")


def test_reproduce_executes_every_notebook_of_the_book_with_only_the_parameters_it_takes():
    """`reproduce` stages only the notebooks papermill wrote: a toc page missing from its list
    would be missing from the book it builds; a page given a parameter it does not take stops."""
    from pathlib import Path

    import yaml

    from ifm.book.parameters import NOTEBOOK_PARAMETERS, PAGE_PARAMETERS
    from ifm.runs.reproduce import NOTEBOOKS, PASSED

    root = Path(__file__).parents[1]
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    notebooks = {f for f in files if (root / f"{f}.ipynb").is_file()}
    assert notebooks == {rel.removesuffix(".ipynb") for _, rel in NOTEBOOKS}
    for name, rel in NOTEBOOKS:
        taken = PAGE_PARAMETERS.get(Path(rel).stem, NOTEBOOK_PARAMETERS)
        assert set(PASSED.get(name, NOTEBOOK_PARAMETERS)) <= set(taken), name
