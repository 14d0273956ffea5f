"""`python -m ifm reproduce`: execute every notebook with papermill, then build the book.

    python -m ifm reproduce --profile smoke|paper [--only NAME] [--data-dir DIR] [--seeds 0 1 2]
                            [--device cuda] [--results-dir DIR] [--force] [--no-book]
                            [--workers N] [--time-limit 3h]

Each notebook runs with the given parameters into ``_build/reproduce/<profile>/`` (same
relative paths as in the repository, one progress line per notebook). The book is then built
from those executed copies, with execution off, into ``_build/html``: what the book shows is
exactly what papermill computed. The runs themselves go through the run cache of
``ifm.runs.experiment``, so a second call only re-draws. With ``--workers`` or ``--time-limit`` the
missing runs are first trained several at a time (``python -m ifm fill``); after a time limit the
notebooks only read the records, and each page lists the runs it still lacks.
"""
from __future__ import annotations

import argparse
import functools
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

# (name, notebook path relative to the repository root), in the book's order.
NOTEBOOKS = [
    ("scorecard", "book/scorecard.ipynb"),
    ("depth", "notebooks/depth.ipynb"),
    ("dropout", "notebooks/dropout.ipynb"),
    ("activation", "notebooks/activation.ipynb"),
    ("convergence", "notebooks/convergence.ipynb"),
    ("factors", "notebooks/factors.ipynb"),
    ("components", "notebooks/components.ipynb"),
    ("regression", "notebooks/regression.ipynb"),
    ("ctr", "notebooks/ctr.ipynb"),
    ("scaling", "notebooks/scaling.ipynb"),
    ("benchmark", "notebooks/benchmark.ipynb"),
    ("owndata", "notebooks/owndata.ipynb"),
    ("results", "book/results.ipynb"),
    ("data", "book/data.ipynb"),
]
# The parameters a page with its own (ifm.book.parameters.PAGE_PARAMETERS) is given; the others get all.
# The benchmark's seeds are its own (2021-2025), not the book's; the own-data page trains its own model.
PASSED = {"benchmark": ("profile", "train_missing", "data_dir"), "owndata": ("data_dir",)}
# What the book needs besides the notebooks, copied into the staging folder.
BOOK_FILES = ["_config.yml", "_toc.yml", "book", "ifm"]


def repo_root() -> Path:
    root = Path(__file__).resolve().parents[2]
    if not (root / "_config.yml").is_file():
        raise FileNotFoundError(f"no _config.yml in {root}: `reproduce` runs from a checkout of the repository")
    return root


def add_reproduce_parser(sub, pages: dict, derive: dict):
    """The `reproduce` command; `pages` and `derive` (ifm.book.pages) are what its fill plans."""
    from ifm.runs.args import LIMITS, device_arg, duration_arg, number_arg, path_arg, recipes_arg
    from ifm.runs.profiles import PROFILES

    p = sub.add_parser("reproduce", help="execute the notebooks (papermill) and build the book",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="smoke", choices=sorted(PROFILES),
                   help="smoke: minutes on a CPU (default); paper: the paper's settings")
    p.add_argument("--recipe", default="paper,code", type=recipes_arg,
                   help="paper: the paper's text; code: the authors' released code; paper,code: both, side by "
                        "side (default; what the book shows); legacy: only read the records made before the recipes")
    p.add_argument("--only", action="append", choices=[n for n, _ in NOTEBOOKS], metavar="NAME",
                   help="execute only this notebook (repeatable): " + ", ".join(n for n, _ in NOTEBOOKS))
    p.add_argument("--data-dir", type=path_arg,
                   help="data directory (default: $IFM_DATA_DIR, then the download cache)")
    p.add_argument("--seeds", type=number_arg("seed"), nargs="+",
                   help=f"seeds for every study, each {LIMITS['seed']} (default: the profile's)")
    p.add_argument("--device", type=lambda text: text if text == "auto" else device_arg(text),
                   help="cpu, cuda, cuda:N or auto (default: the profile's)")
    p.add_argument("--results-dir", type=path_arg,
                   help="run cache directory (default: $IFM_RESULTS_DIR, then results/)")
    p.add_argument("--force", action="store_true", help="retrain every run instead of reusing the cache")
    p.add_argument("--no-book", action="store_true", help="execute the notebooks only")
    p.add_argument("--workers", type=number_arg("workers"), default=None,
                   help=f"first train every missing run with this many processes at once ({LIMITS['workers']}; "
                        "`python -m ifm fill`), then execute the notebooks")
    p.add_argument("--time-limit", type=duration_arg, default=None,
                   help="train for at most this long first (seconds, or 90m, 2.5h; with --workers, default 1 "
                        "worker), then build the pages from the records there are: each page lists what it lacks")
    p.add_argument("--timeout", type=number_arg("timeout"), default=None,
                   help=f"per-cell timeout in seconds: {LIMITS['timeout']} (default: none)")
    p.set_defaults(func=functools.partial(cmd_reproduce, pages=pages, derive=derive))
    return p



def _parameters(args, started: float) -> dict:
    # After a time-limited fill, the notebooks read what is there instead of training the rest.
    params = {"profile": args.profile, "recipe": args.recipe,
              "train_missing": args.recipe != "legacy" and not args.time_limit}
    if args.data_dir:
        params["data_dir"] = str(Path(args.data_dir).resolve())
    if args.seeds:
        params["seeds"] = list(args.seeds)
    if args.device:
        params["device"] = args.device
    if args.force:
        # Retrain what was written before this command started, once: later notebooks reuse
        # the runs earlier ones retrained (e.g. the shared FM pre-trainings).
        params["force"] = started
    return params


def execute(root: Path, stage: Path, names, params: dict, timeout=None, log=print) -> list[str]:
    """Run the named notebooks with papermill into `stage`; returns the names that failed."""
    import papermill as pm

    failed = []
    todo = [(n, p) for n, p in NOTEBOOKS if n in names]
    for i, (name, rel) in enumerate(todo, start=1):
        source, target = root / rel, stage / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        log(f"[{i}/{len(todo)}] {name}: executing {rel} ...", flush=True)
        started = time.perf_counter()
        try:
            given = {k: v for k, v in params.items() if name not in PASSED or k in PASSED[name]}
            pm.execute_notebook(str(source), str(target), parameters=given, cwd=str(source.parent),
                                progress_bar=False, log_output=False, execution_timeout=timeout,
                                kernel_name="python3")
        except Exception as err:   # papermill raises PapermillExecutionError with the cell's traceback
            failed.append(name)
            log(f"[{i}/{len(todo)}] {name}: FAILED after {time.perf_counter() - started:.0f} s: "
                f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}", flush=True)
            log(f"    the executed notebook with the error is {target}", flush=True)
            continue
        log(f"[{i}/{len(todo)}] {name}: done in {time.perf_counter() - started:.0f} s -> {target}", flush=True)
    return failed


def stage_book(root: Path, stage: Path) -> None:
    """Copy the book's sources (not the notebooks, which papermill wrote) into `stage`, with
    execution turned off in its _config.yml."""
    import yaml

    for name in BOOK_FILES:
        src, dst = root / name, stage / name
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("*.ipynb", "__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dst)
    config = yaml.safe_load((root / "_config.yml").read_text())
    config.setdefault("execute", {})["execute_notebooks"] = "off"
    (stage / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))


def build_book(stage: Path, root: Path, log=print) -> int:
    """jupyter-book build of the staged sources into <root>/_build/html (warnings are errors)."""
    exe = shutil.which("jupyter-book", path=str(Path(sys.executable).parent)) or shutil.which("jupyter-book")
    if exe is None:
        log("error: jupyter-book is not installed (pip install -r requirements.txt)")
        return 2
    out = root / "_build" / "html"
    tmp_out = stage / "_out"
    cmd = [exe, "build", str(stage), "--path-output", str(tmp_out), "-W", "-n", "--keep-going"]
    build_log = stage / "book-build.log"
    log(f"building the book: {' '.join(cmd)} (log: {build_log})", flush=True)
    with open(build_log, "w") as f:
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT)
    if rc != 0:
        tail = build_log.read_text(errors="replace").splitlines()[-40:]
        log("\n".join(tail))
        log(f"the book build failed (exit {rc}); full log: {build_log}")
        return rc
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(tmp_out / "_build" / "html", out)
    log(f"book: {out / 'index.html'}")
    return 0


def cmd_reproduce(args, pages: dict, derive: dict) -> int:
    started = time.time()
    root = repo_root()
    if args.results_dir:
        os.environ["IFM_RESULTS_DIR"] = args.results_dir
    from ifm.data import pin_directories

    pin_directories()       # the kernels inherit these but run in the notebooks' folder
    stage = root / "_build" / "reproduce" / args.profile
    names = args.only or [n for n, _ in NOTEBOOKS]
    params = _parameters(args, started)
    if (args.workers or args.time_limit) and args.recipe != "legacy":
        from ifm.runs.fill import fill, plan, summary
        from ifm.runs.profiles import get_profile, resolve_device

        if args.force:
            print("--force retrains in the notebooks, one run at a time: give it without --workers/--time-limit",
                  file=sys.stderr)
            return 2
        items = plan(args.profile, args.recipe, pages=pages, seeds=args.seeds, results_dir=args.results_dir)
        print(f"fill: {len(items)} missing run(s), {args.workers or 1} worker(s)"
              + (f", for at most {args.time_limit:.0f} s" if args.time_limit else ""), flush=True)
        counts = fill(items, workers=args.workers or 1, device=resolve_device(args.device, get_profile(args.profile)),
                      time_limit=args.time_limit, profile=args.profile, data_dir=args.data_dir,
                      results_dir=args.results_dir, derive=derive)
        print(summary(counts), flush=True)
    print(f"profile {args.profile}: {len(names)} notebook(s) -> {stage}; parameters {params}", flush=True)
    failed = execute(root, stage, names, params, timeout=args.timeout)
    print(f"notebooks: {len(names) - len(failed)} ran, {len(failed)} failed "
          f"({time.time() - started:.0f} s)", flush=True)
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
        return 1
    if args.no_book:
        return 0
    missing = [rel for _, rel in NOTEBOOKS if not (stage / rel).is_file()]
    if missing:
        print("not building the book: these notebooks have not been executed for profile "
              f"{args.profile} yet: {', '.join(missing)} (run without --only first)", flush=True)
        return 0
    stage_book(root, stage)
    rc = build_book(stage, root)
    print(f"total {time.time() - started:.0f} s", flush=True)
    return rc
