"""A notebook's parameters, checked in its first code cell. Papermill injects whatever `-p NAME
VALUE` it is given, and a misspelt name (`-p seed 3` for `seeds`) would run the whole notebook on
its defaults with only papermill's own notice; every notebook of the book takes the same
parameters (`NOTEBOOK_PARAMETERS`, tested against each parameters cell), so a name outside them is
refused in one line before anything runs. The values are checked where they are read
(`ifm.runs.experiment.Experiment`: profile, recipe, datasets, seeds, device, overrides)."""
from __future__ import annotations

import types

NOTEBOOK_PARAMETERS = ("profile", "recipe", "train_missing", "datasets", "seeds", "device", "data_dir", "overrides",
                       "force")
# The page on your own data trains its own model on a file, not the book's runs: its own parameters.
OWN_DATA_PARAMETERS = ("data_dir", "fields", "epochs", "embedding_size", "seed", "new_rows")
# The open-benchmark page runs its own study (recipe bars, every model tuned alike): its own sizes.
BENCHMARK_PARAMETERS = ("profile", "train_missing", "models", "trials", "seeds", "data_dir")
PAGE_PARAMETERS = {"owndata": OWN_DATA_PARAMETERS,       # notebook name -> its parameters, where not the book's
                   "benchmark": BENCHMARK_PARAMETERS}
_KERNEL_NAMES = {"In", "Out", "get_ipython", "exit", "quit"}     # what IPython puts in every namespace


def check_parameters(namespace: dict, parameters=NOTEBOOK_PARAMETERS) -> None:
    """Refuse a name in `namespace` (a notebook's globals() after its parameters cell) that is not
    one of `parameters`: papermill injected a parameter this notebook does not take."""
    unknown = sorted(name for name, value in namespace.items()
                     if not name.startswith("_") and name not in parameters and name not in _KERNEL_NAMES
                     and not isinstance(value, (types.ModuleType, types.FunctionType, type)))
    if unknown:
        raise ValueError(f"unknown notebook parameter(s) {', '.join(unknown)}: this notebook takes "
                         f"{', '.join(parameters)} (papermill -p NAME VALUE)")
