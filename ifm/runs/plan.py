"""What `fill` trains, and in which order: every run the book's pages ask for that the results
directory lacks, each once (`plan`), most important pages first, and the hours it should take
(`describe_plan`). The pages' studies run read-only to say what they read; nothing trains here."""
from __future__ import annotations

from dataclasses import dataclass

from ifm.runs.timing import device_kind, expected_seconds

# The studies whose runs the pages read, in the order the pages should fill (see the docstring).
STUDY_ORDER = ("table3", "fig6", "table1", "table4", "table2", "scaling", "depth", "dropout", "activation")
RANK = {"table3": 0, "fig6": 1, "table1": 1, "table4": 1, "table2": 2, "scaling": 3, "depth": 5, "dropout": 5,
        "activation": 5}
# The fill study whose runs a page's study reads (Table 1 reads Table 3's IFM and FM).
FILL_STUDY = {"regression": "table3", "convergence": "fig6", "ctr": "table4", "components": "table2",
              "scaling": "scaling", "depth": "depth", "dropout": "dropout", "activation": "activation",
              "factors": "table1"}
STAND_IN_RANK = 4          # the MovieLens stand-in's rows of Table 3, Fig. 6 and Table 2
STAND_IN = "movielens"


@dataclass
class Wanted:
    """One run a page asks for: its study, dataset, dataset options and configuration."""
    study: str
    dataset: str
    data_options: dict
    config: object          # ifm.training.loop.TrainConfig
    label: str              # the run in words (Experiment.describe)
    derive: dict | None = None   # Table 1: {"factors": fields}, the factors of this (recorded) IFM to derive
    keep_state: bool = False     # an FM that later runs start from: its record serves only with its weights

    def order(self) -> tuple:
        rank = RANK[self.study]
        if self.dataset == STAND_IN and rank < RANK["scaling"]:
            rank = STAND_IN_RANK
        return (rank, self.config.seed, self.config.model != "fm", STUDY_ORDER.index(self.study),
                self.dataset != "frappe")


def plan(profile: str = "paper", recipe: str = "paper,code", *, pages: dict, studies=None, datasets=None,
         seeds=None, results_dir=None, overrides=None) -> list[Wanted]:
    """The runs missing from the results directory that the pages of `studies` (default: all)
    ask for, each once, in the order they should be trained. `datasets` picks among the runs the
    pages read at their defaults (Frappe and the MovieLens stand-in for the regression pages,
    Frappe alone for the data-scaling page, Avazu for Table 4): `--dataset avazu` never plans a
    sweep on Avazu. A dataset that no page reads at its defaults (e.g. synthetic) is planned as the
    pages would run on it if given it as their `datasets` parameter."""
    import io

    from ifm.runs.experiment import Experiment, equivalents
    from ifm.runs.profiles import parse_datasets
    from ifm.runs.records import _identity_text, config_identity

    functions = pages           # name -> the page's study (ifm.book.pages.PAGES)
    unknown = sorted(set(studies or ()) - set(functions))
    if unknown:
        raise ValueError(f"study must be one of {', '.join(STUDY_ORDER)}, got {', '.join(unknown)}")
    out, seen = [], set()
    datasets = parse_datasets(datasets)
    exp = Experiment(profile, recipe=recipe, seeds=seeds, results_dir=results_dir,
                     overrides=overrides, train_missing=False, log=io.StringIO())   # one read of the records
    read = set(exp.profile.datasets) | set(exp.profile.ctr_datasets)
    others = tuple(d for d in datasets or () if d not in read)
    passes = ([None] if not datasets or len(others) < len(datasets) else []) + ([others] if others else [])
    for name in [s for s in STUDY_ORDER if s in (studies or STUDY_ORDER)]:     # a run shared by studies goes to the first
        for pages_datasets in passes:                                          # the pages' own datasets, then others
            exp.datasets, exp.wanted = pages_datasets, []
            functions[name](exp)
            for config, dataset, options, *derive in exp.wanted:
                derive = derive[0] if derive else None       # Table 1's factors of a recorded run
                same = {_identity_text({"d": dataset, "o": options, "c": config_identity(c), "derive": derive})
                        for c in equivalents(config)}
                if same & seen or (datasets and dataset not in datasets):
                    continue
                seen |= same
                label = exp.describe(config, dataset) + (" -> Table 1 factors (retrains it and its FM for their "
                                                         "weights)" if derive else "")
                out.append(Wanted(name, dataset, options, config, label, derive))
    return sorted(out, key=Wanted.order)


def describe_plan(items: list[Wanted], device: str, past: dict) -> list[str]:
    """One line per study and dataset: runs, and the hours they should take on this kind of device."""
    groups = {}
    for item in items:
        groups.setdefault((item.study, item.dataset), []).append(item)
    lines = []
    for (study, dataset), group in groups.items():
        known = [expected_seconds(i, device, {}, past) for i in group]
        hours = sum(s for s in known if s) / 3600
        unknown = sum(s is None for s in known)
        known_part = (f"about {hours:.1f} h on one {device_kind(device).upper()} worker"
                      + (f" for {len(group) - unknown}" if unknown else "")) if unknown < len(group) else ""
        unknown_part = (f"{unknown} of a model never run on this kind of device (time unknown)" if unknown else "")
        lines.append(f"  {study:<10} {dataset:<10} {len(group):>4} runs: " + "; ".join(p for p in (known_part, unknown_part) if p))
    return lines
